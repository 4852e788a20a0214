#include "services/dataset/dataset_catalog.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_json.h"
#include "shared/core/sqlite_db.h"
#include "shared/core/status_macros.h"

namespace switchyard::dataset {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS datasets (
  dataset_id TEXT PRIMARY KEY,
  description TEXT NOT NULL DEFAULT '',
  labels_json TEXT NOT NULL DEFAULT '{}',
  create_time_ms INTEGER NOT NULL,
  update_time_ms INTEGER NOT NULL,
  next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_versions (
  dataset_id TEXT NOT NULL REFERENCES datasets(dataset_id) ON DELETE CASCADE,
  version INTEGER NOT NULL,
  format TEXT NOT NULL,
  create_time_ms INTEGER NOT NULL,
  parent_version INTEGER NOT NULL,
  files_json TEXT NOT NULL,
  stats_json TEXT NOT NULL,
  PRIMARY KEY (dataset_id, version)
);
)sql";

constexpr const char* kDatasetColumns =
    "d.dataset_id, d.description, d.labels_json, d.create_time_ms, d.update_time_ms, "
    "(SELECT COALESCE(MAX(version), 0) FROM dataset_versions v WHERE v.dataset_id = d.dataset_id), "
    "(SELECT COUNT(*) FROM dataset_versions v WHERE v.dataset_id = d.dataset_id)";

constexpr const char* kVersionColumns =
    "dataset_id, version, format, create_time_ms, parent_version, files_json, stats_json";

DatasetRecord ReadDataset(const SqliteStatement& st) {
  DatasetRecord d;
  d.dataset_id = st.Text(0);
  d.description = st.Text(1);
  d.labels =
      nlohmann::json::parse(st.Text(2), nullptr, false).get<std::map<std::string, std::string>>();
  d.create_time_ms = st.Int(3);
  d.update_time_ms = st.Int(4);
  d.latest_version = st.Int(5);
  d.version_count = st.Int(6);
  return d;
}

VersionRecord ReadVersion(const SqliteStatement& st) {
  VersionRecord v;
  v.dataset_id = st.Text(0);
  v.version = st.Int(1);
  ParseFormat(st.Text(2), &v.format);
  v.create_time_ms = st.Int(3);
  v.parent_version = st.Int(4);
  for (const auto& f : nlohmann::json::parse(st.Text(5), nullptr, false)) {
    v.files.push_back(FileRecord{f.value("split", ""), f.value("bytes", int64_t{0}),
                                 f.value("sha256", ""), f.value("examples", int64_t{0})});
  }
  nlohmann::json stats = nlohmann::json::parse(st.Text(6), nullptr, false);
  v.train_stats = StatsFromJson(stats.value("train", nlohmann::json::object()));
  if (stats.contains("validation")) v.validation_stats = StatsFromJson(stats["validation"]);
  for (const auto& w : stats.value("warnings", nlohmann::json::array())) {
    v.warnings.push_back(IssueFromJson(w));
  }
  return v;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteDatasetCatalog>> SqliteDatasetCatalog::Open(
    const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(path));
  SY_RETURN_IF_ERROR(db->Exec(kSchema));
  return std::unique_ptr<SqliteDatasetCatalog>(new SqliteDatasetCatalog(std::move(db)));
}

SqliteDatasetCatalog::SqliteDatasetCatalog(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {}
SqliteDatasetCatalog::~SqliteDatasetCatalog() = default;

absl::StatusOr<int64_t> SqliteDatasetCatalog::NextVersion(const std::string& dataset_id) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("SELECT next_version FROM datasets WHERE dataset_id = ?"));
  st.Bind(1, dataset_id);
  SY_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : 1;
}

absl::Status SqliteDatasetCatalog::AddVersion(const DatasetRecord& dataset,
                                              const VersionRecord& version) {
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json files = nlohmann::json::array();
  for (const FileRecord& f : version.files) {
    files.push_back(
        {{"split", f.split}, {"bytes", f.bytes}, {"sha256", f.sha256}, {"examples", f.examples}});
  }
  nlohmann::json stats = {{"train", StatsToJson(version.train_stats)}};
  if (version.validation_stats) stats["validation"] = StatsToJson(*version.validation_stats);
  nlohmann::json warnings = nlohmann::json::array();
  for (const ValidationIssue& w : version.warnings) warnings.push_back(IssueToJson(w));
  stats["warnings"] = warnings;

  SY_RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  auto body = [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(
        SqliteStatement upsert,
        db_->Prepare(
            "INSERT INTO datasets (dataset_id, description, labels_json, "
            "create_time_ms, update_time_ms, next_version) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(dataset_id) DO UPDATE SET update_time_ms = excluded.update_time_ms, "
            "next_version = MAX(next_version, excluded.next_version)"));
    upsert.Bind(1, dataset.dataset_id)
        .Bind(2, dataset.description)
        .Bind(3, nlohmann::json(dataset.labels).dump())
        .Bind(4, version.create_time_ms)
        .Bind(5, version.create_time_ms)
        .Bind(6, version.version + 1);
    SY_RETURN_IF_ERROR(upsert.Run());
    SY_ASSIGN_OR_RETURN(SqliteStatement insert,
                        db_->Prepare(absl::StrCat("INSERT INTO dataset_versions (", kVersionColumns,
                                                  ") VALUES (?, ?, ?, ?, ?, ?, ?)")));
    insert.Bind(1, version.dataset_id)
        .Bind(2, version.version)
        .Bind(3, FormatName(version.format))
        .Bind(4, version.create_time_ms)
        .Bind(5, version.parent_version)
        .Bind(6, files.dump())
        .Bind(7, stats.dump());
    absl::Status s = insert.Run();
    if (absl::IsAlreadyExists(s)) {
      return absl::AlreadyExistsError(absl::StrCat("datasets/", version.dataset_id, "/versions/",
                                                   version.version, " already exists"));
    }
    return s;
  };
  absl::Status s = body();
  if (s.ok()) s = db_->Exec("COMMIT");
  if (!s.ok()) (void)db_->Exec("ROLLBACK");  // never leave the connection in a transaction
  return s;
}

absl::StatusOr<DatasetRecord> SqliteDatasetCatalog::GetDatasetLocked(
    const std::string& dataset_id) {
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare(absl::StrCat("SELECT ", kDatasetColumns,
                                                " FROM datasets d WHERE d.dataset_id = ?")));
  st.Bind(1, dataset_id);
  SY_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("datasets/", dataset_id, " not found"));
  return ReadDataset(st);
}

absl::StatusOr<DatasetRecord> SqliteDatasetCatalog::GetDataset(const std::string& dataset_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return GetDatasetLocked(dataset_id);
}

absl::StatusOr<std::vector<DatasetRecord>> SqliteDatasetCatalog::ListDatasets(
    const std::string& after_id, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare(absl::StrCat("SELECT ", kDatasetColumns,
                                                " FROM datasets d WHERE d.dataset_id > ? "
                                                "ORDER BY d.dataset_id LIMIT ?")));
  st.Bind(1, after_id).Bind(2, static_cast<int64_t>(limit));
  std::vector<DatasetRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadDataset(st));
  }
  return out;
}

absl::StatusOr<int64_t> SqliteDatasetCatalog::CountLocked(const char* sql) {
  SY_ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare(sql));
  SY_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.Int(0) : 0;
}

absl::StatusOr<int64_t> SqliteDatasetCatalog::CountDatasets() {
  std::lock_guard<std::mutex> lock(mu_);
  return CountLocked("SELECT COUNT(*) FROM datasets");
}

absl::StatusOr<int64_t> SqliteDatasetCatalog::CountVersions() {
  std::lock_guard<std::mutex> lock(mu_);
  return CountLocked("SELECT COUNT(*) FROM dataset_versions");
}

absl::StatusOr<VersionRecord> SqliteDatasetCatalog::GetVersion(const std::string& dataset_id,
                                                               int64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(GetDatasetLocked(dataset_id).status());
  std::string sql =
      absl::StrCat("SELECT ", kVersionColumns, " FROM dataset_versions WHERE dataset_id = ? ",
                   version == 0 ? "ORDER BY version DESC LIMIT 1" : "AND version = ?");
  SY_ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare(sql));
  st.Bind(1, dataset_id);
  if (version != 0) st.Bind(2, version);
  SY_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) {
    return absl::NotFoundError(
        version == 0 ? absl::StrCat("datasets/", dataset_id, " has no versions")
                     : absl::StrCat("datasets/", dataset_id, "/versions/", version, " not found"));
  }
  return ReadVersion(st);
}

absl::StatusOr<std::vector<VersionRecord>> SqliteDatasetCatalog::ListVersions(
    const std::string& dataset_id, int64_t after_version, int limit) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(GetDatasetLocked(dataset_id).status());
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare(absl::StrCat("SELECT ", kVersionColumns,
                                                " FROM dataset_versions WHERE dataset_id = ? "
                                                "AND version > ? ORDER BY version LIMIT ?")));
  st.Bind(1, dataset_id).Bind(2, after_version).Bind(3, static_cast<int64_t>(limit));
  std::vector<VersionRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadVersion(st));
  }
  return out;
}

absl::Status SqliteDatasetCatalog::DeleteDataset(const std::string& dataset_id) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("DELETE FROM datasets WHERE dataset_id = ?"));
  st.Bind(1, dataset_id);
  SY_RETURN_IF_ERROR(st.Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("datasets/", dataset_id, " not found"));
  }
  return absl::OkStatus();
}

absl::Status SqliteDatasetCatalog::DeleteVersion(const std::string& dataset_id, int64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("DELETE FROM dataset_versions WHERE dataset_id = ? AND "
                                   "version = ?"));
  st.Bind(1, dataset_id).Bind(2, version);
  SY_RETURN_IF_ERROR(st.Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("datasets/", dataset_id, "/versions/", version, " not found"));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::dataset
