// JobManager: fine-tuning jobs from creation to a registered model.
//
// CreateJob checks what it can without data (field ranges, suffix, the base
// model and datasets exist, the dataset format fits the method) and queues the
// job. Workers take queued jobs in order while their device has a free slot
// (--max-jobs-per-device), validate them against the data (tokenize, resolve
// every "auto" setting, check lengths), train them with a Trainer, and
// register the result as "ft:<base>:<suffix>:<job-id>" in the ModelRegistry.
//
// Persistence: jobs live in the `jobs` table of switchyard.db; events are
// appended to <data_dir>/jobs/<id>/events.jsonl; checkpoints under
// <data_dir>/jobs/<id>/checkpoints/. Start() puts jobs that were VALIDATING or
// RUNNING when the process stopped (even by kill -9) back at the head of the
// queue; they continue from their newest checkpoint. Shutdown() stops running
// jobs at the next step boundary after a checkpoint and leaves them to resume
// at the next Start().
//
// Thread-safe.
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_MANAGER_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_MANAGER_H_

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/dataset/dataset_catalog.h"
#include "services/training/job_event_log.h"
#include "services/training/job_preparer.h"
#include "services/training/job_store.h"
#include "services/training/job_types.h"
#include "services/training/model_registry.h"

namespace prometheus {
class Registry;
}

namespace switchyard::training {

struct JobManagerOptions {
  std::string data_dir = "./switchyard-data";
  // Jobs trained at once on each device ("cpu", "cuda:0", ...).
  int max_jobs_per_device = 1;
  // QUEUED jobs accepted before CreateJob answers RESOURCE_EXHAUSTED.
  int max_queued_jobs = 64;
  // LibTorch intra-op threads while training on the CPU; 0 = every core.
  int cpu_threads = 0;
  // Where the switchyard_training_* metrics go; null = not exported.
  prometheus::Registry* metrics = nullptr;
};

struct CreateJobOptions {
  std::string job_id;  // empty: generated "ft-<hex>"
  bool validate_only = false;
};

struct JobFilter {
  std::vector<JobState> states;  // empty = all
  std::string base_model;        // model id; empty = all
};

struct JobPage {
  std::vector<Job> jobs;  // newest first
  std::string next_page_token;
  int64_t total_size = 0;
};

class JobManager {
 public:
  // Opens the job store and event logs; starts nothing. `registry` and
  // `datasets` are not owned and must outlive the manager.
  static absl::StatusOr<std::unique_ptr<JobManager>> Open(JobManagerOptions options,
                                                          std::unique_ptr<JobStore> store,
                                                          ModelRegistry* registry,
                                                          dataset::DatasetCatalog* datasets);
  ~JobManager();  // Shutdown()

  // Requeues interrupted jobs and starts scheduling.
  absl::Status Start();
  // Stops scheduling; running jobs checkpoint at their next step boundary and
  // stay RUNNING in the store (the next Start() resumes them). Blocks until
  // every worker has stopped. Safe to call twice.
  void Shutdown();

  // A base_model that is an absolute directory path is registered first
  // (linked, under the directory's name) and the job names that model.
  // INVALID_ARGUMENT naming the field, NOT_FOUND for a missing base model or
  // dataset, ALREADY_EXISTS for a taken job id, RESOURCE_EXHAUSTED when the
  // queue is full, UNIMPLEMENTED for methods this release cannot train.
  // validate_only runs the data checks too and returns the job it would
  // create (state VALIDATING's outcome: errors or a resolved spec).
  absl::StatusOr<Job> CreateJob(const JobSpec& spec, const CreateJobOptions& options);
  // `name` is "jobs/<id>" or "<id>".
  absl::StatusOr<Job> GetJob(const std::string& name);
  absl::StatusOr<JobPage> ListJobs(int page_size, const std::string& page_token,
                                   const JobFilter& filter);
  // See the v1 API (training.proto) for each state's rules;
  // FAILED_PRECONDITION names the state that forbids the call.
  absl::StatusOr<Job> CancelJob(const std::string& name);
  absl::StatusOr<Job> PauseJob(const std::string& name);
  absl::StatusOr<Job> ResumeJob(const std::string& name);

  // Stored events with sequence > after_sequence, oldest first, at most `limit`.
  absl::StatusOr<std::vector<JobEvent>> ListEvents(const std::string& name, int64_t after_sequence,
                                                   int limit);
  // Like ListEvents, but waits up to `timeout` for one when none is there yet.
  // Returns an empty list on timeout.
  absl::StatusOr<std::vector<JobEvent>> WaitEvents(const std::string& name, int64_t after_sequence,
                                                   int limit, absl::Duration timeout);
  // Checkpoints the job keeps, oldest first.
  absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& name);
  // A checkpoint viewed as a model ("jobs/<id>/checkpoints/<checkpoint>").
  absl::StatusOr<ModelRecord> CheckpointModel(const std::string& name);
  // Why a model may not be deleted: a job in progress uses it.
  std::optional<std::string> ModelInUse(const std::string& model_id);

  const JobManagerOptions& options() const { return options_; }

 private:
  friend class JobRunner;
  struct Active;   // a job a worker holds
  struct Metrics;  // switchyard_training_*
  JobManager(JobManagerOptions options, std::unique_ptr<JobStore> store, ModelRegistry* registry,
             dataset::DatasetCatalog* datasets);

  std::string JobDir(const std::string& job_id) const;
  JobSources sources() const { return {options_.data_dir, registry_, datasets_, store_.get()}; }
  // A base given as a server-side directory: registered (linked) under its
  // directory name, or the model already linking to it. Returns the model id.
  absl::StatusOr<std::string> RegisterBaseDirectory(const std::string& dir);
  absl::StatusOr<std::string> JobIdOf(const std::string& name) const;
  // Store and event log access; callers hold mu_.
  absl::StatusOr<JobEventLog*> LogLocked(const std::string& job_id);
  absl::Status EmitLocked(Job* job, JobEvent event, bool durable);
  absl::Status TransitionLocked(Job* job, JobState to, const std::string& reason,
                                std::vector<Issue> errors = {});
  void FillQueuePositionsLocked(std::vector<Job*> jobs);
  void RefreshStateGaugesLocked();
  void SchedulerLoop();

  JobManagerOptions options_;
  std::unique_ptr<JobStore> store_;
  ModelRegistry* registry_;
  dataset::DatasetCatalog* datasets_;
  std::unique_ptr<Metrics> metrics_;

  std::mutex mu_;
  std::condition_variable changed_;   // a job's events changed (watchers wait)
  std::condition_variable schedule_;  // a job was queued or a device slot freed
  bool started_ = false, stopping_ = false;
  std::map<std::string, std::unique_ptr<JobEventLog>> logs_;  // opened on first use
  std::map<std::string, std::shared_ptr<Active>> active_;     // by job id
  std::map<std::string, int> busy_slots_;                     // by device
  std::thread scheduler_;
  int running_workers_ = 0;  // detached worker threads not yet finished
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_MANAGER_H_
