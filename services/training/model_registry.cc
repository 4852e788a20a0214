#include "services/training/model_registry.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "services/training/model_dir.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/sqlite_db.h"
#include "shared/core/status_macros.h"
#include "shared/model/config.h"
#include "shared/model/decoder.h"
#include "shared/model/encoder.h"
#include "shared/model/lora.h"
#include "shared/model/runtime.h"
#include "shared/tensors/safetensors.h"
#include "shared/text/model_text.h"

namespace switchyard::training {
namespace fs = std::filesystem;

const char* ModelKindName(ModelKind kind) {
  if (kind == ModelKind::kAdapter) return "adapter";
  return kind == ModelKind::kFullFineTune ? "full" : "base";
}

namespace {

constexpr int kDefaultPageSize = 50;
constexpr int kMaxPageSize = 1000;
constexpr char kStagingPrefix[] = ".staging-";
constexpr char kFineTunedPrefix[] = "ft:";

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS models (
  model_id TEXT PRIMARY KEY, kind TEXT NOT NULL, architecture TEXT NOT NULL,
  base_model TEXT NOT NULL, path TEXT NOT NULL, parameter_count INTEGER NOT NULL,
  adapter_parameter_count INTEGER NOT NULL, size_bytes INTEGER NOT NULL,
  context_length INTEGER NOT NULL, vocab_size INTEGER NOT NULL, dtype TEXT NOT NULL,
  has_chat_template INTEGER NOT NULL, lora_json TEXT NOT NULL, fine_tune_json TEXT NOT NULL,
  description TEXT NOT NULL, labels_json TEXT NOT NULL, create_time_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_base ON models (base_model);
)sql";

constexpr const char* kColumns =
    "model_id, kind, architecture, base_model, path, parameter_count, adapter_parameter_count, "
    "size_bytes, context_length, vocab_size, dtype, has_chat_template, lora_json, "
    "fine_tune_json, description, labels_json, create_time_ms";

// Rows of a List/count: ?1 = kind or '', ?2 = base model or ''.
constexpr const char* kFilter = " WHERE (?1 = '' OR kind = ?1) AND (?2 = '' OR base_model = ?2)";

ModelKind KindFromName(const std::string& name) {
  for (ModelKind k : {ModelKind::kAdapter, ModelKind::kFullFineTune}) {
    if (name == ModelKindName(k)) return k;
  }
  return ModelKind::kBase;
}

std::string StripModelsPrefix(const std::string& name) {
  return absl::StartsWith(name, "models/") ? name.substr(7) : name;
}

std::string AbsoluteDir(const std::string& path) {
  std::string out = fs::absolute(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string LoraToJson(const std::optional<LoraSummary>& lora) {
  if (!lora) return "";
  return nlohmann::json{{"r", lora->r},
                        {"alpha", lora->alpha},
                        {"dropout", lora->dropout},
                        {"target_modules", lora->target_modules},
                        {"layers", lora->layers},
                        {"rslora", lora->rslora}}
      .dump();
}

std::optional<LoraSummary> LoraFromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return std::nullopt;
  LoraSummary l;
  l.r = j.value("r", int64_t{0});
  l.alpha = j.value("alpha", 0.0);
  l.dropout = j.value("dropout", 0.0);
  l.target_modules = j.value("target_modules", std::vector<std::string>{});
  l.layers = j.value("layers", std::vector<int64_t>{});
  l.rslora = j.value("rslora", false);
  return l;
}

// Columns in kColumns order. The path is where the store is now, so a data
// dir that moved still resolves.
ModelRecord ReadRecord(const SqliteStatement& st, const std::string& models_dir) {
  ModelRecord r;
  r.model_id = st.Text(0);
  r.kind = KindFromName(st.Text(1));
  r.architecture = st.Text(2);
  r.base_model = st.Text(3);
  r.path = absl::StrCat(models_dir, "/", r.model_id);
  r.parameter_count = st.Int(5);
  r.adapter_parameter_count = st.Int(6);
  r.size_bytes = st.Int(7);
  r.context_length = st.Int(8);
  r.vocab_size = st.Int(9);
  r.dtype = st.Text(10);
  r.has_chat_template = st.Int(11) != 0;
  r.lora = LoraFromJson(st.Text(12));
  r.fine_tune_json = st.Text(13);
  r.description = st.Text(14);
  nlohmann::json labels = nlohmann::json::parse(st.Text(15), nullptr, false);
  if (labels.is_object()) {
    for (const auto& [key, value] : labels.items()) {
      if (value.is_string()) r.labels[key] = value.get<std::string>();
    }
  }
  r.create_time_ms = st.Int(16);
  return r;
}

// Removes a store entry: a link only (never its target); a directory is
// first renamed to a staging name, so a crash midway leaves something the
// next Open() removes rather than half a model.
absl::Status RemoveModelDir(const std::string& models_dir, const std::string& dir) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(dir, ec);
  if (!fs::exists(status)) return absl::OkStatus();
  if (fs::is_symlink(status)) {
    if (!fs::remove(dir, ec) && ec) {
      return absl::InternalError(absl::StrCat("remove ", dir, ": ", ec.message()));
    }
    return FsyncPath(models_dir);
  }
  const std::string trash = absl::StrCat(models_dir, "/", kStagingPrefix, RandomHex(8));
  SY_RETURN_IF_ERROR(RenameDurably(dir, trash));
  return RemoveAll(trash);
}

}  // namespace

ModelRegistry::ModelRegistry(std::string data_dir, std::unique_ptr<SqliteDb> db)
    : data_dir_(std::move(data_dir)),
      models_dir_(AbsoluteDir(data_dir_ + "/models")),
      db_(std::move(db)) {}

ModelRegistry::~ModelRegistry() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Open(const std::string& data_dir,
                                                                   const std::string& db_path) {
  SY_RETURN_IF_ERROR(MakeDirs(data_dir + "/models"));
  SY_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(db_path));
  SY_RETURN_IF_ERROR(db->Exec(kSchema));
  std::unique_ptr<ModelRegistry> r(new ModelRegistry(data_dir, std::move(db)));
  const std::string lock_path = data_dir + "/models.lock";
  r->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (r->lock_fd_ < 0) return absl::InternalError(absl::StrCat("cannot open ", lock_path));
  if (::flock(r->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("another model registry is using ", data_dir, " (", lock_path, " is locked)"));
  }
  SY_RETURN_IF_ERROR(r->Recover());
  return r;
}

absl::Status ModelRegistry::ValidateModelId(const std::string& model_id) {
  bool ok = !model_id.empty() && model_id.size() <= 128 &&
            std::isalnum(static_cast<unsigned char>(model_id[0]));
  for (char c : model_id) {
    ok &=
        std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':';
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_id \"", model_id,
                     "\" is invalid: use 1-128 letters, digits, '-', '_', '.' or ':', starting "
                     "with a letter or digit"));
  }
  return absl::OkStatus();
}

std::string ModelRegistry::ModelDir(const std::string& model_id) const {
  return absl::StrCat(models_dir_, "/", model_id);
}

absl::Status ModelRegistry::Recover() {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(std::vector<fs::directory_entry> entries, ListDir(models_dir_));
  for (const fs::directory_entry& e : entries) {
    if (!absl::StartsWith(e.path().filename().string(), kStagingPrefix)) continue;
    SY_LOG(kWarning, "registry") << "removing interrupted copy " << e.path().string();
    SY_RETURN_IF_ERROR(RemoveAll(e.path().string()));
  }
  SY_ASSIGN_OR_RETURN(std::vector<std::string> ids, IdsLocked(""));
  for (const std::string& id : ids) {
    std::error_code ec;
    if (fs::exists(ModelDir(id), ec)) continue;  // follows links: a dangling one has vanished
    SY_LOG(kWarning, "registry") << "dropping models/" << id << ": " << ModelDir(id) << " is gone";
    SY_ASSIGN_OR_RETURN(SqliteStatement del, db_->Prepare("DELETE FROM models WHERE model_id = ?"));
    del.Bind(1, id);
    SY_RETURN_IF_ERROR(del.Run());
    SY_RETURN_IF_ERROR(RemoveModelDir(models_dir_, ModelDir(id)));
  }
  for (const fs::directory_entry& e : entries) {
    const std::string id = e.path().filename().string();
    if (absl::StartsWith(id, ".") || std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
    std::error_code ec;
    // Fine-tuned ids are only ever added with their job's metadata.
    if (!ValidateModelId(id).ok() || absl::StartsWith(id, kFineTunedPrefix) ||
        !fs::is_regular_file(e.path() / "config.json", ec)) {
      SY_LOG(kWarning, "registry") << "ignoring unregistered " << e.path().string();
      continue;
    }
    absl::StatusOr<ModelRecord> record = InspectCheckpoint(ModelDir(id), true);
    if (!record.ok()) {
      SY_LOG(kWarning, "registry")
          << "not adopting " << e.path().string() << ": " << record.status().message();
      continue;
    }
    record->model_id = id;
    record->path = ModelDir(id);
    SY_RETURN_IF_ERROR(InsertLocked(*record));
    SY_LOG(kInfo, "registry") << "adopted models/" << id << " as a base";
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelRecord> ModelRegistry::ResolveAdapterBase(const std::string& dir,
                                                              const std::string& requested) {
  std::string base_id = StripModelsPrefix(requested);
  if (base_id.empty()) {
    absl::StatusOr<std::string> text = ReadFile(dir + "/adapter_config.json");
    if (!text.ok()) return LoadError(dir, text.status());
    absl::StatusOr<model::LoraConfig> config = model::ParseAdapterConfig(*text);
    if (!config.ok()) return LoadError(dir, config.status());
    base_id = StripModelsPrefix(config->base_model_name_or_path);
    std::lock_guard<std::mutex> lock(mu_);
    if (base_id.empty() || !ValidateModelId(base_id).ok() || !GetLocked(base_id).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/adapter_config.json: base_model_name_or_path \"", config->base_model_name_or_path,
          "\" is not a registered model; pass base_model to name the adapter's base"));
    }
  }
  SY_RETURN_IF_ERROR(ValidateModelId(base_id));
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(ModelRecord base, GetLocked(base_id));
  if (base.kind == ModelKind::kAdapter) {
    return absl::InvalidArgumentError(absl::StrCat(
        "base_model models/", base_id, " is an adapter; an adapter's base must be a full model"));
  }
  return base;
}

absl::StatusOr<ModelRecord> ModelRegistry::Register(const RegisterRequest& request) {
  SY_RETURN_IF_ERROR(ValidateModelId(request.model_id));
  if (absl::StartsWith(request.model_id, kFineTunedPrefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_id \"", request.model_id,
                     "\": ids starting with \"ft:\" are reserved for fine-tuned models"));
  }
  std::error_code ec;
  if (request.path.empty() || !fs::is_directory(request.path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("path \"", request.path, "\" is not a directory"));
  }
  const std::string source = AbsoluteDir(request.path);
  {
    std::lock_guard<std::mutex> lock(mu_);
    SY_RETURN_IF_ERROR(CheckFreeLocked(request.model_id));  // before a long copy
  }
  ModelRecord record;
  if (fs::exists(source + "/adapter_config.json", ec)) {
    SY_ASSIGN_OR_RETURN(ModelRecord base, ResolveAdapterBase(source, request.base_model));
    SY_ASSIGN_OR_RETURN(record, InspectAdapter(source, &base));
  } else {
    SY_ASSIGN_OR_RETURN(record, InspectCheckpoint(source, /*require_tokenizer=*/true));
  }
  record.model_id = request.model_id;
  record.description = request.description;
  record.labels = request.labels;
  if (request.validate_only) return record;
  return Store(request, std::move(record));
}

absl::StatusOr<ModelRecord> ModelRegistry::Store(const RegisterRequest& request,
                                                 ModelRecord record) {
  const std::string source = AbsoluteDir(request.path);
  const std::string final_dir = ModelDir(record.model_id);
  std::string staging;
  if (!request.link) {  // copied outside the lock: it may take minutes
    staging = absl::StrCat(models_dir_, "/", kStagingPrefix, RandomHex(8));
    absl::Status copied = CopyModelFiles(source, staging, /*top=*/true);
    if (!copied.ok()) {
      (void)RemoveAll(staging);
      return copied;
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = CheckFreeLocked(record.model_id);
  if (s.ok() && !record.base_model.empty()) s = GetLocked(record.base_model).status();
  if (s.ok() && request.link) {
    std::error_code ec;
    fs::create_directory_symlink(source, final_dir, ec);
    s = ec ? absl::InternalError(absl::StrCat("symlink ", final_dir, ": ", ec.message()))
           : FsyncPath(models_dir_);
  } else if (s.ok()) {
    s = RenameDurably(staging, final_dir);
  }
  if (!s.ok()) {
    if (!staging.empty()) (void)RemoveAll(staging);
    return s;
  }
  record.path = final_dir;
  record.size_bytes = DirectoryBytes(final_dir);
  s = InsertLocked(record);
  if (!s.ok()) {
    (void)RemoveModelDir(models_dir_, final_dir);
    return s;
  }
  SY_LOG(kInfo, "registry") << "registered models/" << record.model_id
                            << " kind=" << ModelKindName(record.kind)
                            << " parameters=" << record.parameter_count
                            << (request.link ? " linked to " : " copied from ") << source;
  return record;
}

absl::StatusOr<ModelRecord> ModelRegistry::AddFineTuned(const AddFineTunedRequest& request) {
  SY_RETURN_IF_ERROR(ValidateModelId(request.model_id));
  if (request.kind == ModelKind::kBase) {
    return absl::InvalidArgumentError("a fine-tuned model is an adapter or a full fine-tune");
  }
  const std::string base_id = StripModelsPrefix(request.base_model);
  ModelRecord base;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SY_ASSIGN_OR_RETURN(base, GetLocked(base_id));
  }
  std::error_code ec;
  if (request.source_dir.empty() || !fs::is_directory(request.source_dir, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat("source_dir \"", request.source_dir, "\" is not a directory"));
  }
  const std::string source = AbsoluteDir(request.source_dir);
  ModelRecord record;
  if (request.kind == ModelKind::kAdapter) {
    SY_ASSIGN_OR_RETURN(record, InspectAdapter(source, &base));
  } else {
    SY_ASSIGN_OR_RETURN(record, InspectCheckpoint(source, /*require_tokenizer=*/false));
    record.kind = ModelKind::kFullFineTune;
    record.base_model = base.model_id;
    if (!fs::exists(source + "/tokenizer.json", ec)) {
      record.has_chat_template = base.has_chat_template;  // it uses the base's tokenizer
    }
  }
  record.model_id = request.model_id;
  record.fine_tune_json = request.fine_tune_json;
  record.description = request.description;
  record.labels = request.labels;

  const std::string final_dir = ModelDir(record.model_id);
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(CheckFreeLocked(record.model_id));
  SY_RETURN_IF_ERROR(GetLocked(base_id).status());  // not deleted meanwhile
  SY_RETURN_IF_ERROR(RenameDurably(source, final_dir));
  record.path = final_dir;
  absl::Status s = InsertLocked(record);
  if (!s.ok()) {  // nothing half-registered stays visible
    if (!RenameDurably(final_dir, source).ok()) (void)RemoveModelDir(models_dir_, final_dir);
    return s;
  }
  SY_LOG(kInfo, "registry") << "added models/" << record.model_id
                            << " kind=" << ModelKindName(record.kind) << " base=" << base_id;
  return record;
}

absl::StatusOr<ModelRecord> ModelRegistry::Get(const std::string& name) {
  const std::string id = StripModelsPrefix(name);
  SY_RETURN_IF_ERROR(ValidateModelId(id));
  std::lock_guard<std::mutex> lock(mu_);
  return GetLocked(id);
}

absl::StatusOr<ModelPage> ModelRegistry::List(int page_size, const std::string& page_token,
                                              const ListModelsFilter& filter) {
  if (page_size < 0) return absl::InvalidArgumentError("page_size must not be negative");
  const int64_t limit = page_size == 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  int64_t offset = 0;
  if (!page_token.empty() && (!absl::SimpleAtoi(page_token, &offset) || offset < 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_token \"", page_token, "\" is not a token this server issued"));
  }
  const std::string kind = filter.kind ? ModelKindName(*filter.kind) : "";
  const std::string base = StripModelsPrefix(filter.base_model);
  std::lock_guard<std::mutex> lock(mu_);
  ModelPage page;
  {
    SY_ASSIGN_OR_RETURN(SqliteStatement st,
                        db_->Prepare(absl::StrCat("SELECT COUNT(*) FROM models", kFilter)));
    st.Bind(1, kind).Bind(2, base);
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    page.total_size = row ? st.Int(0) : 0;
  }
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare(absl::StrCat("SELECT ", kColumns, " FROM models", kFilter,
                                " ORDER BY create_time_ms DESC, model_id LIMIT ?3 OFFSET ?4")));
  st.Bind(1, kind).Bind(2, base).Bind(3, limit).Bind(4, offset);
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    page.models.push_back(ReadRecord(st, models_dir_));
  }
  const int64_t next = offset + static_cast<int64_t>(page.models.size());
  if (!page.models.empty() && next < page.total_size) page.next_page_token = absl::StrCat(next);
  return page;
}

absl::Status ModelRegistry::Delete(
    const std::string& name, bool force,
    const std::function<std::optional<std::string>(const std::string&)>& in_use) {
  const std::string id = StripModelsPrefix(name);
  SY_RETURN_IF_ERROR(ValidateModelId(id));
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(GetLocked(id).status());
  auto check_unused = [&](const std::string& model_id) -> absl::Status {
    std::optional<std::string> reason = in_use ? in_use(model_id) : std::nullopt;
    if (!reason) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("models/", model_id, " is in use: ", *reason));
  };
  SY_RETURN_IF_ERROR(check_unused(id));
  // Every model derived from it, transitively (an adapter over a full
  // fine-tune of it), in breadth-first order.
  std::vector<std::string> derived;
  for (size_t i = 0; i <= derived.size(); ++i) {
    SY_ASSIGN_OR_RETURN(std::vector<std::string> children, IdsLocked(i == 0 ? id : derived[i - 1]));
    derived.insert(derived.end(), children.begin(), children.end());
  }
  if (!derived.empty() && !force) {
    std::vector<std::string> names;
    for (const std::string& d : derived) names.push_back(absl::StrCat("models/", d));
    return absl::FailedPreconditionError(
        absl::StrCat("models/", id, " is the base of ", absl::StrJoin(names, ", "),
                     "; delete them first, or pass force to delete them too"));
  }
  for (const std::string& d : derived) SY_RETURN_IF_ERROR(check_unused(d));
  // Derived models go first (deepest last found first), so none is left
  // pointing at a deleted base.
  for (auto it = derived.rbegin(); it != derived.rend(); ++it) {
    SY_RETURN_IF_ERROR(DeleteOneLocked(*it));
  }
  return DeleteOneLocked(id);
}

absl::StatusOr<ModelRecord> ModelRegistry::Inspect(const std::string& dir, ModelKind kind) {
  const std::string abs = AbsoluteDir(dir);
  if (kind != ModelKind::kAdapter) {
    SY_ASSIGN_OR_RETURN(ModelRecord record, InspectCheckpoint(abs, kind == ModelKind::kBase));
    record.kind = kind;
    return record;
  }
  // The base is the registered model adapter_config.json names, if any.
  absl::StatusOr<ModelRecord> base = ResolveAdapterBase(abs, "");
  return InspectAdapter(abs, base.ok() ? &*base : nullptr);
}

absl::StatusOr<ModelRecord> ModelRegistry::GetLocked(const std::string& model_id) {
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare(absl::StrCat("SELECT ", kColumns, " FROM models WHERE model_id = ?")));
  st.Bind(1, model_id);
  SY_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("models/", model_id, " not found"));
  return ReadRecord(st, models_dir_);
}

absl::StatusOr<std::vector<std::string>> ModelRegistry::IdsLocked(const std::string& base_model) {
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare(base_model.empty()
                       ? "SELECT model_id FROM models ORDER BY model_id"
                       : "SELECT model_id FROM models WHERE base_model = ? ORDER BY model_id"));
  if (!base_model.empty()) st.Bind(1, base_model);
  std::vector<std::string> ids;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return ids;
    ids.push_back(st.Text(0));
  }
}

absl::Status ModelRegistry::CheckFreeLocked(const std::string& model_id) {
  absl::StatusOr<ModelRecord> row = GetLocked(model_id);
  if (row.ok())
    return absl::AlreadyExistsError(absl::StrCat("models/", model_id, " already exists"));
  if (!absl::IsNotFound(row.status())) return row.status();
  std::error_code ec;
  if (fs::exists(fs::symlink_status(ModelDir(model_id), ec))) {
    return absl::AlreadyExistsError(
        absl::StrCat("models/", model_id, " already exists: ", ModelDir(model_id), " is present"));
  }
  return absl::OkStatus();
}

absl::Status ModelRegistry::InsertLocked(ModelRecord& record) {
  int64_t latest = 0;
  {
    SY_ASSIGN_OR_RETURN(SqliteStatement st,
                        db_->Prepare("SELECT COALESCE(MAX(create_time_ms), 0) FROM models"));
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (row) latest = st.Int(0);
  }
  record.create_time_ms = std::max<int64_t>(absl::ToUnixMillis(absl::Now()), latest + 1);
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare(absl::StrCat("INSERT INTO models (", kColumns,
                                ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")));
  st.Bind(1, record.model_id)
      .Bind(2, ModelKindName(record.kind))
      .Bind(3, record.architecture)
      .Bind(4, record.base_model)
      .Bind(5, record.path)
      .Bind(6, record.parameter_count)
      .Bind(7, record.adapter_parameter_count)
      .Bind(8, record.size_bytes)
      .Bind(9, record.context_length)
      .Bind(10, record.vocab_size)
      .Bind(11, record.dtype)
      .Bind(12, int64_t{record.has_chat_template ? 1 : 0})
      .Bind(13, LoraToJson(record.lora))
      .Bind(14, record.fine_tune_json)
      .Bind(15, record.description)
      .Bind(16, nlohmann::json(record.labels).dump())
      .Bind(17, record.create_time_ms);
  absl::Status s = st.Run();
  if (absl::IsAlreadyExists(s)) {
    return absl::AlreadyExistsError(absl::StrCat("models/", record.model_id, " already exists"));
  }
  return s;
}

absl::Status ModelRegistry::DeleteOneLocked(const std::string& model_id) {
  SY_ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare("DELETE FROM models WHERE model_id = ?"));
  st.Bind(1, model_id);
  SY_RETURN_IF_ERROR(st.Run());
  SY_RETURN_IF_ERROR(RemoveModelDir(models_dir_, ModelDir(model_id)));
  SY_LOG(kInfo, "registry") << "deleted models/" << model_id;
  return absl::OkStatus();
}

}  // namespace switchyard::training
