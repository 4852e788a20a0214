// Reinforcement fine-tuning: group advantages, the clipped policy loss with
// its KL penalty, prompts from chat data, and GRPO training a tiny model on a
// task a grader checks exactly.
#include "services/training/grpo.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <numeric>

#include "services/training/trainer.h"
#include "shared/model/generate.h"
#include "shared/model/runtime.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/services/training/training_testing.h"

namespace switchyard::training {
namespace {

using json = nlohmann::ordered_json;
using testing::Recorder;
using testing::TestSpec;

TEST(GroupAdvantagesTest, NormaliseWithinEachGroup) {
  double mean_std = 0;
  const std::vector<double> a = GroupAdvantages({1, 0, 0.5, 0.5, 0, 0, 1, 1}, 2, &mean_std);
  const double sd = std::sqrt(0.5);  // sample standard deviation of {1, 0}
  EXPECT_NEAR(a[0], 0.5 / (sd + 1e-4), 1e-9);
  EXPECT_NEAR(a[1], -0.5 / (sd + 1e-4), 1e-9);
  // Equal rewards carry no signal, whatever their level.
  for (int i = 2; i < 8; ++i) EXPECT_EQ(a[i], 0) << i;
  EXPECT_NEAR(mean_std, sd / 4, 1e-12);
  const std::vector<double> b = GroupAdvantages({0, 1, 1, 1}, 4);
  EXPECT_LT(b[0], 0);
  EXPECT_NEAR(std::accumulate(b.begin(), b.end(), 0.0), 0, 1e-9);
}

TEST(GrpoLossTest, PolicyGradientClippingAndKl) {
  // One row, two completion tokens (the third is padding).
  at::Tensor logp = at::tensor({-1.0f, -2.0f, 0.0f}).view({1, 3}).requires_grad_(true);
  const at::Tensor mask = at::tensor({1.0f, 1.0f, 0.0f}).view({1, 3}).to(at::kBool);
  const at::Tensor advantage = at::tensor({2.0f});
  // At the sampling policy (ratio 1) and the reference: loss -A, gradient
  // -A / tokens on each token, no KL, nothing clipped.
  GrpoLossOutput out =
      ComputeGrpoLoss(logp, logp.detach(), logp.detach(), mask, advantage, 0.2, 0.04);
  EXPECT_NEAR(out.row_losses.item<double>(), -2.0, 1e-6);
  out.row_losses.sum().backward();
  EXPECT_NEAR(logp.grad()[0][0].item<double>(), -1.0, 1e-6);
  EXPECT_NEAR(logp.grad()[0][2].item<double>(), 0.0, 1e-6);
  EXPECT_EQ(out.kl_sum, 0);
  EXPECT_EQ(out.clipped, 0);
  EXPECT_EQ(out.tokens, 2);
  // The policy moved up 0.5 nats on token 0 since sampling: ratio e^0.5 >
  // 1.2 with A > 0 is clipped (no gradient there).
  const at::Tensor old = at::tensor({-1.5f, -2.0f, 0.0f}).view({1, 3});
  const at::Tensor ref = at::tensor({-1.0f, -3.0f, 0.0f}).view({1, 3});
  at::Tensor p2 = logp.detach().clone().requires_grad_(true);
  out = ComputeGrpoLoss(p2, old, ref, mask, advantage, 0.2, 0.5);
  EXPECT_EQ(out.clipped, 1);
  // KL (k3) on token 1: d = ref - logp = -1: e^-1 + 1 - 1.
  EXPECT_NEAR(out.kl_sum, std::exp(-1.0), 1e-6);
  const double expected = (-(1.2 * 2.0) + (-(1.0 * 2.0) + 0.5 * std::exp(-1.0))) / 2;
  EXPECT_NEAR(out.row_losses.item<double>(), expected, 1e-5);
  out.row_losses.sum().backward();
  EXPECT_NEAR(p2.grad()[0][0].item<double>(), 0.0, 1e-6) << "clipped: no gradient";
}

class GrpoTest : public testing::TinyModelTest {
 protected:
  void SetUp() override {
    TinyModelTest::SetUp();
    // Reward 1 when the (one-token) answer is a lower-case letter.
    auto grader = GraderFromJson(nlohmann::json::parse(
        R"({"name":"letter","string_check":{"reference":"^[a-z]$","operation":"regex"}})"));
    ASSERT_TRUE(grader.ok()) << grader.status();
    grader_ = *grader;
  }

  std::string Jsonl(int n, int offset) {
    std::string out;
    for (int i = 0; i < n; ++i) {
      out += json({{"messages",
                    {{{"role", "user"}, {"content", "Say a letter " + std::to_string(i + offset)}},
                     {{"role", "assistant"}, {"content", "q"}}}},
                   {"metadata", {{"topic", "letters"}}}})
                 .dump() +
             "\n";
    }
    return out;
  }

  std::vector<RlExample> Prompts(int n, int offset) {
    const std::string path = dir_ + "/rl-" + std::to_string(offset) + ".jsonl";
    EXPECT_TRUE(WriteFileAtomic(path, Jsonl(n, offset)).ok());
    auto data = TokenizeRlFile(path, *text_, grader_, SftTokenizeOptions());
    EXPECT_TRUE(data.ok()) << data.status();
    EXPECT_TRUE(data->errors.empty());
    return data.ok() ? data->examples : std::vector<RlExample>();
  }

  JobSpec RlSpec() {
    JobSpec s = TestSpec();
    s.method = Method::kReinforcement;
    s.adapter.lora.dropout = 0;
    ReinforcementSpec r;
    r.grader = grader_;
    r.num_generations = 8;
    r.temperature = 1.0;
    r.top_p = 1.0;
    r.max_completion_tokens = 1;
    r.kl_beta = 0.04;
    r.clip_epsilon = 0.2;
    r.iterations_per_batch = 1;
    s.reinforcement = r;
    s.hyperparameters.learning_rate = 3e-2;
    s.hyperparameters.lr_scheduler = LrScheduler::kConstant;
    s.hyperparameters.epochs = 30;
    return s;
  }

  TrainerSetup Setup(const JobSpec& spec, const std::string& checkpoints,
                     model::LoadOptions load = {}) {
    TrainerSetup s = BaseSetup(spec, checkpoints, load);
    s.train_prompts = Prompts(8, 0);
    s.validation_prompts = Prompts(8, 100);
    return s;
  }

  GraderSpec grader_;
};

TEST_F(GrpoTest, PromptsDropTheAnswerAndCarryTheirFields) {
  const std::vector<RlExample> prompts = Prompts(2, 0);
  ASSERT_EQ(prompts.size(), 2u);
  EXPECT_EQ(prompts[0].item["topic"], "letters");  // from metadata
  EXPECT_EQ(prompts[0].line, 1);
  auto decoded = text_->tokenizer->Decode(prompts[0].prompt_ids, false);
  ASSERT_TRUE(decoded.ok());
  EXPECT_NE(decoded->find("Say a letter 0"), std::string::npos);
  EXPECT_EQ(decoded->find("assistant\nq"), std::string::npos)
      << "the final answer is not in the prompt";
  // Ends with the generation prompt (ChatML: "<|im_start|>assistant\n").
  EXPECT_NE(decoded->rfind("assistant\n"), std::string::npos);
  // A grader field the example lacks is named.
  auto needs = GraderFromJson(nlohmann::json::parse(
      R"({"string_check":{"reference":"{{item.answer}}","operation":"eq"}})"));
  ASSERT_TRUE(needs.ok());
  auto ex = TokenizeRlExample(json::parse(Jsonl(1, 0)), *text_, *needs);
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("answer"), std::string::npos) << ex.status();
  auto no_messages =
      TokenizeRlExample(json::parse(R"({"prompt":"x","completion":"y"})"), *text_, grader_);
  EXPECT_NE(no_messages.status().message().find("messages"), std::string::npos);
}

// The mean sampled reward of train steps [first, last).
double MeanReward(const Recorder& rec, size_t first, size_t last) {
  double sum = 0;
  for (size_t i = first; i < last; ++i) sum += rec.train[i].reinforcement->reward_mean;
  return sum / static_cast<double>(last - first);
}

TEST_F(GrpoTest, MeanRewardRisesOnATaskTheGraderChecksExactly) {
  auto trainer = Trainer::Create(Setup(RlSpec(), dir_ + "/ck"));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  EXPECT_EQ((*trainer)->total_steps(), 60);  // 8 prompts / batch 4 x 30 epochs
  Recorder rec;
  auto result = (*trainer)->Run(&rec);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(rec.train.size(), 60u);
  const double start = MeanReward(rec, 0, 10), end = MeanReward(rec, 50, 60);
  std::cout << "mean reward of sampled answers: steps 1-10 " << start << ", steps 51-60 " << end
            << "\n";
  EXPECT_GT(end, start + 0.25);
  const ReinforcementMetrics& last = *rec.train.back().reinforcement;
  EXPECT_GT(last.kl, 0);
  EXPECT_LE(last.completion_length_mean, 1.0);
  EXPECT_EQ(last.grader_rewards.count("letter"), 1u);
  // Greedy answers to held-out prompts earn more than the base's.
  ASSERT_GE(rec.eval.size(), 2u);
  ASSERT_TRUE(rec.eval.front().reinforcement && rec.eval.back().reinforcement);
  EXPECT_GT(rec.eval.back().reinforcement->reward_mean,
            rec.eval.front().reinforcement->reward_mean);
  EXPECT_DOUBLE_EQ(rec.eval.back().validation_loss, -rec.eval.back().reinforcement->reward_mean);
}

// The same task on a 4-bit base with its layers recomputed in the backward
// pass (the QLoRA default): the sampled answers' reward rises as well.
TEST_F(GrpoTest, QloraWithRecomputedLayersRaisesTheMeanReward) {
  JobSpec spec = RlSpec();
  const model::LoadOptions load = testing::UseQlora(&spec);
  auto trainer = Trainer::Create(Setup(spec, dir_ + "/ck", load));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Recorder rec;
  ASSERT_TRUE((*trainer)->Run(&rec).ok());
  ASSERT_EQ(rec.train.size(), 60u);
  const double start = MeanReward(rec, 0, 10), end = MeanReward(rec, 50, 60);
  std::cout << "NF4 base: mean reward steps 1-10 " << start << ", steps 51-60 " << end << "\n";
  EXPECT_GT(end, start + 0.25);
}

TEST_F(GrpoTest, ResumedRunMatchesTheUninterruptedOne) {
  JobSpec spec = RlSpec();
  spec.hyperparameters.epochs = 3;
  spec.checkpoints.interval_steps = 2;
  spec.reinforcement->iterations_per_batch = 2;
  Recorder full;
  auto a = Trainer::Create(Setup(spec, dir_ + "/a"));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Run(&full).ok());
  Recorder first;
  first.stop_after = 3;
  auto b = Trainer::Create(Setup(spec, dir_ + "/b"));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->Run(&first).ok());
  Recorder second;
  auto c = Trainer::Create(Setup(spec, dir_ + "/b"));
  ASSERT_TRUE(c.ok());
  auto done = (*c)->Run(&second);
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_FALSE(second.train.empty());
  for (const TrainMetrics& m : second.train) {
    EXPECT_NEAR(m.loss, full.train[m.step - 1].loss, 1e-6) << "step " << m.step;
    EXPECT_DOUBLE_EQ(m.reinforcement->reward_mean,
                     full.train[m.step - 1].reinforcement->reward_mean);
  }
}

}  // namespace
}  // namespace switchyard::training
