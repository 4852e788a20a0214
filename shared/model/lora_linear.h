// LoraLinear: a frozen base linear layer plus any number of LoRA adapters,
// the adapter chosen per batch row.
//
// y = x W^T + b + sum over the row's adapter of scale * B(A(dropout(x))).
// W is (out, in) whatever the checkpoint's layout (GPT-2's Conv1D weights are
// transposed on load). Forward is const and thread-safe; adding, removing,
// merging and unmerging adapters are not and need external synchronisation.

#ifndef SWITCHYARD_SHARED_MODEL_LORA_LINEAR_H_
#define SWITCHYARD_SHARED_MODEL_LORA_LINEAR_H_

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "shared/model/gemv.h"
#include "shared/model/quantize.h"

namespace switchyard::model {

// Which adapter each batch row uses, computed once per forward pass.
struct AdapterRouting {
  struct Group {
    int adapter = -1;
    bool all_rows = false;
    at::Tensor rows;                // (n,) int64 row indices when !all_rows
    std::vector<int64_t> row_list;  // the same on the host (the row kernel's)
  };
  std::vector<Group> groups;  // one per adapter some row uses (not merged ones)
  bool training = false;      // apply LoRA dropout
  // Draws the dropout masks when defined (a seeded per-job generator makes
  // training reproducible with other work in the process); else the default.
  at::Generator generator;
};

class LoraLinear {
 public:
  LoraLinear() = default;
  explicit LoraLinear(std::string path) : path_(std::move(path)) {}

  const std::string& path() const {
    return path_;
  }                                         // module path, e.g. model.layers.0.self_attn.q_proj
  at::Tensor& weight() { return weight_; }  // (out, in); undefined when quantized or packed
  at::Tensor& bias() { return bias_; }      // (out,) or undefined
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  int64_t in_features() const;
  int64_t out_features() const;

  // QLoRA: keeps the frozen weight only in quantised form (weight() becomes
  // undefined) and dequantises it on the fly in Forward. Merging adapters
  // into a quantised weight is not supported.
  void SetQuantizedWeight(QuantizedTensor q);
  bool quantized() const { return quantized_.codes.defined(); }
  const QuantizedTensor& quantized_weight() const { return quantized_; }
  // Serving: keeps the frozen weight only in the packed kernel's layout
  // (gemv.h; weight() becomes undefined). Forward then takes any number of
  // rows through that kernel; training and merging adapters are refused.
  void SetPackedWeight(PackedWeight p);
  bool packed() const { return packed_.defined(); }
  // Bytes the base weight (and bias) take as stored.
  int64_t StoredBytes() const;
  // The weight in `dtype`, dequantised or unpacked when stored so.
  at::Tensor DenseWeight(at::ScalarType dtype) const;

  // x (..., in) -> (..., out). Rows are x's first dimension.
  at::Tensor Forward(const at::Tensor& x, const AdapterRouting& routing) const;

  // Attaches adapter `id`: a (r, in), b (out, r), already on the weight's device.
  void AddAdapter(int id, at::Tensor a, at::Tensor b, double scale, double dropout);
  void RemoveAdapter(int id);
  bool HasAdapter(int id) const;
  // W += scale * B A (Merge) or W -= scale * B A (Unmerge), computed in fp32.
  void Merge(int id);
  void Unmerge(int id);
  // The adapter's A and B, or undefined tensors when absent.
  std::pair<at::Tensor, at::Tensor> AdapterWeights(int id) const;

 private:
  struct Slot {
    int id;
    at::Tensor a, b;
    double scale;
    double dropout;
    // For frozen adapters on the CPU, the row kernel's copies: B transposed
    // and A, contiguous fp32.
    at::Tensor bt, a32;
  };
  // The per-row LoRA kernel applies: inference on the CPU in fp32 or bf16
  // with adapters that are not being trained.
  bool UseRowKernel(const at::Tensor& x, const at::Tensor& y, const AdapterRouting& routing) const;
  const Slot* FindSlot(int id) const;
  void ApplyDelta(int id, double sign);

  std::string path_;
  at::Tensor weight_, bias_;
  QuantizedTensor quantized_;
  PackedWeight packed_;
  std::vector<Slot> slots_;
};

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_LORA_LINEAR_H_
