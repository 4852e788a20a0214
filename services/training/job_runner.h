// JobRunner: one job's run on a worker thread of the JobManager, from
// VALIDATING to a terminal state (or back to the queue at shutdown): prepares
// it (PrepareJob), trains with a Trainer while turning its progress into job
// events, and registers the result. Internal to the JobManager (it reads the manager's private
// state under the manager's lock).
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_RUNNER_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_RUNNER_H_

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "services/training/job_manager.h"
#include "services/training/job_preparer.h"
#include "services/training/trainer.h"

namespace switchyard::training {

enum class StopKind { kNone, kPause, kCancel, kShutdown };

struct JobManager::Active {
  std::string device;
  std::atomic<StopKind> stop{StopKind::kNone};
};

struct JobManager::Metrics {
  explicit Metrics(prometheus::Registry& registry);
  prometheus::Family<prometheus::Gauge>& jobs;
  prometheus::Family<prometheus::Counter>& finished;
  prometheus::Counter& steps;
  prometheus::Counter& tokens;
  prometheus::Family<prometheus::Gauge>& loss;
  prometheus::Family<prometheus::Gauge>& tokens_per_second;
  prometheus::Family<prometheus::Gauge>& peak_memory;
};

class JobRunner : public TrainerListener {
 public:
  JobRunner(JobManager* manager, std::string job_id, std::shared_ptr<JobManager::Active> active);
  // Runs the job to its end; failures become the job's FAILED state.
  void Run();

  // The data checks of VALIDATING without queueing: fills job->resolved_spec,
  // counts, errors and warnings.
  static absl::Status ValidateOnly(JobManager* manager, Job* job);

  void OnTrain(const TrainMetrics& metrics) override;
  void OnEval(const EvalMetrics& metrics) override;
  void OnCheckpoint(const CheckpointInfo& checkpoint) override;
  StopRequest PollStop() override;

 private:
  absl::Status RunOrFail();
  absl::Status Fail(const std::string& kind, const std::string& message);
  absl::StatusOr<std::string> Register(const Job& job, const ResolvedBase& base,
                                       const TrainerResult& result);
  // Loads the job, applies `update` and stores it, emitting `event` when set.
  template <typename F>
  absl::Status Update(F&& update);

  JobManager* m_;
  std::string job_id_;
  std::shared_ptr<JobManager::Active> active_;
  std::chrono::steady_clock::time_point run_start_;
  int64_t first_step_ = 0;  // the step this run started from
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_RUNNER_H_
