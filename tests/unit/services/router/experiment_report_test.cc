#include "services/router/experiment_report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace switchyard::router {
namespace {

constexpr int kFirstBetter = 1;
constexpr int kSecondBetter = 2;
constexpr int kTie = 3;
constexpr int kBothBad = 4;
constexpr int kThumbsUp = 1;
constexpr int kThumbsDown = 2;
constexpr double kZ975 = 1.959963984540054;

std::vector<ReportArm> Arms(const std::vector<std::string>& names) {
  std::vector<ReportArm> out;
  for (const std::string& name : names) {
    out.push_back({name, 1.0 / names.size(), 1.0 / names.size()});
  }
  return out;
}

InteractionRecord Served(const std::string& arm, int64_t create_us, double latency = 1) {
  InteractionRecord r;
  r.response_id = absl::StrCat(arm, "-", create_us);
  r.experiment_id = "exp";
  r.arm = arm;
  r.create_us = create_us;
  r.latency_seconds = latency;
  r.time_to_first_token_seconds = latency / 10;
  return r;
}

FeedbackRecord Rating(const std::string& arm, double normalized, int64_t create_us,
                      int thumbs = 0) {
  FeedbackRecord f;
  f.feedback_id = absl::StrCat("f-", arm, "-", create_us);
  f.experiment_id = "exp";
  f.response_id = absl::StrCat(arm, "-", create_us);
  f.arm = arm;
  f.normalized = normalized;
  f.score = normalized;
  f.thumbs = thumbs;
  f.create_us = create_us;
  return f;
}

ComparisonRecord Review(const std::string& arm, const std::string& other_arm, int result,
                        int64_t create_us) {
  ComparisonRecord c;
  c.comparison_id = absl::StrCat("c-", create_us);
  c.experiment_id = "exp";
  c.response_id = absl::StrCat(arm, "-", create_us);
  c.other_response_id = absl::StrCat(other_arm, "-", create_us);
  c.arm = arm;
  c.other_arm = other_arm;
  c.result = result;
  if (result == kFirstBetter) c.preferred_arm = arm;
  if (result == kSecondBetter) c.preferred_arm = other_arm;
  c.create_us = create_us;
  return c;
}

// A portable Bernoulli draw: std::bernoulli_distribution's algorithm is left
// to the library, std::mt19937's output is not.
double Bernoulli(std::mt19937& rng, double p) {
  return static_cast<double>(rng()) < p * 4294967296.0 ? 1.0 : 0.0;
}

// `n` 0/1 ratings per arm from Bernoulli(p_a) and Bernoulli(p_b), interleaved
// in time (a, b, a, b, ...), fixed seed.
std::vector<FeedbackRecord> InterleavedRatings(double p_a, double p_b, int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<FeedbackRecord> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(Rating("a", Bernoulli(rng, p_a), 2 * i));
    out.push_back(Rating("b", Bernoulli(rng, p_b), 2 * i + 1));
  }
  return out;
}

const ArmStats& Arm(const Report& report, const std::string& name) {
  for (const ArmStats& s : report.arms) {
    if (s.arm == name) return s;
  }
  ADD_FAILURE() << "no arm " << name;
  static const ArmStats kNone;
  return kNone;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Wilson score interval at 95 %, written out independently of the code under test.
void ExpectWilson(double successes, double n, double low, double high) {
  const double p = successes / n;
  const double z2 = kZ975 * kZ975;
  const double center = (p + z2 / (2 * n)) / (1 + z2 / n);
  const double half = kZ975 / (1 + z2 / n) * std::sqrt(p * (1 - p) / n + z2 / (4 * n * n));
  EXPECT_NEAR(low, center - half, 1e-9);
  EXPECT_NEAR(high, center + half, 1e-9);
}

TEST(ExperimentReportTest, CountsRequestsErrorsByCodeAndTrafficShare) {
  std::vector<InteractionRecord> log;
  for (int i = 0; i < 6; ++i) log.push_back(Served("a", i));
  for (int i = 0; i < 4; ++i) log.push_back(Served("b", 10 + i));
  log[0].error_code = 14;  // UNAVAILABLE
  log[1].error_code = 14;
  log[2].error_code = 4;  // DEADLINE_EXCEEDED
  log[6].error_code = 14;
  log.push_back(Served("not-an-arm", 99));  // ignored
  const Report report = ComputeReport(Arms({"a", "b"}), log, {}, {}, {});
  ASSERT_EQ(report.arms.size(), 2u);
  const ArmStats& a = Arm(report, "a");
  const ArmStats& b = Arm(report, "b");
  EXPECT_EQ(a.requests, 6);
  EXPECT_EQ(a.errors, 3);
  EXPECT_EQ(a.errors_by_code, (std::map<int, int64_t>{{4, 1}, {14, 2}}));
  EXPECT_DOUBLE_EQ(a.traffic_share, 0.6);
  EXPECT_EQ(b.requests, 4);
  EXPECT_EQ(b.errors, 1);
  EXPECT_EQ(b.errors_by_code, (std::map<int, int64_t>{{14, 1}}));
  EXPECT_DOUBLE_EQ(b.traffic_share, 0.4);
  EXPECT_DOUBLE_EQ(a.weight, 0.5);
  EXPECT_DOUBLE_EQ(b.effective_weight, 0.5);
}

TEST(ExperimentReportTest, LatencyPercentilesAreNearestRankOverSuccessfulRequests) {
  // Latencies 1..100 s in a scrambled order, plus a failed request that must
  // not count.
  std::vector<InteractionRecord> log;
  for (int i = 0; i < 100; ++i) {
    const int seconds = 1 + (i * 37) % 100;
    InteractionRecord r = Served("a", i, seconds);
    r.time_to_first_token_seconds = seconds / 100.0;
    log.push_back(r);
  }
  InteractionRecord failed = Served("a", 1000, 5000);
  failed.error_code = 13;
  log.push_back(failed);
  const Report report = ComputeReport(Arms({"a"}), log, {}, {}, {});
  const ArmStats& a = Arm(report, "a");
  EXPECT_EQ(a.requests, 101);
  // Nearest rank: the ceil(q n)-th smallest; interpolation would give 50.5 / 95.05 / 99.01.
  EXPECT_DOUBLE_EQ(a.latency.p50, 50);
  EXPECT_DOUBLE_EQ(a.latency.p95, 95);
  EXPECT_DOUBLE_EQ(a.latency.p99, 99);
  EXPECT_DOUBLE_EQ(a.latency.max, 100);
  EXPECT_DOUBLE_EQ(a.latency.mean, 50.5);
  EXPECT_DOUBLE_EQ(a.time_to_first_token.p50, 0.5);
  EXPECT_DOUBLE_EQ(a.time_to_first_token.p99, 0.99);
  EXPECT_DOUBLE_EQ(a.time_to_first_token.max, 1.0);
}

TEST(ExperimentReportTest, NearestRankOnSmallSets) {
  std::vector<InteractionRecord> log;
  for (double v : {4.0, 1.0, 3.0, 2.0}) log.push_back(Served("a", static_cast<int64_t>(v), v));
  log.push_back(Served("b", 10, 7.0));
  const Report report = ComputeReport(Arms({"a", "b", "c"}), log, {}, {}, {});
  const ArmStats& a = Arm(report, "a");
  EXPECT_DOUBLE_EQ(a.latency.p50, 2);  // ceil(0.5 * 4) = 2nd
  EXPECT_DOUBLE_EQ(a.latency.p95, 4);
  EXPECT_DOUBLE_EQ(a.latency.p99, 4);
  EXPECT_DOUBLE_EQ(a.latency.mean, 2.5);
  const ArmStats& b = Arm(report, "b");
  EXPECT_DOUBLE_EQ(b.latency.p50, 7);
  EXPECT_DOUBLE_EQ(b.latency.p99, 7);
  const ArmStats& c = Arm(report, "c");  // no traffic: zeros, not NaN
  EXPECT_EQ(c.requests, 0);
  EXPECT_DOUBLE_EQ(c.latency.p50, 0);
  EXPECT_DOUBLE_EQ(c.latency.mean, 0);
  EXPECT_DOUBLE_EQ(c.traffic_share, 0);
  EXPECT_DOUBLE_EQ(c.prompt_tokens_per_request, 0);
}

TEST(ExperimentReportTest, TokensAndComputePerRequestCountOnlySuccessfulRequests) {
  std::vector<InteractionRecord> log;
  for (int i = 0; i < 3; ++i) {
    InteractionRecord r = Served("a", i);
    r.prompt_tokens = 10 * (i + 1);  // 10, 20, 30
    r.completion_tokens = 5;
    r.compute_seconds = i + 1;  // 1, 2, 3
    r.retrieval_seconds = 0.25;
    log.push_back(r);
  }
  InteractionRecord failed = Served("a", 10);
  failed.error_code = 8;
  failed.prompt_tokens = 1000;
  failed.completion_tokens = 1000;
  failed.compute_seconds = 100;
  failed.retrieval_seconds = 100;
  log.push_back(failed);
  const Report report = ComputeReport(Arms({"a"}), log, {}, {}, {});
  const ArmStats& a = Arm(report, "a");
  EXPECT_EQ(a.requests, 4);
  EXPECT_EQ(a.prompt_tokens, 60);
  EXPECT_EQ(a.completion_tokens, 15);
  EXPECT_DOUBLE_EQ(a.prompt_tokens_per_request, 20);
  EXPECT_DOUBLE_EQ(a.completion_tokens_per_request, 5);
  EXPECT_DOUBLE_EQ(a.compute_seconds_per_request, 2);
  EXPECT_DOUBLE_EQ(a.retrieval_seconds_per_request, 0.25);
}

TEST(ExperimentReportTest, CountsContextMissing) {
  std::vector<InteractionRecord> log;
  for (int i = 0; i < 5; ++i) {
    InteractionRecord r = Served("a", i);
    r.context_missing = i % 2 == 0;
    log.push_back(r);
  }
  const Report report = ComputeReport(Arms({"a", "b"}), log, {}, {}, {});
  EXPECT_EQ(Arm(report, "a").context_missing, 3);
  EXPECT_EQ(Arm(report, "b").context_missing, 0);
}

TEST(ExperimentReportTest, ShadowRequestsAreCountedApartAndNotAsRequests) {
  std::vector<InteractionRecord> log;
  for (int i = 0; i < 4; ++i) log.push_back(Served("a", i, 1.0));
  for (int i = 0; i < 3; ++i) {
    InteractionRecord shadow = Served("b", 10 + i, 50.0);
    shadow.shadow = true;
    shadow.prompt_tokens = 99;
    log.push_back(shadow);
  }
  const Report report = ComputeReport(Arms({"a", "b"}), log, {}, {}, {});
  const ArmStats& a = Arm(report, "a");
  const ArmStats& b = Arm(report, "b");
  EXPECT_EQ(b.shadow_requests, 3);
  EXPECT_EQ(b.requests, 0);
  EXPECT_EQ(b.prompt_tokens, 0);
  EXPECT_DOUBLE_EQ(b.latency.max, 0);
  EXPECT_DOUBLE_EQ(b.traffic_share, 0);
  EXPECT_EQ(a.requests, 4);
  EXPECT_EQ(a.shadow_requests, 0);
  EXPECT_DOUBLE_EQ(a.traffic_share, 1);
}

TEST(ExperimentReportTest, ExcludedRequestsAreLeftOutUnlessIncludeExcluded) {
  std::vector<InteractionRecord> log;
  for (int i = 0; i < 3; ++i) log.push_back(Served("a", i, 1.0));
  InteractionRecord excluded = Served("a", 10, 9.0);
  excluded.excluded = true;
  excluded.error_code = 2;
  log.push_back(excluded);
  InteractionRecord excluded_b = Served("b", 11, 9.0);
  excluded_b.excluded = true;
  log.push_back(excluded_b);

  Report report = ComputeReport(Arms({"a", "b"}), log, {}, {}, {});
  EXPECT_EQ(Arm(report, "a").requests, 3);
  EXPECT_EQ(Arm(report, "a").errors, 0);
  EXPECT_EQ(Arm(report, "b").requests, 0);
  EXPECT_DOUBLE_EQ(Arm(report, "a").traffic_share, 1);

  ReportOptions options;
  options.include_excluded = true;
  report = ComputeReport(Arms({"a", "b"}), log, {}, {}, options);
  EXPECT_EQ(Arm(report, "a").requests, 4);
  EXPECT_EQ(Arm(report, "a").errors, 1);
  EXPECT_EQ(Arm(report, "b").requests, 1);
  EXPECT_DOUBLE_EQ(Arm(report, "b").latency.max, 9.0);
  EXPECT_DOUBLE_EQ(Arm(report, "a").traffic_share, 0.8);
}

TEST(ExperimentReportTest, FeedbackMeanAndIntervalAreOnTheExperimentScale) {
  // Scale 1..5: stars 2, 3, 4, 4, 5 are normalised as (stars - 1) / 4.
  ReportOptions options;
  options.scale_min = 1;
  options.scale_max = 5;
  std::vector<FeedbackRecord> feedback;
  int64_t t = 0;
  for (double stars : {2.0, 3.0, 4.0, 4.0, 5.0}) {
    FeedbackRecord f = Rating("a", (stars - 1) / 4, t++);
    f.score = stars;
    feedback.push_back(f);
  }
  const Report report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, options);
  const ArmStats& a = Arm(report, "a");
  EXPECT_EQ(a.feedback_count, 5);
  EXPECT_NEAR(a.feedback_mean, 3.6, 1e-12);
  // Student t, df 4: sd of the stars is sqrt(1.3), t_{0.975, 4} = 2.7764451051977987.
  const double half = 2.7764451051977987 * std::sqrt(1.3 / 5);
  EXPECT_NEAR(a.feedback_ci_low, 3.6 - half, 1e-9);
  EXPECT_NEAR(a.feedback_ci_high, 3.6 + half, 1e-9);
  const ArmStats& b = Arm(report, "b");
  EXPECT_EQ(b.feedback_count, 0);
  EXPECT_DOUBLE_EQ(b.feedback_mean, 0);
}

TEST(ExperimentReportTest, CountsThumbs) {
  std::vector<FeedbackRecord> feedback = {
      Rating("a", 1, 1, kThumbsUp),   Rating("a", 1, 2, kThumbsUp), Rating("a", 0, 3, kThumbsDown),
      Rating("b", 0, 4, kThumbsDown), Rating("b", 0.5, 5, 0),
  };
  const Report report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, {});
  EXPECT_EQ(Arm(report, "a").thumbs_up, 2);
  EXPECT_EQ(Arm(report, "a").thumbs_down, 1);
  EXPECT_EQ(Arm(report, "b").thumbs_up, 0);
  EXPECT_EQ(Arm(report, "b").thumbs_down, 1);
  EXPECT_EQ(Arm(report, "b").feedback_count, 2);
}

TEST(ExperimentReportTest, ShadowAndExcludedFeedbackIsLeftOut) {
  std::vector<FeedbackRecord> feedback = {Rating("a", 1, 1, kThumbsUp), Rating("a", 0.5, 2)};
  FeedbackRecord on_shadow = Rating("a", 0, 3, kThumbsDown);
  on_shadow.shadow = true;
  FeedbackRecord on_excluded = Rating("a", 0, 4, kThumbsDown);
  on_excluded.excluded = true;
  feedback.push_back(on_shadow);
  feedback.push_back(on_excluded);

  Report report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, {});
  EXPECT_EQ(Arm(report, "a").feedback_count, 2);
  EXPECT_DOUBLE_EQ(Arm(report, "a").feedback_mean, 0.75);
  EXPECT_EQ(Arm(report, "a").thumbs_down, 0);

  ReportOptions options;
  options.include_excluded = true;  // excluded comes back, shadow never does
  report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, options);
  EXPECT_EQ(Arm(report, "a").feedback_count, 3);
  EXPECT_DOUBLE_EQ(Arm(report, "a").feedback_mean, 0.5);
  EXPECT_EQ(Arm(report, "a").thumbs_down, 1);
}

TEST(ExperimentReportTest, ComparisonsGiveWinsLossesTiesAndWinRateWithTiesAsHalf) {
  std::vector<ComparisonRecord> reviews = {
      Review("a", "b", kFirstBetter, 1), Review("b", "a", kSecondBetter, 2),
      Review("a", "b", kFirstBetter, 3), Review("a", "b", kSecondBetter, 4),
      Review("a", "b", kTie, 5),         Review("b", "a", kTie, 6),
      Review("a", "b", kBothBad, 7),  // reviewed, decides nothing
  };
  const Report report = ComputeReport(Arms({"a", "b"}), {}, {}, reviews, {});
  const ArmStats& a = Arm(report, "a");
  const ArmStats& b = Arm(report, "b");
  EXPECT_EQ(a.comparisons, 7);
  EXPECT_EQ(a.wins, 3);
  EXPECT_EQ(a.losses, 1);
  EXPECT_EQ(a.ties, 2);
  EXPECT_DOUBLE_EQ(a.win_rate, 4.0 / 6);  // (3 + 2 / 2) / 6 decided
  ExpectWilson(4, 6, a.win_rate_ci_low, a.win_rate_ci_high);
  EXPECT_EQ(b.comparisons, 7);
  EXPECT_EQ(b.wins, 1);
  EXPECT_EQ(b.losses, 3);
  EXPECT_EQ(b.ties, 2);
  EXPECT_DOUBLE_EQ(b.win_rate, 2.0 / 6);
  ExpectWilson(2, 6, b.win_rate_ci_low, b.win_rate_ci_high);
}

TEST(ExperimentReportTest, BothBadReviewsAloneDecideNothing) {
  std::vector<ComparisonRecord> reviews;
  for (int i = 0; i < 40; ++i) reviews.push_back(Review("a", "b", kBothBad, i));
  ReportOptions options;
  options.metric = ReportMetric::kWinRate;
  const Report report = ComputeReport(Arms({"a", "b"}), {}, {}, reviews, options);
  EXPECT_EQ(Arm(report, "b").comparisons, 40);
  EXPECT_EQ(Arm(report, "b").wins + Arm(report, "b").losses + Arm(report, "b").ties, 0);
  EXPECT_DOUBLE_EQ(Arm(report, "b").win_rate, 0);
  ASSERT_EQ(report.comparisons.size(), 1u);
  EXPECT_EQ(report.comparisons[0].samples, 0);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kNotEnoughData);
  EXPECT_TRUE(Contains(report.verdict.summary, "b: 0 of 30 reviews")) << report.verdict.summary;
}

TEST(ExperimentReportTest, NotEnoughDataBelowMinSamplesNamesArmsAndCounts) {
  std::vector<FeedbackRecord> feedback;
  for (int i = 0; i < 5; ++i) feedback.push_back(Rating("control", 1, i));
  for (int i = 0; i < 3; ++i) feedback.push_back(Rating("rag", 0, 10 + i));
  ReportOptions options;
  options.min_samples_per_arm = 30;
  const Report report = ComputeReport(Arms({"control", "rag"}), {}, feedback, {}, options);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kNotEnoughData);
  EXPECT_TRUE(Contains(report.verdict.summary, "control: 5 of 30 ratings"))
      << report.verdict.summary;
  EXPECT_TRUE(Contains(report.verdict.summary, "rag: 3 of 30 ratings")) << report.verdict.summary;
  ASSERT_EQ(report.comparisons.size(), 1u);
  EXPECT_FALSE(report.comparisons[0].significant);
}

TEST(ExperimentReportTest, OneArmShortOfDataKeepsTheVerdictAtNotEnoughData) {
  // A huge difference, but the control has too few ratings.
  std::vector<FeedbackRecord> feedback = InterleavedRatings(0.1, 0.9, 200, 7);
  feedback.erase(std::remove_if(feedback.begin(), feedback.end(),
                                [](const FeedbackRecord& f) {
                                  return f.arm == "a" && f.create_us >= 40;  // a keeps 20
                                }),
                 feedback.end());
  const Report report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, {});
  EXPECT_EQ(report.verdict.status, VerdictStatus::kNotEnoughData);
  EXPECT_TRUE(Contains(report.verdict.summary, "a: 20 of 30 ratings")) << report.verdict.summary;
  EXPECT_FALSE(Contains(report.verdict.summary, "b:")) << report.verdict.summary;
  EXPECT_FALSE(report.comparisons[0].significant);
}

TEST(ExperimentReportTest, EqualArmsOverEnoughSamplesAreInconclusive) {
  const Report report =
      ComputeReport(Arms({"a", "b"}), {}, InterleavedRatings(0.5, 0.5, 200, 20240601), {}, {});
  std::printf("A/A: %s\n", report.verdict.summary.c_str());
  EXPECT_EQ(report.verdict.status, VerdictStatus::kInconclusive);
  EXPECT_TRUE(Contains(report.verdict.summary, "no significant difference yet on feedback score"))
      << report.verdict.summary;
  ASSERT_EQ(report.comparisons.size(), 1u);
  const ArmDifference& d = report.comparisons[0];
  EXPECT_EQ(d.arm, "b");
  EXPECT_EQ(d.control_arm, "a");
  EXPECT_FALSE(d.significant);
  EXPECT_GE(d.p_value, 0.05);
  EXPECT_EQ(d.samples, 200);
  EXPECT_EQ(d.control_samples, 200);
  EXPECT_LT(d.ci_low, d.difference);
  EXPECT_GT(d.ci_high, d.difference);
  EXPECT_LT(d.ci_low, 0);
  EXPECT_GT(d.ci_high, 0);
}

TEST(ExperimentReportTest, LargeTrueDifferenceIsSignificantAndNamesTheWinner) {
  const Report report =
      ComputeReport(Arms({"a", "b"}), {}, InterleavedRatings(0.3, 0.8, 200, 12345), {}, {});
  std::printf("0.3 vs 0.8: %s\n", report.verdict.summary.c_str());
  EXPECT_EQ(report.verdict.status, VerdictStatus::kSignificant);
  EXPECT_EQ(report.verdict.leading_arm, "b");
  EXPECT_TRUE(Contains(report.verdict.summary, "b ahead of a")) << report.verdict.summary;
  ASSERT_EQ(report.comparisons.size(), 1u);
  const ArmDifference& d = report.comparisons[0];
  EXPECT_TRUE(d.significant);
  EXPECT_LT(d.p_value, 0.05);
  EXPECT_NEAR(d.difference, 0.5, 0.12);
  EXPECT_GT(d.ci_low, 0);
  EXPECT_NEAR(d.difference, Arm(report, "b").feedback_mean - Arm(report, "a").feedback_mean, 1e-12);
  EXPECT_DOUBLE_EQ(report.verdict.significance_level, 0.05);
  EXPECT_TRUE(Contains(report.verdict.method, "mSPRT")) << report.verdict.method;
}

TEST(ExperimentReportTest, BetterControlIsNamedAsLeading) {
  const Report report =
      ComputeReport(Arms({"a", "b"}), {}, InterleavedRatings(0.8, 0.3, 200, 12345), {}, {});
  EXPECT_EQ(report.verdict.status, VerdictStatus::kSignificant);
  EXPECT_EQ(report.verdict.leading_arm, "a");
  EXPECT_TRUE(Contains(report.verdict.summary, "a ahead of b")) << report.verdict.summary;
  ASSERT_EQ(report.comparisons.size(), 1u);
  EXPECT_LT(report.comparisons[0].difference, 0);
  EXPECT_LT(report.comparisons[0].ci_high, 0);
}

// 0.5 vs 0.62, seed 40: a borderline stream whose always-valid p-value is
// 0.040, between 0.05 / 2 and 0.05 (found once by scanning seeds).
std::vector<FeedbackRecord> BorderlineRatings() { return InterleavedRatings(0.5, 0.62, 200, 40); }

TEST(ExperimentReportTest, SignificanceLevelOptionIsRespected) {
  const std::vector<FeedbackRecord> feedback = BorderlineRatings();
  ReportOptions options;
  Report report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, options);
  ASSERT_EQ(report.comparisons.size(), 1u);
  const double p = report.comparisons[0].p_value;
  ASSERT_GT(p, 0.025);
  ASSERT_LT(p, 0.05);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kSignificant);

  options.significance_level = 0.01;
  report = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, options);
  EXPECT_DOUBLE_EQ(report.comparisons[0].p_value, p);  // the p-value does not depend on alpha
  EXPECT_FALSE(report.comparisons[0].significant);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kInconclusive);
  EXPECT_DOUBLE_EQ(report.verdict.significance_level, 0.01);
}

TEST(ExperimentReportTest, ThirdArmSplitsTheSignificanceLevelBonferroni) {
  std::vector<FeedbackRecord> feedback = BorderlineRatings();
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) feedback.push_back(Rating("c", Bernoulli(rng, 0.5), 2 * i));
  const Report report = ComputeReport(Arms({"a", "b", "c"}), {}, feedback, {}, {});
  ASSERT_EQ(report.comparisons.size(), 2u);
  const ArmDifference& b = report.comparisons[0];
  ASSERT_EQ(b.arm, "b");
  // Significant at 0.05 alone, not at 0.05 / 2.
  EXPECT_GT(b.p_value, 0.025);
  EXPECT_LT(b.p_value, 0.05);
  EXPECT_FALSE(b.significant);
  EXPECT_FALSE(report.comparisons[1].significant);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kInconclusive) << report.verdict.summary;
  EXPECT_TRUE(Contains(report.verdict.method, "Bonferroni over 2 comparisons"))
      << report.verdict.method;
}

TEST(ExperimentReportTest, DifferenceIsScaledToTheExperimentScale) {
  ReportOptions options;
  options.scale_min = 1;
  options.scale_max = 5;
  const std::vector<FeedbackRecord> feedback = InterleavedRatings(0.3, 0.8, 200, 12345);
  const Report unit = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, {});
  const Report stars = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, options);
  EXPECT_NEAR(stars.comparisons[0].difference, 4 * unit.comparisons[0].difference, 1e-12);
  EXPECT_NEAR(stars.comparisons[0].ci_low, 4 * unit.comparisons[0].ci_low, 1e-12);
  EXPECT_NEAR(Arm(stars, "a").feedback_mean, 1 + 4 * Arm(unit, "a").feedback_mean, 1e-12);
  EXPECT_DOUBLE_EQ(stars.comparisons[0].p_value, unit.comparisons[0].p_value);
}

TEST(ExperimentReportTest, FeedbackOrderInTheInputDoesNotMatter) {
  // The sequential test runs over the stream in time order, however it arrives.
  std::vector<FeedbackRecord> feedback = InterleavedRatings(0.45, 0.6, 150, 99);
  const Report ordered = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, {});
  std::mt19937 rng(3);
  std::shuffle(feedback.begin(), feedback.end(), rng);
  const Report shuffled = ComputeReport(Arms({"a", "b"}), {}, feedback, {}, {});
  EXPECT_DOUBLE_EQ(shuffled.comparisons[0].p_value, ordered.comparisons[0].p_value);
  EXPECT_DOUBLE_EQ(shuffled.comparisons[0].ci_low, ordered.comparisons[0].ci_low);
  EXPECT_DOUBLE_EQ(shuffled.comparisons[0].ci_high, ordered.comparisons[0].ci_high);
}

TEST(ExperimentReportTest, WinRateMetricUsesPairwiseReviews) {
  // b (candidate) preferred over a (control) in ~80 % of 100 reviews; half the
  // reviews list b first. Feedback points the other way and must not matter.
  std::mt19937 rng(42);
  std::vector<ComparisonRecord> reviews;
  for (int i = 0; i < 100; ++i) {
    const bool b_wins = Bernoulli(rng, 0.8) > 0;
    if (i % 2 == 0) {
      reviews.push_back(Review("a", "b", b_wins ? kSecondBetter : kFirstBetter, i));
    } else {
      reviews.push_back(Review("b", "a", b_wins ? kFirstBetter : kSecondBetter, i));
    }
  }
  ReportOptions options;
  options.metric = ReportMetric::kWinRate;
  const Report report =
      ComputeReport(Arms({"a", "b"}), {}, InterleavedRatings(0.9, 0.1, 100, 5), reviews, options);
  std::printf("win rate: %s\n", report.verdict.summary.c_str());
  const ArmStats& b = Arm(report, "b");
  EXPECT_EQ(b.wins + b.losses, 100);
  ASSERT_EQ(report.comparisons.size(), 1u);
  const ArmDifference& d = report.comparisons[0];
  EXPECT_EQ(d.metric, ReportMetric::kWinRate);
  EXPECT_EQ(d.samples, 100);
  EXPECT_NEAR(d.difference, b.win_rate - 0.5, 1e-12);  // win rate against 0.5
  EXPECT_TRUE(d.significant);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kSignificant);
  EXPECT_EQ(report.verdict.leading_arm, "b");
  EXPECT_TRUE(Contains(report.verdict.summary, "b ahead of a")) << report.verdict.summary;
  EXPECT_TRUE(Contains(report.verdict.summary, "win rate")) << report.verdict.summary;
}

TEST(ExperimentReportTest, WinRateWithEvenReviewsIsInconclusive) {
  std::vector<ComparisonRecord> reviews;
  for (int i = 0; i < 90; ++i) {
    const int result = i % 3 == 0 ? kFirstBetter : i % 3 == 1 ? kSecondBetter : kTie;
    reviews.push_back(Review("a", "b", result, i));
  }
  ReportOptions options;
  options.metric = ReportMetric::kWinRate;
  const Report report = ComputeReport(Arms({"a", "b"}), {}, {}, reviews, options);
  EXPECT_EQ(report.verdict.status, VerdictStatus::kInconclusive);
  EXPECT_DOUBLE_EQ(Arm(report, "b").win_rate, 0.5);
  EXPECT_NEAR(report.comparisons[0].difference, 0, 1e-12);
  EXPECT_TRUE(Contains(report.verdict.summary, "on win rate")) << report.verdict.summary;
}

TEST(ExperimentReportTest, ControlArmOptionIsRespected) {
  ReportOptions options;
  options.control_arm = "b";
  const Report report =
      ComputeReport(Arms({"a", "b", "c"}), {}, InterleavedRatings(0.5, 0.5, 50, 1), {}, options);
  ASSERT_EQ(report.comparisons.size(), 2u);
  EXPECT_EQ(report.comparisons[0].arm, "a");
  EXPECT_EQ(report.comparisons[0].control_arm, "b");
  EXPECT_EQ(report.comparisons[1].arm, "c");
  EXPECT_EQ(report.comparisons[1].control_arm, "b");
  EXPECT_TRUE(Contains(report.verdict.method, "Bonferroni over 2 comparisons"))
      << report.verdict.method;

  // The winner named against the chosen control.
  options.control_arm = "a";
  Report flipped =
      ComputeReport(Arms({"b", "a"}), {}, InterleavedRatings(0.3, 0.8, 200, 12345), {}, options);
  ASSERT_EQ(flipped.comparisons.size(), 1u);
  EXPECT_EQ(flipped.comparisons[0].arm, "b");
  EXPECT_EQ(flipped.comparisons[0].control_arm, "a");
  EXPECT_EQ(flipped.verdict.leading_arm, "b");
  EXPECT_TRUE(Contains(flipped.verdict.summary, "b ahead of a")) << flipped.verdict.summary;

  // An unknown control falls back to the first arm.
  options.control_arm = "nope";
  flipped =
      ComputeReport(Arms({"b", "a"}), {}, InterleavedRatings(0.3, 0.8, 200, 12345), {}, options);
  ASSERT_EQ(flipped.comparisons.size(), 1u);
  EXPECT_EQ(flipped.comparisons[0].control_arm, "b");
  EXPECT_EQ(flipped.comparisons[0].arm, "a");
}

void ExpectAllFinite(const Report& report) {
  for (const ArmStats& s : report.arms) {
    for (double v : {s.feedback_mean, s.feedback_ci_low, s.feedback_ci_high, s.win_rate,
                     s.win_rate_ci_low, s.win_rate_ci_high, s.latency.p99, s.traffic_share}) {
      EXPECT_TRUE(std::isfinite(v)) << s.arm << ": " << v;
    }
  }
  for (const ArmDifference& d : report.comparisons) {
    for (double v : {d.difference, d.ci_low, d.ci_high, d.p_value}) {
      EXPECT_TRUE(std::isfinite(v)) << d.arm << ": " << v;
    }
    EXPECT_LE(d.ci_low, d.ci_high);
  }
}

TEST(ExperimentReportTest, IntervalsAreFiniteEvenWithFewSamples) {
  ReportOptions options;
  options.scale_min = 1;
  options.scale_max = 5;
  // Nothing at all.
  ExpectAllFinite(ComputeReport(Arms({"a", "b"}), {}, {}, {}, options));
  // One rating on one arm.
  ExpectAllFinite(ComputeReport(Arms({"a", "b"}), {}, {Rating("a", 1, 1)}, {}, options));
  // Three ratings each: before the sequential test's burn-in.
  Report few = ComputeReport(Arms({"a", "b"}), {}, InterleavedRatings(0.5, 0.5, 3, 8), {}, options);
  ExpectAllFinite(few);
  // Shown as the widest possible difference on the scale.
  EXPECT_DOUBLE_EQ(few.comparisons[0].ci_low, -4);
  EXPECT_DOUBLE_EQ(few.comparisons[0].ci_high, 4);
  // Two reviews on the win-rate path.
  options.metric = ReportMetric::kWinRate;
  Report reviews =
      ComputeReport(Arms({"a", "b"}), {}, {},
                    {Review("a", "b", kFirstBetter, 1), Review("a", "b", kTie, 2)}, options);
  ExpectAllFinite(reviews);
  EXPECT_DOUBLE_EQ(reviews.comparisons[0].ci_low, -0.5);
  EXPECT_DOUBLE_EQ(reviews.comparisons[0].ci_high, 0.5);
}

TEST(ExperimentReportTest, NoArmsGiveAnEmptyReport) {
  const Report report = ComputeReport({}, {Served("a", 1)}, {Rating("a", 1, 1)}, {}, {});
  EXPECT_TRUE(report.arms.empty());
  EXPECT_TRUE(report.comparisons.empty());
}

}  // namespace
}  // namespace switchyard::router
