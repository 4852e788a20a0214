// JobStore: the persistent records of fine-tuning jobs (the `jobs` table of
// switchyard.db). An interface so a PostgreSQL backend can replace SQLite when
// several replicas write. Implementations are thread-safe.
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_STORE_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_STORE_H_

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/job_types.h"

namespace switchyard {
class SqliteDb;
}

namespace switchyard::training {

class JobStore {
 public:
  virtual ~JobStore() = default;
  // ALREADY_EXISTS when the id is taken.
  virtual absl::Status Insert(const Job& job) = 0;
  // NOT_FOUND when absent.
  virtual absl::Status Update(const Job& job) = 0;
  virtual absl::StatusOr<Job> Get(const std::string& job_id) = 0;
  // Every job, newest first (by creation time, then id).
  virtual absl::StatusOr<std::vector<Job>> List() = 0;
};

class SqliteJobStore : public JobStore {
 public:
  // Opens (creating the table as needed) the database at `path`.
  static absl::StatusOr<std::unique_ptr<SqliteJobStore>> Open(const std::string& path);
  ~SqliteJobStore() override;

  absl::Status Insert(const Job& job) override;
  absl::Status Update(const Job& job) override;
  absl::StatusOr<Job> Get(const std::string& job_id) override;
  absl::StatusOr<std::vector<Job>> List() override;

 private:
  explicit SqliteJobStore(std::unique_ptr<SqliteDb> db);
  std::mutex mu_;
  std::unique_ptr<SqliteDb> db_;
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_STORE_H_
