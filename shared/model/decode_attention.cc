#include "shared/model/decode_attention.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <atomic>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "shared/model/avx512_bf16.h"

namespace switchyard::model {
namespace {

std::atomic<bool> g_enabled{true};

#define SY_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

constexpr float kSkipBelow = -1e29f;  // mask values at or below this are skipped

using avx512::CpuHasBwVl;
using avx512::TailMask;

// 16 (or fewer, masked) elements as fp32.
template <typename T>
SY_AVX512 inline __m512 Load16(const T* p, __mmask16 m) {
  if constexpr (sizeof(T) == 2) {
    return avx512::LoadBf16(p, m);
  } else {
    return _mm512_maskz_loadu_ps(m, p);
  }
}

// Stores fp32 as T (bf16 rounded to nearest even).
template <typename T>
SY_AVX512 inline void Store16(T* p, __m512 v, __mmask16 m) {
  if constexpr (sizeof(T) == 2) {
    avx512::StoreBf16(p, v, m);
  } else {
    _mm512_mask_storeu_ps(p, m, v);
  }
}

// e^x for x <= 0 (scores minus their maximum): x = n ln2 + r with |r| <=
// ln2 / 2, e^r by its Taylor series to r^7 (relative error < 1e-8 before
// rounding), times 2^n. Underflows to 0 below -87.
SY_AVX512 inline __m512 ExpNonPositive(__m512 x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2, split hi + lo
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), _mm512_scalef_ps(p, n));
}

struct Shape {
  int64_t heads, kv_heads, dim, capacity, length;
};

// The sums of four vectors: lane i of the result is the sum of the i-th.
SY_AVX512 inline __m128 Sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  // Halve twice across 128-bit lanes, pairing the vectors, then within lanes.
  const __m512 ab =
      _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd =
      _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));
  t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
  const __m512i first = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(first, t));
}

// Asks for the cache lines of `positions` positions of D elements from `p`.
template <typename T>
inline void PrefetchPositions(const T* base, int64_t p, int64_t positions, int64_t D) {
  const char* from = reinterpret_cast<const char*>(base + p * D);
  const int64_t bytes = positions * D * static_cast<int64_t>(sizeof(T));
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(from + off, _MM_HINT_T0);
}

// One row's heads that share a key/value head; NC chunks of 16 per head.
// The row's positions are [first, length): those before `first` are masked.
// Every position's score and every weighted sum is computed the same way
// wherever the row's positions start in the cache, so a sequence gets the
// same result batched (after other rows' padding) or alone. Reading the
// keys and values is what a decode step's attention waits on: the keys a few
// positions ahead and the values (read next) are prefetched as scores go, so
// more of both are on their way from memory than the hardware's stream
// prefetcher asks for on its own.
template <typename T, int NC>
SY_AVX512 void HeadGroup(const T* q, const T* keys, const T* values, const float* mask,
                         int64_t first, T* out, const Shape& s, float scale,
                         std::vector<float>& buf) {
  const int64_t D = s.dim, S = s.length, G = s.heads / s.kv_heads;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  constexpr int64_t kAhead = 8;  // key positions prefetched ahead
  __mmask16 tail[NC];
  for (int c = 0; c < NC; ++c) tail[c] = TailMask(D - 16 * c);
  buf.resize(static_cast<size_t>(S + 4));
  float* scores = buf.data();
  for (int64_t g = 0; g < G; ++g) {  // q and out point at this group's first head
    T* oh = out + g * D;
    if (first == S) {  // every position masked
      for (int c = 0; c < NC; ++c) Store16(oh + 16 * c, _mm512_setzero_ps(), tail[c]);
      continue;
    }
    __m512 qv[NC];
    for (int c = 0; c < NC; ++c) {
      qv[c] = _mm512_mul_ps(Load16(q + g * D + 16 * c, tail[c]), _mm512_set1_ps(scale));
    }
    // Scores, four positions at a time.
    for (int64_t p = first; p < S; p += 4) {
      if (g == 0) {
        if (p + kAhead < S)
          PrefetchPositions(keys, p + kAhead, std::min<int64_t>(4, S - p - kAhead), D);
        PrefetchPositions(values, p, std::min<int64_t>(4, S - p), D);
      }
      __m512 dot[4];
      for (int j = 0; j < 4; ++j) {
        const T* k = keys + std::min(p + j, S - 1) * D;  // past the end: recomputed, dropped
        dot[j] = _mm512_setzero_ps();
        for (int c = 0; c < NC; ++c)
          dot[j] = _mm512_fmadd_ps(qv[c], Load16(k + 16 * c, tail[c]), dot[j]);
      }
      _mm_storeu_ps(scores + p, Sum4(dot[0], dot[1], dot[2], dot[3]));
    }
    float best = kNegInf;
    for (int64_t p = first; p < S; ++p) {
      if (mask != nullptr) scores[p] = mask[p] <= kSkipBelow ? kNegInf : scores[p] + mask[p];
      best = scores[p] > best ? scores[p] : best;
    }
    __m512 total = _mm512_setzero_ps();
    for (int64_t p = first; p < S; p += 16) {
      const __mmask16 m = TailMask(S - p);
      const __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, scores + p), _mm512_set1_ps(best));
      const __m512 e = _mm512_maskz_mov_ps(m, ExpNonPositive(x));
      _mm512_mask_storeu_ps(scores + p, m, e);
      total = _mm512_add_ps(total, e);
    }
    const float inv = 1.0f / _mm512_reduce_add_ps(total);
    __m512 acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t p = first; p < S; ++p) {
      const float w = scores[p];
      if (w == 0.0f) continue;
      const __m512 wv = _mm512_set1_ps(w);
      const T* v = values + p * D;
      for (int c = 0; c < NC; ++c)
        acc[c] = _mm512_fmadd_ps(wv, Load16(v + 16 * c, tail[c]), acc[c]);
    }
    for (int c = 0; c < NC; ++c)
      Store16(oh + 16 * c, _mm512_mul_ps(acc[c], _mm512_set1_ps(inv)), tail[c]);
  }
}

using HeadGroupFn = void (*)(const void*, const void*, const void*, const float*, int64_t, void*,
                             const Shape&, float, std::vector<float>&);

template <typename T, int NC>
void HeadGroupErased(const void* q, const void* keys, const void* values, const float* mask,
                     int64_t first, void* out, const Shape& s, float scale,
                     std::vector<float>& buf) {
  HeadGroup<T, NC>(static_cast<const T*>(q), static_cast<const T*>(keys),
                   static_cast<const T*>(values), mask, first, static_cast<T*>(out), s, scale, buf);
}

// HeadGroup for head dimensions up to 16 x kMaxChunks.
constexpr int kMaxChunks = 16;

template <typename T, int... NC>
HeadGroupFn PickHeadGroup(int64_t chunks, std::integer_sequence<int, NC...>) {
  HeadGroupFn fn = nullptr;
  ((fn = chunks == NC + 1 ? &HeadGroupErased<T, NC + 1> : fn), ...);
  return fn;
}

template <typename T>
void Run(const T* q, const T* keys, const T* values, const float* mask, T* out, int64_t batch,
         const Shape& s, float scale) {
  const int64_t D = s.dim, G = s.heads / s.kv_heads;
  const HeadGroupFn head_group =
      PickHeadGroup<T>((D + 15) / 16, std::make_integer_sequence<int, kMaxChunks>());
  // Each row's first position its mask keeps.
  std::vector<int64_t> first(batch, 0);
  if (mask != nullptr) {
    for (int64_t b = 0; b < batch; ++b) {
      const float* row = mask + b * s.length;
      while (first[b] < s.length && row[first[b]] <= kSkipBelow) ++first[b];
    }
  }
  // Rows hold different numbers of positions, so (row, key/value head) items
  // are handed out one at a time rather than split in equal ranges: a thread
  // with the short rows would otherwise wait for the other at the end.
  const int64_t items = batch * s.kv_heads;
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(items, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    thread_local std::vector<float> buf;
    for (int64_t i = next++; i < items; i = next++) {
      const int64_t b = i / s.kv_heads, kvh = i % s.kv_heads;
      const int64_t kv_offset = (b * s.kv_heads + kvh) * s.capacity * D;
      const int64_t q_offset = (b * s.heads + kvh * G) * D;
      head_group(q + q_offset, keys + kv_offset, values + kv_offset,
                 mask == nullptr ? nullptr : mask + b * s.length, first[b], out + q_offset, s,
                 scale, buf);
    }
  });
}

}  // namespace

bool UseDecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values) {
  if (!g_enabled || !CpuHasBwVl()) return false;
  for (const at::Tensor* t : {&q, &keys, &values}) {
    if (!t->device().is_cpu() || !t->is_contiguous() || t->dim() != 4) return false;
  }
  const at::ScalarType type = q.scalar_type();
  if ((type != at::kFloat && type != at::kBFloat16) || keys.scalar_type() != type ||
      values.scalar_type() != type || q.size(1) != 1 || keys.sizes() != values.sizes()) {
    return false;
  }
  if (keys.size(0) < q.size(0) || keys.size(3) != q.size(3) || keys.size(1) == 0 ||
      q.size(2) % keys.size(1) != 0 || q.size(3) > 16 * kMaxChunks) {
    return false;
  }
  return !(at::GradMode::is_enabled() && q.requires_grad());
}

at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           int64_t length, const at::Tensor& mask, double scale) {
  const int64_t B = q.size(0);
  const Shape s{q.size(2), keys.size(1), q.size(3), keys.size(2), length};
  at::Tensor m;
  if (mask.defined()) m = mask.to(at::kFloat).reshape({B, length}).contiguous();
  const float* mp = m.defined() ? m.data_ptr<float>() : nullptr;
  at::Tensor out = at::empty({B, 1, s.heads * s.dim}, q.options());
  if (q.scalar_type() == at::kFloat) {
    Run(q.data_ptr<float>(), keys.data_ptr<float>(), values.data_ptr<float>(), mp,
        out.data_ptr<float>(), B, s, static_cast<float>(scale));
  } else {
    Run(reinterpret_cast<const uint16_t*>(q.data_ptr()),
        reinterpret_cast<const uint16_t*>(keys.data_ptr()),
        reinterpret_cast<const uint16_t*>(values.data_ptr()), mp,
        reinterpret_cast<uint16_t*>(out.data_ptr()), B, s, static_cast<float>(scale));
  }
  return out;
}

void SetDecodeAttentionEnabled(bool enabled) { g_enabled = enabled; }

}  // namespace switchyard::model
