#include "services/dataset/dataset_stats.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/dataset/text_scan.h"

namespace switchyard::dataset {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// ---- Scalar references -------------------------------------------------------

bool RefIsSpace(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Lower-cased ASCII, whitespace runs collapsed to one space, trimmed.
std::string RefNormalize(const std::string& text) {
  std::string out;
  bool pending_space = false;
  for (unsigned char c : text) {
    if (RefIsSpace(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : static_cast<char>(c));
  }
  return out;
}

TextScan RefScan(const std::string& text) {
  TextScan s;
  bool in_word = false;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) ++s.characters;
    bool ws = RefIsSpace(c);
    if (!ws && !in_word) ++s.words;
    in_word = !ws;
  }
  return s;
}

std::string Normalized(const std::string& text) {
  std::string out;
  AppendNormalized(text, &out);
  return out;
}

// Random text of length 0..max_len made of the given pieces.
std::string RandomText(std::mt19937* rng, size_t max_len, const std::vector<std::string>& pieces) {
  std::uniform_int_distribution<size_t> len_dist(0, max_len);
  std::uniform_int_distribution<size_t> piece_dist(0, pieces.size() - 1);
  const size_t target = len_dist(*rng);
  std::string out;
  while (out.size() < target) out += pieces[piece_dist(*rng)];
  return out;
}

// ---- ScanText / CountText ---------------------------------------------------------

TEST(ScanTextTest, CountsAsciiCharactersAndWords) {
  TextScan s = ScanText("hello there world");
  EXPECT_EQ(s.characters, 17);
  EXPECT_EQ(s.words, 3);
}

TEST(ScanTextTest, EmptyTextHasNothing) {
  TextScan s = ScanText("");
  EXPECT_EQ(s.characters, 0);
  EXPECT_EQ(s.words, 0);
}

TEST(ScanTextTest, CountsMultiByteUtf8AsOneCharacterEach) {
  // é (2 bytes), 東京 (3 bytes each), 👍 (4 bytes).
  TextScan s = ScanText("caf\xc3\xa9 \xe6\x9d\xb1\xe4\xba\xac \xf0\x9f\x91\x8d");
  EXPECT_EQ(s.characters, 4 + 1 + 2 + 1 + 1);
  EXPECT_EQ(s.words, 3);
}

TEST(ScanTextTest, WhitespaceRunsSeparateWordsOnce) {
  TextScan s = ScanText("  a \t\n b\r\n\fc\v ");
  EXPECT_EQ(s.words, 3);
  EXPECT_EQ(s.characters, 14);
}

TEST(ScanTextTest, LongStringsTakeTheVectorPathWithTheSameCounts) {
  // Each over 16 bytes, with features at and across 16-byte block edges.
  const std::vector<std::string> cases = {
      "the quick brown fox jumps over the lazy dog",
      "abcdefghijklmnopQrstuvwxyz",
      "abcdefghijklmnop  qrstuvwxyz",
      "abcdefghijklmno\t\tpqrstuvwxyz",
      std::string(100, 'a'),
      std::string(100, ' '),
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
      "word word word word word word word word word word word word",
  };
  for (const std::string& text : cases) {
    TextScan want = RefScan(text);
    TextScan got = ScanText(text);
    EXPECT_EQ(got.characters, want.characters) << "\"" << text << "\"";
    EXPECT_EQ(got.words, want.words) << "\"" << text << "\"";
  }
}

TEST(ScanTextTest, MatchesScalarReferenceOnRandomStrings) {
  std::mt19937 rng(1234);
  const std::vector<std::string> pieces = {
      "a", "Z", "q", " ", "  ", "\t", "\n", "\r", "\xc3\xa9", "\xe6\x9d\xb1", "\xf0\x9f\x91\x8d",
      ".", "x"};
  for (int iter = 0; iter < 5000; ++iter) {
    std::string text = RandomText(&rng, 200, pieces);
    TextScan want = RefScan(text);
    TextScan got = ScanText(text);
    ASSERT_EQ(got.characters, want.characters) << "\"" << text << "\"";
    ASSERT_EQ(got.words, want.words) << "\"" << text << "\"";
  }
}

TEST(ScanAndNormalizeTest, CountsAndNormalizesInOnePassLikeTheSeparateCalls) {
  std::mt19937 rng(99);
  const std::vector<std::string> pieces = {
      "a", "B", " ", "  ", "\n", "\t", "\xc3\xa9", "Word", "\xe6\x9d\xb1", ".", "ZZ"};
  for (int iter = 0; iter < 5000; ++iter) {
    std::string text = RandomText(&rng, 300, pieces);
    // Bytes past the output are left alone beyond the documented slack.
    std::string buffer(text.size() + kNormalizeSlack + 8, '#');
    size_t written = 0;
    TextScan got = ScanAndNormalize(text, buffer.data(), &written);
    std::string normalized = "#" + buffer.substr(0, written);
    ASSERT_EQ(buffer.substr(text.size() + kNormalizeSlack), "########");
    TextScan want = RefScan(text);
    ASSERT_EQ(got.characters, want.characters) << "\"" << text << "\"";
    ASSERT_EQ(got.words, want.words) << "\"" << text << "\"";
    ASSERT_EQ(normalized, "#" + RefNormalize(text)) << "\"" << text << "\"";
  }
}

TEST(ScanAndNormalizeTest, Sse2PathMatchesTheReferenceIncludingLongStrings) {
  UseAvx2ForTesting(false);
  std::mt19937 rng(5);
  const std::vector<std::string> pieces = {"a", "B", " ", "  ", "\n", "\xc3\xa9", "Word", "x"};
  for (int iter = 0; iter < 2000; ++iter) {
    std::string text = RandomText(&rng, 300, pieces);
    std::string normalized;
    AppendNormalized(text, &normalized);
    TextScan got = ScanText(text);
    TextScan want = RefScan(text);
    ASSERT_EQ(got.characters, want.characters) << "\"" << text << "\"";
    ASSERT_EQ(got.words, want.words) << "\"" << text << "\"";
    ASSERT_EQ(normalized, RefNormalize(text)) << "\"" << text << "\"";
  }
  // Counts past 65,535 per string: both 64-bit lanes of the running sums.
  std::string big;
  for (int i = 0; i < 100000; ++i) big += "\xc3\xa9 ";  // 100k words, 200k characters
  TextScan got = ScanText(big);
  EXPECT_EQ(got.words, 100000);
  EXPECT_EQ(got.characters, 200000);
  UseAvx2ForTesting(true);
  got = ScanText(big);
  EXPECT_EQ(got.words, 100000);
  EXPECT_EQ(got.characters, 200000);
}

TEST(CountTextTest, AddsToTheCounters) {
  int64_t characters = 10, words = 1;
  CountText("two words", &characters, &words);
  EXPECT_EQ(characters, 19);
  EXPECT_EQ(words, 3);
}

// ---- AppendNormalized ----------------------------------------------------------------

TEST(AppendNormalizedTest, LowerCasesAsciiOnly) {
  EXPECT_EQ(Normalized("Hello WORLD"), "hello world");
  EXPECT_EQ(Normalized("\xc3\x89T\xc3\x89"), "\xc3\x89t\xc3\x89");  // ÉTÉ: only T changes
}

TEST(AppendNormalizedTest, CollapsesWhitespaceRunsAndTrimsEdges) {
  EXPECT_EQ(Normalized("  a \t\n b  "), "a b");
  EXPECT_EQ(Normalized("a\r\nb"), "a b");
  EXPECT_EQ(Normalized(" \t\n "), "");
  EXPECT_EQ(Normalized(""), "");
  EXPECT_EQ(Normalized("x"), "x");
  EXPECT_EQ(Normalized(" x"), "x");
  EXPECT_EQ(Normalized("x "), "x");
}

TEST(AppendNormalizedTest, AppendsWithoutTouchingExistingContent) {
  std::string out = "prefix ";
  AppendNormalized("  Some   TEXT  ", &out);
  EXPECT_EQ(out, "prefix some text");
  AppendNormalized("", &out);
  EXPECT_EQ(out, "prefix some text");
}

TEST(AppendNormalizedTest, LongStringsMatchReference) {
  const std::vector<std::string> cases = {
      "The Quick Brown Fox Jumps Over The Lazy Dog",
      "abcdefghijklmnop  QRSTUVWXYZ  abcdefghijklmnop",
      "               leading spaces then words words words",
      "words words words then trailing spaces                 ",
      std::string(64, '\t'),
  };
  for (const std::string& text : cases) EXPECT_EQ(Normalized(text), RefNormalize(text)) << text;
}

TEST(AppendNormalizedTest, MatchesReferenceOnRandomStrings) {
  std::mt19937 rng(99);
  const std::vector<std::string> pieces = {"A", "a", " ", "\n", "\t", "\xc3\xa9"};
  for (int iter = 0; iter < 20000; ++iter) {
    std::string text = RandomText(&rng, 100, pieces);
    ASSERT_EQ(Normalized(text), RefNormalize(text)) << "\"" << text << "\"";
  }
}

// ---- Summarize ---------------------------------------------------------------------------

TEST(SummarizeTest, EmptySampleIsAllZero) {
  Summary s = Summarize({});
  EXPECT_EQ(s.mean, 0);
  EXPECT_EQ(s.p50, 0);
  EXPECT_EQ(s.p90, 0);
  EXPECT_EQ(s.min, 0);
  EXPECT_EQ(s.max, 0);
}

TEST(SummarizeTest, SingleValue) {
  Summary s = Summarize({7});
  EXPECT_EQ(s.mean, 7);
  EXPECT_EQ(s.p50, 7);
  EXPECT_EQ(s.p90, 7);
  EXPECT_EQ(s.min, 7);
  EXPECT_EQ(s.max, 7);
}

TEST(SummarizeTest, NearestRankPercentilesOfUnsortedInput) {
  Summary s = Summarize({5, 1, 3, 2, 4});
  EXPECT_EQ(s.min, 1);
  EXPECT_EQ(s.max, 5);
  EXPECT_EQ(s.p50, 3);
  EXPECT_EQ(s.p90, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3);
}

TEST(SummarizeTest, HistogramAndSelectionPathsMatchASortedReference) {
  std::mt19937 rng(3);
  for (int32_t max_value : {10, 5000, 1 << 19, 1 << 30}) {  // small ranges use a histogram
    for (int iter = 0; iter < 20; ++iter) {
      std::uniform_int_distribution<int32_t> value(0, max_value);
      std::vector<int32_t> values(1 + rng() % 2000);
      for (int32_t& v : values) v = value(rng);
      std::vector<int32_t> sorted = values;
      std::sort(sorted.begin(), sorted.end());
      auto rank = [&](double q) {
        size_t r = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
        return sorted[r == 0 ? 0 : r - 1];
      };
      Summary s = Summarize(values);
      ASSERT_EQ(s.p50, rank(0.5)) << max_value;
      ASSERT_EQ(s.p90, rank(0.9)) << max_value;
      ASSERT_EQ(s.min, sorted.front());
      ASSERT_EQ(s.max, sorted.back());
    }
  }
}

TEST(SummarizeTest, NearestRankOnOneToN) {
  for (int n : {2, 10, 20, 70, 99, 100, 101, 1000}) {
    std::vector<int32_t> values;
    for (int i = n; i >= 1; --i) values.push_back(i);
    Summary s = Summarize(values);
    // Nearest rank: the ceil(q * n)-th smallest value.
    EXPECT_EQ(s.p50, (n + 1) / 2) << "n=" << n;
    EXPECT_EQ(s.p90, (9 * n + 9) / 10) << "n=" << n;
    EXPECT_DOUBLE_EQ(s.mean, (n + 1) / 2.0) << "n=" << n;
    EXPECT_EQ(s.min, 1);
    EXPECT_EQ(s.max, n);
  }
}

// ---- DatasetStatsAccumulator ---------------------------------------------------------------

ExampleFacts Facts(absl::string_view label, int messages = 2, bool system = false) {
  ExampleFacts f;
  f.messages = messages;
  f.characters = 10;
  f.words = 2;
  f.roles[static_cast<int>(Role::kUser)] = 1;
  f.roles[static_cast<int>(Role::kAssistant)] = 1;
  if (system) f.roles[static_cast<int>(Role::kSystem)] = 1;
  f.trained_assistant_messages = 1;
  f.has_label = true;
  f.label = label;
  return f;
}

TEST(DatasetStatsAccumulatorTest, BuildsCountsRolesAndDuplicates) {
  DatasetStatsAccumulator acc;
  acc.AddExample(Facts("a", 2, true));
  acc.AddExample(Facts("b", 3, false));
  acc.AddExample(Facts("c", 4, false));
  acc.AddDuplicate(true);
  acc.AddDuplicate(false);
  acc.set_bytes(123);
  DatasetStats s = acc.Build();
  EXPECT_EQ(s.examples, 3);
  EXPECT_EQ(s.bytes, 123);
  EXPECT_EQ(s.messages_per_example.min, 2);
  EXPECT_EQ(s.messages_per_example.max, 4);
  EXPECT_EQ(s.messages_per_example.p50, 3);
  EXPECT_THAT(s.role_counts, ElementsAre(Pair("assistant", 3), Pair("system", 1), Pair("user", 3)));
  EXPECT_EQ(s.examples_without_system_message, 2);
  EXPECT_EQ(s.trained_assistant_messages, 3);
  EXPECT_EQ(s.exact_duplicates, 1);
  EXPECT_EQ(s.normalized_duplicates, 2);  // exact duplicates count as normalized too
  EXPECT_FALSE(s.looks_like_classification);
  EXPECT_TRUE(s.labels.empty());
}

TEST(DatasetStatsAccumulatorTest, DetectsClassificationAndOrdersLabelsByCountThenName) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 6; ++i) acc.AddExample(Facts("positive"));
  for (int i = 0; i < 3; ++i) acc.AddExample(Facts("neutral"));
  for (int i = 0; i < 3; ++i) acc.AddExample(Facts("negative"));
  EXPECT_TRUE(acc.LooksLikeClassification());
  DatasetStats s = acc.Build();
  EXPECT_TRUE(s.looks_like_classification);
  EXPECT_THAT(s.labels, ElementsAre(Pair("positive", 6), Pair("negative", 3), Pair("neutral", 3)));
}

TEST(DatasetStatsAccumulatorTest, FewerThanTenExamplesIsNotClassification) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 9; ++i) acc.AddExample(Facts(i % 2 ? "yes" : "no"));
  EXPECT_FALSE(acc.LooksLikeClassification());
  acc.AddExample(Facts("yes"));
  EXPECT_TRUE(acc.LooksLikeClassification());
}

TEST(DatasetStatsAccumulatorTest, ManyDistinctAnswersAreNotClassification) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 30; ++i) acc.AddExample(Facts(absl::StrCat("answer ", i % 11)));
  EXPECT_FALSE(acc.LooksLikeClassification());  // 11 labels need 33 examples
  for (int i = 0; i < 3; ++i) acc.AddExample(Facts(absl::StrCat("answer ", i)));
  EXPECT_TRUE(acc.LooksLikeClassification());
}

TEST(DatasetStatsAccumulatorTest, SingleLabelIsNotClassification) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 20; ++i) acc.AddExample(Facts("same"));
  EXPECT_FALSE(acc.LooksLikeClassification());
}

TEST(DatasetStatsAccumulatorTest, LongAnswersAreNotClassification) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 20; ++i) {
    acc.AddExample(Facts(i % 2 ? "one two three four five six" : "short"));
  }
  EXPECT_FALSE(acc.LooksLikeClassification());
  DatasetStatsAccumulator longer;
  const std::string long_label(65, 'x');
  for (int i = 0; i < 20; ++i) longer.AddExample(Facts(i % 2 ? long_label : "short"));
  EXPECT_FALSE(longer.LooksLikeClassification());
}

TEST(DatasetStatsAccumulatorTest, ExampleWithoutLabelRulesOutClassification) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 20; ++i) acc.AddExample(Facts(i % 2 ? "yes" : "no"));
  ExampleFacts unlabelled = Facts("");
  unlabelled.has_label = false;
  acc.AddExample(unlabelled);
  EXPECT_FALSE(acc.LooksLikeClassification());
}

TEST(DatasetStatsAccumulatorTest, LabelStringsAreCopiedNotReferenced) {
  DatasetStatsAccumulator acc;
  for (int i = 0; i < 12; ++i) {
    std::string label = i % 2 ? "cat" : "dog";  // destroyed after AddExample
    acc.AddExample(Facts(label));
  }
  EXPECT_THAT(acc.SortedLabels(), ElementsAre(Pair("cat", 6), Pair("dog", 6)));
}

}  // namespace
}  // namespace switchyard::dataset
