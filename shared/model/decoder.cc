#include "shared/model/decoder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"
#include "shared/model/cpu_allocator.h"
#include "shared/model/decode_attention.h"
#include "shared/model/gemv.h"
#include "shared/model/recompute.h"
#include "shared/model/runtime.h"

namespace switchyard::model {
namespace {

constexpr float kMaskedScore = -1e30f;  // added to scores of masked keys (fp32)

bool IsGpt2(const ModelConfig& c) { return c.arch == Architecture::kGpt2; }

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  // In fp32 as transformers does, then back to the input dtype before the weight.
  at::Tensor x32 = x.to(at::kFloat);
  at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return weight * normed.to(x.scalar_type());
}

at::Tensor Activate(const at::Tensor& x, Activation a) {
  switch (a) {
    case Activation::kSilu:
      return at::silu(x);
    case Activation::kGeluTanh:
      return at::gelu(x, "tanh");
    case Activation::kGeluExact:
      return at::gelu(x);
    case Activation::kRelu:
      return at::relu(x);
  }
  return x;
}

// (..., head_dim) -> the halves swapped with the first negated.
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// RoPE frequencies (head_dim / 2,) with the config's scaling applied.
at::Tensor InverseFrequencies(const ModelConfig& c) {
  const int64_t dim = c.head_dim;
  std::vector<float> inv(dim / 2);
  const RopeScaling& s = c.rope_scaling;
  for (int64_t i = 0; i < dim / 2; ++i) {
    double f = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(dim));
    if (s.type == RopeScaling::Type::kLinear) {
      f /= s.factor;
    } else if (s.type == RopeScaling::Type::kLlama3) {
      // Long wavelengths are slowed by `factor`, short ones kept, the band
      // between interpolated (Llama 3.1's rope scaling).
      const double old_len = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old_len / s.low_freq_factor;
      const double high_wavelen = old_len / s.high_freq_factor;
      const double wavelen = 2 * M_PI / f;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[i] = static_cast<float>(f);
  }
  return at::tensor(inv, at::kFloat);
}

std::optional<int64_t> LayerOf(const std::string& path) {
  // "model.layers.3.self_attn.q_proj" or "transformer.h.3.attn.c_attn".
  for (const char* marker : {".layers.", ".h."}) {
    size_t at = path.find(marker);
    if (at == std::string::npos) continue;
    at += std::strlen(marker);
    size_t end = path.find('.', at);
    int64_t layer = 0;
    if (absl::SimpleAtoi(path.substr(at, end - at), &layer)) return layer;
  }
  return std::nullopt;
}

}  // namespace

// Everything one forward pass shares across layers.
struct CausalLm::Context {
  int64_t batch = 0, length = 0;  // B, T of this call
  int64_t past = 0;               // tokens already in the cache
  at::Tensor segments;            // (B, T) int64
  bool has_padding = false;       // some segment id is -1
  at::Tensor positions;           // (B, T) int64
  at::Tensor mask;                // (B, 1, 1, T, S) float32 additive, or undefined
  at::Tensor cos, sin;            // (B, T, 1, head_dim) in the model dtype (RoPE)
  AdapterRouting routing;
};

absl::StatusOr<KvCache> KvCache::Create(const ModelConfig& config, int64_t batch, int64_t capacity,
                                        at::ScalarType dtype, at::Device device) {
  if (batch <= 0 || capacity <= 0) {
    return absl::InvalidArgumentError("KV cache batch and capacity must be positive");
  }
  KvCache cache;
  cache.batch_ = batch;
  cache.capacity_ = capacity;
  SY_RETURN_IF_ERROR(TorchCall("allocating the KV cache", [&] {
    auto opts = at::TensorOptions().dtype(dtype).device(device);
    for (int64_t l = 0; l < config.num_layers; ++l) {
      cache.keys_.push_back(
          at::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
      cache.values_.push_back(
          at::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
    }
    cache.segments_ =
        at::full({batch, capacity}, -1, at::TensorOptions().dtype(at::kLong).device(device));
    cache.next_position_ = at::zeros({batch}, at::TensorOptions().dtype(at::kLong).device(device));
  }));
  return cache;
}

absl::Status KvCache::ResetRow(int64_t row) {
  if (row < 0 || row >= batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat("row ", row, " is outside the cache's ", batch_));
  }
  return TorchCall("freeing a KV cache row", [&] {
    segments_[row].fill_(-1);
    next_position_[row].fill_(0);
    has_padding_ = true;
  });
}

absl::Status KvCache::InsertRow(int64_t row, const KvCache& source, int64_t source_row) {
  if (row < 0 || row >= batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat("row ", row, " is outside the cache's ", batch_));
  }
  if (source_row < 0 || source_row >= source.batch_ || source.keys_.size() != keys_.size() ||
      (!keys_.empty() && (source.keys_[0].size(1) != keys_[0].size(1) ||
                          source.keys_[0].size(3) != keys_[0].size(3)))) {
    return absl::InvalidArgumentError(
        absl::StrCat("the source must be a cache of the same model with a row ", source_row));
  }
  const int64_t n = source.length_;
  const int64_t length = std::max(length_, n);
  if (length > capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "KV cache full: a sequence of ", n, " positions exceeds its capacity of ", capacity_));
  }
  return TorchCall("inserting a KV cache row", [&]() -> absl::Status {
    if (length_ > 0 && segments_[row].narrow(0, 0, length_).ge(0).any().item<bool>()) {
      return absl::FailedPreconditionError(absl::StrCat("row ", row, " is in use"));
    }
    if (length > length_ && length_ > 0) {
      // Shift what is cached right, so every row still ends at the length
      // and Compact can shrink the cache to its longest row.
      const int64_t shift = length - length_;
      for (std::vector<at::Tensor>* layers : {&keys_, &values_}) {
        for (at::Tensor& t : *layers) {
          t.narrow(2, shift, length_).copy_(t.narrow(2, 0, length_).clone());
        }
      }
      segments_.narrow(1, shift, length_).copy_(segments_.narrow(1, 0, length_).clone());
      segments_.narrow(1, 0, shift).fill_(-1);
      has_padding_ = true;
    }
    const int64_t at = length - n;
    const int64_t from = source_row;
    for (size_t l = 0; l < keys_.size(); ++l) {
      keys_[l][row].narrow(1, at, n).copy_(source.keys_[l][from].narrow(1, 0, n));
      values_[l][row].narrow(1, at, n).copy_(source.values_[l][from].narrow(1, 0, n));
    }
    segments_[row].narrow(0, at, n).copy_(source.segments_[from].narrow(0, 0, n));
    next_position_[row].copy_(source.next_position_[from]);
    has_padding_ = has_padding_ || at > 0 || length > n || batch_ > 1;
    length_ = length;
    return absl::OkStatus();
  });
}

absl::Status KvCache::MoveRow(int64_t from, int64_t to) {
  if (from < 0 || from >= batch_ || to < 0 || to >= batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows ", from, " and ", to, " must be inside the cache's ", batch_));
  }
  if (from == to) return absl::OkStatus();
  SY_RETURN_IF_ERROR(TorchCall("moving a KV cache row", [&]() -> absl::Status {
    if (length_ > 0 && segments_[to].narrow(0, 0, length_).ge(0).any().item<bool>()) {
      return absl::FailedPreconditionError(absl::StrCat("row ", to, " is in use"));
    }
    for (std::vector<at::Tensor>* layers : {&keys_, &values_}) {
      for (at::Tensor& t : *layers)
        t[to].narrow(1, 0, length_).copy_(t[from].narrow(1, 0, length_));
    }
    segments_[to].copy_(segments_[from]);
    next_position_[to].copy_(next_position_[from]);
    return absl::OkStatus();
  }));
  return ResetRow(from);
}

int64_t KvCache::RowLength(int64_t row) const {
  if (row < 0 || row >= batch_ || length_ == 0) return 0;
  return segments_[row].narrow(0, 0, length_).ge(0).sum().item<int64_t>();
}

int64_t KvCache::BytesPerPosition() const {
  int64_t bytes = 0;
  for (const std::vector<at::Tensor>* layers : {&keys_, &values_}) {
    for (const at::Tensor& t : *layers) bytes += t.size(1) * t.size(3) * t.element_size();
  }
  return bytes;
}

absl::Status KvCache::Compact() {
  if (length_ == 0) return absl::OkStatus();
  return TorchCall("compacting the KV cache", [&] {
    at::Tensor used = segments_.narrow(1, 0, length_).ge(0).any(0);  // (length,)
    at::Tensor keep = used.nonzero().view({-1});
    const int64_t kept = keep.size(0);
    if (kept == length_) return;
    for (size_t l = 0; l < keys_.size(); ++l) {
      keys_[l].narrow(2, 0, kept).copy_(keys_[l].index_select(2, keep));
      values_[l].narrow(2, 0, kept).copy_(values_[l].index_select(2, keep));
    }
    segments_.narrow(1, 0, kept).copy_(segments_.index_select(1, keep));
    segments_.narrow(1, kept, length_ - kept).fill_(-1);
    length_ = kept;
  });
}

CausalLm::CausalLm(ModelConfig config, LoadOptions options)
    : config_(std::move(config)), options_(options) {
  blocks_.resize(config_.num_layers);
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    Block& b = blocks_[i];
    if (IsGpt2(config_)) {
      const std::string p = absl::StrCat("transformer.h.", i, ".");
      b.qkv = LoraLinear(p + "attn.c_attn");
      b.o = LoraLinear(p + "attn.c_proj");
      b.up = LoraLinear(p + "mlp.c_fc");
      b.down = LoraLinear(p + "mlp.c_proj");
    } else {
      const std::string p = absl::StrCat("model.layers.", i, ".");
      b.q = LoraLinear(p + "self_attn.q_proj");
      b.k = LoraLinear(p + "self_attn.k_proj");
      b.v = LoraLinear(p + "self_attn.v_proj");
      b.o = LoraLinear(p + "self_attn.o_proj");
      b.gate = LoraLinear(p + "mlp.gate_proj");
      b.up = LoraLinear(p + "mlp.up_proj");
      b.down = LoraLinear(p + "mlp.down_proj");
    }
  }
  if (!IsGpt2(config_)) inv_freq_ = InverseFrequencies(config_).to(options_.device);
}

// Every checkpoint tensor and where it lives, in Hugging Face's names.
WeightTable CausalLm::Table() {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size, v = c.vocab_size;
  WeightTable t;
  const BaseQuantization quantize = options_.quantize_base;
  const bool double_quant = options_.double_quant;
  auto linear = [&](LoraLinear& l, int64_t out, int64_t in, bool bias, bool conv1d = false) {
    if (conv1d) {
      t.Add(l.path() + ".weight", {in, out}, &l.weight(), /*transposed=*/true);
    } else {
      t.Add(l.path() + ".weight", {out, in}, &l.weight());
    }
    if (quantize != BaseQuantization::kNone) {
      LoraLinear* target = &l;
      t.slots.back().store = [target, quantize, double_quant](const at::Tensor& w) {
        target->SetQuantizedWeight(Quantize(w, quantize, double_quant));
      };
    }
    if (bias) t.Add(l.path() + ".bias", {out}, &l.bias());
  };
  if (IsGpt2(c)) {
    t.Add("transformer.wte.weight", {v, h}, &embed_);
    t.Add("transformer.wpe.weight", {c.max_position_embeddings, h}, &position_);
    for (int64_t i = 0; i < c.num_layers; ++i) {
      Block& b = blocks_[i];
      const std::string p = absl::StrCat("transformer.h.", i, ".");
      t.Add(p + "ln_1.weight", {h}, &b.norm1_w);
      t.Add(p + "ln_1.bias", {h}, &b.norm1_b);
      linear(b.qkv, 3 * h, h, true, true);
      linear(b.o, h, h, true, true);
      t.Add(p + "ln_2.weight", {h}, &b.norm2_w);
      t.Add(p + "ln_2.bias", {h}, &b.norm2_b);
      linear(b.up, inter, h, true, true);
      linear(b.down, h, inter, true, true);
    }
    t.Add("transformer.ln_f.weight", {h}, &final_norm_w_);
    t.Add("transformer.ln_f.bias", {h}, &final_norm_b_);
    // Original GPT-2 checkpoints lack the "transformer." prefix.
    t.rename = [](const std::string& n) {
      return absl::StartsWith(n, "transformer.") || n == "lm_head.weight" ? n : "transformer." + n;
    };
    t.ignored_suffixes = {".attn.bias", ".attn.masked_bias"};
  } else {
    t.Add("model.embed_tokens.weight", {v, h}, &embed_);
    for (int64_t i = 0; i < c.num_layers; ++i) {
      Block& b = blocks_[i];
      const std::string p = absl::StrCat("model.layers.", i, ".");
      t.Add(p + "input_layernorm.weight", {h}, &b.norm1_w);
      linear(b.q, q, h, c.attention_bias);
      linear(b.k, kv, h, c.attention_bias);
      linear(b.v, kv, h, c.attention_bias);
      linear(b.o, h, q, c.output_bias);
      t.Add(p + "post_attention_layernorm.weight", {h}, &b.norm2_w);
      linear(b.gate, inter, h, c.mlp_bias);
      linear(b.up, inter, h, c.mlp_bias);
      linear(b.down, h, inter, c.mlp_bias);
    }
    t.Add("model.norm.weight", {h}, &final_norm_w_);
    t.ignored_suffixes = {".rotary_emb.inv_freq"};
  }
  // A tied head may still be saved; transformers then ignores it, and so do we.
  t.Add("lm_head.weight", {v, h}, &lm_head_, false, /*optional=*/true);
  return t;
}

std::vector<LoraLinear*> CausalLm::Linears() {
  std::vector<LoraLinear*> out;
  for (Block& b : blocks_) {
    for (LoraLinear* l : {&b.qkv, &b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down}) {
      if (!l->path().empty()) out.push_back(l);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<CausalLm>> CausalLm::Load(const std::string& dir,
                                                         const LoadOptions& options) {
  SY_ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  if (!config.is_decoder()) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": a ", ArchitectureName(config.arch), " model is not a causal LM"));
  }
  std::unique_ptr<CausalLm> model(new CausalLm(config, options));
  WeightTable table = model->Table();
  SY_RETURN_IF_ERROR(LoadWeightTable(dir, table, options));
  SY_RETURN_IF_ERROR(model->TieHead(dir));
  if (options.serving) model->PackForServing();
  // Quantising left chunk-sized temporaries behind that training never reuses.
  if (options.quantize_base != BaseQuantization::kNone && options.device.is_cpu()) {
    ReleaseCachedCpuMemory();
  }
  return model;
}

absl::StatusOr<std::unique_ptr<CausalLm>> CausalLm::FromTensors(
    const ModelConfig& config, const std::map<std::string, at::Tensor>& tensors,
    const LoadOptions& options) {
  if (!config.is_decoder()) {
    return absl::InvalidArgumentError("a bert model is not a causal LM");
  }
  std::unique_ptr<CausalLm> model(new CausalLm(config, options));
  WeightTable table = model->Table();
  SY_RETURN_IF_ERROR(FillWeightTable(tensors, table, options));
  SY_RETURN_IF_ERROR(model->TieHead("tensors"));
  if (options.serving) model->PackForServing();
  return model;
}

void CausalLm::PackForServing() {
  c10::InferenceMode guard;
  for (LoraLinear* l : Linears()) {
    if (CanPackWeight(l->weight())) l->SetPackedWeight(PackWeight(l->weight()));
  }
  if (!lm_head_.is_same(embed_) && CanPackWeight(lm_head_)) {
    head_packed_ = PackWeight(lm_head_);
    lm_head_ = at::Tensor();
  }
}

absl::Status CausalLm::TieHead(const std::string& where) {
  if (config_.tie_word_embeddings) {
    lm_head_ = embed_;  // a stored head of a tied model is ignored, as transformers does
  } else if (!lm_head_.defined()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing tensor \"lm_head.weight\" (tie_word_embeddings is false)"));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Forward

absl::StatusOr<CausalLm::Context> CausalLm::Prepare(const DecoderInput& in,
                                                    const KvCache* cache) const {
  Context ctx;
  if (!in.input_ids.defined() || in.input_ids.dim() != 2) {
    return absl::InvalidArgumentError("input_ids must be a (batch, length) tensor");
  }
  ctx.batch = in.input_ids.size(0);
  ctx.length = in.input_ids.size(1);
  const int64_t B = ctx.batch, T = ctx.length;
  auto long_opts = at::TensorOptions().dtype(at::kLong).device(options_.device);
  for (const at::Tensor* t : {&in.segment_ids, &in.position_ids}) {
    if (t->defined() && (t->dim() != 2 || t->size(0) != B || t->size(1) != T)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "segment_ids and position_ids must match input_ids' shape (", B, ", ", T, ")"));
    }
  }
  if (!in.adapters.empty() && static_cast<int64_t>(in.adapters.size()) != B) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapters has ", in.adapters.size(), " entries for a batch of ", B));
  }
  if (cache != nullptr) {
    if (cache->batch() < B) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV cache holds ", cache->batch(), " rows but the batch has ", B));
    }
    if (cache->length() + T > cache->capacity()) {
      return absl::ResourceExhaustedError(absl::StrCat("KV cache full: ", cache->length(), " + ", T,
                                                       " positions exceed its capacity of ",
                                                       cache->capacity()));
    }
    ctx.past = cache->length();
  }

  // Adapter routing: rows grouped by adapter id.
  std::map<int, std::vector<int64_t>> rows_by_adapter;
  for (int64_t r = 0; r < static_cast<int64_t>(in.adapters.size()); ++r) {
    rows_by_adapter[in.adapters[r]].push_back(r);
  }
  int merged = kNoAdapter;
  for (size_t id = 0; id < adapters_.size(); ++id) {
    if (adapters_[id] && adapters_[id]->merged) merged = static_cast<int>(id);
  }
  if (merged != kNoAdapter) {
    bool ok = rows_by_adapter.size() == 1 && rows_by_adapter.begin()->first == merged;
    if (!ok) {
      return absl::FailedPreconditionError(absl::StrCat(
          "adapter \"", adapters_[merged]->name,
          "\" is merged into the base weights; every row must use it until it is unmerged"));
    }
  }
  for (auto& [id, rows] : rows_by_adapter) {
    if (id == kNoAdapter || id == merged) continue;
    if (id < 0 || id >= static_cast<int>(adapters_.size()) || !adapters_[id]) {
      return absl::InvalidArgumentError(absl::StrCat("no adapter with id ", id));
    }
    ctx.routing.groups.push_back(RoutingGroup(id, std::move(rows), B));
  }
  ctx.routing.training = in.training;
  ctx.routing.generator = in.generator;
  if (in.recompute_layers && in.training && !in.generator.defined()) {
    return absl::InvalidArgumentError(
        "recompute_layers in training needs a generator, so the recomputed layers draw the same "
        "dropout masks");
  }

  return TorchCall("preparing the forward pass", [&]() -> absl::StatusOr<Context> {
    ctx.segments =
        in.segment_ids.defined() ? in.segment_ids.to(long_opts) : at::zeros({B, T}, long_opts);
    at::Tensor valid = ctx.segments.ge(0);
    if (cache != nullptr && ctx.segments.max().item<int64_t>() > 0) {
      return absl::InvalidArgumentError("packed segments cannot be used with a KV cache");
    }
    if (in.position_ids.defined()) {
      ctx.positions = in.position_ids.to(long_opts);
    } else if (cache != nullptr) {
      // Continue each row from the positions already cached.
      at::Tensor counted =
          valid.to(at::kLong).cumsum(1) - 1 + cache->next_position_.narrow(0, 0, B).unsqueeze(1);
      ctx.positions = counted.masked_fill(valid.logical_not(), 0);
    } else {
      // Restart at 0 at each segment's first token: position = index minus
      // the index where the segment began.
      at::Tensor index = at::arange(T, long_opts).unsqueeze(0).expand({B, T});
      at::Tensor starts =
          at::ones({B, T}, at::TensorOptions().dtype(at::kBool).device(options_.device));
      if (T > 1) {
        starts.narrow(1, 1, T - 1)
            .copy_(ctx.segments.narrow(1, 1, T - 1).ne(ctx.segments.narrow(1, 0, T - 1)));
      }
      at::Tensor start_index =
          std::get<0>(at::where(starts, index, at::zeros_like(index)).cummax(1));
      ctx.positions = (index - start_index).masked_fill(valid.logical_not(), 0);
    }
    if (IsGpt2(config_) && T > 0) {  // learned positions end; RoPE has no table
      const int64_t max_pos = ctx.positions.max().item<int64_t>();
      if (max_pos >= config_.max_position_embeddings) {
        return absl::InvalidArgumentError(absl::StrCat("position ", max_pos,
                                                       " is past the model's maximum of ",
                                                       config_.max_position_embeddings - 1));
      }
    }

    // Attention mask over the keys: the cache's positions, then this call's.
    const int64_t S = ctx.past + T;
    ctx.has_padding = T > 0 && ctx.segments.min().item<int64_t>() < 0;
    const bool padded =
        (cache != nullptr && (cache->has_padding_ || cache->batch() > B)) || ctx.has_padding;
    const bool windowed = config_.sliding_window.has_value() && S > *config_.sliding_window;
    if (T > 1 || padded || windowed) {
      at::Tensor key_segments =
          cache != nullptr
              ? at::cat({cache->segments_.narrow(0, 0, B).narrow(1, 0, ctx.past), ctx.segments}, 1)
              : ctx.segments;  // (B, S)
      at::Tensor q_index = at::arange(ctx.past, S, long_opts).view({1, T, 1});
      at::Tensor k_index = at::arange(S, long_opts).view({1, 1, S});
      at::Tensor allowed = key_segments.unsqueeze(1).eq(ctx.segments.unsqueeze(2)) &
                           key_segments.unsqueeze(1).ge(0) & k_index.le(q_index);  // (B, T, S)
      if (windowed) allowed = allowed & (q_index - k_index).lt(*config_.sliding_window);
      ctx.mask = at::zeros({B, T, S}, at::TensorOptions().dtype(at::kFloat).device(options_.device))
                     .masked_fill(allowed.logical_not(), kMaskedScore)
                     .view({B, 1, 1, T, S});
    }
    if (!IsGpt2(config_)) {
      at::Tensor freqs = ctx.positions.to(at::kFloat).unsqueeze(-1) * inv_freq_;  // (B, T, D/2)
      at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(2);                  // (B, T, 1, D)
      ctx.cos = emb.cos().to(options_.dtype);
      ctx.sin = emb.sin().to(options_.dtype);
    }
    return std::move(ctx);
  });
}

std::array<at::Tensor, 3> CausalLm::Qkv(const Block& b, const at::Tensor& x,
                                        const AdapterRouting& routing) const {
  if (IsGpt2(config_)) {
    std::vector<at::Tensor> qkv = b.qkv.Forward(x, routing).split(config_.hidden_size, -1);
    return {qkv[0], qkv[1], qkv[2]};
  }
  return {b.q.Forward(x, routing), b.k.Forward(x, routing), b.v.Forward(x, routing)};
}

at::Tensor CausalLm::Attend(int layer, const std::array<at::Tensor, 3>& qkv, const Context& ctx,
                            KvCache* cache) const {
  const int64_t B = ctx.batch, T = ctx.length, D = config_.head_dim;
  const int64_t H = config_.num_heads, KV = config_.num_kv_heads, G = H / KV;
  at::Tensor q = qkv[0].view({B, T, H, D});
  at::Tensor k = qkv[1].view({B, T, KV, D});
  at::Tensor v = qkv[2].view({B, T, KV, D});
  if (!IsGpt2(config_)) {
    q = q * ctx.cos + RotateHalf(q) * ctx.sin;
    k = k * ctx.cos + RotateHalf(k) * ctx.sin;
  }
  k = k.transpose(1, 2);  // (B, KV, T, D)
  v = v.transpose(1, 2);
  if (cache != nullptr) {
    // The batch uses the cache's first B rows.
    at::Tensor keys = cache->keys_[layer].narrow(0, 0, B);
    at::Tensor values = cache->values_[layer].narrow(0, 0, B);
    keys.narrow(2, ctx.past, T).copy_(k);
    values.narrow(2, ctx.past, T).copy_(v);
    k = keys.narrow(2, 0, ctx.past + T);  // (B, KV, S, D)
    v = values.narrow(2, 0, ctx.past + T);
  }
  const int64_t S = k.size(2);
  if (cache != nullptr && T == 1) q = q.contiguous();  // GPT-2's q is a view of qkv
  if (cache != nullptr && T == 1 &&
      UseDecodeAttention(q, cache->keys_[layer], cache->values_[layer])) {
    return DecodeAttention(q, cache->keys_[layer], cache->values_[layer], S, ctx.mask,
                           1.0 / std::sqrt(static_cast<double>(D)));
  }
  // Query heads grouped under the key/value head they share (head h uses
  // kv head h / G, as transformers' repeat_kv): (B, KV, G*T, D).
  q = (q * (1.0 / std::sqrt(static_cast<double>(D))))
          .view({B, T, KV, G, D})
          .permute({0, 2, 3, 1, 4})
          .reshape({B, KV, G * T, D});
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2));  // (B, KV, G*T, S)
  at::Tensor probs;
  if (ctx.mask.defined() || options_.dtype != at::kFloat) {
    scores = scores.to(at::kFloat).view({B, KV, G, T, S});
    if (ctx.mask.defined()) scores = scores + ctx.mask;
    probs = at::softmax(scores, -1).to(options_.dtype).view({B, KV, G * T, S});
  } else {
    probs = at::softmax(scores, -1);
  }
  at::Tensor out = at::matmul(probs, v);  // (B, KV, G*T, D)
  return out.view({B, KV, G, T, D}).permute({0, 3, 1, 2, 4}).reshape({B, T, H * D});
}

at::Tensor CausalLm::Attention(const Block& b, int layer, const at::Tensor& x, const Context& ctx,
                               KvCache* cache) const {
  return b.o.Forward(Attend(layer, Qkv(b, x, ctx.routing), ctx, cache), ctx.routing);
}

at::Tensor CausalLm::Mlp(const Block& b, const at::Tensor& x, const AdapterRouting& routing) const {
  if (IsGpt2(config_)) {
    return b.down.Forward(Activate(b.up.Forward(x, routing), config_.activation), routing);
  }
  at::Tensor gated = Activate(b.gate.Forward(x, routing), config_.activation);
  return b.down.Forward(gated * b.up.Forward(x, routing), routing);
}

absl::StatusOr<at::Tensor> CausalLm::Hidden(const DecoderInput& in, KvCache* cache) const {
  SY_ASSIGN_OR_RETURN(Context ctx, Prepare(in, cache));
  return TorchCall("forward pass", [&] {
    at::Tensor x = Embed(in.input_ids, ctx);  // (B, T, hidden)
    const bool recompute = in.recompute_layers && cache == nullptr && at::GradMode::is_enabled();
    // Gradients reach a recomputed layer only through its input.
    if (recompute && !x.requires_grad()) x = x.detach().requires_grad_(true);
    auto shared_ctx = recompute ? std::make_shared<const Context>(ctx) : nullptr;
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      if (!recompute) {
        x = Layer(l, x, ctx, cache);
        continue;
      }
      // The second run draws the same dropout masks from a copy of the
      // generator as it is now; the first advances the real one.
      at::Generator masks = ctx.routing.training && ctx.routing.generator.defined()
                                ? ctx.routing.generator.clone()
                                : at::Generator();
      auto runs = std::make_shared<int>(0);
      x = RecomputeInBackward(
          [this, l, shared_ctx, masks, runs](const at::Tensor& input) {
            if ((*runs)++ == 0 || !masks.defined()) return Layer(l, input, *shared_ctx, nullptr);
            Context again = *shared_ctx;
            again.routing.generator = masks.clone();
            return Layer(l, input, again, nullptr);
          },
          x);
    }
    x = Norm(x, final_norm_w_, final_norm_b_);
    if (cache != nullptr) Commit(ctx, cache);
    return x;
  });
}

void CausalLm::Commit(const Context& ctx, KvCache* cache) const {
  const int64_t B = ctx.batch;
  cache->segments_.narrow(0, 0, B).narrow(1, ctx.past, ctx.length).copy_(ctx.segments);
  cache->next_position_.narrow(0, 0, B).add_(ctx.segments.ge(0).sum(1));
  cache->has_padding_ = cache->has_padding_ || ctx.has_padding || cache->batch() > B;
  cache->length_ += ctx.length;
}

at::Tensor CausalLm::Norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
  return IsGpt2(config_) ? at::layer_norm(x, {config_.hidden_size}, w, b, config_.norm_eps)
                         : RmsNorm(x, w, config_.norm_eps);
}

at::Tensor CausalLm::Embed(const at::Tensor& input_ids, const Context& ctx) const {
  at::Tensor ids = input_ids.to(at::TensorOptions().dtype(at::kLong).device(options_.device));
  at::Tensor x = at::embedding(embed_, ids);  // (B, T, hidden)
  if (IsGpt2(config_)) x = x + at::embedding(position_, ctx.positions);
  return x;
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> CausalLm::HiddenPair(const DecoderInput& a,
                                                                       KvCache* cache_a,
                                                                       const DecoderInput& b,
                                                                       KvCache* cache_b) const {
  if (cache_a == cache_b && cache_a != nullptr) {
    return absl::InvalidArgumentError("the two calls of a paired forward need their own caches");
  }
  SY_ASSIGN_OR_RETURN(Context ca, Prepare(a, cache_a));
  SY_ASSIGN_OR_RETURN(Context cb, Prepare(b, cache_b));
  return TorchCall("paired forward pass", [&]() -> std::pair<at::Tensor, at::Tensor> {
    const int64_t H = config_.hidden_size;
    const int64_t ra = ca.batch * ca.length, rb = cb.batch * cb.length;
    // Both calls' tokens as rows of one matrix: the linear layers (and
    // their adapters, routed per row) run once for both.
    AdapterRouting routing = JoinRouting(ca, cb);
    at::Tensor x =
        at::cat({Embed(a.input_ids, ca).reshape({ra, H}), Embed(b.input_ids, cb).reshape({rb, H})});
    for (int64_t l = 0; l < config_.num_layers; ++l) {
      const Block& blk = blocks_[l];
      const std::array<at::Tensor, 3> qkv = Qkv(blk, Norm(x, blk.norm1_w, blk.norm1_b), routing);
      std::array<at::Tensor, 3> qkv_a, qkv_b;
      for (int i = 0; i < 3; ++i) {
        qkv_a[i] = qkv[i].narrow(0, 0, ra);
        qkv_b[i] = qkv[i].narrow(0, ra, rb);
      }
      at::Tensor attended =
          at::cat({Attend(static_cast<int>(l), qkv_a, ca, cache_a).reshape({ra, -1}),
                   Attend(static_cast<int>(l), qkv_b, cb, cache_b).reshape({rb, -1})});
      x = x + blk.o.Forward(attended, routing);
      x = x + Mlp(blk, Norm(x, blk.norm2_w, blk.norm2_b), routing);
    }
    x = Norm(x, final_norm_w_, final_norm_b_);
    if (cache_a != nullptr) Commit(ca, cache_a);
    if (cache_b != nullptr) Commit(cb, cache_b);
    return {x.narrow(0, 0, ra).view({ca.batch, ca.length, H}),
            x.narrow(0, ra, rb).view({cb.batch, cb.length, H})};
  });
}

AdapterRouting CausalLm::JoinRouting(const Context& a, const Context& b) const {
  // Each call's groups, their batch rows turned into rows of the joined
  // (tokens, hidden) matrix: a's tokens first, then b's.
  std::map<int, std::vector<int64_t>> rows_by_adapter;
  int64_t offset = 0;
  for (const Context* ctx : {&a, &b}) {
    for (const AdapterRouting::Group& g : ctx->routing.groups) {
      std::vector<int64_t>& rows = rows_by_adapter[g.adapter];
      const int64_t batches = g.all_rows ? ctx->batch : static_cast<int64_t>(g.row_list.size());
      for (int64_t i = 0; i < batches; ++i) {
        const int64_t row = g.all_rows ? i : g.row_list[i];
        for (int64_t t = 0; t < ctx->length; ++t) rows.push_back(offset + row * ctx->length + t);
      }
    }
    offset += ctx->batch * ctx->length;
  }
  AdapterRouting joined;
  for (auto& [id, rows] : rows_by_adapter) {
    joined.groups.push_back(RoutingGroup(id, std::move(rows), offset));
  }
  return joined;
}

AdapterRouting::Group CausalLm::RoutingGroup(int adapter, std::vector<int64_t> rows,
                                             int64_t total) const {
  AdapterRouting::Group g;
  g.adapter = adapter;
  g.all_rows = static_cast<int64_t>(rows.size()) == total;
  if (!g.all_rows) {
    g.rows = at::tensor(rows, at::kLong).to(options_.device);
    g.row_list = std::move(rows);
  }
  return g;
}

at::Tensor CausalLm::Layer(int64_t l, const at::Tensor& x, const Context& ctx,
                           KvCache* cache) const {
  const Block& b = blocks_[l];
  at::Tensor h = x + Attention(b, static_cast<int>(l), Norm(x, b.norm1_w, b.norm1_b), ctx, cache);
  return h + Mlp(b, Norm(h, b.norm2_w, b.norm2_b), ctx.routing);
}

at::Tensor CausalLm::Logits(const at::Tensor& hidden) const {
  if (head_packed_.defined()) return PackedLinear(hidden, head_packed_, at::Tensor());
  return UseSmallBatchLinear(hidden, lm_head_, at::Tensor())
             ? SmallBatchLinear(hidden, lm_head_, at::Tensor())
             : at::linear(hidden, lm_head_);
}

absl::StatusOr<at::Tensor> CausalLm::Forward(const DecoderInput& input, KvCache* cache) const {
  SY_ASSIGN_OR_RETURN(at::Tensor hidden, Hidden(input, cache));
  return TorchCall("LM head", [&] { return Logits(hidden); });
}

// ---------------------------------------------------------------------------
// Weights out

std::vector<std::pair<std::string, at::Tensor>> CausalLm::NamedWeights() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  WeightTable table = const_cast<CausalLm*>(this)->Table();
  const bool tied = lm_head_.is_same(embed_);
  // Linear weights stored quantised or packed, by their (undefined) slot.
  std::map<const at::Tensor*, const LoraLinear*> stored_otherwise;
  for (const LoraLinear* l : const_cast<CausalLm*>(this)->Linears()) {
    if (l->quantized() || l->packed()) stored_otherwise[&l->weight()] = l;
  }
  for (const WeightSlot& s : table.slots) {
    if (s.name == "lm_head.weight" && tied) continue;
    auto q = stored_otherwise.find(s.target);
    at::Tensor t = q != stored_otherwise.end() ? q->second->DenseWeight(options_.dtype)
                   : s.target == &lm_head_ && head_packed_.defined() ? UnpackWeight(head_packed_)
                                                                     : s.target->detach();
    out.emplace_back(s.name, s.transposed ? t.t() : t);
  }
  return out;
}

int64_t CausalLm::ParameterCount() const {
  int64_t n = head_packed_.defined() ? head_packed_.out * head_packed_.in : 0;
  for (const LoraLinear* l : const_cast<CausalLm*>(this)->Linears()) {
    if (!l->weight().defined()) n += l->in_features() * l->out_features();
  }
  WeightTable table = const_cast<CausalLm*>(this)->Table();
  for (const WeightSlot& s : table.slots) {
    if (s.name == "lm_head.weight" && lm_head_.is_same(embed_)) continue;
    if (s.target->defined()) n += s.target->numel();
  }
  return n;
}

int64_t CausalLm::WeightBytes() const {
  int64_t n = head_packed_.defined() ? static_cast<int64_t>(head_packed_.data.nbytes()) : 0;
  std::set<const at::Tensor*> counted;
  for (const LoraLinear* l : const_cast<CausalLm*>(this)->Linears()) {
    n += l->StoredBytes();
    counted.insert(&l->weight());
    counted.insert(&l->bias());
  }
  WeightTable table = const_cast<CausalLm*>(this)->Table();
  for (const WeightSlot& s : table.slots) {
    if (s.name == "lm_head.weight" && lm_head_.is_same(embed_)) continue;
    if (counted.count(s.target) == 0 && s.target->defined()) {
      n += static_cast<int64_t>(s.target->nbytes());
    }
  }
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> CausalLm::NamedParameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  WeightTable table = const_cast<CausalLm*>(this)->Table();
  for (const WeightSlot& s : table.slots) {
    if (s.name == "lm_head.weight" && lm_head_.is_same(embed_)) continue;
    if (!s.target->defined()) continue;  // a quantised weight: frozen
    out.emplace_back(s.name, *s.target);
  }
  return out;
}

absl::Status CausalLm::Save(const std::string& dir) const {
  ModelConfig config = config_;
  config.torch_dtype = std::string(DtypeName(options_.dtype));
  config.tie_word_embeddings = lm_head_.is_same(embed_);
  return SaveCheckpoint(dir, ModelConfigToJson(config).dump(2) + "\n", NamedWeights());
}

// ---------------------------------------------------------------------------
// Adapters

int CausalLm::FindAdapter(const std::string& name) const {
  for (size_t i = 0; i < adapters_.size(); ++i) {
    if (adapters_[i] && adapters_[i]->name == name) return static_cast<int>(i);
  }
  return kNoAdapter;
}

std::optional<int> CausalLm::AdapterId(const std::string& name) const {
  int id = FindAdapter(name);
  if (id == kNoAdapter) return std::nullopt;
  return id;
}

absl::StatusOr<int> CausalLm::AttachAdapter(const std::string& name, const LoraConfig& config,
                                            const std::map<std::string, LoraWeights>& modules) {
  if (FindAdapter(name) != kNoAdapter) {
    return absl::AlreadyExistsError(absl::StrCat("adapter \"", name, "\" is already loaded"));
  }
  std::map<std::string, LoraLinear*> by_path;
  for (LoraLinear* l : Linears()) by_path[l->path()] = l;
  for (const auto& [path, w] : modules) {
    auto it = by_path.find(path);
    if (it == by_path.end()) {
      return absl::InvalidArgumentError(absl::StrCat("adapter \"", name, "\": module \"", path,
                                                     "\" is not a linear layer of this ",
                                                     ArchitectureName(config_.arch), " model"));
    }
    const LoraLinear& l = *it->second;
    if (w.a.dim() != 2 || w.b.dim() != 2 || w.a.size(1) != l.in_features() ||
        w.b.size(0) != l.out_features() || w.a.size(0) != w.b.size(1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter \"", name, "\": module \"", path, "\" has lora_A [", w.a.size(0), ", ",
          w.a.size(1), "] and lora_B [", w.b.size(0), ", ", w.b.size(1), "] but the layer is [",
          l.out_features(), ", ", l.in_features(), "] (out, in)"));
    }
  }
  int id = static_cast<int>(adapters_.size());
  for (size_t i = 0; i < adapters_.size(); ++i) {
    if (!adapters_[i]) {
      id = static_cast<int>(i);
      break;
    }
  }
  if (id == static_cast<int>(adapters_.size())) adapters_.emplace_back();
  adapters_[id] = AdapterState{name, config, false};
  const double scale = config.Scale();
  for (const auto& [path, w] : modules) {
    by_path[path]->AddAdapter(id, w.a, w.b, scale, config.dropout);
  }
  return id;
}

absl::StatusOr<int> CausalLm::AddAdapter(const std::string& name, const LoraAdapter& adapter) {
  std::map<std::string, LoraWeights> moved;
  SY_RETURN_IF_ERROR(TorchCall("adapter weights", [&] {
    for (const auto& [path, w] : adapter.modules) {
      moved[path] = {w.a.to(options_.device, options_.dtype),
                     w.b.to(options_.device, options_.dtype)};
    }
  }));
  return AttachAdapter(name, adapter.config, moved);
}

absl::StatusOr<int> CausalLm::CreateAdapter(const std::string& name, const LoraConfig& config,
                                            uint64_t seed) {
  std::map<std::string, LoraWeights> modules;
  for (LoraLinear* l : Linears()) {
    if (!config.Targets(l->path(), LayerOf(l->path()))) continue;
    modules[l->path()];
  }
  if (modules.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("adapter \"", name, "\": target_modules match no linear layer of this ",
                     ArchitectureName(config_.arch), " model"));
  }
  std::map<std::string, LoraLinear*> by_path;
  for (LoraLinear* l : Linears()) by_path[l->path()] = l;
  SY_RETURN_IF_ERROR(TorchCall("creating adapter", [&] {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    for (auto& [path, w] : modules) {
      const LoraLinear& l = *by_path[path];
      // Kaiming-uniform with a = sqrt(5), as nn.Linear and PEFT initialise A:
      // bound = 1 / sqrt(in).
      const double bound = 1.0 / std::sqrt(static_cast<double>(l.in_features()));
      at::Tensor a =
          at::empty({config.r, l.in_features()}, at::kFloat).uniform_(-bound, bound, gen);
      w.a = a.to(options_.device, options_.dtype).set_requires_grad(true);
      w.b = at::zeros({l.out_features(), config.r},
                      at::TensorOptions().dtype(options_.dtype).device(options_.device))
                .set_requires_grad(true);
    }
  }));
  return AttachAdapter(name, config, modules);
}

absl::Status CausalLm::RemoveAdapter(const std::string& name) {
  int id = FindAdapter(name);
  if (id == kNoAdapter) return absl::NotFoundError(absl::StrCat("no adapter \"", name, "\""));
  if (adapters_[id]->merged) SY_RETURN_IF_ERROR(UnmergeAdapter(name));
  for (LoraLinear* l : Linears()) l->RemoveAdapter(id);
  adapters_[id].reset();
  return absl::OkStatus();
}

absl::Status CausalLm::MergeAdapter(const std::string& name) {
  int id = FindAdapter(name);
  if (id == kNoAdapter) return absl::NotFoundError(absl::StrCat("no adapter \"", name, "\""));
  for (const auto& a : adapters_) {
    if (a && a->merged) {
      return absl::FailedPreconditionError(
          absl::StrCat("adapter \"", a->name, "\" is already merged; unmerge it first"));
    }
  }
  if (options_.quantize_base != BaseQuantization::kNone) {
    return absl::FailedPreconditionError(
        "the base weights are quantised; merge the adapter into the unquantised base");
  }
  SY_RETURN_IF_ERROR(TorchCall("merging adapter", [&] {
    for (LoraLinear* l : Linears()) l->Merge(id);
  }));
  adapters_[id]->merged = true;
  return absl::OkStatus();
}

absl::Status CausalLm::UnmergeAdapter(const std::string& name) {
  int id = FindAdapter(name);
  if (id == kNoAdapter) return absl::NotFoundError(absl::StrCat("no adapter \"", name, "\""));
  if (!adapters_[id]->merged) {
    return absl::FailedPreconditionError(absl::StrCat("adapter \"", name, "\" is not merged"));
  }
  SY_RETURN_IF_ERROR(TorchCall("unmerging adapter", [&] {
    for (LoraLinear* l : Linears()) l->Unmerge(id);
  }));
  adapters_[id]->merged = false;
  return absl::OkStatus();
}

absl::StatusOr<LoraAdapter> CausalLm::ExportAdapter(const std::string& name) const {
  int id = FindAdapter(name);
  if (id == kNoAdapter) return absl::NotFoundError(absl::StrCat("no adapter \"", name, "\""));
  LoraAdapter out;
  out.config = adapters_[id]->config;
  out.config.fan_in_fan_out = IsGpt2(config_);
  for (LoraLinear* l : const_cast<CausalLm*>(this)->Linears()) {
    auto [a, b] = l->AdapterWeights(id);
    if (a.defined()) out.modules[l->path()] = {a.detach(), b.detach()};
  }
  return out;
}

absl::StatusOr<std::vector<at::Tensor>> CausalLm::AdapterParameters(const std::string& name) const {
  int id = FindAdapter(name);
  if (id == kNoAdapter) return absl::NotFoundError(absl::StrCat("no adapter \"", name, "\""));
  std::vector<at::Tensor> out;
  for (LoraLinear* l : const_cast<CausalLm*>(this)->Linears()) {
    auto [a, b] = l->AdapterWeights(id);
    if (a.defined()) {
      out.push_back(a);
      out.push_back(b);
    }
  }
  return out;
}

}  // namespace switchyard::model
