// QLoRA benchmark: peak memory and training throughput of LoRA on a
// quantised frozen base (NF4, int8) against LoRA on the bf16 (and fp32) base,
// on the same Llama-shaped checkpoint, data and seed.
//
// The checkpoint (model::InitCheckpoint, bf16, byte-level vocabulary so nearly
// every weight is a linear layer's, as in a real ~0.5B model) is written once.
// Each configuration then trains in its own process through the real Trainer
// (the job path's loop: AdamW with fp32 masters, checkpoints): the table
// gives the process's peak resident memory (VmHWM, model load included), the
// same less the memory the process held before loading, the median step
// time, tokens/s, and the loss curve's largest gap to the bf16 LoRA run.
// A configuration name ending in "+gc" trains with gradient checkpointing
// (layers recomputed in the backward pass); each row is compared with the
// baseline of the same setting, and one line compares the defaults (QLoRA
// recomputes, LoRA keeps its activations, as PEFT prepares k-bit models).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "services/training/trainer.h"
#include "shared/core/file_util.h"
#include "shared/core/flags.h"
#include "shared/model/init.h"
#include "shared/model/runtime.h"
#include "tools/bench/bench_util.h"

namespace {

using namespace switchyard;
using bench::Check;
using bench::Clock;

struct Config {
  std::string name;
  training::QuantizeBase quantize = training::QuantizeBase::kNone;
  bool double_quant = false;
  at::ScalarType dtype = at::kBFloat16;  // of the unquantised parts, the adapter and compute
  bool recompute = false;                // gradient checkpointing ("+gc")
};

const std::vector<Config>& Configs() {
  static const std::vector<Config> kConfigs = {
      {"lora-bf16", training::QuantizeBase::kNone, false, at::kBFloat16},
      {"qlora-nf4-bf16", training::QuantizeBase::kNf4, false, at::kBFloat16},
      {"qlora-nf4-dq-bf16", training::QuantizeBase::kNf4, true, at::kBFloat16},
      {"qlora-int8-bf16", training::QuantizeBase::kInt8, false, at::kBFloat16},
      {"lora-fp32", training::QuantizeBase::kNone, false, at::kFloat},
      {"qlora-nf4-fp32", training::QuantizeBase::kNf4, false, at::kFloat},
  };
  return kConfigs;
}

training::JobSpec Spec(const FlagSet& f, const Config& c) {
  using namespace training;
  JobSpec s;
  s.base_model = "bench";
  s.adapter.kind = AdapterKind::kLora;
  LoraSpec& l = s.adapter.lora;
  l.r = static_cast<int>(f.GetInt("lora-r"));
  l.alpha = 2.0 * *l.r;
  l.dropout = 0;
  l.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  l.quantize_base = c.quantize;
  l.double_quantization = c.double_quant;
  Hyperparameters& h = s.hyperparameters;
  h.epochs = 1;
  h.batch_size = static_cast<int>(f.GetInt("batch"));
  h.gradient_accumulation_steps = 1;
  h.learning_rate = 1e-3;
  h.lr_scheduler = LrScheduler::kConstant;
  h.warmup_ratio = 0;
  h.warmup_steps = 0;
  h.weight_decay = 0;
  h.max_grad_norm = 1.0;
  h.max_seq_length = static_cast<int>(f.GetInt("seq"));
  h.packing = false;
  h.loss_on = LossOn::kAll;
  h.eval_interval_steps = 0;
  h.log_interval_steps = 1;
  h.precision = c.dtype == at::kBFloat16 ? Precision::kBf16 : Precision::kFp32;
  h.gradient_checkpointing = c.recompute;
  s.checkpoints.interval_steps = 0;
  s.checkpoints.keep_last = 1;
  s.checkpoints.keep_best = false;
  s.checkpoints.early_stopping_patience = 0;
  s.checkpoints.early_stopping_min_delta = 0;
  s.seed = 3;
  s.device = "cpu";
  return s;
}

// A configuration by name, "+gc" for gradient checkpointing.
std::optional<Config> FindConfig(absl::string_view name) {
  const bool recompute = absl::ConsumeSuffix(&name, "+gc");
  for (Config c : Configs()) {
    if (c.name != name) continue;
    c.recompute = recompute;
    if (recompute) c.name += "+gc";
    return c;
  }
  return std::nullopt;
}

// The same token rows for every configuration: a repeated pattern the
// adapter can learn, so the loss curves say something.
std::vector<training::SftExample> Examples(const FlagSet& f, int64_t vocab) {
  std::vector<training::SftExample> out;
  const int64_t rows = f.GetInt("batch") * f.GetInt("steps");
  for (int64_t r = 0; r < rows; ++r) {
    training::SftExample ex;
    for (int64_t t = 0; t < f.GetInt("seq"); ++t) {
      ex.ids.push_back(static_cast<int32_t>((r * 7 + t * 13) % 31 + (t % 3) * 40) % vocab);
    }
    ex.trained.assign(ex.ids.size(), 1);
    out.push_back(std::move(ex));
  }
  return out;
}

class StepTimes : public training::TrainerListener {
 public:
  void OnTrain(const training::TrainMetrics& m) override {
    const auto now = Clock::now();
    seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
    losses.push_back(m.loss);
  }
  Clock::time_point last = Clock::now();
  std::vector<double> seconds, losses;
};

// One configuration, in this process: prints "result <peak> <before> <step s> <losses...>".
int RunOne(const std::string& dir, const FlagSet& f, const Config& c) {
  const int64_t before = ProcessStatusBytes("VmRSS");
  training::TrainerSetup setup;
  setup.spec = Spec(f, c);
  model::LoadOptions load{c.dtype, at::kCPU};
  load.quantize_base = c.quantize == training::QuantizeBase::kNf4 ? model::BaseQuantization::kNf4
                       : c.quantize == training::QuantizeBase::kInt8
                           ? model::BaseQuantization::kInt8
                           : model::BaseQuantization::kNone;
  load.double_quant = c.double_quant;
  auto lm = model::CausalLm::Load(dir + "/model", load);
  Check(lm.status(), "loading the model");
  setup.train = Examples(f, (*lm)->config().vocab_size);
  setup.model = std::move(*lm);
  setup.checkpoints_dir = dir + "/checkpoints-" + c.name;
  setup.base_dir = dir + "/model";
  setup.base_model_id = "bench";
  auto trainer = training::Trainer::Create(std::move(setup));
  Check(trainer.status(), "trainer");
  StepTimes times;
  auto result = (*trainer)->Run(&times);
  Check(result.status(), "training");
  std::vector<double> steps(
      times.seconds.begin() + std::min<size_t>(times.seconds.size(), f.GetInt("warmup")),
      times.seconds.end());
  std::sort(steps.begin(), steps.end());
  const double median = steps.empty() ? 0 : steps[steps.size() / 2];
  std::printf("result %lld %lld %.6f", (long long)ProcessStatusBytes("VmHWM"), (long long)before,
              median);
  for (double l : times.losses) std::printf(" %.6f", l);
  std::printf("\n");
  (void)RemoveAll(dir + "/checkpoints-" + c.name);
  return 0;
}

struct Result {
  double peak = 0, before = 0, step = 0;
  std::vector<double> losses;
};

}  // namespace

int main(int argc, char** argv) {
  FlagSet f("qlora_bench [flags]",
            "Peak memory and tokens/s of QLoRA (NF4, int8 base) against LoRA on a bf16 base.");
  f.AddInt("layers", 24, "Layers.");
  f.AddInt("hidden", 1280, "Hidden size (24 x 1280: ~0.47B parameters).");
  f.AddInt("heads", 10, "Attention heads.");
  f.AddInt("seq", 128, "Tokens per example.");
  f.AddInt("batch", 1, "Examples per optimizer step.");
  f.AddInt("steps", 4, "Optimizer steps (the first --warmup are not timed).");
  f.AddInt("warmup", 1, "Untimed steps first.");
  f.AddInt("lora-r", 8, "LoRA rank (the job default).");
  f.AddInt("threads", 0, "Threads (0 = every core).");
  f.AddString("configs",
              "lora-bf16,qlora-nf4-bf16,qlora-nf4-dq-bf16,qlora-int8-bf16,lora-bf16+gc,"
              "qlora-nf4-bf16+gc",
              "Comma-separated: lora-bf16, qlora-nf4-bf16, qlora-nf4-dq-bf16, qlora-int8-bf16, "
              "lora-fp32, qlora-nf4-fp32, each optionally with +gc (gradient checkpointing). The "
              "first without +gc and the first with it are the baselines.");
  f.AddString("dir", "", "Internal: the benchmark's directory (one configuration runs).");
  f.AddString("run", "", "Internal: the configuration this process runs.");
  absl::Status s = f.Parse(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok() || f.help_requested()) {
    std::cerr << (s.ok() ? "" : std::string(s.message()) + "\n") << f.Help();
    return s.ok() ? 0 : 2;
  }
  const int threads = model::SetTorchThreads(static_cast<int>(f.GetInt("threads")));
  if (!f.GetString("run").empty()) {
    std::optional<Config> c = FindConfig(f.GetString("run"));
    if (c) return RunOne(f.GetString("dir"), f, *c);
    std::cerr << "unknown configuration " << f.GetString("run") << "\n";
    return 2;
  }
  std::vector<Config> configs;
  for (absl::string_view name : absl::StrSplit(f.GetString("configs"), ',', absl::SkipEmpty())) {
    std::optional<Config> c = FindConfig(name);
    if (!c) {
      std::cerr << "--configs: unknown configuration \"" << name << "\"\n";
      return 2;
    }
    configs.push_back(*c);
  }
  const std::string dir = absl::StrCat("/tmp/qlora_bench_", RandomHex(4));
  model::InitOptions init;
  init.layers = f.GetInt("layers");
  init.hidden = f.GetInt("hidden");
  init.heads = f.GetInt("heads");
  init.max_positions = std::max<int64_t>(2048, f.GetInt("seq"));
  init.seed = 1;
  init.dtype = at::kBFloat16;
  const auto t0 = Clock::now();
  Check(model::InitCheckpoint(init, dir + "/model"), "init");
  auto config = model::LoadModelConfig(dir + "/model");
  Check(config.status(), "config");
  const int64_t h = config->hidden_size, inter = config->intermediate_size;
  const int64_t linear = config->num_layers * (4 * h * h + 3 * h * inter);
  const double tokens = static_cast<double>(f.GetInt("batch") * f.GetInt("seq"));
  std::printf(
      "qlora bench: llama-shaped, %lld layers, hidden %lld, intermediate %lld, %.2fB linear "
      "weights, vocab %lld, LoRA r %lld on every projection, batch %lld x seq %lld, %lld steps "
      "(%lld untimed), %d threads; checkpoint written in %.0f s\n\n",
      (long long)config->num_layers, (long long)h, (long long)inter, linear / 1e9,
      (long long)config->vocab_size, (long long)f.GetInt("lora-r"), (long long)f.GetInt("batch"),
      (long long)f.GetInt("seq"), (long long)f.GetInt("steps"), (long long)f.GetInt("warmup"),
      threads, std::chrono::duration<double>(Clock::now() - t0).count());
  // Each configuration in a fresh process, so peaks do not mix.
  std::vector<Result> results;
  for (const Config& c : configs) {
    const std::string cmd =
        bench::SelfCommand(argc, argv, absl::StrCat("--dir='", dir, "' --run=", c.name, " 2>&1"));
    FILE* p = popen(cmd.c_str(), "r");
    Result r;
    std::string output;
    char line[8192];
    while (p != nullptr && std::fgets(line, sizeof(line), p) != nullptr) {
      output += line;
      std::istringstream in(line);
      std::string tag;
      in >> tag;
      if (tag != "result") continue;
      in >> r.peak >> r.before >> r.step;
      for (double l; in >> l;) r.losses.push_back(l);
    }
    if (p == nullptr || pclose(p) != 0 || r.step <= 0) {
      std::cerr << "the " << c.name << " run failed:\n" << output;
      (void)RemoveAll(dir);
      return 1;
    }
    results.push_back(std::move(r));
  }
  // The baseline of each row: the first configuration with its checkpointing setting.
  std::vector<size_t> base_of(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    base_of[i] = i;
    for (size_t j = 0; j < i; ++j) {
      if (configs[j].recompute == configs[i].recompute) {
        base_of[i] = j;
        break;
      }
    }
  }
  auto model_bytes = [&](size_t i) { return results[i].peak - results[i].before; };
  std::printf("%-20s %9s %9s %8s %8s %9s %8s %9s %9s\n", "config", "peak MiB", "model MiB",
              "vs base", "step s", "tokens/s", "vs base", "loss 1st", "loss last");
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    const Result& base = results[base_of[i]];
    std::printf("%-20s %9.0f %9.0f %7.2fx %8.2f %9.1f %7.2fx %9.4f %9.4f\n",
                configs[i].name.c_str(), r.peak / 1048576.0, model_bytes(i) / 1048576.0,
                model_bytes(base_of[i]) / std::max(1.0, model_bytes(i)), r.step, tokens / r.step,
                base.step / r.step, r.losses.front(), r.losses.back());
  }
  // The defaults against each other: QLoRA recomputes, LoRA keeps activations.
  for (size_t i = 0; i < results.size(); ++i) {
    if (!configs[i].recompute || configs[i].quantize == training::QuantizeBase::kNone) continue;
    for (size_t j = 0; j < results.size(); ++j) {
      if (configs[j].recompute || configs[j].quantize != training::QuantizeBase::kNone ||
          configs[j].dtype != configs[i].dtype) {
        continue;
      }
      std::printf("defaults: %s against %s: %.2fx less memory, %.2fx the tokens/s\n",
                  configs[i].name.c_str(), configs[j].name.c_str(),
                  model_bytes(j) / std::max(1.0, model_bytes(i)),
                  results[j].step / results[i].step);
      break;
    }
  }
  std::printf(
      "\npeak MiB: the process's peak resident memory (VmHWM) over load and training; model MiB: "
      "the same less what the process held before loading the model; vs base: the baseline's "
      "model MiB / this one's (higher = less memory) and this one's tokens/s / the baseline's; "
      "the baseline is the first configuration with the same gradient checkpointing (+gc) "
      "setting.\n");
  std::printf("loss curves (per step):\n");
  for (size_t i = 0; i < results.size(); ++i) {
    double gap = 0;
    const Result& base = results[base_of[i]];
    std::printf("  %-20s", configs[i].name.c_str());
    for (size_t k = 0; k < results[i].losses.size(); ++k) {
      std::printf(" %.4f", results[i].losses[k]);
      if (k < base.losses.size())
        gap = std::max(gap, std::fabs(results[i].losses[k] - base.losses[k]));
    }
    std::printf("   (largest gap to %s: %.4f)\n", configs[base_of[i]].name.c_str(), gap);
  }
  (void)RemoveAll(dir);
  return 0;
}
