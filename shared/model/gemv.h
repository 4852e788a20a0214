// Matrix products for decoding and short prefills: y = x W^T (+ b) for a
// handful of rows of x, streaming W once at memory bandwidth, and (AVX-512)
// up to a few hundred rows, with each row's result independent of the others.
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

#include <vector>

namespace switchyard::model {

// Rows of x up to which SmallBatchLinear applies: fp32 weights on an
// AVX-512 CPU, and bf16 weights on an AVX-512 BF16 CPU, use a tiled kernel
// (weights streamed once for every row) up to kGemvMaxRowsAvx512 rows, with
// results that do not depend on the number of rows; the AVX2 kernels take up
// to kGemvMaxRows.
constexpr int64_t kGemvMaxRows = 8;
constexpr int64_t kGemvMaxRowsAvx512 = 512;

// Whether SmallBatchLinear handles this product: CPU tensors, W (out, in)
// contiguous fp32 or bf16, x (..., in) with at most kGemvMaxRows rows of
// the same dtype, bias absent or (out,) of that dtype, and no autograd.
bool UseSmallBatchLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// x (..., in) -> (..., out) in x's dtype; accumulates in fp32.
at::Tensor SmallBatchLinear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// The most rows of x SmallBatchLinear takes for weights of `dtype` on this CPU.
int64_t SmallBatchLinearMaxRows(at::ScalarType dtype);

// LoRA deltas for inference, one row at a time: y[i] += scale * B (A x[i])
// for each listed row i of x (n, in) and y (n, out), both fp32 or both bf16
// (summed in fp32, rounded once) and contiguous,
// with A (r, in) and Bt = B transposed (r, out), fp32 contiguous. Each row is
// computed alone (no batched products), so its result does not depend on
// which rows come with it. Needs AVX-512 (LoraRowsKernelAvailable).
bool LoraRowsKernelAvailable();
void LoraRowsAdd(const at::Tensor& x, at::Tensor& y, const at::Tensor& a, const at::Tensor& bt,
                 double scale, const std::vector<int64_t>& rows);

// Weights packed for serving: y = x W^T with W stored in panels of
// kPackedPanel output rows, each panel k-major (fp32: (panels, in, 32); bf16:
// (panels, ceil(in / 2), 32, 2), pairs of k next to each other). A kernel
// then keeps tiles of up to 8 input rows x 32 outputs in registers and adds
// one k at a time (one pair for bf16): no horizontal sums, each weight load
// feeds eight FMAs, and the next weights are prefetched while a tile
// computes. About twice the dot-product kernel's FLOP/s at 16 rows and more
// at 64 and up. Each output is one fp32 sum over k in order, so a
// row's result does not depend on the number of rows, the tiling or the
// threads: a sequence decodes bit-identically batched or alone, and any row
// count goes through it (prefills too). Zero rows pad the last panel.
// Inference only: no autograd, and no (out, in) tensor for at::linear.
constexpr int64_t kPackedPanel = 32;

struct PackedWeight {
  at::Tensor data;  // the panels (see above), on the CPU
  int64_t out = 0, in = 0;
  bool defined() const { return data.defined(); }
  at::ScalarType dtype() const { return data.scalar_type(); }
};

// Whether PackWeight takes `weight`: a CPU (out, in) fp32 tensor on an
// AVX-512 CPU, or bf16 on an AVX-512 BF16 one, not requiring grad.
bool CanPackWeight(const at::Tensor& weight);
PackedWeight PackWeight(const at::Tensor& weight);
// The (out, in) weight back, bit-identical.
at::Tensor UnpackWeight(const PackedWeight& packed);
// x (..., in) of the weight's dtype -> (..., out) in x's dtype; accumulates in
// fp32 and adds the bias (absent or (out,)) there. No autograd on x.
at::Tensor PackedLinear(const at::Tensor& x, const PackedWeight& weight, const at::Tensor& bias);

// Turns the kernels off (tests compare them with at::linear).
void SetSmallBatchLinearEnabled(bool enabled);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_GEMV_H_
