#include "services/training/job_runner.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "services/training/batching.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;

}  // namespace

JobRunner::JobRunner(JobManager* manager, std::string job_id,
                     std::shared_ptr<JobManager::Active> active)
    : m_(manager), job_id_(std::move(job_id)), active_(std::move(active)) {}

absl::Status JobRunner::ValidateOnly(JobManager* m, Job* job) {
  SY_ASSIGN_OR_RETURN(PreparedJob p, PrepareJob(m->sources(), *job, /*load_model=*/false));
  job->errors = p.errors;
  job->warnings = p.warnings;
  if (p.errors.empty()) {
    job->resolved_spec = p.resolved;
    job->training_examples = p.setup.train_count();
    job->validation_examples = p.setup.validation_count();
    job->total_steps = PlanFor(p.resolved, p.setup.TrainLengths()).total_steps();
  }
  return absl::OkStatus();
}

template <typename F>
absl::Status JobRunner::Update(F&& update) {
  std::lock_guard<std::mutex> lock(m_->mu_);
  SY_ASSIGN_OR_RETURN(Job job, m_->store_->Get(job_id_));
  return update(job);
}

absl::Status JobRunner::Fail(const std::string& kind, const std::string& message) {
  SY_LOG(kWarning, "jobs") << "jobs/" << job_id_ << " failed (" << kind << "): " << message;
  return Update([&](Job& job) {
    if (IsTerminal(job.state)) return absl::OkStatus();
    return m_->TransitionLocked(&job, JobState::kFailed, message, {MakeIssue(kind, "", message)});
  });
}

void JobRunner::Run() {
  absl::Status s = model::TorchCall("running the job", [&] { return RunOrFail(); });
  if (!s.ok()) {
    const std::string msg(s.message());
    const std::string kind = absl::StrContains(msg, "nan_loss")        ? "nan_loss"
                             : absl::StrContains(msg, "grader_error")  ? "grader_error"
                             : absl::StrContains(msg, "out of memory") ? "out_of_memory"
                                                                       : "internal";
    absl::Status f = Fail(kind, msg);
    if (!f.ok()) SY_LOG(kError, "jobs") << "jobs/" << job_id_ << ": " << f;
  }
  if (m_->metrics_) {
    std::lock_guard<std::mutex> lock(m_->mu_);
    for (auto* family :
         {&m_->metrics_->loss, &m_->metrics_->tokens_per_second, &m_->metrics_->peak_memory}) {
      if (family->Has({{"job", job_id_}})) family->Remove(&family->Add({{"job", job_id_}}));
    }
  }
}

absl::Status JobRunner::RunOrFail() {
  run_start_ = std::chrono::steady_clock::now();
  Job job;
  bool still_queued = true;
  SY_RETURN_IF_ERROR(Update([&](Job& j) {
    // Cancelled or paused between the scheduler's pick and this thread's start.
    if (j.state != JobState::kQueued) {
      still_queued = false;
      return absl::OkStatus();
    }
    SY_RETURN_IF_ERROR(m_->TransitionLocked(
        &j, JobState::kValidating,
        j.restarts > 0 ? "checking data, model and settings again before resuming"
                       : "checking data, model and settings"));
    job = j;
    return absl::OkStatus();
  }));
  if (!still_queued) return absl::OkStatus();
  // A stop asked for while validating takes effect here.
  auto stopped = [&]() -> absl::StatusOr<bool> {
    const StopKind stop = active_->stop;
    if (stop == StopKind::kNone) return false;
    if (stop == StopKind::kShutdown) return true;
    SY_RETURN_IF_ERROR(Update([&](Job& j) {
      return m_->TransitionLocked(
          &j, stop == StopKind::kCancel ? JobState::kCancelled : JobState::kPaused,
          stop == StopKind::kCancel ? "cancelled by request" : "paused by request");
    }));
    return true;
  };

  SY_ASSIGN_OR_RETURN(PreparedJob p, PrepareJob(m_->sources(), job, /*load_model=*/true));
  if (!p.errors.empty()) {
    const std::string reason = absl::StrCat(
        "validation failed with ", p.errors.size(), " error(s); first: ",
        p.errors[0].line > 0 ? absl::StrCat(p.errors[0].file, " line ", p.errors[0].line, ": ")
                             : (p.errors[0].field.empty() ? "" : p.errors[0].field + ": "),
        p.errors[0].message);
    return Update([&](Job& j) {
      j.warnings = p.warnings;
      return m_->TransitionLocked(&j, JobState::kFailed, reason, p.errors);
    });
  }
  SY_ASSIGN_OR_RETURN(bool stop_now, stopped());
  if (stop_now) return absl::OkStatus();
  const int64_t train_count = p.setup.train_count();
  const int64_t validation_count = p.setup.validation_count();
  absl::StatusOr<std::unique_ptr<Trainer>> trainer = Trainer::Create(std::move(p.setup));
  if (!trainer.ok()) {
    return Update([&](Job& j) {
      const std::string msg(trainer.status().message());
      return m_->TransitionLocked(&j, JobState::kFailed, msg,
                                  {MakeIssue("invalid_settings", "", msg)});
    });
  }
  SY_ASSIGN_OR_RETURN(std::optional<CheckpointInfo> resume, (*trainer)->ResumePoint());
  SY_RETURN_IF_ERROR(Update([&](Job& j) {
    j.resolved_spec = p.resolved;
    j.warnings = p.warnings;
    j.total_steps = (*trainer)->total_steps();
    j.training_examples = train_count;
    j.validation_examples = validation_count;
    j.device = p.resolved.device;
    return m_->TransitionLocked(
        &j, JobState::kRunning,
        resume ? absl::StrCat("resuming at step ", resume->step, " from jobs/", job_id_,
                              "/checkpoints/", resume->checkpoint_id)
               : absl::StrCat("training ", j.total_steps, " steps on ", j.device, " (",
                              (*trainer)->trainable_parameters(), " trainable parameters)"));
  }));

  first_step_ = resume ? resume->step : 0;
  run_start_ = std::chrono::steady_clock::now();
  absl::StatusOr<TrainerResult> result = (*trainer)->Run(this);
  if (!result.ok()) return result.status();
  trainer->reset();  // frees the model and optimizer: the device is free
  switch (result->outcome) {
    case TrainerResult::Outcome::kCompleted:
    case TrainerResult::Outcome::kEarlyStopped: {
      SY_ASSIGN_OR_RETURN(Job done, m_->store_->Get(job_id_));
      SY_ASSIGN_OR_RETURN(std::string model_id, Register(done, p.base, *result));
      return Update([&](Job& j) {
        j.fine_tuned_model = model_id;
        return m_->TransitionLocked(
            &j, JobState::kSucceeded,
            absl::StrCat(result->outcome == TrainerResult::Outcome::kEarlyStopped
                             ? absl::StrCat("stopped early at step ", result->step, "; ")
                             : "",
                         "registered models/", model_id));
      });
    }
    case TrainerResult::Outcome::kPaused:
      if (active_->stop == StopKind::kCancel) {
        return Update([&](Job& j) {
          return m_->TransitionLocked(&j, JobState::kCancelled,
                                      absl::StrCat("cancelled by request at step ", result->step));
        });
      }
      if (active_->stop == StopKind::kShutdown) {
        SY_LOG(kInfo, "jobs") << "jobs/" << job_id_ << " stopped at step " << result->step
                              << " for shutdown; it resumes at the next start";
        return absl::OkStatus();
      }
      return Update([&](Job& j) {
        return m_->TransitionLocked(
            &j, JobState::kPaused,
            result->result_checkpoint
                ? absl::StrCat("paused by request at step ", result->step, "; continues from jobs/",
                               job_id_, "/checkpoints/", result->result_checkpoint->checkpoint_id)
                : "paused by request before the first step");
      });
    case TrainerResult::Outcome::kCancelled:
      return Update([&](Job& j) {
        return m_->TransitionLocked(&j, JobState::kCancelled,
                                    absl::StrCat("cancelled by request at step ", result->step));
      });
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobRunner::Register(const Job& job, const ResolvedBase& base,
                                                const TrainerResult& result) {
  if (!result.result_checkpoint) return absl::InternalError("training ended without a checkpoint");
  const CheckpointInfo& c = *result.result_checkpoint;
  const JobSpec& spec = job.resolved_spec ? *job.resolved_spec : job.spec;
  const std::string model_id = absl::StrCat("ft:", base.root_id, spec.suffix.empty() ? "" : ":",
                                            spec.suffix, ":", job.job_id);
  // A directory under this id without a registry row is what a crash inside
  // AddFineTuned leaves (the rename happened, the insert did not); the id
  // holds this job's id, so nothing else can own it.
  const std::string target = m_->registry_->models_dir() + "/" + model_id;
  std::error_code ec;
  if (fs::exists(target, ec) && absl::IsNotFound(m_->registry_->Get(model_id).status())) {
    SY_LOG(kWarning, "jobs") << "removing " << target << ", left by an interrupted registration";
    SY_RETURN_IF_ERROR(RemoveAll(target));
  }
  // The model is the checkpoint without the optimizer and trainer state.
  const std::string export_dir = m_->JobDir(job.job_id) + "/.export";
  SY_RETURN_IF_ERROR(RemoveAll(export_dir));
  SY_RETURN_IF_ERROR(MakeDirs(export_dir));
  for (const auto& e : fs::directory_iterator(c.path)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name == "optimizer.safetensors" || name == "trainer_state.json") {
      continue;
    }
    SY_RETURN_IF_ERROR(LinkOrCopyFile(e.path().string(), export_dir + "/" + name));
  }
  nlohmann::json info = {
      {"job", "jobs/" + job.job_id},
      {"method", MethodName(spec.method)},
      {"training_dataset", spec.training_dataset},
      {"validation_dataset", spec.validation_dataset},
      {"resolved_spec", JobSpecToJson(spec)},
      {"checkpoint", absl::StrCat("jobs/", job.job_id, "/checkpoints/", c.checkpoint_id)}};
  if (result.last_train) info["final_train"] = TrainMetricsToJson(*result.last_train);
  if (result.last_eval) info["final_eval"] = EvalMetricsToJson(*result.last_eval);
  AddFineTunedRequest r;
  r.model_id = model_id;
  r.source_dir = export_dir;
  r.kind = fs::exists(export_dir + "/adapter_config.json") ? ModelKind::kAdapter
                                                           : ModelKind::kFullFineTune;
  r.base_model = base.root_id;
  r.fine_tune_json = info.dump();
  r.description = absl::StrCat("fine-tuned by jobs/", job.job_id);
  r.labels = spec.metadata;
  absl::StatusOr<ModelRecord> added = m_->registry_->AddFineTuned(r);
  if (absl::IsAlreadyExists(added.status())) {
    // Registered before a crash, then the job resumed: the same model.
    absl::StatusOr<ModelRecord> existing = m_->registry_->Get(model_id);
    if (existing.ok() &&
        absl::StrContains(existing->fine_tune_json, "\"jobs/" + job.job_id + "\"")) {
      (void)RemoveAll(export_dir);
      return model_id;
    }
  }
  if (!added.ok()) {
    (void)RemoveAll(export_dir);
    return absl::Status(added.status().code(),
                        absl::StrCat("registering ", model_id, ": ", added.status().message()));
  }
  return model_id;
}

void JobRunner::OnTrain(const TrainMetrics& t) {
  absl::Status s = Update([&](Job& job) {
    const int64_t new_steps = t.step - job.step;
    const int64_t new_tokens = t.tokens - job.trained_tokens;
    job.step = t.step;
    job.epoch = t.epoch;
    job.trained_tokens = t.tokens;
    job.latest_train = t;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start_).count();
    const double per_step = elapsed / std::max<int64_t>(1, t.step - first_step_);
    job.estimated_end_time_ms = absl::ToUnixMillis(absl::Now()) +
                                static_cast<int64_t>(1000 * per_step * (t.total_steps - t.step));
    if (m_->metrics_) {
      if (new_steps > 0) m_->metrics_->steps.Increment(static_cast<double>(new_steps));
      if (new_tokens > 0) m_->metrics_->tokens.Increment(static_cast<double>(new_tokens));
      m_->metrics_->loss.Add({{"job", job_id_}}).Set(t.loss);
      m_->metrics_->tokens_per_second.Add({{"job", job_id_}}).Set(t.tokens_per_second);
      m_->metrics_->peak_memory.Add({{"job", job_id_}})
          .Set(static_cast<double>(t.peak_memory_bytes));
    }
    JobEvent e;
    e.train = t;
    e.message =
        absl::StrFormat("step %d/%d loss %.4f acc %.3f lr %.3g tok/s %.0f", t.step, t.total_steps,
                        t.loss, t.mean_token_accuracy, t.learning_rate, t.tokens_per_second);
    return m_->EmitLocked(&job, std::move(e), false);
  });
  if (!s.ok()) SY_LOG(kWarning, "jobs") << "jobs/" << job_id_ << ": recording a step: " << s;
}

void JobRunner::OnEval(const EvalMetrics& ev) {
  absl::Status s = Update([&](Job& job) {
    job.latest_eval = ev;
    if (ev.is_best) job.best_eval = ev;
    JobEvent e;
    e.eval = ev;
    e.message = absl::StrFormat("eval at step %d: validation loss %.4f, token accuracy %.3f%s",
                                ev.step, ev.validation_loss, ev.validation_mean_token_accuracy,
                                ev.is_best ? " (best)" : "");
    return m_->EmitLocked(&job, std::move(e), false);
  });
  if (!s.ok()) SY_LOG(kWarning, "jobs") << "jobs/" << job_id_ << ": recording an eval: " << s;
}

void JobRunner::OnCheckpoint(const CheckpointInfo& c) {
  absl::Status s = Update([&](Job& job) {
    JobEvent e;
    e.checkpoint = c;
    e.message = absl::StrCat("checkpoint ", c.checkpoint_id, " saved at step ", c.step);
    return m_->EmitLocked(&job, std::move(e), true);
  });
  if (!s.ok()) SY_LOG(kWarning, "jobs") << "jobs/" << job_id_ << ": recording a checkpoint: " << s;
}

StopRequest JobRunner::PollStop() {
  switch (active_->stop.load()) {
    case StopKind::kNone:
      return StopRequest::kNone;
    case StopKind::kCancel:
      return StopRequest::kCancel;
    case StopKind::kPause:
    case StopKind::kShutdown:
      return StopRequest::kPause;
  }
  return StopRequest::kNone;
}

}  // namespace switchyard::training
