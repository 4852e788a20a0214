#include "services/training/job_types.h"

#include <array>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_json.h"

namespace switchyard::training {
namespace {

using json = nlohmann::json;

template <typename E, size_t N>
const char* NameOf(const std::array<std::pair<E, const char*>, N>& table, E value) {
  for (const auto& [e, name] : table) {
    if (e == value) return name;
  }
  return "unknown";
}

template <typename E, size_t N>
bool ValueOf(const std::array<std::pair<E, const char*>, N>& table, const std::string& name,
             E* value) {
  for (const auto& [e, n] : table) {
    if (name == n) {
      *value = e;
      return true;
    }
  }
  return false;
}

constexpr std::array<std::pair<JobState, const char*>, 7> kStates = {{
    {JobState::kQueued, "queued"},
    {JobState::kValidating, "validating"},
    {JobState::kRunning, "running"},
    {JobState::kPaused, "paused"},
    {JobState::kSucceeded, "succeeded"},
    {JobState::kFailed, "failed"},
    {JobState::kCancelled, "cancelled"},
}};
constexpr std::array<std::pair<Method, const char*>, 3> kMethods = {{
    {Method::kSupervised, "supervised"},
    {Method::kDpo, "dpo"},
    {Method::kReinforcement, "reinforcement"},
}};
constexpr std::array<std::pair<AdapterKind, const char*>, 3> kAdapterKinds = {{
    {AdapterKind::kAuto, "auto"},
    {AdapterKind::kLora, "lora"},
    {AdapterKind::kFull, "full"},
}};
constexpr std::array<std::pair<LrScheduler, const char*>, 4> kSchedulers = {{
    {LrScheduler::kAuto, "auto"},
    {LrScheduler::kLinear, "linear"},
    {LrScheduler::kCosine, "cosine"},
    {LrScheduler::kConstant, "constant"},
}};
constexpr std::array<std::pair<LossOn, const char*>, 3> kLossOn = {{
    {LossOn::kAuto, "auto"},
    {LossOn::kAssistant, "assistant"},
    {LossOn::kAll, "all"},
}};
constexpr std::array<std::pair<Precision, const char*>, 3> kPrecisions = {{
    {Precision::kAuto, "auto"},
    {Precision::kFp32, "fp32"},
    {Precision::kBf16, "bf16"},
}};
constexpr std::array<std::pair<QuantizeBase, const char*>, 3> kQuantizeBase = {{
    {QuantizeBase::kNone, "none"},
    {QuantizeBase::kNf4, "nf4"},
    {QuantizeBase::kInt8, "int8"},
}};
constexpr std::array<std::pair<DpoLoss, const char*>, 5> kDpoLosses = {{
    {DpoLoss::kAuto, "auto"},
    {DpoLoss::kSigmoid, "sigmoid"},
    {DpoLoss::kIpo, "ipo"},
    {DpoLoss::kHinge, "hinge"},
    {DpoLoss::kRobust, "robust"},
}};
constexpr std::array<std::pair<CheckpointKind, const char*>, 4> kCheckpointKinds = {{
    {CheckpointKind::kStep, "step"},
    {CheckpointKind::kEpoch, "epoch"},
    {CheckpointKind::kPause, "pause"},
    {CheckpointKind::kFinal, "final"},
}};
constexpr std::array<std::pair<EventLevel, const char*>, 3> kLevels = {{
    {EventLevel::kInfo, "info"},
    {EventLevel::kWarning, "warning"},
    {EventLevel::kError, "error"},
}};

// A number field; JSON has no NaN or infinity (nlohmann writes them as null),
// so null reads back as NaN rather than throwing.
double Num(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_number()) return it->get<double>();
  return std::numeric_limits<double>::quiet_NaN();
}

template <typename T>
void PutOptional(json& j, const char* key, const std::optional<T>& v) {
  if (v) j[key] = *v;
}

// Reads j[key] into `out` when present; errors name `where.key`.
class Reader {
 public:
  Reader(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

  template <typename T>
  absl::Status Optional(const char* key, std::optional<T>* out) {
    if (!j_.contains(key) || j_[key].is_null()) return absl::OkStatus();
    try {
      *out = j_[key].get<T>();
    } catch (const json::exception&) {
      return Error(key, "has the wrong type");
    }
    return absl::OkStatus();
  }
  template <typename T>
  absl::Status Value(const char* key, T* out) {
    std::optional<T> v;
    absl::Status s = Optional(key, &v);
    if (s.ok() && v) *out = *v;
    return s;
  }
  template <typename E, size_t N>
  absl::Status Enum(const char* key, const std::array<std::pair<E, const char*>, N>& table,
                    E* out) {
    std::optional<std::string> name;
    absl::Status s = Optional(key, &name);
    if (!s.ok() || !name) return s;
    if (!ValueOf(table, *name, out))
      return Error(key, absl::StrCat("has unknown value \"", *name, "\""));
    return absl::OkStatus();
  }
  absl::Status Error(const char* key, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(where_, key, " ", what));
  }
  const json& Object(const char* key) const {
    static const json kEmpty = json::object();
    return j_.contains(key) && j_[key].is_object() ? j_[key] : kEmpty;
  }

 private:
  const json& j_;
  std::string where_;
};

}  // namespace

Issue MakeIssue(std::string kind, std::string field, std::string message) {
  Issue i;
  i.kind = std::move(kind);
  i.field = std::move(field);
  i.message = std::move(message);
  return i;
}

const char* JobStateName(JobState s) { return NameOf(kStates, s); }
bool ParseJobState(const std::string& name, JobState* state) {
  return ValueOf(kStates, name, state);
}
bool IsTerminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kCancelled;
}
const char* MethodName(Method m) { return NameOf(kMethods, m); }
const char* AdapterKindName(AdapterKind k) { return NameOf(kAdapterKinds, k); }
const char* LrSchedulerName(LrScheduler s) { return NameOf(kSchedulers, s); }
const char* LossOnName(LossOn l) { return NameOf(kLossOn, l); }
const char* PrecisionName(Precision p) { return NameOf(kPrecisions, p); }
const char* DpoLossName(DpoLoss l) { return NameOf(kDpoLosses, l); }
const char* QuantizeBaseName(QuantizeBase q) { return NameOf(kQuantizeBase, q); }
const char* CheckpointKindName(CheckpointKind k) { return NameOf(kCheckpointKinds, k); }
const char* EventLevelName(EventLevel l) { return NameOf(kLevels, l); }

json JobSpecToJson(const JobSpec& s) {
  json j;
  j["base_model"] = s.base_model;
  j["training_dataset"] = s.training_dataset;
  j["validation_dataset"] = s.validation_dataset;
  j["validation_fraction"] = s.validation_fraction;
  j["method"] = MethodName(s.method);
  json adapter;
  adapter["kind"] = AdapterKindName(s.adapter.kind);
  if (s.adapter.kind != AdapterKind::kFull) {
    const LoraSpec& l = s.adapter.lora;
    json lora = json::object();
    PutOptional(lora, "r", l.r);
    PutOptional(lora, "alpha", l.alpha);
    PutOptional(lora, "dropout", l.dropout);
    lora["target_modules"] = l.target_modules;
    lora["layers"] = l.layers;
    lora["rslora"] = l.rslora;
    lora["quantize_base"] = QuantizeBaseName(l.quantize_base);
    lora["double_quantization"] = l.double_quantization;
    adapter["lora"] = lora;
  } else {
    adapter["full"] = {{"frozen_layers", s.adapter.full.frozen_layers},
                       {"freeze_embeddings", s.adapter.full.freeze_embeddings}};
  }
  j["adapter"] = adapter;
  const Hyperparameters& h = s.hyperparameters;
  json hp = json::object();
  PutOptional(hp, "epochs", h.epochs);
  PutOptional(hp, "batch_size", h.batch_size);
  PutOptional(hp, "gradient_accumulation_steps", h.gradient_accumulation_steps);
  PutOptional(hp, "learning_rate", h.learning_rate);
  hp["lr_scheduler"] = LrSchedulerName(h.lr_scheduler);
  PutOptional(hp, "warmup_ratio", h.warmup_ratio);
  PutOptional(hp, "warmup_steps", h.warmup_steps);
  PutOptional(hp, "weight_decay", h.weight_decay);
  PutOptional(hp, "max_grad_norm", h.max_grad_norm);
  PutOptional(hp, "max_seq_length", h.max_seq_length);
  PutOptional(hp, "packing", h.packing);
  hp["loss_on"] = LossOnName(h.loss_on);
  PutOptional(hp, "eval_interval_steps", h.eval_interval_steps);
  PutOptional(hp, "log_interval_steps", h.log_interval_steps);
  hp["precision"] = PrecisionName(h.precision);
  PutOptional(hp, "gradient_checkpointing", h.gradient_checkpointing);
  j["hyperparameters"] = hp;
  const CheckpointSpec& c = s.checkpoints;
  json ck = json::object();
  PutOptional(ck, "interval_steps", c.interval_steps);
  PutOptional(ck, "keep_last", c.keep_last);
  PutOptional(ck, "keep_best", c.keep_best);
  PutOptional(ck, "early_stopping_patience", c.early_stopping_patience);
  PutOptional(ck, "early_stopping_min_delta", c.early_stopping_min_delta);
  j["checkpoints"] = ck;
  if (s.method == Method::kDpo) {
    json dpo = json::object();
    dpo["loss_type"] = DpoLossName(s.dpo.loss_type);
    PutOptional(dpo, "beta", s.dpo.beta);
    PutOptional(dpo, "label_smoothing", s.dpo.label_smoothing);
    PutOptional(dpo, "precompute_reference_logprobs", s.dpo.precompute_reference_logprobs);
    j["dpo"] = dpo;
  }
  if (s.reinforcement) {
    const ReinforcementSpec& rs = *s.reinforcement;
    json rl = json::object();
    rl["grader"] = GraderToJson(rs.grader);
    PutOptional(rl, "num_generations", rs.num_generations);
    PutOptional(rl, "temperature", rs.temperature);
    PutOptional(rl, "top_p", rs.top_p);
    PutOptional(rl, "max_completion_tokens", rs.max_completion_tokens);
    PutOptional(rl, "kl_beta", rs.kl_beta);
    PutOptional(rl, "clip_epsilon", rs.clip_epsilon);
    PutOptional(rl, "iterations_per_batch", rs.iterations_per_batch);
    j["reinforcement"] = rl;
  }
  if (s.seed) j["seed"] = *s.seed;
  j["suffix"] = s.suffix;
  j["metadata"] = s.metadata;
  j["device"] = s.device;
  return j;
}

absl::StatusOr<JobSpec> JobSpecFromJson(const json& j) {
  JobSpec s;
  if (!j.is_object()) return absl::InvalidArgumentError("job spec must be a JSON object");
  Reader r(j, "");
  absl::Status st;
  auto check = [&](absl::Status x) {
    if (st.ok()) st = std::move(x);
  };
  check(r.Value("base_model", &s.base_model));
  check(r.Value("training_dataset", &s.training_dataset));
  check(r.Value("validation_dataset", &s.validation_dataset));
  check(r.Value("validation_fraction", &s.validation_fraction));
  check(r.Enum("method", kMethods, &s.method));
  Reader a(r.Object("adapter"), "adapter.");
  check(a.Enum("kind", kAdapterKinds, &s.adapter.kind));
  Reader l(a.Object("lora"), "adapter.lora.");
  check(l.Optional("r", &s.adapter.lora.r));
  check(l.Optional("alpha", &s.adapter.lora.alpha));
  check(l.Optional("dropout", &s.adapter.lora.dropout));
  check(l.Value("target_modules", &s.adapter.lora.target_modules));
  check(l.Value("layers", &s.adapter.lora.layers));
  check(l.Value("rslora", &s.adapter.lora.rslora));
  check(l.Enum("quantize_base", kQuantizeBase, &s.adapter.lora.quantize_base));
  check(l.Value("double_quantization", &s.adapter.lora.double_quantization));
  Reader f(a.Object("full"), "adapter.full.");
  check(f.Value("frozen_layers", &s.adapter.full.frozen_layers));
  check(f.Value("freeze_embeddings", &s.adapter.full.freeze_embeddings));
  Hyperparameters& h = s.hyperparameters;
  Reader hp(r.Object("hyperparameters"), "hyperparameters.");
  check(hp.Optional("epochs", &h.epochs));
  check(hp.Optional("batch_size", &h.batch_size));
  check(hp.Optional("gradient_accumulation_steps", &h.gradient_accumulation_steps));
  check(hp.Optional("learning_rate", &h.learning_rate));
  check(hp.Enum("lr_scheduler", kSchedulers, &h.lr_scheduler));
  check(hp.Optional("warmup_ratio", &h.warmup_ratio));
  check(hp.Optional("warmup_steps", &h.warmup_steps));
  check(hp.Optional("weight_decay", &h.weight_decay));
  check(hp.Optional("max_grad_norm", &h.max_grad_norm));
  check(hp.Optional("max_seq_length", &h.max_seq_length));
  check(hp.Optional("packing", &h.packing));
  check(hp.Enum("loss_on", kLossOn, &h.loss_on));
  check(hp.Optional("eval_interval_steps", &h.eval_interval_steps));
  check(hp.Optional("log_interval_steps", &h.log_interval_steps));
  check(hp.Enum("precision", kPrecisions, &h.precision));
  check(hp.Optional("gradient_checkpointing", &h.gradient_checkpointing));
  CheckpointSpec& c = s.checkpoints;
  Reader ck(r.Object("checkpoints"), "checkpoints.");
  check(ck.Optional("interval_steps", &c.interval_steps));
  check(ck.Optional("keep_last", &c.keep_last));
  check(ck.Optional("keep_best", &c.keep_best));
  check(ck.Optional("early_stopping_patience", &c.early_stopping_patience));
  check(ck.Optional("early_stopping_min_delta", &c.early_stopping_min_delta));
  Reader dpo(r.Object("dpo"), "dpo.");
  check(dpo.Enum("loss_type", kDpoLosses, &s.dpo.loss_type));
  check(dpo.Optional("beta", &s.dpo.beta));
  check(dpo.Optional("label_smoothing", &s.dpo.label_smoothing));
  check(dpo.Optional("precompute_reference_logprobs", &s.dpo.precompute_reference_logprobs));
  if (j.contains("reinforcement") && !j["reinforcement"].is_null()) {
    const json& rl_json = j["reinforcement"];
    ReinforcementSpec rs;
    if (!rl_json.is_object() || !rl_json.contains("grader")) {
      check(absl::InvalidArgumentError("reinforcement.grader is required"));
    } else {
      absl::StatusOr<GraderSpec> grader = GraderFromJson(rl_json["grader"], "reinforcement.grader");
      if (grader.ok()) {
        rs.grader = std::move(*grader);
      } else {
        check(grader.status());
      }
      Reader rl(rl_json, "reinforcement.");
      check(rl.Optional("num_generations", &rs.num_generations));
      check(rl.Optional("temperature", &rs.temperature));
      check(rl.Optional("top_p", &rs.top_p));
      check(rl.Optional("max_completion_tokens", &rs.max_completion_tokens));
      check(rl.Optional("kl_beta", &rs.kl_beta));
      check(rl.Optional("clip_epsilon", &rs.clip_epsilon));
      check(rl.Optional("iterations_per_batch", &rs.iterations_per_batch));
    }
    s.reinforcement = std::move(rs);
  }
  check(r.Optional("seed", &s.seed));
  check(r.Value("suffix", &s.suffix));
  check(r.Value("metadata", &s.metadata));
  check(r.Value("device", &s.device));
  if (!st.ok()) return st;
  return s;
}

json DpoMetricsToJson(const DpoMetrics& m) {
  return {{"rewards_chosen", m.rewards_chosen},   {"rewards_rejected", m.rewards_rejected},
          {"reward_accuracy", m.reward_accuracy}, {"reward_margin", m.reward_margin},
          {"logps_chosen", m.logps_chosen},       {"logps_rejected", m.logps_rejected}};
}

DpoMetrics DpoMetricsFromJson(const json& j) {
  DpoMetrics m;
  m.rewards_chosen = Num(j, "rewards_chosen");
  m.rewards_rejected = Num(j, "rewards_rejected");
  m.reward_accuracy = Num(j, "reward_accuracy");
  m.reward_margin = Num(j, "reward_margin");
  m.logps_chosen = Num(j, "logps_chosen");
  m.logps_rejected = Num(j, "logps_rejected");
  return m;
}

json ReinforcementMetricsToJson(const ReinforcementMetrics& m) {
  return {{"reward_mean", m.reward_mean},
          {"reward_std", m.reward_std},
          {"kl", m.kl},
          {"completion_length_mean", m.completion_length_mean},
          {"clip_ratio", m.clip_ratio},
          {"grader_rewards", m.grader_rewards}};
}

ReinforcementMetrics ReinforcementMetricsFromJson(const json& j) {
  ReinforcementMetrics m;
  m.reward_mean = Num(j, "reward_mean");
  m.reward_std = Num(j, "reward_std");
  m.kl = Num(j, "kl");
  m.completion_length_mean = Num(j, "completion_length_mean");
  m.clip_ratio = Num(j, "clip_ratio");
  if (auto it = j.find("grader_rewards"); it != j.end() && it->is_object()) {
    for (const auto& [name, value] : it->items()) {
      // As Num: a non-finite reward was written as null.
      m.grader_rewards[name] =
          value.is_number() ? value.get<double>() : std::numeric_limits<double>::quiet_NaN();
    }
  }
  return m;
}

json TrainMetricsToJson(const TrainMetrics& m) {
  json j = {{"step", m.step},
            {"total_steps", m.total_steps},
            {"epoch", m.epoch},
            {"loss", m.loss},
            {"mean_token_accuracy", m.mean_token_accuracy},
            {"learning_rate", m.learning_rate},
            {"tokens_per_second", m.tokens_per_second},
            {"grad_norm", m.grad_norm},
            {"tokens", m.tokens},
            {"peak_memory_bytes", m.peak_memory_bytes}};
  if (m.dpo) j["dpo"] = DpoMetricsToJson(*m.dpo);
  if (m.reinforcement) j["reinforcement"] = ReinforcementMetricsToJson(*m.reinforcement);
  return j;
}

TrainMetrics TrainMetricsFromJson(const json& j) {
  TrainMetrics m;
  m.step = j.value("step", int64_t{0});
  m.total_steps = j.value("total_steps", int64_t{0});
  m.epoch = Num(j, "epoch");
  m.loss = Num(j, "loss");
  m.mean_token_accuracy = Num(j, "mean_token_accuracy");
  m.learning_rate = Num(j, "learning_rate");
  m.tokens_per_second = Num(j, "tokens_per_second");
  m.grad_norm = Num(j, "grad_norm");
  m.tokens = j.value("tokens", int64_t{0});
  m.peak_memory_bytes = j.value("peak_memory_bytes", int64_t{0});
  if (j.contains("dpo")) m.dpo = DpoMetricsFromJson(j["dpo"]);
  if (j.contains("reinforcement"))
    m.reinforcement = ReinforcementMetricsFromJson(j["reinforcement"]);
  return m;
}

json EvalMetricsToJson(const EvalMetrics& m) {
  json j = {{"step", m.step},
            {"epoch", m.epoch},
            {"validation_loss", m.validation_loss},
            {"validation_mean_token_accuracy", m.validation_mean_token_accuracy},
            {"is_best", m.is_best},
            {"duration_seconds", m.duration_seconds}};
  if (m.dpo) j["dpo"] = DpoMetricsToJson(*m.dpo);
  if (m.reinforcement) j["reinforcement"] = ReinforcementMetricsToJson(*m.reinforcement);
  return j;
}

EvalMetrics EvalMetricsFromJson(const json& j) {
  EvalMetrics m;
  m.step = j.value("step", int64_t{0});
  m.epoch = Num(j, "epoch");
  m.validation_loss = Num(j, "validation_loss");
  m.validation_mean_token_accuracy = Num(j, "validation_mean_token_accuracy");
  m.is_best = j.value("is_best", false);
  m.duration_seconds = Num(j, "duration_seconds");
  if (j.contains("dpo")) m.dpo = DpoMetricsFromJson(j["dpo"]);
  if (j.contains("reinforcement"))
    m.reinforcement = ReinforcementMetricsFromJson(j["reinforcement"]);
  return m;
}

json CheckpointToJson(const CheckpointInfo& c) {
  json j = {{"checkpoint_id", c.checkpoint_id},
            {"kind", CheckpointKindName(c.kind)},
            {"step", c.step},
            {"epoch", c.epoch},
            {"train_loss", c.train_loss},
            {"is_best", c.is_best},
            {"path", c.path},
            {"size_bytes", c.size_bytes},
            {"create_time_ms", c.create_time_ms}};
  if (c.validation_loss) j["validation_loss"] = *c.validation_loss;
  return j;
}

CheckpointInfo CheckpointFromJson(const json& j) {
  CheckpointInfo c;
  c.checkpoint_id = j.value("checkpoint_id", "");
  ValueOf(kCheckpointKinds, j.value("kind", "step"), &c.kind);
  c.step = j.value("step", int64_t{0});
  c.epoch = Num(j, "epoch");
  c.train_loss = Num(j, "train_loss");
  if (j.contains("validation_loss")) c.validation_loss = Num(j, "validation_loss");
  c.is_best = j.value("is_best", false);
  c.path = j.value("path", "");
  c.size_bytes = j.value("size_bytes", int64_t{0});
  c.create_time_ms = j.value("create_time_ms", int64_t{0});
  return c;
}

json IssuesToJson(const std::vector<Issue>& issues) {
  json a = json::array();
  for (const Issue& i : issues) a.push_back(dataset::IssueToJson(i));
  return a;
}

std::vector<Issue> IssuesFromJson(const json& j) {
  std::vector<Issue> out;
  if (!j.is_array()) return out;
  for (const json& i : j) out.push_back(dataset::IssueFromJson(i));
  return out;
}

json JobToJson(const Job& job) {
  json j = {{"job_id", job.job_id},
            {"state", JobStateName(job.state)},
            {"spec", JobSpecToJson(job.spec)},
            {"errors", IssuesToJson(job.errors)},
            {"warnings", IssuesToJson(job.warnings)},
            {"fine_tuned_model", job.fine_tuned_model},
            {"device", job.device},
            {"step", job.step},
            {"total_steps", job.total_steps},
            {"epoch", job.epoch},
            {"trained_tokens", job.trained_tokens},
            {"training_examples", job.training_examples},
            {"validation_examples", job.validation_examples},
            {"restarts", job.restarts},
            {"last_event_sequence", job.last_event_sequence},
            {"create_time_ms", job.create_time_ms},
            {"start_time_ms", job.start_time_ms},
            {"end_time_ms", job.end_time_ms},
            {"estimated_end_time_ms", job.estimated_end_time_ms},
            {"queue_order_ms", job.queue_order_ms}};
  if (job.resolved_spec) j["resolved_spec"] = JobSpecToJson(*job.resolved_spec);
  if (job.latest_train) j["latest_train"] = TrainMetricsToJson(*job.latest_train);
  if (job.latest_eval) j["latest_eval"] = EvalMetricsToJson(*job.latest_eval);
  if (job.best_eval) j["best_eval"] = EvalMetricsToJson(*job.best_eval);
  return j;
}

absl::StatusOr<Job> JobFromJson(const json& j) {
  if (!j.is_object()) return absl::InvalidArgumentError("job record is not a JSON object");
  Job job;
  try {
    job.job_id = j.at("job_id").get<std::string>();
    if (!ParseJobState(j.at("state").get<std::string>(), &job.state)) {
      return absl::InvalidArgumentError("job record has an unknown state");
    }
    absl::StatusOr<JobSpec> spec = JobSpecFromJson(j.at("spec"));
    if (!spec.ok()) return spec.status();
    job.spec = std::move(*spec);
    if (j.contains("resolved_spec")) {
      absl::StatusOr<JobSpec> resolved = JobSpecFromJson(j["resolved_spec"]);
      if (!resolved.ok()) return resolved.status();
      job.resolved_spec = std::move(*resolved);
    }
    job.errors = IssuesFromJson(j.value("errors", json::array()));
    job.warnings = IssuesFromJson(j.value("warnings", json::array()));
    job.fine_tuned_model = j.value("fine_tuned_model", "");
    job.device = j.value("device", "");
    job.step = j.value("step", int64_t{0});
    job.total_steps = j.value("total_steps", int64_t{0});
    job.epoch = Num(j, "epoch");
    job.trained_tokens = j.value("trained_tokens", int64_t{0});
    job.training_examples = j.value("training_examples", int64_t{0});
    job.validation_examples = j.value("validation_examples", int64_t{0});
    job.restarts = j.value("restarts", 0);
    job.last_event_sequence = j.value("last_event_sequence", int64_t{0});
    job.create_time_ms = j.value("create_time_ms", int64_t{0});
    job.start_time_ms = j.value("start_time_ms", int64_t{0});
    job.end_time_ms = j.value("end_time_ms", int64_t{0});
    job.estimated_end_time_ms = j.value("estimated_end_time_ms", int64_t{0});
    job.queue_order_ms = j.value("queue_order_ms", int64_t{0});
    if (j.contains("latest_train")) job.latest_train = TrainMetricsFromJson(j["latest_train"]);
    if (j.contains("latest_eval")) job.latest_eval = EvalMetricsFromJson(j["latest_eval"]);
    if (j.contains("best_eval")) job.best_eval = EvalMetricsFromJson(j["best_eval"]);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("job record is malformed: ", e.what()));
  }
  return job;
}

json JobEventToJson(const JobEvent& e) {
  json j = {{"job", e.job_id},
            {"sequence", e.sequence},
            {"time_ms", e.time_ms},
            {"level", EventLevelName(e.level)},
            {"message", e.message}};
  if (e.state_change) {
    json sc = {{"to_state", JobStateName(e.state_change->to)}, {"reason", e.state_change->reason}};
    if (e.state_change->from) sc["from_state"] = JobStateName(*e.state_change->from);
    if (!e.state_change->errors.empty()) sc["errors"] = IssuesToJson(e.state_change->errors);
    j["state_change"] = sc;
  }
  if (e.train) j["train"] = TrainMetricsToJson(*e.train);
  if (e.eval) j["eval"] = EvalMetricsToJson(*e.eval);
  if (e.checkpoint) j["checkpoint"] = CheckpointToJson(*e.checkpoint);
  return j;
}

absl::StatusOr<JobEvent> JobEventFromJson(const json& j) {
  if (!j.is_object() || !j.contains("sequence")) {
    return absl::InvalidArgumentError("event is not an object with a sequence");
  }
  JobEvent e;
  try {
    e.job_id = j.value("job", "");
    e.sequence = j.at("sequence").get<int64_t>();
    e.time_ms = j.value("time_ms", int64_t{0});
    ValueOf(kLevels, j.value("level", "info"), &e.level);
    e.message = j.value("message", "");
    if (j.contains("state_change")) {
      const json& sc = j["state_change"];
      StateChange c;
      if (!ParseJobState(sc.value("to_state", ""), &c.to)) {
        return absl::InvalidArgumentError("event state_change.to_state is unknown");
      }
      JobState from;
      if (sc.contains("from_state") && ParseJobState(sc["from_state"].get<std::string>(), &from)) {
        c.from = from;
      }
      c.reason = sc.value("reason", "");
      c.errors = IssuesFromJson(sc.value("errors", json::array()));
      e.state_change = std::move(c);
    }
    if (j.contains("train")) e.train = TrainMetricsFromJson(j["train"]);
    if (j.contains("eval")) e.eval = EvalMetricsFromJson(j["eval"]);
    if (j.contains("checkpoint")) e.checkpoint = CheckpointFromJson(j["checkpoint"]);
  } catch (const json::exception& ex) {
    return absl::InvalidArgumentError(
        absl::StrCat("event has a field of the wrong type: ", ex.what()));
  }
  return e;
}

}  // namespace switchyard::training
