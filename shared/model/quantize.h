// Quantised storage for frozen base weights under LoRA (QLoRA), and a linear
// layer that dequantises its weight on the fly.
//
// NF4 (4-bit NormalFloat, Dettmers et al. 2023): the weight (out, in) is
// flattened row-major and cut into blocks of 64; each block stores its absmax
// and each weight the index of the nearest of 16 code values in [-1, 1]
// (normalised by the absmax), two indices per byte. Double quantisation also
// stores the absmax values in 8 bits: their mean is subtracted, and each group
// of 256 centred values keeps one fp32 scale. INT8: per-row absmax, codes in
// [-127, 127].
//
// Storage is 0.5625 bytes per weight for NF4, about 0.5159 with double
// quantisation (the constants cost 0.127 instead of 0.5 bits per weight), and
// 1 byte plus 4 per row for INT8.
//
// QuantizedTensor holds only at::Tensors and plain values: copies share the
// storage and are cheap. Quantize, Dequantize and QuantizedLinear are
// thread-safe; they throw c10::Error on a contract violation.

#ifndef SWITCHYARD_SHARED_MODEL_QUANTIZE_H_
#define SWITCHYARD_SHARED_MODEL_QUANTIZE_H_

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace switchyard::model {

enum class BaseQuantization { kNone, kNf4, kInt8 };

// "none", "nf4", "int8".
std::string_view BaseQuantizationName(BaseQuantization kind);
// The inverse of BaseQuantizationName; nullopt for any other string.
std::optional<BaseQuantization> ParseBaseQuantization(std::string_view name);

// Weights per NF4 block, and absmax values per block of double quantisation.
constexpr int64_t kNf4BlockSize = 64;
constexpr int64_t kDoubleQuantBlockSize = 256;

// The 16 NF4 code values, ascending (QLoRA appendix E; the bitsandbytes table).
const std::array<float, 16>& Nf4Codes();

struct QuantizedTensor {
  BaseQuantization kind = BaseQuantization::kNone;
  int64_t rows = 0;                   // out
  int64_t cols = 0;                   // in
  at::ScalarType dtype = at::kFloat;  // of the original weight
  int64_t block_size = 0;             // kNf4BlockSize for NF4, else 0

  // kNone: the weight itself, unchanged (rows, cols).
  // kNf4: (num_blocks * block_size / 2,) uint8, element 2k in the high nibble
  //       of byte k and 2k+1 in the low one; the last block is zero-padded.
  // kInt8: (rows, cols) int8 in [-127, 127].
  at::Tensor codes;
  // kNf4 without double quantisation: (num_blocks,) fp32.
  // kInt8: (rows,) fp32. Undefined otherwise.
  at::Tensor absmax;
  // kNf4 with double quantisation: absmax[i] ~= absmax_codes[i] / 127 *
  // absmax_scales[i / 256] + absmax_offset.
  at::Tensor absmax_codes;   // (num_blocks rounded up to 256,) int8
  at::Tensor absmax_scales;  // (ceil(num_blocks / 256),) fp32
  float absmax_offset = 0;   // the mean of the absmax values

  bool double_quant() const { return absmax_codes.defined(); }
  int64_t numel() const { return rows * cols; }
  int64_t num_blocks() const;
  // Bytes of storage: every tensor above plus the offset when used.
  int64_t bytes() const;
  at::Device device() const { return codes.device(); }
};

// Quantises a 2-D floating-point weight (out, in) of any size. double_quant
// applies to NF4 only. Throws on an empty, non-2-D, non-float or non-finite
// weight.
QuantizedTensor Quantize(const at::Tensor& weight, BaseQuantization kind,
                         bool double_quant = false);

// The weight (rows, cols) in `dtype`, contiguous, on the storage's device.
// Computed in fp32 a chunk of blocks at a time, so temporaries stay small.
at::Tensor Dequantize(const QuantizedTensor& w, at::ScalarType dtype);

// y = x W^T + b for x (..., in) -> (..., out), computed in x's dtype (fp32 or
// bf16) with W dequantised on the fly. Differentiable in x only: autograd keeps
// the quantised storage (shared, not copied) and backward dequantises W again
// for grad_x = grad_y W, so at most one layer's dense weight exists at a time.
// W and the bias (may be undefined) get no gradient.
at::Tensor QuantizedLinear(const at::Tensor& x, const QuantizedTensor& w, const at::Tensor& bias);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_QUANTIZE_H_
