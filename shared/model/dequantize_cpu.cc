#include "shared/model/dequantize_cpu.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>

#include "shared/model/avx512_bf16.h"

namespace switchyard::model {
namespace {

constexpr int64_t kBlock = 64;    // weights per block
constexpr int64_t kGrain = 2048;  // blocks per parallel task (128 Ki weights)

std::atomic<bool> g_vector_enabled{true};

bool UseVector() { return g_vector_enabled.load() && avx512::CpuHasBwVl(); }

inline void Put(float* o, float v) { *o = v; }
inline void Put(uint16_t* o, float v) { *o = c10::BFloat16(v).x; }  // rounded to nearest even

template <typename Out>
void DecodeNf4Scalar(const uint8_t* codes, const float* absmax, int64_t b0, int64_t b1,
                     const std::array<float, 16>& levels, Out* out) {
  for (int64_t b = b0; b < b1; ++b) {
    const float scale = absmax[b];
    const uint8_t* in = codes + b * (kBlock / 2);
    Out* o = out + b * kBlock;
    for (int64_t k = 0; k < kBlock / 2; ++k) {
      Put(o + 2 * k, levels[in[k] >> 4] * scale);
      Put(o + 2 * k + 1, levels[in[k] & 15] * scale);
    }
  }
}

// 16 code bytes -> the 32 weights they hold, as two vectors of 16 fp32.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void Decode16(const uint8_t* in,
                                                                          __m512 lut, __m512 scale,
                                                                          __m512* first,
                                                                          __m512* second) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in));
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(15));
  const __m128i lo = _mm_and_si128(bytes, _mm_set1_epi8(15));
  // Weight 2k is byte k's high nibble, 2k + 1 its low one.
  const __m512i idx0 = _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(hi, lo));
  const __m512i idx1 = _mm512_cvtepu8_epi32(_mm_unpackhi_epi8(hi, lo));
  *first = _mm512_mul_ps(_mm512_permutexvar_ps(idx0, lut), scale);
  *second = _mm512_mul_ps(_mm512_permutexvar_ps(idx1, lut), scale);
}

template <bool kBf16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void DecodeNf4Avx512(
    const uint8_t* codes, const float* absmax, int64_t b0, int64_t b1,
    const std::array<float, 16>& levels, void* out) {
  const __m512 lut = _mm512_loadu_ps(levels.data());
  const __mmask16 all = avx512::TailMask(16);
  for (int64_t b = b0; b < b1; ++b) {
    const __m512 scale = _mm512_set1_ps(absmax[b]);
    const uint8_t* in = codes + b * (kBlock / 2);
    for (int h = 0; h < 2; ++h) {
      __m512 v[2];
      Decode16(in + 16 * h, lut, scale, &v[0], &v[1]);
      for (int i = 0; i < 2; ++i) {
        const int64_t at = b * kBlock + 32 * h + 16 * i;
        if constexpr (kBf16) {
          avx512::StoreBf16(static_cast<uint16_t*>(out) + at, v[i], all);
        } else {
          _mm512_storeu_ps(static_cast<float*>(out) + at, v[i]);
        }
      }
    }
  }
}

template <typename Out>
void DecodeInt8Scalar(const int8_t* codes, const float* absmax, int64_t r0, int64_t r1,
                      int64_t cols, Out* out) {
  for (int64_t r = r0; r < r1; ++r) {
    const float scale = absmax[r] / 127.0f;
    const int8_t* in = codes + r * cols;
    Out* o = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) Put(o + c, static_cast<float>(in[c]) * scale);
  }
}

template <bool kBf16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void DecodeInt8Avx512(
    const int8_t* codes, const float* absmax, int64_t r0, int64_t r1, int64_t cols, void* out) {
  for (int64_t r = r0; r < r1; ++r) {
    const __m512 scale = _mm512_set1_ps(absmax[r] / 127.0f);
    const int8_t* in = codes + r * cols;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 m = avx512::TailMask(cols - c);
      const __m512 v = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, in + c))), scale);
      if constexpr (kBf16) {
        avx512::StoreBf16(static_cast<uint16_t*>(out) + r * cols + c, v, m);
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(out) + r * cols + c, m, v);
      }
    }
  }
}

// Rows per parallel task: about kGrain blocks' worth of weights.
int64_t RowGrain(int64_t cols) {
  return std::max<int64_t>(1, kGrain * kBlock / std::max<int64_t>(1, cols));
}

}  // namespace

void DecodeInt8Cpu(const int8_t* codes, const float* absmax, int64_t rows, int64_t cols, bool bf16,
                   void* out) {
  const bool vector = UseVector();
  at::parallel_for(0, rows, RowGrain(cols), [&](int64_t r0, int64_t r1) {
    if (vector) {
      bf16 ? DecodeInt8Avx512<true>(codes, absmax, r0, r1, cols, out)
           : DecodeInt8Avx512<false>(codes, absmax, r0, r1, cols, out);
    } else {
      bf16 ? DecodeInt8Scalar(codes, absmax, r0, r1, cols, static_cast<uint16_t*>(out))
           : DecodeInt8Scalar(codes, absmax, r0, r1, cols, static_cast<float*>(out));
    }
  });
}

void DecodeNf4Cpu(const uint8_t* codes, const float* absmax, int64_t num_blocks,
                  const std::array<float, 16>& levels, bool bf16, void* out) {
  const bool vector = UseVector();
  at::parallel_for(0, num_blocks, kGrain, [&](int64_t b0, int64_t b1) {
    if (vector) {
      bf16 ? DecodeNf4Avx512<true>(codes, absmax, b0, b1, levels, out)
           : DecodeNf4Avx512<false>(codes, absmax, b0, b1, levels, out);
    } else {
      bf16 ? DecodeNf4Scalar(codes, absmax, b0, b1, levels, static_cast<uint16_t*>(out))
           : DecodeNf4Scalar(codes, absmax, b0, b1, levels, static_cast<float*>(out));
    }
  });
}

void SetDequantizeVectorKernelsEnabled(bool enabled) { g_vector_enabled = enabled; }

}  // namespace switchyard::model
