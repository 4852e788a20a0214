// NF4 and int8 decoding on the CPU without temporaries: QLoRA dequantises every
// linear weight in each forward and backward pass, so this runs once per
// layer per pass. Each 64-weight block is written straight from its 32 code
// bytes and its absmax: out[i] = codes[nibble i] * absmax[i / 64], in fp32 or
// in bf16 rounded to nearest even (as at::Tensor::to rounds). AVX-512 where
// the CPU has it, else a scalar loop; both give the same values. Spread over
// LibTorch's intra-op threads.

#ifndef SWITCHYARD_SHARED_MODEL_DEQUANTIZE_CPU_H_
#define SWITCHYARD_SHARED_MODEL_DEQUANTIZE_CPU_H_

#include <array>
#include <cstdint>

namespace switchyard::model {

// `codes`: num_blocks * 32 bytes, weight 2k in the high nibble of byte k and
// 2k + 1 in the low one; `absmax`: num_blocks values; `levels`: the 16 NF4
// code values. `out` holds num_blocks * 64 values: bf16 bits (uint16_t)
// when `bf16`, else float.
void DecodeNf4Cpu(const uint8_t* codes, const float* absmax, int64_t num_blocks,
                  const std::array<float, 16>& levels, bool bf16, void* out);

// Int8 rows the same way: out[r][c] = codes[r][c] * (absmax[r] / 127), for
// `rows` rows of `cols` weights.
void DecodeInt8Cpu(const int8_t* codes, const float* absmax, int64_t rows, int64_t cols, bool bf16,
                   void* out);

// For tests: false makes the scalar loop run on an AVX-512 CPU too.
void SetDequantizeVectorKernelsEnabled(bool enabled);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_DEQUANTIZE_CPU_H_
