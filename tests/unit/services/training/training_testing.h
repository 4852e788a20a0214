// Helpers for the training tests: a tiny chat model made by InitCheckpoint
// (ChatML template, byte-level tokenizer), small chat and preference
// datasets, a resolved job spec with test-sized settings, and a listener
// that records a run.
#ifndef SWITCHYARD_TESTS_UNIT_SERVICES_TRAINING_TRAINING_TESTING_H_
#define SWITCHYARD_TESTS_UNIT_SERVICES_TRAINING_TRAINING_TESTING_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/training/job_types.h"
#include "services/training/trainer.h"
#include "shared/core/file_util.h"
#include "shared/model/generate.h"
#include "shared/model/init.h"
#include "shared/model/runtime.h"
#include "shared/text/model_text.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::training::testing {

// A 2-layer Llama-shaped model (hidden 64) with the built-in ChatML
// tokenizer. Weights are drawn with std 0.1 rather than 0.02: a frozen LM head
// of 0.02-scale rows caps the logits a LoRA adapter can reach near ln(vocab).
inline void MakeTinyModel(const std::string& dir, uint64_t seed = 1,
                          model::Architecture arch = model::Architecture::kLlama) {
  model::InitOptions o;
  o.arch = arch;
  o.init_std = 0.1;
  o.layers = 2;
  o.hidden = 64;
  o.heads = 4;
  o.max_positions = 256;
  o.seed = seed;
  absl::Status s = model::InitCheckpoint(o, dir);
  ASSERT_TRUE(s.ok()) << s;
}

// `n` chat examples with a learnable answer: "Echo: <word>" -> "<word> <word>".
inline std::string ChatJsonl(int n, int offset = 0) {
  static const char* kWords[] = {"apple", "river", "stone", "cloud", "maple", "tiger",
                                 "ocean", "piano", "lemon", "amber", "delta", "flint"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    const std::string w = kWords[(i + offset) % 12];
    out += absl::StrCat(R"({"messages":[{"role":"system","content":"Repeat twice."},)",
                        R"({"role":"user","content":"Echo: )", w, R"("},)",
                        R"({"role":"assistant","content":")", w, " ", w, R"("}]})", "\n");
  }
  return out;
}

// `n` preference pairs in TRL's conversational layout: "Echo: <word>" prefers
// "<word> <word>" over "no".
inline std::string PreferenceJsonl(int n, int offset = 0) {
  static const char* kWords[] = {"apple", "river", "stone", "cloud", "maple", "tiger",
                                 "ocean", "piano", "lemon", "amber", "delta", "flint"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    const std::string w = kWords[(i + offset) % 12];
    out += absl::StrCat(R"({"prompt":[{"role":"system","content":"Repeat twice."},)",
                        R"({"role":"user","content":"Echo: )", w, R"("}],)",
                        R"("chosen":[{"role":"assistant","content":")", w, " ", w, R"("}],)",
                        R"("rejected":[{"role":"assistant","content":"no"}]})", "\n");
  }
  return out;
}

// A resolved spec: LoRA r 4, fp32 on CPU, small batches, every auto value set.
inline JobSpec TestSpec() {
  JobSpec s;
  s.base_model = "tiny";
  s.training_dataset = "echo@1";
  s.adapter.kind = AdapterKind::kLora;
  s.adapter.lora.r = 4;
  s.adapter.lora.alpha = 8;
  s.adapter.lora.dropout = 0.1;
  s.adapter.lora.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                   "gate_proj", "up_proj", "down_proj"};
  Hyperparameters& h = s.hyperparameters;
  h.epochs = 2;
  h.batch_size = 4;
  h.gradient_accumulation_steps = 1;
  h.learning_rate = 1e-2;
  h.lr_scheduler = LrScheduler::kLinear;
  h.warmup_ratio = 0;
  h.warmup_steps = 0;
  h.weight_decay = 0;
  h.max_grad_norm = 1.0;
  h.max_seq_length = 128;
  h.packing = false;
  h.loss_on = LossOn::kAssistant;
  h.eval_interval_steps = 0;
  h.log_interval_steps = 1;
  h.precision = Precision::kFp32;
  s.checkpoints.interval_steps = 0;
  s.checkpoints.keep_last = 3;
  s.checkpoints.keep_best = false;
  s.checkpoints.early_stopping_patience = 0;
  s.checkpoints.early_stopping_min_delta = 0;
  s.seed = 7;
  s.device = "cpu";
  return s;
}

// QLoRA as jobs run it by default: an NF4 base and gradient checkpointing.
// Returns the matching load options.
inline model::LoadOptions UseQlora(JobSpec* spec) {
  spec->adapter.lora.quantize_base = QuantizeBase::kNf4;
  spec->hyperparameters.gradient_checkpointing = true;
  model::LoadOptions load{at::kFloat, at::kCPU};
  load.quantize_base = model::BaseQuantization::kNf4;
  return load;
}

// A temporary directory holding the tiny model (dir_/tiny) with its text side
// loaded, and LibTorch on one thread.
class TinyModelTest : public switchyard::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    model::SetTorchThreads(1);
    model_dir_ = dir_ + "/tiny";
    MakeTinyModel(model_dir_);
    auto text = text::LoadModelText(model_dir_);
    ASSERT_TRUE(text.ok()) << text.status();
    text_ = std::make_shared<text::ModelText>(std::move(*text));
  }
  const text::ModelText& text() const { return *text_; }

  // A trainer setup over the tiny model loaded with `load`, writing
  // checkpoints to `checkpoints`; the caller adds the data.
  TrainerSetup BaseSetup(const JobSpec& spec, const std::string& checkpoints,
                         model::LoadOptions load = {}) {
    TrainerSetup s;
    s.spec = spec;
    auto lm = model::CausalLm::Load(model_dir_, load);
    EXPECT_TRUE(lm.ok()) << lm.status();
    if (lm.ok()) s.model = std::move(*lm);
    s.text = text_;
    auto config = model::LoadModelConfig(model_dir_);
    auto defaults = model::LoadGenerationDefaults(model_dir_, *config);
    EXPECT_TRUE(defaults.ok()) << defaults.status();
    if (defaults.ok()) s.eos_token_ids = defaults->eos_token_ids;
    s.checkpoints_dir = checkpoints;
    s.base_dir = model_dir_;
    s.base_model_id = "tiny";
    return s;
  }

  std::string model_dir_;
  std::shared_ptr<text::ModelText> text_;
};

// Records every trainer event and can ask for a stop (`stop`) once
// `stop_after` steps have been logged.
class Recorder : public TrainerListener {
 public:
  void OnTrain(const TrainMetrics& m) override { train.push_back(m); }
  void OnEval(const EvalMetrics& m) override { eval.push_back(m); }
  void OnCheckpoint(const CheckpointInfo& c) override { checkpoints.push_back(c); }
  StopRequest PollStop() override {
    return static_cast<int64_t>(train.size()) >= stop_after ? stop : StopRequest::kNone;
  }
  std::vector<TrainMetrics> train;
  std::vector<EvalMetrics> eval;
  std::vector<CheckpointInfo> checkpoints;
  int64_t stop_after = 1 << 30;
  StopRequest stop = StopRequest::kCancel;
};

}  // namespace switchyard::training::testing

#endif  // SWITCHYARD_TESTS_UNIT_SERVICES_TRAINING_TRAINING_TESTING_H_
