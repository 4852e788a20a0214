#include "services/training/job_manager.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/dataset/dataset_manager.h"
#include "services/training/job_runner.h"
#include "services/training/job_spec.h"
#include "services/training/trainer.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// Interruptions (restarts of the service while the job ran) before a job is
// failed instead of resumed.
constexpr int kMaxRestarts = 5;

bool InProgress(JobState s) {
  return s == JobState::kQueued || s == JobState::kValidating || s == JobState::kRunning ||
         s == JobState::kPaused;
}

}  // namespace

JobManager::Metrics::Metrics(prometheus::Registry& r)
    : jobs(prometheus::BuildGauge()
               .Name("switchyard_training_jobs")
               .Help("Fine-tuning jobs by state.")
               .Register(r)),
      finished(prometheus::BuildCounter()
                   .Name("switchyard_training_jobs_finished_total")
                   .Help("Jobs that reached a terminal state in this process, by state.")
                   .Register(r)),
      steps(prometheus::BuildCounter()
                .Name("switchyard_training_steps_total")
                .Help("Optimizer steps taken by this process.")
                .Register(r)
                .Add({})),
      tokens(prometheus::BuildCounter()
                 .Name("switchyard_training_tokens_total")
                 .Help("Tokens trained on by this process (padding excluded).")
                 .Register(r)
                 .Add({})),
      loss(prometheus::BuildGauge()
               .Name("switchyard_training_loss")
               .Help("Latest training loss of each running job, nats per loss-bearing token.")
               .Register(r)),
      tokens_per_second(prometheus::BuildGauge()
                            .Name("switchyard_training_tokens_per_second")
                            .Help("Latest training throughput of each running job.")
                            .Register(r)),
      peak_memory(prometheus::BuildGauge()
                      .Name("switchyard_training_peak_memory_bytes")
                      .Help("Peak memory of each running job's process (CPU: peak resident "
                            "set) at its latest step, bytes.")
                      .Register(r)) {}

JobManager::JobManager(JobManagerOptions options, std::unique_ptr<JobStore> store,
                       ModelRegistry* registry, dataset::DatasetCatalog* datasets)
    : options_(std::move(options)),
      store_(std::move(store)),
      registry_(registry),
      datasets_(datasets) {
  if (options_.metrics != nullptr) metrics_ = std::make_unique<Metrics>(*options_.metrics);
}

absl::StatusOr<std::unique_ptr<JobManager>> JobManager::Open(JobManagerOptions options,
                                                             std::unique_ptr<JobStore> store,
                                                             ModelRegistry* registry,
                                                             dataset::DatasetCatalog* datasets) {
  // Absolute, so checkpoint and model paths in responses are too.
  options.data_dir = fs::absolute(options.data_dir).lexically_normal().string();
  SY_RETURN_IF_ERROR(MakeDirs(options.data_dir + "/jobs"));
  std::unique_ptr<JobManager> m(
      new JobManager(std::move(options), std::move(store), registry, datasets));
  std::lock_guard<std::mutex> lock(m->mu_);
  m->RefreshStateGaugesLocked();
  return m;
}

JobManager::~JobManager() { Shutdown(); }

std::string JobManager::JobDir(const std::string& job_id) const {
  return options_.data_dir + "/jobs/" + job_id;
}

absl::StatusOr<std::string> JobManager::JobIdOf(const std::string& name) const {
  std::string id = absl::StartsWith(name, "jobs/") ? name.substr(5) : name;
  if (id.empty() || id.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("name: expected \"jobs/<job_id>\", got \"", name, "\""));
  }
  return id;
}

absl::StatusOr<JobEventLog*> JobManager::LogLocked(const std::string& job_id) {
  auto it = logs_.find(job_id);
  if (it != logs_.end()) return it->second.get();
  if (logs_.size() >= 256) {
    // Keep open files bounded: drop the logs of jobs no worker holds (they
    // reopen on the next read).
    for (auto l = logs_.begin(); l != logs_.end();) {
      l = active_.count(l->first) ? std::next(l) : logs_.erase(l);
    }
  }
  SY_RETURN_IF_ERROR(MakeDirs(JobDir(job_id)));
  SY_ASSIGN_OR_RETURN(std::unique_ptr<JobEventLog> log,
                      JobEventLog::Open(JobDir(job_id) + "/events.jsonl"));
  JobEventLog* raw = log.get();
  logs_[job_id] = std::move(log);
  return raw;
}

absl::Status JobManager::EmitLocked(Job* job, JobEvent event, bool durable) {
  SY_ASSIGN_OR_RETURN(JobEventLog * log, LogLocked(job->job_id));
  event.job_id = job->job_id;
  SY_ASSIGN_OR_RETURN(JobEvent stored, log->Append(std::move(event), durable));
  job->last_event_sequence = stored.sequence;
  SY_RETURN_IF_ERROR(store_->Update(*job));
  changed_.notify_all();
  return absl::OkStatus();
}

absl::Status JobManager::TransitionLocked(Job* job, JobState to, const std::string& reason,
                                          std::vector<Issue> errors) {
  JobEvent e;
  StateChange change;
  change.from = job->state;
  change.to = to;
  change.reason = reason;
  change.errors = errors;
  e.level = to == JobState::kFailed ? EventLevel::kError : EventLevel::kInfo;
  e.message = absl::StrCat(JobStateName(job->state), " -> ", JobStateName(to),
                           reason.empty() ? "" : ": ", reason);
  e.state_change = std::move(change);
  const int64_t now = NowMs();
  if (to == JobState::kRunning && job->start_time_ms == 0) job->start_time_ms = now;
  if (IsTerminal(to)) {
    job->end_time_ms = now;
    job->estimated_end_time_ms = 0;
    if (metrics_) metrics_->finished.Add({{"state", JobStateName(to)}}).Increment();
  }
  if (to == JobState::kQueued) job->queue_order_ms = now;
  if (to == JobState::kFailed) job->errors = std::move(errors);
  job->state = to;
  SY_RETURN_IF_ERROR(EmitLocked(job, std::move(e), true));
  RefreshStateGaugesLocked();
  schedule_.notify_all();
  return absl::OkStatus();
}

void JobManager::RefreshStateGaugesLocked() {
  if (!metrics_) return;
  absl::StatusOr<std::vector<Job>> jobs = store_->List();
  if (!jobs.ok()) return;
  std::map<JobState, int64_t> counts;
  for (const Job& j : *jobs) ++counts[j.state];
  for (JobState s :
       {JobState::kQueued, JobState::kValidating, JobState::kRunning, JobState::kPaused,
        JobState::kSucceeded, JobState::kFailed, JobState::kCancelled}) {
    metrics_->jobs.Add({{"state", JobStateName(s)}}).Set(static_cast<double>(counts[s]));
  }
}

void JobManager::FillQueuePositionsLocked(std::vector<Job*> jobs) {
  absl::StatusOr<std::vector<Job>> all = store_->List();
  if (!all.ok()) return;
  std::vector<std::pair<int64_t, std::string>> queue;
  for (const Job& j : *all) {
    if (j.state == JobState::kQueued) queue.emplace_back(j.queue_order_ms, j.job_id);
  }
  std::sort(queue.begin(), queue.end());
  for (Job* job : jobs) {
    job->queue_position = 0;
    if (job->state != JobState::kQueued) continue;
    for (size_t i = 0; i < queue.size(); ++i) {
      if (queue[i].second == job->job_id) job->queue_position = static_cast<int>(i + 1);
    }
  }
}

absl::Status JobManager::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return absl::FailedPreconditionError("the job manager is already started");
  model::SetTorchThreads(options_.cpu_threads);
  SY_ASSIGN_OR_RETURN(std::vector<Job> jobs, store_->List());
  for (Job& job : jobs) {
    if (job.state != JobState::kValidating && job.state != JobState::kRunning) continue;
    absl::StatusOr<std::vector<CheckpointInfo>> checkpoints =
        training::ListCheckpoints(JobDir(job.job_id) + "/checkpoints");
    std::string from = "the beginning (no checkpoint yet)";
    if (checkpoints.ok() && !checkpoints->empty()) {
      from = absl::StrCat("jobs/", job.job_id, "/checkpoints/", checkpoints->back().checkpoint_id);
    }
    ++job.restarts;
    if (job.restarts > kMaxRestarts) {
      const std::string why = absl::StrCat(
          "the service stopped during this job ", job.restarts,
          " times; it is not resumed again (a job that crashes the process would block the "
          "queue). Check the server log, then create it again, e.g. with a smaller batch");
      Issue issue;
      issue.kind = "too_many_restarts";
      issue.message = why;
      SY_RETURN_IF_ERROR(TransitionLocked(&job, JobState::kFailed, why, {issue}));
      continue;
    }
    SY_RETURN_IF_ERROR(TransitionLocked(
        &job, JobState::kQueued, absl::StrCat("the service restarted; resumes from ", from)));
    job.queue_order_ms = 0;  // ahead of every job queued normally
    SY_RETURN_IF_ERROR(store_->Update(job));
    SY_LOG(kInfo, "jobs") << "jobs/" << job.job_id << " was interrupted; requeued to resume from "
                          << from;
  }
  started_ = true;
  scheduler_ = std::thread([this] { SchedulerLoop(); });
  return absl::OkStatus();
}

void JobManager::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || stopping_) return;
    stopping_ = true;
    for (auto& [id, active] : active_) {
      StopKind none = StopKind::kNone;  // a pending cancel or pause stands
      active->stop.compare_exchange_strong(none, StopKind::kShutdown);
    }
    changed_.notify_all();
    schedule_.notify_all();
  }
  if (scheduler_.joinable()) scheduler_.join();
  std::unique_lock<std::mutex> lock(mu_);
  schedule_.wait(lock, [this] { return running_workers_ == 0; });
}

void JobManager::SchedulerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    absl::StatusOr<std::vector<Job>> jobs = store_->List();
    if (jobs.ok()) {
      std::vector<Job*> queued;
      for (Job& j : *jobs) {
        if (j.state == JobState::kQueued && !active_.count(j.job_id)) queued.push_back(&j);
      }
      std::sort(queued.begin(), queued.end(), [](const Job* a, const Job* b) {
        return std::make_pair(a->queue_order_ms, a->job_id) <
               std::make_pair(b->queue_order_ms, b->job_id);
      });
      for (Job* job : queued) {
        const std::string device = DeviceFor(job->spec.device);
        if (busy_slots_[device] >= options_.max_jobs_per_device) continue;
        ++busy_slots_[device];
        auto active = std::make_shared<Active>();
        active->device = device;
        active_[job->job_id] = active;
        ++running_workers_;
        // Detached: Shutdown() waits for running_workers_ to reach 0, and a
        // worker touches nothing of the manager after its last decrement.
        std::thread([this, id = job->job_id, active] {
          JobRunner(this, id, active).Run();
          std::lock_guard<std::mutex> done(mu_);
          --busy_slots_[active->device];
          active_.erase(id);
          --running_workers_;
          schedule_.notify_all();
        }).detach();
      }
    } else {
      SY_LOG(kError, "jobs") << "cannot read the job queue: " << jobs.status();
    }
    schedule_.wait_for(lock, std::chrono::seconds(5));
  }
}

absl::StatusOr<Job> JobManager::CreateJob(const JobSpec& submitted,
                                          const CreateJobOptions& options) {
  SY_RETURN_IF_ERROR(ValidateJobSpec(submitted));
  JobSpec spec = submitted;
  if (absl::StartsWith(spec.base_model, "/")) {
    SY_ASSIGN_OR_RETURN(spec.base_model, RegisterBaseDirectory(spec.base_model));
  }
  Job job;
  job.job_id = options.job_id.empty() ? "ft-" + RandomHex(6) : options.job_id;
  SY_RETURN_IF_ERROR(dataset::DatasetManager::ValidateDatasetId(job.job_id));
  // The base must exist; datasets are pinned to a version now.
  SY_RETURN_IF_ERROR(ResolveBase(sources(), spec.base_model).status());
  for (auto [ref, field] :
       {std::pair<std::string*, const char*>{&spec.training_dataset, "training_dataset"},
        {&spec.validation_dataset, "validation_dataset"}}) {
    if (ref->empty()) continue;
    std::string name;
    int64_t version;
    SY_RETURN_IF_ERROR(ParseDatasetRef(*ref, field, &name, &version));
    absl::StatusOr<dataset::VersionRecord> v = datasets_->GetVersion(name, version);
    if (!v.ok()) {
      return absl::Status(v.status().code(), absl::StrCat(field, ": ", v.status().message()));
    }
    const bool dpo = spec.method == Method::kDpo;
    const bool rl = spec.method == Method::kReinforcement;
    const bool fits = dpo  ? v->format == dataset::DatasetFormat::kPreference
                      : rl ? v->format == dataset::DatasetFormat::kChat
                           : v->format == dataset::DatasetFormat::kChat ||
                                 v->format == dataset::DatasetFormat::kCompletion;
    if (!fits) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": datasets/", name, "@", v->version, " is ", dataset::FormatName(v->format),
          " data; ",
          dpo  ? "DPO needs preference data (prompt, chosen, rejected)"
          : rl ? "reinforcement fine-tuning needs chat data (prompts the model answers)"
               : "supervised fine-tuning needs chat or completion data"));
    }
    *ref = absl::StrCat(name, "@", v->version);
  }
  job.spec = spec;
  job.state = JobState::kQueued;
  job.create_time_ms = NowMs();
  job.device = DeviceFor(spec.device);
  if (options.validate_only) {
    if (!options.job_id.empty() && store_->Get(options.job_id).ok()) {
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: jobs/", options.job_id, " already exists"));
    }
    SY_RETURN_IF_ERROR(JobRunner::ValidateOnly(this, &job));
    return job;
  }
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(std::vector<Job> all, store_->List());
  int64_t queued = 0;
  for (const Job& j : all) queued += j.state == JobState::kQueued;
  if (queued >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the job queue is full (", queued, " queued, --max-queued-jobs ",
                     options_.max_queued_jobs, "); wait for jobs to start or cancel some"));
  }
  job.queue_order_ms = job.create_time_ms;
  SY_RETURN_IF_ERROR(store_->Insert(job));
  (void)RemoveAll(JobDir(job.job_id));  // debris of an earlier job with this id
  JobEvent e;
  StateChange change;
  change.to = JobState::kQueued;
  change.reason = "created";
  e.state_change = change;
  e.message =
      absl::StrCat("created; base ", spec.base_model, ", training data ", spec.training_dataset);
  SY_RETURN_IF_ERROR(EmitLocked(&job, std::move(e), true));
  RefreshStateGaugesLocked();
  schedule_.notify_all();
  FillQueuePositionsLocked({&job});
  return job;
}

absl::StatusOr<std::string> JobManager::RegisterBaseDirectory(const std::string& dir) {
  std::string path = fs::path(dir).lexically_normal().string();
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(absl::StrCat("base_model: no directory ", path, " on the server"));
  }
  // The directory's name, made a legal model id; a taken id gets a suffix
  // unless it already links to this directory.
  std::string base;
  for (char c : fs::path(path).filename().string()) {
    base +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '-';
  }
  if (base.empty() || !std::isalnum(static_cast<unsigned char>(base[0]))) base = "model-" + base;
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::string id = attempt == 0 ? base : absl::StrCat(base, "-", attempt + 1);
    absl::StatusOr<ModelRecord> existing = registry_->Get(id);
    if (existing.ok()) {
      if (fs::equivalent(existing->path, path, ec)) return id;
      continue;
    }
    RegisterRequest r;
    r.model_id = id;
    r.path = path;
    r.link = true;
    r.description = absl::StrCat("registered from ", path, " by CreateJob");
    absl::StatusOr<ModelRecord> added = registry_->Register(r);
    if (absl::IsAlreadyExists(added.status())) {
      // Another CreateJob may have registered this very directory just now.
      absl::StatusOr<ModelRecord> now = registry_->Get(id);
      if (now.ok() && fs::equivalent(now->path, path, ec)) return id;
      continue;
    }
    if (!added.ok()) {
      return absl::Status(added.status().code(),
                          absl::StrCat("base_model: ", added.status().message()));
    }
    SY_LOG(kInfo, "jobs") << "registered " << path << " as models/" << id << " (linked)";
    return id;
  }
  return absl::AlreadyExistsError(absl::StrCat("base_model: no free model id for ", path));
}

absl::StatusOr<Job> JobManager::GetJob(const std::string& name) {
  SY_ASSIGN_OR_RETURN(std::string id, JobIdOf(name));
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(Job job, store_->Get(id));
  FillQueuePositionsLocked({&job});
  return job;
}

absl::StatusOr<JobPage> JobManager::ListJobs(int page_size, const std::string& page_token,
                                             const JobFilter& filter) {
  if (page_size < 0) return absl::InvalidArgumentError("page_size: must not be negative");
  if (page_size == 0) page_size = 50;
  page_size = std::min(page_size, 1000);
  int64_t offset = 0;
  if (!page_token.empty() && (!absl::SimpleAtoi(page_token, &offset) || offset < 0)) {
    return absl::InvalidArgumentError("page_token: not a token from a previous response");
  }
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(std::vector<Job> all, store_->List());
  std::vector<Job> matching;
  const std::string base = absl::StartsWith(filter.base_model, "models/")
                               ? filter.base_model.substr(7)
                               : filter.base_model;
  for (Job& j : all) {
    if (!filter.states.empty() &&
        std::find(filter.states.begin(), filter.states.end(), j.state) == filter.states.end()) {
      continue;
    }
    if (!base.empty() && j.spec.base_model != base && j.spec.base_model != "models/" + base) {
      continue;
    }
    matching.push_back(std::move(j));
  }
  JobPage page;
  page.total_size = static_cast<int64_t>(matching.size());
  for (int64_t i = offset; i < page.total_size && i < offset + page_size; ++i) {
    page.jobs.push_back(std::move(matching[i]));
  }
  if (offset + page_size < page.total_size)
    page.next_page_token = std::to_string(offset + page_size);
  std::vector<Job*> ptrs;
  for (Job& j : page.jobs) ptrs.push_back(&j);
  FillQueuePositionsLocked(ptrs);
  return page;
}

absl::StatusOr<Job> JobManager::CancelJob(const std::string& name) {
  SY_ASSIGN_OR_RETURN(std::string id, JobIdOf(name));
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(Job job, store_->Get(id));
  if (IsTerminal(job.state)) {
    return absl::FailedPreconditionError(absl::StrCat("jobs/", id, " is ", JobStateName(job.state),
                                                      "; only a job in progress can be cancelled"));
  }
  auto it = active_.find(id);
  // A worker holding the job sees the flag even if it has not started it yet.
  if (it != active_.end()) it->second->stop = StopKind::kCancel;
  const bool working = job.state == JobState::kValidating || job.state == JobState::kRunning;
  if (working && it != active_.end()) {
    // Stops at the next step boundary.
  } else {
    SY_RETURN_IF_ERROR(TransitionLocked(&job, JobState::kCancelled, "cancelled by request"));
  }
  FillQueuePositionsLocked({&job});
  return job;
}

absl::StatusOr<Job> JobManager::PauseJob(const std::string& name) {
  SY_ASSIGN_OR_RETURN(std::string id, JobIdOf(name));
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(Job job, store_->Get(id));
  if (job.state != JobState::kQueued && job.state != JobState::kValidating &&
      job.state != JobState::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("jobs/", id, " is ", JobStateName(job.state),
                     "; only a queued, validating or running job can be paused"));
  }
  auto it = active_.find(id);
  if (it != active_.end()) {
    // Never downgrades a cancel; checkpoints at the next step boundary.
    StopKind none = StopKind::kNone;
    it->second->stop.compare_exchange_strong(none, StopKind::kPause);
  }
  const bool working = job.state == JobState::kValidating || job.state == JobState::kRunning;
  if (working && it != active_.end()) {
  } else {
    SY_RETURN_IF_ERROR(TransitionLocked(&job, JobState::kPaused, "paused by request"));
  }
  FillQueuePositionsLocked({&job});
  return job;
}

absl::StatusOr<Job> JobManager::ResumeJob(const std::string& name) {
  SY_ASSIGN_OR_RETURN(std::string id, JobIdOf(name));
  std::lock_guard<std::mutex> lock(mu_);
  SY_ASSIGN_OR_RETURN(Job job, store_->Get(id));
  // (A worker that just paused it may still be releasing the device; the
  // scheduler starts it again once that worker is gone.)
  if (job.state != JobState::kPaused) {
    return absl::FailedPreconditionError(absl::StrCat("jobs/", id, " is ", JobStateName(job.state),
                                                      "; only a paused job can be resumed"));
  }
  SY_RETURN_IF_ERROR(TransitionLocked(&job, JobState::kQueued, "resumed by request"));
  FillQueuePositionsLocked({&job});
  return job;
}

absl::StatusOr<std::vector<JobEvent>> JobManager::ListEvents(const std::string& name,
                                                             int64_t after_sequence, int limit) {
  return WaitEvents(name, after_sequence, limit, absl::ZeroDuration());
}

absl::StatusOr<std::vector<JobEvent>> JobManager::WaitEvents(const std::string& name,
                                                             int64_t after_sequence, int limit,
                                                             absl::Duration timeout) {
  SY_ASSIGN_OR_RETURN(std::string id, JobIdOf(name));
  std::unique_lock<std::mutex> lock(mu_);
  SY_RETURN_IF_ERROR(store_->Get(id).status());
  SY_ASSIGN_OR_RETURN(JobEventLog * log, LogLocked(id));
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(timeout);
  while (log->last_sequence() <= after_sequence && !stopping_ &&
         std::chrono::steady_clock::now() < deadline) {
    changed_.wait_until(lock, deadline);
  }
  return log->After(after_sequence, std::max(1, limit));
}

absl::StatusOr<std::vector<CheckpointInfo>> JobManager::ListCheckpoints(const std::string& name) {
  SY_ASSIGN_OR_RETURN(std::string id, JobIdOf(name));
  SY_RETURN_IF_ERROR(GetJob(id).status());
  SY_ASSIGN_OR_RETURN(std::vector<CheckpointInfo> checkpoints,
                      training::ListCheckpoints(JobDir(id) + "/checkpoints"));
  for (CheckpointInfo& c : checkpoints) c.size_bytes = DirectoryBytes(c.path);
  return checkpoints;
}

absl::StatusOr<ModelRecord> JobManager::CheckpointModel(const std::string& name) {
  SY_ASSIGN_OR_RETURN(ResolvedBase base, ResolveBase(sources(), name));
  const ModelKind kind = base.adapter_dir.empty() ? ModelKind::kFullFineTune : ModelKind::kAdapter;
  const std::string dir = kind == ModelKind::kAdapter ? base.adapter_dir : base.base_dir;
  SY_ASSIGN_OR_RETURN(ModelRecord record, registry_->Inspect(dir, kind));
  record.model_id = name;
  record.base_model = base.root_id;
  return record;
}

std::optional<std::string> JobManager::ModelInUse(const std::string& model_id) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<std::vector<Job>> jobs = store_->List();
  if (!jobs.ok()) return "the job store cannot be read";
  for (const Job& j : *jobs) {
    if (!InProgress(j.state)) continue;
    const std::string& b = j.spec.base_model;
    if (b == model_id || b == "models/" + model_id) {
      return absl::StrCat("jobs/", j.job_id, " (", JobStateName(j.state), ") trains on it");
    }
  }
  return std::nullopt;
}

}  // namespace switchyard::training
