// Next-token cross-entropy over the positions that are trained.

#ifndef SWITCHYARD_SHARED_MODEL_LOSS_H_
#define SWITCHYARD_SHARED_MODEL_LOSS_H_

#include <ATen/ATen.h>

namespace switchyard::model {

constexpr int64_t kIgnoreLabel = -100;  // as transformers' ignore_index

// Targets aligned with the inputs: labels[b][t] is the token that should
// follow position t, i.e. input_ids[b][t + 1], or kIgnoreLabel when t + 1 is
// past the row, in another segment (packing never predicts across examples),
// padding, or not trained (`trained` (B, T) bool false there; undefined means
// every token is trained). Returns (B, T) int64.
at::Tensor NextTokenLabels(const at::Tensor& input_ids, const at::Tensor& segment_ids,
                           const at::Tensor& trained);

struct LossOutput {
  at::Tensor loss;     // scalar float32: mean over counted positions (0 when none)
  at::Tensor tokens;   // scalar int64: positions counted
  at::Tensor correct;  // scalar int64: counted positions whose argmax is the label
};

// logits (B, T, V) in any float dtype, labels (B, T) int64 with kIgnoreLabel
// skipped. The log-softmax runs in float32.
LossOutput CausalLmLoss(const at::Tensor& logits, const at::Tensor& labels);

// Log-probability of each label under `logits` (float32, (B, T)); 0 where
// the label is kIgnoreLabel.
at::Tensor LabelLogProbs(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_LOSS_H_
