#include "shared/model/lora_linear.h"

#include <algorithm>
#include <vector>

#include "shared/model/gemv.h"

namespace switchyard::model {

bool LoraLinear::UseRowKernel(const at::Tensor& x, const at::Tensor& y,
                              const AdapterRouting& routing) const {
  if (routing.training || !LoraRowsKernelAvailable()) return false;
  const at::ScalarType t = x.scalar_type();
  if (!x.device().is_cpu() || (t != at::kFloat && t != at::kBFloat16) || y.scalar_type() != t ||
      !y.is_contiguous() || x.dim() < 2) {
    return false;
  }
  if (at::GradMode::is_enabled() && x.requires_grad()) return false;
  for (const AdapterRouting::Group& g : routing.groups) {
    const Slot* slot = FindSlot(g.adapter);
    if (slot != nullptr && !slot->bt.defined()) return false;
  }
  return true;
}

void LoraLinear::SetQuantizedWeight(QuantizedTensor q) {
  quantized_ = std::move(q);
  weight_ = at::Tensor();
}

void LoraLinear::SetPackedWeight(PackedWeight p) {
  packed_ = std::move(p);
  weight_ = at::Tensor();
}

int64_t LoraLinear::in_features() const {
  return quantized() ? quantized_.cols : packed() ? packed_.in : weight_.size(1);
}

int64_t LoraLinear::out_features() const {
  return quantized() ? quantized_.rows : packed() ? packed_.out : weight_.size(0);
}

int64_t LoraLinear::StoredBytes() const {
  const auto bytes = [](const at::Tensor& t) {
    return t.defined() ? static_cast<int64_t>(t.nbytes()) : int64_t{0};
  };
  return bytes(weight_) + bytes(bias_) + bytes(packed_.data) +
         (quantized() ? quantized_.bytes() : int64_t{0});
}

at::Tensor LoraLinear::DenseWeight(at::ScalarType dtype) const {
  return quantized() ? Dequantize(quantized_, dtype)
         : packed()  ? UnpackWeight(packed_).to(dtype)
                     : weight_.to(dtype);
}

at::Tensor LoraLinear::Forward(const at::Tensor& x, const AdapterRouting& routing) const {
  // Training takes LibTorch's GEMM even where nothing needs a gradient (the
  // first layer's input, a layer run again for gradient checkpointing): it is
  // faster at training's row counts, and a recomputed layer then matches its
  // first run exactly.
  TORCH_CHECK(!(packed() && routing.training), path_,
              ": a model loaded for serving (packed weights) cannot train");
  const bool small =
      weight_.defined() && !routing.training && UseSmallBatchLinear(x, weight_, bias_);
  at::Tensor y = quantized() ? QuantizedLinear(x, quantized_, bias_)
                 : packed()  ? PackedLinear(x, packed_, bias_)
                 : small     ? SmallBatchLinear(x, weight_, bias_)
                             : at::linear(x, weight_, bias_);
  if (!routing.groups.empty() && UseRowKernel(x, y, routing)) {
    // Serving many adapters: one small kernel call per adapter instead of
    // five tensor operations, and each row computed alone.
    const int64_t in = x.size(-1), out = y.size(-1);
    const int64_t per_row = x.dim() == 3 ? x.size(1) : 1;  // tokens per batch row
    at::Tensor xs = x.reshape({-1, in}).contiguous();
    at::Tensor ys = y.view({-1, out});
    for (const AdapterRouting::Group& g : routing.groups) {
      const Slot* slot = FindSlot(g.adapter);
      if (slot == nullptr) continue;
      std::vector<int64_t> rows;
      if (g.all_rows) {
        rows.resize(xs.size(0));
        for (int64_t i = 0; i < xs.size(0); ++i) rows[i] = i;
      } else {
        const std::vector<int64_t>* host = &g.row_list;
        std::vector<int64_t> from_tensor;
        if (host->empty()) {  // routing built by hand: the tensor alone
          const at::Tensor batch_rows = g.rows.to(at::kCPU).contiguous();
          from_tensor.assign(batch_rows.data_ptr<int64_t>(),
                             batch_rows.data_ptr<int64_t>() + batch_rows.numel());
          host = &from_tensor;
        }
        for (int64_t b : *host) {
          for (int64_t t = 0; t < per_row; ++t) rows.push_back(b * per_row + t);
        }
      }
      LoraRowsAdd(xs, ys, slot->a32, slot->bt, slot->scale, rows);
    }
    return y;
  }
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
  at::Tensor bt, a32;
  const auto row_kernel_type = [](const at::Tensor& t) {
    return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16;
  };
  if (a.device().is_cpu() && row_kernel_type(a) && row_kernel_type(b) && !a.requires_grad() &&
      !b.requires_grad()) {
    at::NoGradGuard no_grad;
    bt = b.t().to(at::kFloat).contiguous();
    a32 = a.to(at::kFloat).contiguous();
  }
  slots_.push_back(
      Slot{id, std::move(a), std::move(b), scale, dropout, std::move(bt), std::move(a32)});
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
  TORCH_CHECK(!quantized(), path_, ": cannot merge an adapter into a quantised weight");
  TORCH_CHECK(!packed(), path_,
              ": cannot merge an adapter into a model loaded for serving (packed weights)");
  at::NoGradGuard no_grad;
  // (out, r) x (r, in) in fp32, then rounded once into the weight's dtype.
  at::Tensor delta = at::matmul(s->b.to(at::kFloat), s->a.to(at::kFloat)) * (sign * s->scale);
  at::Tensor merged = weight_.to(at::kFloat) + delta;
  weight_.copy_(merged);
}

void LoraLinear::Merge(int id) { ApplyDelta(id, +1.0); }
void LoraLinear::Unmerge(int id) { ApplyDelta(id, -1.0); }

}  // namespace switchyard::model
