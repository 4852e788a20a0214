#include "services/training/job_store.h"

#include "absl/strings/str_cat.h"
#include "shared/core/logging.h"
#include "shared/core/sqlite_db.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {
namespace {

// The record is one JSON document; the columns beside it are for ordering
// and for a person reading the database.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  job_id TEXT PRIMARY KEY,
  state TEXT NOT NULL,
  base_model TEXT NOT NULL,
  create_time_ms INTEGER NOT NULL,
  job_json TEXT NOT NULL
);
)sql";

absl::StatusOr<Job> ReadJob(const SqliteStatement& st) {
  nlohmann::json j = nlohmann::json::parse(st.Text(0), nullptr, false);
  absl::StatusOr<Job> job = JobFromJson(j);
  if (!job.ok()) {
    return absl::DataLossError(
        absl::StrCat("jobs table: row is unreadable: ", job.status().message()));
  }
  return job;
}

}  // namespace

SqliteJobStore::SqliteJobStore(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {}
SqliteJobStore::~SqliteJobStore() = default;

absl::StatusOr<std::unique_ptr<SqliteJobStore>> SqliteJobStore::Open(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(path));
  SY_RETURN_IF_ERROR(db->Exec(kSchema));
  return std::unique_ptr<SqliteJobStore>(new SqliteJobStore(std::move(db)));
}

absl::Status SqliteJobStore::Insert(const Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement exists, db_->Prepare("SELECT 1 FROM jobs WHERE job_id = ?1"));
  exists.Bind(1, job.job_id);
  SY_ASSIGN_OR_RETURN(bool found, exists.Step());
  if (found) return absl::AlreadyExistsError(absl::StrCat("jobs/", job.job_id, " already exists"));
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("INSERT INTO jobs (job_id, state, base_model, create_time_ms, "
                                   "job_json) VALUES (?1, ?2, ?3, ?4, ?5)"));
  st.Bind(1, job.job_id)
      .Bind(2, JobStateName(job.state))
      .Bind(3, job.spec.base_model)
      .Bind(4, job.create_time_ms)
      .Bind(5, JobToJson(job).dump());
  return st.Run();
}

absl::Status SqliteJobStore::Update(const Job& job) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("UPDATE jobs SET state = ?2, job_json = ?3 WHERE job_id = ?1"));
  st.Bind(1, job.job_id).Bind(2, JobStateName(job.state)).Bind(3, JobToJson(job).dump());
  SY_RETURN_IF_ERROR(st.Run());
  if (db_->Changes() == 0)
    return absl::NotFoundError(absl::StrCat("jobs/", job.job_id, " not found"));
  return absl::OkStatus();
}

absl::StatusOr<Job> SqliteJobStore::Get(const std::string& job_id) {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("SELECT job_json FROM jobs WHERE job_id = ?1"));
  st.Bind(1, job_id);
  SY_ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("jobs/", job_id, " not found"));
  return ReadJob(st);
}

absl::StatusOr<std::vector<Job>> SqliteJobStore::List() {
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare("SELECT job_json FROM jobs ORDER BY create_time_ms DESC, job_id DESC"));
  std::vector<Job> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    absl::StatusOr<Job> job = ReadJob(st);
    if (!job.ok()) {
      // One bad row must not take every job down with it.
      SY_LOG(kError, "jobs") << job.status();
      continue;
    }
    out.push_back(std::move(*job));
  }
  return out;
}

}  // namespace switchyard::training
