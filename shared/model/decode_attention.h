// Attention for decoding: one new token per row against the keys and values
// already in the KV cache, read where they lie.
//
// LibTorch's path for this shape (a batched matmul of one query against a
// strided slice of the cache, a softmax, a second matmul) copies the slice,
// hands each head's tiny product to BLAS on its own and, for bf16, rounds the
// scores to bf16. This kernel computes each (row, key/value head) pair in one
// task over LibTorch's threads, in fp32 throughout (keys and values converted
// in registers), skips masked positions and writes the heads' outputs side by
// side, ready for the output projection. Inference only: no autograd.

#ifndef SWITCHYARD_SHARED_MODEL_DECODE_ATTENTION_H_
#define SWITCHYARD_SHARED_MODEL_DECODE_ATTENTION_H_

#include <ATen/ATen.h>

namespace switchyard::model {

// Whether DecodeAttention takes these: CPU tensors of one dtype, fp32 or
// bf16, an AVX-512 CPU, q (B, 1, H, D) contiguous with D at most 256, the
// cache's keys and values (rows >= B, KV, capacity, D) contiguous, and no
// autograd.
bool UseDecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values);

// out[b, 0, h*D:(h+1)*D] = softmax(scale * q[b, 0, h] . K[b, h/G, s] + mask[b, s]) V[b, h/G, s]
// over the first `length` positions of the cache, G = H / KV (grouped-query
// heads share a key/value head, as transformers' repeat_kv). `mask` is
// undefined (every position counts) or (B, ..., length) fp32 additive with
// every dimension between of size 1; positions whose mask is at most -1e29
// are skipped. Returns (B, 1, H * D) in q's dtype.
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                           int64_t length, const at::Tensor& mask, double scale);

// Turns the kernel off (tests compare it with LibTorch's path).
void SetDecodeAttentionEnabled(bool enabled);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_DECODE_ATTENTION_H_
