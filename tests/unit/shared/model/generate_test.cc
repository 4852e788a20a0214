// Sampling processors, stopping and streaming of Generate.
#include "shared/model/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "shared/core/file_util.h"
#include "shared/model/init.h"
#include "tests/unit/shared/model/model_testing.h"

namespace switchyard::model {
namespace {

using ::testing::HasSubstr;

at::Tensor Logits(std::vector<float> v) { return at::tensor(v, at::kFloat); }

TEST(SampleTokenTest, GreedyTakesTheArgmaxAfterTheRepetitionPenalty) {
  at::Generator gen = at::detail::createCPUGenerator(1);
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(SampleToken(Logits({1, 3, 2}), p, {}, gen), 1);
  p.repetition_penalty = 2.0;  // 3 / 2 = 1.5 < 2
  EXPECT_EQ(SampleToken(Logits({1, 3, 2}), p, {1}, gen), 2);
  // Negative scores are multiplied: -1 * 2 = -2 < -1.5.
  EXPECT_EQ(SampleToken(Logits({-1, -1.5, -3}), p, {0}, gen), 1);
}

TEST(SampleTokenTest, TopKOneTopPTinyAndMinPOneAreGreedy) {
  at::Tensor logits = Logits({0.5, 2.0, 1.9, -1, 1.95});
  for (int seed = 0; seed < 20; ++seed) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    SamplingParams k;
    k.top_k = 1;
    EXPECT_EQ(SampleToken(logits, k, {}, gen), 1);
    SamplingParams p;
    p.top_p = 1e-6;
    EXPECT_EQ(SampleToken(logits, p, {}, gen), 1);
    SamplingParams m;
    m.min_p = 1.0;
    EXPECT_EQ(SampleToken(logits, m, {}, gen), 1);
  }
}

TEST(SampleTokenTest, TopKAndTopPLimitTheCandidates) {
  at::Tensor logits = Logits({3.0, 2.9, 2.8, -5, -5, -5});
  std::set<int64_t> topk, topp;
  for (int seed = 0; seed < 200; ++seed) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    SamplingParams k;
    k.top_k = 2;
    topk.insert(SampleToken(logits, k, {}, gen));
    SamplingParams p;
    p.top_p = 0.5;  // the first two hold about 0.67 of the mass
    topp.insert(SampleToken(logits, p, {}, gen));
  }
  EXPECT_EQ(topk, (std::set<int64_t>{0, 1}));
  EXPECT_EQ(topp, (std::set<int64_t>{0, 1}));
}

TEST(SampleTokenTest, SameSeedSameDraws) {
  at::Tensor logits = at::randn({50});
  std::vector<int64_t> a, b;
  at::Generator g1 = at::detail::createCPUGenerator(42), g2 = at::detail::createCPUGenerator(42);
  SamplingParams p;
  for (int i = 0; i < 30; ++i) {
    a.push_back(SampleToken(logits, p, {}, g1));
    b.push_back(SampleToken(logits, p, {}, g2));
  }
  EXPECT_EQ(a, b);
  EXPECT_GT(std::set<int64_t>(a.begin(), a.end()).size(), 3u);
}

TEST(SamplingParamsTest, ValidationNamesTheField) {
  SamplingParams p;
  p.top_p = 1.5;
  EXPECT_THAT(p.Validate().message(), HasSubstr("top_p must be in (0, 1], got 1.5"));
  p = SamplingParams();
  p.max_new_tokens = 0;
  EXPECT_THAT(p.Validate().message(), HasSubstr("max_new_tokens"));
  p = SamplingParams();
  p.temperature = -1;
  EXPECT_THAT(p.Validate().message(), HasSubstr("temperature"));
}

// A tiny model with the byte-level tokenizer written by InitCheckpoint.
class GenerateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/generate-" + RandomHex(4);
    InitOptions o;
    o.arch = Architecture::kLlama;
    o.layers = 1;
    o.hidden = 32;
    o.heads = 2;
    o.seed = 5;
    ASSERT_TRUE(InitCheckpoint(o, dir_).ok());
    auto lm = CausalLm::Load(dir_, {});
    ASSERT_TRUE(lm.ok()) << lm.status();
    lm_ = *std::move(lm);
    auto tok = text::Tokenizer::FromFile(dir_ + "/tokenizer.json");
    ASSERT_TRUE(tok.ok());
    tokenizer_ = *std::move(tok);
  }
  void TearDown() override { RemoveAll(dir_).IgnoreError(); }
  GenerationRequest Request(const std::string& prompt, int64_t max_new) {
    GenerationRequest r;
    for (unsigned char c : prompt) r.prompt_ids.push_back(c);
    r.params.max_new_tokens = max_new;
    r.params.seed = 11;
    r.params.ignore_eos = true;
    return r;
  }
  std::string dir_;
  std::unique_ptr<CausalLm> lm_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
};

TEST_F(GenerateTest, BatchedRequestsEqualSingleRequests) {
  std::vector<GenerationRequest> requests = {Request("hello there", 12), Request("hi", 7)};
  requests[1].params.temperature = 0;
  auto batch = Generate(*lm_, tokenizer_.get(), requests, {});
  ASSERT_TRUE(batch.ok()) << batch.status();
  for (size_t i = 0; i < requests.size(); ++i) {
    auto single = Generate(*lm_, tokenizer_.get(), {requests[i]}, {});
    ASSERT_TRUE(single.ok());
    EXPECT_EQ((*batch)[i].token_ids, (*single)[0].token_ids) << i;
    EXPECT_EQ((*batch)[i].finish_reason, "length");
    ASSERT_EQ((*batch)[i].logprobs.size(), (*batch)[i].token_ids.size());
    for (size_t t = 0; t < (*batch)[i].logprobs.size(); ++t) {
      EXPECT_NEAR((*batch)[i].logprobs[t], (*single)[0].logprobs[t], 1e-4);
      EXPECT_LE((*batch)[i].logprobs[t], 0.0);
    }
  }
  EXPECT_EQ((*batch)[1].token_ids.size(), 7u);
}

TEST_F(GenerateTest, StreamedTextEqualsTheFinalTextAndStopsCut) {
  GenerationRequest r = Request("abc", 40);
  auto plain = Generate(*lm_, tokenizer_.get(), {r}, {});
  ASSERT_TRUE(plain.ok());
  const std::string full = (*plain)[0].text;
  ASSERT_GE(full.size(), 6u);
  // Stop at a substring that appears in the middle of the unconstrained output.
  const std::string stop = full.substr(3, 2);
  r.params.stop = {stop, "never-appears"};
  std::string streamed;
  auto out = Generate(*lm_, tokenizer_.get(), {r}, {}, [&](size_t, const StreamedToken& t) {
    streamed += t.text;
    return true;
  });
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].finish_reason, "stop");
  EXPECT_EQ((*out)[0].stop_reason, stop);
  EXPECT_EQ((*out)[0].text, full.substr(0, full.find(stop)));
  EXPECT_EQ(streamed, (*out)[0].text);
}

TEST_F(GenerateTest, EosAndStopTokensEndTheRowWithoutBeingReturned) {
  GenerationRequest r = Request("xyz", 20);
  r.params.temperature = 0;
  auto free_run = Generate(*lm_, tokenizer_.get(), {r}, {});
  ASSERT_TRUE(free_run.ok());
  const int64_t third = (*free_run)[0].token_ids[2];
  r.params.ignore_eos = false;
  auto eos = Generate(*lm_, tokenizer_.get(), {r}, {third});
  ASSERT_TRUE(eos.ok());
  EXPECT_EQ((*eos)[0].finish_reason, "stop");
  EXPECT_EQ((*eos)[0].token_ids.size(), 2u);
  r.params.stop_token_ids = {third};
  auto stop = Generate(*lm_, tokenizer_.get(), {r}, {});
  EXPECT_EQ((*stop)[0].token_ids.size(), 2u);
  EXPECT_EQ((*stop)[0].stop_reason, std::to_string(third));
}

TEST_F(GenerateTest, CallbackReturningFalseCancelsTheRow) {
  int calls = 0;
  auto out = Generate(*lm_, tokenizer_.get(), {Request("a", 50)}, {},
                      [&](size_t, const StreamedToken&) { return ++calls < 3; });
  ASSERT_TRUE(out.ok());
  EXPECT_EQ((*out)[0].finish_reason, "cancelled");
  EXPECT_EQ((*out)[0].token_ids.size(), 3u);
}

TEST_F(GenerateTest, BadRequestsAreErrors) {
  GenerationRequest r = Request("a", 5);
  r.prompt_ids = {9999};
  EXPECT_THAT(Generate(*lm_, nullptr, {r}, {}).status().message(),
              HasSubstr("outside the vocabulary"));
  r = Request("a", 5);
  r.params.stop = {"x"};
  EXPECT_THAT(Generate(*lm_, nullptr, {r}, {}).status().message(), HasSubstr("tokenizer"));
  r.prompt_ids.clear();
  EXPECT_FALSE(Generate(*lm_, tokenizer_.get(), {r}, {}).ok());
}

TEST_F(GenerateTest, GenerationConfigSuppliesEosAndDefaults) {
  auto defaults = LoadGenerationDefaults(dir_, lm_->config());
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->eos_token_ids,
            (std::vector<int64_t>{256, 258}));  // <|endoftext|>, <|im_end|>
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/generation_config.json",
                              R"({"eos_token_id": [3, 4], "temperature": 0.6, "top_p": 0.9})")
                  .ok());
  defaults = LoadGenerationDefaults(dir_, lm_->config());
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->eos_token_ids, (std::vector<int64_t>{3, 4}));
  EXPECT_DOUBLE_EQ(defaults->params.temperature, 0.6);
  EXPECT_DOUBLE_EQ(defaults->params.top_p, 0.9);
}

}  // namespace
}  // namespace switchyard::model
