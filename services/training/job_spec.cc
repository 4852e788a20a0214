#include "services/training/job_spec.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace switchyard::training {
namespace {

absl::Status FieldError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

template <typename T>
absl::Status CheckRange(const std::optional<T>& v, absl::string_view field, T lo, T hi,
                        absl::string_view range) {
  if (v && !(*v >= lo && *v <= hi)) {
    return FieldError(field, absl::StrCat("must be in ", range, ", got ", *v));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParseDatasetRef(const std::string& ref, const std::string& field, std::string* name,
                             int64_t* version) {
  std::string r = absl::StartsWith(ref, "datasets/") ? ref.substr(9) : ref;
  if (r.empty()) return FieldError(field, "is required (\"name@version\")");
  const size_t at = r.find('@');
  *name = r.substr(0, at);
  *version = 0;
  if (at == std::string::npos) return absl::OkStatus();
  const std::string v = r.substr(at + 1);
  if (v == "latest") return absl::OkStatus();
  if (!absl::SimpleAtoi(v, version) || *version < 1) {
    return FieldError(
        field, absl::StrCat("version must be a positive number or \"latest\", got \"", v, "\""));
  }
  return absl::OkStatus();
}

absl::Status ValidateReinforcementSpec(const ReinforcementSpec& r) {
  absl::Status st = ValidateGrader(r.grader, "reinforcement.grader");
  if (!st.ok()) return st;
  if ((st = CheckRange(r.num_generations, "reinforcement.num_generations", 2, 64, "[2, 64]"));
      !st.ok()) {
    return st;
  }
  // Open lower bounds: the smallest positive double passes, 0 does not.
  constexpr double kTiny = std::numeric_limits<double>::denorm_min();
  if ((st = CheckRange(r.temperature, "reinforcement.temperature", kTiny, 2.0, "(0, 2]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(r.top_p, "reinforcement.top_p", kTiny, 1.0, "(0, 1]")); !st.ok()) return st;
  if ((st = CheckRange(r.max_completion_tokens, "reinforcement.max_completion_tokens", 1, 4096,
                       "[1, 4096]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(r.kl_beta, "reinforcement.kl_beta", 0.0, 10.0, "[0, 10]")); !st.ok()) {
    return st;
  }
  if ((st = CheckRange(r.clip_epsilon, "reinforcement.clip_epsilon", kTiny, 1.0, "(0, 1]"));
      !st.ok()) {
    return st;
  }
  return CheckRange(r.iterations_per_batch, "reinforcement.iterations_per_batch", 1, 16, "[1, 16]");
}

absl::Status ValidateJobSpec(const JobSpec& s) {
  if (s.base_model.empty()) return FieldError("base_model", "is required");
  std::string name;
  int64_t version;
  absl::Status st = ParseDatasetRef(s.training_dataset, "training_dataset", &name, &version);
  if (!st.ok()) return st;
  if (!s.validation_dataset.empty()) {
    st = ParseDatasetRef(s.validation_dataset, "validation_dataset", &name, &version);
    if (!st.ok()) return st;
    if (s.validation_fraction > 0) {
      return FieldError("validation_fraction",
                        "must be 0 when validation_dataset is given (use one or the other)");
    }
  }
  if (!(s.validation_fraction >= 0 && s.validation_fraction <= 0.5)) {
    return FieldError("validation_fraction",
                      absl::StrCat("must be in [0, 0.5], got ", s.validation_fraction));
  }
  const LoraSpec& l = s.adapter.lora;
  if (s.adapter.kind != AdapterKind::kFull) {
    if ((st = CheckRange(l.r, "adapter.lora.r", 1, 1024, "[1, 1024]")); !st.ok()) return st;
    if ((st = CheckRange(l.alpha, "adapter.lora.alpha", 1e-6, 1e6, "(0, 1e6]")); !st.ok())
      return st;
    if ((st = CheckRange(l.dropout, "adapter.lora.dropout", 0.0, 0.999, "[0, 1)")); !st.ok()) {
      return st;
    }
    for (int layer : l.layers) {
      if (layer < 0)
        return FieldError("adapter.lora.layers", absl::StrCat("negative layer ", layer));
    }
    for (const std::string& m : l.target_modules) {
      if (m.empty()) return FieldError("adapter.lora.target_modules", "has an empty name");
    }
    if (l.double_quantization && l.quantize_base != QuantizeBase::kNf4) {
      return FieldError("adapter.lora.double_quantization", "needs adapter.lora.quantize_base nf4");
    }
  } else {
    for (int layer : s.adapter.full.frozen_layers) {
      if (layer < 0) {
        return FieldError("adapter.full.frozen_layers", absl::StrCat("negative layer ", layer));
      }
    }
  }
  const Hyperparameters& h = s.hyperparameters;
  if (s.method == Method::kDpo) {
    const DpoSpec& d = s.dpo;
    if ((st = CheckRange(d.beta, "dpo.beta", 1e-6, 1e3, "(0, 1000]")); !st.ok()) return st;
    if (d.label_smoothing && !(*d.label_smoothing >= 0 && *d.label_smoothing < 0.5)) {
      return FieldError("dpo.label_smoothing",
                        absl::StrCat("must be in [0, 0.5), got ", *d.label_smoothing));
    }
    if (d.label_smoothing && *d.label_smoothing > 0 && d.loss_type != DpoLoss::kAuto &&
        d.loss_type != DpoLoss::kSigmoid && d.loss_type != DpoLoss::kRobust) {
      return FieldError(
          "dpo.label_smoothing",
          absl::StrCat("applies to the sigmoid and robust losses, not ", DpoLossName(d.loss_type)));
    }
    if (h.packing.value_or(false)) {
      return FieldError("hyperparameters.packing",
                        "DPO compares whole completions; packing is not supported with it");
    }
    if (h.loss_on == LossOn::kAll) {
      return FieldError("hyperparameters.loss_on",
                        "DPO scores the completions only; leave loss_on unset");
    }
  }
  if (s.method == Method::kReinforcement) {
    if (!s.reinforcement)
      return FieldError("reinforcement", "is required with method reinforcement");
    if ((st = ValidateReinforcementSpec(*s.reinforcement)); !st.ok()) return st;
    if (h.packing.value_or(false)) {
      return FieldError("hyperparameters.packing",
                        "reinforcement samples whole completions; packing is not supported");
    }
  } else if (s.reinforcement) {
    return FieldError("reinforcement", "may only be set with method reinforcement");
  }
  if ((st = CheckRange(h.epochs, "hyperparameters.epochs", 1, 100, "[1, 100]")); !st.ok())
    return st;
  if ((st = CheckRange(h.batch_size, "hyperparameters.batch_size", 1, 1024, "[1, 1024]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.gradient_accumulation_steps, "hyperparameters.gradient_accumulation_steps",
                       1, 1024, "[1, 1024]"));
      !st.ok()) {
    return st;
  }
  if (h.batch_size && h.gradient_accumulation_steps &&
      *h.batch_size % *h.gradient_accumulation_steps != 0) {
    return FieldError("hyperparameters.gradient_accumulation_steps",
                      absl::StrCat("must divide batch_size (", *h.batch_size, "), got ",
                                   *h.gradient_accumulation_steps));
  }
  if ((st = CheckRange(h.learning_rate, "hyperparameters.learning_rate", 1e-12, 1.0, "(0, 1]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.warmup_ratio, "hyperparameters.warmup_ratio", 0.0, 1.0, "[0, 1]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.warmup_steps, "hyperparameters.warmup_steps", 0, 1 << 30, ">= 0"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.weight_decay, "hyperparameters.weight_decay", 0.0, 10.0, "[0, 10]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.max_grad_norm, "hyperparameters.max_grad_norm", 0.0, 1e6, "[0, 1e6]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.max_seq_length, "hyperparameters.max_seq_length", 2, 1 << 20,
                       "[2, 1048576]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.eval_interval_steps, "hyperparameters.eval_interval_steps", 0, 1 << 30,
                       ">= 0"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(h.log_interval_steps, "hyperparameters.log_interval_steps", 1, 1 << 30,
                       ">= 1"));
      !st.ok()) {
    return st;
  }
  const CheckpointSpec& c = s.checkpoints;
  if ((st = CheckRange(c.interval_steps, "checkpoints.interval_steps", 0, 1 << 30, ">= 0"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(c.keep_last, "checkpoints.keep_last", 1, 1000, "[1, 1000]")); !st.ok()) {
    return st;
  }
  if ((st = CheckRange(c.early_stopping_patience, "checkpoints.early_stopping_patience", 0, 1000,
                       "[0, 1000]"));
      !st.ok()) {
    return st;
  }
  if ((st = CheckRange(c.early_stopping_min_delta, "checkpoints.early_stopping_min_delta", 0.0, 1e6,
                       ">= 0"));
      !st.ok()) {
    return st;
  }
  if (s.suffix.size() > 40) {
    return FieldError("suffix",
                      absl::StrCat("must be at most 40 characters, got ", s.suffix.size()));
  }
  for (char ch : s.suffix) {
    if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')) {
      return FieldError("suffix", absl::StrCat("may hold only lower-case letters, digits, '-' and "
                                               "'_', got \"",
                                               s.suffix, "\""));
    }
  }
  if (s.metadata.size() > 16) return FieldError("metadata", "holds more than 16 pairs");
  for (const auto& [k, v] : s.metadata) {
    if (k.empty() || k.size() > 64) {
      return FieldError("metadata", absl::StrCat("key \"", k, "\" must be 1-64 characters"));
    }
    if (v.size() > 512) {
      return FieldError("metadata", absl::StrCat("value of \"", k, "\" is longer than 512"));
    }
  }
  const std::string& d = s.device;
  int index;
  if (!(d.empty() || d == "auto" || d == "cpu" || d == "cuda" ||
        (absl::StartsWith(d, "cuda:") && absl::SimpleAtoi(d.substr(5), &index) && index >= 0))) {
    return FieldError("device", absl::StrCat("must be auto, cpu, cuda or cuda:N, got \"", d, "\""));
  }
  return absl::OkStatus();
}

JobSpec ResolveJobSpec(const JobSpec& spec, const SpecFacts& f, uint64_t seed) {
  JobSpec r = spec;
  if (!r.seed) r.seed = seed;
  if (r.adapter.kind == AdapterKind::kAuto) {
    r.adapter.kind = f.parent_is_full ? AdapterKind::kFull : AdapterKind::kLora;
  }
  const bool lora = r.adapter.kind == AdapterKind::kLora;
  if (lora) {
    LoraSpec& l = r.adapter.lora;
    if (!l.r) l.r = 8;
    if (!l.alpha) l.alpha = 2.0 * *l.r;
    // DPO compares the policy with a reference; dropout would only add noise
    // to that comparison (TRL disables it too).
    if (!l.dropout) l.dropout = r.method == Method::kSupervised ? 0.05 : 0.0;
    if (l.target_modules.empty()) {
      l.target_modules =
          f.arch == model::Architecture::kGpt2
              ? std::vector<std::string>{"c_attn", "c_proj", "c_fc"}
              : std::vector<std::string>{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};
    }
  }
  Hyperparameters& h = r.hyperparameters;
  const int64_t n = std::max<int64_t>(1, f.training_examples);
  if (!h.epochs) {
    // 3 by default; more for small sets and fewer for large ones, so that
    // epochs x examples lies in [100, 25000] where it can.
    int64_t e = 3;
    if (n * e < 100) e = std::min<int64_t>(25, (100 + n - 1) / n);
    if (n * e > 25000) e = std::max<int64_t>(1, 25000 / n);
    h.epochs = static_cast<int>(e);
  }
  if (!h.batch_size) {
    // Reinforcement: prompts per step, each sampled num_generations times.
    h.batch_size = r.method == Method::kReinforcement
                       ? 8
                       : static_cast<int>(std::clamp<int64_t>(std::llround(0.002 * n), 1, 256));
  }
  const bool rl = r.method == Method::kReinforcement && r.reinforcement;
  // Reinforcement trains on prompt + sampled completion.
  const int64_t completion = rl ? r.reinforcement->max_completion_tokens.value_or(256) : 0;
  if (!h.max_seq_length) {
    int64_t len = std::max<int64_t>(2, f.longest_example + completion);
    if (f.context_length > 0) len = std::min(len, f.context_length);
    h.max_seq_length = static_cast<int>(len);
  }
  if (!h.gradient_accumulation_steps) {
    // The fewest micro-batches whose rows x max_seq_length stay within a
    // token budget (CPU 8192, GPU 32768) and that divide the batch.
    const int64_t budget = f.cuda ? 32768 : 8192;
    // Reinforcement: each prompt of a micro-batch becomes num_generations rows.
    const int64_t rows_per_item = rl ? r.reinforcement->num_generations.value_or(8) : 1;
    int ga = 1;
    while (ga < *h.batch_size &&
           ((*h.batch_size + ga - 1) / ga * rows_per_item * int64_t{*h.max_seq_length} > budget ||
            *h.batch_size % ga != 0)) {
      ++ga;
    }
    h.gradient_accumulation_steps = ga;
  }
  if (!h.learning_rate) {
    h.learning_rate = r.method == Method::kSupervised ? (lora ? 2e-4 : 1e-5) : (lora ? 5e-6 : 1e-6);
  }
  if (r.method == Method::kDpo) {
    DpoSpec& d = r.dpo;
    if (d.loss_type == DpoLoss::kAuto) d.loss_type = DpoLoss::kSigmoid;
    if (!d.beta) d.beta = 0.1;
    if (!d.label_smoothing) d.label_smoothing = 0.0;
    if (!d.precompute_reference_logprobs) {
      d.precompute_reference_logprobs = !lora || f.parent_is_adapter;
    }
  }
  if (r.method == Method::kReinforcement && r.reinforcement) {
    ReinforcementSpec& rl = *r.reinforcement;
    if (!rl.num_generations) rl.num_generations = 8;
    if (!rl.temperature) rl.temperature = 1.0;
    if (!rl.top_p) rl.top_p = 1.0;
    if (!rl.max_completion_tokens) rl.max_completion_tokens = 256;
    if (!rl.kl_beta) rl.kl_beta = 0.04;
    if (!rl.clip_epsilon) rl.clip_epsilon = 0.2;
    if (!rl.iterations_per_batch) rl.iterations_per_batch = 1;
  }
  if (h.lr_scheduler == LrScheduler::kAuto) h.lr_scheduler = LrScheduler::kLinear;
  if (!h.warmup_ratio) h.warmup_ratio = 0.03;
  if (!h.weight_decay) h.weight_decay = 0.0;
  if (!h.max_grad_norm) h.max_grad_norm = 1.0;
  if (!h.packing) h.packing = false;
  if (h.loss_on == LossOn::kAuto) h.loss_on = LossOn::kAssistant;
  if (!h.log_interval_steps) h.log_interval_steps = 1;
  if (h.precision == Precision::kAuto) h.precision = f.bf16 ? Precision::kBf16 : Precision::kFp32;
  if (!h.gradient_checkpointing) {
    // As PEFT's prepare_model_for_kbit_training: QLoRA is chosen to save memory.
    h.gradient_checkpointing =
        r.adapter.kind == AdapterKind::kLora && r.adapter.lora.quantize_base != QuantizeBase::kNone;
  }
  if (r.device.empty() || r.device == "auto") r.device = f.cuda ? "cuda:0" : "cpu";
  if (r.device == "cuda") r.device = "cuda:0";
  // Step-dependent defaults use the unpacked row count (packing only lowers it).
  const int64_t total = StepsFor(r, n);
  if (!h.warmup_steps) {
    h.warmup_steps = static_cast<int>(std::ceil(*h.warmup_ratio * static_cast<double>(total)));
  }
  if (!h.eval_interval_steps)
    h.eval_interval_steps = static_cast<int>(std::max<int64_t>(1, total / 10));
  CheckpointSpec& c = r.checkpoints;
  if (!c.interval_steps) c.interval_steps = static_cast<int>(std::max<int64_t>(1, total / 10));
  if (!c.keep_last) c.keep_last = 3;
  if (!c.keep_best) c.keep_best = false;
  if (!c.early_stopping_patience) c.early_stopping_patience = 0;
  if (!c.early_stopping_min_delta) c.early_stopping_min_delta = 0.0;
  return r;
}

int64_t StepsFor(const JobSpec& r, int64_t rows) {
  const int64_t b = std::max(1, r.hyperparameters.batch_size.value_or(1));
  return r.hyperparameters.epochs.value_or(1) * ((rows + b - 1) / b);
}

}  // namespace switchyard::training
