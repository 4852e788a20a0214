// `switchyard train ...`: the training service's client for fine-tuning jobs
// (models_commands.cc has the model registry's).
#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "switchyard/v1/training.grpc.pb.h"

namespace switchyard::cli {
namespace {

const char* kTrainUsage =
    "Usage: switchyard train <verb> [flags]\n\n"
    "Fine-tuning jobs on the training service (--server ADDR):\n"
    "  create --base MODEL --dataset NAME@V\n"
    "                   Create a job; prints its id. Unset settings are chosen by the server.\n"
    "  watch JOB        Follow a job's events until it ends: exit 0 when it succeeded,\n"
    "                   1 when it failed, 6 when it was cancelled.\n"
    "  show JOB         State, progress, metrics and resolved settings of a job.\n"
    "  list             Jobs, newest first.\n"
    "  events JOB       Stored events of a job, oldest first.\n"
    "  checkpoints JOB  Checkpoints a job keeps.\n"
    "  cancel JOB       Stop a job (at the next step boundary); no model is registered.\n"
    "  pause JOB        Stop a job after a checkpoint and free its device.\n"
    "  resume JOB       Queue a paused job again; it continues from its checkpoint.\n\n"
    "JOB is a job id (ft-7f3a) or its name (jobs/ft-7f3a).\n"
    "Run `switchyard train <verb> --help` for the flags of each verb.\n";

using Client = ServiceClient<v1::TrainingService>;

std::string JobName(const std::string& arg) {
  return absl::StartsWith(arg, "jobs/") ? arg : absl::StrCat("jobs/", arg);
}

// JOB_STATE_RUNNING -> "running".
std::string StateLabel(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  if (absl::StartsWith(name, "JOB_STATE_")) name = name.substr(10);
  return absl::AsciiStrToLower(name);
}

bool ParseStateLabel(const std::string& label, v1::JobState* state) {
  return v1::JobState_Parse(absl::StrCat("JOB_STATE_", absl::AsciiStrToUpper(label)), state) &&
         *state != v1::JOB_STATE_UNSPECIFIED;
}

std::string IssueLine(const v1::Issue& i) {
  std::string where = i.file();
  if (i.line() > 0) absl::StrAppend(&where, where.empty() ? "" : ":", "line ", i.line());
  if (!i.field().empty()) absl::StrAppend(&where, where.empty() ? "" : " ", i.field());
  return absl::StrCat(where.empty() ? "" : where + ": ", i.message(), " [", i.kind(), "]");
}

// "reward_acc 0.938 margin 0.412 chosen 0.301 rejected -0.111"
std::string DpoLine(const v1::DpoMetrics& d) {
  return absl::StrFormat("reward_acc %.3f margin %.3f chosen %.3f rejected %.3f",
                         d.reward_accuracy(), d.reward_margin(), d.rewards_chosen(),
                         d.rewards_rejected());
}

// "reward 0.625 std 0.210 kl 0.0031 len 12.5 clip 0.000"
std::string RewardLine(const v1::ReinforcementMetrics& r) {
  return absl::StrFormat("reward %.3f std %.3f kl %.4f len %.1f clip %.3f", r.reward_mean(),
                         r.reward_std(), r.kl(), r.completion_length_mean(), r.clip_ratio());
}

// The method's own training metrics: token accuracy, DPO rewards or grader rewards.
std::string TrainSummary(const v1::TrainMetrics& m) {
  if (m.has_dpo()) return DpoLine(m.dpo());
  if (m.has_reinforcement()) return RewardLine(m.reinforcement());
  return absl::StrFormat("acc %.3f", m.mean_token_accuracy());
}

// "val_loss 2.1000 val_acc 0.450", with DPO's rewards, or the greedy answers' reward.
std::string EvalSummary(const v1::EvalMetrics& m) {
  if (m.has_reinforcement()) {
    return absl::StrFormat("reward %.3f len %.1f", m.reinforcement().reward_mean(),
                           m.reinforcement().completion_length_mean());
  }
  if (m.has_dpo())
    return absl::StrFormat("val_loss %.4f %s", m.validation_loss(), DpoLine(m.dpo()));
  return absl::StrFormat("val_loss %.4f val_acc %.3f", m.validation_loss(),
                         m.validation_mean_token_accuracy());
}

// One line for people per event (see `train watch --help`).
std::string EventLine(const v1::JobEvent& e) {
  std::string line;
  switch (e.payload_case()) {
    case v1::JobEvent::kStateChange: {
      const v1::StateChange& c = e.state_change();
      line = c.from_state() == v1::JOB_STATE_UNSPECIFIED
                 ? absl::StrCat("state ", StateLabel(c.to_state()))
                 : absl::StrCat("state ", StateLabel(c.from_state()), " -> ",
                                StateLabel(c.to_state()));
      if (!c.reason().empty()) absl::StrAppend(&line, ": ", c.reason());
      for (const v1::Issue& i : c.errors()) absl::StrAppend(&line, "\n  error ", IssueLine(i));
      break;
    }
    case v1::JobEvent::kTrain: {
      const v1::TrainMetrics& m = e.train();
      line =
          absl::StrFormat("step %d/%d loss %.4f %s lr %.1e tok/s %.0f", m.step(), m.total_steps(),
                          m.loss(), TrainSummary(m), m.learning_rate(), m.tokens_per_second());
      break;
    }
    case v1::JobEvent::kEval: {
      const v1::EvalMetrics& m = e.eval();
      line =
          absl::StrCat("eval step ", m.step(), " ", EvalSummary(m), m.is_best() ? " [best]" : "");
      break;
    }
    case v1::JobEvent::kCheckpoint: {
      const v1::Checkpoint& c = e.checkpoint();
      std::string id = c.name().substr(c.name().rfind('/') + 1);
      line = absl::StrFormat("checkpoint %s (step %d, epoch %.2f, train_loss %.4f", id, c.step(),
                             c.epoch(), c.train_loss());
      if (c.has_validation_loss()) {
        absl::StrAppend(&line, absl::StrFormat(", val_loss %.4f", c.validation_loss()));
      }
      absl::StrAppend(&line, ", ", HumanBytes(c.size_bytes()), c.is_best() ? ", best" : "", ")");
      break;
    }
    case v1::JobEvent::PAYLOAD_NOT_SET:
      line = e.message();
      break;
  }
  return line;
}

// Proto as one line of JSON (for streams of messages).
// ---- train create ------------------------------------------------------------------

// The "auto" settings are string flags with no default, so --help shows
// none: an unset flag stays unset in the request. These parse one when set;
// false after printing the problem naming the flag.
bool OptInt(const FlagSet& f, const char* name, std::optional<int32_t>* out) {
  if (!f.IsSet(name)) return true;
  int32_t v;
  if (!absl::SimpleAtoi(f.GetString(name), &v)) {
    std::cerr << "error: --" << name << ": '" << f.GetString(name)
              << "' is not an integer (32-bit)\n";
    return false;
  }
  *out = v;
  return true;
}

bool OptDouble(const FlagSet& f, const char* name, std::optional<double>* out) {
  if (!f.IsSet(name)) return true;
  double v;
  if (!absl::SimpleAtod(f.GetString(name), &v)) {
    std::cerr << "error: --" << name << ": '" << f.GetString(name) << "' is not a number\n";
    return false;
  }
  *out = v;
  return true;
}

// "0,1,3" -> {0, 1, 3}; prints the problem naming the flag.
bool ParseIntList(const FlagSet& flags, const char* name, std::vector<int32_t>* out) {
  for (absl::string_view part : absl::StrSplit(flags.GetString(name), ',', absl::SkipEmpty())) {
    int32_t v;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &v) || v < 0) {
      std::cerr << "error: --" << name << " must list layer indices like 0,1,2; got \""
                << flags.GetString(name) << "\"\n";
      return false;
    }
    out->push_back(v);
  }
  return true;
}

// Builds the spec from the flags the user set; false after printing a usage
// error. Ranges are the server's to check (its errors name the field).
bool SpecFromFlags(const FlagSet& f, v1::JobSpec* spec) {
  // A local model directory goes to the server as an absolute path (the
  // server registers it, linked, under its directory name).
  std::string base = f.GetString("base");
  std::error_code ec;
  if (!absl::StartsWith(base, "models/") && !absl::StartsWith(base, "jobs/") &&
      (base.find('/') != std::string::npos || base == ".") &&
      std::filesystem::is_directory(base, ec)) {
    base = std::filesystem::absolute(base).lexically_normal().string();
    while (base.size() > 1 && base.back() == '/') base.pop_back();
  }
  spec->set_base_model(base);
  spec->set_training_dataset(f.GetString("dataset"));
  spec->set_validation_dataset(f.GetString("validation"));
  std::optional<double> fraction;
  if (!OptDouble(f, "validation-fraction", &fraction)) return false;
  if (fraction) spec->set_validation_fraction(*fraction);
  if (f.IsSet("method")) {
    v1::TrainingMethod m;
    if (!ParseChoice<v1::TrainingMethod>(f, "method",
                                         {{"supervised", v1::TRAINING_METHOD_SUPERVISED},
                                          {"dpo", v1::TRAINING_METHOD_DPO},
                                          {"reinforcement", v1::TRAINING_METHOD_REINFORCEMENT}},
                                         &m))
      return false;
    spec->set_method(m);
  }
  const bool rl_flags = f.IsSet("grader") || f.IsSet("num-generations") ||
                        f.IsSet("rl-temperature") || f.IsSet("rl-top-p") ||
                        f.IsSet("max-completion-tokens") || f.IsSet("kl-beta") ||
                        f.IsSet("clip-epsilon") || f.IsSet("iterations-per-batch");
  if (rl_flags && spec->method() != v1::TRAINING_METHOD_REINFORCEMENT) {
    std::cerr << "error: --grader and the reinforcement flags need --method reinforcement\n";
    return false;
  }
  if (spec->method() == v1::TRAINING_METHOD_REINFORCEMENT) {
    v1::ReinforcementSpec* rl = spec->mutable_reinforcement();
    std::optional<int32_t> generations, max_tokens, iterations;
    std::optional<double> temperature, top_p, kl, clip;
    if (!OptInt(f, "num-generations", &generations) ||
        !OptInt(f, "max-completion-tokens", &max_tokens) ||
        !OptInt(f, "iterations-per-batch", &iterations) ||
        !OptDouble(f, "rl-temperature", &temperature) || !OptDouble(f, "rl-top-p", &top_p) ||
        !OptDouble(f, "kl-beta", &kl) || !OptDouble(f, "clip-epsilon", &clip)) {
      return false;
    }
    if (generations) rl->set_num_generations(*generations);
    if (max_tokens) rl->set_max_completion_tokens(*max_tokens);
    if (iterations) rl->set_iterations_per_batch(*iterations);
    if (temperature) rl->set_temperature(*temperature);
    if (top_p) rl->set_top_p(*top_p);
    if (kl) rl->set_kl_beta(*kl);
    if (clip) rl->set_clip_epsilon(*clip);
  }
  const bool dpo_flags = f.IsSet("dpo-beta") || f.IsSet("dpo-loss") ||
                         f.IsSet("dpo-label-smoothing") || f.IsSet("precompute-reference");
  if (dpo_flags) {
    if (spec->method() != v1::TRAINING_METHOD_DPO) {
      std::cerr << "error: --dpo-* and --precompute-reference need --method dpo\n";
      return false;
    }
    v1::DpoSpec* dpo = spec->mutable_dpo();
    std::optional<double> beta, smoothing;
    if (!OptDouble(f, "dpo-beta", &beta) || !OptDouble(f, "dpo-label-smoothing", &smoothing)) {
      return false;
    }
    if (beta) dpo->set_beta(*beta);
    if (smoothing) dpo->set_label_smoothing(*smoothing);
    if (f.IsSet("dpo-loss")) {
      v1::DpoLossType v;
      if (!ParseChoice<v1::DpoLossType>(f, "dpo-loss",
                                        {{"sigmoid", v1::DPO_LOSS_TYPE_SIGMOID},
                                         {"ipo", v1::DPO_LOSS_TYPE_IPO},
                                         {"hinge", v1::DPO_LOSS_TYPE_HINGE},
                                         {"robust", v1::DPO_LOSS_TYPE_ROBUST}},
                                        &v))
        return false;
      dpo->set_loss_type(v);
    }
    if (f.IsSet("precompute-reference")) {
      dpo->set_precompute_reference_logprobs(f.GetBool("precompute-reference"));
    }
  }

  const bool lora_flags = f.IsSet("lora-r") || f.IsSet("lora-alpha") || f.IsSet("lora-dropout") ||
                          f.IsSet("target-modules") || f.IsSet("lora-layers") ||
                          f.IsSet("rslora") || f.IsSet("quantize-base") || f.IsSet("double-quant");
  const bool full_flags = f.IsSet("frozen-layers") || f.IsSet("freeze-embeddings");
  if (f.GetBool("full")) {
    if (lora_flags) {
      std::cerr << "error: --full trains every weight; it cannot be combined with --lora-*, "
                   "--target-modules, --rslora or --quantize-base\n";
      return false;
    }
    v1::FullSpec* full = spec->mutable_adapter()->mutable_full();
    std::vector<int32_t> layers;
    if (!ParseIntList(f, "frozen-layers", &layers)) return false;
    for (int32_t l : layers) full->add_frozen_layers(l);
    full->set_freeze_embeddings(f.GetBool("freeze-embeddings"));
  } else if (full_flags) {
    std::cerr << "error: --frozen-layers and --freeze-embeddings need --full\n";
    return false;
  } else if (lora_flags) {
    v1::LoraSpec* lora = spec->mutable_adapter()->mutable_lora();
    std::optional<int32_t> r;
    std::optional<double> alpha, dropout;
    if (!OptInt(f, "lora-r", &r) || !OptDouble(f, "lora-alpha", &alpha) ||
        !OptDouble(f, "lora-dropout", &dropout))
      return false;
    if (r) lora->set_r(*r);
    if (alpha) lora->set_alpha(*alpha);
    if (dropout) lora->set_dropout(*dropout);
    for (absl::string_view m :
         absl::StrSplit(f.GetString("target-modules"), ',', absl::SkipWhitespace())) {
      lora->add_target_modules(std::string(absl::StripAsciiWhitespace(m)));
    }
    std::vector<int32_t> layers;
    if (!ParseIntList(f, "lora-layers", &layers)) return false;
    for (int32_t l : layers) lora->add_layers(l);
    lora->set_rslora(f.GetBool("rslora"));
    if (f.IsSet("quantize-base")) {
      v1::BaseQuantization q;
      if (!ParseChoice<v1::BaseQuantization>(f, "quantize-base",
                                             {{"none", v1::BASE_QUANTIZATION_NONE},
                                              {"nf4", v1::BASE_QUANTIZATION_NF4},
                                              {"int8", v1::BASE_QUANTIZATION_INT8}},
                                             &q))
        return false;
      lora->set_quantize_base(q);
    }
    lora->set_double_quantization(f.GetBool("double-quant"));
  }

  v1::Hyperparameters* h = spec->mutable_hyperparameters();
  v1::CheckpointSpec* c = spec->mutable_checkpoints();
  struct IntField {
    const char* flag;
    std::function<void(int32_t)> set;
  };
  const IntField ints[] = {
      {"epochs", [&](int32_t v) { h->set_epochs(v); }},
      {"batch-size", [&](int32_t v) { h->set_batch_size(v); }},
      {"grad-accum", [&](int32_t v) { h->set_gradient_accumulation_steps(v); }},
      {"warmup-steps", [&](int32_t v) { h->set_warmup_steps(v); }},
      {"max-seq-length", [&](int32_t v) { h->set_max_seq_length(v); }},
      {"eval-interval", [&](int32_t v) { h->set_eval_interval_steps(v); }},
      {"log-interval", [&](int32_t v) { h->set_log_interval_steps(v); }},
      {"checkpoint-interval", [&](int32_t v) { c->set_interval_steps(v); }},
      {"keep-last", [&](int32_t v) { c->set_keep_last(v); }},
      {"early-stopping-patience", [&](int32_t v) { c->set_early_stopping_patience(v); }},
  };
  for (const IntField& field : ints) {
    std::optional<int32_t> i;
    if (!OptInt(f, field.flag, &i)) return false;
    if (i) field.set(*i);
  }
  struct DoubleField {
    const char* flag;
    std::function<void(double)> set;
  };
  const DoubleField doubles[] = {
      {"learning-rate", [&](double v) { h->set_learning_rate(v); }},
      {"warmup-ratio", [&](double v) { h->set_warmup_ratio(v); }},
      {"weight-decay", [&](double v) { h->set_weight_decay(v); }},
      {"max-grad-norm", [&](double v) { h->set_max_grad_norm(v); }},
      {"early-stopping-min-delta", [&](double v) { c->set_early_stopping_min_delta(v); }},
  };
  for (const DoubleField& field : doubles) {
    std::optional<double> d;
    if (!OptDouble(f, field.flag, &d)) return false;
    if (d) field.set(*d);
  }
  if (f.IsSet("packing")) h->set_packing(f.GetBool("packing"));
  if (f.IsSet("gradient-checkpointing")) {
    h->set_gradient_checkpointing(f.GetBool("gradient-checkpointing"));
  }
  if (f.IsSet("keep-best")) c->set_keep_best(f.GetBool("keep-best"));
  if (f.IsSet("lr-scheduler")) {
    v1::LrScheduler v;
    if (!ParseChoice<v1::LrScheduler>(f, "lr-scheduler",
                                      {{"linear", v1::LR_SCHEDULER_LINEAR},
                                       {"cosine", v1::LR_SCHEDULER_COSINE},
                                       {"constant", v1::LR_SCHEDULER_CONSTANT}},
                                      &v))
      return false;
    h->set_lr_scheduler(v);
  }
  if (f.IsSet("loss-on")) {
    v1::LossOn v;
    if (!ParseChoice<v1::LossOn>(
            f, "loss-on", {{"assistant", v1::LOSS_ON_ASSISTANT}, {"all", v1::LOSS_ON_ALL}}, &v))
      return false;
    h->set_loss_on(v);
  }
  if (f.IsSet("precision")) {
    v1::Precision v;
    if (!ParseChoice<v1::Precision>(
            f, "precision", {{"fp32", v1::PRECISION_FP32}, {"bf16", v1::PRECISION_BF16}}, &v))
      return false;
    h->set_precision(v);
  }

  if (f.IsSet("seed")) {
    uint64_t seed;
    if (!absl::SimpleAtoi(f.GetString("seed"), &seed)) {
      std::cerr << "error: --seed: '" << f.GetString("seed") << "' is not a non-negative integer\n";
      return false;
    }
    spec->set_seed(seed);
  }
  spec->set_suffix(f.GetString("suffix"));
  spec->set_device(f.GetString("device"));
  for (absl::string_view kv : absl::StrSplit(f.GetString("metadata"), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
    if (p.first.empty() || kv.find('=') == absl::string_view::npos) {
      std::cerr << "error: --metadata must look like key=value,key2=value2; got \""
                << f.GetString("metadata") << "\"\n";
      return false;
    }
    (*spec->mutable_metadata())[p.first] = p.second;
  }
  return true;
}

void PrintResolved(const v1::Job& job, std::ostream& out);

int Create(const std::vector<std::string>& args) {
  FlagSet flags("switchyard train create --base MODEL --dataset NAME@VERSION [flags]",
                "Creates a fine-tuning job and prints its id (the job as JSON with --json). Only\n"
                "the settings given here are sent; every other one is \"auto\" and the server\n"
                "chooses it from the data and model (see `train show` for the values used).\n"
                "Follow the job with `switchyard train watch JOB`.");
  flags.AddString("base", "",
                  "Base model: a registered model id, a fine-tuned model, a checkpoint name\n"
                  "(jobs/JOB/checkpoints/ID) or a model directory (a path with a '/'; the\n"
                  "server registers it, linked, under the directory's name) (required).");
  flags.AddString("dataset", "",
                  "Training dataset NAME@VERSION (NAME or NAME@latest pins the latest; required).");
  flags.AddString("validation", "", "Validation dataset NAME@VERSION (its train file is used).");
  flags.AddString("validation-fraction", "",
                  "Hold out this fraction (0 to 0.5) of the training examples for validation "
                  "when no --validation is given.");
  flags.AddString("method", "",
                  "supervised | dpo (needs a preference dataset) | reinforcement (auto: "
                  "supervised).");
  flags.AddString("grader", "",
                  "Reinforcement: grader JSON file (proto form or OpenAI's \"type\" form; try it "
                  "with `switchyard grader run`). Required with --method reinforcement.");
  flags.AddString("num-generations", "",
                  "Reinforcement: completions sampled per prompt, the group (auto: 8).");
  flags.AddString("rl-temperature", "",
                  "Reinforcement: sampling temperature of the completions (auto: 1.0).");
  flags.AddString("rl-top-p", "", "Reinforcement: nucleus sampling, 0 to 1 (auto: 1.0).");
  flags.AddString("max-completion-tokens", "",
                  "Reinforcement: longest sampled completion in tokens (auto: 256).");
  flags.AddString("kl-beta", "",
                  "Reinforcement: weight of the KL penalty to the reference, 0 disables (auto: "
                  "0.04).");
  flags.AddString("clip-epsilon", "", "Reinforcement: policy ratio clipping range (auto: 0.2).");
  flags.AddString("iterations-per-batch", "",
                  "Reinforcement: policy updates per batch of generations (auto: 1).");
  flags.AddString("dpo-beta", "", "DPO: strength of the pull to the reference (auto: 0.1).");
  flags.AddString("dpo-loss", "", "DPO: sigmoid | ipo | hinge | robust (auto: sigmoid).");
  flags.AddString("dpo-label-smoothing", "",
                  "DPO: assumed fraction of flipped preference labels, 0 to <0.5 (sigmoid and "
                  "robust; auto: 0).");
  flags.AddBool("precompute-reference", false,
                "DPO: compute the reference log-probabilities once before training (auto: on for "
                "full fine-tuning and when continuing a fine-tuned adapter; "
                "--precompute-reference=false turns it off).");
  flags.AddString("lora-r", "", "LoRA rank (unset = auto: 8).");
  flags.AddString("lora-alpha", "", "LoRA alpha; the update is scaled by alpha / r (auto: 2 r).");
  flags.AddString("lora-dropout", "",
                  "Dropout on the adapter input, 0 to <1 (auto: 0.05; DPO and reinforcement 0).");
  flags.AddString("target-modules", "",
                  "Comma-separated module names to adapt (q_proj,v_proj) or all-linear "
                  "(auto: every attention and MLP projection).");
  flags.AddString("lora-layers", "", "Comma-separated decoder layers to adapt (auto: all).");
  flags.AddBool("rslora", false, "Rank-stabilised LoRA: scale by alpha / sqrt(r).");
  flags.AddString("quantize-base", "",
                  "QLoRA: keep the frozen base nf4 (4-bit NormalFloat, blocks of 64) or int8 "
                  "(per row) in memory; the adapter loads on the unquantised base (auto: none).");
  flags.AddBool("double-quant", false, "With --quantize-base nf4: quantise the block scales too.");
  flags.AddBool("full", false, "Full fine-tuning instead of LoRA.");
  flags.AddString("frozen-layers", "", "With --full: comma-separated decoder layers kept frozen.");
  flags.AddBool("freeze-embeddings", false, "With --full: keep the token embeddings frozen.");
  flags.AddString("epochs", "", "Passes over the training set (auto: from the dataset size).");
  flags.AddString("learning-rate", "",
                  "Peak learning rate (auto: 2e-4 LoRA, 1e-5 full; DPO and reinforcement 5e-6 "
                  "LoRA, 1e-6 full).");
  flags.AddString("batch-size", "",
                  "Examples per optimizer step (auto: ~0.2% of the examples; reinforcement: "
                  "prompts per step, auto 8).");
  flags.AddString("grad-accum", "", "Micro-batches per step; must divide --batch-size (auto).");
  flags.AddString("max-seq-length", "",
                  "Longest sequence in tokens; longer examples fail validation (auto: the longest "
                  "example).");
  flags.AddBool("packing", false, "Pack several examples into each sequence (auto: off).");
  flags.AddString("loss-on", "", "Tokens the loss covers: assistant | all (auto: assistant).");
  flags.AddString("lr-scheduler", "", "After warmup: linear | cosine | constant (auto: linear).");
  flags.AddString("warmup-ratio", "", "Warmup as a fraction of all steps (auto: 0.03).");
  flags.AddString("warmup-steps", "", "Warmup in steps; overrides --warmup-ratio.");
  flags.AddString("weight-decay", "", "AdamW weight decay (auto: 0).");
  flags.AddString("max-grad-norm", "",
                  "Clip gradients to this global L2 norm; 0 disables (auto: 1).");
  flags.AddString("eval-interval", "",
                  "Evaluate every N steps; 0 = at epoch ends only (auto: ~10 evaluations).");
  flags.AddString("log-interval", "", "Emit train metrics every N steps (auto: 1).");
  flags.AddString("checkpoint-interval", "",
                  "Checkpoint every N steps besides epoch ends; 0 = epoch ends only (auto: ~10).");
  flags.AddString("keep-last", "", "Step/epoch checkpoints kept (auto: 3).");
  flags.AddBool("keep-best", false,
                "Keep the lowest-validation-loss checkpoint and register it as the model.");
  flags.AddString("early-stopping-patience", "",
                  "Stop after N evaluations without improvement (unset/0: never).");
  flags.AddString("early-stopping-min-delta", "", "Smallest improvement that counts (auto: 0).");
  flags.AddString("precision", "",
                  "fp32 | bf16 (auto: bf16 where the device computes it natively, else fp32).");
  flags.AddBool("gradient-checkpointing", false,
                "Recompute each layer's activations in the backward pass: far less memory, about "
                "a third more compute (auto: on with --quantize-base, else off; "
                "--no-gradient-checkpointing turns it off).");
  flags.AddString("seed", "", "Seed of data order, dropout and init (auto: random, recorded).");
  flags.AddString("suffix", "", "Part of the model id ft:BASE:SUFFIX:JOB (a-z, 0-9, -, _).");
  flags.AddString("metadata", "", "key=value pairs kept with the job and model, comma-separated.");
  flags.AddString("device", "", "auto | cpu | cuda | cuda:N (auto: a free GPU, else CPU).");
  flags.AddString("job-id", "", "Job id to use (auto: ft-<hex>).");
  flags.AddBool("validate-only", false,
                "Run every check, including the data checks, and print the resolved settings; "
                "queue nothing. Exit 1 when the job would fail.");
  flags.AddBool("json", false, "Print the job as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  for (const char* name : {"base", "dataset"}) {
    if (flags.GetString(name).empty()) {
      std::cerr << "error: --" << name << " is required\n";
      return kExitUsage;
    }
  }
  v1::CreateJobRequest req;
  if (!SpecFromFlags(flags, req.mutable_spec())) return kExitUsage;
  if (flags.IsSet("grader")) {
    rc = ReadGraderFile(flags.GetString("grader"),
                        req.mutable_spec()->mutable_reinforcement()->mutable_grader());
    if (rc >= 0) return rc;
  }
  req.set_job_id(flags.GetString("job-id"));
  req.set_validate_only(flags.GetBool("validate-only"));
  v1::Job job;
  rc = CallOnce<v1::TrainingService>(flags, &v1::TrainingService::Stub::CreateJob, req, &job);
  if (rc >= 0) return rc;
  const bool failed = job.errors_size() > 0;
  if (flags.GetBool("json")) {
    std::cout << ToJson(job);
  } else if (req.validate_only()) {
    std::cout << (failed ? "INVALID" : "VALID") << ": " << job.training_examples()
              << " training examples, " << job.validation_examples() << " validation examples, "
              << job.total_steps() << " steps\n";
    for (const v1::Issue& i : job.errors()) std::cout << "  error   " << IssueLine(i) << "\n";
    for (const v1::Issue& i : job.warnings()) std::cout << "  warning " << IssueLine(i) << "\n";
    if (job.has_resolved_spec()) PrintResolved(job, std::cout);
  } else {
    std::cout << job.job_id() << "\n";
  }
  return req.validate_only() && failed ? kExitInvalidData : kExitOk;
}

// ---- train watch / show / list / events / checkpoints ------------------------------

int ExitForState(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_SUCCEEDED:
      return kExitOk;
    case v1::JOB_STATE_FAILED:
      return kExitInvalidData;
    default:
      return kExitError;
  }
}

grpc::Status GetJob(const Client& c, const std::string& name, v1::Job* job) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  v1::GetJobRequest req;
  req.set_name(name);
  return c.stub->GetJob(&ctx, req, job);
}

int Watch(const std::vector<std::string>& args) {
  FlagSet flags("switchyard train watch JOB [flags]",
                "Prints a job's events (the stored ones, then new ones as they happen) until\n"
                "the job ends, one line each:\n"
                "  state running -> succeeded: REASON\n"
                "  step 12/40 loss 2.3100 acc 0.412 lr 1.9e-04 tok/s 850\n"
                "  eval step 12 val_loss 2.1000 val_acc 0.450 [best]\n"
                "  checkpoint step-12 (step 12, epoch 1.20, train_loss 2.3100, 1.2 MB)\n"
                "Exit 0 when the job succeeded, 1 when it failed (the errors are printed),\n"
                "6 when it was cancelled.");
  flags.AddInt("after", 0, "Only events with a greater sequence (resume an earlier watch).");
  flags.AddBool("skip-metrics", false, "Only state changes and checkpoints.");
  flags.AddBool("json", false, "Print each event as one line of JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  if (flags.GetInt("after") < 0) {
    std::cerr << "error: --after must not be negative\n";
    return kExitUsage;
  }
  const bool json = flags.GetBool("json");
  const std::string name = JobName(flags.positional()[0]);
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    v1::WatchJobRequest req;
    req.set_name(name);
    req.set_after_sequence(flags.GetInt("after"));
    req.set_skip_metrics(flags.GetBool("skip-metrics"));
    auto reader = c.stub->WatchJob(&ctx, req);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      if (json) {
        std::cout << JsonLine(event) << "\n";
      } else {
        std::cout << EventLine(event) << "\n";
      }
      std::cout.flush();
    }
    grpc::Status s = reader->Finish();
    if (!s.ok()) return ReportError(s);
  }
  v1::Job job;
  grpc::Status s = GetJob(c, name, &job);
  if (!s.ok()) return ReportError(s);
  if (!json) {
    if (job.state() == v1::JOB_STATE_SUCCEEDED) {
      std::cout << job.name() << " succeeded: " << job.fine_tuned_model() << "\n";
    } else {
      std::cerr << job.name() << " " << StateLabel(job.state()) << "\n";
      if (job.state() == v1::JOB_STATE_FAILED) {
        for (const v1::Issue& i : job.errors()) std::cerr << "  error " << IssueLine(i) << "\n";
      }
    }
  }
  return ExitForState(job.state());
}

void PrintResolved(const v1::Job& job, std::ostream& out) {
  const v1::JobSpec& r = job.resolved_spec();
  const v1::Hyperparameters& h = r.hyperparameters();
  std::string adapter = "auto";
  if (r.adapter().has_lora()) {
    const v1::LoraSpec& l = r.adapter().lora();
    adapter = absl::StrCat("lora r ", l.r(), " alpha ", l.alpha(), " dropout ", l.dropout(), " on ",
                           absl::StrJoin(l.target_modules(), ","));
    if (l.quantize_base() == v1::BASE_QUANTIZATION_NF4 ||
        l.quantize_base() == v1::BASE_QUANTIZATION_INT8) {
      absl::StrAppend(&adapter, ", base ",
                      l.quantize_base() == v1::BASE_QUANTIZATION_NF4 ? "nf4" : "int8",
                      l.double_quantization() ? " (double quantised)" : "");
    }
  } else if (r.adapter().has_full()) {
    adapter = "full";
  }
  std::vector<std::vector<std::string>> rows = {
      {"  dataset",
       r.training_dataset() +
           (r.validation_dataset().empty() ? "" : " (validation " + r.validation_dataset() + ")")},
      {"  adapter", adapter},
      {"  epochs", absl::StrCat(h.epochs())},
      {"  batch size", absl::StrCat(h.batch_size(), ", ", h.gradient_accumulation_steps(),
                                    " micro-batch(es) per step")},
      {"  learning rate",
       absl::StrFormat("%.2e %s, warmup %.2f", h.learning_rate(),
                       absl::AsciiStrToLower(LrScheduler_Name(h.lr_scheduler()).substr(13)),
                       h.warmup_ratio())},
      {"  max seq length", absl::StrCat(h.max_seq_length(), h.packing() ? " (packed)" : "")},
      {"  memory", h.gradient_checkpointing() ? "gradient checkpointing (layers recomputed)"
                                              : "activations kept"},
      {"  seed", absl::StrCat(r.seed())},
  };
  if (r.method() == v1::TRAINING_METHOD_REINFORCEMENT) {
    const v1::ReinforcementSpec& rl = r.reinforcement();
    rows.insert(rows.begin() + 2,
                {"  reinforcement",
                 absl::StrFormat("%d generations per prompt, temperature %g, top_p %g, up to %d "
                                 "tokens, kl_beta %g, clip %g, %d update(s) per batch",
                                 rl.num_generations(), rl.temperature(), rl.top_p(),
                                 rl.max_completion_tokens(), rl.kl_beta(), rl.clip_epsilon(),
                                 rl.iterations_per_batch())});
  }
  if (r.method() == v1::TRAINING_METHOD_DPO) {
    const v1::DpoSpec& d = r.dpo();
    rows.insert(rows.begin() + 2,
                {"  dpo",
                 absl::StrFormat("%s loss, beta %g, label smoothing %g, reference %s",
                                 absl::AsciiStrToLower(DpoLossType_Name(d.loss_type()).substr(14)),
                                 d.beta(), d.label_smoothing(),
                                 d.precompute_reference_logprobs() ? "precomputed" : "each step")});
  }
  out << "resolved settings\n" << FormatTable(rows);
}

int Show(const std::vector<std::string>& args) {
  FlagSet flags("switchyard train show JOB [flags]",
                "Shows a job: state, progress, latest and best metrics, the model it produced\n"
                "and the settings it runs with.");
  flags.AddBool("json", false, "Print the job as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::Job job;
  grpc::Status s = GetJob(c, JobName(flags.positional()[0]), &job);
  if (!s.ok()) return ReportError(s);
  if (flags.GetBool("json")) {
    std::cout << ToJson(job);
    return kExitOk;
  }
  std::cout << job.name() << "  " << StateLabel(job.state());
  if (job.state() == v1::JOB_STATE_QUEUED && job.queue_position() > 0) {
    std::cout << " (position " << job.queue_position() << ")";
  }
  std::cout << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"  base", job.spec().base_model()},
      {"  dataset", job.spec().training_dataset()},
      {"  device", job.device().empty() ? "-" : job.device()},
      {"  progress", absl::StrFormat("step %d/%d, epoch %.2f, %d tokens", job.step(),
                                     job.total_steps(), job.epoch(), job.trained_tokens())},
      {"  examples",
       absl::StrCat(job.training_examples(), " train, ", job.validation_examples(), " validation")},
      {"  created", TimeLabel(job.create_time())},
      {"  started", TimeLabel(job.start_time())},
      {"  ended", TimeLabel(job.end_time())},
      {"  restarts", absl::StrCat(job.restarts())},
  };
  if (job.has_latest_train()) {
    const v1::TrainMetrics& m = job.latest_train();
    rows.push_back({"  latest train", absl::StrFormat("loss %.4f %s lr %.1e", m.loss(),
                                                      TrainSummary(m), m.learning_rate())});
  }
  if (job.has_best_eval()) {
    const v1::EvalMetrics& m = job.best_eval();
    rows.push_back({"  best eval", absl::StrCat(EvalSummary(m), " at step ", m.step())});
  }
  if (!job.fine_tuned_model().empty()) rows.push_back({"  model", job.fine_tuned_model()});
  std::cout << FormatTable(rows);
  for (const v1::Issue& i : job.errors()) std::cout << "  error   " << IssueLine(i) << "\n";
  for (const v1::Issue& i : job.warnings()) std::cout << "  warning " << IssueLine(i) << "\n";
  if (job.has_resolved_spec()) PrintResolved(job, std::cout);
  return kExitOk;
}

int List(const std::vector<std::string>& args) {
  FlagSet flags("switchyard train list [flags]", "Lists fine-tuning jobs, newest first.");
  flags.AddString("state", "",
                  "Only jobs in these states, comma-separated: queued, validating, running, "
                  "paused, succeeded, failed, cancelled.");
  flags.AddString("base", "", "Only jobs on this base model.");
  AddPageFlags(&flags, "Jobs");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  v1::ListJobsRequest base_req;
  for (absl::string_view label : absl::StrSplit(flags.GetString("state"), ',', absl::SkipEmpty())) {
    v1::JobState state;
    if (!ParseStateLabel(std::string(absl::StripAsciiWhitespace(label)), &state)) {
      std::cerr << "error: --state: unknown state \"" << label
                << "\"; expected queued, validating, running, paused, succeeded, failed or "
                   "cancelled\n";
      return kExitUsage;
    }
    base_req.add_states(state);
  }
  base_req.set_base_model(flags.GetString("base"));
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::ListJobsResponse all;
  rc = FetchPages(
      flags,
      [&](int32_t size, const std::string& token, v1::ListJobsResponse* page) {
        grpc::ClientContext ctx;
        c.Prepare(&ctx);
        v1::ListJobsRequest req = base_req;
        req.set_page_size(size);
        req.set_page_token(token);
        return c.stub->ListJobs(&ctx, req, page);
      },
      [](v1::ListJobsResponse* r) { return r->mutable_jobs(); }, &all);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"JOB", "STATE", "BASE", "DATASET", "STEP", "MODEL", "CREATED"}};
  for (const v1::Job& j : all.jobs()) {
    std::string state = StateLabel(j.state());
    if (j.state() == v1::JOB_STATE_QUEUED && j.queue_position() > 0)
      absl::StrAppend(&state, " #", j.queue_position());
    rows.push_back({j.job_id(), state, j.spec().base_model(), j.spec().training_dataset(),
                    absl::StrCat(j.step(), "/", j.total_steps()),
                    j.fine_tuned_model().empty() ? "-" : j.fine_tuned_model(),
                    TimeLabel(j.create_time())});
  }
  std::cout << FormatTable(rows);
  PrintMorePages(all.next_page_token());
  return kExitOk;
}

int Events(const std::vector<std::string>& args) {
  FlagSet flags("switchyard train events JOB [flags]",
                "Prints a job's stored events, oldest first, in `train watch`'s format.");
  flags.AddInt("after", 0, "Only events with a greater sequence.");
  flags.AddBool("json", false, "Print the events as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::ListJobEventsResponse all;
  std::string token;
  do {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    v1::ListJobEventsRequest req;
    req.set_parent(JobName(flags.positional()[0]));
    req.set_after_sequence(flags.GetInt("after"));
    req.set_page_size(1000);
    req.set_page_token(token);
    v1::ListJobEventsResponse resp;
    grpc::Status s = c.stub->ListJobEvents(&ctx, req, &resp);
    if (!s.ok()) return ReportError(s);
    all.mutable_events()->MergeFrom(resp.events());
    token = resp.next_page_token();
  } while (!token.empty());
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  for (const v1::JobEvent& e : all.events()) {
    std::cout << absl::StrFormat("%4d ", e.sequence()) << EventLine(e) << "\n";
  }
  return kExitOk;
}

int Checkpoints(const std::vector<std::string>& args) {
  FlagSet flags("switchyard train checkpoints JOB [flags]",
                "Lists the checkpoints a job keeps, oldest first. A checkpoint name works\n"
                "wherever a model is named (`train create --base`, `models show`).");
  flags.AddBool("json", false, "Print the response as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  v1::ListCheckpointsResponse all;
  std::string token;
  do {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    v1::ListCheckpointsRequest req;
    req.set_parent(JobName(flags.positional()[0]));
    req.set_page_size(1000);
    req.set_page_token(token);
    v1::ListCheckpointsResponse resp;
    grpc::Status s = c.stub->ListCheckpoints(&ctx, req, &resp);
    if (!s.ok()) return ReportError(s);
    all.mutable_checkpoints()->MergeFrom(resp.checkpoints());
    token = resp.next_page_token();
  } while (!token.empty());
  if (flags.GetBool("json")) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "KIND", "STEP", "EPOCH", "TRAIN_LOSS", "VAL_LOSS", "BEST", "SIZE"}};
  for (const v1::Checkpoint& k : all.checkpoints()) {
    std::string kind = v1::CheckpointKind_Name(k.kind());
    rows.push_back({k.name(), absl::AsciiStrToLower(kind.substr(kind.rfind('_') + 1)),
                    absl::StrCat(k.step()), absl::StrFormat("%.2f", k.epoch()),
                    absl::StrFormat("%.4f", k.train_loss()),
                    k.has_validation_loss() ? absl::StrFormat("%.4f", k.validation_loss()) : "-",
                    k.is_best() ? "yes" : "", HumanBytes(k.size_bytes())});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

// cancel, pause and resume: one job in, the job as it is after the request out.
int Control(const std::vector<std::string>& args, const std::string& verb) {
  const char* what =
      verb == "cancel"  ? "Cancels a job: a queued or paused job at once, a running one at its\n"
                          "next step boundary (follow with `train watch`). Checkpoints are kept;\n"
                          "no model is registered."
      : verb == "pause" ? "Pauses a job: it saves a checkpoint at the next step boundary and\n"
                          "frees its device; `train resume` continues it from there."
                        : "Queues a paused job again; it continues from its pause checkpoint.";
  FlagSet flags(absl::StrCat("switchyard train ", verb, " JOB [flags]"), what);
  flags.AddBool("json", false, "Print the job as JSON.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  const std::string name = JobName(flags.positional()[0]);
  v1::Job job;
  grpc::Status s;
  if (verb == "cancel") {
    v1::CancelJobRequest req;
    req.set_name(name);
    s = c.stub->CancelJob(&ctx, req, &job);
  } else if (verb == "pause") {
    v1::PauseJobRequest req;
    req.set_name(name);
    s = c.stub->PauseJob(&ctx, req, &job);
  } else {
    v1::ResumeJobRequest req;
    req.set_name(name);
    s = c.stub->ResumeJob(&ctx, req, &job);
  }
  if (!s.ok()) return ReportError(s);
  if (flags.GetBool("json")) {
    std::cout << ToJson(job);
  } else {
    std::cout << job.name() << " " << StateLabel(job.state()) << "\n";
  }
  return kExitOk;
}

}  // namespace

int RunTrain(const std::vector<std::string>& args) {
  return DispatchVerb(
      "train", kTrainUsage, args,
      {
          {"create", Create},
          {"watch", Watch},
          {"show", Show},
          {"list", List},
          {"events", Events},
          {"checkpoints", Checkpoints},
          {"cancel", [](const std::vector<std::string>& a) { return Control(a, "cancel"); }},
          {"pause", [](const std::vector<std::string>& a) { return Control(a, "pause"); }},
          {"resume", [](const std::vector<std::string>& a) { return Control(a, "resume"); }},
      });
}

}  // namespace switchyard::cli
