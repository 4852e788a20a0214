#include "shared/model/encoder.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"

namespace switchyard::model {

absl::StatusOr<PoolingConfig> LoadPoolingConfig(const std::string& dir) {
  PoolingConfig pooling;
  absl::StatusOr<std::string> modules_text = ReadFile(dir + "/modules.json");
  if (!modules_text.ok()) {
    if (absl::IsNotFound(modules_text.status())) return pooling;
    return modules_text.status();
  }
  nlohmann::json modules = nlohmann::json::parse(*modules_text, nullptr, false);
  if (modules.is_discarded() || !modules.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/modules.json is not a JSON array"));
  }
  bool found_pooling = false;
  for (const auto& m : modules) {
    const std::string type = m.value("type", "");
    const std::string path = m.value("path", "");
    if (absl::EndsWith(type, ".Transformer")) continue;
    if (absl::EndsWith(type, ".Normalize")) {
      pooling.normalize = true;
    } else if (absl::EndsWith(type, ".Pooling")) {
      found_pooling = true;
      const std::string config_path = absl::StrCat(dir, "/", path, "/config.json");
      SY_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
      nlohmann::json c = nlohmann::json::parse(text, nullptr, false);
      if (c.is_discarded() || !c.is_object()) {
        return absl::InvalidArgumentError(absl::StrCat(config_path, " is not a JSON object"));
      }
      pooling.cls = c.value("pooling_mode_cls_token", false);
      pooling.mean = c.value("pooling_mode_mean_tokens", false);
      pooling.max = c.value("pooling_mode_max_tokens", false);
      pooling.mean_sqrt_len = c.value("pooling_mode_mean_sqrt_len_tokens", false);
      for (const char* unsupported :
           {"pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"}) {
        if (c.value(unsupported, false)) {
          return absl::InvalidArgumentError(
              absl::StrCat(config_path, ": \"", unsupported, "\" is not supported"));
        }
      }
      if (!pooling.cls && !pooling.mean && !pooling.max && !pooling.mean_sqrt_len) {
        return absl::InvalidArgumentError(absl::StrCat(config_path, ": no pooling mode is set"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/modules.json: module type \"", type,
                                                     "\" is not supported (Transformer, "
                                                     "Pooling, Normalize)"));
    }
  }
  if (!found_pooling) {
    return absl::InvalidArgumentError(absl::StrCat(dir, "/modules.json lists no Pooling module"));
  }
  return pooling;
}

BertEncoder::BertEncoder(ModelConfig config, PoolingConfig pooling, LoadOptions options)
    : config_(std::move(config)), pooling_(pooling), options_(options) {
  layers_.resize(config_.num_layers);
}

int64_t BertEncoder::dimension() const {
  const int64_t modes = pooling_.cls + pooling_.mean + pooling_.max + pooling_.mean_sqrt_len;
  return modes * config_.hidden_size;
}

WeightTable BertEncoder::Table() {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, inter = c.intermediate_size;
  WeightTable t;
  t.Add("embeddings.word_embeddings.weight", {c.vocab_size, h}, &word_);
  t.Add("embeddings.position_embeddings.weight", {c.max_position_embeddings, h}, &position_);
  t.Add("embeddings.token_type_embeddings.weight", {c.type_vocab_size, h}, &token_type_);
  t.Add("embeddings.LayerNorm.weight", {h}, &emb_ln_w_);
  t.Add("embeddings.LayerNorm.bias", {h}, &emb_ln_b_);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    Layer& l = layers_[i];
    const std::string p = absl::StrCat("encoder.layer.", i, ".");
    auto dense = [&](const std::string& name, at::Tensor* w, at::Tensor* b, int64_t out,
                     int64_t in) {
      t.Add(p + name + ".weight", {out, in}, w);
      t.Add(p + name + ".bias", {out}, b);
    };
    dense("attention.self.query", &l.q_w, &l.q_b, h, h);
    dense("attention.self.key", &l.k_w, &l.k_b, h, h);
    dense("attention.self.value", &l.v_w, &l.v_b, h, h);
    dense("attention.output.dense", &l.o_w, &l.o_b, h, h);
    t.Add(p + "attention.output.LayerNorm.weight", {h}, &l.attn_ln_w);
    t.Add(p + "attention.output.LayerNorm.bias", {h}, &l.attn_ln_b);
    dense("intermediate.dense", &l.in_w, &l.in_b, inter, h);
    dense("output.dense", &l.out_w, &l.out_b, h, inter);
    t.Add(p + "output.LayerNorm.weight", {h}, &l.out_ln_w);
    t.Add(p + "output.LayerNorm.bias", {h}, &l.out_ln_b);
  }
  t.Add("pooler.dense.weight", {h, h}, &pooler_w_, false, /*optional=*/true);
  t.Add("pooler.dense.bias", {h}, &pooler_b_, false, /*optional=*/true);
  t.ignored_suffixes = {"embeddings.position_ids"};
  // BertForPreTraining-style checkpoints prefix "bert." and old ones name
  // LayerNorm parameters gamma/beta.
  t.rename = [](const std::string& n) {
    std::string out = absl::StartsWith(n, "bert.") ? n.substr(5) : n;
    if (absl::EndsWith(out, ".gamma")) out = out.substr(0, out.size() - 6) + ".weight";
    if (absl::EndsWith(out, ".beta")) out = out.substr(0, out.size() - 5) + ".bias";
    return out;
  };
  return t;
}

absl::StatusOr<std::unique_ptr<BertEncoder>> BertEncoder::Load(const std::string& dir,
                                                               const LoadOptions& options) {
  SY_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  if (config.arch != Architecture::kBert) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": a ", ArchitectureName(config.arch), " model is not a BERT encoder"));
  }
  SY_ASSIGN_OR_RETURN(PoolingConfig pooling, LoadPoolingConfig(dir));
  std::unique_ptr<BertEncoder> model(new BertEncoder(config, pooling, options));
  WeightTable table = model->Table();
  SY_RETURN_IF_ERROR(LoadWeightTable(dir, table, options));
  return model;
}

absl::StatusOr<at::Tensor> BertEncoder::LastHidden(const at::Tensor& input_ids,
                                                   const at::Tensor& attention_mask,
                                                   const at::Tensor& token_type_ids) const {
  if (!input_ids.defined() || input_ids.dim() != 2 || !attention_mask.defined() ||
      attention_mask.sizes() != input_ids.sizes()) {
    return absl::InvalidArgumentError("input_ids and attention_mask must both be (batch, length)");
  }
  if (input_ids.size(1) > config_.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("input of ", input_ids.size(1),
                                                   " tokens exceeds the model's maximum of ",
                                                   config_.max_position_embeddings));
  }
  return TorchCall("encoder forward", [&] {
    const int64_t B = input_ids.size(0), T = input_ids.size(1), H = config_.hidden_size;
    const int64_t NH = config_.num_heads, D = config_.head_dim;
    const double eps = config_.norm_eps;
    auto long_opts = at::TensorOptions().dtype(at::kLong).device(options_.device);
    at::Tensor ids = input_ids.to(long_opts);
    at::Tensor types =
        token_type_ids.defined() ? token_type_ids.to(long_opts) : at::zeros({B, T}, long_opts);
    at::Tensor positions = at::arange(T, long_opts).unsqueeze(0);
    at::Tensor x = at::embedding(word_, ids) + at::embedding(position_, positions) +
                   at::embedding(token_type_, types);
    x = at::layer_norm(x, {H}, emb_ln_w_, emb_ln_b_, eps);  // (B, T, H)
    // Padding keys get a large negative score: (B, 1, 1, T).
    at::Tensor mask =
        at::zeros({B, 1, 1, T}, at::TensorOptions().dtype(at::kFloat).device(options_.device))
            .masked_fill(attention_mask.to(options_.device).eq(0).view({B, 1, 1, T}), -1e30f);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    for (const Layer& l : layers_) {
      at::Tensor q =
          at::linear(x, l.q_w, l.q_b).view({B, T, NH, D}).transpose(1, 2);  // (B, NH, T, D)
      at::Tensor k = at::linear(x, l.k_w, l.k_b).view({B, T, NH, D}).transpose(1, 2);
      at::Tensor v = at::linear(x, l.v_w, l.v_b).view({B, T, NH, D}).transpose(1, 2);
      at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat) * scale + mask;
      at::Tensor ctx = at::matmul(at::softmax(scores, -1).to(x.scalar_type()), v);  // (B, NH, T, D)
      ctx = ctx.transpose(1, 2).reshape({B, T, H});
      x = at::layer_norm(x + at::linear(ctx, l.o_w, l.o_b), {H}, l.attn_ln_w, l.attn_ln_b, eps);
      at::Tensor ff = at::linear(at::gelu(at::linear(x, l.in_w, l.in_b)), l.out_w, l.out_b);
      x = at::layer_norm(x + ff, {H}, l.out_ln_w, l.out_ln_b, eps);
    }
    return x;
  });
}

absl::StatusOr<at::Tensor> BertEncoder::Embed(const at::Tensor& input_ids,
                                              const at::Tensor& attention_mask,
                                              const at::Tensor& token_type_ids) const {
  SY_ASSIGN_OR_RETURN(at::Tensor hidden, LastHidden(input_ids, attention_mask, token_type_ids));
  return TorchCall("pooling", [&] {
    at::Tensor h = hidden.to(at::kFloat);                                    // (B, T, H)
    at::Tensor m = attention_mask.to(h.device(), at::kFloat).unsqueeze(-1);  // (B, T, 1)
    std::vector<at::Tensor> parts;
    if (pooling_.cls) parts.push_back(h.select(1, 0));
    if (pooling_.max) parts.push_back(h.masked_fill(m.eq(0), -1e9f).amax(1));
    if (pooling_.mean || pooling_.mean_sqrt_len) {
      at::Tensor sum = (h * m).sum(1);
      at::Tensor count = m.sum(1).clamp_min(1e-9);
      if (pooling_.mean) parts.push_back(sum / count);
      if (pooling_.mean_sqrt_len) parts.push_back(sum / count.sqrt());
    }
    at::Tensor out = parts.size() == 1 ? parts[0] : at::cat(parts, 1);
    if (pooling_.normalize) out = out / out.norm(2, {1}, true).clamp_min(1e-12);
    return out;
  });
}

}  // namespace switchyard::model
