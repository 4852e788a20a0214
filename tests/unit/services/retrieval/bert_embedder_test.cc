// BertEmbedder against BertEncoder run directly, on the tiny BERT fixtures.
//
// The model fixtures (tests/data/model/bert*) have a 256-token vocabulary and
// no tokenizer.json, so each test assembles a model directory in a temporary
// folder: the fixture's files plus bert-uncased's tokenizer.json
// (tests/data/text) with its vocabulary cut to 256 entries that keep BERT's
// special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102).
#include "services/retrieval/bert_embedder.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "shared/model/encoder.h"
#include "shared/text/tokenizer.h"
#include "tests/testing/tiny_bert.h"

namespace switchyard::retrieval {
namespace {

namespace fs = std::filesystem;

const std::string kData = SWITCHYARD_TEST_DATA_DIR;

using switchyard::testing::kTinyBertWords;
using switchyard::testing::TinyBertDir;

std::unique_ptr<BertEmbedder> LoadOrDie(const std::string& dir, int batch_size = 32) {
  auto embedder = BertEmbedder::Load(dir, batch_size);
  EXPECT_TRUE(embedder.ok()) << embedder.status();
  return embedder.ok() ? *std::move(embedder) : nullptr;
}

std::vector<float> Row(const std::vector<float>& v, size_t i, int d) {
  return std::vector<float>(v.begin() + i * d, v.begin() + (i + 1) * d);
}

double Norm(const std::vector<float>& row) {
  double n = 0;
  for (float x : row) n += static_cast<double>(x) * x;
  return std::sqrt(n);
}

void ExpectNear(const std::vector<float>& actual, const std::vector<float>& expected,
                double tolerance) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    ASSERT_NEAR(actual[i], expected[i], tolerance) << "at " << i;
  }
}

// `n` whole-token words cycling through kTinyBertWords.
std::string Words(int n) {
  std::vector<std::string> words;
  for (int i = 0; i < n; ++i) words.push_back(kTinyBertWords[i % kTinyBertWords.size()]);
  return absl::StrJoin(words, " ");
}

class BertEmbedderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BertEmbedderTest, EmbedIsTheEncodersUnitVectorOfTheTokenizedText) {
  TinyBertDir dir(GetParam());
  std::unique_ptr<BertEmbedder> embedder = LoadOrDie(dir.path());
  ASSERT_NE(embedder, nullptr);
  auto encoder = model::BertEncoder::Load(dir.path(), {});
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  auto tokenizer = text::Tokenizer::FromFile(dir.path());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const int d = embedder->dimension();
  EXPECT_EQ(d, (*encoder)->dimension());

  const std::vector<std::string> texts = {"the cat sat on the mat", "Hello, world!",
                                          "unbelievable"};
  auto got = embedder->Embed(texts);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), texts.size() * d);
  c10::InferenceMode guard;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto ids = (*tokenizer)->Encode(texts[i], true);
    ASSERT_TRUE(ids.ok());
    ASSERT_EQ(ids->front(), 101);
    ASSERT_EQ(ids->back(), 102);
    std::vector<int64_t> ids64(ids->begin(), ids->end());
    const int64_t T = static_cast<int64_t>(ids64.size());
    at::Tensor input = at::tensor(ids64, at::kLong).view({1, T});  // (1, T)
    auto embedded = (*encoder)->Embed(input, at::ones({1, T}, at::kLong));
    ASSERT_TRUE(embedded.ok()) << embedded.status();
    at::Tensor e = embedded->view({d});
    e = e / e.norm().clamp_min(1e-12);  // bert-cls has no Normalize module
    std::vector<float> expected(e.data_ptr<float>(), e.data_ptr<float>() + d);
    ExpectNear(Row(*got, i, d), expected, 1e-5);
    EXPECT_NEAR(Norm(Row(*got, i, d)), 1.0, 1e-5);
  }
}

TEST_P(BertEmbedderTest, PaddingInABatchDoesNotChangeVectors) {
  TinyBertDir dir(GetParam());
  std::unique_ptr<BertEmbedder> embedder = LoadOrDie(dir.path(), /*batch_size=*/2);
  ASSERT_NE(embedder, nullptr);
  const int d = embedder->dimension();
  const std::vector<std::string> texts = {
      "cat", Words(50), "hello world", Words(20), "the red dog ran", Words(7), "unbelievable"};
  auto together = embedder->Embed(texts);
  ASSERT_TRUE(together.ok()) << together.status();
  for (size_t i = 0; i < texts.size(); ++i) {
    auto alone = embedder->Embed({texts[i]});
    ASSERT_TRUE(alone.ok()) << alone.status();
    ExpectNear(Row(*together, i, d), *alone, 1e-5);
  }
}

TEST_P(BertEmbedderTest, LongTextIsTruncatedToMaxTokens) {
  TinyBertDir dir(GetParam());
  std::unique_ptr<BertEmbedder> embedder = LoadOrDie(dir.path());
  ASSERT_NE(embedder, nullptr);
  const int limit = embedder->max_tokens();
  ASSERT_EQ(embedder->CountTokens(Words(limit)), limit);
  auto got = embedder->Embed({Words(3 * limit), Words(limit), Words(limit + 1)});
  ASSERT_TRUE(got.ok()) << got.status();
  const int d = embedder->dimension();
  ExpectNear(Row(*got, 0, d), Row(*got, 1, d), 1e-5);
  ExpectNear(Row(*got, 2, d), Row(*got, 1, d), 1e-5);
}

TEST_P(BertEmbedderTest, TextWithoutTokensGetsAZeroVector) {
  TinyBertDir dir(GetParam());
  std::unique_ptr<BertEmbedder> embedder = LoadOrDie(dir.path());
  ASSERT_NE(embedder, nullptr);
  auto got = embedder->Embed({"", "the cat", "   "});
  ASSERT_TRUE(got.ok()) << got.status();
  const int d = embedder->dimension();
  EXPECT_EQ(Norm(Row(*got, 0, d)), 0.0);
  EXPECT_NEAR(Norm(Row(*got, 1, d)), 1.0, 1e-5);
  EXPECT_EQ(Norm(Row(*got, 2, d)), 0.0);
  auto none = embedder->Embed({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_P(BertEmbedderTest, ConcurrentEmbedsAgree) {
  TinyBertDir dir(GetParam());
  std::unique_ptr<BertEmbedder> embedder = LoadOrDie(dir.path(), /*batch_size=*/2);
  ASSERT_NE(embedder, nullptr);
  const std::vector<std::string> texts = {"the cat sat", Words(30), "hello", Words(9)};
  auto expected = embedder->Embed(texts);
  ASSERT_TRUE(expected.ok());
  std::vector<std::vector<float>> results(4);
  std::vector<std::thread> threads;
  for (auto& result : results) {
    threads.emplace_back([&] {
      auto r = embedder->Embed(texts);
      if (r.ok()) result = *std::move(r);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& result : results) ExpectNear(result, *expected, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BertEmbedderTest, ::testing::Values("bert", "bert-cls"),
                         [](const auto& info) {
                           return info.param == "bert" ? "mean_normalized" : "cls";
                         });

TEST(BertEmbedderLimitsTest, CountTokensCountsWordPiecesWithoutSpecials) {
  TinyBertDir dir("bert");
  std::unique_ptr<BertEmbedder> embedder = LoadOrDie(dir.path());
  ASSERT_NE(embedder, nullptr);
  EXPECT_EQ(embedder->CountTokens("unbelievable"), 3);  // un ##believ ##able
  EXPECT_EQ(embedder->CountTokens("cat"), 1);
  EXPECT_EQ(embedder->CountTokens(""), 0);
  EXPECT_EQ(embedder->dimension(), 64);
}

TEST(BertEmbedderLimitsTest, MaxTokensIsMaxSeqLengthLessSpecialsCappedByPositions) {
  // Fixture: max_seq_length 64, max_position_embeddings 64, [CLS] + [SEP].
  TinyBertDir fixture("bert");
  std::unique_ptr<BertEmbedder> e = LoadOrDie(fixture.path());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->max_tokens(), 62);

  TinyBertDir shorter("bert", R"({"max_seq_length": 16, "do_lower_case": false})");
  e = LoadOrDie(shorter.path());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->max_tokens(), 14);

  TinyBertDir longer("bert", R"({"max_seq_length": 512})");
  e = LoadOrDie(longer.path());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->max_tokens(), 62);

  TinyBertDir absent("bert", "");
  e = LoadOrDie(absent.path());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->max_tokens(), 62);

  TinyBertDir no_room("bert", R"({"max_seq_length": 2})");
  auto refused = BertEmbedder::Load(no_room.path());
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr(no_room.path()));
}

TEST(BertEmbedderLoadTest, ErrorsNameTheDirectory) {
  const std::string llama = kData + "/model/llama";
  auto decoder = BertEmbedder::Load(llama);
  EXPECT_FALSE(decoder.ok());
  EXPECT_THAT(decoder.status().message(), ::testing::HasSubstr(llama));

  const std::string missing = kData + "/model/no-such-model";
  auto absent = BertEmbedder::Load(missing);
  EXPECT_FALSE(absent.ok());
  EXPECT_THAT(absent.status().message(), ::testing::HasSubstr(missing));

  // The model fixture alone has no tokenizer.json.
  const std::string no_tokenizer = kData + "/model/bert";
  auto untokenized = BertEmbedder::Load(no_tokenizer);
  EXPECT_FALSE(untokenized.ok());
  EXPECT_THAT(untokenized.status().message(), ::testing::HasSubstr(no_tokenizer));

  TinyBertDir dir("bert");
  auto zero_batch = BertEmbedder::Load(dir.path(), 0);
  EXPECT_FALSE(zero_batch.ok());
}

}  // namespace
}  // namespace switchyard::retrieval
