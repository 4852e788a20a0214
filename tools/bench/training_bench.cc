// Training benchmark: what the job path costs over the bare training loop.
//
// One Llama-shaped checkpoint (written by model::InitCheckpoint, byte-level
// tokenizer) trains with LoRA twice in this process on the same shapes:
//   bare: the model-core benchmark's loop (forward, loss, backward, AdamW) on
//         random tokens;
//   job:  a JobManager job over a dataset of examples exactly --seq tokens
//         long (batch --batch, no packing), with events, SQLite updates and
//         the final checkpoint, timed from the job's step events.
// Each path runs in its own process (bare, job, bare); the table gives the
// median step time of each and the job path's overhead against the mean of
// the two bare runs.
#include <torch/optim/adamw.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_manager.h"
#include "services/training/job_manager.h"
#include "shared/core/file_util.h"
#include "shared/core/flags.h"
#include "shared/model/decoder.h"
#include "shared/model/init.h"
#include "shared/model/loss.h"
#include "shared/model/runtime.h"
#include "tools/bench/bench_util.h"

namespace {

using namespace switchyard;
using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s << "\n";
    std::exit(1);
  }
}

model::LoraConfig Lora(int64_t r) {
  model::LoraConfig c;
  c.r = r;
  c.alpha = 2.0 * r;
  c.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return c;
}

// Median seconds per step of the bare loop.
double Bare(const std::string& dir, const FlagSet& f, at::ScalarType dtype) {
  auto lm = model::CausalLm::Load(dir, {dtype, at::kCPU});
  Check(lm.status(), "loading the model");
  const int adapter = *(*lm)->CreateAdapter("bench", Lora(f.GetInt("lora-r")), 1);
  std::vector<at::Tensor> params = *(*lm)->AdapterParameters("bench");
  for (at::Tensor& p : params) p.requires_grad_(true);
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(1e-4));
  const int64_t B = f.GetInt("batch"), T = f.GetInt("seq");
  model::DecoderInput in;
  in.input_ids = at::randint((*lm)->config().vocab_size, {B, T}, at::kLong);
  in.training = true;
  in.adapters.assign(B, adapter);
  at::Tensor labels = model::NextTokenLabels(in.input_ids, at::Tensor(), at::Tensor());
  std::vector<double> times;
  for (int64_t s = 0; s < f.GetInt("steps") + f.GetInt("warmup"); ++s) {
    auto t0 = Clock::now();
    optimizer.zero_grad();
    at::Tensor loss = model::CausalLmLoss(*(*lm)->Forward(in), labels).loss;
    loss.backward();
    optimizer.step();
    if (s >= f.GetInt("warmup"))
      times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return Median(times);
}

struct JobTiming {
  double step_s = 0;     // median wall time between step events
  double trainer_s = 0;  // median of the trainer's own step timing
  double total_s = 0;    // creation to SUCCEEDED
};

JobTiming Job(const std::string& data_dir, const FlagSet& f) {
  const int64_t B = f.GetInt("batch"), T = f.GetInt("seq");
  const int64_t warmup = f.GetInt("warmup"), steps = f.GetInt("steps") + warmup;
  // Completion examples of exactly T tokens: "Q: " + (T - 4) bytes + EOS.
  std::string jsonl;
  for (int64_t i = 0; i < B * steps; ++i) {
    std::string answer(T - 4, 'a' + i % 26);
    jsonl += absl::StrCat(R"({"prompt":"Q: ","completion":")", answer, "\"}\n");
  }
  {
    auto catalog = dataset::SqliteDatasetCatalog::Open(data_dir + "/switchyard.db");
    Check(catalog.status(), "catalog");
    dataset::ManagerOptions o;
    o.data_dir = data_dir;
    o.validator.min_examples = 1;
    auto datasets = dataset::DatasetManager::Open(o, std::move(*catalog));
    Check(datasets.status(), "datasets");
    dataset::UploadRequest request;
    request.dataset_id = "bench";
    auto session = (*datasets)->StartUpload(request);
    Check(session.status(), "upload");
    Check((*session)->Write(dataset::Split::kTrain, jsonl), "upload");
    auto committed = (*session)->Commit();
    Check(committed.status(), "commit");
    if (!committed->version) {
      std::cerr << "the bench dataset did not validate\n";
      std::exit(1);
    }
  }
  auto registry = training::ModelRegistry::Open(data_dir, data_dir + "/switchyard.db");
  Check(registry.status(), "registry");
  auto catalog = dataset::SqliteDatasetCatalog::Open(data_dir + "/switchyard.db");
  auto store = training::SqliteJobStore::Open(data_dir + "/switchyard.db");
  Check(store.status(), "store");
  training::JobManagerOptions o;
  o.data_dir = data_dir;
  o.cpu_threads = static_cast<int>(f.GetInt("threads"));
  auto jobs = training::JobManager::Open(o, std::move(*store), registry->get(), catalog->get());
  Check(jobs.status(), "jobs");
  Check((*jobs)->Start(), "start");
  training::JobSpec spec;
  spec.base_model = "bench";
  spec.training_dataset = "bench@1";
  spec.device = "cpu";
  spec.seed = 1;
  spec.adapter.kind = training::AdapterKind::kLora;
  spec.adapter.lora.r = static_cast<int>(f.GetInt("lora-r"));
  spec.adapter.lora.alpha = 2.0 * f.GetInt("lora-r");
  spec.adapter.lora.dropout = 0;
  spec.hyperparameters.epochs = 1;
  spec.hyperparameters.batch_size = static_cast<int>(B);
  spec.hyperparameters.gradient_accumulation_steps = 1;
  spec.hyperparameters.learning_rate = 1e-4;
  spec.hyperparameters.max_seq_length = static_cast<int>(T);
  spec.hyperparameters.precision =
      f.GetString("dtype") == "bfloat16" ? training::Precision::kBf16 : training::Precision::kFp32;
  spec.checkpoints.interval_steps = 0;
  const auto t0 = Clock::now();
  auto job = (*jobs)->CreateJob(spec, {});
  Check(job.status(), "create");
  std::vector<int64_t> step_times;
  std::vector<double> trainer;
  int64_t seen = 0;
  training::JobState state = training::JobState::kQueued;
  while (!training::IsTerminal(state)) {
    auto events = (*jobs)->WaitEvents(job->job_id, seen, 100, absl::Seconds(1));
    Check(events.status(), "events");
    for (const training::JobEvent& e : *events) {
      seen = e.sequence;
      if (e.state_change) state = e.state_change->to;
      if (e.train) {
        step_times.push_back(e.time_ms);
        trainer.push_back(static_cast<double>(B * T) / e.train->tokens_per_second);
      }
      if (e.state_change && e.state_change->to == training::JobState::kFailed) {
        std::cerr << "the bench job failed: " << e.message << "\n";
        std::exit(1);
      }
    }
  }
  JobTiming t;
  t.total_s = std::chrono::duration<double>(Clock::now() - t0).count();
  // Warm-up steps are skipped as in the bare loop; a step's wall time is the
  // gap between its event and the one before.
  std::vector<double> gaps;
  for (size_t i = std::max<int64_t>(1, warmup); i < step_times.size(); ++i) {
    gaps.push_back((step_times[i] - step_times[i - 1]) / 1e3);
  }
  t.step_s = Median(gaps);
  trainer.erase(trainer.begin(), trainer.begin() + std::min<int64_t>(warmup, trainer.size()));
  t.trainer_s = Median(trainer);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  FlagSet f("training_bench [flags]",
            "Tokens/s of a LoRA job through the JobManager beside the bare training loop.");
  f.AddInt("layers", 4, "Layers.");
  f.AddInt("hidden", 512, "Hidden size.");
  f.AddInt("heads", 8, "Attention heads.");
  f.AddInt("seq", 512, "Sequence length (every example has exactly this many tokens).");
  f.AddInt("batch", 4, "Rows per optimizer step.");
  f.AddInt("steps", 12, "Timed steps.");
  f.AddInt("warmup", 2, "Untimed steps first (allocator and thread pools warm up).");
  f.AddInt("lora-r", 16, "LoRA rank.");
  f.AddString("dtype", "float32", "float32 or bfloat16.");
  f.AddInt("threads", 0, "Threads (0 = every core).");
  f.AddString("path", "compare", "compare (both, each in a fresh process), bare or job.");
  absl::Status s = f.Parse(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok() || f.help_requested()) {
    std::cerr << (s.ok() ? "" : std::string(s.message()) + "\n") << f.Help();
    return s.ok() ? 0 : 2;
  }
  const int threads = model::SetTorchThreads(static_cast<int>(f.GetInt("threads")));
  const std::string dir = absl::StrCat("/tmp/training_bench_", RandomHex(4));
  const at::ScalarType dtype = f.GetString("dtype") == "bfloat16" ? at::kBFloat16 : at::kFloat;
  const double tokens = static_cast<double>(f.GetInt("batch") * f.GetInt("seq"));
  const std::string path = f.GetString("path");
  if (path == "bare" || path == "job") {
    model::InitOptions init;
    init.layers = f.GetInt("layers");
    init.hidden = f.GetInt("hidden");
    init.heads = f.GetInt("heads");
    init.max_positions = std::max<int64_t>(2048, f.GetInt("seq"));
    init.seed = 1;
    Check(model::InitCheckpoint(init, dir + "/models/bench"), "init");
  } else {
    std::printf(
        "training bench: llama-shaped, %lld layers, hidden %lld, vocab 259, LoRA r %lld, %s, "
        "batch %lld x seq %lld, %d threads\n\n",
        (long long)f.GetInt("layers"), (long long)f.GetInt("hidden"), (long long)f.GetInt("lora-r"),
        f.GetString("dtype").c_str(), (long long)f.GetInt("batch"), (long long)f.GetInt("seq"),
        threads);
  }
  if (path == "bare") {
    std::printf("result %.6f 0 0\n", Bare(dir + "/models/bench", f, dtype));
  } else if (path == "job") {
    const JobTiming job = Job(dir, f);
    std::printf("result %.6f %.6f %.6f\n", job.step_s, job.trainer_s, job.total_s);
  } else {
    // Each path in a fresh process (the bare loop before and after the job),
    // so neither inherits the other's allocator cache or thread pools; the
    // job is compared with the mean of the two bare runs.
    auto run = [&](const char* which) {
      std::vector<double> v(3, 0);
      const std::string cmd =
          bench::SelfCommand(argc, argv, absl::StrCat("--path=", which, " 2>/dev/null"));
      FILE* p = popen(cmd.c_str(), "r");
      char line[256];
      while (p != nullptr && std::fgets(line, sizeof(line), p) != nullptr) {
        std::sscanf(line, "result %lf %lf %lf", &v[0], &v[1], &v[2]);
      }
      if (p == nullptr || pclose(p) != 0 || v[0] <= 0) {
        std::cerr << "the " << which << " run failed\n";
        std::exit(1);
      }
      return v;
    };
    const double bare_before = run("bare")[0];
    const std::vector<double> job = run("job");
    const double bare_after = run("bare")[0];
    const double bare = (bare_before + bare_after) / 2;
    std::printf("%-36s %8s %10s %9s\n", "path", "step s", "tokens/s", "vs bare");
    std::printf("%-36s %8.3f %10.0f %9s\n", "bare loop, before the job", bare_before,
                tokens / bare_before, "-");
    std::printf("%-36s %8.3f %10.0f %9s\n", "bare loop, after the job", bare_after,
                tokens / bare_after, "-");
    std::printf("%-36s %8.3f %10.0f %+8.1f%%\n", "job: trainer's own step timing", job[1],
                tokens / job[1], 100.0 * (job[1] / bare - 1));
    std::printf("%-36s %8.3f %10.0f %+8.1f%%\n", "job: wall time between step events", job[0],
                tokens / job[0], 100.0 * (job[0] / bare - 1));
    std::printf(
        "\njob total %.1f s for %lld steps (validation, model load, final checkpoint, "
        "registration included)\n",
        job[2], (long long)(f.GetInt("steps") + f.GetInt("warmup")));
  }
  (void)RemoveAll(dir);
  return 0;
}
