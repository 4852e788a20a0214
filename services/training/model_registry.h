// ModelRegistry: the models training starts from and produces, under
// <data_dir>/models/<model_id>/ with metadata in SQLite (table `models` of
// <data_dir>/switchyard.db).
//
// Three kinds: a base (a Hugging Face checkpoint directory registered by name,
// or found under models/ at start), an adapter (a PEFT directory over a
// registered base) and a full fine-tune (a checkpoint directory derived from a
// base). Registration checks the directory loads (config.json parses, every
// tensor the architecture needs is present with its shape, tokenizer.json
// loads; for adapters adapter_config.json and adapter_model.safetensors) before
// anything becomes visible: files are copied into a staging directory and
// renamed into place, then the row is inserted; a crash in between leaves a
// directory the next Open() removes.
//
// Thread-safe.
#ifndef SWITCHYARD_SERVICES_TRAINING_MODEL_REGISTRY_H_
#define SWITCHYARD_SERVICES_TRAINING_MODEL_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace switchyard {
class SqliteDb;
}

namespace switchyard::training {

enum class ModelKind { kBase = 1, kAdapter = 2, kFullFineTune = 3 };
// "base", "adapter", "full".
const char* ModelKindName(ModelKind kind);

struct LoraSummary {
  int64_t r = 0;
  double alpha = 0;
  double dropout = 0;
  std::vector<std::string> target_modules;
  std::vector<int64_t> layers;
  bool rslora = false;
};

struct ModelRecord {
  std::string model_id;
  ModelKind kind = ModelKind::kBase;
  std::string architecture;             // config.json architectures[0]
  std::string base_model;               // model id of the base; empty for a base
  std::string path;                     // directory in the artifact store (absolute)
  int64_t parameter_count = 0;          // full model
  int64_t adapter_parameter_count = 0;  // adapters: A and B elements
  int64_t size_bytes = 0;               // the model's own files
  int64_t context_length = 0;
  int64_t vocab_size = 0;
  std::string dtype;  // "float32", "bfloat16", "float16"
  bool has_chat_template = false;
  std::optional<LoraSummary> lora;  // adapters
  // For models a job produced: JSON object (job, method, training_dataset,
  // validation_dataset, resolved_spec, final_train, final_eval, checkpoint),
  // kept opaque here; the training service writes and reads it.
  std::string fine_tune_json;
  std::string description;
  std::map<std::string, std::string> labels;
  int64_t create_time_ms = 0;  // Unix epoch milliseconds
};

struct RegisterRequest {
  std::string model_id;    // see ValidateModelId; must not start with "ft:"
  std::string path;        // source directory
  bool link = false;       // symlink instead of copying
  std::string base_model;  // adapters: the base (id or "models/id"); empty = from
                           // adapter_config.json's base_model_name_or_path
  std::string description;
  std::map<std::string, std::string> labels;
  bool validate_only = false;  // check, return the record, register nothing
};

// A directory a job produced, moved (renamed) into the store.
struct AddFineTunedRequest {
  std::string model_id;    // "ft:<base>:<suffix>:<job>"
  std::string source_dir;  // moved into the store (same file system as data_dir)
  ModelKind kind = ModelKind::kAdapter;
  std::string base_model;  // id of the base
  std::string fine_tune_json;
  std::string description;
  std::map<std::string, std::string> labels;
};

struct ModelPage {
  std::vector<ModelRecord> models;  // newest first
  std::string next_page_token;
  int64_t total_size = 0;
};

struct ListModelsFilter {
  std::optional<ModelKind> kind;
  std::string base_model;  // id; empty = all
};

class ModelRegistry {
 public:
  // Opens the store under <data_dir>/models (creating it) with the `models`
  // table of `db_path`, removes staging leftovers and rows whose directory
  // vanished (logged), then registers as bases the directories under models/
  // that hold a config.json and no row yet (id = directory name; ones that
  // fail to load are logged and skipped). One registry per data dir:
  // FAILED_PRECONDITION while another (in this or another process) holds
  // <data_dir>/models.lock, since removing staging leftovers would delete its
  // copies in flight.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Open(const std::string& data_dir,
                                                             const std::string& db_path);
  ~ModelRegistry();

  // INVALID_ARGUMENT naming the file and key when the directory does not
  // load, or for a bad id; ALREADY_EXISTS for a taken id; NOT_FOUND when an
  // adapter's base is not registered.
  absl::StatusOr<ModelRecord> Register(const RegisterRequest& request);
  absl::StatusOr<ModelRecord> AddFineTuned(const AddFineTunedRequest& request);
  // `name` is "models/<id>" or "<id>". NOT_FOUND names it.
  absl::StatusOr<ModelRecord> Get(const std::string& name);
  // page_size 0 means 50; at most 1000.
  absl::StatusOr<ModelPage> List(int page_size, const std::string& page_token,
                                 const ListModelsFilter& filter);
  // `in_use(model_id)` returns a reason (e.g. "job ft-1 is running on it")
  // when a job in progress uses the model; that always refuses
  // (FAILED_PRECONDITION). Models derived from it refuse unless `force`, which
  // deletes them too. `in_use` runs under the registry's lock: it must not
  // call back into the registry.
  absl::Status Delete(const std::string& name, bool force,
                      const std::function<std::optional<std::string>(const std::string&)>& in_use);

  // Describes the directory as Register would (counts, dtype, architecture)
  // without registering; used for checkpoints viewed as models.
  absl::StatusOr<ModelRecord> Inspect(const std::string& dir, ModelKind kind);

  const std::string& models_dir() const { return models_dir_; }
  // 1-128 characters of letters, digits, '-', '_', '.', ':', starting with a
  // letter or digit. The error names the rule.
  static absl::Status ValidateModelId(const std::string& model_id);

 private:
  ModelRegistry(std::string data_dir, std::unique_ptr<SqliteDb> db);

  std::string ModelDir(const std::string& model_id) const;
  // Removes staging leftovers and rows without a directory, adopts bases.
  absl::Status Recover();
  // The base an adapter registration names, as a registered record.
  absl::StatusOr<ModelRecord> ResolveAdapterBase(const std::string& dir,
                                                 const std::string& requested);
  // Copies (or links) request.path to models/<id> and inserts `record`.
  absl::StatusOr<ModelRecord> Store(const RegisterRequest& request, ModelRecord record);

  // The *Locked helpers need mu_ held.
  absl::StatusOr<ModelRecord> GetLocked(const std::string& model_id);
  // Ids of the models over `base_model`; every id when it is empty.
  absl::StatusOr<std::vector<std::string>> IdsLocked(const std::string& base_model);
  // ALREADY_EXISTS when the id has a row or a directory.
  absl::Status CheckFreeLocked(const std::string& model_id);
  // Sets create_time_ms (later than every row's, so "newest first" is the
  // registration order) and inserts.
  absl::Status InsertLocked(ModelRecord& record);
  absl::Status DeleteOneLocked(const std::string& model_id);

  std::string data_dir_;
  std::string models_dir_;  // absolute
  int lock_fd_ = -1;        // flock'ed <data_dir>/models.lock
  std::mutex mu_;
  std::unique_ptr<SqliteDb> db_;
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_MODEL_REGISTRY_H_
