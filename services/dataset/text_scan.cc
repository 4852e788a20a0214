#include "services/dataset/text_scan.h"

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SY_X86 1
#endif

namespace switchyard::dataset {
namespace {

// ASCII whitespace as Python's str.split() sees it: ' ' and '\t'..'\r'.
inline unsigned IsSpace(unsigned char c) {
  return (c == ' ') | (static_cast<unsigned char>(c - '\t') <= 4);
}

// Counters and output cursor carried through the vector and scalar loops.
struct State {
  int64_t continuation = 0;  // UTF-8 continuation bytes
  int64_t words = 0;
  char* w = nullptr;  // next normalized byte
};

// One byte `c` following input byte `prev`. The normalized output of a byte
// depends only on it and its predecessor: whitespace after whitespace is
// dropped, other whitespace becomes ' ', upper-case ASCII becomes lower-case.
inline void NormalizeByte(unsigned char c, unsigned char prev, char** w) {
  const unsigned ws = IsSpace(c), prev_ws = IsSpace(prev);
  const unsigned upper = static_cast<unsigned char>(c - 'A') <= 25;
  **w = ws ? ' ' : static_cast<char>(c + (upper << 5));
  *w += !(ws & prev_ws);
}

// Normalizes p[from, to) (from >= 1): blocks that hold a whitespace run.
inline void NormalizeBytes(const unsigned char* p, size_t from, size_t to, char** w) {
  for (size_t k = from; k < to; ++k) NormalizeByte(p[k], p[k - 1], w);
}

template <bool kNormalize>
inline void Step(unsigned char c, unsigned char prev, State* s) {
  s->continuation += (c & 0xC0) == 0x80;
  s->words += !IsSpace(c) & IsSpace(prev);
  if (kNormalize) NormalizeByte(c, prev, &s->w);
}

#ifdef SY_X86
// 16 bytes at a time from p[i] (i >= 1) while a whole block fits; returns the
// first unprocessed index.
template <bool kNormalize>
size_t ScanSse2(const unsigned char* p, size_t i, size_t n, State* s) {
  const __m128i k9 = _mm_set1_epi8(9), k4 = _mm_set1_epi8(4), kSpace = _mm_set1_epi8(' ');
  const __m128i kA = _mm_set1_epi8('A'), k25 = _mm_set1_epi8(25), k20 = _mm_set1_epi8(0x20);
  const __m128i kC0 = _mm_set1_epi8(static_cast<char>(0xC0));
  const __m128i k80 = _mm_set1_epi8(static_cast<char>(0x80)), k1 = _mm_set1_epi8(1);
  const __m128i zero = _mm_setzero_si128();
  auto space = [&](__m128i v) {
    __m128i t = _mm_sub_epi8(v, k9);  // '\t'..'\r' -> 0..4, unsigned
    return _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(t, k4), t), _mm_cmpeq_epi8(v, kSpace));
  };
  __m128i cont_acc = zero, word_acc = zero;  // 64-bit lane sums (SAD)
  for (; i + 16 <= n; i += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    const __m128i prev = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i - 1));
    const __m128i ws = space(v), prev_ws = space(prev);
    const __m128i cont = _mm_cmpeq_epi8(_mm_and_si128(v, kC0), k80);
    cont_acc = _mm_add_epi64(cont_acc, _mm_sad_epu8(_mm_and_si128(cont, k1), zero));
    word_acc = _mm_add_epi64(word_acc,
                             _mm_sad_epu8(_mm_and_si128(_mm_andnot_si128(ws, prev_ws), k1), zero));
    if (kNormalize) {
      if (_mm_movemask_epi8(_mm_and_si128(ws, prev_ws)) != 0) {
        // A whitespace run inside the block: collapse byte by byte.
        NormalizeBytes(p, i, i + 16, &s->w);
      } else {
        const __m128i u = _mm_sub_epi8(v, kA);
        const __m128i upper = _mm_cmpeq_epi8(_mm_min_epu8(u, k25), u);
        const __m128i lower = _mm_add_epi8(v, _mm_and_si128(upper, k20));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(s->w),
                         _mm_or_si128(_mm_and_si128(ws, kSpace), _mm_andnot_si128(ws, lower)));
        s->w += 16;
      }
    }
  }
  // Both 64-bit lanes of each sum.
  s->continuation +=
      _mm_cvtsi128_si64(cont_acc) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(cont_acc, cont_acc));
  s->words +=
      _mm_cvtsi128_si64(word_acc) + _mm_cvtsi128_si64(_mm_unpackhi_epi64(word_acc, word_acc));
  return i;
}

// The same 32 bytes at a time. The previous byte's whitespace flag comes from
// shifting the whitespace mask across blocks (one permute and one alignr)
// instead of a second load and test, and the counters add up in bytes,
// folded into 64-bit sums every 255 blocks.
template <bool kNormalize>
__attribute__((target("avx2"))) size_t ScanAvx2(const unsigned char* p, size_t i, size_t n,
                                                State* s) {
  const __m256i k9 = _mm256_set1_epi8(9), k4 = _mm256_set1_epi8(4);
  const __m256i kSpace = _mm256_set1_epi8(' ');
  const __m256i kA = _mm256_set1_epi8('A'), k25 = _mm256_set1_epi8(25);
  const __m256i k20 = _mm256_set1_epi8(0x20);
  const __m256i kC0 = _mm256_set1_epi8(static_cast<char>(0xC0));
  const __m256i k80 = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i zero = _mm256_setzero_si256();
  __m256i cont_sum = zero, word_sum = zero;      // 64-bit lanes
  __m256i cont_bytes = zero, word_bytes = zero;  // 8-bit lanes, < 256 blocks
  int pending = 0;
  auto fold = [&]() __attribute__((target("avx2"))) {
    cont_sum = _mm256_add_epi64(cont_sum, _mm256_sad_epu8(cont_bytes, zero));
    word_sum = _mm256_add_epi64(word_sum, _mm256_sad_epu8(word_bytes, zero));
    cont_bytes = word_bytes = zero;
    pending = 0;
  };
  // Only byte 31 matters: whether p[i - 1] is whitespace.
  __m256i last_ws = _mm256_set1_epi8(IsSpace(p[i - 1]) ? -1 : 0);
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i));
    const __m256i t = _mm256_sub_epi8(v, k9);  // '\t'..'\r' -> 0..4, unsigned
    const __m256i ws =
        _mm256_or_si256(_mm256_cmpeq_epi8(_mm256_min_epu8(t, k4), t), _mm256_cmpeq_epi8(v, kSpace));
    // prev_ws[k] = ws[k - 1], and prev_ws[0] = last_ws[31].
    const __m256i prev_ws =
        _mm256_alignr_epi8(ws, _mm256_permute2x128_si256(last_ws, ws, 0x21), 15);
    last_ws = ws;
    const __m256i cont = _mm256_cmpeq_epi8(_mm256_and_si256(v, kC0), k80);
    cont_bytes = _mm256_sub_epi8(cont_bytes, cont);  // a hit is -1
    word_bytes = _mm256_sub_epi8(word_bytes, _mm256_andnot_si256(ws, prev_ws));
    if (++pending == 255) fold();
    if (kNormalize) {
      if (_mm256_movemask_epi8(_mm256_and_si256(ws, prev_ws)) != 0) {
        NormalizeBytes(p, i, i + 32, &s->w);
      } else {
        const __m256i u = _mm256_sub_epi8(v, kA);
        const __m256i upper = _mm256_cmpeq_epi8(_mm256_min_epu8(u, k25), u);
        const __m256i lower = _mm256_add_epi8(v, _mm256_and_si256(upper, k20));
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(s->w),
            _mm256_or_si256(_mm256_and_si256(ws, kSpace), _mm256_andnot_si256(ws, lower)));
        s->w += 32;
      }
    }
  }
  fold();
  alignas(32) int64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), cont_sum);
  s->continuation += lanes[0] + lanes[1] + lanes[2] + lanes[3];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), word_sum);
  s->words += lanes[0] + lanes[1] + lanes[2] + lanes[3];
  return i;
}

// Read once at load time; checked for every string. Tests may turn it off.
bool g_use_avx2 = __builtin_cpu_supports("avx2");
inline bool HasAvx2() { return g_use_avx2; }
#endif  // SY_X86

// Vector loops over p[i, n); returns the first unprocessed index.
template <bool kNormalize>
size_t ScanBlocks(const unsigned char* p, size_t i, size_t n, State* s) {
#ifdef SY_X86
  // What one path leaves (< 32 or < 16 bytes) goes through the padded tail
  // block, so AVX2 never hands over to SSE2.
  i = HasAvx2() ? ScanAvx2<kNormalize>(p, i, n, s) : ScanSse2<kNormalize>(p, i, n, s);
#endif
  return i;
}

// `out` has room for text.size() + kNormalizeSlack bytes when kNormalize.
template <bool kNormalize>
TextScan Scan(absl::string_view text, char* out, size_t* written) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  TextScan result;
  if (written != nullptr) *written = 0;
  if (n == 0) return result;
  State s;
  s.w = out;
  Step<kNormalize>(p[0], ' ', &s);  // a leading space counts as "after whitespace"
  size_t i = ScanBlocks<kNormalize>(p, 1, n, &s);
#ifndef SY_X86
  for (; i < n; ++i) Step<kNormalize>(p[i], p[i - 1], &s);
#endif
  if (i < n) {
    // The tail, shorter than a block: copy it after its predecessor byte into
    // a block padded with 'x'. A pad byte is never a continuation byte, writes
    // exactly one output byte, and starts a word only right after whitespace,
    // so the counts and output are corrected exactly below. (Space padding
    // would be simpler but sends every tail down the whitespace-run path.)
    unsigned char tail[1 + 32];
    const size_t real = n - i, pad = 32 - real;
    std::memset(tail, 'x', sizeof(tail));
    tail[0] = p[i - 1];
    std::memcpy(tail + 1, p + i, real);
    const size_t end = ScanBlocks<kNormalize>(tail, 1, sizeof(tail), &s);
    for (size_t k = end; k < sizeof(tail); ++k) Step<kNormalize>(tail[k], tail[k - 1], &s);
    s.words -= IsSpace(p[n - 1]);
    if (kNormalize) s.w -= pad;
  }
  if (kNormalize) {
    if (s.w > out && s.w[-1] == ' ') --s.w;  // trailing whitespace
    *written = static_cast<size_t>(s.w - out);
  }
  result.characters = static_cast<int64_t>(n) - s.continuation;
  result.words = s.words;
  return result;
}

}  // namespace

TextScan ScanText(absl::string_view text) { return Scan<false>(text, nullptr, nullptr); }

TextScan ScanAndNormalize(absl::string_view text, char* out, size_t* written) {
  return Scan<true>(text, out, written);
}

void AppendNormalized(absl::string_view text, std::string* out) {
  const size_t start = out->size();
  out->resize(start + text.size() + kNormalizeSlack);
  size_t written = 0;
  Scan<true>(text, out->data() + start, &written);
  out->resize(start + written);
}

void CountText(absl::string_view text, int64_t* characters, int64_t* words) {
  TextScan s = ScanText(text);
  *characters += s.characters;
  *words += s.words;
}

void UseAvx2ForTesting(bool enable) {
#ifdef SY_X86
  g_use_avx2 = enable && __builtin_cpu_supports("avx2");
#else
  (void)enable;
#endif
}

const char* TextScanPath() {
#ifdef SY_X86
  return HasAvx2() ? "avx2" : "sse2";
#else
  return "scalar";
#endif
}

}  // namespace switchyard::dataset
