// Matrix-vector products for decoding: y = x W^T (+ b) for a handful of rows
// of x, streaming W once at memory bandwidth.
//
// Decoding one token reads every weight once and does two FLOPs per weight, so
// its speed is the speed of reading W. LibTorch 1.13's CPU kernels for this
// shape reach about a third (bf16) to a half (fp32) of the machine's copy
// bandwidth; these kernels split W's rows over LibTorch's threads, convert
// bf16 to fp32 in registers and keep the (few) input rows in cache.
// Inference only: no autograd.

#ifndef SWITCHYARD_SHARED_MODEL_GEMV_H_
#define SWITCHYARD_SHARED_MODEL_GEMV_H_

#include <ATen/ATen.h>

namespace switchyard::model {

// Rows of x up to which SmallBatchLinear applies.
constexpr int64_t kGemvMaxRows = 8;

// Whether SmallBatchLinear handles this product: CPU tensors, W (out, in)
// contiguous fp32 or bf16, x (..., in) with at most kGemvMaxRows rows of
// the same dtype, bias absent or (out,) of that dtype, and no autograd.
bool UseSmallBatchLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// x (..., in) -> (..., out) in x's dtype; accumulates in fp32.
at::Tensor SmallBatchLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// Turns the kernels off (tests compare them with at::linear).
void SetSmallBatchLinearEnabled(bool enabled);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_GEMV_H_
