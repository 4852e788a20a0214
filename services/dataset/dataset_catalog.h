// DatasetCatalog: the metadata of datasets and their versions (the files live
// under --data-dir). An interface so a PostgreSQL backend can replace the
// SQLite one when several replicas write. Implementations are thread-safe.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_CATALOG_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_CATALOG_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/dataset/dataset_types.h"

namespace switchyard {
class SqliteDb;
}

namespace switchyard::dataset {

struct FileRecord {
  std::string split;  // "train" or "validation"
  int64_t bytes = 0;
  std::string sha256;
  int64_t examples = 0;
};

struct VersionRecord {
  std::string dataset_id;
  int64_t version = 0;
  DatasetFormat format = DatasetFormat::kAuto;
  int64_t create_time_ms = 0;  // Unix epoch milliseconds
  int64_t parent_version = 0;
  std::vector<FileRecord> files;
  DatasetStats train_stats;
  std::optional<DatasetStats> validation_stats;
  std::vector<ValidationIssue> warnings;
};

struct DatasetRecord {
  std::string dataset_id;
  std::string description;
  std::map<std::string, std::string> labels;
  int64_t create_time_ms = 0;
  int64_t update_time_ms = 0;
  int64_t latest_version = 0;  // 0 when no version exists
  int64_t version_count = 0;
};

class DatasetCatalog {
 public:
  virtual ~DatasetCatalog() = default;

  // The number the next committed version of `dataset_id` gets (1 for a new
  // dataset). Numbers are never reused while the dataset exists.
  virtual absl::StatusOr<int64_t> NextVersion(const std::string& dataset_id) = 0;
  // Records a version (creating the dataset with `dataset` fields when new).
  // ALREADY_EXISTS when the version number is taken.
  virtual absl::Status AddVersion(const DatasetRecord& dataset, const VersionRecord& version) = 0;
  virtual absl::StatusOr<DatasetRecord> GetDataset(const std::string& dataset_id) = 0;
  // Datasets ordered by id, starting after `after_id`, at most `limit`.
  virtual absl::StatusOr<std::vector<DatasetRecord>> ListDatasets(const std::string& after_id,
                                                                  int limit) = 0;
  virtual absl::StatusOr<int64_t> CountDatasets() = 0;
  virtual absl::StatusOr<int64_t> CountVersions() = 0;
  // `version` 0 means the latest. NOT_FOUND names what is missing.
  virtual absl::StatusOr<VersionRecord> GetVersion(const std::string& dataset_id,
                                                   int64_t version) = 0;
  virtual absl::StatusOr<std::vector<VersionRecord>> ListVersions(const std::string& dataset_id,
                                                                  int64_t after_version,
                                                                  int limit) = 0;
  virtual absl::Status DeleteDataset(const std::string& dataset_id) = 0;
  virtual absl::Status DeleteVersion(const std::string& dataset_id, int64_t version) = 0;
};

class SqliteDatasetCatalog : public DatasetCatalog {
 public:
  // Opens (creating tables as needed) the database at `path`.
  static absl::StatusOr<std::unique_ptr<SqliteDatasetCatalog>> Open(const std::string& path);
  ~SqliteDatasetCatalog() override;

  absl::StatusOr<int64_t> NextVersion(const std::string& dataset_id) override;
  absl::Status AddVersion(const DatasetRecord& dataset, const VersionRecord& version) override;
  absl::StatusOr<DatasetRecord> GetDataset(const std::string& dataset_id) override;
  absl::StatusOr<std::vector<DatasetRecord>> ListDatasets(const std::string& after_id,
                                                          int limit) override;
  absl::StatusOr<int64_t> CountDatasets() override;
  absl::StatusOr<int64_t> CountVersions() override;
  absl::StatusOr<VersionRecord> GetVersion(const std::string& dataset_id, int64_t version) override;
  absl::StatusOr<std::vector<VersionRecord>> ListVersions(const std::string& dataset_id,
                                                          int64_t after_version,
                                                          int limit) override;
  absl::Status DeleteDataset(const std::string& dataset_id) override;
  absl::Status DeleteVersion(const std::string& dataset_id, int64_t version) override;

 private:
  explicit SqliteDatasetCatalog(std::unique_ptr<SqliteDb> db);
  absl::StatusOr<DatasetRecord> GetDatasetLocked(const std::string& dataset_id);
  absl::StatusOr<int64_t> CountLocked(const char* sql);

  std::mutex mu_;
  std::unique_ptr<SqliteDb> db_;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_CATALOG_H_
