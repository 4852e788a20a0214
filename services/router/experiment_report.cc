#include "services/router/experiment_report.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "services/router/experiment_stats.h"

namespace switchyard::router {
namespace {

constexpr int kComparisonTie = 3;
constexpr int kComparisonBothBad = 4;

}  // namespace

LatencyStats SummarizeLatency(std::vector<double> values) {
  LatencyStats out;
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    // Nearest rank.
    const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(values.size())));
    return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  double sum = 0;
  for (double v : values) sum += v;
  out.mean = sum / static_cast<double>(values.size());
  out.p50 = at(0.50);
  out.p95 = at(0.95);
  out.p99 = at(0.99);
  out.max = values.back();
  return out;
}

namespace {

// Outcome of a review for `arm` against `other`: 1 win, 0.5 tie, 0 loss;
// -1 when the review is not between them or decides nothing.
double Outcome(const ComparisonRecord& c, const std::string& arm, const std::string& other) {
  const bool forward = c.arm == arm && c.other_arm == other;
  const bool backward = c.arm == other && c.other_arm == arm;
  if (!forward && !backward) return -1;
  if (c.result == kComparisonBothBad || c.result == 0) return -1;
  if (c.result == kComparisonTie) return 0.5;
  return c.preferred_arm == arm ? 1.0 : 0.0;
}

std::string Fmt(double v) { return absl::StrFormat("%.3g", v); }

}  // namespace

Report ComputeReport(const std::vector<ReportArm>& arms,
                     const std::vector<InteractionRecord>& interactions,
                     std::vector<FeedbackRecord> feedback,
                     std::vector<ComparisonRecord> comparisons, const ReportOptions& options) {
  Report report;
  const double scale = options.scale_max - options.scale_min;
  std::map<std::string, size_t> index;
  for (const ReportArm& arm : arms) {
    index[arm.name] = report.arms.size();
    ArmStats stats;
    stats.arm = arm.name;
    stats.weight = arm.weight;
    stats.effective_weight = arm.effective_weight;
    report.arms.push_back(stats);
  }
  if (arms.empty()) return report;

  // Traffic, errors, latency, tokens.
  std::vector<std::vector<double>> latency(arms.size()), ttft(arms.size());
  std::vector<double> compute(arms.size()), retrieval(arms.size());
  int64_t served_total = 0;
  for (const InteractionRecord& r : interactions) {
    auto it = index.find(r.arm);
    if (it == index.end()) continue;
    ArmStats& s = report.arms[it->second];
    if (r.shadow) {
      ++s.shadow_requests;
      continue;
    }
    if (r.excluded && !options.include_excluded) continue;
    ++served_total;
    ++s.requests;
    if (r.error_code != 0) {
      ++s.errors;
      ++s.errors_by_code[r.error_code];
      continue;
    }
    latency[it->second].push_back(r.latency_seconds);
    ttft[it->second].push_back(r.time_to_first_token_seconds);
    s.prompt_tokens += r.prompt_tokens;
    s.completion_tokens += r.completion_tokens;
    compute[it->second] += r.compute_seconds;
    retrieval[it->second] += r.retrieval_seconds;
    if (r.context_missing) ++s.context_missing;
  }
  for (size_t i = 0; i < arms.size(); ++i) {
    ArmStats& s = report.arms[i];
    const double ok = static_cast<double>(latency[i].size());
    s.latency = SummarizeLatency(latency[i]);
    s.time_to_first_token = SummarizeLatency(ttft[i]);
    if (ok > 0) {
      s.prompt_tokens_per_request = static_cast<double>(s.prompt_tokens) / ok;
      s.completion_tokens_per_request = static_cast<double>(s.completion_tokens) / ok;
      s.compute_seconds_per_request = compute[i] / ok;
      s.retrieval_seconds_per_request = retrieval[i] / ok;
    }
    if (served_total > 0) {
      s.traffic_share = static_cast<double>(s.requests) / static_cast<double>(served_total);
    }
  }

  // Feedback on served answers, in time order.
  std::stable_sort(
      feedback.begin(), feedback.end(),
      [](const FeedbackRecord& a, const FeedbackRecord& b) { return a.create_us < b.create_us; });
  std::vector<std::vector<double>> scores(arms.size());
  std::vector<std::pair<size_t, double>> stream;  // (arm index, normalised score)
  for (const FeedbackRecord& f : feedback) {
    auto it = index.find(f.arm);
    if (it == index.end() || f.shadow) continue;
    if (f.excluded && !options.include_excluded) continue;
    ArmStats& s = report.arms[it->second];
    if (f.thumbs == 1) ++s.thumbs_up;
    if (f.thumbs == 2) ++s.thumbs_down;
    scores[it->second].push_back(f.normalized);
    stream.emplace_back(it->second, f.normalized);
  }
  for (size_t i = 0; i < arms.size(); ++i) {
    ArmStats& s = report.arms[i];
    MeanSummary m = SummarizeMean(scores[i]);
    s.feedback_count = m.n;
    if (m.n > 0) {
      s.feedback_mean = options.scale_min + scale * m.mean;
      s.feedback_ci_low = options.scale_min + scale * m.ci_low;
      s.feedback_ci_high = options.scale_min + scale * m.ci_high;
    }
  }

  // Pairwise reviews.
  std::stable_sort(comparisons.begin(), comparisons.end(),
                   [](const ComparisonRecord& a, const ComparisonRecord& b) {
                     return a.create_us < b.create_us;
                   });
  for (const ComparisonRecord& c : comparisons) {
    // Reviews between two listed arms only.
    if (c.arm == c.other_arm || index.count(c.arm) == 0 || index.count(c.other_arm) == 0) continue;
    for (const std::string* name : {&c.arm, &c.other_arm}) {
      auto it = index.find(*name);
      ArmStats& s = report.arms[it->second];
      ++s.comparisons;
      if (c.result == kComparisonTie) {
        ++s.ties;
      } else if (c.result != kComparisonBothBad && !c.preferred_arm.empty()) {
        ++(c.preferred_arm == *name ? s.wins : s.losses);
      }
    }
  }
  for (ArmStats& s : report.arms) {
    const int64_t decided = s.wins + s.losses + s.ties;
    const double points = static_cast<double>(s.wins) + 0.5 * static_cast<double>(s.ties);
    if (decided > 0) s.win_rate = points / static_cast<double>(decided);
    Interval ci = WilsonInterval(points, decided);
    s.win_rate_ci_low = decided > 0 ? ci.low : 0;
    s.win_rate_ci_high = decided > 0 ? ci.high : 0;
  }

  // Every arm against the control.
  std::string control = options.control_arm.empty() ? arms.front().name : options.control_arm;
  if (index.count(control) == 0) control = arms.front().name;
  const size_t control_index = index[control];
  const size_t tests = arms.size() > 1 ? arms.size() - 1 : 1;
  const double alpha = options.significance_level / static_cast<double>(tests);
  const bool by_feedback = options.metric != ReportMetric::kWinRate;
  std::vector<std::string> short_of_data;
  auto samples_of = [&](size_t i) -> int64_t {
    if (by_feedback) return static_cast<int64_t>(scores[i].size());
    return report.arms[i].wins + report.arms[i].losses + report.arms[i].ties;
  };
  for (size_t i = 0; i < arms.size(); ++i) {
    if (samples_of(i) < options.min_samples_per_arm) {
      short_of_data.push_back(absl::StrCat(arms[i].name, ": ", samples_of(i), " of ",
                                           options.min_samples_per_arm,
                                           by_feedback ? " ratings" : " reviews"));
    }
  }
  for (size_t i = 0; i < arms.size(); ++i) {
    if (i == control_index) continue;
    ArmDifference d;
    d.arm = arms[i].name;
    d.control_arm = control;
    d.metric = options.metric;
    SequentialResult r;
    if (by_feedback) {
      std::vector<Observation> obs;
      for (const auto& [arm, value] : stream) {
        if (arm == i) obs.push_back({0, value});
        if (arm == control_index) obs.push_back({1, value});
      }
      r = TwoSampleMsprt(obs, alpha, options.tau);
      d.difference = scale * r.estimate;
      d.ci_low = scale * r.ci_low;
      d.ci_high = scale * r.ci_high;
      d.samples = r.n_treatment;
      d.control_samples = r.n_control;
    } else {
      std::vector<double> outcomes;
      for (const ComparisonRecord& c : comparisons) {
        const double o = Outcome(c, arms[i].name, control);
        if (o >= 0) outcomes.push_back(o);
      }
      r = OneSampleMsprt(outcomes, 0.5, alpha, options.tau);
      d.difference = r.estimate;
      d.ci_low = r.ci_low;
      d.ci_high = r.ci_high;
      d.samples = r.n_treatment;
      d.control_samples = r.n_treatment;
    }
    // Before the burn-in the confidence sequence is unbounded: show the
    // widest possible difference instead of infinities.
    // It is also never wider than the scale allows.
    const double widest = by_feedback ? scale : 0.5;
    d.ci_low = std::isfinite(d.ci_low) ? std::max(d.ci_low, -widest) : -widest;
    d.ci_high = std::isfinite(d.ci_high) ? std::min(d.ci_high, widest) : widest;
    d.p_value = r.p_value;
    d.significant = r.p_value < alpha && samples_of(i) >= options.min_samples_per_arm &&
                    samples_of(control_index) >= options.min_samples_per_arm;
    report.comparisons.push_back(d);
  }

  // Verdict.
  ReportVerdict& v = report.verdict;
  v.significance_level = options.significance_level;
  v.method =
      absl::StrCat("mSPRT (normal mixture, tau ", Fmt(options.tau), " of the scale)",
                   tests > 1 ? absl::StrCat(", Bonferroni over ", tests, " comparisons") : "");
  const char* metric_name = by_feedback ? "feedback score" : "win rate";
  // Leading arm: the best point estimate among arms with data.
  const ArmDifference* best = nullptr;
  for (const ArmDifference& d : report.comparisons) {
    if (best == nullptr || d.difference > best->difference) best = &d;
  }
  const bool control_leads = best == nullptr || best->difference <= 0;
  v.leading_arm = control_leads ? control : best->arm;
  const bool any_data = std::any_of(report.arms.begin(), report.arms.end(), [&](const ArmStats& s) {
    return by_feedback ? s.feedback_count > 0 : s.comparisons > 0;
  });
  if (!any_data) v.leading_arm.clear();
  if (!short_of_data.empty()) {
    v.status = VerdictStatus::kNotEnoughData;
    v.summary = absl::StrCat("not enough data yet (", absl::StrJoin(short_of_data, "; "), ")");
    return report;
  }
  const ArmDifference* winner = nullptr;  // largest significant gain over the control
  const ArmDifference* loser = nullptr;   // the control beats everything significant
  for (const ArmDifference& d : report.comparisons) {
    if (!d.significant) continue;
    if (d.difference > 0 && (winner == nullptr || d.difference > winner->difference)) winner = &d;
    if (d.difference < 0 && (loser == nullptr || d.difference > loser->difference)) loser = &d;
  }
  auto describe = [&](const ArmDifference& d, bool ahead) {
    const double half = (d.ci_high - d.ci_low) / 2;
    return absl::StrCat(ahead ? d.arm : d.control_arm, " ahead of ", ahead ? d.control_arm : d.arm,
                        " by ", Fmt(std::abs(d.difference)), " +/- ", Fmt(half), " on ",
                        metric_name, ", significant (alpha ", Fmt(options.significance_level),
                        ", p ", Fmt(d.p_value), ")");
  };
  if (winner != nullptr) {
    v.status = VerdictStatus::kSignificant;
    v.leading_arm = winner->arm;
    v.summary = describe(*winner, true);
  } else if (loser != nullptr && report.comparisons.size() == 1) {
    v.status = VerdictStatus::kSignificant;
    v.leading_arm = control;
    v.summary = describe(*loser, false);
  } else if (loser != nullptr) {
    // The control beats some arm significantly but not every arm: say so.
    v.status = VerdictStatus::kSignificant;
    v.leading_arm = control;
    std::vector<std::string> parts;
    for (const ArmDifference& d : report.comparisons) {
      if (d.significant) parts.push_back(describe(d, false));
    }
    v.summary = absl::StrJoin(parts, "; ");
  } else {
    v.status = VerdictStatus::kInconclusive;
    std::vector<std::string> parts;
    for (const ArmDifference& d : report.comparisons) {
      parts.push_back(absl::StrCat(d.arm, " vs ", d.control_arm, " ", d.difference >= 0 ? "+" : "",
                                   Fmt(d.difference), " (", Fmt(d.ci_low), " to ", Fmt(d.ci_high),
                                   ", p ", Fmt(d.p_value), ")"));
    }
    v.summary = absl::StrCat("no significant difference yet on ", metric_name, ": ",
                             absl::StrJoin(parts, "; "));
  }
  return report;
}

}  // namespace switchyard::router
