#include "shared/model/init.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/decoder.h"
#include "shared/model/runtime.h"
#include "shared/model/weights.h"
#include "shared/text/tokenizer.h"
#include "shared/text/unicode.h"

namespace switchyard::model {
namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

constexpr char kEndOfText[] = "<|endoftext|>";
constexpr char kImStart[] = "<|im_start|>";
constexpr char kImEnd[] = "<|im_end|>";
// ChatML, as Qwen2 and SmolLM2 write it (no default system message).
constexpr char kChatMlTemplate[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

// A byte-level BPE tokenizer.json with no merges: every byte is a token, plus
// the special tokens <|endoftext|> (256), <|im_start|> (257), <|im_end|> (258).
std::string ByteTokenizerJson() {
  ojson vocab = ojson::object();
  const text::ByteLevelAlphabet& alphabet = text::ByteLevelAlphabet::Get();
  for (int b = 0; b < 256; ++b) vocab[alphabet.Encode(static_cast<unsigned char>(b))] = b;
  const char* specials[] = {kEndOfText, kImStart, kImEnd};
  for (int i = 0; i < 3; ++i) vocab[specials[i]] = 256 + i;
  ojson byte_level = {{"type", "ByteLevel"},
                      {"add_prefix_space", false},
                      {"trim_offsets", true},
                      {"use_regex", true}};
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = ojson::array();
  for (int i = 0; i < 3; ++i) {
    j["added_tokens"].push_back({{"id", 256 + i},
                                 {"content", specials[i]},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  }
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = byte_level;
  j["post_processor"] = byte_level;
  j["decoder"] = byte_level;
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", ojson::array()}};
  return j.dump(2) + "\n";
}

// The token a tokenizer_config.json field names ("eos_token": "</s>" or
// {"content": "</s>", ...}).
std::optional<int64_t> SpecialTokenId(const nlohmann::json& config, const char* field,
                                      const text::Tokenizer& tokenizer) {
  auto it = config.find(field);
  if (it == config.end()) return std::nullopt;
  std::string content;
  if (it->is_string()) content = it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    content = (*it)["content"].get<std::string>();
  }
  if (content.empty()) return std::nullopt;
  std::optional<int32_t> id = tokenizer.TokenToId(content);
  if (!id.has_value()) return std::nullopt;
  return *id;
}

}  // namespace

absl::Status CopyModelSideFiles(const std::string& from_dir, const std::string& to_dir,
                                bool generation_config) {
  std::vector<std::string> names = {"tokenizer.json", "tokenizer_config.json",
                                    "special_tokens_map.json", "vocab.txt", "chat_template.jinja"};
  if (generation_config) names.push_back("generation_config.json");
  for (const std::string& name : names) {
    const std::string from = from_dir + "/" + name;
    std::error_code ec;
    if (!fs::exists(from, ec)) continue;
    SY_ASSIGN_OR_RETURN(std::string contents, ReadFile(from));
    SY_RETURN_IF_ERROR(WriteFileAtomic(to_dir + "/" + name, contents));
  }
  return absl::OkStatus();
}

std::map<std::string, at::Tensor> RandomWeights(const ModelConfig& c, uint64_t seed,
                                                double init_std) {
  std::map<std::string, at::Tensor> tensors;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t inter = c.intermediate_size, v = c.vocab_size;
  auto normal = [&](const std::string& name, std::vector<int64_t> shape) {
    tensors[name] = at::empty(shape, at::kFloat).normal_(0.0, init_std, gen);
  };
  auto fill = [&](const std::string& name, std::vector<int64_t> shape, double value) {
    tensors[name] = at::full(shape, value, at::kFloat);
  };
  auto linear = [&](const std::string& p, int64_t out, int64_t in, bool bias, bool conv1d) {
    normal(p + ".weight", conv1d ? std::vector<int64_t>{in, out} : std::vector<int64_t>{out, in});
    if (bias) fill(p + ".bias", {out}, 0);
  };
  switch (c.arch) {
    case Architecture::kGpt2:
      normal("transformer.wte.weight", {v, h});
      normal("transformer.wpe.weight", {c.max_position_embeddings, h});
      for (int64_t i = 0; i < c.num_layers; ++i) {
        const std::string p = absl::StrCat("transformer.h.", i, ".");
        fill(p + "ln_1.weight", {h}, 1);
        fill(p + "ln_1.bias", {h}, 0);
        linear(p + "attn.c_attn", 3 * h, h, true, true);
        linear(p + "attn.c_proj", h, h, true, true);
        fill(p + "ln_2.weight", {h}, 1);
        fill(p + "ln_2.bias", {h}, 0);
        linear(p + "mlp.c_fc", inter, h, true, true);
        linear(p + "mlp.c_proj", h, inter, true, true);
      }
      fill("transformer.ln_f.weight", {h}, 1);
      fill("transformer.ln_f.bias", {h}, 0);
      break;
    case Architecture::kBert:
      normal("embeddings.word_embeddings.weight", {v, h});
      normal("embeddings.position_embeddings.weight", {c.max_position_embeddings, h});
      normal("embeddings.token_type_embeddings.weight", {c.type_vocab_size, h});
      fill("embeddings.LayerNorm.weight", {h}, 1);
      fill("embeddings.LayerNorm.bias", {h}, 0);
      for (int64_t i = 0; i < c.num_layers; ++i) {
        const std::string p = absl::StrCat("encoder.layer.", i, ".");
        for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value",
                              "attention.output.dense"}) {
          linear(p + n, h, h, true, false);
        }
        fill(p + "attention.output.LayerNorm.weight", {h}, 1);
        fill(p + "attention.output.LayerNorm.bias", {h}, 0);
        linear(p + "intermediate.dense", inter, h, true, false);
        linear(p + "output.dense", h, inter, true, false);
        fill(p + "output.LayerNorm.weight", {h}, 1);
        fill(p + "output.LayerNorm.bias", {h}, 0);
      }
      linear("pooler.dense", h, h, true, false);
      break;
    default:
      normal("model.embed_tokens.weight", {v, h});
      for (int64_t i = 0; i < c.num_layers; ++i) {
        const std::string p = absl::StrCat("model.layers.", i, ".");
        fill(p + "input_layernorm.weight", {h}, 1);
        linear(p + "self_attn.q_proj", q, h, c.attention_bias, false);
        linear(p + "self_attn.k_proj", kv, h, c.attention_bias, false);
        linear(p + "self_attn.v_proj", kv, h, c.attention_bias, false);
        linear(p + "self_attn.o_proj", h, q, c.output_bias, false);
        fill(p + "post_attention_layernorm.weight", {h}, 1);
        linear(p + "mlp.gate_proj", inter, h, c.mlp_bias, false);
        linear(p + "mlp.up_proj", inter, h, c.mlp_bias, false);
        linear(p + "mlp.down_proj", h, inter, c.mlp_bias, false);
      }
      fill("model.norm.weight", {h}, 1);
      if (!c.tie_word_embeddings) normal("lm_head.weight", {v, h});
      break;
  }
  return tensors;
}

absl::Status InitAdapter(const std::string& model_dir, const LoraConfig& config, uint64_t seed,
                         double init_std, const std::string& out_dir) {
  if (!(init_std >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat("--init-std must be >= 0, got ", init_std));
  }
  if (std::filesystem::exists(out_dir) && !std::filesystem::is_empty(out_dir)) {
    return absl::FailedPreconditionError(absl::StrCat(out_dir, " is not empty"));
  }
  SY_ASSIGN_OR_RETURN(std::unique_ptr<CausalLm> lm, CausalLm::Load(model_dir, LoadOptions{}));
  SY_RETURN_IF_ERROR(lm->CreateAdapter("init", config, seed).status());
  SY_ASSIGN_OR_RETURN(std::vector<at::Tensor> params, lm->AdapterParameters("init"));
  SY_RETURN_IF_ERROR(TorchCall("drawing the adapter's B", [&] {
    at::NoGradGuard no_grad;
    at::Generator gen = at::detail::createCPUGenerator(seed ^ 0x9e3779b97f4a7c15ull);
    for (size_t i = 1; i < params.size(); i += 2) params[i].normal_(0, init_std, gen);
  }));
  SY_ASSIGN_OR_RETURN(LoraAdapter adapter, lm->ExportAdapter("init"));
  if (adapter.config.base_model_name_or_path.empty()) {
    adapter.config.base_model_name_or_path = model_dir;
  }
  SY_RETURN_IF_ERROR(MakeDirs(out_dir));
  return SavePeftAdapter(adapter, out_dir, at::kFloat);
}

absl::Status InitCheckpoint(const InitOptions& o, const std::string& out_dir) {
  auto bad = [](absl::string_view m) { return absl::InvalidArgumentError(std::string(m)); };
  if (o.layers <= 0) return bad(absl::StrCat("--layers must be positive, got ", o.layers));
  if (o.hidden <= 0) return bad(absl::StrCat("--hidden must be positive, got ", o.hidden));
  if (o.heads <= 0 || o.hidden % o.heads != 0) {
    return bad(absl::StrCat("--heads (", o.heads, ") must divide --hidden (", o.hidden, ")"));
  }
  const int64_t kv_heads = o.kv_heads > 0 ? o.kv_heads : o.heads;
  if (o.heads % kv_heads != 0) {
    return bad(absl::StrCat("--kv-heads (", kv_heads, ") must divide --heads (", o.heads, ")"));
  }
  if ((o.arch == Architecture::kGpt2 || o.arch == Architecture::kBert) && kv_heads != o.heads) {
    return bad("--kv-heads applies to llama, mistral and qwen2 only");
  }
  if (o.arch == Architecture::kBert && o.vocab_from.empty()) {
    return bad("bert needs --vocab-from a tokenizer directory (a WordPiece tokenizer.json)");
  }
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !fs::is_empty(out_dir, ec)) {
    return absl::AlreadyExistsError(absl::StrCat(out_dir, " exists and is not empty"));
  }
  SY_RETURN_IF_ERROR(MakeDirs(out_dir));

  ModelConfig c;
  c.arch = o.arch;
  c.num_layers = o.layers;
  c.hidden_size = o.hidden;
  c.num_heads = o.heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = o.hidden / o.heads;
  const bool wide_mlp = o.arch == Architecture::kGpt2 || o.arch == Architecture::kBert;
  c.intermediate_size = o.intermediate > 0 ? o.intermediate
                        : wide_mlp         ? 4 * o.hidden
                                           : (8 * o.hidden / 3 + 31) / 32 * 32;
  c.max_position_embeddings = o.max_positions > 0             ? o.max_positions
                              : o.arch == Architecture::kGpt2 ? 1024
                              : o.arch == Architecture::kBert ? 512
                                                              : 2048;
  c.rope_theta = o.rope_theta;
  c.tie_word_embeddings = o.arch == Architecture::kGpt2 || o.tie_embeddings;
  c.torch_dtype = std::string(DtypeName(o.dtype));
  c.activation = o.arch == Architecture::kGpt2   ? Activation::kGeluTanh
                 : o.arch == Architecture::kBert ? Activation::kGeluExact
                                                 : Activation::kSilu;
  c.norm_eps = o.arch == Architecture::kGpt2 ? 1e-5 : o.arch == Architecture::kBert ? 1e-12 : 1e-6;
  c.attention_bias = o.arch == Architecture::kQwen2 || wide_mlp;
  c.output_bias = c.mlp_bias = wide_mlp;
  c.type_vocab_size = o.arch == Architecture::kBert ? 2 : 0;

  // Tokenizer first: it sizes the vocabulary.
  if (o.vocab_from.empty()) {
    SY_RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/tokenizer.json", ByteTokenizerJson()));
    ojson tc = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                {"bos_token", kEndOfText},
                {"eos_token", kImEnd},
                {"unk_token", kEndOfText},
                {"pad_token", kEndOfText},
                {"model_max_length", c.max_position_embeddings},
                {"clean_up_tokenization_spaces", false},
                {"chat_template", kChatMlTemplate}};
    SY_RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/tokenizer_config.json", tc.dump(2) + "\n"));
    c.vocab_size = 259;
    c.bos_token_id = 256;
    c.eos_token_ids = {256, 258};
  } else {
    SY_ASSIGN_OR_RETURN(std::unique_ptr<text::Tokenizer> tokenizer,
                        text::Tokenizer::FromFile(o.vocab_from + "/tokenizer.json"));
    c.vocab_size = tokenizer->vocab_size();
    SY_RETURN_IF_ERROR(CopyModelSideFiles(o.vocab_from, out_dir, /*generation_config=*/false));
    absl::StatusOr<std::string> tc_text = ReadFile(o.vocab_from + "/tokenizer_config.json");
    if (tc_text.ok()) {
      nlohmann::json tc = nlohmann::json::parse(*tc_text, nullptr, false);
      if (tc.is_object()) {
        c.bos_token_id = SpecialTokenId(tc, "bos_token", *tokenizer);
        if (auto eos = SpecialTokenId(tc, "eos_token", *tokenizer)) c.eos_token_ids = {*eos};
        c.pad_token_id = SpecialTokenId(tc, "pad_token", *tokenizer);
      }
    }
  }

  std::map<std::string, at::Tensor> tensors;
  SY_RETURN_IF_ERROR(TorchCall("initialising weights", [&] {
    tensors = RandomWeights(c, o.seed, o.init_std);
    for (auto& [name, t] : tensors) t = t.to(o.dtype);
  }));
  std::vector<std::pair<std::string, at::Tensor>> named(tensors.begin(), tensors.end());
  SY_RETURN_IF_ERROR(SaveCheckpoint(out_dir, ModelConfigToJson(c).dump(2) + "\n", named));

  if (c.arch == Architecture::kBert) {
    ojson modules = ojson::array({{{"idx", 0},
                                   {"name", "0"},
                                   {"path", ""},
                                   {"type", "sentence_transformers.models.Transformer"}},
                                  {{"idx", 1},
                                   {"name", "1"},
                                   {"path", "1_Pooling"},
                                   {"type", "sentence_transformers.models.Pooling"}},
                                  {{"idx", 2},
                                   {"name", "2"},
                                   {"path", "2_Normalize"},
                                   {"type", "sentence_transformers.models.Normalize"}}});
    SY_RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/modules.json", modules.dump(2) + "\n"));
    ojson pooling = {{"word_embedding_dimension", c.hidden_size},
                     {"pooling_mode_cls_token", false},
                     {"pooling_mode_mean_tokens", true},
                     {"pooling_mode_max_tokens", false},
                     {"pooling_mode_mean_sqrt_len_tokens", false},
                     {"pooling_mode_weightedmean_tokens", false},
                     {"pooling_mode_lasttoken", false},
                     {"include_prompt", true}};
    SY_RETURN_IF_ERROR(MakeDirs(out_dir + "/1_Pooling"));
    SY_RETURN_IF_ERROR(MakeDirs(out_dir + "/2_Normalize"));
    SY_RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/1_Pooling/config.json", pooling.dump(2) + "\n"));
    ojson sbert = {{"max_seq_length", c.max_position_embeddings}, {"do_lower_case", false}};
    SY_RETURN_IF_ERROR(
        WriteFileAtomic(out_dir + "/sentence_bert_config.json", sbert.dump(2) + "\n"));
  } else {
    ojson gen;
    gen["_from_model_config"] = true;
    gen["bos_token_id"] = c.bos_token_id.has_value() ? ojson(*c.bos_token_id) : ojson(nullptr);
    gen["eos_token_id"] = c.eos_token_ids.empty()       ? ojson(nullptr)
                          : c.eos_token_ids.size() == 1 ? ojson(c.eos_token_ids[0])
                                                        : ojson(c.eos_token_ids);
    gen["transformers_version"] = "4.46.0";
    SY_RETURN_IF_ERROR(WriteFileAtomic(out_dir + "/generation_config.json", gen.dump(2) + "\n"));
  }
  return absl::OkStatus();
}

}  // namespace switchyard::model
