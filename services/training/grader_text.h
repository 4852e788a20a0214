// Text helpers of the graders (internal to services/training; graders.h is
// the public surface): ASCII trimming, Unicode case folding, code points, a
// PCRE2 regular expression, and the BLEU and fuzzy similarity metrics.
//
// Every function here is pure and thread-safe, and accepts any byte string:
// bytes that are not valid UTF-8 are kept or counted, never rejected.
#ifndef SWITCHYARD_SERVICES_TRAINING_GRADER_TEXT_H_
#define SWITCHYARD_SERVICES_TRAINING_GRADER_TEXT_H_

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::training {

// `s` without leading and trailing ASCII whitespace.
absl::string_view TrimAscii(absl::string_view s);

// Unicode simple case folding; bytes that are not valid UTF-8 are kept.
std::string FoldCase(absl::string_view s);

// The first `limit` code points of `s`; a byte that is not valid UTF-8 counts
// as one, outside the code point range so it equals no character.
std::vector<uint32_t> CodePoints(absl::string_view s, size_t limit);

// A pattern compiled by PCRE2 with the options that give ECMAScript's syntax
// and meaning where the two differ (\uXXXX escapes, "$" only at the end, "[]"
// and "[^]"), matching UTF-8 by code point and any byte string as subject.
// PCRE2 rather than std::regex: libstdc++'s regex recurses once per input
// character and overflows the stack on 20,000 bytes of "(a|b)*c"; PCRE2
// backtracks on the heap under a match limit.
class Regex {
 public:
  // INVALID_ARGUMENT naming `path` when the pattern does not compile.
  static absl::StatusOr<Regex> Compile(absl::string_view pattern, bool ignore_case,
                                       const std::string& path);

  // Whether the pattern matches somewhere in the first kRegexMaxInputBytes
  // of `text`. A search that hits the match limit counts as no match.
  bool Search(absl::string_view text) const;

 private:
  explicit Regex(pcre2_code* code) : code_(code, &pcre2_code_free) {}
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> code_;
};

// Sentence BLEU-4 of `candidate` against one `reference` on AnswerTokens
// (Papineni et al. 2002) with Lin & Och's (2004) add-one smoothing: the
// clipped n-gram precision is m1 / c1 for unigrams and (m_n + 1) / (c_n + 1)
// for n = 2..4, the score their geometric mean times the brevity penalty
// exp(1 - r / c) when the candidate (c tokens) is not longer than the
// reference (r tokens). Both empty gives 1, exactly one empty 0.
double Bleu(const std::string& candidate, const std::string& reference);

// 1 - Levenshtein distance / the longer length, over code points (the first
// kFuzzyMaxCodePoints of each). Both empty gives 1.
double Fuzzy(absl::string_view a, absl::string_view b);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_GRADER_TEXT_H_
