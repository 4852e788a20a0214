// CausalLm: the decoder-only language models Switchyard trains and serves:
// GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM.
//
// One implementation, read top to bottom in decoder.cc: embeddings, then per
// layer norm -> attention (RoPE and grouped-query attention for the Llama
// family, learned positions and fused qkv for GPT-2) -> residual -> norm ->
// MLP -> residual, then the final norm and the LM head. Weights keep Hugging
// Face's names, so checkpoints and PEFT adapters load as they are.
//
// Rows of a batch may hold several packed examples: `segment_ids` keeps each
// token's attention inside its own segment, and position ids restart per
// segment. Incremental decoding appends to a KvCache.
//
// Thread safety: Forward/Hidden/Logits are const and may run concurrently.
// Adapter management (Add/Create/Remove/Merge/Unmerge) mutates weights and
// must not overlap any other call.

#ifndef SWITCHYARD_SHARED_MODEL_DECODER_H_
#define SWITCHYARD_SHARED_MODEL_DECODER_H_

#include <ATen/ATen.h>

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shared/model/config.h"
#include "shared/model/lora.h"
#include "shared/model/lora_linear.h"
#include "shared/model/weights.h"

namespace switchyard::model {

constexpr int kNoAdapter = -1;

struct DecoderInput {
  at::Tensor input_ids;  // (B, T) int64
  // (B, T) int64: a token attends only to earlier tokens of the same segment;
  // -1 marks padding. Undefined: every token is in segment 0.
  at::Tensor segment_ids;
  // (B, T) int64. Undefined: counted from each segment's first token (after
  // the tokens already in the KV cache); padding gets position 0.
  at::Tensor position_ids;
  // Adapter id per row (from AddAdapter/CreateAdapter) or kNoAdapter; empty
  // means no adapter for any row.
  std::vector<int> adapters;
  bool training = false;  // LoRA dropout on
  // LoRA dropout masks come from it when defined (on the model's device).
  at::Generator generator;
  // Activation checkpointing (when autograd is on and no KV cache is given):
  // keep only each layer's input for backward and run the layer again there
  // (shared/model/recompute.h). Saves most activation memory for about a
  // third more compute. With LoRA dropout in training it needs `generator`,
  // so the second run draws the same masks.
  bool recompute_layers = false;
};

// Keys and values of earlier positions for incremental decoding. Rows hold
// one sequence each (left padding allowed, no packing). A batch of B rows
// uses the cache's first B rows; the rows past it must be free. Not
// thread-safe.
class KvCache {
 public:
  // Room for `capacity` positions of `batch` rows.
  static absl::StatusOr<KvCache> Create(const ModelConfig& config, int64_t batch, int64_t capacity,
                                        at::ScalarType dtype, at::Device device);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t batch() const { return batch_; }

  // Continuous batching: sequences join and leave rows at token boundaries.
  // A row that does not take part in a step is fed a padding token (segment
  // id -1), which it keeps ignoring.
  //
  // Frees `row`: its cached positions become padding and its next token is
  // position 0.
  absl::Status ResetRow(int64_t row);
  // Copies the sequence row `source_row` of `source` holds (a prompt
  // prefilled there) into the free `row`, ending at this cache's length
  // (which grows to the source's when shorter). RESOURCE_EXHAUSTED past the
  // capacity.
  absl::Status InsertRow(int64_t row, const KvCache& source, int64_t source_row = 0);
  // Drops the positions that no row uses any more, so the length shrinks;
  // what each row attends to is unchanged. Every row ends at the length (an
  // insert longer than it shifts the others), so this leaves the length of
  // the longest row.
  absl::Status Compact();
  // Moves the sequence in row `from` to the free row `to` and frees `from`,
  // so the rows in use can stay packed at the front.
  absl::Status MoveRow(int64_t from, int64_t to);
  // Positions row `row` holds.
  int64_t RowLength(int64_t row) const;
  // Memory one position of one row takes, keys and values of every layer.
  int64_t BytesPerPosition() const;

 private:
  friend class CausalLm;
  std::vector<at::Tensor> keys_, values_;  // per layer (B, kv_heads, capacity, head_dim)
  at::Tensor segments_;                    // (B, capacity) int64, -1 = padding/unused
  at::Tensor next_position_;               // (B,) int64 position of the next token
  bool has_padding_ = false;
  int64_t length_ = 0, capacity_ = 0, batch_ = 0;
};

class CausalLm {
 public:
  // Loads a Hugging Face checkpoint directory (config.json and model.safetensors
  // or a sharded index). Every tensor is checked by name and shape; a missing,
  // unexpected or mis-shaped tensor is an error that names it.
  static absl::StatusOr<std::unique_ptr<CausalLm>> Load(const std::string& dir,
                                                        const LoadOptions& options);
  // Same checks over tensors already in memory, keyed by Hugging Face names.
  static absl::StatusOr<std::unique_ptr<CausalLm>> FromTensors(
      const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors,
      const LoadOptions& options);

  const ModelConfig& config() const { return config_; }
  at::ScalarType dtype() const { return options_.dtype; }
  at::Device device() const { return options_.device; }

  // Final hidden states (B, T, hidden), after the last norm. Appends to
  // `cache` when given. Errors (bad shapes, positions past the model's
  // maximum, cache full) come back as a status.
  absl::StatusOr<at::Tensor> Hidden(const DecoderInput& input, KvCache* cache = nullptr) const;
  // hidden (..., hidden) -> logits (..., vocab).
  at::Tensor Logits(const at::Tensor& hidden) const;
  absl::StatusOr<at::Tensor> Forward(const DecoderInput& input, KvCache* cache = nullptr) const;
  // Two calls in one pass, as Hidden(a, cache_a) and Hidden(b, cache_b) would
  // give them (each with its own cache, or none): their tokens go through the
  // linear layers together, so the weights are read once for both, and
  // attention runs per call. For serving: a prompt's prefill rides along with
  // a decode step. Results are those of the separate calls where the linear
  // layers' rows do not depend on each other (the small-batch kernels, up to
  // SmallBatchLinearMaxRows rows in all).
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> HiddenPair(const DecoderInput& a,
                                                               KvCache* cache_a,
                                                               const DecoderInput& b,
                                                               KvCache* cache_b) const;

  // Base weights in Hugging Face names and layouts (GPT-2 Conv1D weights
  // transposed back); the tied LM head appears once, as the embedding.
  // Quantised weights (LoadOptions::quantize_base) come back dequantised.
  std::vector<std::pair<std::string, at::Tensor>> NamedWeights() const;
  // Every base weight tensor as stored, under its Hugging Face name (GPT-2
  // Conv1D weights as stored here, transposed); the tied LM head appears once,
  // as the embedding. For full fine-tuning: set requires_grad on the ones to train.
  // Quantised weights are frozen and left out.
  std::vector<std::pair<std::string, at::Tensor>> NamedParameters() const;
  // Parameters of the base model and the bytes they take as stored (packed,
  // quantised or plain; the tied LM head counted once).
  int64_t ParameterCount() const;
  int64_t WeightBytes() const;
  // Writes config.json + model.safetensors (sharded past 5 GB) in `dir`.
  absl::Status Save(const std::string& dir) const;

  // Adapters. Ids are small integers, stable until the adapter is removed.
  absl::StatusOr<int> AddAdapter(const std::string& name, const LoraAdapter& adapter);
  // A new trainable adapter: A Kaiming-uniform, B zero (the model's output is
  // unchanged until B moves), both requiring grad.
  absl::StatusOr<int> CreateAdapter(const std::string& name, const LoraConfig& config,
                                    uint64_t seed);
  absl::Status RemoveAdapter(const std::string& name);
  absl::Status MergeAdapter(const std::string& name);
  absl::Status UnmergeAdapter(const std::string& name);
  std::optional<int> AdapterId(const std::string& name) const;
  // The adapter's config and current weights, ready for SavePeftAdapter.
  absl::StatusOr<LoraAdapter> ExportAdapter(const std::string& name) const;
  // The trainable A and B tensors of one adapter.
  absl::StatusOr<std::vector<at::Tensor>> AdapterParameters(const std::string& name) const;

 private:
  struct Block {
    at::Tensor norm1_w, norm1_b, norm2_w, norm2_b;  // biases: GPT-2 LayerNorm only
    LoraLinear qkv;                                 // GPT-2 c_attn
    LoraLinear q, k, v, o;                          // o is GPT-2's attn.c_proj too
    LoraLinear gate, up, down;                      // GPT-2: up = c_fc, down = mlp.c_proj
  };
  struct AdapterState {
    std::string name;
    LoraConfig config;
    bool merged = false;
  };
  struct Context;

  CausalLm(ModelConfig config, LoadOptions options);
  WeightTable Table();
  // After loading: the LM head becomes the embedding when tied, else must exist.
  absl::Status TieHead(const std::string& where);
  std::vector<LoraLinear*> Linears();
  // LoadOptions::serving: linear weights (and an untied LM head) into the
  // packed kernel's layout, one at a time.
  void PackForServing();
  absl::StatusOr<Context> Prepare(const DecoderInput& input, const KvCache* cache) const;
  at::Tensor Embed(const at::Tensor& input_ids, const Context& ctx) const;
  at::Tensor Norm(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) const;
  // The q, k and v projections of x's rows (..., hidden).
  std::array<at::Tensor, 3> Qkv(const Block& block, const at::Tensor& x,
                                const AdapterRouting& routing) const;
  // One call's attention over its projections (RoPE, cache) -> (B, T, heads x head_dim).
  at::Tensor Attend(int layer, const std::array<at::Tensor, 3>& qkv, const Context& ctx,
                    KvCache* cache) const;
  at::Tensor Attention(const Block& block, int layer, const at::Tensor& x, const Context& ctx,
                       KvCache* cache) const;
  at::Tensor Mlp(const Block& block, const at::Tensor& x, const AdapterRouting& routing) const;
  // Records a call's positions in its cache once every layer has run.
  void Commit(const Context& ctx, KvCache* cache) const;
  // HiddenPair: both calls' adapter groups over the rows of one token matrix.
  AdapterRouting JoinRouting(const Context& a, const Context& b) const;
  // The rows (of `total`) that use `adapter`, on the device and the host.
  AdapterRouting::Group RoutingGroup(int adapter, std::vector<int64_t> rows, int64_t total) const;
  // One decoder layer: x + attention, then + MLP.
  at::Tensor Layer(int64_t layer, const at::Tensor& x, const Context& ctx, KvCache* cache) const;
  absl::StatusOr<int> AttachAdapter(const std::string& name, const LoraConfig& config,
                                    const std::map<std::string, LoraWeights>& modules);
  int FindAdapter(const std::string& name) const;

  ModelConfig config_;
  LoadOptions options_;
  at::Tensor embed_;     // (vocab, hidden): wte / embed_tokens
  at::Tensor position_;  // (max_positions, hidden): GPT-2 wpe
  std::vector<Block> blocks_;
  at::Tensor final_norm_w_, final_norm_b_;
  at::Tensor lm_head_;        // (vocab, hidden); the same tensor as embed_ when tied
  PackedWeight head_packed_;  // serving: the untied LM head, packed (lm_head_ undefined)
  at::Tensor inv_freq_;       // (head_dim / 2,) float32 RoPE frequencies, scaled
  std::vector<std::optional<AdapterState>> adapters_;  // index = adapter id
};

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_DECODER_H_
