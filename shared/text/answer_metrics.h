// Answer-text metrics: SQuAD-style normalisation, exact match, token F1 and
// ROUGE-L of a generated answer against a reference. Shared by the router's
// offline evaluation and the training service's graders.
//
// Every function here is pure (no globals, no hidden state), so all of them
// are thread-safe. Inputs are untrusted model output: any byte string is
// accepted and nothing here throws or crashes on odd input.
#ifndef SWITCHYARD_SHARED_TEXT_ANSWER_METRICS_H_
#define SWITCHYARD_SHARED_TEXT_ANSWER_METRICS_H_

#include <string>
#include <string_view>
#include <vector>

namespace switchyard::text {

// SQuAD v1.1 answer normalisation (the official evaluate-v1.1 script), in its
// order: lower case, delete punctuation, delete the articles "a", "an",
// "the", collapse whitespace to single spaces with none at either end.
// Byte-level deviations, chosen so the result does not depend on a locale:
//   * Only ASCII A-Z are lowered; every non-ASCII byte (UTF-8 multi-byte
//     sequences) is kept as it is, so "Café" matches "café" but "CAFÉ" does
//     not match "café" (the script, using Python's str.lower, would match).
//   * Punctuation is the 32 ASCII punctuation characters (Python's
//     string.punctuation); each is deleted, not replaced by a space, as in
//     the script ("don't" -> "dont", "e-mail" -> "email").
//   * Whitespace is ASCII space, \t, \n, \v, \f, \r.
//   * Articles are deleted when they are a whole whitespace-separated token;
//     the script's regex word boundary also splits at non-ASCII symbols
//     ("the—cat"), which this does not.
std::string NormalizeAnswer(std::string_view text);

// The whitespace-separated tokens of NormalizeAnswer(text); {} for text that
// normalises to "".
std::vector<std::string> AnswerTokens(std::string_view text);

// 1 when the normalised texts are equal, else 0 (SQuAD exact match).
double ExactMatch(std::string_view prediction, std::string_view reference);

// SQuAD v1.1 token F1: with `common` the size of the multiset intersection of
// the two token lists (a token counts min(count in prediction, count in
// reference) times), P = common / |prediction|, R = common / |reference|,
// F1 = 2PR / (P + R); 0 when common is 0. Both empty gives 1, exactly one
// empty gives 0. In [0, 1]; ignores token order.
double TokenF1(std::string_view prediction, std::string_view reference);

// Token sequences longer than this are truncated (their first kRougeMaxTokens
// tokens are kept) before the O(n m) LCS of RougeL, bounding its cost at
// ~1.7e7 steps and its memory at O(m).
inline constexpr int kRougeMaxTokens = 4096;

// ROUGE-L F-measure with beta = 1 (Lin 2004, "ROUGE: A Package for Automatic
// Evaluation of Summaries", sentence-level ROUGE-L): with L the length of the
// longest common subsequence of the AnswerTokens of the two texts,
// P = L / |prediction|, R = L / |reference|, F = 2PR / (P + R); 0 when L is 0.
// Both empty gives 1, exactly one empty gives 0. In [0, 1]; unlike TokenF1 it
// rewards tokens in the reference's order. See kRougeMaxTokens.
double RougeL(std::string_view prediction, std::string_view reference);

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_ANSWER_METRICS_H_
