#include "services/training/job_runner.h"

#include <ATen/Context.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "services/dataset/dataset_manager.h"
#include "services/training/batching.h"
#include "services/training/job_spec.h"
#include "services/training/sft_data.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/model/lora.h"
#include "shared/model/runtime.h"
#include "shared/text/model_text.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;

Issue MakeIssue(std::string kind, std::string field, std::string message) {
  Issue i;
  i.kind = std::move(kind);
  i.field = std::move(field);
  i.message = std::move(message);
  return i;
}

// Hard link when the file system allows, else copy; atomic either way.
absl::Status LinkOrCopy(const std::string& from, const std::string& to) {
  const std::string tmp = to + ".tmp-" + RandomHex(4);
  if (::link(from.c_str(), tmp.c_str()) != 0) {
    SY_ASSIGN_OR_RETURN(std::string contents, ReadFile(from));
    SY_RETURN_IF_ERROR(WriteFileAtomic(tmp, contents));
  }
  return RenameDurably(tmp, to);
}

}  // namespace

struct JobRunner::Prepared {
  std::vector<Issue> errors;
  std::vector<Issue> warnings;
  JobSpec resolved;
  ResolvedBase base;
  TrainerSetup setup;
};

JobRunner::JobRunner(JobManager* manager, std::string job_id,
                     std::shared_ptr<JobManager::Active> active)
    : m_(manager), job_id_(std::move(job_id)), active_(std::move(active)) {}

std::string JobRunner::DeviceFor(const std::string& d) {
  if (d.empty() || d == "auto") return at::hasCUDA() ? "cuda:0" : "cpu";
  if (d == "cuda") return "cuda:0";
  return d;
}

absl::StatusOr<ResolvedBase> JobRunner::ResolveBase(JobManager* m, const std::string& name) {
  const size_t marker = name.find("/checkpoints/");
  if (absl::StartsWith(name, "jobs/") && marker != std::string::npos) {
    const std::string job_id = name.substr(5, marker - 5);
    const std::string checkpoint = name.substr(marker + 13);
    absl::StatusOr<Job> job = m->store_->Get(job_id);
    if (!job.ok()) {
      return absl::NotFoundError(absl::StrCat("base_model: jobs/", job_id, " not found"));
    }
    SY_ASSIGN_OR_RETURN(ResolvedBase parent, ResolveBase(m, job->spec.base_model));
    const std::string dir = m->JobDir(job_id) + "/checkpoints/" + checkpoint;
    if (checkpoint.empty() || checkpoint[0] == '.' || checkpoint.find('/') != std::string::npos ||
        !fs::exists(dir + "/trainer_state.json")) {
      return absl::NotFoundError(
          absl::StrCat("base_model: ", name, " is not a checkpoint the job keeps"));
    }
    if (fs::exists(dir + "/adapter_config.json")) {
      parent.adapter_dir = dir;
      parent.parent_is_full = false;
    } else {
      parent.base_dir = dir;
      parent.adapter_dir.clear();
      parent.parent_is_full = true;
    }
    return parent;
  }
  absl::StatusOr<ModelRecord> record = m->registry_->Get(name);
  if (!record.ok()) {
    return absl::Status(record.status().code(),
                        absl::StrCat("base_model: ", record.status().message(),
                                     absl::IsNotFound(record.status())
                                         ? "; register it with `switchyard models register`"
                                         : ""));
  }
  ResolvedBase b;
  switch (record->kind) {
    case ModelKind::kBase:
      b.root_id = record->model_id;
      b.base_dir = record->path;
      break;
    case ModelKind::kFullFineTune:
      b.root_id = record->base_model;
      b.base_dir = record->path;
      b.parent_is_full = true;
      break;
    case ModelKind::kAdapter: {
      SY_ASSIGN_OR_RETURN(ModelRecord base, m->registry_->Get(record->base_model));
      b.root_id = base.kind == ModelKind::kBase ? base.model_id : base.base_model;
      b.base_dir = base.path;
      b.adapter_dir = record->path;
      break;
    }
  }
  return b;
}

absl::StatusOr<JobRunner::Prepared> JobRunner::Prepare(JobManager* m, const Job& job,
                                                       bool load_model) {
  Prepared p;
  const JobSpec& spec = job.spec;
  absl::StatusOr<ResolvedBase> base = ResolveBase(m, spec.base_model);
  if (!base.ok()) {
    p.errors.push_back(
        MakeIssue("model_not_found", "base_model", std::string(base.status().message())));
    return p;
  }
  p.base = *base;
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(p.base.base_dir);
  if (!config.ok()) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model", std::string(config.status().message())));
    return p;
  }
  if (config->arch == model::Architecture::kBert) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model",
                  "BertModel is an encoder; fine-tuning needs a causal language model"));
    return p;
  }
  absl::StatusOr<text::ModelText> text = text::LoadModelText(p.base.base_dir);
  if (!text.ok()) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model", std::string(text.status().message())));
    return p;
  }
  const std::string device = DeviceFor(spec.device);
  const bool cuda = absl::StartsWith(device, "cuda");
  if (cuda && !at::hasCUDA()) {
    p.errors.push_back(
        MakeIssue("device_unavailable", "device",
                  "CUDA is not available (this LibTorch build or machine has no GPU); "
                  "use device cpu"));
    return p;
  }

  // The data, pinned into the job directory the first time, so a resumed job
  // reads exactly what it started with even if the dataset is deleted. The
  // validation file goes first: a pinned train.jsonl means the pin is whole.
  std::string train_path, validation_path;
  const std::string pinned = m->JobDir(job.job_id) + "/data";
  const bool pin = load_model;  // validate_only reads in place and writes nothing
  if (pin && fs::exists(pinned + "/train.jsonl")) {
    train_path = pinned + "/train.jsonl";
    if (fs::exists(pinned + "/validation.jsonl")) validation_path = pinned + "/validation.jsonl";
  } else {
    auto version_of = [&](const std::string& ref, const char* field,
                          std::string* name) -> absl::StatusOr<dataset::VersionRecord> {
      int64_t version;
      SY_RETURN_IF_ERROR(ParseDatasetRef(ref, field, name, &version));
      absl::StatusOr<dataset::VersionRecord> v = m->datasets_->GetVersion(*name, version);
      if (!v.ok()) {
        return absl::Status(v.status().code(), absl::StrCat(field, ": ", v.status().message()));
      }
      return v;
    };
    std::string name;
    absl::StatusOr<dataset::VersionRecord> v =
        version_of(spec.training_dataset, "training_dataset", &name);
    if (!v.ok()) {
      p.errors.push_back(
          MakeIssue("dataset_not_found", "training_dataset", std::string(v.status().message())));
      return p;
    }
    train_path = dataset::VersionFilePath(m->options_.data_dir, name, v->version, "train");
    if (!spec.validation_dataset.empty()) {
      std::string vname;
      absl::StatusOr<dataset::VersionRecord> vv =
          version_of(spec.validation_dataset, "validation_dataset", &vname);
      if (!vv.ok()) {
        p.errors.push_back(MakeIssue("dataset_not_found", "validation_dataset",
                                     std::string(vv.status().message())));
        return p;
      }
      validation_path = dataset::VersionFilePath(m->options_.data_dir, vname, vv->version, "train");
    } else if (spec.validation_fraction == 0) {
      for (const dataset::FileRecord& f : v->files) {
        if (f.split == "validation") {
          validation_path =
              dataset::VersionFilePath(m->options_.data_dir, name, v->version, "validation");
        }
      }
    }
    if (pin) {
      SY_RETURN_IF_ERROR(MakeDirs(pinned));
      if (!validation_path.empty()) {
        SY_RETURN_IF_ERROR(LinkOrCopy(validation_path, pinned + "/validation.jsonl"));
        validation_path = pinned + "/validation.jsonl";
      }
      SY_RETURN_IF_ERROR(LinkOrCopy(train_path, pinned + "/train.jsonl"));
      train_path = pinned + "/train.jsonl";
    }
  }

  const Hyperparameters& hp = spec.hyperparameters;
  if (hp.max_seq_length && *hp.max_seq_length > config->max_position_embeddings) {
    p.errors.push_back(
        MakeIssue("invalid_settings", "hyperparameters.max_seq_length",
                  absl::StrCat("is ", *hp.max_seq_length, ", more than the model's context of ",
                               config->max_position_embeddings, " tokens")));
    return p;
  }
  SftTokenizeOptions to;
  to.loss_on = hp.loss_on == LossOn::kAll ? LossOn::kAll : LossOn::kAssistant;
  to.max_seq_length = hp.max_seq_length.value_or(config->max_position_embeddings);
  absl::StatusOr<SftData> train = TokenizeSftFile(train_path, *text, to);
  if (!train.ok()) {
    p.errors.push_back(MakeIssue(
        absl::IsFailedPrecondition(train.status()) ? "no_chat_template" : "unreadable_data",
        "training_dataset", std::string(train.status().message())));
    return p;
  }
  p.errors = train->errors;
  p.warnings = train->warnings;
  SftData validation;
  if (!validation_path.empty()) {
    to.file = "validation";
    absl::StatusOr<SftData> v = TokenizeSftFile(validation_path, *text, to);
    if (!v.ok()) {
      p.errors.push_back(
          MakeIssue("unreadable_data", "validation_dataset", std::string(v.status().message())));
      return p;
    }
    validation = std::move(*v);
    p.errors.insert(p.errors.end(), validation.errors.begin(), validation.errors.end());
    p.warnings.insert(p.warnings.end(), validation.warnings.begin(), validation.warnings.end());
  }
  if (!p.errors.empty()) return p;
  if (train->examples.empty()) {
    p.errors.push_back(MakeIssue("no_examples", "training_dataset",
                                 "no training example has a token the loss covers"));
    return p;
  }

  uint64_t seed;
  if (job.resolved_spec && job.resolved_spec->seed) {
    seed = *job.resolved_spec->seed;  // a resumed job keeps the seed it drew
  } else if (!absl::SimpleHexAtoi(RandomHex(6), &seed)) {
    seed = 0;
  }
  std::vector<SftExample> train_examples = std::move(train->examples);
  std::vector<SftExample> validation_examples = std::move(validation.examples);
  if (spec.validation_fraction > 0) {
    // A seeded held-out split: the first k of a shuffled order.
    const uint64_t split_seed = spec.seed.value_or(seed);
    std::vector<int64_t> order =
        ShuffledOrder(static_cast<int64_t>(train_examples.size()), split_seed, -1);
    const size_t k = static_cast<size_t>(spec.validation_fraction * train_examples.size());
    std::vector<SftExample> kept;
    for (size_t i = 0; i < order.size(); ++i) {
      (i < k ? validation_examples : kept).push_back(std::move(train_examples[order[i]]));
    }
    train_examples = std::move(kept);
  }
  SpecFacts facts;
  facts.training_examples = static_cast<int64_t>(train_examples.size());
  for (const SftExample& e : train_examples) {
    facts.longest_example = std::max<int64_t>(facts.longest_example, e.ids.size());
  }
  facts.context_length = config->max_position_embeddings;
  facts.arch = config->arch;
  facts.cuda = cuda;
  facts.parent_is_adapter = !p.base.adapter_dir.empty();
  facts.parent_is_full = p.base.parent_is_full;
  p.resolved = ResolveJobSpec(spec, facts, seed);
  const bool lora = p.resolved.adapter.kind == AdapterKind::kLora;
  std::optional<model::LoraConfig> parent_lora;
  if (!p.base.adapter_dir.empty()) {
    if (!lora) {
      p.errors.push_back(
          MakeIssue("invalid_settings", "adapter",
                    "the base is a LoRA fine-tune; it continues as LoRA (drop full)"));
      return p;
    }
    absl::StatusOr<std::string> text_config = ReadFile(p.base.adapter_dir + "/adapter_config.json");
    if (text_config.ok()) {
      absl::StatusOr<model::LoraConfig> c = model::ParseAdapterConfig(*text_config);
      if (c.ok()) parent_lora = *c;
    }
    if (parent_lora && spec.adapter.lora.r && *spec.adapter.lora.r != parent_lora->r) {
      p.errors.push_back(MakeIssue(
          "invalid_settings", "adapter.lora.r",
          absl::StrCat("the base adapter has rank ", parent_lora->r, "; leave r unset or use it")));
      return p;
    }
    if (parent_lora) {
      LoraSpec& l = p.resolved.adapter.lora;
      l.r = static_cast<int>(parent_lora->r);
      l.alpha = parent_lora->alpha;
      l.target_modules = parent_lora->target_modules;
      l.layers.assign(parent_lora->layers_to_transform.begin(),
                      parent_lora->layers_to_transform.end());
      l.rslora = parent_lora->use_rslora;
    }
  }
  if (validation_examples.empty()) {
    for (auto [set, field] :
         {std::pair<bool, const char*>{p.resolved.checkpoints.keep_best.value_or(false),
                                       "checkpoints.keep_best"},
          {p.resolved.checkpoints.early_stopping_patience.value_or(0) > 0,
           "checkpoints.early_stopping_patience"}}) {
      if (!set) continue;
      p.errors.push_back(
          MakeIssue("invalid_settings", field,
                    "needs validation data: set validation_dataset or "
                    "validation_fraction, or upload the dataset with a validation file"));
      return p;
    }
  }
  p.setup.spec = p.resolved;
  p.setup.train = std::move(train_examples);
  p.setup.validation = std::move(validation_examples);
  p.setup.checkpoints_dir = m->JobDir(job.job_id) + "/checkpoints";
  p.setup.base_dir = p.base.base_dir;
  p.setup.base_model_id = p.base.root_id;
  if (!load_model) return p;

  const at::ScalarType dtype =
      p.resolved.hyperparameters.precision == Precision::kBf16 ? at::kBFloat16 : at::kFloat;
  SY_ASSIGN_OR_RETURN(at::Device dev, model::ParseDevice(p.resolved.device));
  absl::StatusOr<std::unique_ptr<model::CausalLm>> lm =
      model::CausalLm::Load(p.base.base_dir, {dtype, dev});
  if (!lm.ok()) {
    p.errors.push_back(
        MakeIssue("model_load_failed", "base_model", std::string(lm.status().message())));
    return p;
  }
  p.setup.model = std::move(*lm);
  if (!p.base.adapter_dir.empty()) {
    absl::StatusOr<model::LoraAdapter> adapter =
        model::LoadPeftAdapter(p.base.adapter_dir, dtype, dev);
    if (!adapter.ok()) {
      p.errors.push_back(
          MakeIssue("model_load_failed", "base_model", std::string(adapter.status().message())));
      return p;
    }
    // The optimizer updates the adapter in place: own its memory.
    for (auto& [path, w] : adapter->modules) {
      w.a = w.a.clone();
      w.b = w.b.clone();
    }
    p.setup.start_adapter = std::move(*adapter);
  }
  return p;
}

absl::Status JobRunner::ValidateOnly(JobManager* m, Job* job) {
  SY_ASSIGN_OR_RETURN(Prepared p, Prepare(m, *job, /*load_model=*/false));
  job->errors = p.errors;
  job->warnings = p.warnings;
  if (p.errors.empty()) {
    job->resolved_spec = p.resolved;
    job->training_examples = static_cast<int64_t>(p.setup.train.size());
    job->validation_examples = static_cast<int64_t>(p.setup.validation.size());
    std::vector<int64_t> lengths;
    for (const SftExample& e : p.setup.train) lengths.push_back(e.ids.size());
    BatchPlanOptions o;
    o.epochs = p.resolved.hyperparameters.epochs.value_or(1);
    o.batch_size = p.resolved.hyperparameters.batch_size.value_or(1);
    o.packing = p.resolved.hyperparameters.packing.value_or(false);
    o.max_seq_length = p.resolved.hyperparameters.max_seq_length.value_or(0);
    o.seed = p.resolved.seed.value_or(0);
    job->total_steps = BatchPlan(lengths, o).total_steps();
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

  SY_ASSIGN_OR_RETURN(Prepared p, Prepare(m_, job, /*load_model=*/true));
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
  const int64_t train_count = static_cast<int64_t>(p.setup.train.size());
  const int64_t validation_count = static_cast<int64_t>(p.setup.validation.size());
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
    SY_RETURN_IF_ERROR(LinkOrCopy(e.path().string(), export_dir + "/" + name));
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
