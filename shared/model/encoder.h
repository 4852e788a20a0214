// BertEncoder: a BertModel checkpoint used as a sentence embedder, with the
// sentence-transformers pipeline around it (modules.json: Transformer ->
// Pooling (1_Pooling/config.json) -> optional Normalize).
//
// Forward is const and thread-safe.

#ifndef SWITCHYARD_SHARED_MODEL_ENCODER_H_
#define SWITCHYARD_SHARED_MODEL_ENCODER_H_

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shared/model/config.h"
#include "shared/model/weights.h"

namespace switchyard::model {

// sentence-transformers Pooling; several modes concatenate in this order:
// cls, max, mean, mean_sqrt_len (as sentence-transformers does).
struct PoolingConfig {
  bool cls = false;
  bool mean = true;
  bool max = false;
  bool mean_sqrt_len = false;
  bool normalize = false;  // a Normalize module follows
};

// Reads modules.json and the Pooling module's config.json; a directory
// without modules.json gets mean pooling without normalisation, as
// sentence-transformers gives a plain transformers checkpoint.
absl::StatusOr<PoolingConfig> LoadPoolingConfig(const std::string& dir);

class BertEncoder {
 public:
  static absl::StatusOr<std::unique_ptr<BertEncoder>> Load(const std::string& dir,
                                                           const LoadOptions& options);

  const ModelConfig& config() const { return config_; }
  const PoolingConfig& pooling() const { return pooling_; }
  // Width of Embed's output.
  int64_t dimension() const;

  // input_ids, attention_mask (1 = token, 0 = padding) and token_type_ids
  // (undefined = all 0), each (B, T) -> (B, T, hidden).
  absl::StatusOr<at::Tensor> LastHidden(const at::Tensor& input_ids,
                                        const at::Tensor& attention_mask,
                                        const at::Tensor& token_type_ids = at::Tensor()) const;
  // Pooled (and, when configured, L2-normalised) sentence embeddings (B, dimension()).
  absl::StatusOr<at::Tensor> Embed(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                   const at::Tensor& token_type_ids = at::Tensor()) const;

 private:
  struct Layer {
    at::Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
    at::Tensor attn_ln_w, attn_ln_b;
    at::Tensor in_w, in_b, out_w, out_b;
    at::Tensor out_ln_w, out_ln_b;
  };
  BertEncoder(ModelConfig config, PoolingConfig pooling, LoadOptions options);
  WeightTable Table();

  ModelConfig config_;
  PoolingConfig pooling_;
  LoadOptions options_;
  at::Tensor word_, position_, token_type_, emb_ln_w_, emb_ln_b_;
  at::Tensor pooler_w_, pooler_b_;  // loaded when present, unused by sentence embeddings
  std::vector<Layer> layers_;
};

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_ENCODER_H_
