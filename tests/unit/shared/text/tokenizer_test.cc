// Parity with Hugging Face tokenizers: fixtures made by
// tools/text/make_tokenizer_fixtures.mjs with the official JS implementation
// over tests/data/text/corpus.jsonl (English, code, whitespace runs, digits,
// CJK, emoji, accents, special tokens in text), for real tokenizer.json files.
#include "shared/text/tokenizer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/text/unicode.h"

namespace switchyard::text {
namespace {

using ::testing::HasSubstr;

std::string TokenizerDir(const std::string& name) {
  return absl::StrCat(SWITCHYARD_TOKENIZER_DIR, "/", name);
}

std::vector<nlohmann::json> Fixtures(const std::string& name) {
  std::ifstream in(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/", name, ".fixtures.jsonl"));
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

class TokenizerParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerParityTest, EncodeAndDecodeMatchHuggingFaceOnEveryCorpusLine) {
  auto tokenizer = Tokenizer::FromFile(TokenizerDir(GetParam()));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<nlohmann::json> fixtures = Fixtures(GetParam());
  ASSERT_GT(fixtures.size(), 100u);
  for (const nlohmann::json& f : fixtures) {
    const std::string text = f["text"].get<std::string>();
    auto ids = (*tokenizer)->Encode(text, /*add_special_tokens=*/true);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, f["ids"].get<std::vector<int32_t>>()) << "text: " << text;
    auto plain = (*tokenizer)->Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(plain.ok()) << plain.status();
    EXPECT_EQ(*plain, f["ids_no_special"].get<std::vector<int32_t>>()) << "text: " << text;
    auto decoded = (*tokenizer)->Decode(f["ids"].get<std::vector<int32_t>>());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, f["decoded"].get<std::string>()) << "text: " << text;
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, TokenizerParityTest,
                         ::testing::Values("gpt2", "mistral", "qwen3", "bert-uncased",
                                           "bert-variant", "mistral-metaspace",
                                           "mistral-metaspace-split", "gpt2-added"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

class DecodeStreamTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeStreamTest, ChunksConcatenateToTheFullDecodeAndNeverSplitACharacter) {
  auto tokenizer = Tokenizer::FromFile(TokenizerDir(GetParam()));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  for (const nlohmann::json& f : Fixtures(GetParam())) {
    const std::vector<int32_t> ids = f["ids"].get<std::vector<int32_t>>();
    DecodeStream stream(tokenizer->get(), /*skip_special_tokens=*/false);
    std::string streamed;
    for (int32_t id : ids) {
      auto chunk = stream.Step(id);
      ASSERT_TRUE(chunk.ok()) << chunk.status();
      int length = 0;
      for (size_t i = 0; i < chunk->size(); i += static_cast<size_t>(length)) {
        DecodeUtf8(absl::string_view(*chunk).substr(i), &length);
        ASSERT_FALSE(length == 1 && static_cast<unsigned char>((*chunk)[i]) >= 0x80)
            << "broken UTF-8 in a chunk of: " << f["text"];
      }
      streamed += *chunk;
    }
    const std::string full = *(*tokenizer)->Decode(ids);
    // What is still held back at the end is an incomplete character or nothing.
    EXPECT_TRUE(absl::StartsWith(full, streamed)) << f["text"];
    if (!absl::EndsWith(full, "\xEF\xBF\xBD")) EXPECT_EQ(streamed, full) << f["text"];
  }
}

INSTANTIATE_TEST_SUITE_P(RealTokenizers, DecodeStreamTest,
                         ::testing::Values("gpt2", "mistral", "qwen3", "mistral-metaspace-split"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(TokenizerTest, ConcurrentEncodesGiveTheSameIds) {
  auto tokenizer = Tokenizer::FromFile(TokenizerDir("gpt2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<nlohmann::json> fixtures = Fixtures("gpt2");
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 3; ++round) {
        for (const nlohmann::json& f : fixtures) {
          auto ids = (*tokenizer)->Encode(f["text"].get<std::string>());
          if (!ids.ok() || *ids != f["ids"].get<std::vector<int32_t>>()) ++mismatches;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(TokenizerTest, MalformedTokenizerJsonNamesTheField) {
  auto bad_json = Tokenizer::FromJson("{not json", "x.json");
  EXPECT_EQ(bad_json.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_json.status().message(), HasSubstr("x.json"));

  auto no_model = Tokenizer::FromJson(R"({"version":"1.0"})", "x.json");
  EXPECT_THAT(no_model.status().message(), HasSubstr("model"));

  auto bad_merge = Tokenizer::FromJson(
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b","a c"]}})", "x.json");
  EXPECT_EQ(bad_merge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_merge.status().message(), HasSubstr("model.merges[1]"));

  auto bad_regex = Tokenizer::FromJson(
      R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},)"
      R"("pre_tokenizer":{"type":"Split","pattern":{"Regex":"(unclosed"},"behavior":"Isolated"}})",
      "x.json");
  EXPECT_THAT(bad_regex.status().message(), HasSubstr("pre_tokenizer.pattern.Regex"));

  auto unsupported =
      Tokenizer::FromJson(R"({"model":{"type":"Unigram","vocab":[["a",0.0]]}})", "x.json");
  EXPECT_THAT(unsupported.status().message(), HasSubstr("model.type"));

  auto bad_id =
      Tokenizer::FromJson(R"({"model":{"type":"BPE","vocab":{"a":-3},"merges":[]}})", "x.json");
  EXPECT_THAT(bad_id.status().message(), HasSubstr("model.vocab"));
}

TEST(TokenizerTest, LiteralSplitMergedWithPreviousAsGemma) {
  // Gemma splits on a literal " ", keeping each space with the word before it.
  auto tokenizer = Tokenizer::FromJson(
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1," ":2,"a ":3},"merges":[["a"," "]]},)"
      R"("pre_tokenizer":{"type":"Split","pattern":{"String":" "},)"
      R"("behavior":"MergedWithPrevious","invert":false}})",
      "x.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(*(*tokenizer)->Encode("a b"), (std::vector<int32_t>{3, 1}));
  EXPECT_EQ(*(*tokenizer)->Encode("a  b"), (std::vector<int32_t>{3, 2, 1}));
}

// A tokenizer whose vocabulary is single characters, so ids show the pieces:
// merges join "a"+"b" only; pre-tokenizer and normalizer under test.
absl::StatusOr<std::unique_ptr<Tokenizer>> Letters(const std::string& normalizer,
                                                   const std::string& pre_tokenizer) {
  return Tokenizer::FromJson(
      absl::StrCat(R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"1":2,"2":3,"3":4,"e":5,)",
                   R"("ab":6,"12":7,"123":8,"23":9},"merges":["a b","1 2","12 3","2 3"]},)",
                   R"("normalizer":)", normalizer, R"(,"pre_tokenizer":)", pre_tokenizer, "}"),
      "x.json");
}

TEST(TokenizerTest, DigitsPreTokenizerIsolatesRunsOrEachDigit) {
  auto runs = Letters("null", R"({"type":"Digits","individual_digits":false})");
  ASSERT_TRUE(runs.ok()) << runs.status();
  EXPECT_EQ(*(*runs)->Encode("ab123"), (std::vector<int32_t>{6, 8}));
  auto each = Letters("null", R"({"type":"Digits","individual_digits":true})");
  ASSERT_TRUE(each.ok()) << each.status();
  EXPECT_EQ(*(*each)->Encode("ab123"), (std::vector<int32_t>{6, 2, 3, 4}));
}

TEST(TokenizerTest, StripAccentsAfterNfdDropsCombiningMarks) {
  auto t = Letters(R"({"type":"Sequence","normalizers":[{"type":"NFD"},{"type":"StripAccents"}]})",
                   "null");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*(*t)->Encode("\xc3\xa9"), (std::vector<int32_t>{5}));  // "é" -> "e"
}

TEST(TokenizerTest, InvalidUtf8TextIsAnErrorNamingTheByte) {
  auto tokenizer = Tokenizer::FromFile(TokenizerDir("gpt2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  auto ids = (*tokenizer)->Encode("ok \xff\xfe");
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(ids.status().message(), HasSubstr("byte 4"));
}

TEST(TokenizerTest, DecodeOfAnUnknownIdIsAnError) {
  auto tokenizer = Tokenizer::FromJson(
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}})", "x.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ(*(*tokenizer)->Encode("abab"), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ((*tokenizer)->Decode({7}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::text
