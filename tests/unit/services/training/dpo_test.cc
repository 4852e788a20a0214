// DPO: the loss variants, preference data in both layouts, and training on a
// toy preference set with a tiny model.
#include "services/training/dpo.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>

#include "services/training/preference_data.h"
#include "services/training/trainer.h"
#include "shared/model/lora.h"
#include "shared/model/loss.h"
#include "shared/model/runtime.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/services/training/training_testing.h"

namespace switchyard::training {
namespace {

using json = nlohmann::ordered_json;
using testing::PreferenceJsonl;
using testing::Recorder;
using testing::TestSpec;

double LogSigmoid(double x) { return -std::log1p(std::exp(-x)); }

TEST(DpoLossTest, EveryLossTypeMatchesItsFormula) {
  // h = (pc - rc) - (pr - rr) = (-3 - -4) - (-5 - -4.5) = 1 - (-0.5) = 1.5
  const at::Tensor pc = at::tensor({-3.0f}), pr = at::tensor({-5.0f});
  const at::Tensor rc = at::tensor({-4.0f}), rr = at::tensor({-4.5f});
  const double h = 1.5;
  DpoSpec spec;
  spec.beta = 0.5;
  spec.label_smoothing = 0.1;
  struct Case {
    DpoLoss type;
    double expected;
  } cases[] = {
      {DpoLoss::kSigmoid, -0.9 * LogSigmoid(0.5 * h) - 0.1 * LogSigmoid(-0.5 * h)},
      {DpoLoss::kRobust, (-0.9 * LogSigmoid(0.5 * h) + 0.1 * LogSigmoid(-0.5 * h)) / 0.8},
      {DpoLoss::kHinge, std::max(0.0, 1 - 0.5 * h)},
      {DpoLoss::kIpo, std::pow(h - 1 / (2 * 0.5), 2)},
  };
  for (const Case& c : cases) {
    spec.loss_type = c.type;
    DpoLossOutput out = ComputeDpoLoss(pc, pr, rc, rr, spec);
    EXPECT_NEAR(out.losses.item<double>(), c.expected, 1e-5) << DpoLossName(c.type);
    EXPECT_NEAR(out.chosen_rewards.item<double>(), 0.5 * 1.0, 1e-6);
    EXPECT_NEAR(out.rejected_rewards.item<double>(), 0.5 * -0.5, 1e-6);
  }
  // Policy equal to the reference: the sigmoid loss is log 2 and its gradient
  // pushes chosen up and rejected down by the same amount.
  spec.loss_type = DpoLoss::kSigmoid;
  spec.label_smoothing = 0;
  at::Tensor p_c = at::tensor({-2.0f}).requires_grad_(true);
  at::Tensor p_r = at::tensor({-2.0f}).requires_grad_(true);
  DpoLossOutput out = ComputeDpoLoss(p_c, p_r, at::tensor({-2.0f}), at::tensor({-2.0f}), spec);
  EXPECT_NEAR(out.losses.item<double>(), std::log(2.0), 1e-6);
  out.losses.sum().backward();
  EXPECT_NEAR(p_c.grad().item<double>(), -0.25, 1e-6);  // -beta * sigmoid(0)
  EXPECT_NEAR(p_r.grad().item<double>(), 0.25, 1e-6);
}

TEST(DpoLossTest, SequenceLogProbsSumOnlyTheLabels) {
  at::Tensor logits = at::randn({2, 4, 5});
  at::Tensor labels = at::full({2, 4}, model::kIgnoreLabel, at::kLong);
  labels[0][1] = 3;
  labels[0][2] = 0;
  labels[1][3] = 4;
  at::Tensor lp = at::log_softmax(logits, -1);
  at::Tensor sums = SequenceLogProbs(logits, labels);
  EXPECT_NEAR(sums[0].item<double>(), (lp[0][1][3] + lp[0][2][0]).item<double>(), 1e-5);
  EXPECT_NEAR(sums[1].item<double>(), lp[1][3][4].item<double>(), 1e-5);
  at::Tensor counts = LabelCounts(labels);
  EXPECT_EQ(counts[0].item<float>(), 2);
  EXPECT_EQ(counts[1].item<float>(), 1);
}

class PreferenceDataTest : public testing::TinyModelTest {
 protected:
  PreferenceExample Tokenize(const std::string& line) {
    auto ex = TokenizePreferenceExample(json::parse(line), text());
    EXPECT_TRUE(ex.ok()) << ex.status() << " for " << line;
    return ex.ok() ? *ex : PreferenceExample();
  }
  // The text of the trained tokens.
  std::string Trained(const SftExample& ex) {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < ex.ids.size(); ++i) {
      if (ex.trained[i]) ids.push_back(ex.ids[i]);
    }
    auto text = text_->tokenizer->Decode(ids, false);
    EXPECT_TRUE(text.ok());
    return text.ok() ? *text : "";
  }
};

TEST_F(PreferenceDataTest, BothLayoutsGiveTheSameSequences) {
  const PreferenceExample trl =
      Tokenize(R"({"prompt":[{"role":"user","content":"Hi"}],)"
               R"("chosen":[{"role":"assistant","content":"Hello!"}],)"
               R"("rejected":[{"role":"assistant","content":"Go away."}]})");
  const PreferenceExample openai =
      Tokenize(R"({"input":{"messages":[{"role":"user","content":"Hi"}]},)"
               R"("preferred_output":[{"role":"assistant","content":"Hello!"}],)"
               R"("non_preferred_output":[{"role":"assistant","content":"Go away."}]})");
  const PreferenceExample implicit = Tokenize(
      R"({"chosen":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello!"}],)"
      R"("rejected":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Go away."}]})");
  for (const PreferenceExample* ex : {&openai, &implicit}) {
    EXPECT_EQ(ex->chosen.ids, trl.chosen.ids);
    EXPECT_EQ(ex->chosen.trained, trl.chosen.trained);
    EXPECT_EQ(ex->rejected.ids, trl.rejected.ids);
    EXPECT_EQ(ex->rejected.trained, trl.rejected.trained);
  }
  // The loss covers the completion (and the template's end of turn) only.
  EXPECT_EQ(Trained(trl.chosen).find("Hi"), std::string::npos);
  EXPECT_NE(Trained(trl.chosen).find("Hello!"), std::string::npos);
  EXPECT_NE(Trained(trl.rejected).find("Go away."), std::string::npos);
  // Both start with the same prompt tokens.
  size_t shared = 0;
  while (shared < trl.chosen.ids.size() && trl.chosen.ids[shared] == trl.rejected.ids[shared] &&
         !trl.chosen.trained[shared]) {
    ++shared;
  }
  EXPECT_GT(shared, 3u);
  for (size_t i = 0; i < shared; ++i) EXPECT_FALSE(trl.chosen.trained[i]);
}

TEST_F(PreferenceDataTest, PromptAssistantTurnsAreNotTrained) {
  const PreferenceExample ex = Tokenize(
      R"({"prompt":[{"role":"user","content":"Hi"},{"role":"assistant","content":"EARLIER"},)"
      R"({"role":"user","content":"Again"}],)"
      R"("chosen":[{"role":"assistant","content":"Yes"}],"rejected":"No"})");
  EXPECT_EQ(Trained(ex.chosen).find("EARLIER"), std::string::npos);
  EXPECT_NE(Trained(ex.chosen).find("Yes"), std::string::npos);
  EXPECT_NE(Trained(ex.rejected).find("No"), std::string::npos);
}

TEST_F(PreferenceDataTest, TextPairsArePromptAndCompletion) {
  const PreferenceExample ex = Tokenize(R"({"prompt":"2+2=","chosen":"4","rejected":"5"})");
  EXPECT_EQ(Trained(ex.chosen).substr(0, 1), "4");
  EXPECT_EQ(Trained(ex.rejected).substr(0, 1), "5");
  const PreferenceExample no_prompt = Tokenize(R"({"chosen":"good","rejected":"bad"})");
  EXPECT_NE(Trained(no_prompt.chosen).find("good"), std::string::npos);
}

TEST_F(PreferenceDataTest, BadLinesNameTheField) {
  struct Case {
    std::string line, field;
  } cases[] = {
      {R"({"prompt":"x","rejected":"y"})", "chosen"},
      {R"({"prompt":"x","chosen":"y"})", "rejected"},
      {R"({"prompt":"x","chosen":7,"rejected":[{"role":"assistant","content":"b"}]})", "chosen"},
      {R"({"input":{"messages":[{"role":"user","content":"x"}]},"preferred_output":[]})",
       "non_preferred_output"},
      {R"({"input":"x","preferred_output":[],"non_preferred_output":[]})", "input"},
      {R"({"chosen":[{"role":"user","content":"a"}],"rejected":[{"role":"user","content":"a"}]})",
       "rejected"},
      {R"({"prompt":[{"role":"user","content":"x"}],"chosen":[{"role":"user","content":"y"}],)"
       R"("rejected":"z"})",
       "chosen"},
  };
  for (const Case& c : cases) {
    auto ex = TokenizePreferenceExample(json::parse(c.line), text());
    ASSERT_FALSE(ex.ok()) << c.line;
    EXPECT_EQ(ex.status().code(), absl::StatusCode::kInvalidArgument) << ex.status();
    EXPECT_EQ(ex.status().message().substr(0, c.field.size() + 1), c.field + ":")
        << ex.status() << " for " << c.line;
  }
  // In a file: errors name the line; good lines are kept.
  const std::string path = dir_ + "/prefs.jsonl";
  ASSERT_TRUE(WriteFileAtomic(path, PreferenceJsonl(2) + R"({"prompt":"x"})" + "\nnot json\n" +
                                        PreferenceJsonl(1))
                  .ok());
  SftTokenizeOptions o;
  auto data = TokenizePreferenceFile(path, text(), o);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->examples.size(), 3u);
  ASSERT_EQ(data->errors.size(), 2u);
  EXPECT_EQ(data->errors[0].line, 3);
  EXPECT_EQ(data->errors[0].kind, "unrenderable_example");
  EXPECT_EQ(data->errors[1].line, 4);
  EXPECT_EQ(data->examples[2].line, 5);
  // Too long for max_seq_length: an error naming the line.
  o.max_seq_length = 10;
  data = TokenizePreferenceFile(path, text(), o);
  ASSERT_TRUE(data.ok());
  EXPECT_TRUE(data->examples.empty());
  EXPECT_EQ(data->errors[0].kind, "example_too_long");
}

class DpoTrainerTest : public testing::TinyModelTest {
 protected:
  std::vector<PreferenceExample> Pairs(int n, int offset) {
    const std::string path = dir_ + "/prefs-" + std::to_string(offset) + ".jsonl";
    EXPECT_TRUE(WriteFileAtomic(path, PreferenceJsonl(n, offset)).ok());
    auto data = TokenizePreferenceFile(path, text(), SftTokenizeOptions());
    EXPECT_TRUE(data.ok()) << data.status();
    return data.ok() ? data->examples : std::vector<PreferenceExample>();
  }

  static JobSpec DpoSpec() {
    JobSpec s = TestSpec();
    s.method = Method::kDpo;
    s.adapter.lora.dropout = 0;
    s.dpo.loss_type = DpoLoss::kSigmoid;
    s.dpo.beta = 0.1;
    s.dpo.label_smoothing = 0;
    s.dpo.precompute_reference_logprobs = false;
    s.hyperparameters.epochs = 4;
    s.hyperparameters.learning_rate = 1e-2;
    return s;
  }

  TrainerSetup Setup(const JobSpec& spec, const std::string& checkpoints,
                     model::LoadOptions load = {}) {
    TrainerSetup s = BaseSetup(spec, checkpoints, load);
    s.train_pairs = Pairs(12, 0);
    s.validation_pairs = Pairs(4, 3);
    return s;
  }

  // log p(chosen) - log p(rejected) of each pair under `model` with `adapter`
  // (kNoAdapter: the base).
  std::vector<double> Preference(const model::CausalLm& lm, int adapter,
                                 const std::vector<PreferenceExample>& pairs) {
    std::vector<int64_t> all;
    for (size_t i = 0; i < pairs.size(); ++i) all.push_back(static_cast<int64_t>(i));
    Batch batch = MakePairBatch(pairs, all);
    model::DecoderInput in;
    in.input_ids = batch.input_ids;
    in.segment_ids = batch.segment_ids;
    if (adapter != model::kNoAdapter) in.adapters.assign(batch.input_ids.size(0), adapter);
    at::NoGradGuard no_grad;
    auto logits = lm.Forward(in);
    EXPECT_TRUE(logits.ok());
    at::Tensor lp = SequenceLogProbs(*logits, batch.labels);
    std::vector<double> out;
    const int64_t n = static_cast<int64_t>(pairs.size());
    for (int64_t i = 0; i < n; ++i) out.push_back((lp[i] - lp[n + i]).item<double>());
    return out;
  }
};

TEST_F(DpoTrainerTest, RewardAccuracyRisesAndThePolicyPrefersTheChosenAnswers) {
  JobSpec spec = DpoSpec();
  auto trainer = Trainer::Create(Setup(spec, dir_ + "/ck"));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ((*trainer)->total_steps(), 12);  // 12 pairs / batch 4 x 4 epochs
  Recorder rec;
  auto result = (*trainer)->Run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(rec.train.size(), 12u);
  // Step 1 starts at the reference: the sigmoid loss is log 2, rewards 0.
  ASSERT_TRUE(rec.train.front().dpo);
  EXPECT_NEAR(rec.train.front().loss, std::log(2.0), 1e-5);
  EXPECT_NEAR(rec.train.front().dpo->rewards_chosen, 0, 1e-5);
  EXPECT_EQ(rec.train.front().mean_token_accuracy, 0);
  const TrainMetrics& last = rec.train.back();
  ASSERT_TRUE(last.dpo);
  EXPECT_GT(last.dpo->reward_accuracy, 0.9);
  EXPECT_GT(last.dpo->reward_margin, 0);
  EXPECT_GT(last.dpo->rewards_chosen, last.dpo->rewards_rejected);
  EXPECT_LT(last.loss, rec.train.front().loss);
  EXPECT_LT(last.dpo->logps_chosen, 0);
  // The validation pairs improve too.
  ASSERT_GE(rec.eval.size(), 2u);
  ASSERT_TRUE(rec.eval.back().dpo);
  EXPECT_GT(rec.eval.back().dpo->reward_accuracy, 0.9);
  EXPECT_LT(rec.eval.back().validation_loss, rec.eval.front().validation_loss);

  // The saved adapter, loaded on a fresh base, prefers every chosen answer
  // by more than the base does.
  ASSERT_TRUE(result->result_checkpoint);
  auto adapter = model::LoadPeftAdapter(result->result_checkpoint->path, at::kFloat, at::kCPU);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  auto lm = model::CausalLm::Load(model_dir_, {at::kFloat, at::kCPU});
  ASSERT_TRUE(lm.ok());
  auto id = (*lm)->AddAdapter("dpo", *adapter);
  ASSERT_TRUE(id.ok());
  const std::vector<PreferenceExample> held_out = Pairs(4, 3);
  const std::vector<double> base = Preference(**lm, model::kNoAdapter, held_out);
  const std::vector<double> tuned = Preference(**lm, *id, held_out);
  for (size_t i = 0; i < held_out.size(); ++i) {
    std::cout << "pair " << i << " base " << base[i] << " tuned " << tuned[i] << "\n";
    EXPECT_GT(tuned[i], base[i] + 1.0) << "pair " << i;
  }
}

// DPO on a 4-bit base with its layers recomputed in the backward pass (the
// QLoRA default): the reference is the quantised base without the adapter,
// and the preferences are learnt as on the full base.
TEST_F(DpoTrainerTest, QloraWithRecomputedLayersLearnsThePreferences) {
  JobSpec spec = DpoSpec();
  const model::LoadOptions load = testing::UseQlora(&spec);
  auto trainer = Trainer::Create(Setup(spec, dir_ + "/ck", load));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Recorder rec;
  ASSERT_TRUE((*trainer)->Run(&rec).ok());
  ASSERT_EQ(rec.train.size(), 12u);
  EXPECT_NEAR(rec.train.front().loss, std::log(2.0), 1e-5);
  ASSERT_TRUE(rec.train.back().dpo);
  EXPECT_GT(rec.train.back().dpo->reward_accuracy, 0.9);
  EXPECT_LT(rec.train.back().loss, rec.train.front().loss);
  ASSERT_TRUE(rec.eval.back().dpo);
  EXPECT_GT(rec.eval.back().dpo->reward_accuracy, 0.9);
}

TEST_F(DpoTrainerTest, PrecomputedReferenceGivesTheSameTrainingAsOnTheFly) {
  JobSpec spec = DpoSpec();
  spec.hyperparameters.epochs = 1;
  Recorder a, b;
  auto on_the_fly = Trainer::Create(Setup(spec, dir_ + "/a"));
  ASSERT_TRUE(on_the_fly.ok());
  ASSERT_TRUE((*on_the_fly)->Run(&a).ok());
  spec.dpo.precompute_reference_logprobs = true;
  auto precomputed = Trainer::Create(Setup(spec, dir_ + "/b"));
  ASSERT_TRUE(precomputed.ok());
  ASSERT_TRUE((*precomputed)->Run(&b).ok());
  ASSERT_EQ(a.train.size(), b.train.size());
  for (size_t i = 0; i < a.train.size(); ++i) {
    EXPECT_NEAR(a.train[i].loss, b.train[i].loss, 1e-5) << "step " << i + 1;
    EXPECT_NEAR(a.train[i].dpo->reward_margin, b.train[i].dpo->reward_margin, 1e-5);
  }
}

TEST_F(DpoTrainerTest, ResumedRunMatchesTheUninterruptedOne) {
  for (bool precompute : {false, true}) {
    JobSpec spec = DpoSpec();
    spec.hyperparameters.epochs = 2;
    spec.checkpoints.interval_steps = 2;
    spec.dpo.precompute_reference_logprobs = precompute;
    const std::string tag = precompute ? "p" : "f";
    Recorder full;
    auto a = Trainer::Create(Setup(spec, dir_ + "/a" + tag));
    ASSERT_TRUE(a.ok());
    ASSERT_TRUE((*a)->Run(&full).ok());
    Recorder first;
    first.stop_after = 3;
    auto b = Trainer::Create(Setup(spec, dir_ + "/b" + tag));
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*b)->Run(&first).ok());
    Recorder second;
    auto c = Trainer::Create(Setup(spec, dir_ + "/b" + tag));
    ASSERT_TRUE(c.ok());
    auto done = (*c)->Run(&second);
    ASSERT_TRUE(done.ok()) << done.status();
    // Cancelled after step 3, which ends epoch 1 and saved epoch-1.
    ASSERT_EQ(second.train.front().step, 4);
    for (const TrainMetrics& m : second.train) {
      EXPECT_NEAR(m.loss, full.train[m.step - 1].loss, 1e-6)
          << "step " << m.step << " precompute " << precompute;
    }
  }
}

TEST_F(DpoTrainerTest, FullFineTuningUsesAFrozenReference) {
  JobSpec spec = DpoSpec();
  spec.adapter.kind = AdapterKind::kFull;
  spec.hyperparameters.epochs = 2;
  spec.hyperparameters.learning_rate = 1e-3;
  // Without a precomputed reference or a frozen copy the policy would be its
  // own reference.
  EXPECT_EQ(Trainer::Create(Setup(spec, dir_ + "/x")).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<Recorder> runs(2);
  for (int i = 0; i < 2; ++i) {
    TrainerSetup setup = Setup(spec, dir_ + "/full" + std::to_string(i));
    if (i == 0) {
      setup.spec.dpo.precompute_reference_logprobs = true;
    } else {
      auto ref = model::CausalLm::Load(model_dir_, {at::kFloat, at::kCPU});
      ASSERT_TRUE(ref.ok());
      setup.reference_model = std::move(*ref);
    }
    auto trainer = Trainer::Create(std::move(setup));
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    ASSERT_TRUE((*trainer)->Run(&runs[i]).ok());
    EXPECT_GT(runs[i].train.back().dpo->reward_margin, 0);
  }
  for (size_t s = 0; s < runs[0].train.size(); ++s) {
    EXPECT_NEAR(runs[0].train[s].loss, runs[1].train[s].loss, 1e-4) << "step " << s + 1;
  }
}

TEST_F(DpoTrainerTest, ContinuingAnAdapterUsesItAsTheReference) {
  // An adapter with random B: the starting policy differs from the base.
  auto lm = model::CausalLm::Load(model_dir_, {at::kFloat, at::kCPU});
  ASSERT_TRUE(lm.ok());
  model::LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  c.target_modules = {"q_proj", "v_proj"};
  ASSERT_TRUE((*lm)->CreateAdapter("sft", c, 3).ok());
  auto params = (*lm)->AdapterParameters("sft");
  ASSERT_TRUE(params.ok());
  {
    at::NoGradGuard no_grad;
    for (at::Tensor& p : *params) p.normal_(0, 0.2);
  }
  auto start = (*lm)->ExportAdapter("sft");
  ASSERT_TRUE(start.ok());

  JobSpec spec = DpoSpec();
  spec.adapter.lora.target_modules = {"q_proj", "v_proj"};
  spec.hyperparameters.epochs = 1;
  spec.dpo.precompute_reference_logprobs = true;
  TrainerSetup setup = Setup(spec, dir_ + "/ck");
  setup.start_adapter = *start;
  for (auto& [path, w] : setup.start_adapter->modules) {
    w.a = w.a.clone();
    w.b = w.b.clone();
  }
  auto trainer = Trainer::Create(std::move(setup));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Recorder rec;
  ASSERT_TRUE((*trainer)->Run(&rec).ok());
  // The first step's policy is the reference: loss log 2, no reward.
  EXPECT_NEAR(rec.train.front().loss, std::log(2.0), 1e-5);
  EXPECT_NEAR(rec.train.front().dpo->reward_margin, 0, 1e-5);
}

}  // namespace
}  // namespace switchyard::training
