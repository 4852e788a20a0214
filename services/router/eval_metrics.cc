#include "services/router/eval_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace switchyard::router {
namespace {

constexpr size_t kMaxLabelBytes = 64;
constexpr size_t kMaxLabelTokens = 5;
constexpr size_t kMinDistinctLabels = 2;
constexpr size_t kMaxDistinctLabels = 50;

// Harmonic mean of precision and recall (F-measure, beta = 1); 0 when both are 0.
double F1(double precision, double recall) {
  return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
}

// Whether `needle` occurs in `haystack` as a contiguous run starting at `pos`.
bool RunAt(const std::vector<std::string>& haystack, const std::vector<std::string>& needle,
           size_t pos) {
  if (needle.empty() || pos + needle.size() > haystack.size()) return false;
  return std::equal(needle.begin(), needle.end(), haystack.begin() + pos);
}

bool ContainsRun(const std::vector<std::string>& haystack, const std::vector<std::string>& needle) {
  for (size_t pos = 0; pos + needle.size() <= haystack.size(); ++pos) {
    if (RunAt(haystack, needle, pos)) return true;
  }
  return false;
}

// Uniform integer in [0, n), n > 0, without modulo bias: reject the lowest
// 2^64 mod n outputs so the rest split evenly into n residues.
uint64_t UniformIndex(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (0 - n) % n;
  uint64_t x = rng();
  while (x < threshold) x = rng();
  return x % n;
}

// Quantile p in [0, 1] of sorted, non-empty `s`, interpolating linearly
// between order statistics (Hyndman & Fan type 7).
double SortedQuantile(const std::vector<double>& s, double p) {
  const double h = (static_cast<double>(s.size()) - 1) * p;
  const size_t lo = static_cast<size_t>(std::floor(h));
  if (lo + 1 >= s.size()) return s.back();
  return s[lo] + (h - static_cast<double>(lo)) * (s[lo + 1] - s[lo]);
}

Estimate BootstrapFinite(const std::vector<double>& x, int resamples, uint64_t seed,
                         double confidence) {
  Estimate est;
  est.n = static_cast<int64_t>(x.size());
  if (x.empty()) return est;
  double sum = 0;
  for (double v : x) sum += v;
  est.value = sum / static_cast<double>(x.size());
  est.ci_low = est.ci_high = est.value;
  if (x.size() < 2 || resamples <= 0) return est;
  if (std::all_of(x.begin(), x.end(), [&](double v) { return v == x[0]; })) return est;

  std::mt19937_64 rng(seed);
  std::vector<double> means(static_cast<size_t>(resamples));
  for (double& mean : means) {
    double s = 0;
    for (size_t k = 0; k < x.size(); ++k) s += x[UniformIndex(rng, x.size())];
    mean = s / static_cast<double>(x.size());
  }
  std::sort(means.begin(), means.end());
  const double c = std::isnan(confidence) ? 0.95 : std::clamp(confidence, 0.0, 1.0);
  est.ci_low = SortedQuantile(means, (1 - c) / 2);
  est.ci_high = SortedQuantile(means, (1 + c) / 2);
  return est;
}

}  // namespace

bool IsLabelSet(const std::vector<std::string>& references) {
  std::set<std::string> distinct;
  for (const std::string& ref : references) {
    if (ref.size() > kMaxLabelBytes) return false;
    const std::vector<std::string> tokens = AnswerTokens(ref);
    if (tokens.empty() || tokens.size() > kMaxLabelTokens) return false;
    distinct.insert(absl::StrJoin(tokens, " "));
  }
  return distinct.size() >= kMinDistinctLabels && distinct.size() <= kMaxDistinctLabels &&
         2 * distinct.size() <= references.size();
}

std::string MatchLabel(std::string_view prediction, const std::vector<std::string>& labels) {
  const std::string normalized = NormalizeAnswer(prediction);
  // NormalizeAnswer joins its tokens with single spaces.
  const std::vector<std::string> pred = absl::StrSplit(normalized, ' ', absl::SkipEmpty());
  std::vector<std::vector<std::string>> label_tokens;
  label_tokens.reserve(labels.size());
  for (const std::string& label : labels) {
    label_tokens.push_back(AnswerTokens(label));
    if (!label_tokens.back().empty() && absl::StrJoin(label_tokens.back(), " ") == normalized) {
      return label;
    }
  }
  // The prefix rule: exactly one label starts the prediction and no other
  // (differently normalised) label occurs anywhere in it.
  int match = -1;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (RunAt(pred, label_tokens[i], 0)) {
      if (match >= 0 && label_tokens[match] != label_tokens[i]) return "";
      if (match < 0) match = static_cast<int>(i);
    }
  }
  if (match < 0) return "";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (label_tokens[i] != label_tokens[match] && ContainsRun(pred, label_tokens[i])) return "";
  }
  return labels[match];
}

ClassificationReport Classify(const std::vector<std::string>& predictions,
                              const std::vector<std::string>& references) {
  ClassificationReport report;
  if (predictions.size() != references.size()) return report;
  std::vector<std::string> gold(references.size());
  std::set<std::string> distinct;
  for (size_t i = 0; i < references.size(); ++i) {
    gold[i] = NormalizeAnswer(references[i]);
    if (!gold[i].empty()) distinct.insert(gold[i]);
  }
  report.labels.assign(distinct.begin(), distinct.end());
  if (report.labels.empty()) return report;

  struct Counts {
    int64_t true_positive = 0, predicted = 0, support = 0;
  };
  std::map<std::string, Counts> per_label;
  int64_t correct = 0;
  for (size_t i = 0; i < references.size(); ++i) {
    if (gold[i].empty()) continue;
    ++report.examples;
    const std::string predicted = MatchLabel(predictions[i], report.labels);
    ++per_label[gold[i]].support;
    if (predicted.empty()) continue;
    ++per_label[predicted].predicted;
    if (predicted == gold[i]) {
      ++per_label[predicted].true_positive;
      ++correct;
    }
  }
  report.accuracy = static_cast<double>(correct) / static_cast<double>(report.examples);
  for (const std::string& label : report.labels) {
    const Counts& c = per_label[label];
    const double precision =
        c.predicted > 0 ? static_cast<double>(c.true_positive) / static_cast<double>(c.predicted)
                        : 0.0;
    const double recall = static_cast<double>(c.true_positive) / static_cast<double>(c.support);
    report.macro_precision += precision;
    report.macro_recall += recall;
    report.macro_f1 += F1(precision, recall);
  }
  const double k = static_cast<double>(report.labels.size());
  report.macro_precision /= k;
  report.macro_recall /= k;
  report.macro_f1 /= k;
  return report;
}

int FirstRelevantRank(const std::vector<std::string>& retrieved_document_ids,
                      const std::string& expected) {
  if (expected.empty()) return -1;
  for (size_t i = 0; i < retrieved_document_ids.size(); ++i) {
    if (retrieved_document_ids[i] == expected) return static_cast<int>(i) + 1;
  }
  return 0;
}

RetrievalReport SummarizeRanks(const std::vector<int>& ranks) {
  RetrievalReport report;
  int64_t hits = 0;
  double reciprocal_sum = 0;
  for (int rank : ranks) {
    if (rank < 0) continue;
    ++report.examples;
    if (rank > 0) {
      ++hits;
      reciprocal_sum += 1.0 / rank;
    }
  }
  if (report.examples == 0) return report;
  report.hit_rate = static_cast<double>(hits) / static_cast<double>(report.examples);
  report.mrr = reciprocal_sum / static_cast<double>(report.examples);
  return report;
}

Estimate BootstrapMean(const std::vector<double>& values, int resamples, uint64_t seed,
                       double confidence) {
  std::vector<double> finite;
  finite.reserve(values.size());
  for (double v : values) {
    if (std::isfinite(v)) finite.push_back(v);
  }
  return BootstrapFinite(finite, resamples, seed, confidence);
}

PairedDifference BootstrapPairedDifference(const std::vector<double>& a,
                                           const std::vector<double>& b, int resamples,
                                           uint64_t seed, double confidence) {
  PairedDifference result;
  if (a.size() != b.size()) return result;
  std::vector<double> diff;
  diff.reserve(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    if (std::isfinite(d)) diff.push_back(d);  // also drops a NaN or infinite side
  }
  result.difference = BootstrapFinite(diff, resamples, seed, confidence);
  result.significant =
      result.difference.n > 0 && (result.difference.ci_low > 0 || result.difference.ci_high < 0);
  return result;
}

}  // namespace switchyard::router
