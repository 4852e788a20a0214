#include "shared/text/answer_metrics.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {
namespace {

constexpr char kAsciiWhitespace[] = " \t\n\v\f\r";

// Python's string.punctuation: !"#$%&'()*+,-./ :;<=>?@ [\]^_` {|}~
bool IsAsciiPunctuation(unsigned char c) {
  return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
         (c >= 123 && c <= 126);
}

bool IsArticle(std::string_view token) { return token == "a" || token == "an" || token == "the"; }

// The system Abseil is built with its own string_view, hence the conversion.
std::vector<std::string> SplitWhitespace(std::string_view text) {
  return absl::StrSplit(absl::string_view(text.data(), text.size()),
                        absl::ByAnyChar(kAsciiWhitespace), absl::SkipEmpty());
}

// Harmonic mean of precision and recall (F-measure, beta = 1); 0 when both are 0.
double F1(double precision, double recall) {
  return precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
}

// Length of the longest common subsequence; O(|a| |b|) time, O(|b|) memory.
size_t LcsLength(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string NormalizeAnswer(std::string_view text) {
  std::string cleaned;
  cleaned.reserve(text.size());
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (IsAsciiPunctuation(c)) continue;
    cleaned.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : ch);
  }
  std::vector<std::string> tokens = SplitWhitespace(cleaned);
  tokens.erase(std::remove_if(tokens.begin(), tokens.end(),
                              [](const std::string& t) { return IsArticle(t); }),
               tokens.end());
  return absl::StrJoin(tokens, " ");
}

std::vector<std::string> AnswerTokens(std::string_view text) {
  return SplitWhitespace(NormalizeAnswer(text));
}

double ExactMatch(std::string_view prediction, std::string_view reference) {
  return NormalizeAnswer(prediction) == NormalizeAnswer(reference) ? 1.0 : 0.0;
}

double TokenF1(std::string_view prediction, std::string_view reference) {
  const std::vector<std::string> pred = AnswerTokens(prediction);
  const std::vector<std::string> ref = AnswerTokens(reference);
  if (pred.empty() || ref.empty()) return pred.empty() && ref.empty() ? 1.0 : 0.0;
  std::map<std::string_view, int64_t> ref_counts;
  for (const std::string& t : ref) ++ref_counts[t];
  int64_t common = 0;
  for (const std::string& t : pred) {
    auto it = ref_counts.find(t);
    if (it != ref_counts.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return 0.0;
  return F1(static_cast<double>(common) / static_cast<double>(pred.size()),
            static_cast<double>(common) / static_cast<double>(ref.size()));
}

double RougeL(std::string_view prediction, std::string_view reference) {
  std::vector<std::string> pred = AnswerTokens(prediction);
  std::vector<std::string> ref = AnswerTokens(reference);
  if (pred.empty() || ref.empty()) return pred.empty() && ref.empty() ? 1.0 : 0.0;
  if (pred.size() > kRougeMaxTokens) pred.resize(kRougeMaxTokens);
  if (ref.size() > kRougeMaxTokens) ref.resize(kRougeMaxTokens);
  const size_t lcs = LcsLength(pred, ref);
  if (lcs == 0) return 0.0;
  return F1(static_cast<double>(lcs) / static_cast<double>(pred.size()),
            static_cast<double>(lcs) / static_cast<double>(ref.size()));
}

}  // namespace switchyard::text
