// Activation (gradient) checkpointing: trade compute for memory in training.
//
// RecomputeInBackward(fn, x) returns fn(x) but keeps only x for the backward
// pass, not the tensors fn made on the way. When the gradient reaches it,
// fn(x) runs again with autograd on and the gradient flows back through that
// second run: into x, and into every tensor fn reads that requires grad
// (their .grad accumulates, as with a plain backward). A decoder layer run
// this way holds one (B, T, hidden) tensor through the backward pass instead
// of every activation inside it, for one more forward per layer.
//
// fn must compute the same result both times: anything random must come
// from a generator it restores before the second run (the decoder clones its
// dropout generator for this). Gradients reach the result only when x
// requires grad, so callers make x require grad when needed. Works on any
// device; the backward re-enters the autograd engine, as PyTorch's reentrant
// torch.utils.checkpoint does, so use it with backward(), not autograd::grad.

#ifndef SWITCHYARD_SHARED_MODEL_RECOMPUTE_H_
#define SWITCHYARD_SHARED_MODEL_RECOMPUTE_H_

#include <ATen/ATen.h>

#include <functional>

namespace switchyard::model {

at::Tensor RecomputeInBackward(std::function<at::Tensor(const at::Tensor&)> fn,
                               const at::Tensor& x);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_RECOMPUTE_H_
