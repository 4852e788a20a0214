// Model benchmark: training-step and decode throughput of the LibTorch model
// code, beside the machine's own ceilings measured in the same run (matmul
// peak per dtype, copy bandwidth) and, with --reference, the same model and
// step in plain PyTorch eager (tools/bench/model_bench_ref.py).
//
//   model_bench [--layers 12 --hidden 768 --heads 12 --seq 512 --batch 4 ...]
//
// Training: forward + loss + backward + AdamW step on a random batch, full
// fine-tuning and LoRA (r 16 on q,k,v,o,gate,up,down), fp32 and bf16. FLOPs
// are counted from the shapes (matmuls and attention; LoRA's backward skips
// the frozen weights' gradients). Decode: greedy generation with a KV cache,
// one stream and several, beside the bound of weight bytes per step over the
// copy bandwidth.
#include <c10/core/InferenceMode.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "shared/core/flags.h"
#include "shared/model/decode_attention.h"
#include "shared/model/decoder.h"
#include "shared/model/gemv.h"
#include "shared/model/generate.h"
#include "shared/model/init.h"
#include "shared/model/loss.h"
#include "shared/model/runtime.h"

namespace {

using namespace switchyard;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Best GFLOP/s of an n x n x n matmul.
double MatmulPeak(at::ScalarType dtype, int64_t n) {
  at::Tensor a = at::randn({n, n}).to(dtype), b = at::randn({n, n}).to(dtype);
  double best = 0;
  for (int i = 0; i < 10; ++i) {
    auto t0 = Clock::now();
    at::Tensor c = at::matmul(a, b);
    best = std::max(best, 2.0 * n * n * n / Seconds(t0, Clock::now()) / 1e9);
  }
  return best;
}

// Best GB/s of copying a 256 MiB buffer, counting bytes read plus written.
double CopyBandwidth() {
  const int64_t n = (256ll << 20) / 4;
  at::Tensor src = at::rand({n}), dst = at::empty({n});
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    dst.copy_(src);
    best = std::max(best, 2.0 * n * 4 / Seconds(t0, Clock::now()) / 1e9);
  }
  return best;
}

struct TrainResult {
  std::string mode;
  double step_s = 0, tokens_per_s = 0, gflops = 0, peak_fraction = 0;
  double forward_s = 0, backward_s = 0, optimizer_s = 0;  // medians of the parts
  int64_t trainable = 0;
};

struct DecodeResult {
  std::string mode;
  int64_t streams = 0;
  double tokens_per_s = 0, bound = 0;
};

model::ModelConfig BenchConfig(const FlagSet& f) {
  model::ModelConfig c;
  c.arch = model::Architecture::kLlama;
  c.num_layers = f.GetInt("layers");
  c.hidden_size = f.GetInt("hidden");
  c.num_heads = f.GetInt("heads");
  c.num_kv_heads = f.GetInt("kv-heads") > 0 ? f.GetInt("kv-heads") : c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = f.GetInt("intermediate");
  c.vocab_size = f.GetInt("vocab");
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = true;
  c.norm_eps = 1e-5;
  return c;
}

// Parameters of the linear layers that every token multiplies through.
int64_t MatmulParams(const model::ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  return c.num_layers * (h * q + 2 * h * kv + q * h + 3 * h * c.intermediate_size) +
         c.vocab_size * h;
}

TrainResult TrainStep(const model::ModelConfig& c, const std::map<std::string, at::Tensor>& weights,
                      at::ScalarType dtype, bool lora, const FlagSet& f, double peak) {
  TrainResult r;
  r.mode = absl::StrFormat("%s-%s", lora ? "lora" : "full", dtype == at::kFloat ? "fp32" : "bf16");
  // Full fine-tuning updates the weights in place: give it its own copy.
  std::map<std::string, at::Tensor> own;
  if (!lora) {
    for (const auto& [name, w] : weights)
      own[name] = w.to(dtype, /*non_blocking=*/false, /*copy=*/true);
  }
  auto lm = model::CausalLm::FromTensors(c, lora ? weights : own, {dtype, at::kCPU});
  if (!lm.ok()) {
    std::cerr << lm.status() << "\n";
    std::exit(1);
  }
  std::vector<at::Tensor> params;
  int adapter = model::kNoAdapter;
  if (lora) {
    model::LoraConfig lc;
    lc.r = f.GetInt("lora-r");
    lc.alpha = 2.0 * lc.r;
    lc.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                         "gate_proj", "up_proj", "down_proj"};
    adapter = *(*lm)->CreateAdapter("bench", lc, 1);
    params = *(*lm)->AdapterParameters("bench");
  } else {
    for (auto& [name, p] : (*lm)->NamedParameters()) params.push_back(p.requires_grad_(true));
  }
  for (const at::Tensor& p : params) r.trainable += p.numel();
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-4));
  const int64_t B = f.GetInt("batch"), T = f.GetInt("seq");
  model::DecoderInput in;
  in.input_ids = at::randint(c.vocab_size, {B, T}, at::kLong);
  in.training = true;
  if (lora) in.adapters.assign(B, adapter);
  at::Tensor labels = model::NextTokenLabels(in.input_ids, at::Tensor(), at::Tensor());
  std::vector<double> times, fwd_times, bwd_times, opt_times;
  const int64_t warmup = f.GetInt("warmup"), steps = f.GetInt("steps");
  for (int64_t s = 0; s < warmup + steps; ++s) {
    auto t0 = Clock::now();
    optimizer.zero_grad();
    at::Tensor logits = *(*lm)->Forward(in);
    at::Tensor loss = model::CausalLmLoss(logits, labels).loss;
    auto t1 = Clock::now();
    loss.backward();
    auto t2 = Clock::now();
    optimizer.step();
    auto t3 = Clock::now();
    if (s >= warmup) {
      times.push_back(Seconds(t0, t3));
      fwd_times.push_back(Seconds(t0, t1));
      bwd_times.push_back(Seconds(t1, t2));
      opt_times.push_back(Seconds(t2, t3));
    }
  }
  r.step_s = Median(times);
  r.forward_s = Median(fwd_times);
  r.backward_s = Median(bwd_times);
  r.optimizer_s = Median(opt_times);
  const double tokens = static_cast<double>(B * T);
  r.tokens_per_s = tokens / r.step_s;
  // Forward: 2 FLOPs per weight per token, plus QK^T and PV over the full
  // (T x T) square as computed. Backward: twice that for full fine-tuning;
  // with LoRA the frozen weights need input gradients only (one forward's
  // worth), plus 6 FLOPs per LoRA weight per token.
  const double fwd = 2.0 * tokens * MatmulParams(c);
  const double attn = 4.0 * B * T * T * c.num_heads * c.head_dim * c.num_layers;
  const double flops = lora ? 2 * fwd + 3 * attn + 6.0 * tokens * r.trainable : 3 * (fwd + attn);
  r.gflops = flops / r.step_s / 1e9;
  r.peak_fraction = r.gflops / peak;
  return r;
}

DecodeResult Decode(const model::CausalLm& lm, int64_t streams, int64_t new_tokens,
                    double copy_gbs) {
  DecodeResult r;
  r.mode = absl::StrFormat("decode-%s", lm.dtype() == at::kFloat ? "fp32" : "bf16");
  r.streams = streams;
  std::vector<model::GenerationRequest> requests(streams);
  for (int64_t s = 0; s < streams; ++s) {
    for (int64_t t = 0; t < 16; ++t)
      requests[s].prompt_ids.push_back((s * 31 + t * 7) % lm.config().vocab_size);
    requests[s].params.temperature = 0;
    requests[s].params.ignore_eos = true;
  }
  auto run = [&](int64_t n) {
    for (auto& q : requests) q.params.max_new_tokens = n;
    auto t0 = Clock::now();
    auto out = model::Generate(lm, nullptr, requests, {});
    if (!out.ok()) {
      std::cerr << out.status() << "\n";
      std::exit(1);
    }
    return Seconds(t0, Clock::now());
  };
  run(2);  // warm up
  std::vector<double> per_token;
  for (int i = 0; i < 3; ++i) per_token.push_back((run(new_tokens + 1) - run(1)) / new_tokens);
  r.tokens_per_s = streams / Median(per_token);
  const double weight_bytes =
      static_cast<double>(MatmulParams(lm.config())) * (lm.dtype() == at::kFloat ? 4 : 2);
  r.bound = streams * copy_gbs * 1e9 / weight_bytes;
  return r;
}

// y = x W^T for 1, 16, 64 and 512 rows of x with weights from memory, as in
// decoding one, 16 or 64 streams or a batched prefill: the product cycles
// through enough matrices (>= 512 MiB) that none is still in cache. Weight bytes per second and
// GFLOP/s of our kernels (gemv.h: the dot-product kernel on (out, in) weights
// and the serving kernel on packed ones) against LibTorch's at::linear.
void MatrixVector(double copy_gbs) {
  c10::InferenceMode guard;
  std::printf("\nsmall-batch linear, cold weights (weight bytes / time, best of 3 passes)\n");
  std::printf("%-6s %-14s %5s %10s %8s %9s %10s %10s %10s\n", "dtype", "W (out x in)", "rows",
              "ours GB/s", "of copy", "GFLOP/s", "packed", "at::linear", "GFLOP/s");
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (auto [out, in] : {std::pair<int64_t, int64_t>{2048, 768}, {32000, 768}}) {
      const int64_t bytes_each = out * in * (dtype == at::kFloat ? 4 : 2);
      const int64_t count = std::max<int64_t>(2, (512ll << 20) / bytes_each);
      std::vector<at::Tensor> ws;
      for (int64_t i = 0; i < count; ++i) ws.push_back(at::randn({out, in}).to(dtype));
      std::vector<model::PackedWeight> packed;
      if (model::CanPackWeight(ws[0])) {
        for (const at::Tensor& w : ws) packed.push_back(model::PackWeight(w));
      }
      for (int64_t rows : {1, 16, 64, 512}) {
        if (rows > model::SmallBatchLinearMaxRows(dtype)) continue;
        at::Tensor x = at::randn({rows, in}).to(dtype);
        double ours = 0, theirs = 0, serving = 0;
        for (int pass = 0; pass < 3; ++pass) {
          auto t0 = Clock::now();
          for (const at::Tensor& w : ws) model::SmallBatchLinear(x, w, at::Tensor());
          ours = std::max(ours, static_cast<double>(count) / Seconds(t0, Clock::now()));
          if (!packed.empty()) {
            t0 = Clock::now();
            for (const model::PackedWeight& w : packed) model::PackedLinear(x, w, at::Tensor());
            serving = std::max(serving, static_cast<double>(count) / Seconds(t0, Clock::now()));
          }
          t0 = Clock::now();
          for (const at::Tensor& w : ws) at::linear(x, w);
          theirs = std::max(theirs, static_cast<double>(count) / Seconds(t0, Clock::now()));
        }
        const double flop = 2.0 * static_cast<double>(rows * out * in);  // per product
        std::printf("%-6s %-14s %5lld %10.1f %7.0f%% %9.1f %10s %10.1f %10.1f\n",
                    dtype == at::kFloat ? "fp32" : "bf16",
                    absl::StrFormat("%d x %d", out, in).c_str(), static_cast<long long>(rows),
                    ours * bytes_each / 1e9, 100 * ours * bytes_each / 1e9 / copy_gbs,
                    ours * flop / 1e9,
                    packed.empty() ? "-" : absl::StrFormat("%.1f", serving * flop / 1e9).c_str(),
                    theirs * bytes_each / 1e9, theirs * flop / 1e9);
      }
    }
  }
}

// One decode step's attention for 16 rows of 12 heads x 64 over S cached
// positions (keys and values read in place): our kernel against LibTorch's
// matmul-softmax-matmul on the same slice.
void DecodeAttentionTable() {
  c10::InferenceMode guard;
  std::printf(
      "\ndecode attention, 16 rows x 12 heads x 64, cache of 64 rows x 1024 (us per call)\n");
  std::printf("%-6s %6s %10s %10s\n", "dtype", "S", "ours", "LibTorch");
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    at::Tensor keys = at::randn({64, 12, 1024, 64}).to(dtype);
    at::Tensor values = at::randn({64, 12, 1024, 64}).to(dtype);
    at::Tensor q = at::randn({16, 1, 12, 64}).to(dtype);
    if (!model::UseDecodeAttention(q, keys, values)) return;
    for (int64_t S : {128, 512}) {
      at::Tensor mask = at::zeros({16, S});
      const int reps = 200;
      auto t0 = Clock::now();
      for (int i = 0; i < reps; ++i) model::DecodeAttention(q, keys, values, S, mask, 0.125);
      const double ours = Seconds(t0, Clock::now()) / reps * 1e6;
      at::Tensor k = keys.narrow(0, 0, 16).narrow(2, 0, S),
                 v = values.narrow(0, 0, 16).narrow(2, 0, S);
      at::Tensor qh = q.view({16, 12, 1, 64}) * 0.125;
      t0 = Clock::now();
      for (int i = 0; i < reps; ++i) {
        at::Tensor scores =
            at::matmul(qh, k.transpose(-1, -2)).to(at::kFloat) + mask.view({16, 1, 1, S});
        at::matmul(at::softmax(scores, -1).to(dtype), v);
      }
      const double theirs = Seconds(t0, Clock::now()) / reps * 1e6;
      std::printf("%-6s %6lld %10.1f %10.1f\n", dtype == at::kFloat ? "fp32" : "bf16",
                  static_cast<long long>(S), ours, theirs);
    }
  }
}

// Runs the PyTorch eager reference and collects its JSON lines by mode.
std::map<std::string, double> RunReference(const std::string& script, const FlagSet& f,
                                           int threads) {
  std::map<std::string, double> out;
  std::ostringstream cmd;
  cmd << "/usr/bin/python3 " << script << " --json --layers " << f.GetInt("layers") << " --hidden "
      << f.GetInt("hidden") << " --heads " << f.GetInt("heads") << " --kv-heads "
      << (f.GetInt("kv-heads") > 0 ? f.GetInt("kv-heads") : f.GetInt("heads")) << " --intermediate "
      << f.GetInt("intermediate") << " --vocab " << f.GetInt("vocab") << " --seq "
      << f.GetInt("seq") << " --batch " << f.GetInt("batch") << " --steps " << f.GetInt("steps")
      << " --warmup " << f.GetInt("warmup") << " --threads " << threads << " --lora-r "
      << f.GetInt("lora-r") << " --decode-tokens " << f.GetInt("decode-tokens") << " --modes '"
      << f.GetString("modes") << "' --decode-streams " << f.GetString("streams")
      << " --tie-embeddings --rms-eps 1e-5";
  FILE* pipe = popen(cmd.str().c_str(), "r");
  if (pipe == nullptr) return out;
  char line[4096];
  while (fgets(line, sizeof(line), pipe) != nullptr) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("mode") || !j.contains("tokens_per_s")) continue;
    std::string key = j["mode"].get<std::string>();
    if (j.contains("streams")) key += absl::StrFormat("/%d", j["streams"].get<int>());
    out[key] = j["tokens_per_s"].get<double>();
  }
  if (pclose(pipe) != 0) std::cerr << "warning: the PyTorch reference exited with an error\n";
  return out;
}

std::string Ref(const std::map<std::string, double>& ref, const std::string& key) {
  auto it = ref.find(key);
  return it == ref.end() ? "-" : absl::StrFormat("%.0f", it->second);
}

}  // namespace

int main(int argc, char** argv) {
  FlagSet f("model_bench [flags]", "Training-step and decode throughput of the model code.");
  f.AddInt("layers", 12, "Layers.");
  f.AddInt("hidden", 768, "Hidden size.");
  f.AddInt("heads", 12, "Attention heads.");
  f.AddInt("kv-heads", 0, "Key/value heads (0 = heads).");
  f.AddInt("intermediate", 2048, "MLP width.");
  f.AddInt("vocab", 32000, "Vocabulary.");
  f.AddInt("seq", 512, "Training sequence length.");
  f.AddInt("batch", 4, "Training batch.");
  f.AddInt("steps", 3, "Timed training steps (median reported).");
  f.AddInt("warmup", 1, "Untimed training steps first.");
  f.AddInt("lora-r", 16, "LoRA rank.");
  f.AddInt("decode-tokens", 64, "Tokens per decode measurement.");
  f.AddString("streams", "1,8", "Decode stream counts.");
  f.AddString("modes", "full-fp32,full-bf16,lora-fp32,lora-bf16", "Training modes.");
  f.AddInt("threads", 0, "Threads (0 = every core).");
  f.AddString("reference", "", "Path of model_bench_ref.py to run the PyTorch eager reference.");
  absl::Status s = f.Parse(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok() || f.help_requested()) {
    std::cerr << (s.ok() ? "" : std::string(s.message()) + "\n") << f.Help();
    return s.ok() ? 0 : 2;
  }
  const int threads = model::SetTorchThreads(static_cast<int>(f.GetInt("threads")));
  const model::ModelConfig config = BenchConfig(f);

  std::printf(
      "model bench: llama-shaped, %lld layers, hidden %lld, heads %lld/%lld, "
      "intermediate %lld, vocab %lld, %.1fM parameters, %d threads\n",
      (long long)config.num_layers, (long long)config.hidden_size, (long long)config.num_heads,
      (long long)config.num_kv_heads, (long long)config.intermediate_size,
      (long long)config.vocab_size, config.NumParameters() / 1e6, threads);
  const double peak_fp32 = MatmulPeak(at::kFloat, 2048),
               peak_bf16 = MatmulPeak(at::kBFloat16, 2048);
  const double copy_gbs = CopyBandwidth();
  std::printf(
      "machine: matmul peak fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (2048^3, best of 10); "
      "copy bandwidth %.1f GB/s (read + write, 256 MiB)\n\n",
      peak_fp32, peak_bf16, copy_gbs);

  std::map<std::string, double> ref;
  if (!f.GetString("reference").empty()) ref = RunReference(f.GetString("reference"), f, threads);

  const std::map<std::string, at::Tensor> weights = model::RandomWeights(config, 1);
  std::printf("training step (batch %lld x seq %lld, AdamW)\n", (long long)f.GetInt("batch"),
              (long long)f.GetInt("seq"));
  std::printf("%-10s %7s %16s %10s %9s %9s %12s %9s\n", "mode", "step s", "fwd/bwd/opt s",
              "tokens/s", "GFLOP/s", "of peak", "eager tok/s", "vs eager");
  for (absl::string_view mode : absl::StrSplit(f.GetString("modes"), ',', absl::SkipEmpty())) {
    const bool lora = absl::StartsWith(mode, "lora");
    const at::ScalarType dtype = absl::EndsWith(mode, "bf16") ? at::kBFloat16 : at::kFloat;
    TrainResult r =
        TrainStep(config, weights, dtype, lora, f, dtype == at::kFloat ? peak_fp32 : peak_bf16);
    auto it = ref.find(r.mode);
    std::printf(
        "%-10s %7.2f %16s %10.0f %9.0f %8.0f%% %12s %9s\n", r.mode.c_str(), r.step_s,
        absl::StrFormat("%.2f/%.2f/%.2f", r.forward_s, r.backward_s, r.optimizer_s).c_str(),
        r.tokens_per_s, r.gflops, 100 * r.peak_fraction, Ref(ref, r.mode).c_str(),
        it == ref.end() ? "-" : absl::StrFormat("%.2fx", r.tokens_per_s / it->second).c_str());
    std::fflush(stdout);
  }

  MatrixVector(copy_gbs);
  DecodeAttentionTable();
  std::printf("\ndecode (greedy, KV cache, prompt 16, %lld new tokens)\n",
              (long long)f.GetInt("decode-tokens"));
  std::printf("%-12s %8s %10s %14s %9s %12s\n", "mode", "streams", "tokens/s", "bound tokens/s",
              "of bound", "eager tok/s");
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    model::LoadOptions serving{dtype, at::kCPU};
    serving.serving = true;  // packed weights, as the inference engine loads them
    auto lm = model::CausalLm::FromTensors(config, weights, serving);
    if (!lm.ok()) return 1;
    for (absl::string_view streams :
         absl::StrSplit(f.GetString("streams"), ',', absl::SkipEmpty())) {
      int64_t n = std::stoll(std::string(streams));
      DecodeResult r = Decode(**lm, n, f.GetInt("decode-tokens"), copy_gbs);
      std::printf("%-12s %8lld %10.1f %14.1f %8.0f%% %12s\n", r.mode.c_str(), (long long)n,
                  r.tokens_per_s, r.bound, 100 * r.tokens_per_s / r.bound,
                  Ref(ref, absl::StrFormat("%s/%d", r.mode, n)).c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
