#include "shared/model/gemv.h"

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>

#include <atomic>
#include <cstring>

#include "shared/model/avx512_bf16.h"

namespace switchyard::model {
namespace {

std::atomic<bool> g_enabled{true};

bool CpuHasAvx2Fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

bool CpuHasAvx512Bf16() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512bf16");
  return has;
}

__attribute__((target("avx2,fma"))) inline float HorizontalSum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

// Eight weights as fp32: bf16 is the top half of an fp32.
template <bool kBf16>
__attribute__((target("avx2,fma"))) inline __m256 Load8(const void* w, int64_t k) {
  if constexpr (kBf16) {
    __m128i raw =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + k));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(w) + k);
  }
}

template <bool kBf16>
inline float LoadScalar(const void* w, int64_t k) {
  if constexpr (kBf16) {
    uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(w)[k]) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  } else {
    return static_cast<const float*>(w)[k];
  }
}

// y[m][r] = dot(W[r], x[m]) for rows [r0, r1) and M input rows. Rows are read
// one after another (sequential memory, which the prefetchers follow); U
// chunks of 8 per step give M * U independent accumulators to hide FMA latency.
template <bool kBf16, int M>
__attribute__((target("avx2,fma"))) void Rows(const void* w, const float* x, float* y, int64_t in,
                                              int64_t out, int64_t r0, int64_t r1) {
  constexpr int U = M >= 4 ? 1 : (M >= 2 ? 2 : 4);
  const int64_t elem = kBf16 ? 2 : 4;
  const char* base = static_cast<const char*>(w);
  for (int64_t r = r0; r < r1; ++r) {
    const void* row = base + r * in * elem;
    __m256 acc[U][M];
    for (int u = 0; u < U; ++u) {
      for (int m = 0; m < M; ++m) acc[u][m] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 8 * U <= in; k += 8 * U) {
      for (int u = 0; u < U; ++u) {
        __m256 wv = Load8<kBf16>(row, k + 8 * u);
        for (int m = 0; m < M; ++m) {
          acc[u][m] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * in + k + 8 * u), acc[u][m]);
        }
      }
    }
    for (; k + 8 <= in; k += 8) {
      __m256 wv = Load8<kBf16>(row, k);
      for (int m = 0; m < M; ++m)
        acc[0][m] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + m * in + k), acc[0][m]);
    }
    for (int m = 0; m < M; ++m) {
      __m256 total = acc[0][m];
      for (int u = 1; u < U; ++u) total = _mm256_add_ps(total, acc[u][m]);
      float sum = HorizontalSum(total);
      for (int64_t t = k; t < in; ++t) sum += LoadScalar<kBf16>(row, t) * x[m * in + t];
      y[m * out + r] = sum;
    }
  }
}

bool CpuHasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

// bf16 weights and inputs with AVX-512 BF16: one instruction multiplies 32
// pairs and accumulates in fp32, so converting the weights costs nothing.
// y[m][r] = dot(W[r], x[m]) for one tile of RW weight rows from `r` and MT
// inputs from `m0`, shared loads as in TileF32 below; each (r, m) is one
// accumulator over k in steps of 32 (a masked tail), so a row's result does
// not depend on the tiling or on how many rows come with it.
template <int MT, int RW>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void TileBf16(const uint16_t* w,
                                                                            const uint16_t* x,
                                                                            float* y, int64_t in,
                                                                            int64_t out, int64_t r,
                                                                            int64_t m0) {
  __m512 acc[RW][MT];
#pragma GCC unroll 8
  for (int i = 0; i < RW; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < MT; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const uint16_t* wr = w + r * in;
  const uint16_t* xm = x + m0 * in;
  int64_t k = 0;
  for (; k + 32 <= in; k += 32) {
    __m512bh wv[RW];
#pragma GCC unroll 8
    for (int i = 0; i < RW; ++i) wv[i] = (__m512bh)_mm512_loadu_si512(wr + i * in + k);
#pragma GCC unroll 8
    for (int j = 0; j < MT; ++j) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xm + j * in + k);
#pragma GCC unroll 8
      for (int i = 0; i < RW; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
    }
  }
  if (k < in) {
    const __mmask32 tail = static_cast<__mmask32>((uint64_t{1} << (in - k)) - 1);
    __m512bh wv[RW];
#pragma GCC unroll 8
    for (int i = 0; i < RW; ++i) {
      wv[i] = (__m512bh)_mm512_maskz_loadu_epi16(tail, wr + i * in + k);
    }
#pragma GCC unroll 8
    for (int j = 0; j < MT; ++j) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(tail, xm + j * in + k);
#pragma GCC unroll 8
      for (int i = 0; i < RW; ++i) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < MT; ++j) {
#pragma GCC unroll 8
    for (int i = 0; i < RW; ++i) y[(m0 + j) * out + r + i] = _mm512_reduce_add_ps(acc[i][j]);
  }
}

template <int MT>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void RowsAvx512(const uint16_t* w,
                                                                       const uint16_t* x, float* y,
                                                                       int64_t in, int64_t out,
                                                                       int64_t r0, int64_t r1,
                                                                       int64_t m0) {
  constexpr int RW = MT <= 2 ? 8 : 6;
  int64_t r = r0;
  for (; r + RW <= r1; r += RW) TileBf16<MT, RW>(w, x, y, in, out, r, m0);
  for (; r < r1; ++r) TileBf16<MT, 1>(w, x, y, in, out, r, m0);
}

// fp32 with AVX-512: y[m][r] = dot(W[r], x[m]) for one tile of RW weight rows
// from `r` and MT inputs from `m0`. The RW weight vectors loaded per step are
// shared by the MT inputs, and each input vector by the RW rows, so one load
// feeds several FMAs. Every (r, m) dot product is one accumulator over k in
// steps of 16 (a masked tail), reduced the same way whatever the tiling and
// the number of inputs: a sequence gets bit-identical results batched or alone.
template <int MT, int RW>
__attribute__((target("avx512f"))) inline void TileF32(const float* w, const float* x, float* y,
                                                       int64_t in, int64_t out, int64_t r,
                                                       int64_t m0) {
  __m512 acc[RW][MT];
#pragma GCC unroll 8
  for (int i = 0; i < RW; ++i) {
#pragma GCC unroll 8
    for (int j = 0; j < MT; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  const float* wr = w + r * in;
  const float* xm = x + m0 * in;
  int64_t k = 0;
  for (; k + 16 <= in; k += 16) {
    __m512 wv[RW];
#pragma GCC unroll 8
    for (int i = 0; i < RW; ++i) wv[i] = _mm512_loadu_ps(wr + i * in + k);
#pragma GCC unroll 8
    for (int j = 0; j < MT; ++j) {
      const __m512 xv = _mm512_loadu_ps(xm + j * in + k);
#pragma GCC unroll 8
      for (int i = 0; i < RW; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
  if (k < in) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (in - k)) - 1);
    __m512 wv[RW];
#pragma GCC unroll 8
    for (int i = 0; i < RW; ++i) wv[i] = _mm512_maskz_loadu_ps(tail, wr + i * in + k);
#pragma GCC unroll 8
    for (int j = 0; j < MT; ++j) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, xm + j * in + k);
#pragma GCC unroll 8
      for (int i = 0; i < RW; ++i) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int j = 0; j < MT; ++j) {
#pragma GCC unroll 8
    for (int i = 0; i < RW; ++i) y[(m0 + j) * out + r + i] = _mm512_reduce_add_ps(acc[i][j]);
  }
}

// Weight rows [r0, r1) against inputs [m0, m0 + MT): tiles of RW rows (more
// rows for fewer inputs keep enough independent accumulators), then single
// rows. RW x MT accumulators plus RW weight vectors stay in the 32 registers.
template <int MT>
__attribute__((target("avx512f"))) void RowsAvx512(const float* w, const float* x, float* y,
                                                   int64_t in, int64_t out, int64_t r0, int64_t r1,
                                                   int64_t m0) {
  constexpr int RW = MT <= 2 ? 8 : 6;
  int64_t r = r0;
  for (; r + RW <= r1; r += RW) TileF32<MT, RW>(w, x, y, in, out, r, m0);
  for (; r < r1; ++r) TileF32<MT, 1>(w, x, y, in, out, r, m0);
}

// All m inputs (fp32 or bf16 weights and inputs), in chunks of 64 that stay
// in cache: weight rows in blocks that stay in cache while every tile of 4
// inputs of the chunk passes over them, so the weights stream from memory once
// per chunk.
template <typename T>
void DispatchAvx512(int64_t m, const T* w, const T* x, float* y, int64_t in, int64_t out,
                    int64_t r0, int64_t r1) {
  constexpr int64_t kBlock = 24;  // a multiple of every RW
  constexpr int64_t kChunk = 64;
  for (int64_t c0 = 0; c0 < m; c0 += kChunk) {
    const int64_t c1 = std::min(m, c0 + kChunk);
    for (int64_t b0 = r0; b0 < r1; b0 += kBlock) {
      const int64_t b1 = std::min(r1, b0 + kBlock);
      for (int64_t m0 = c0; m0 < c1; m0 += 4) {
        switch (std::min<int64_t>(4, c1 - m0)) {
          case 1:
            RowsAvx512<1>(w, x, y, in, out, b0, b1, m0);
            break;
          case 2:
            RowsAvx512<2>(w, x, y, in, out, b0, b1, m0);
            break;
          case 3:
            RowsAvx512<3>(w, x, y, in, out, b0, b1, m0);
            break;
          default:
            RowsAvx512<4>(w, x, y, in, out, b0, b1, m0);
            break;
        }
      }
    }
  }
}

template <bool kBf16>
void Dispatch(int64_t m, const void* w, const float* x, float* y, int64_t in, int64_t out,
              int64_t r0, int64_t r1) {
  switch (m) {
    case 1:
      return Rows<kBf16, 1>(w, x, y, in, out, r0, r1);
    case 2:
      return Rows<kBf16, 2>(w, x, y, in, out, r0, r1);
    case 3:
      return Rows<kBf16, 3>(w, x, y, in, out, r0, r1);
    case 4:
      return Rows<kBf16, 4>(w, x, y, in, out, r0, r1);
    case 5:
      return Rows<kBf16, 5>(w, x, y, in, out, r0, r1);
    case 6:
      return Rows<kBf16, 6>(w, x, y, in, out, r0, r1);
    case 7:
      return Rows<kBf16, 7>(w, x, y, in, out, r0, r1);
    default:
      return Rows<kBf16, 8>(w, x, y, in, out, r0, r1);
  }
}

// One row's LoRA delta: u = scale * A x (r values), then y += Bt^T u in
// chunks of 16 outputs.
__attribute__((target("avx512f"))) void LoraRow(const float* x, float* y, const float* a,
                                                const float* bt, int64_t in, int64_t out, int64_t r,
                                                float scale, float* u) {
  for (int64_t j = 0; j < r; ++j) {
    const float* aj = a + j * in;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= in; k += 32) {
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(aj + k), _mm512_loadu_ps(x + k), acc0);
      acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(aj + k + 16), _mm512_loadu_ps(x + k + 16), acc1);
    }
    for (; k + 16 <= in; k += 16) {
      acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(aj + k), _mm512_loadu_ps(x + k), acc0);
    }
    if (k < in) {
      const __mmask16 tail = static_cast<__mmask16>((1u << (in - k)) - 1);
      acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, aj + k),
                             _mm512_maskz_loadu_ps(tail, x + k), acc1);
    }
    u[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) * scale;
  }
  int64_t o = 0;
  for (; o + 16 <= out; o += 16) {
    __m512 acc = _mm512_loadu_ps(y + o);
    for (int64_t j = 0; j < r; ++j) {
      acc = _mm512_fmadd_ps(_mm512_set1_ps(u[j]), _mm512_loadu_ps(bt + j * out + o), acc);
    }
    _mm512_storeu_ps(y + o, acc);
  }
  if (o < out) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (out - o)) - 1);
    __m512 acc = _mm512_maskz_loadu_ps(tail, y + o);
    for (int64_t j = 0; j < r; ++j) {
      acc =
          _mm512_fmadd_ps(_mm512_set1_ps(u[j]), _mm512_maskz_loadu_ps(tail, bt + j * out + o), acc);
    }
    _mm512_mask_storeu_ps(y + o, tail, acc);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void Bf16ToFloat(const uint16_t* from,
                                                                      float* to, int64_t n) {
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = avx512::TailMask(n - k);
    _mm512_mask_storeu_ps(to + k, m, avx512::LoadBf16(from + k, m));
  }
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void FloatToBf16(const float* from,
                                                                      uint16_t* to, int64_t n) {
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 m = avx512::TailMask(n - k);
    avx512::StoreBf16(to + k, _mm512_maskz_loadu_ps(m, from + k), m);
  }
}

// Packed panels (gemv.h). One tile: MR input rows x one panel of 32
// outputs, k steps [k0, k1) (fp32: one k; bf16: one pair of k), added to y's
// tile or, on the first pass over k, starting from zero. x points at the
// tile's first row (row stride `ldx` elements), y at its first output (row
// stride `ldy`). 2 x MR accumulators and the 2 weight vectors of a step stay
// in registers; each output's sum runs over k in order whatever MR is.
// `prefetch`, when set, walks on at two cache lines per step: the weights
// the next tile will need are on their way from memory while this one
// computes (the weights are streamed once per decode step, so without it the
// first tile over a slice waits for memory).
constexpr int kPanelVectors = kPackedPanel / 16;
constexpr int64_t kPanelTileRows = 8;
constexpr int64_t kPanelDepth = 256;    // k steps per slice (32 KiB of fp32 weights, in L1/L2)
constexpr int64_t kPanelRowChunk = 96;  // rows per pass over the panels (x's slice stays in L2)

// A tile's accumulators: y's values, or zero on the first pass over k.
template <int MR>
__attribute__((target("avx512f"))) inline void LoadTile(__m512 (&acc)[MR][kPanelVectors],
                                                        const float* y, int64_t ldy, bool first) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < kPanelVectors; ++v) {
      acc[i][v] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + i * ldy + 16 * v);
    }
  }
}

template <int MR>
__attribute__((target("avx512f"))) inline void StoreTile(const __m512 (&acc)[MR][kPanelVectors],
                                                         float* y, int64_t ldy) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < kPanelVectors; ++v) _mm512_storeu_ps(y + i * ldy + 16 * v, acc[i][v]);
  }
}

// One step's worth (two cache lines) of the next slice, when prefetching.
inline const char* PrefetchStep(const char* prefetch) {
  if (prefetch == nullptr) return nullptr;
  _mm_prefetch(prefetch, _MM_HINT_T0);
  _mm_prefetch(prefetch + 64, _MM_HINT_T0);
  return prefetch + 128;
}

template <int MR>
__attribute__((target("avx512f"))) inline void PanelTileF32(const float* panel, const float* x,
                                                            int64_t ldx, float* y, int64_t ldy,
                                                            int64_t k0, int64_t k1, bool first,
                                                            const char* prefetch) {
  __m512 acc[MR][kPanelVectors];
  LoadTile<MR>(acc, y, ldy, first);
  for (int64_t k = k0; k < k1; ++k) {
    prefetch = PrefetchStep(prefetch);
    __m512 wv[kPanelVectors];
#pragma GCC unroll 2
    for (int v = 0; v < kPanelVectors; ++v) {
      wv[v] = _mm512_loadu_ps(panel + k * kPackedPanel + 16 * v);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_set1_ps(x[i * ldx + k]);
#pragma GCC unroll 2
      for (int v = 0; v < kPanelVectors; ++v) acc[i][v] = _mm512_fmadd_ps(wv[v], xv, acc[i][v]);
    }
  }
  StoreTile<MR>(acc, y, ldy);
}

// bf16: step k is the pair (2k, 2k + 1); one instruction multiplies a pair of
// inputs by the pair of weights of each of 16 outputs and adds both to fp32.
template <int MR>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) inline void PanelTileBf16(
    const uint16_t* panel, const uint16_t* x, int64_t ldx, float* y, int64_t ldy, int64_t k0,
    int64_t k1, bool first, const char* prefetch) {
  __m512 acc[MR][kPanelVectors];
  LoadTile<MR>(acc, y, ldy, first);
  for (int64_t k = k0; k < k1; ++k) {
    prefetch = PrefetchStep(prefetch);
    __m512bh wv[kPanelVectors];
#pragma GCC unroll 2
    for (int v = 0; v < kPanelVectors; ++v) {
      wv[v] = (__m512bh)_mm512_loadu_si512(panel + (k * kPackedPanel + 16 * v) * 2);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, x + i * ldx + 2 * k, sizeof(pair));
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 2
      for (int v = 0; v < kPanelVectors; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], wv[v], xv);
    }
  }
  StoreTile<MR>(acc, y, ldy);
}

template <bool kBf16, int MR>
inline void PanelTile(const void* panel, const void* x, int64_t ldx, float* y, int64_t ldy,
                      int64_t k0, int64_t k1, bool first, const char* prefetch) {
  if constexpr (kBf16) {
    PanelTileBf16<MR>(static_cast<const uint16_t*>(panel), static_cast<const uint16_t*>(x), ldx, y,
                      ldy, k0, k1, first, prefetch);
  } else {
    PanelTileF32<MR>(static_cast<const float*>(panel), static_cast<const float*>(x), ldx, y, ldy,
                     k0, k1, first, prefetch);
  }
}

template <bool kBf16, int MR = kPanelTileRows>
inline void PanelTileUpTo(int64_t rows, const void* panel, const void* x, int64_t ldx, float* y,
                          int64_t ldy, int64_t k0, int64_t k1, bool first, const char* prefetch) {
  if constexpr (MR > 1) {
    if (rows < MR) {
      return PanelTileUpTo<kBf16, MR - 1>(rows, panel, x, ldx, y, ldy, k0, k1, first, prefetch);
    }
  }
  PanelTile<kBf16, MR>(panel, x, ldx, y, ldy, k0, k1, first, prefetch);
}

// Panels [p0, p1) of `panels` (each `steps` k steps of 128 bytes) against all
// m rows of x (m, ldx) into y (m, ldy = panels x 32). A slice (a panel's k
// steps [k0, k1)) is read from memory by its first tile and from cache by the
// others; that first tile prefetches the next slice of the range.
template <bool kBf16>
void PackedPanels(const void* packed, const void* x, float* y, int64_t m, int64_t ldx, int64_t ldy,
                  int64_t steps, int64_t p0, int64_t p1) {
  constexpr int64_t kStepBytes = kPackedPanel * 4;  // fp32: 32 weights; bf16: 32 pairs
  const int64_t x_bytes = kBf16 ? 2 : 4;
  const char* panels = static_cast<const char*>(packed);
  const char* xs = static_cast<const char*>(x);
  for (int64_t c0 = 0; c0 < m; c0 += kPanelRowChunk) {
    const int64_t c1 = std::min(m, c0 + kPanelRowChunk);
    for (int64_t p = p0; p < p1; ++p) {
      const char* panel = panels + p * steps * kStepBytes;
      for (int64_t k0 = 0; k0 < steps; k0 += kPanelDepth) {
        const int64_t k1 = std::min(steps, k0 + kPanelDepth);
        const bool last = k1 == steps && p + 1 == p1;
        const char* prefetch = last ? nullptr : panel + k1 * kStepBytes;  // the next slice
        for (int64_t m0 = c0; m0 < c1; m0 += kPanelTileRows) {
          PanelTileUpTo<kBf16>(c1 - m0, panel, xs + m0 * ldx * x_bytes, ldx,
                               y + m0 * ldy + p * kPackedPanel, ldy, k0, k1, k0 == 0, prefetch);
          prefetch = nullptr;
        }
      }
    }
  }
}

// The products' fp32 rows (m, out) plus the bias, as x's dtype and shape.
at::Tensor FinishRows(at::Tensor& yf, const at::Tensor& bias, const at::Tensor& x) {
  if (bias.defined()) yf.add_(bias.to(at::kFloat));
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = yf.size(1);
  return yf.to(x.scalar_type()).view(shape);
}

}  // namespace

bool LoraRowsKernelAvailable() { return g_enabled && avx512::CpuHasBwVl(); }

void LoraRowsAdd(const at::Tensor& x, at::Tensor& y, const at::Tensor& a, const at::Tensor& bt,
                 double scale, const std::vector<int64_t>& rows) {
  const int64_t in = x.size(1), out = y.size(1), r = a.size(0);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const void* xp = x.data_ptr();
  void* yp = y.data_ptr();
  const float* ap = a.data_ptr<float>();
  const float* bp = bt.data_ptr<float>();
  const int64_t n = static_cast<int64_t>(rows.size());
  at::parallel_for(0, n, 4, [&](int64_t i0, int64_t i1) {
    std::vector<float> u(r);
    std::vector<float> xf(bf16 ? in : 0), yf(bf16 ? out : 0);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t row = rows[i];
      if (!bf16) {
        LoraRow(static_cast<const float*>(xp) + row * in, static_cast<float*>(yp) + row * out, ap,
                bp, in, out, r, static_cast<float>(scale), u.data());
        continue;
      }
      // bf16 rows: widened, summed in fp32, rounded once.
      uint16_t* yrow = static_cast<uint16_t*>(yp) + row * out;
      Bf16ToFloat(static_cast<const uint16_t*>(xp) + row * in, xf.data(), in);
      Bf16ToFloat(yrow, yf.data(), out);
      LoraRow(xf.data(), yf.data(), ap, bp, in, out, r, static_cast<float>(scale), u.data());
      FloatToBf16(yf.data(), yrow, out);
    }
  });
}

void SetSmallBatchLinearEnabled(bool enabled) { g_enabled = enabled; }

int64_t SmallBatchLinearMaxRows(at::ScalarType dtype) {
  const bool tiled = dtype == at::kFloat ? CpuHasAvx512() : CpuHasAvx512Bf16();
  return tiled ? kGemvMaxRowsAvx512 : kGemvMaxRows;
}

bool UseSmallBatchLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (!g_enabled || !CpuHasAvx2Fma()) return false;
  if (!x.device().is_cpu() || !weight.device().is_cpu() || weight.dim() != 2) return false;
  const at::ScalarType t = weight.scalar_type();
  if ((t != at::kFloat && t != at::kBFloat16) || x.scalar_type() != t) return false;
  if (!weight.is_contiguous() || x.size(-1) != weight.size(1)) return false;
  if (x.numel() / weight.size(1) > SmallBatchLinearMaxRows(t) || x.numel() == 0) return false;
  if (bias.defined() && (bias.scalar_type() != t || bias.numel() != weight.size(0))) return false;
  if (at::GradMode::is_enabled() &&
      (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad()))) {
    return false;
  }
  return true;
}

at::Tensor SmallBatchLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t in = weight.size(1), out = weight.size(0);
  const int64_t m = x.numel() / in;
  const bool bf16 = weight.scalar_type() == at::kBFloat16;
  const bool dot_bf16 = bf16 && CpuHasAvx512Bf16();
  // The (M, in) inputs, small: bf16 for the dot-product kernel, else fp32.
  at::Tensor xs = x.reshape({m, in}).to(dot_bf16 ? at::kBFloat16 : at::kFloat).contiguous();
  at::Tensor yf = at::empty({m, out}, at::kFloat);
  const void* w = weight.data_ptr();
  float* yp = yf.data_ptr<float>();
  // Chunks of at least ~64 KiB of weights per task.
  const int64_t grain = std::max<int64_t>(8, (64 << 10) / (in * (bf16 ? 2 : 4)));
  at::parallel_for(0, out, grain, [&](int64_t r0, int64_t r1) {
    if (dot_bf16) {
      DispatchAvx512(m, static_cast<const uint16_t*>(w),
                     static_cast<const uint16_t*>(xs.data_ptr()), yp, in, out, r0, r1);
    } else if (bf16) {
      Dispatch<true>(m, w, xs.data_ptr<float>(), yp, in, out, r0, r1);
    } else if (CpuHasAvx512()) {
      DispatchAvx512(m, static_cast<const float*>(w), xs.data_ptr<float>(), yp, in, out, r0, r1);
    } else {
      Dispatch<false>(m, w, xs.data_ptr<float>(), yp, in, out, r0, r1);
    }
  });
  return FinishRows(yf, bias, x);
}

bool CanPackWeight(const at::Tensor& weight) {
  if (!g_enabled || !weight.defined() || !weight.device().is_cpu() || weight.dim() != 2 ||
      weight.requires_grad() || weight.numel() == 0) {
    return false;
  }
  const at::ScalarType t = weight.scalar_type();
  return (t == at::kFloat && CpuHasAvx512()) || (t == at::kBFloat16 && CpuHasAvx512Bf16());
}

PackedWeight PackWeight(const at::Tensor& weight) {
  TORCH_CHECK(CanPackWeight(weight), "PackWeight: not a packable weight");
  at::NoGradGuard no_grad;
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t panels = (out + kPackedPanel - 1) / kPackedPanel;
  const bool bf16 = weight.scalar_type() == at::kBFloat16;
  const int64_t in_padded = bf16 ? in + in % 2 : in;
  at::Tensor padded =
      at::constant_pad_nd(weight, {0, in_padded - in, 0, panels * kPackedPanel - out});
  at::Tensor data =
      bf16 ? padded.view({panels, kPackedPanel, in_padded / 2, 2}).permute({0, 2, 1, 3})
           : padded.view({panels, kPackedPanel, in}).permute({0, 2, 1});
  return PackedWeight{data.contiguous(), out, in};
}

at::Tensor UnpackWeight(const PackedWeight& packed) {
  const int64_t panels = packed.data.size(0);
  at::Tensor rows = packed.dtype() == at::kBFloat16
                        ? packed.data.permute({0, 2, 1, 3}).reshape({panels * kPackedPanel, -1})
                        : packed.data.permute({0, 2, 1}).reshape({panels * kPackedPanel, -1});
  return rows.narrow(0, 0, packed.out).narrow(1, 0, packed.in).contiguous();
}

at::Tensor PackedLinear(const at::Tensor& x, const PackedWeight& weight, const at::Tensor& bias) {
  TORCH_CHECK(x.size(-1) == weight.in, "PackedLinear: input of ", x.size(-1),
              " features for a weight of ", weight.in);
  TORCH_CHECK(!(at::GradMode::is_enabled() && x.requires_grad()),
              "PackedLinear: packed (serving) weights have no autograd");
  const bool bf16 = weight.dtype() == at::kBFloat16;
  const int64_t in = weight.in, out = weight.out, m = x.numel() / std::max<int64_t>(1, in);
  const int64_t panels = weight.data.size(0), ldy = panels * kPackedPanel;
  // x as the kernel reads it: fp32, or bf16 with an even row length.
  at::Tensor xs = x.reshape({m, in}).to(bf16 ? at::kBFloat16 : at::kFloat).contiguous();
  if (bf16 && in % 2 != 0) xs = at::constant_pad_nd(xs, {0, 1});
  const int64_t ldx = xs.size(1), steps = bf16 ? ldx / 2 : ldx;
  at::Tensor yf = at::empty({m, ldy}, at::kFloat);
  if (m > 0) {
    const void* w = weight.data.data_ptr();
    const void* xp = xs.data_ptr();
    float* yp = yf.data_ptr<float>();
    at::parallel_for(0, panels, 1, [&](int64_t p0, int64_t p1) {
      if (bf16) {
        PackedPanels<true>(w, xp, yp, m, ldx, ldy, steps, p0, p1);
      } else {
        PackedPanels<false>(w, xp, yp, m, ldx, ldy, steps, p0, p1);
      }
    });
  }
  if (ldy != out) yf = yf.narrow(1, 0, out).contiguous();
  return FinishRows(yf, bias, x);
}

}  // namespace switchyard::model
