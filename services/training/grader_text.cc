#include "services/training/grader_text.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/training/graders.h"
#include "shared/text/answer_metrics.h"
#include "shared/text/unicode.h"

namespace switchyard::training {
namespace {

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// At most `limit` bytes of `s`, not splitting a UTF-8 sequence.
absl::string_view CutAtCharBoundary(absl::string_view s, size_t limit) {
  if (s.size() <= limit) return s;
  size_t end = limit;
  for (int k = 0; k < 3 && end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80; ++k) {
    --end;
  }
  return s.substr(0, end);
}

}  // namespace

absl::string_view TrimAscii(absl::string_view s) { return absl::StripAsciiWhitespace(s); }

std::string FoldCase(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    int len = 1;
    const uint32_t cp = text::DecodeUtf8(s.substr(i), &len);
    if (len == 1 && static_cast<unsigned char>(s[i]) >= 0x80) {
      out.push_back(s[i]);
    } else {
      text::AppendUtf8(
          static_cast<uint32_t>(u_foldCase(static_cast<UChar32>(cp), U_FOLD_CASE_DEFAULT)), &out);
    }
    i += static_cast<size_t>(len);
  }
  return out;
}

std::vector<uint32_t> CodePoints(absl::string_view s, size_t limit) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < s.size() && out.size() < limit) {
    int len = 1;
    uint32_t cp = text::DecodeUtf8(s.substr(i), &len);
    if (len == 1 && static_cast<unsigned char>(s[i]) >= 0x80) cp = 0x110000 + cp;
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Regular expressions

absl::StatusOr<Regex> Regex::Compile(absl::string_view pattern, bool ignore_case,
                                     const std::string& path) {
  std::unique_ptr<pcre2_compile_context, decltype(&pcre2_compile_context_free)> context(
      pcre2_compile_context_create(nullptr), &pcre2_compile_context_free);
  pcre2_set_compile_extra_options(context.get(), PCRE2_EXTRA_ALT_BSUX);
  const uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ALT_BSUX |
                           PCRE2_DOLLAR_ENDONLY | PCRE2_ALLOW_EMPTY_CLASS |
                           PCRE2_NEVER_BACKSLASH_C | (ignore_case ? PCRE2_CASELESS : 0);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &offset, context.get());
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return Invalid(path,
                   absl::StrCat("regular expression does not compile: ",
                                reinterpret_cast<const char*>(message), " at offset ", offset));
  }
  return Regex(code);
}

bool Regex::Search(absl::string_view text) const {
  text = CutAtCharBoundary(text, kRegexMaxInputBytes);
  std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> context(
      pcre2_match_context_create(nullptr), &pcre2_match_context_free);
  pcre2_set_match_limit(context.get(), 1000000);
  pcre2_set_heap_limit(context.get(), 64 * 1024);  // KiB
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create(1, nullptr), &pcre2_match_data_free);
  const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                             0, data.get(), context.get());
  return rc >= 0;
}

// ---------------------------------------------------------------------------
// Similarity metrics

double Bleu(const std::string& candidate, const std::string& reference) {
  const std::vector<std::string> cand = text::AnswerTokens(candidate);
  const std::vector<std::string> ref = text::AnswerTokens(reference);
  if (cand.empty() || ref.empty()) return cand.empty() && ref.empty() ? 1.0 : 0.0;
  // Tokens hold no whitespace, so a space-joined n-gram is unambiguous.
  auto ngram_counts = [](const std::vector<std::string>& tokens, size_t n) {
    std::unordered_map<std::string, int64_t> counts;
    for (size_t i = 0; i + n <= tokens.size(); ++i) {
      ++counts[absl::StrJoin(tokens.begin() + static_cast<ptrdiff_t>(i),
                             tokens.begin() + static_cast<ptrdiff_t>(i + n), " ")];
    }
    return counts;
  };
  double log_precision_sum = 0;
  for (size_t n = 1; n <= 4; ++n) {
    const auto cand_counts = ngram_counts(cand, n);
    const auto ref_counts = ngram_counts(ref, n);
    int64_t matches = 0;
    for (const auto& [gram, count] : cand_counts) {
      auto it = ref_counts.find(gram);
      if (it != ref_counts.end()) matches += std::min(count, it->second);
    }
    const int64_t total = cand.size() >= n ? static_cast<int64_t>(cand.size() - n + 1) : 0;
    const double precision =
        n == 1 ? static_cast<double>(matches) / static_cast<double>(total)
               : static_cast<double>(matches + 1) / static_cast<double>(total + 1);
    if (precision == 0) return 0.0;
    log_precision_sum += std::log(precision);
  }
  const double c = static_cast<double>(cand.size()), r = static_cast<double>(ref.size());
  const double brevity_penalty = c > r ? 1.0 : std::exp(1 - r / c);
  return brevity_penalty * std::exp(log_precision_sum / 4);
}

double Fuzzy(absl::string_view a, absl::string_view b) {
  const std::vector<uint32_t> x = CodePoints(a, kFuzzyMaxCodePoints);
  const std::vector<uint32_t> y = CodePoints(b, kFuzzyMaxCodePoints);
  if (x.empty() && y.empty()) return 1.0;
  std::vector<size_t> prev(y.size() + 1), cur(y.size() + 1);
  for (size_t j = 0; j <= y.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= x.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= y.size(); ++j) {
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return 1.0 -
         static_cast<double>(prev[y.size()]) / static_cast<double>(std::max(x.size(), y.size()));
}

}  // namespace switchyard::training
