#include "services/router/eval_metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard::router {
namespace {

constexpr double kEps = 1e-12;

// ---------------------------------------------------------------------------
// NormalizeAnswer / AnswerTokens / ExactMatch

TEST(NormalizeAnswerTest, LowersDeletesPunctuationAndArticlesAndCollapsesSpace) {
  EXPECT_EQ(NormalizeAnswer("The Cat!"), "cat");
  EXPECT_EQ(NormalizeAnswer("  a  b \t\n c  "), "b c");
  EXPECT_EQ(NormalizeAnswer("An apple, the pear; A plum."), "apple pear plum");
  EXPECT_EQ(NormalizeAnswer(""), "");
  EXPECT_EQ(NormalizeAnswer("the a an"), "");
}

TEST(NormalizeAnswerTest, DeletesPunctuationWithoutInsertingSpaceAsSquadDoes) {
  EXPECT_EQ(NormalizeAnswer("don't e-mail"), "dont email");
  // Punctuation goes first, so "t.he" becomes the article "the" and is dropped.
  EXPECT_EQ(NormalizeAnswer("t.he end"), "end");
}

TEST(NormalizeAnswerTest, RemovesArticlesOnlyAsWholeWords) {
  EXPECT_EQ(NormalizeAnswer("theatre anagram"), "theatre anagram");
  EXPECT_EQ(NormalizeAnswer("Theory of a thing"), "theory of thing");
}

TEST(NormalizeAnswerTest, LowersAsciiOnlyAndKeepsNonAsciiBytes) {
  EXPECT_EQ(NormalizeAnswer("Café"), "café");
  EXPECT_EQ(NormalizeAnswer("CAFÉ"), "cafÉ");  // É (UTF-8 C3 89) is not lowered
  EXPECT_EQ(NormalizeAnswer("日本 の"), "日本 の");
}

TEST(AnswerTokensTest, SplitsNormalisedText) {
  EXPECT_EQ(AnswerTokens("The cat, sat."), (std::vector<std::string>{"cat", "sat"}));
  EXPECT_TRUE(AnswerTokens(" the !! ").empty());
}

TEST(ExactMatchTest, ComparesNormalisedText) {
  EXPECT_EQ(ExactMatch("The Cat!", "cat"), 1.0);
  EXPECT_EQ(ExactMatch("a  b", "b"), 1.0);
  EXPECT_EQ(ExactMatch("b  c", "b c"), 1.0);
  EXPECT_EQ(ExactMatch("cats", "cat"), 0.0);
  EXPECT_EQ(ExactMatch("Café", "café"), 1.0);
  EXPECT_EQ(ExactMatch("CAFÉ", "café"), 0.0);  // the documented ASCII-only lowering
}

// ---------------------------------------------------------------------------
// TokenF1

TEST(TokenF1Test, MatchesHandComputedValue) {
  // pred [cat, sat, on, mat], ref [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7.
  EXPECT_NEAR(TokenF1("the cat sat on the mat", "a cat on a mat"), 6.0 / 7.0, kEps);
  EXPECT_EQ(TokenF1("cat", "cat"), 1.0);
  EXPECT_EQ(TokenF1("cat", "dog"), 0.0);
}

TEST(TokenF1Test, CountsRepeatedTokensAsMultisets) {
  // pred [x, x, x, y], ref [x, y, y]: common = min(3,1) + min(1,2) = 2,
  // P = 2/4, R = 2/3, F1 = 2 * (1/2) (2/3) / (7/6) = 4/7.
  EXPECT_NEAR(TokenF1("x x x y", "x y y"), 4.0 / 7.0, kEps);
  // A set-based overlap would score "x x" against "x" as 1.
  EXPECT_NEAR(TokenF1("x x", "x"), 2.0 * 0.5 / 1.5, kEps);
}

TEST(TokenF1Test, EmptyCases) {
  EXPECT_EQ(TokenF1("", ""), 1.0);
  EXPECT_EQ(TokenF1("the", "!"), 1.0);  // both normalise to nothing
  EXPECT_EQ(TokenF1("", "cat"), 0.0);
  EXPECT_EQ(TokenF1("cat", "a"), 0.0);
}

// ---------------------------------------------------------------------------
// RougeL

TEST(RougeLTest, MatchesHandComputedLcs) {
  // pred [cat, sat, on, mat, today], ref [cat, on, mat]: LCS 3,
  // P = 3/5, R = 1, F = 2 (0.6) / 1.6 = 0.75.
  EXPECT_NEAR(RougeL("the cat sat on the mat today", "the cat on the mat"), 0.75, kEps);
  // pred [w, x, y, z], ref [x, w, z, y]: LCS 2 (e.g. "w z"), P = R = 1/2.
  EXPECT_NEAR(RougeL("w x y z", "x w z y"), 0.5, kEps);
  EXPECT_EQ(RougeL("The Cat", "cat"), 1.0);
}

TEST(RougeLTest, IsOrderSensitiveWhereTokenF1IsNot) {
  EXPECT_EQ(TokenF1("w x y z", "z y x w"), 1.0);
  // Reversed: any common subsequence has length 1, so P = R = 1/4.
  EXPECT_NEAR(RougeL("w x y z", "z y x w"), 0.25, kEps);
}

TEST(RougeLTest, EmptyCases) {
  EXPECT_EQ(RougeL("", ""), 1.0);
  EXPECT_EQ(RougeL("", "cat"), 0.0);
  EXPECT_EQ(RougeL("cat", "..."), 0.0);
  EXPECT_EQ(RougeL("cat", "dog"), 0.0);
}

TEST(RougeLTest, TruncatesTokensBeyondTheCap) {
  std::string head;
  for (int i = 0; i < kRougeMaxTokens; ++i) absl::StrAppend(&head, "x ");
  // The reference's extra tail lies past the cap, so it is not scored.
  EXPECT_EQ(RougeL(head, head + "y y y y y y"), 1.0);
  EXPECT_LT(RougeL("x x", "x x y"), 1.0);
}

// ---------------------------------------------------------------------------
// IsLabelSet

std::vector<std::string> SentimentReferences(int n) {
  const std::vector<std::string> labels = {"Positive", "negative", "neutral."};
  std::vector<std::string> refs;
  for (int i = 0; i < n; ++i) refs.push_back(labels[i % labels.size()]);
  return refs;
}

TEST(IsLabelSetTest, TrueForSentimentLabelsOverTwentyExamples) {
  EXPECT_TRUE(IsLabelSet(SentimentReferences(20)));
}

TEST(IsLabelSetTest, FalseForFreeTextAnswers) {
  std::vector<std::string> refs;
  for (int i = 0; i < 20; ++i) {
    refs.push_back(absl::StrCat("The capital was moved in ", 1800 + i,
                                " after a long dispute between the provinces."));
  }
  EXPECT_FALSE(IsLabelSet(refs));
  // Short but all distinct: fails the distinct <= examples / 2 rule alone.
  std::vector<std::string> short_answers;
  for (int i = 0; i < 20; ++i) short_answers.push_back(absl::StrCat("answer ", i));
  EXPECT_FALSE(IsLabelSet(short_answers));
}

TEST(IsLabelSetTest, FalseForASingleDistinctLabel) {
  EXPECT_FALSE(IsLabelSet(std::vector<std::string>(20, "yes")));
  EXPECT_FALSE(IsLabelSet({}));
}

TEST(IsLabelSetTest, FalseWhenDistinctExceedsHalfTheExamples) {
  // 6 distinct over 11 examples: 12 > 11.
  std::vector<std::string> refs = {"c1", "c2", "c3", "c4", "c5", "c6",
                                   "c1", "c2", "c3", "c4", "c5"};
  EXPECT_FALSE(IsLabelSet(refs));
  refs.push_back("c6");  // 6 distinct over 12 examples: allowed
  EXPECT_TRUE(IsLabelSet(refs));
}

TEST(IsLabelSetTest, FalseForEmptyLongOrWordyReferences) {
  std::vector<std::string> refs = SentimentReferences(20);
  refs[3] = "the";  // normalises to nothing
  EXPECT_FALSE(IsLabelSet(refs));
  refs[3] = "one two three four five six";
  EXPECT_FALSE(IsLabelSet(refs));
  refs[3] = std::string(65, 'z');
  EXPECT_FALSE(IsLabelSet(refs));
}

// ---------------------------------------------------------------------------
// MatchLabel / Classify

const std::vector<std::string> kSentiment = {"negative", "neutral", "positive"};

TEST(MatchLabelTest, ExactNormalisedTextMatches) {
  EXPECT_EQ(MatchLabel("Positive.", kSentiment), "positive");
  EXPECT_EQ(MatchLabel("  NEUTRAL ", kSentiment), "neutral");
}

TEST(MatchLabelTest, UniqueLeadingLabelMatches) {
  EXPECT_EQ(MatchLabel("positive, because the reviewer loved it", kSentiment), "positive");
  EXPECT_EQ(MatchLabel("Negative: the plot drags", kSentiment), "negative");
}

TEST(MatchLabelTest, AmbiguousOrUnlabelledPredictionIsOther) {
  EXPECT_EQ(MatchLabel("positive or negative", kSentiment), "");
  EXPECT_EQ(MatchLabel("I think it is positive", kSentiment), "");  // not at the start
  EXPECT_EQ(MatchLabel("positively glowing", kSentiment), "");      // not a whole word
  EXPECT_EQ(MatchLabel("", kSentiment), "");
}

TEST(MatchLabelTest, MultiWordLabelsAndOverlappingLabels) {
  const std::vector<std::string> labels = {"not sure", "sure"};
  EXPECT_EQ(MatchLabel("sure thing", labels), "sure");
  // "not sure" starts it but "sure" also occurs inside: ambiguous.
  EXPECT_EQ(MatchLabel("not sure at all", labels), "");
  EXPECT_EQ(MatchLabel("Not sure.", labels), "not sure");  // exact match wins
}

TEST(ClassifyTest, MatchesHandComputedThreeClassConfusion) {
  // gold -> predicted:  cat: cat cat dog other | dog: dog dog cat | bird: bird cat other
  const std::vector<std::string> refs = {"cat", "cat", "cat",  "Cat",  "dog",
                                         "dog", "dog", "bird", "bird", "the bird"};
  const std::vector<std::string> preds = {"cat",          "Cat, clearly", "dog",  "unsure", "dog",
                                          "dog, I think", "cat",          "bird", "cat",    "idk"};
  const ClassificationReport r = Classify(preds, refs);
  EXPECT_EQ(r.examples, 10);
  EXPECT_EQ(r.labels, (std::vector<std::string>{"bird", "cat", "dog"}));
  EXPECT_NEAR(r.accuracy, 0.5, kEps);
  // cat: P = 2/4, R = 2/4, F1 = 1/2; dog: P = R = F1 = 2/3;
  // bird: P = 1/1, R = 1/3, F1 = 1/2.
  EXPECT_NEAR(r.macro_precision, (0.5 + 2.0 / 3 + 1.0) / 3, kEps);
  EXPECT_NEAR(r.macro_recall, (0.5 + 2.0 / 3 + 1.0 / 3) / 3, kEps);
  EXPECT_NEAR(r.macro_f1, (0.5 + 2.0 / 3 + 0.5) / 3, kEps);
}

TEST(ClassifyTest, LabelNeverPredictedHasPrecisionZero) {
  const ClassificationReport r = Classify({"yes", "yes", "yes", "yes"}, {"yes", "yes", "no", "no"});
  // yes: P = 1/2, R = 1, F1 = 2/3; no: P = R = F1 = 0.
  EXPECT_NEAR(r.accuracy, 0.5, kEps);
  EXPECT_NEAR(r.macro_precision, 0.25, kEps);
  EXPECT_NEAR(r.macro_recall, 0.5, kEps);
  EXPECT_NEAR(r.macro_f1, 1.0 / 3, kEps);
}

TEST(ClassifyTest, MismatchedSizesOrNoLabelsGiveEmptyReport) {
  EXPECT_EQ(Classify({"yes"}, {"yes", "no"}).examples, 0);
  const ClassificationReport r = Classify({"x", "y"}, {"the", "!"});
  EXPECT_EQ(r.examples, 0);
  EXPECT_EQ(r.accuracy, 0.0);
  EXPECT_TRUE(r.labels.empty());
}

// ---------------------------------------------------------------------------
// Retrieval

TEST(FirstRelevantRankTest, ReturnsOneBasedRankOfFirstMatch) {
  const std::vector<std::string> retrieved = {"d7", "d3", "d9", "d3"};
  EXPECT_EQ(FirstRelevantRank(retrieved, "d7"), 1);
  EXPECT_EQ(FirstRelevantRank(retrieved, "d3"), 2);
  EXPECT_EQ(FirstRelevantRank(retrieved, "d1"), 0);
  EXPECT_EQ(FirstRelevantRank({}, "d1"), 0);
  EXPECT_EQ(FirstRelevantRank(retrieved, ""), -1);
}

TEST(SummarizeRanksTest, HitRateAndMrrByHand) {
  // Ranks 1, 2, 0, 4 (and one example naming no source): hits 3/4,
  // MRR = (1 + 1/2 + 0 + 1/4) / 4 = 7/16.
  const RetrievalReport r = SummarizeRanks({1, 2, 0, -1, 4});
  EXPECT_EQ(r.examples, 4);
  EXPECT_NEAR(r.hit_rate, 0.75, kEps);
  EXPECT_NEAR(r.mrr, 7.0 / 16, kEps);
  const RetrievalReport none = SummarizeRanks({});
  EXPECT_EQ(none.examples, 0);
  EXPECT_EQ(none.mrr, 0.0);
}

// ---------------------------------------------------------------------------
// Bootstrap

std::vector<double> NormalSample(int n, double mean, double sd, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(mean, sd);
  std::vector<double> v(n);
  for (double& x : v) x = dist(rng);
  return v;
}

TEST(BootstrapMeanTest, IsDeterministicPerSeed) {
  const std::vector<double> v = NormalSample(50, 0.6, 0.2, 7);
  const Estimate a = BootstrapMean(v, 500, 42);
  const Estimate b = BootstrapMean(v, 500, 42);
  const Estimate c = BootstrapMean(v, 500, 43);
  EXPECT_EQ(a.ci_low, b.ci_low);
  EXPECT_EQ(a.ci_high, b.ci_high);
  EXPECT_EQ(a.value, c.value);
  EXPECT_NE(a.ci_low, c.ci_low);
}

TEST(BootstrapMeanTest, IntervalContainsMeanAndNarrowsWithN) {
  const Estimate small = BootstrapMean(NormalSample(20, 0.6, 0.2, 1));
  const Estimate large = BootstrapMean(NormalSample(2000, 0.6, 0.2, 1));
  for (const Estimate& e : {small, large}) {
    EXPECT_LT(e.ci_low, e.value);
    EXPECT_GT(e.ci_high, e.value);
  }
  EXPECT_EQ(small.n, 20);
  EXPECT_EQ(large.n, 2000);
  // Width scales as 1/sqrt(n): ~10x narrower; ask for 5x.
  EXPECT_LT(large.ci_high - large.ci_low, (small.ci_high - small.ci_low) / 5);
  // Large-n width ~ 2 * 1.96 * 0.2 / sqrt(2000) = 0.0175.
  EXPECT_NEAR(large.ci_high - large.ci_low, 0.0175, 0.003);
}

TEST(BootstrapMeanTest, LargeSampleIntervalMatchesNormalTheory) {
  // For n = 2000 the mean is near normal, so each end of the percentile
  // interval should lie ~1.96 s / sqrt(n) from the mean (within 10%: Monte
  // Carlo error of the 2.5% / 97.5% quantiles over 2000 resamples is ~3-4%).
  const std::vector<double> v = NormalSample(2000, 0.6, 0.2, 11);
  double mean = 0, ss = 0;
  for (double x : v) mean += x / v.size();
  for (double x : v) ss += (x - mean) * (x - mean);
  const double half_width = 1.959964 * std::sqrt(ss / (v.size() - 1) / v.size());
  const Estimate e = BootstrapMean(v);
  EXPECT_NEAR(e.value, mean, 1e-12);
  EXPECT_NEAR(e.value - e.ci_low, half_width, 0.1 * half_width);
  EXPECT_NEAR(e.ci_high - e.value, half_width, 0.1 * half_width);
  // A 50% interval is much narrower (z = 0.674).
  const Estimate half = BootstrapMean(v, 2000, 1, 0.5);
  EXPECT_NEAR(half.ci_high - half.ci_low, 2 * 0.674 / 1.96 * half_width, 0.15 * half_width);
}

TEST(BootstrapMeanTest, SingleValueGivesZeroWidthAndEmptyGivesNZero) {
  const Estimate one = BootstrapMean({0.7});
  EXPECT_EQ(one.n, 1);
  EXPECT_EQ(one.value, 0.7);
  EXPECT_EQ(one.ci_low, 0.7);
  EXPECT_EQ(one.ci_high, 0.7);
  const Estimate none = BootstrapMean({});
  EXPECT_EQ(none.n, 0);
  EXPECT_EQ(none.value, 0.0);
  EXPECT_EQ(none.ci_low, 0.0);
  EXPECT_EQ(none.ci_high, 0.0);
}

TEST(BootstrapMeanTest, DropsNonFiniteValues) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Estimate e = BootstrapMean({1.0, nan, 3.0, std::numeric_limits<double>::infinity()});
  EXPECT_EQ(e.n, 2);
  EXPECT_EQ(e.value, 2.0);
  EXPECT_GE(e.ci_low, 1.0);
  EXPECT_LE(e.ci_high, 3.0);
}

TEST(BootstrapPairedDifferenceTest, IdenticalArraysGiveZeroNotSignificant) {
  const std::vector<double> v = NormalSample(100, 0.5, 0.2, 3);
  const PairedDifference d = BootstrapPairedDifference(v, v);
  EXPECT_EQ(d.difference.n, 100);
  EXPECT_EQ(d.difference.value, 0.0);
  EXPECT_EQ(d.difference.ci_low, 0.0);
  EXPECT_EQ(d.difference.ci_high, 0.0);
  EXPECT_FALSE(d.significant);
}

TEST(BootstrapPairedDifferenceTest, ClearlyBetterArmIsSignificant) {
  const std::vector<double> b = NormalSample(60, 0.4, 0.2, 4);
  const std::vector<double> noise = NormalSample(60, 0.0, 0.1, 5);
  std::vector<double> a(b.size());
  for (size_t i = 0; i < b.size(); ++i) a[i] = b[i] + 0.3 + noise[i];
  const PairedDifference d = BootstrapPairedDifference(a, b);
  EXPECT_TRUE(d.significant);
  EXPECT_GT(d.difference.ci_low, 0.0);
  EXPECT_NEAR(d.difference.value, 0.3, 0.05);
  EXPECT_LT(BootstrapPairedDifference(b, a).difference.ci_high, 0.0);
}

TEST(BootstrapPairedDifferenceTest, MismatchedSizesGiveEmptyEstimate) {
  const PairedDifference d = BootstrapPairedDifference({1, 2, 3}, {1, 2});
  EXPECT_EQ(d.difference.n, 0);
  EXPECT_EQ(d.difference.value, 0.0);
  EXPECT_FALSE(std::isnan(d.difference.ci_low));
  EXPECT_FALSE(d.significant);
}

TEST(BootstrapPairedDifferenceTest, FalsePositiveRateIsNearFivePercentUnderNoDifference) {
  // 200 paired datasets of 50 examples; both arms share a per-example
  // difficulty and differ only by independent noise, so the true difference
  // is 0 and a 95% interval should exclude it ~5% of the time.
  constexpr int kDatasets = 200;
  constexpr int kN = 50;
  std::mt19937_64 rng(2024);
  std::normal_distribution<double> difficulty(0.5, 0.2), noise(0.0, 0.1);
  int excluded = 0;
  for (int t = 0; t < kDatasets; ++t) {
    std::vector<double> a(kN), b(kN);
    for (int i = 0; i < kN; ++i) {
      const double base = difficulty(rng);
      a[i] = base + noise(rng);
      b[i] = base + noise(rng);
    }
    if (BootstrapPairedDifference(a, b, 1000, 100 + t).significant) ++excluded;
  }
  const double rate = static_cast<double>(excluded) / kDatasets;
  std::cout << "[ coverage ] interval excluded 0 in " << excluded << "/" << kDatasets << " ("
            << 100 * rate << "%)\n";
  EXPECT_GE(rate, 0.01);
  EXPECT_LE(rate, 0.12);
}

}  // namespace
}  // namespace switchyard::router
