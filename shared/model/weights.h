// Loading named checkpoint tensors into a model's fields, with the checks
// Hugging Face's loader makes: every expected tensor present, none
// unexpected, every shape right. Shared by the decoder and the encoder.

#ifndef SWITCHYARD_SHARED_MODEL_WEIGHTS_H_
#define SWITCHYARD_SHARED_MODEL_WEIGHTS_H_

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "shared/model/quantize.h"

namespace switchyard::model {

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
  // QLoRA: the decoder's linear layer weights are stored quantised as they
  // load (shared/model/quantize.h); embeddings, norms and the LM head stay in
  // `dtype`. Such a model trains LoRA adapters only.
  BaseQuantization quantize_base = BaseQuantization::kNone;
  bool double_quant = false;  // with kNf4
  // Serving only (the inference engine, `model generate`): on CPUs with the
  // kernel, linear weights are kept in the packed layout of gemv.h's
  // PackedLinear, about twice as fast for batched decoding. Such a model
  // cannot train or merge adapters; NamedWeights and Save unpack.
  bool serving = false;
};

// Where each checkpoint tensor goes.
struct WeightSlot {
  std::string name;            // Hugging Face name
  std::vector<int64_t> shape;  // as stored in the checkpoint
  at::Tensor* target = nullptr;
  bool transposed = false;  // stored (in, out) as GPT-2's Conv1D, kept (out, in)
  bool optional = false;    // may be absent (a tied LM head)
  // When set, receives the tensor (on the device, transposed when stored so,
  // in its checkpoint dtype) instead of `target`; the loader then drops the
  // checkpoint's pages of it.
  std::function<void(const at::Tensor&)> store;
};

struct WeightTable {
  std::vector<WeightSlot> slots;
  // Checkpoint names that are buffers, not weights (rotary inv_freq, GPT-2's
  // causal-mask "attn.bias"), ignored when they end with one of these.
  std::vector<std::string> ignored_suffixes;
  // Maps a checkpoint name to the slot name (e.g. adds GPT-2's "transformer."
  // prefix that old checkpoints lack, strips BERT's "bert." prefix).
  std::function<std::string(const std::string&)> rename;

  void Add(std::string name, std::vector<int64_t> shape, at::Tensor* target,
           bool transposed = false, bool optional = false) {
    slots.push_back({std::move(name), std::move(shape), target, transposed, optional, nullptr});
  }
};

// Fills the table from a checkpoint directory (model.safetensors or a
// sharded index). Tensors are converted to options.dtype on options.device;
// a tensor already in that dtype on CPU stays memory-mapped (copy-on-write).
// Errors name `dir` and the tensor.
absl::Status LoadWeightTable(const std::string& dir, WeightTable& table,
                             const LoadOptions& options);
// The same from tensors in memory.
absl::Status FillWeightTable(const std::map<std::string, at::Tensor>& tensors, WeightTable& table,
                             const LoadOptions& options);

// Writes `config_json` as config.json and the tensors as model.safetensors
// (sharded past `max_shard_bytes`, default 5 GB as transformers does).
absl::Status SaveCheckpoint(const std::string& dir, const std::string& config_json,
                            const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                            uint64_t max_shard_bytes = 5ull << 30);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_WEIGHTS_H_
