#include "services/dataset/dataset_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "absl/strings/ascii.h"

namespace switchyard::dataset {
namespace {

constexpr const char* kRoleNames[] = {"system", "user", "assistant", "tool"};

int64_t WordCount(absl::string_view text) {
  int64_t characters = 0, words = 0;
  CountText(text, &characters, &words);
  return words;
}

}  // namespace

namespace {

inline bool IsSpace(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Scalar step for byte c after byte prev; accumulates into the counters.
inline void ScanByte(unsigned char c, unsigned char prev, int64_t* continuation, int64_t* words,
                     bool* needs) {
  *continuation += (c & 0xC0) == 0x80;
  bool ws = IsSpace(c), prev_ws = IsSpace(prev);
  *words += !ws && prev_ws;
  *needs |= (c >= 'A' && c <= 'Z') || (ws && (c != ' ' || prev_ws));
}

#ifdef __SSE2__
// 0xFF in each byte that is ASCII whitespace (' ', '\t'..'\r').
inline __m128i SpaceMask(__m128i v) {
  __m128i t = _mm_sub_epi8(v, _mm_set1_epi8(9));  // '\t'..'\r' -> 0..4 (unsigned)
  __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(t, _mm_set1_epi8(4)), t);
  return _mm_or_si128(ctl, _mm_cmpeq_epi8(v, _mm_set1_epi8(' ')));
}

// 0xFF in each byte that is 'A'..'Z'.
inline __m128i UpperMask(__m128i v) {
  __m128i u = _mm_sub_epi8(v, _mm_set1_epi8('A'));
  return _mm_cmpeq_epi8(_mm_min_epu8(u, _mm_set1_epi8(25)), u);
}
#endif

// Scalar normalization of byte c after byte prev: writes at *w, advances it.
inline void NormalizeByte(unsigned char c, unsigned char prev, char** w) {
  unsigned ws = IsSpace(c), prev_ws = IsSpace(prev);
  unsigned upper = static_cast<unsigned char>(c - 'A') <= 25;
  **w = ws ? ' ' : static_cast<char>(c + (upper << 5));
  *w += !(ws & prev_ws);
}

}  // namespace

void AppendNormalized(absl::string_view text, std::string* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  if (n == 0) return;
  const size_t start = out->size();
  out->resize(start + n);
  char* dst = out->data() + start;
  char* w = dst;
  NormalizeByte(p[0], ' ', &w);  // a leading space is dropped
  size_t i = 1;
#ifdef __SSE2__
  // A block without two whitespace bytes in a row maps byte for byte.
  for (; i + 16 <= n; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i - 1));
    __m128i ws = SpaceMask(v);
    if (_mm_movemask_epi8(_mm_and_si128(ws, SpaceMask(prev))) != 0) {
      for (size_t k = i; k < i + 16; ++k) NormalizeByte(p[k], p[k - 1], &w);
      continue;
    }
    __m128i lower = _mm_add_epi8(v, _mm_and_si128(UpperMask(v), _mm_set1_epi8(0x20)));
    __m128i mapped = _mm_or_si128(_mm_and_si128(ws, _mm_set1_epi8(' ')),
                                  _mm_andnot_si128(ws, lower));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(w), mapped);
    w += 16;
  }
#endif
  for (; i < n; ++i) NormalizeByte(p[i], p[i - 1], &w);
  if (w > dst && w[-1] == ' ') --w;
  out->resize(start + static_cast<size_t>(w - dst));
}

TextScan ScanText(absl::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  TextScan out;
  if (n == 0) return out;
  int64_t continuation = 0, words = 0;
  bool needs = IsSpace(p[0]) || IsSpace(p[n - 1]);  // leading/trailing whitespace
  ScanByte(p[0], ' ', &continuation, &words, &needs);
  size_t i = 1;
#ifdef __SSE2__
  const __m128i k_c0 = _mm_set1_epi8(static_cast<char>(0xC0));
  const __m128i k_80 = _mm_set1_epi8(static_cast<char>(0x80));
  const __m128i k_space = _mm_set1_epi8(' ');
  const __m128i k_1 = _mm_set1_epi8(1);
  const __m128i zero = _mm_setzero_si128();
  unsigned needs_bits = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    __m128i prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i - 1));
    __m128i cont = _mm_cmpeq_epi8(_mm_and_si128(v, k_c0), k_80);
    __m128i ws = SpaceMask(v), prev_ws = SpaceMask(prev);
    __m128i word_start = _mm_andnot_si128(ws, prev_ws);
    __m128i upper = UpperMask(v);
    __m128i not_single_space =
        _mm_or_si128(_mm_andnot_si128(_mm_cmpeq_epi8(v, k_space), ws), _mm_and_si128(ws, prev_ws));
    // Mask bytes are 0xFF; keep 1 per hit and add them up with SAD.
    __m128i hits = _mm_sad_epu8(_mm_and_si128(cont, k_1), zero);
    continuation += _mm_cvtsi128_si32(hits) + _mm_extract_epi16(hits, 4);
    hits = _mm_sad_epu8(_mm_and_si128(word_start, k_1), zero);
    words += _mm_cvtsi128_si32(hits) + _mm_extract_epi16(hits, 4);
    needs_bits |= static_cast<unsigned>(_mm_movemask_epi8(_mm_or_si128(upper, not_single_space)));
  }
  needs |= needs_bits != 0;
#endif
  for (; i < n; ++i) ScanByte(p[i], p[i - 1], &continuation, &words, &needs);
  out.characters = static_cast<int64_t>(n) - continuation;
  out.words = words;
  out.needs_normalization = needs;
  return out;
}

void CountText(absl::string_view text, int64_t* characters, int64_t* words) {
  TextScan s = ScanText(text);
  *characters += s.characters;
  *words += s.words;
}

Summary Summarize(std::vector<int32_t> values) {
  Summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  auto rank = [&](double q) {
    size_t idx = static_cast<size_t>(std::ceil(q * values.size()));
    return static_cast<double>(values[idx == 0 ? 0 : idx - 1]);
  };
  s.min = values.front();
  s.max = values.back();
  s.p50 = rank(0.5);
  s.p90 = rank(0.9);
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  return s;
}

void DatasetStatsAccumulator::AddExample(const ExampleFacts& f) {
  messages_.push_back(f.messages);
  characters_.push_back(static_cast<int32_t>(std::min<int64_t>(f.characters, INT32_MAX)));
  words_.push_back(static_cast<int32_t>(std::min<int64_t>(f.words, INT32_MAX)));
  for (int r = 0; r < static_cast<int>(Role::kCount); ++r) roles_[r] += f.roles[r];
  if (f.roles[static_cast<int>(Role::kSystem)] == 0) ++without_system_;
  trained_assistant_ += f.trained_assistant_messages;
  if (!f.has_label) return;
  ++labelled_examples_;
  if (labels_overflowed_) return;
  if (f.label.size() > 64) labels_too_long_ = true;
  auto it = labels_.find(f.label);
  if (it != labels_.end()) {
    ++it->second;
  } else if (static_cast<int>(labels_.size()) < kMaxTrackedLabels) {
    labels_.emplace(std::string(f.label), 1);
  } else {
    labels_overflowed_ = true;
    labels_.clear();
  }
}

void DatasetStatsAccumulator::AddDuplicate(bool exact) {
  if (exact) ++exact_duplicates_;
  ++normalized_duplicates_;
}

bool DatasetStatsAccumulator::LooksLikeClassification() const {
  if (labels_overflowed_ || labels_too_long_) return false;
  int64_t n = labelled_examples_;
  int64_t distinct = static_cast<int64_t>(labels_.size());
  if (n < 10 || n != examples() || distinct < 2 || distinct > kMaxReportedLabels) return false;
  if (distinct * 3 > n) return false;
  for (const auto& [label, count] : labels_) {
    if (WordCount(label) > 5) return false;
  }
  return true;
}

std::vector<std::pair<std::string, int64_t>> DatasetStatsAccumulator::SortedLabels() const {
  std::vector<std::pair<std::string, int64_t>> out(labels_.begin(), labels_.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  return out;
}

DatasetStats DatasetStatsAccumulator::Build() const {
  DatasetStats s;
  s.examples = examples();
  s.bytes = bytes_;
  s.messages_per_example = Summarize(messages_);
  s.characters_per_example = Summarize(characters_);
  s.words_per_example = Summarize(words_);
  for (int r = 0; r < static_cast<int>(Role::kCount); ++r) {
    if (roles_[r] > 0) s.role_counts[kRoleNames[r]] = roles_[r];
  }
  s.exact_duplicates = exact_duplicates_;
  s.normalized_duplicates = normalized_duplicates_;
  s.examples_without_system_message = without_system_;
  s.trained_assistant_messages = trained_assistant_;
  s.looks_like_classification = LooksLikeClassification();
  if (s.looks_like_classification) {
    s.labels = SortedLabels();
    if (static_cast<int>(s.labels.size()) > kMaxReportedLabels) s.labels.resize(kMaxReportedLabels);
  }
  return s;
}

}  // namespace switchyard::dataset
