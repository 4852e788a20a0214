// Statistics behind the router's A/B experiment report and its Thompson-
// sampling bandit: normal and Student t quantiles, mean and proportion
// intervals, always-valid sequential tests (mSPRT) for two arms or one arm
// against a fixed mean, and bandit traffic weights.
//
// Conventions: feedback scores are normalised to [0, 1]; pairwise comparison
// outcomes are 1 (win), 0.5 (tie) or 0 (loss). Every function here is pure
// (no globals, no hidden state; ThompsonWeights draws from its own seeded
// generator), so all of them are thread-safe.
#ifndef SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_STATS_H_
#define SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_STATS_H_

#include <cstdint>
#include <vector>

namespace switchyard::router {

// Inverse CDF of the standard normal: x with Phi(x) = p. Acklam's rational
// approximation polished by one Halley step (|error| ~ 1e-15). p <= 0 gives
// -inf, p >= 1 gives +inf, NaN gives NaN.
double NormalQuantile(double p);

// Quantile of Student's t with df > 0 degrees of freedom (df need not be an
// integer). Closed form for df = 1 and 2; otherwise a Cornish-Fisher start
// refined by safeguarded Newton on the exact CDF (regularised incomplete
// beta), so the result is exact to ~1e-10. df > 1e7 is the normal quantile.
// p <= 0 gives -inf, p >= 1 gives +inf; df <= 0 or NaN arguments give NaN.
double StudentTQuantile(double p, double df);

struct MeanSummary {
  int64_t n = 0;
  double mean = 0;      // 0 when n == 0
  double variance = 0;  // sample variance (divides by n - 1); 0 when n < 2
  // Two-sided interval at `confidence`: mean -+ t_{(1+c)/2, n-1} sqrt(var/n)
  // when n >= 2; both equal mean when n < 2.
  double ci_low = 0;
  double ci_high = 0;
};

// Mean, sample variance and Student t interval of `values`. `confidence` is
// clamped to [0, 1]; 1 gives an infinite interval.
MeanSummary SummarizeMean(const std::vector<double>& values, double confidence = 0.95);

struct Interval {
  double low = 0;
  double high = 0;
};

// Wilson score interval for a proportion successes / n. `successes` may be
// fractional (a tie counts half) and is clamped to [0, n]. n <= 0 gives
// [0, 1]. The interval always lies inside [0, 1].
Interval WilsonInterval(double successes, int64_t n, double confidence = 0.95);

// One observation of a two-arm sequential test, in arrival order.
struct Observation {
  int group = 0;     // 0 = treatment arm, 1 = control arm; others are ignored
  double value = 0;  // e.g. normalised feedback in [0, 1]; non-finite is ignored
};

struct SequentialResult {
  // mean(treatment) - mean(control) (two-sample) or mean - null_mean
  // (one-sample), over the whole stream; 0 when a needed group is empty.
  double estimate = 0;
  // Always-valid confidence sequence at level 1 - alpha, at the end of the
  // stream. [-inf, +inf] until the burn-in is reached (no information yet).
  double ci_low = 0;
  double ci_high = 0;
  // Always-valid p-value: min over the evaluated prefixes of 1 / Lambda_t,
  // capped at 1. 1 when no prefix was evaluated.
  double p_value = 1;
  int64_t n_treatment = 0;  // one-sample: n is reported here
  int64_t n_control = 0;    // one-sample: always 0
};

// Mixture sequential probability ratio test (Johari, Pekelis, Walsh, "Always
// valid inference", 2017) with a N(0, tau^2) mixing distribution on the
// effect, and the plug-in variance of the difference of means
// V = s1^2/n1 + s0^2/n0 (floored at 1e-12 so constant data gives no NaN).
// With d the observed difference, the mixture likelihood ratio is
//   Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2))),
// except that d^2 / V (a squared Student t, as V is estimated) enters as its
// normal equivalent z^2 = df ln(1 + t^2/df) ((8 df + 1)/(8 df + 3))^2
// (Wallace 1959; df = Welch-Satterthwaite, or n - 1 for one sample). This
// tends to the formula above as n grows and keeps the false-positive rate
// under alpha for small n, which plain plug-in V does not.
// Lambda is evaluated after every observation once both groups hold at least
// max(burn_in, 2) observations. Taking the max over every prefix means a
// report recomputed from the stored stream at any time stays valid however
// often people looked. The confidence sequence {theta : Lambda(theta) <
// 1/alpha} is d -+ sqrt(V t*^2), where t*^2 is the t^2 whose z^2 equals
// 2 (V + tau^2) / tau^2 * (ln(1/alpha) + 0.5 ln((V + tau^2) / V)); the result
// is its running intersection, or the last interval if that intersection
// became empty.
// `tau` is on the scale of the values (for [0, 1] feedback, ~0.1 suits
// effects of a few points). alpha outside (0, 1) or tau <= 0 (or NaN) give
// the no-evidence result: p = 1, interval [-inf, +inf].
SequentialResult TwoSampleMsprt(const std::vector<Observation>& stream, double alpha, double tau,
                                int64_t burn_in = 10);

// The same test for one stream against a fixed null mean (e.g. the win rate
// of pairwise reviews against 0.5), with V = s^2 / n.
SequentialResult OneSampleMsprt(const std::vector<double>& stream, double null_mean, double alpha,
                                double tau, int64_t burn_in = 10);

// Accumulated reward of one bandit arm. For feedback normalised to [0, 1],
// successes is the sum of scores and failures = count - successes.
struct ArmReward {
  double successes = 0;
  double failures = 0;
};

// Thompson-sampling traffic weights. Arm k's reward rate is
// Beta(prior_alpha + successes_k, prior_beta + failures_k) (parameters below
// 1e-6, e.g. from negative counts, are raised to 1e-6). Returns, per arm,
//   weight_floor + (1 - K * weight_floor) * P(arm k has the highest draw),
// with P estimated from `draws` joint draws of a std::mt19937_64 seeded by
// `seed`, so the result is deterministic. weight_floor is clamped to
// [0, 1/K] and guarantees every arm keeps some exploration traffic. The
// weights sum to 1. draws <= 0 gives equal weights; no arms gives {}.
std::vector<double> ThompsonWeights(const std::vector<ArmReward>& arms, double prior_alpha,
                                    double prior_beta, double weight_floor, int draws,
                                    uint64_t seed);

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_STATS_H_
