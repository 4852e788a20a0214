#include "shared/model/lora_linear.h"

#include <algorithm>

#include "shared/model/gemv.h"

namespace switchyard::model {

at::Tensor LoraLinear::Forward(const at::Tensor& x, const AdapterRouting& routing) const {
  at::Tensor y = UseSmallBatchLinear(x, weight_, bias_) ? SmallBatchLinear(x, weight_, bias_)
                                                        : at::linear(x, weight_, bias_);
  for (const AdapterRouting::Group& g : routing.groups) {
    const Slot* slot = FindSlot(g.adapter);
    if (slot == nullptr) continue;
    at::Tensor in = g.all_rows ? x : x.index_select(0, g.rows);
    if (routing.training && slot->dropout > 0) {
      if (routing.generator.defined()) {
        const double keep = 1 - slot->dropout;
        in = in * at::empty_like(in).bernoulli_(keep, routing.generator).div_(keep);
      } else {
        in = at::dropout(in, slot->dropout, true);
      }
    }
    at::Tensor delta = at::linear(at::linear(in, slot->a), slot->b) * slot->scale;
    y = g.all_rows ? y + delta : y.index_add(0, g.rows, delta);
  }
  return y;
}

const LoraLinear::Slot* LoraLinear::FindSlot(int id) const {
  for (const Slot& s : slots_) {
    if (s.id == id) return &s;
  }
  return nullptr;
}

void LoraLinear::AddAdapter(int id, at::Tensor a, at::Tensor b, double scale, double dropout) {
  RemoveAdapter(id);
  slots_.push_back(Slot{id, std::move(a), std::move(b), scale, dropout});
}

void LoraLinear::RemoveAdapter(int id) {
  slots_.erase(
      std::remove_if(slots_.begin(), slots_.end(), [&](const Slot& s) { return s.id == id; }),
      slots_.end());
}

bool LoraLinear::HasAdapter(int id) const { return FindSlot(id) != nullptr; }

std::pair<at::Tensor, at::Tensor> LoraLinear::AdapterWeights(int id) const {
  const Slot* s = FindSlot(id);
  if (s == nullptr) return {};
  return {s->a, s->b};
}

void LoraLinear::ApplyDelta(int id, double sign) {
  const Slot* s = FindSlot(id);
  if (s == nullptr) return;
  at::NoGradGuard no_grad;
  // (out, r) x (r, in) in fp32, then rounded once into the weight's dtype.
  at::Tensor delta = at::matmul(s->b.to(at::kFloat), s->a.to(at::kFloat)) * (sign * s->scale);
  at::Tensor merged = weight_.to(at::kFloat) + delta;
  weight_.copy_(merged);
}

void LoraLinear::Merge(int id) { ApplyDelta(id, +1.0); }
void LoraLinear::Unmerge(int id) { ApplyDelta(id, -1.0); }

}  // namespace switchyard::model
