#include "services/training/trainer.h"

#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <filesystem>

#include "services/training/batching.h"
#include "services/training/optimizer.h"
#include "services/training/sft_data.h"
#include "shared/model/loss.h"
#include "shared/model/runtime.h"
#include "shared/tensors/safetensors.h"
#include "shared/tensors/torch_tensors.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/services/training/training_testing.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;
using testing::ChatJsonl;
using testing::Recorder;
using testing::TestSpec;

at::Tensor AdapterTensor(const std::string& dir, const std::string& name) {
  auto file = tensors::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  const tensors::TensorInfo* info = (*file)->header().Find(name);
  EXPECT_NE(info, nullptr) << name;
  return tensors::LoadTensor(*file, *info)->clone();
}

class TrainerTest : public testing::TinyModelTest {
 protected:
  std::vector<SftExample> Examples(int n, int offset = 0, LossOn loss_on = LossOn::kAssistant) {
    const std::string path = dir_ + "/data-" + std::to_string(offset) + ".jsonl";
    EXPECT_TRUE(WriteFileAtomic(path, ChatJsonl(n, offset)).ok());
    SftTokenizeOptions o;
    o.loss_on = loss_on;
    auto data = TokenizeSftFile(path, text(), o);
    EXPECT_TRUE(data.ok()) << data.status();
    EXPECT_TRUE(data->errors.empty());
    return data->examples;
  }

  TrainerSetup Setup(const JobSpec& spec, const std::string& checkpoints,
                     at::ScalarType dtype = at::kFloat,
                     model::BaseQuantization quantize = model::BaseQuantization::kNone) {
    model::LoadOptions load{dtype, at::kCPU};
    load.quantize_base = quantize;
    TrainerSetup s = BaseSetup(spec, checkpoints, load);
    s.train = Examples(16);
    s.validation = Examples(4, 5);
    return s;
  }

  // Trains `a` and `b` on the same data: the losses agree within 1e-5 at
  // every step and the final adapters' tensors `names` within `tolerance`.
  void ExpectSameRun(const JobSpec& a, const JobSpec& b, const std::vector<const char*>& names,
                     double tolerance) {
    Recorder ra, rb;
    auto ta = Trainer::Create(Setup(a, dir_ + "/a"));
    auto tb = Trainer::Create(Setup(b, dir_ + "/b"));
    ASSERT_TRUE(ta.ok() && tb.ok());
    ASSERT_TRUE((*ta)->Run(&ra).ok());
    ASSERT_TRUE((*tb)->Run(&rb).ok());
    ASSERT_EQ(ra.train.size(), rb.train.size());
    for (size_t i = 0; i < ra.train.size(); ++i) {
      EXPECT_NEAR(ra.train[i].loss, rb.train[i].loss, 1e-5) << "step " << i + 1;
    }
    for (const char* name : names) {
      at::Tensor x = AdapterTensor(dir_ + "/a/final", name);
      at::Tensor y = AdapterTensor(dir_ + "/b/final", name);
      EXPECT_LT((x - y).abs().max().item<double>(), tolerance) << name;
    }
  }
};

const char kQProjB[] = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
const char kDownA[] = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight";

TEST_F(TrainerTest, LoraTrainingLowersTrainAndValidationLoss) {
  JobSpec spec = TestSpec();
  spec.hyperparameters.epochs = 6;
  spec.hyperparameters.learning_rate = 2e-2;
  auto trainer = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ((*trainer)->total_steps(), 24);  // 16 examples / batch 4 x 6 epochs
  Recorder rec;
  auto result = (*trainer)->Run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome, TrainerResult::Outcome::kCompleted);
  ASSERT_EQ(rec.train.size(), 24u);
  EXPECT_LT(rec.train.back().loss, 0.6 * rec.train.front().loss);
  ASSERT_GE(rec.eval.size(), 2u);
  EXPECT_EQ(rec.eval.front().step, 0);  // the baseline before training
  EXPECT_LT(rec.eval.back().validation_loss, rec.eval.front().validation_loss);
  EXPECT_GT(rec.train.back().mean_token_accuracy, rec.train.front().mean_token_accuracy);
  EXPECT_GT(rec.train.back().tokens_per_second, 0);
  EXPECT_GT(rec.train.back().peak_memory_bytes, 0);
  EXPECT_EQ(rec.train.back().tokens, result->tokens);
  ASSERT_TRUE(result->result_checkpoint);
  EXPECT_EQ(result->result_checkpoint->checkpoint_id, "final");
  // The result is a PEFT adapter that loads.
  auto adapter = model::LoadPeftAdapter(result->result_checkpoint->path, at::kFloat, at::kCPU);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_EQ(adapter->config.r, 4);
  EXPECT_EQ(adapter->config.base_model_name_or_path, "tiny");
}

TEST_F(TrainerTest, QloraFollowsTheLoraLossCurveAndItsAdapterLoadsOnTheFullBase) {
  JobSpec spec = TestSpec();
  spec.hyperparameters.epochs = 6;
  spec.hyperparameters.learning_rate = 2e-2;
  spec.adapter.lora.dropout = 0;
  Recorder lora, qlora;
  auto a = Trainer::Create(Setup(spec, dir_ + "/lora"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Run(&lora).ok());
  spec.adapter.lora.quantize_base = QuantizeBase::kNf4;
  auto b = Trainer::Create(Setup(spec, dir_ + "/qlora", at::kFloat, model::BaseQuantization::kNf4));
  ASSERT_TRUE(b.ok()) << b.status();
  auto result = (*b)->Run(&qlora);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(lora.train.size(), qlora.train.size());
  // The same data and seed: the 4-bit base moves the curve a little, never far.
  for (size_t i = 0; i < lora.train.size(); ++i) {
    EXPECT_NEAR(qlora.train[i].loss, lora.train[i].loss, 0.15 * lora.train[i].loss)
        << "step " << i + 1;
  }
  EXPECT_LT(qlora.train.back().loss, 0.6 * qlora.train.front().loss);
  // PEFT convention: the adapter loads on the unquantised base and keeps what
  // it learned there (validation loss near the quantised run's).
  ASSERT_TRUE(result->result_checkpoint);
  auto adapter = model::LoadPeftAdapter(result->result_checkpoint->path, at::kFloat, at::kCPU);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  TrainerSetup full = Setup(TestSpec(), dir_ + "/eval");
  full.start_adapter = *adapter;
  auto c = Trainer::Create(std::move(full));
  ASSERT_TRUE(c.ok());
  auto on_full_base = (*c)->Evaluate();
  ASSERT_TRUE(on_full_base.ok());
  const double quantised = qlora.eval.back().validation_loss;
  EXPECT_NEAR(on_full_base->validation_loss, quantised, 0.1 * quantised);
  EXPECT_LT(on_full_base->validation_loss, 0.8 * qlora.eval.front().validation_loss);
}

TEST_F(TrainerTest, Bf16TrainingKeepsFp32MastersAndLowersLoss) {
  JobSpec spec = TestSpec();
  spec.hyperparameters.epochs = 6;
  spec.hyperparameters.learning_rate = 2e-2;
  spec.hyperparameters.precision = Precision::kBf16;
  auto trainer = Trainer::Create(Setup(spec, dir_ + "/ck", at::kBFloat16));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Recorder rec;
  auto result = (*trainer)->Run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_LT(rec.train.back().loss, 0.7 * rec.train.front().loss);
  // The adapter is stored in the model's dtype, as PEFT saves it; the
  // optimizer state keeps fp32 masters.
  EXPECT_EQ(AdapterTensor(dir_ + "/ck/final", kQProjB).scalar_type(), at::kBFloat16);
  auto state = tensors::SafetensorsFile::Open(dir_ + "/ck/final/optimizer.safetensors");
  ASSERT_TRUE(state.ok());
  const tensors::TensorInfo* master = (*state)->header().Find("lora.0.master");
  ASSERT_NE(master, nullptr);
  EXPECT_EQ(master->dtype, tensors::DType::kF32);
}

TEST_F(TrainerTest, ResumeAfterInterruptionEndsWithTheSameAdapter) {
  JobSpec spec = TestSpec();
  spec.checkpoints.interval_steps = 5;
  Recorder full;
  auto a = Trainer::Create(Setup(spec, dir_ + "/a"));
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->Run(&full).ok());

  // Stopped before step 7 without a checkpoint there (the newest is step 5;
  // epoch-1 is step 4): the resumed run redoes step 6 from the step-5 state.
  Recorder first;
  first.stop_after = 6;
  first.stop = StopRequest::kCancel;
  auto b = Trainer::Create(Setup(spec, dir_ + "/b"));
  ASSERT_TRUE(b.ok());
  auto cancelled = (*b)->Run(&first);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->outcome, TrainerResult::Outcome::kCancelled);
  EXPECT_EQ(cancelled->step, 6);

  Recorder second;
  auto c = Trainer::Create(Setup(spec, dir_ + "/b"));
  ASSERT_TRUE(c.ok());
  auto point = (*c)->ResumePoint();
  ASSERT_TRUE(point.ok() && point->has_value());
  EXPECT_EQ((*point)->checkpoint_id, "step-5");
  auto resumed = (*c)->Run(&second);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->outcome, TrainerResult::Outcome::kCompleted);
  ASSERT_EQ(second.train.front().step, 6);
  for (const char* name : {kQProjB, kDownA}) {
    at::Tensor x = AdapterTensor(dir_ + "/a/final", name),
               y = AdapterTensor(dir_ + "/b/final", name);
    EXPECT_TRUE(at::equal(x, y)) << name << " differs by " << (x - y).abs().max().item<double>();
  }
  // Per-step losses after the resume match the uninterrupted run's.
  for (const TrainMetrics& m : second.train) {
    EXPECT_DOUBLE_EQ(m.loss, full.train[m.step - 1].loss) << "step " << m.step;
  }
}

TEST_F(TrainerTest, PauseSavesACheckpointAndRunContinuesFromIt) {
  JobSpec spec = TestSpec();
  Recorder first;
  first.stop_after = 2;
  first.stop = StopRequest::kPause;
  auto a = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(a.ok());
  auto paused = (*a)->Run(&first);
  ASSERT_TRUE(paused.ok()) << paused.status();
  EXPECT_EQ(paused->outcome, TrainerResult::Outcome::kPaused);
  ASSERT_TRUE(paused->result_checkpoint);
  EXPECT_EQ(paused->result_checkpoint->kind, CheckpointKind::kPause);
  EXPECT_EQ(paused->result_checkpoint->step, 2);
  Recorder second;
  auto b = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(b.ok());
  auto done = (*b)->Run(&second);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->outcome, TrainerResult::Outcome::kCompleted);
  EXPECT_EQ(second.train.front().step, 3);
}

TEST_F(TrainerTest, CheckpointsKeepTheLastKPlusFinalAndBest) {
  JobSpec spec = TestSpec();
  spec.hyperparameters.epochs = 3;
  spec.hyperparameters.eval_interval_steps = 2;
  spec.checkpoints.interval_steps = 1;
  spec.checkpoints.keep_last = 2;
  spec.checkpoints.keep_best = true;
  auto t = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(t.ok());
  Recorder rec;
  auto result = (*t)->Run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  std::set<std::string> kept;
  for (const auto& e : fs::directory_iterator(dir_ + "/ck")) kept.insert(e.path().filename());
  // step 12 is the last step: "final"; 10 and 11 are the newest two others
  // (epoch-2 is step 8); plus the best unless it is among them.
  EXPECT_TRUE(kept.count("final"));
  EXPECT_TRUE(kept.count("step-11"));
  EXPECT_TRUE(kept.count("step-10"));
  EXPECT_FALSE(kept.count("step-1"));
  ASSERT_TRUE(result->best_eval);
  ASSERT_TRUE(result->result_checkpoint);
  EXPECT_TRUE(result->result_checkpoint->is_best);
  EXPECT_EQ(result->result_checkpoint->step, result->best_eval->step);
  EXPECT_TRUE(kept.count(result->result_checkpoint->checkpoint_id));
  EXPECT_LE(kept.size(), 4u);
}

TEST_F(TrainerTest, EarlyStoppingStopsAfterPatienceEvaluationsWithoutImprovement) {
  JobSpec spec = TestSpec();
  spec.hyperparameters.epochs = 10;
  spec.hyperparameters.eval_interval_steps = 1;
  spec.hyperparameters.learning_rate = 1e-9;  // no progress: every eval is "no better"
  spec.checkpoints.early_stopping_patience = 2;
  spec.checkpoints.early_stopping_min_delta = 0.01;
  auto t = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(t.ok());
  Recorder rec;
  auto result = (*t)->Run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outcome, TrainerResult::Outcome::kEarlyStopped);
  EXPECT_EQ(result->step, 3);  // best at step 1, no better at 2 and 3
  EXPECT_EQ(result->result_checkpoint->checkpoint_id, "final");
}

TEST_F(TrainerTest, GradientAccumulationMatchesOneLargeBatch) {
  JobSpec one = TestSpec();
  one.adapter.lora.dropout = 0;
  one.hyperparameters.epochs = 1;
  JobSpec two = one;
  two.hyperparameters.gradient_accumulation_steps = 2;
  ExpectSameRun(one, two, {kQProjB}, 1e-4);
}

// Recomputing layers in the backward pass changes memory, not the result:
// the same losses and adapter, LoRA dropout included.
TEST_F(TrainerTest, GradientCheckpointingGivesTheSameRun) {
  JobSpec plain = TestSpec();
  plain.adapter.lora.dropout = 0.1;
  plain.hyperparameters.epochs = 2;
  plain.hyperparameters.gradient_checkpointing = false;
  JobSpec recompute = plain;
  recompute.hyperparameters.gradient_checkpointing = true;
  ExpectSameRun(plain, recompute, {kQProjB, kDownA}, 1e-5);
}

TEST_F(TrainerTest, FullFineTuningLeavesFrozenLayersAndEmbeddingsUnchanged) {
  JobSpec spec = TestSpec();
  spec.adapter.kind = AdapterKind::kFull;
  spec.adapter.full.frozen_layers = {0};
  spec.adapter.full.freeze_embeddings = true;
  spec.hyperparameters.epochs = 1;
  spec.hyperparameters.learning_rate = 1e-3;
  auto t = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(t.ok()) << t.status();
  auto result = (*t)->Run(nullptr);
  ASSERT_TRUE(result.ok()) << result.status();
  auto before = model::CausalLm::Load(model_dir_, {at::kFloat, at::kCPU});
  auto after = model::CausalLm::Load(dir_ + "/ck/final", {at::kFloat, at::kCPU});
  ASSERT_TRUE(before.ok() && after.ok()) << after.status();
  std::map<std::string, at::Tensor> old_weights;
  for (auto& [name, w] : (*before)->NamedWeights()) old_weights[name] = w;
  int changed = 0;
  for (auto& [name, w] : (*after)->NamedWeights()) {
    const bool same = at::equal(w, old_weights[name]);
    if (name.find("layers.0.") != std::string::npos ||
        name.find("embed_tokens") != std::string::npos) {
      EXPECT_TRUE(same) << name << " is frozen but changed";
    } else if (!same) {
      ++changed;
    }
  }
  EXPECT_GT(changed, 5);
  // A full checkpoint is a model directory: tokenizer files came along.
  EXPECT_TRUE(fs::exists(dir_ + "/ck/final/tokenizer.json"));
}

TEST_F(TrainerTest, BadSettingsAreRejectedNamingTheField) {
  JobSpec spec = TestSpec();
  spec.adapter.kind = AdapterKind::kFull;
  spec.adapter.full.frozen_layers = {5};
  auto t = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("adapter.full.frozen_layers"), std::string::npos)
      << t.status();
  spec = TestSpec();
  spec.adapter.lora.target_modules = {"no_such_module"};
  t = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("adapter.lora"), std::string::npos) << t.status();
}

TEST_F(TrainerTest, AssistantOnlyLossCoversExactlyTheAssistantTokens) {
  nlohmann::ordered_json line = nlohmann::ordered_json::parse(
      R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},)"
      R"({"role":"user","content":"ok?"},{"role":"assistant","content":"no","weight":0},)"
      R"({"role":"user","content":"again"},{"role":"assistant","content":"sure"}]})");
  auto ex = TokenizeSftExample(line, text(), LossOn::kAssistant);
  ASSERT_TRUE(ex.ok()) << ex.status();
  // The rendering, piece by piece, with what the loss covers.
  const std::vector<std::pair<std::string, bool>> pieces = {
      {"<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", false},
      {"yo<|im_end|>", true},
      {"\n<|im_start|>user\nok?<|im_end|>\n<|im_start|>assistant\nno<|im_end|>\n"
       "<|im_start|>user\nagain<|im_end|>\n<|im_start|>assistant\n",
       false},
      {"sure<|im_end|>", true},
      {"\n", false}};
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;
  for (const auto& [piece, on] : pieces) {
    auto p = text_->tokenizer->Encode(piece, false);
    ASSERT_TRUE(p.ok());
    ids.insert(ids.end(), p->begin(), p->end());
    trained.insert(trained.end(), p->size(), on ? 1 : 0);
  }
  EXPECT_EQ(ex->ids, ids);
  ASSERT_EQ(ex->trained.size(), trained.size());
  for (size_t i = 0; i < trained.size(); ++i) {
    EXPECT_EQ(ex->trained[i], trained[i])
        << "token " << i << " (" << text_->tokenizer->IdToToken(ex->ids[i]) << ")";
  }
  auto all = TokenizeSftExample(line, text(), LossOn::kAll);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(std::count(all->trained.begin(), all->trained.end(), 1),
            static_cast<int64_t>(all->ids.size()));
}

TEST_F(TrainerTest, CompletionExamplesTrainOnTheCompletionAndEos) {
  auto ex =
      TokenizeSftExample(nlohmann::ordered_json::parse(R"({"prompt":"2+2=","completion":" 4"})"),
                         text(), LossOn::kAssistant);
  ASSERT_TRUE(ex.ok()) << ex.status();
  // Byte-level tokens: "2+2=" is 4 tokens, " 4" 2, then <|im_end|> (eos).
  ASSERT_EQ(ex->ids.size(), 7u);
  EXPECT_EQ(ex->ids.back(), 258);
  EXPECT_EQ(ex->trained, (std::vector<uint8_t>{0, 0, 0, 0, 1, 1, 1}));
}

TEST_F(TrainerTest, TokenizeFileReportsLinesThatAreTooLongOrBroken) {
  const std::string path = dir_ + "/bad.jsonl";
  std::string long_answer(300, 'x');
  ASSERT_TRUE(WriteFileAtomic(path, ChatJsonl(2) + "not json\n" +
                                        R"({"messages":[{"role":"user","content":"q"},)" +
                                        R"({"role":"assistant","content":")" + long_answer +
                                        R"("}]})" + "\n" +
                                        R"({"messages":[{"role":"user","content":"only"}]})" + "\n")
                  .ok());
  SftTokenizeOptions o;
  o.max_seq_length = 100;
  auto data = TokenizeSftFile(path, text(), o);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->examples.size(), 2u);
  ASSERT_EQ(data->errors.size(), 2u);
  EXPECT_EQ(data->errors[0].line, 3);
  EXPECT_EQ(data->errors[0].kind, "invalid_json");
  EXPECT_EQ(data->errors[1].line, 4);
  EXPECT_EQ(data->errors[1].kind, "example_too_long");
  EXPECT_NE(data->errors[1].message.find("max_seq_length 100"), std::string::npos);
  ASSERT_EQ(data->warnings.size(), 1u);
  EXPECT_EQ(data->warnings[0].kind, "no_trained_tokens");
  EXPECT_EQ(data->warnings[0].line, 5);
}

TEST(BatchingTest, EveryExampleAppearsOncePerEpochAndPackedRowsFit) {
  std::vector<int64_t> lengths = {5, 9, 3, 7, 2, 8, 6, 4, 1, 10};
  BatchPlanOptions o;
  o.epochs = 2;
  o.batch_size = 2;
  o.packing = true;
  o.max_seq_length = 12;
  o.seed = 3;
  BatchPlan plan(lengths, o);
  std::map<int64_t, int> seen;
  for (int64_t s = 1; s <= plan.total_steps(); ++s) {
    for (const auto& micro : plan.MicroBatches(s)) {
      for (const Row& row : micro) {
        int64_t used = 0;
        for (int64_t i : row) {
          used += lengths[i];
          ++seen[i];
        }
        EXPECT_LE(used, 12);
      }
    }
  }
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(seen[i], 2) << "example " << i;
  EXPECT_TRUE(plan.ends_epoch(plan.steps_in_epoch(0)));
  EXPECT_DOUBLE_EQ(plan.epoch_progress(plan.total_steps()), 2.0);
  EXPECT_NE(ShuffledOrder(10, 3, 0), ShuffledOrder(10, 3, 1));
  EXPECT_EQ(ShuffledOrder(10, 3, 1), ShuffledOrder(10, 3, 1));
}

TEST(BatchingTest, PackedBatchNeverPredictsAcrossExamples) {
  std::vector<SftExample> ex(2);
  ex[0].ids = {10, 11, 12};
  ex[0].trained = {0, 1, 1};
  ex[1].ids = {20, 21};
  ex[1].trained = {0, 1};
  Batch b = MakeBatch(ex, {{0, 1}, {1}});
  EXPECT_EQ(b.input_ids.sizes(), (at::IntArrayRef{2, 5}));
  EXPECT_EQ(b.tokens, 7);
  std::vector<int64_t> labels0(b.labels[0].data_ptr<int64_t>(),
                               b.labels[0].data_ptr<int64_t>() + 5);
  const int64_t X = model::kIgnoreLabel;
  EXPECT_EQ(labels0, (std::vector<int64_t>{11, 12, X, 21, X}));
  std::vector<int64_t> seg1(b.segment_ids[1].data_ptr<int64_t>(),
                            b.segment_ids[1].data_ptr<int64_t>() + 5);
  EXPECT_EQ(seg1, (std::vector<int64_t>{0, 0, -1, -1, -1}));
  EXPECT_EQ(b.label_tokens, 4);
}

TEST(OptimizerTest, AdamWStepMatchesTorchAdamW) {
  at::manual_seed(0);
  at::Tensor w = at::randn({4, 3}), b = at::randn({3});
  at::Tensor w2 = w.clone().requires_grad_(true), b2 = b.clone().requires_grad_(true);
  w.requires_grad_(true);
  b.requires_grad_(true);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW ours({{"w", w, true}, {"b", b, true}}, o);
  torch::optim::AdamW theirs({w2, b2}, torch::optim::AdamWOptions(0.01).weight_decay(0.1));
  for (int step = 0; step < 3; ++step) {
    at::Tensor x = at::randn({5, 4});
    ours.ZeroGrad();
    theirs.zero_grad();
    (at::matmul(x, w) + b).pow(2).sum().backward();
    (at::matmul(x, w2) + b2).pow(2).sum().backward();
    ours.Step(0.01);
    theirs.step();
  }
  EXPECT_TRUE(at::allclose(w, w2, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(b, b2, 1e-5, 1e-6));
}

TEST(OptimizerTest, ClipGradNormScalesToTheLimit) {
  at::Tensor p = at::zeros({2}).requires_grad_(true);
  AdamW opt({{"p", p, true}}, {});
  (p * at::tensor({3.0f, 4.0f})).sum().backward();
  EXPECT_NEAR(opt.ClipGradNorm(1.0), 5.0, 1e-6);
  EXPECT_NEAR(p.grad().norm().item<double>(), 1.0, 1e-5);
}

TEST(OptimizerTest, SchedulesFollowTransformers) {
  // Warmup 2 of 10 steps, peak 1: step 1 uses 0, step 2 0.5, step 3 the peak.
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kLinear, 1, 1, 2, 10), 0);
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kLinear, 1, 2, 2, 10), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kLinear, 1, 3, 2, 10), 1);
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kLinear, 1, 7, 2, 10), 0.5);
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kCosine, 1, 7, 2, 10), 0.5);
  EXPECT_NEAR(LearningRateAt(LrScheduler::kCosine, 1, 5, 2, 10), 0.5 * (1 + std::cos(M_PI / 4)),
              1e-12);
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kConstant, 1, 9, 2, 10), 1);
  EXPECT_DOUBLE_EQ(LearningRateAt(LrScheduler::kLinear, 1, 1, 0, 4), 1);
}

}  // namespace
}  // namespace switchyard::training
