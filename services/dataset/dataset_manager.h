// DatasetManager: named datasets with immutable versions under
// <data_dir>/datasets/<id>/v<N>/{train.jsonl,validation.jsonl,manifest.json},
// metadata in a DatasetCatalog.
//
// Uploads stream into a private staging directory while they are validated; a
// version becomes visible only by one rename after validation passed, then a
// catalog insert. On start, staging leftovers and version directories the
// catalog does not know (a crash between rename and insert) are removed, so a
// crash mid-upload leaves no trace.
//
// Thread-safe. Uploads run concurrently; commits are serialized.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_MANAGER_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_MANAGER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "services/dataset/dataset_catalog.h"
#include "services/dataset/dataset_validator.h"
#include "shared/core/file_util.h"
#include "shared/core/sha256.h"
#include "shared/text/model_text.h"

namespace switchyard::dataset {

struct ManagerOptions {
  std::string data_dir = "./switchyard-data";
  // Bytes one upload or append may send in total (train + validation; the base
  // version an append replays does not count).
  int64_t max_upload_bytes = int64_t{2} << 30;
  ValidatorOptions validator;
};

struct UploadRequest {
  std::string dataset_id;
  DatasetFormat format = DatasetFormat::kAuto;
  bool strict = false;
  bool validate_only = false;
  std::string description;
  std::map<std::string, std::string> labels;
};

struct UploadResult {
  ValidationReport report;
  // Set when a version was committed.
  std::optional<VersionRecord> version;
};

class DatasetManager;

// Where a committed version's file lives:
// <data_dir>/datasets/<id>/v<N>/<split>.jsonl. For readers of a shared data
// dir that hold no DatasetManager (the training service).
std::string VersionFilePath(const std::string& data_dir, const std::string& dataset_id,
                            int64_t version, const std::string& split);

// One upload in progress. Destroying it without Commit() discards everything.
// Not thread-safe.
class UploadSession {
 public:
  ~UploadSession();
  UploadSession(const UploadSession&) = delete;
  UploadSession& operator=(const UploadSession&) = delete;

  // Appends bytes to one file. RESOURCE_EXHAUSTED past max_upload_bytes.
  absl::Status Write(Split split, absl::string_view data);
  // Finishes validation; commits a version when valid and not validate_only.
  absl::StatusOr<UploadResult> Commit();
  int64_t bytes_received() const { return bytes_; }

 private:
  friend class DatasetManager;
  UploadSession(DatasetManager* manager, UploadRequest request, std::string staging_dir,
                int64_t parent_version);
  absl::Status OpenFile(Split split);
  // Write(); `counted` bytes count against max_upload_bytes (a replayed base
  // version does not).
  absl::Status WriteImpl(Split split, absl::string_view data, bool counted);
  absl::Status WriteUnchecked(Split split, absl::string_view data, bool counted);

  DatasetManager* manager_;
  UploadRequest request_;
  std::string staging_dir_;
  int64_t parent_version_;
  DatasetValidator validator_;
  FileWriter writers_[2];
  Sha256 hashers_[2];
  bool opened_[2] = {false, false};
  int64_t bytes_ = 0;
  bool done_ = false;
  absl::Status failed_;  // first write error; the session refuses more work
};

struct DatasetPage {
  std::vector<DatasetRecord> datasets;
  std::string next_page_token;
  int64_t total_size = 0;
};

struct VersionPage {
  std::vector<VersionRecord> versions;
  std::string next_page_token;
};

class DatasetManager {
 public:
  // Opens the store under options.data_dir (creating it) with `catalog`, and
  // removes leftovers of interrupted uploads.
  // FAILED_PRECONDITION when another process holds the data dir.
  static absl::StatusOr<std::unique_ptr<DatasetManager>> Open(
      ManagerOptions options, std::unique_ptr<DatasetCatalog> catalog);
  ~DatasetManager();

  // INVALID_ARGUMENT for a bad dataset id.
  absl::StatusOr<std::unique_ptr<UploadSession>> StartUpload(const UploadRequest& request);
  // A new version from `base_version` (0: latest) of an existing dataset: its
  // train file plus what the session receives, its validation file as is.
  absl::StatusOr<std::unique_ptr<UploadSession>> StartAppend(const std::string& dataset_id,
                                                             int64_t base_version, bool strict,
                                                             bool validate_only);

  absl::StatusOr<DatasetRecord> GetDataset(const std::string& dataset_id);
  // page_size 0 means 50; at most 1000.
  absl::StatusOr<DatasetPage> ListDatasets(int page_size, const std::string& page_token);
  absl::Status DeleteDataset(const std::string& dataset_id);
  // version 0 means the latest.
  absl::StatusOr<VersionRecord> GetVersion(const std::string& dataset_id, int64_t version);
  absl::StatusOr<VersionPage> ListVersions(const std::string& dataset_id, int page_size,
                                           const std::string& page_token);
  absl::Status DeleteVersion(const std::string& dataset_id, int64_t version);
  // Path of a stored file. NOT_FOUND when the version has no such split.
  absl::StatusOr<std::string> FilePath(const VersionRecord& version, Split split) const;

  // Statistics of a stored version with token counts from the tokenizer (and
  // chat template) of <data_dir>/models/<model>. NOT_FOUND for an unknown model.
  absl::StatusOr<ValidationReport> TokenStats(const VersionRecord& version,
                                              const std::string& model);

  absl::StatusOr<int64_t> CountDatasets() { return catalog_->CountDatasets(); }
  absl::StatusOr<int64_t> CountVersions() { return catalog_->CountVersions(); }
  const ManagerOptions& options() const { return options_; }

  // "support-faq" is valid; the error names the rule.
  static absl::Status ValidateDatasetId(const std::string& dataset_id);

 private:
  friend class UploadSession;
  DatasetManager(ManagerOptions options, std::unique_ptr<DatasetCatalog> catalog);
  absl::Status Recover();
  absl::StatusOr<VersionRecord> CommitStaged(const UploadRequest& request,
                                             const std::string& staging_dir, int64_t parent_version,
                                             const ValidationReport& report,
                                             std::vector<FileRecord> files);
  std::string DatasetDir(const std::string& dataset_id) const;
  std::string VersionDir(const std::string& dataset_id, int64_t version) const;
  absl::StatusOr<std::string> NewStagingDir();

  ManagerOptions options_;
  std::unique_ptr<DatasetCatalog> catalog_;
  std::mutex commit_mu_;  // serializes version numbering, renames and deletes
  int lock_fd_ = -1;
  // Models loaded for token statistics, by name (loading parses tokenizer.json).
  std::mutex models_mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<const text::ModelText>>
      models_;  // flock on <data_dir>/datasets.lock while open
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_MANAGER_H_
