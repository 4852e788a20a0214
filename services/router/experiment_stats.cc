#include "services/router/experiment_stats.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace switchyard::router {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kPi = 3.14159265358979323846;
// Plug-in variance of a mean difference below this is raised to it: constant
// data (all 1.0) would otherwise divide by zero. Far below any real V for
// [0, 1] scores (0.25 / n).
constexpr double kVarianceFloor = 1e-12;
// The variance prior of the sequential tests (values on [0, 1]).
constexpr double kPriorObservations = 2.0;
constexpr double kPriorVariance = 0.25;
// Smallest Beta shape used by ThompsonWeights; gamma_distribution needs > 0.
constexpr double kMinBetaShape = 1e-6;

// Continued fraction of the regularised incomplete beta (modified Lentz):
// I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * 1 / (1 + e1 / (1 + e2 / (1 + ...))),
// e_{2m+1} = -(a+m)(a+b+m) x / ((a+2m)(a+2m+1)),
// e_{2m}   = m (b-m) x / ((a+2m-1)(a+2m)).
// Converges fast for x < (a + 1) / (a + b + 2).
double BetaContinuedFraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  auto nonzero = [](double v) { return std::abs(v) < kTiny ? kTiny : v; };
  double c = 1.0;
  double d = 1.0 / nonzero(1.0 - (a + b) * x / (a + 1.0));
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    const double two_m = 2.0 * m;
    const double even = m * (b - m) * x / ((a + two_m - 1.0) * (a + two_m));
    d = 1.0 / nonzero(1.0 + even * d);
    c = nonzero(1.0 + even / c);
    h *= d * c;
    const double odd = -(a + m) * (a + b + m) * x / ((a + two_m) * (a + two_m + 1.0));
    d = 1.0 / nonzero(1.0 + odd * d);
    c = nonzero(1.0 + odd / c);
    const double step = d * c;
    h *= step;
    if (std::abs(step - 1.0) < 1e-15) break;
  }
  return h;
}

// I_x(a, b), using I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction is slow.
double RegularizedIncompleteBeta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  // x^a (1-x)^b / B(a, b), symmetric under (a, b, x) -> (b, a, 1 - x).
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) +
                                a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1.0) / (a + b + 2.0)) return front * BetaContinuedFraction(a, b, x) / a;
  return 1.0 - front * BetaContinuedFraction(b, a, 1.0 - x) / b;
}

// P(T > t) for t >= 0: 0.5 * I_{df / (df + t^2)}(df / 2, 1 / 2).
double StudentTUpperTail(double t, double df) {
  return 0.5 * RegularizedIncompleteBeta(0.5 * df, 0.5, df / (df + t * t));
}

double StudentTDensity(double t, double df) {
  return std::exp(std::lgamma(0.5 * (df + 1.0)) - std::lgamma(0.5 * df) - 0.5 * std::log(df * kPi) -
                  0.5 * (df + 1.0) * std::log1p(t * t / df));
}

// Running count, mean and sum of squared deviations (Welford); stable where
// sum-of-squares would cancel.
struct RunningMoments {
  int64_t n = 0;
  double mean = 0;
  double m2 = 0;

  void Add(double x) {
    ++n;
    const double delta = x - mean;
    mean += delta / static_cast<double>(n);
    m2 += delta * (x - mean);
  }
  double Variance() const { return n > 1 ? m2 / static_cast<double>(n - 1) : 0.0; }
  // Variance of the mean for the test, s'^2 / n, where s'^2 shrinks the
  // sample variance towards the largest a [0, 1] value can have (0.25) with
  // the weight of kPriorObservations observations. Without it, a run of
  // identical ratings has s^2 = 0 and looks like certainty (p ~ 1e-100 after
  // 15 equal scores); with it, such runs need many more observations. Its
  // weight fades as n grows, and it only ever widens intervals.
  double VarianceOfMean() const {
    if (n == 0) return 0.0;
    const double shrunk = (m2 + kPriorObservations * kPriorVariance) /
                          (static_cast<double>(n - 1) + kPriorObservations);
    return shrunk / static_cast<double>(n);
  }
};

// Welch-Satterthwaite degrees of freedom of V = v1 + v0 (v = s^2 / n):
// (v1 + v0)^2 / (v1^2 / (n1 - 1) + v0^2 / (n0 - 1)); n1 + n0 - 2 when both
// variances are 0. Needs n >= 2 in each arm.
double WelchDegreesOfFreedom(const RunningMoments& a, const RunningMoments& b) {
  const double va = a.VarianceOfMean();
  const double vb = b.VarianceOfMean();
  const double denominator =
      va * va / static_cast<double>(a.n - 1) + vb * vb / static_cast<double>(b.n - 1);
  if (denominator <= 0) return static_cast<double>(a.n + b.n - 2);
  return (va + vb) * (va + vb) / denominator;
}

bool ValidMsprtParameters(double alpha, double tau) {
  const double tau2 = tau * tau;
  return alpha > 0 && alpha < 1 && tau > 0 && std::isfinite(tau2) && tau2 > 0;
}

// Folds the (d, V, df) of successive prefixes into the always-valid p-value
// and the running intersection of the confidence sequence.
//
// Small-sample calibration: the mixture ratio only depends on the data
// through t^2 = d^2 / V, which with a plug-in V has Student-t tails, not the
// normal tails the mSPRT assumes; with V taken at face value, looking after
// every observation from n = 10 on made ~7 % of A/A pairwise-review streams
// "significant" at alpha = 5 %. So t^2 is replaced by the squared normal
// equivalent of a t with df degrees of freedom (Wallace 1959),
//   z^2 = df ln(1 + t^2 / df) ((8 df + 1) / (8 df + 3))^2,
// which tends to t^2 as df grows (the textbook formula for large n).
class MsprtTracker {
 public:
  MsprtTracker(double alpha, double tau) : tau2_(tau * tau), log_inv_alpha_(-std::log(alpha)) {}

  void Update(double d, double v, double df) {
    v = std::max(v, kVarianceFloor);
    const double v_plus = v + tau2_;
    const double c2 = std::pow((8.0 * df + 1.0) / (8.0 * df + 3.0), 2);
    const double z2 = df * std::log1p(d * d / v / df) * c2;
    // ln Lambda = 0.5 ln(V / (V + tau^2)) + tau^2 z^2 / (2 (V + tau^2)); in
    // logs because the exponent passes 700 on strong effects.
    const double log_lambda = 0.5 * std::log(v / v_plus) + tau2_ * z2 / (2.0 * v_plus);
    max_log_lambda_ = std::max(max_log_lambda_, log_lambda);
    // Lambda(theta) = 1/alpha at z^2 = 2 (V + tau^2) / tau^2 (ln(1/alpha) +
    // 0.5 ln((V + tau^2) / V)); map back to t^2, half-width = sqrt(V t^2).
    const double z2_edge = 2.0 * v_plus / tau2_ * (log_inv_alpha_ + 0.5 * std::log(v_plus / v));
    const double half_width = std::sqrt(v * df * std::expm1(z2_edge / (df * c2)));
    last_low_ = d - half_width;
    last_high_ = d + half_width;
    low_ = std::max(low_, last_low_);
    high_ = std::min(high_, last_high_);
    evaluated_ = true;
  }

  void Finish(SequentialResult* result) const {
    if (!evaluated_) {
      result->p_value = 1.0;
      result->ci_low = -kInf;
      result->ci_high = kInf;
      return;
    }
    // max_log_lambda_ starts at 0, so this is min(1, 1 / max Lambda).
    result->p_value = std::exp(-max_log_lambda_);
    // Empty intersection (probability <= alpha): fall back to the latest one.
    const bool empty = low_ > high_;
    result->ci_low = empty ? last_low_ : low_;
    result->ci_high = empty ? last_high_ : high_;
  }

 private:
  double tau2_;
  double log_inv_alpha_;
  double max_log_lambda_ = 0;
  double low_ = -kInf;
  double high_ = kInf;
  double last_low_ = -kInf;
  double last_high_ = kInf;
  bool evaluated_ = false;
};

// A Beta / Gamma shape parameter that gamma_distribution accepts.
double UsableShape(double shape) {
  return std::isfinite(shape) && shape > kMinBetaShape ? shape : kMinBetaShape;
}

}  // namespace

double NormalQuantile(double p) {
  if (std::isnan(p)) return kNaN;
  if (p <= 0) return -kInf;
  if (p >= 1) return kInf;
  // Symmetry; 1 - p is exact for p in [0.5, 1], and the lower tail keeps the
  // relative precision of tiny p.
  if (p > 0.5) return -NormalQuantile(1.0 - p);

  // Acklam's rational approximations (relative error < 1.2e-9).
  constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                          1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                          6.680131188771972e+01, -1.328068155288572e+01};
  constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                          -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                          3.754408661907416e+00};
  constexpr double kTailStart = 0.02425;
  double x;
  if (p < kTailStart) {
    const double q = std::sqrt(-2.0 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  } else {
    const double q = p - 0.5;
    const double r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  }
  // One Halley step on Phi(x) - p brings the error to ~1e-15.
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2.0 * kPi) * std::exp(0.5 * x * x);
  const double refined = x - u / (1.0 + 0.5 * x * u);
  return std::isfinite(refined) ? refined : x;
}

double StudentTQuantile(double p, double df) {
  if (std::isnan(p) || std::isnan(df) || df <= 0) return kNaN;
  if (p <= 0) return -kInf;
  if (p >= 1) return kInf;
  if (p == 0.5) return 0.0;
  if (df > 1e7) return NormalQuantile(p);
  const double sign = p > 0.5 ? 1.0 : -1.0;
  const double tail = std::min(p, 1.0 - p);  // upper-tail probability, < 0.5

  // Closed forms: Cauchy, t = cot(pi * tail); df = 2, t = (1 - 2q) / sqrt(2q(1 - q)).
  if (df == 1) return sign / std::tan(kPi * tail);
  if (df == 2) return sign * (1.0 - 2.0 * tail) / std::sqrt(2.0 * tail * (1.0 - tail));

  // Start: two Cornish-Fisher terms around the normal quantile z.
  const double z = -NormalQuantile(tail);
  const double z2 = z * z;
  const double g1 = z * (z2 + 1.0) / 4.0;
  const double g2 = z * ((5.0 * z2 + 16.0) * z2 + 3.0) / 96.0;
  const double guess = z + g1 / df + g2 / (df * df);

  // Newton on the decreasing upper tail, kept inside a bracket [lo, hi] and
  // falling back to bisection; small df (< 1) can need a very wide bracket.
  double lo = 0.0;
  double hi = std::max(1.0, std::isfinite(guess) ? guess : 1.0);
  while (StudentTUpperTail(hi, df) > tail && hi < 1e300) {
    lo = hi;
    hi *= 2.0;
  }
  double t = std::clamp(std::isfinite(guess) ? guess : hi, lo, hi);
  for (int i = 0; i < 400; ++i) {
    const double f = StudentTUpperTail(t, df) - tail;
    (f > 0 ? lo : hi) = t;
    double next = t + f / StudentTDensity(t, df);
    if (!(next > lo && next < hi)) next = 0.5 * (lo + hi);
    const bool converged = std::abs(next - t) <= 1e-13 * std::max(1.0, t);
    t = next;
    if (converged || f == 0) break;
  }
  return sign * t;
}

MeanSummary SummarizeMean(const std::vector<double>& values, double confidence) {
  MeanSummary summary;
  summary.n = static_cast<int64_t>(values.size());
  if (summary.n == 0) return summary;
  double sum = 0;
  for (double v : values) sum += v;
  summary.mean = sum / static_cast<double>(summary.n);
  summary.ci_low = summary.ci_high = summary.mean;
  if (summary.n < 2) return summary;
  // Two passes: sum of squared deviations does not cancel like E[x^2] - m^2.
  double squares = 0;
  for (double v : values) squares += (v - summary.mean) * (v - summary.mean);
  summary.variance = squares / static_cast<double>(summary.n - 1);
  const double standard_error = std::sqrt(summary.variance / static_cast<double>(summary.n));
  if (standard_error > 0) {
    const double c = std::clamp(confidence, 0.0, 1.0);
    const double half_width =
        StudentTQuantile(0.5 + 0.5 * c, static_cast<double>(summary.n - 1)) * standard_error;
    summary.ci_low = summary.mean - half_width;
    summary.ci_high = summary.mean + half_width;
  }
  return summary;
}

Interval WilsonInterval(double successes, int64_t n, double confidence) {
  if (n <= 0) return {0.0, 1.0};
  const double count = static_cast<double>(n);
  const double s = successes > 0 ? std::min(successes, count) : 0.0;  // NaN -> 0
  const double z = NormalQuantile(0.5 + 0.5 * std::clamp(confidence, 0.0, 1.0));
  if (!std::isfinite(z)) return {0.0, 1.0};
  // Center (p + z^2 / 2n) / (1 + z^2 / n), half-width
  // z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2).
  const double phat = s / count;
  const double z2 = z * z;
  const double denominator = 1.0 + z2 / count;
  const double center = (phat + z2 / (2.0 * count)) / denominator;
  const double half_width =
      z / denominator * std::sqrt(phat * (1.0 - phat) / count + z2 / (4.0 * count * count));
  return {std::max(0.0, center - half_width), std::min(1.0, center + half_width)};
}

SequentialResult TwoSampleMsprt(const std::vector<Observation>& stream, double alpha, double tau,
                                int64_t burn_in) {
  const bool valid = ValidMsprtParameters(alpha, tau);
  const int64_t min_n = std::max<int64_t>(burn_in, 2);  // a variance needs 2
  MsprtTracker tracker(valid ? alpha : 0.5, valid ? tau : 1.0);
  RunningMoments arm[2];  // [0] treatment, [1] control
  for (const Observation& obs : stream) {
    if ((obs.group != 0 && obs.group != 1) || !std::isfinite(obs.value)) continue;
    arm[obs.group].Add(obs.value);
    if (valid && arm[0].n >= min_n && arm[1].n >= min_n) {
      tracker.Update(arm[0].mean - arm[1].mean, arm[0].VarianceOfMean() + arm[1].VarianceOfMean(),
                     WelchDegreesOfFreedom(arm[0], arm[1]));
    }
  }
  SequentialResult result;
  result.n_treatment = arm[0].n;
  result.n_control = arm[1].n;
  if (arm[0].n > 0 && arm[1].n > 0) result.estimate = arm[0].mean - arm[1].mean;
  tracker.Finish(&result);
  return result;
}

SequentialResult OneSampleMsprt(const std::vector<double>& stream, double null_mean, double alpha,
                                double tau, int64_t burn_in) {
  const bool valid = ValidMsprtParameters(alpha, tau) && std::isfinite(null_mean);
  const int64_t min_n = std::max<int64_t>(burn_in, 2);
  MsprtTracker tracker(valid ? alpha : 0.5, valid ? tau : 1.0);
  RunningMoments moments;
  for (double value : stream) {
    if (!std::isfinite(value)) continue;
    moments.Add(value);
    if (valid && moments.n >= min_n) {
      tracker.Update(moments.mean - null_mean, moments.VarianceOfMean(),
                     static_cast<double>(moments.n - 1));
    }
  }
  SequentialResult result;
  result.n_treatment = moments.n;
  if (moments.n > 0 && std::isfinite(null_mean)) result.estimate = moments.mean - null_mean;
  tracker.Finish(&result);
  return result;
}

std::vector<double> ThompsonWeights(const std::vector<ArmReward>& arms, double prior_alpha,
                                    double prior_beta, double weight_floor, int draws,
                                    uint64_t seed) {
  const size_t k = arms.size();
  if (k == 0) return {};
  const double arm_count = static_cast<double>(k);
  if (draws <= 0) return std::vector<double>(k, 1.0 / arm_count);
  const double floor_weight =
      weight_floor > 0 ? std::min(weight_floor, 1.0 / arm_count) : 0.0;  // NaN -> 0

  // Beta(a, b) draw = X / (X + Y), X ~ Gamma(a, 1), Y ~ Gamma(b, 1).
  using Gamma = std::gamma_distribution<double>;
  std::vector<std::pair<Gamma, Gamma>> gammas;  // (success, failure) per arm
  for (const ArmReward& arm : arms) {
    gammas.emplace_back(Gamma(UsableShape(prior_alpha + arm.successes)),
                        Gamma(UsableShape(prior_beta + arm.failures)));
  }

  std::mt19937_64 rng(seed);
  std::vector<int64_t> wins(k, 0);
  for (int draw = 0; draw < draws; ++draw) {
    double best = -1.0;
    size_t best_arm = 0;
    int ties = 0;
    for (size_t i = 0; i < k; ++i) {
      const double x = gammas[i].first(rng);
      const double y = gammas[i].second(rng);
      // Tiny shapes can underflow both gammas to 0; call that a coin flip.
      const double rate = x + y > 0 ? x / (x + y) : 0.5;
      if (rate > best) {
        best = rate;
        best_arm = i;
        ties = 1;
      } else if (rate == best) {
        // Uniform choice among tied arms (reservoir), so no arm is favoured
        // by its position.
        ++ties;
        if (rng() % static_cast<uint64_t>(ties) == 0) best_arm = i;
      }
    }
    ++wins[best_arm];
  }

  std::vector<double> weights(k);
  for (size_t i = 0; i < k; ++i) {
    weights[i] = floor_weight + (1.0 - arm_count * floor_weight) * static_cast<double>(wins[i]) /
                                    static_cast<double>(draws);
  }
  return weights;
}

}  // namespace switchyard::router
