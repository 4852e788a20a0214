// AVX-512 helpers the CPU kernels share (gemv.cc, decode_attention.cc):
// 16 lanes of bf16 widened to fp32 and fp32 rounded back, and whether the CPU
// runs them. Include only from kernel files: it pulls in <immintrin.h>, and
// callers need the target "avx512f,avx512bw,avx512vl" (or more).

#ifndef SWITCHYARD_SHARED_MODEL_AVX512_BF16_H_
#define SWITCHYARD_SHARED_MODEL_AVX512_BF16_H_

// GCC 12's AVX-512 intrinsic headers trip -W(maybe-)uninitialized on their
// own _mm256_undefined_pd() placeholders.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstdint>

namespace switchyard::model::avx512 {

// AVX-512 F, BW and VL: what the helpers below need.
inline bool CpuHasBwVl() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}

// The first n of 16 lanes.
__attribute__((target("avx512f"))) inline __mmask16 TailMask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// Up to 16 bf16 values (lanes of `m`) as fp32: bf16 is the top half of an fp32.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 LoadBf16(const uint16_t* p,
                                                                            __mmask16 m) {
  const __m256i raw = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// Stores the lanes of `m` as bf16, rounding to nearest even (as LibTorch does).
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void StoreBf16(uint16_t* p, __m512 v,
                                                                           __mmask16 m) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(rounded));
}

}  // namespace switchyard::model::avx512

#endif  // SWITCHYARD_SHARED_MODEL_AVX512_BF16_H_
