#include "shared/model/loss.h"

namespace switchyard::model {

at::Tensor NextTokenLabels(const at::Tensor& input_ids, const at::Tensor& segment_ids,
                           const at::Tensor& trained) {
  const int64_t T = input_ids.size(1);
  at::Tensor labels = at::full_like(input_ids, kIgnoreLabel, at::kLong);
  if (T < 2) return labels;
  at::Tensor next = input_ids.narrow(1, 1, T - 1).to(at::kLong);
  at::Tensor keep = at::ones_like(next, at::kBool);
  if (segment_ids.defined()) {
    at::Tensor seg_next = segment_ids.narrow(1, 1, T - 1);
    keep = keep & seg_next.eq(segment_ids.narrow(1, 0, T - 1)) & seg_next.ge(0);
  }
  if (trained.defined()) keep = keep & trained.narrow(1, 1, T - 1).to(at::kBool);
  labels.narrow(1, 0, T - 1).copy_(at::where(keep, next, at::full_like(next, kIgnoreLabel)));
  return labels;
}

LossOutput CausalLmLoss(const at::Tensor& logits, const at::Tensor& labels) {
  const int64_t V = logits.size(-1);
  // (N, V) log-probabilities in fp32; nll_loss skips the ignored labels
  // without gathering the counted rows into a copy first.
  at::Tensor log_probs = at::log_softmax(logits.reshape({-1, V}), -1, at::kFloat);
  at::Tensor flat_labels = labels.reshape({-1}).to(logits.device(), at::kLong);
  at::Tensor counted = flat_labels.ne(kIgnoreLabel);
  LossOutput out;
  out.tokens = counted.sum();
  // Mean over counted positions; an all-ignored batch gives 0 (nll_loss would
  // give NaN) while keeping the graph connected.
  at::Tensor total = at::nll_loss(log_probs, flat_labels, {}, at::Reduction::Sum, kIgnoreLabel);
  out.loss = total / out.tokens.clamp_min(1).to(at::kFloat);
  out.correct = (log_probs.detach().argmax(-1).eq(flat_labels) & counted).sum();
  return out;
}

at::Tensor LabelLogProbs(const at::Tensor& logits, const at::Tensor& labels) {
  at::Tensor l = labels.to(logits.device(), at::kLong);
  at::Tensor counted = l.ne(kIgnoreLabel);
  at::Tensor safe = at::where(counted, l, at::zeros_like(l));
  at::Tensor lp =
      at::log_softmax(logits.to(at::kFloat), -1).gather(-1, safe.unsqueeze(-1)).squeeze(-1);
  return lp.masked_fill(counted.logical_not(), 0);
}

}  // namespace switchyard::model
