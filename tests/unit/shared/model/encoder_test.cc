// BertEncoder and sentence-transformers pooling against the reference.
#include "shared/model/encoder.h"

#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/unit/shared/model/model_testing.h"

namespace switchyard::model {
namespace {

using testing::FixtureDir;
using testing::Reference;
using testing::RelativeError;

class EncoderParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EncoderParityTest, HiddenStatesAndSentenceEmbeddingsMatchTheReference) {
  const std::string fixture = GetParam();
  auto encoder = BertEncoder::Load(FixtureDir(fixture), {});
  ASSERT_TRUE(encoder.ok()) << encoder.status();
  c10::InferenceMode guard;
  at::Tensor ids = Reference(fixture, "input_ids"), mask = Reference(fixture, "attention_mask");
  at::Tensor types = Reference(fixture, "token_type_ids");
  auto hidden = (*encoder)->LastHidden(ids, mask, types);
  ASSERT_TRUE(hidden.ok()) << hidden.status();
  EXPECT_LT(RelativeError(*hidden, Reference(fixture, "last_hidden_state"), mask), 1e-5);
  auto embedding = (*encoder)->Embed(ids, mask, types);
  ASSERT_TRUE(embedding.ok()) << embedding.status();
  EXPECT_EQ(embedding->size(1), (*encoder)->dimension());
  EXPECT_LT(RelativeError(*embedding, Reference(fixture, "sentence_embedding")), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EncoderParityTest, ::testing::Values("bert", "bert-cls"),
                         [](const auto& info) {
                           return info.param == "bert" ? "mean_normalized" : "cls";
                         });

TEST(EncoderTest, PoolingConfigComesFromSentenceTransformersFiles) {
  auto mean = LoadPoolingConfig(FixtureDir("bert"));
  ASSERT_TRUE(mean.ok()) << mean.status();
  EXPECT_TRUE(mean->mean && mean->normalize && !mean->cls);
  auto cls = LoadPoolingConfig(FixtureDir("bert-cls"));
  ASSERT_TRUE(cls.ok());
  EXPECT_TRUE(cls->cls && !cls->mean && !cls->normalize);
  // A plain transformers directory: mean pooling, no normalisation.
  auto plain = LoadPoolingConfig(FixtureDir("llama"));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->mean && !plain->normalize);
}

TEST(EncoderTest, DecoderCheckpointIsNotAnEncoder) {
  auto encoder = BertEncoder::Load(FixtureDir("llama"), {});
  EXPECT_THAT(encoder.status().message(), ::testing::HasSubstr("is not a BERT encoder"));
}

}  // namespace
}  // namespace switchyard::model
