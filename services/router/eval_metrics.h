// Offline evaluation of LLM answers (fine-tuned vs RAG vs base model) against
// reference answers: SQuAD-style exact match and token F1, ROUGE-L (these
// three from shared/text/answer_metrics.h), label classification metrics,
// retrieval hit rate / MRR, and percentile-bootstrap intervals for a mean and
// for a paired difference of means.
//
// Every function here is pure (no globals, no hidden state; the bootstrap
// draws from its own generator seeded by the caller), so all of them are
// thread-safe. Inputs are untrusted model output: any byte string is accepted
// and nothing here throws or crashes on odd input.
#ifndef SWITCHYARD_SERVICES_ROUTER_EVAL_METRICS_H_
#define SWITCHYARD_SERVICES_ROUTER_EVAL_METRICS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shared/text/answer_metrics.h"

namespace switchyard::router {

// ---------------------------------------------------------------------------
// Answer text: NormalizeAnswer, AnswerTokens, ExactMatch, TokenF1 and RougeL
// live in shared/text/answer_metrics.h (training's graders use them too).

using text::AnswerTokens;
using text::ExactMatch;
using text::kRougeMaxTokens;
using text::NormalizeAnswer;
using text::RougeL;
using text::TokenF1;

// ---------------------------------------------------------------------------
// Classification: when the references are labels rather than free text.

// Heuristic for "these references are class labels". True when
//   * every reference is at most 64 bytes and normalises to 1..5 tokens,
//   * there are between 2 and 50 distinct normalised references, and
//   * distinct <= examples / 2 (each label recurs on average at least twice;
//     free-text answers are nearly all distinct).
// A single repeated answer is not a label set (nothing to classify between).
bool IsLabelSet(const std::vector<std::string>& references);

struct ClassificationReport {
  // Examples scored: those whose reference normalises to a non-empty label.
  int64_t examples = 0;
  double accuracy = 0;  // fraction whose matched label equals the reference
  // Unweighted means over `labels` of the per-class precision TP / predicted
  // (0 for a label never predicted), recall TP / support, and
  // F1 = 2PR / (P + R) (0 when P + R is 0). Every label has support, since
  // labels come from the references; "other" predictions are no class.
  double macro_precision = 0;
  double macro_recall = 0;
  double macro_f1 = 0;
  std::vector<std::string> labels;  // distinct normalised references, sorted
};

// The label a free-text prediction names, or "" ("other", wrong for every
// class). Labels are compared in normalised form (they are normalised here)
// and the label is returned as given in `labels`. The prediction names label
// L when
//   * its normalised text equals L's, or else
//   * L's tokens are the first tokens of the prediction ("positive, because
//     ..." -> positive) and no other label's tokens occur anywhere in it as a
//     contiguous whole-word run ("positive or negative" -> other).
// Labels that normalise to "" never match.
std::string MatchLabel(std::string_view prediction, const std::vector<std::string>& labels);

// Accuracy and macro precision / recall / F1 of predictions[i] against
// references[i], matching each prediction with MatchLabel over the distinct
// normalised references. Sizes that differ give an empty report
// (examples = 0).
ClassificationReport Classify(const std::vector<std::string>& predictions,
                              const std::vector<std::string>& references);

// ---------------------------------------------------------------------------
// Retrieval

// 1-based rank of the first id in `retrieved_document_ids` equal to
// `expected` (exact byte comparison), 0 when it is absent, and -1 when
// `expected` is empty (the example names no source; SummarizeRanks skips it).
int FirstRelevantRank(const std::vector<std::string>& retrieved_document_ids,
                      const std::string& expected);

struct RetrievalReport {
  int64_t examples = 0;  // ranks >= 0, i.e. examples that name a source
  double hit_rate = 0;   // fraction with rank > 0
  double mrr = 0;        // mean reciprocal rank, a miss counting 0
};

// Hit rate and MRR over `ranks` as returned by FirstRelevantRank; negative
// ranks are skipped. No ranks give all zeros.
RetrievalReport SummarizeRanks(const std::vector<int>& ranks);

// ---------------------------------------------------------------------------
// Bootstrap intervals

struct Estimate {
  double value = 0;  // the mean; 0 when n == 0
  double ci_low = 0;
  double ci_high = 0;
  int64_t n = 0;  // finite values (or pairs) used
};

// Mean of the finite entries of `values` (NaN and infinities are dropped)
// with a percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13):
// `resamples` means of n draws with replacement, and the interval is their
// (1 - c) / 2 and (1 + c) / 2 quantiles (linear interpolation between order
// statistics, as R's default type 7). Index draws come from std::mt19937_64
// seeded by `seed` with our own rejection sampling, not a std distribution,
// so results are identical across standard libraries. `confidence` is
// clamped to [0, 1] (NaN means 0.95). n == 0 gives an all-zero Estimate; n == 1, resamples <= 0
// or constant values give a zero-width interval at the mean. The percentile
// interval covers a little under `confidence` for small n (n < ~30).
Estimate BootstrapMean(const std::vector<double>& values, int resamples = 2000, uint64_t seed = 1,
                       double confidence = 0.95);

struct PairedDifference {
  Estimate difference;       // of mean(a[i] - b[i])
  bool significant = false;  // the interval excludes 0
};

// Mean of a[i] - b[i] (the same examples scored two ways, in the same order)
// with the BootstrapMean interval of those differences; pairs whose
// difference is not finite are dropped. Sizes that differ give an all-zero result
// with n = 0, not significant.
PairedDifference BootstrapPairedDifference(const std::vector<double>& a,
                                           const std::vector<double>& b, int resamples = 2000,
                                           uint64_t seed = 1, double confidence = 0.95);

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EVAL_METRICS_H_
