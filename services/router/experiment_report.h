// ExperimentReport: per-arm statistics of an experiment's logged traffic,
// feedback and pairwise reviews, every arm against the control arm with an
// always-valid sequential test (mSPRT), and a plain-words verdict.
//
// The sequential p-values are valid however often the report is read: each
// report recomputes the test over the whole time-ordered stream, which is
// what reading it after every observation would have given. With more than
// one arm against the control the significance level is split between the
// comparisons (Bonferroni), so the verdict keeps its nominal error rate.
//
// Pure functions; thread-safe.
#ifndef SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_REPORT_H_
#define SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_REPORT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "services/router/experiment_store.h"

namespace switchyard::router {

enum class ReportMetric { kFeedbackScore = 1, kWinRate = 2 };

struct ReportArm {
  std::string name;
  double weight = 0;            // configured, normalised
  double effective_weight = 0;  // in force (bandit), normalised
};

struct ReportOptions {
  std::string control_arm;  // empty = the first arm
  ReportMetric metric = ReportMetric::kFeedbackScore;
  double significance_level = 0.05;
  int64_t min_samples_per_arm = 30;
  double scale_min = 0;  // feedback scale
  double scale_max = 1;
  bool include_excluded = false;
  // Mixing spread of the mSPRT on the normalised [0, 1] scale: the size of
  // effect the test is most sensitive to.
  double tau = 0.1;
};

struct LatencyStats {
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;  // seconds
};

struct ArmStats {
  std::string arm;
  double weight = 0, effective_weight = 0, traffic_share = 0;
  int64_t requests = 0, errors = 0;
  std::map<int, int64_t> errors_by_code;  // gRPC code -> count
  LatencyStats latency, time_to_first_token;
  double prompt_tokens_per_request = 0, completion_tokens_per_request = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  double compute_seconds_per_request = 0, retrieval_seconds_per_request = 0;
  int64_t context_missing = 0;
  int64_t feedback_count = 0;
  double feedback_mean = 0, feedback_ci_low = 0, feedback_ci_high = 0;  // experiment scale
  int64_t thumbs_up = 0, thumbs_down = 0;
  int64_t shadow_requests = 0;
  int64_t comparisons = 0, wins = 0, losses = 0, ties = 0;
  double win_rate = 0, win_rate_ci_low = 0, win_rate_ci_high = 0;
};

struct ArmDifference {
  std::string arm, control_arm;
  ReportMetric metric = ReportMetric::kFeedbackScore;
  double difference = 0, ci_low = 0, ci_high = 0;  // feedback: experiment scale
  double p_value = 1;
  bool significant = false;
  int64_t samples = 0, control_samples = 0;
};

enum class VerdictStatus { kNotEnoughData = 1, kInconclusive = 2, kSignificant = 3 };

struct ReportVerdict {
  VerdictStatus status = VerdictStatus::kNotEnoughData;
  std::string leading_arm;
  std::string summary;
  std::string method;
  double significance_level = 0.05;
};

struct Report {
  std::vector<ArmStats> arms;
  std::vector<ArmDifference> comparisons;
  ReportVerdict verdict;
};

// Mean, nearest-rank p50/p95/p99 and max of latencies in seconds (zeros
// for none).
LatencyStats SummarizeLatency(std::vector<double> seconds);

// `interactions` need no detail; feedback and comparisons in any order (they
// are ordered by time here). Records of arms not in `arms` are ignored.
Report ComputeReport(const std::vector<ReportArm>& arms,
                     const std::vector<InteractionRecord>& interactions,
                     std::vector<FeedbackRecord> feedback,
                     std::vector<ComparisonRecord> comparisons, const ReportOptions& options);

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_REPORT_H_
