#include "shared/model/config.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard::model {
namespace {

using json = nlohmann::json;

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: \"", field, "\" ", problem));
}

// Reads an integer field; `fallback` when absent or null, an error when neither.
absl::StatusOr<int64_t> Int(const json& j, const char* field, std::optional<int64_t> fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (fallback.has_value()) return *fallback;
    return FieldError(field, "is required");
  }
  if (!it->is_number_integer())
    return FieldError(field, absl::StrCat("must be an integer, got ", it->dump()));
  return it->get<int64_t>();
}

absl::StatusOr<double> Number(const json& j, const char* field, double fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number())
    return FieldError(field, absl::StrCat("must be a number, got ", it->dump()));
  return it->get<double>();
}

absl::StatusOr<bool> Bool(const json& j, const char* field, bool fallback) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    return FieldError(field, absl::StrCat("must be true or false, got ", it->dump()));
  return it->get<bool>();
}

absl::StatusOr<Activation> ParseActivation(const json& j, const char* field,
                                           absl::string_view fallback) {
  std::string name(fallback);
  auto it = j.find(field);
  if (it != j.end() && !it->is_null()) {
    if (!it->is_string()) return FieldError(field, "must be a string");
    name = it->get<std::string>();
  }
  if (name == "silu" || name == "swish") return Activation::kSilu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::kGeluTanh;
  if (name == "gelu") return Activation::kGeluExact;
  if (name == "relu") return Activation::kRelu;
  return FieldError(field, absl::StrCat("\"", name,
                                        "\" is not supported (silu, gelu, gelu_new, "
                                        "gelu_pytorch_tanh, relu)"));
}

absl::string_view ActivationName(Activation a, Architecture arch) {
  switch (a) {
    case Activation::kSilu:
      return "silu";
    case Activation::kGeluTanh:
      return arch == Architecture::kGpt2 ? "gelu_new" : "gelu_pytorch_tanh";
    case Activation::kGeluExact:
      return "gelu";
    case Activation::kRelu:
      return "relu";
  }
  return "silu";
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const json& j) {
  RopeScaling r;
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return r;
  if (!it->is_object()) return FieldError("rope_scaling", "must be an object or null");
  const json& s = *it;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = s.find(key);
    if (t != s.end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type.empty() || type == "default") return r;
  SY_ASSIGN_OR_RETURN(r.factor, Number(s, "factor", 1.0));
  if (!(r.factor >= 1.0)) return FieldError("rope_scaling.factor", "must be >= 1");
  if (type == "linear") {
    r.type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    r.type = RopeScaling::Type::kLlama3;
    SY_ASSIGN_OR_RETURN(r.low_freq_factor, Number(s, "low_freq_factor", 1.0));
    SY_ASSIGN_OR_RETURN(r.high_freq_factor, Number(s, "high_freq_factor", 4.0));
    SY_ASSIGN_OR_RETURN(r.original_max_position_embeddings,
                        Int(s, "original_max_position_embeddings", 8192));
    if (!(r.high_freq_factor > r.low_freq_factor)) {
      return FieldError("rope_scaling.high_freq_factor", "must be greater than low_freq_factor");
    }
  } else {
    return FieldError("rope_scaling.rope_type",
                      absl::StrCat("\"", type, "\" is not supported (default, linear, llama3)"));
  }
  return r;
}

absl::Status CheckPositive(const char* field, int64_t value) {
  if (value <= 0) return FieldError(field, absl::StrCat("must be positive, got ", value));
  return absl::OkStatus();
}

}  // namespace

absl::string_view ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kGpt2:
      return "gpt2";
    case Architecture::kLlama:
      return "llama";
    case Architecture::kMistral:
      return "mistral";
    case Architecture::kQwen2:
      return "qwen2";
    case Architecture::kBert:
      return "bert";
  }
  return "llama";
}

absl::StatusOr<Architecture> ParseArchitectureName(absl::string_view name) {
  for (Architecture a : {Architecture::kGpt2, Architecture::kLlama, Architecture::kMistral,
                         Architecture::kQwen2, Architecture::kBert}) {
    if (ArchitectureName(a) == name) return a;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown architecture \"", name, "\" (gpt2, llama, mistral, qwen2, bert)"));
}

int64_t ModelConfig::NumParameters() const {
  const int64_t h = hidden_size, q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  const int64_t i = intermediate_size;
  int64_t per_layer = 0, rest = 0;
  switch (arch) {
    case Architecture::kGpt2:
      per_layer = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + (h * i + i) + (i * h + h);
      rest = vocab_size * h + max_position_embeddings * h + 2 * h;
      break;
    case Architecture::kBert:
      per_layer = (3 * (h * h + h)) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
      rest = (vocab_size + max_position_embeddings + type_vocab_size) * h + 2 * h + (h * h + h);
      break;
    default:
      per_layer = 2 * h + h * q + 2 * h * kv + q * h + 3 * h * i;
      if (attention_bias) per_layer += q + 2 * kv;
      if (output_bias) per_layer += h;
      if (mlp_bias) per_layer += 2 * i + h;
      rest = vocab_size * h + h + (tie_word_embeddings ? 0 : vocab_size * h);
      break;
  }
  return per_layer * num_layers + rest;
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json is not a JSON object");
  }
  auto type_it = j.find("model_type");
  if (type_it == j.end() || !type_it->is_string()) return FieldError("model_type", "is required");
  ModelConfig c;
  absl::StatusOr<Architecture> arch = ParseArchitectureName(type_it->get<std::string>());
  if (!arch.ok()) {
    return FieldError("model_type", absl::StrCat("\"", type_it->get<std::string>(),
                                                 "\" is not supported (gpt2, llama, mistral, "
                                                 "qwen2, bert)"));
  }
  c.arch = *arch;
  // transformers v5 nests rope settings in rope_parameters.
  json rope_source = j;
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    rope_source["rope_scaling"] = *rp;
    if (rp->contains("rope_theta")) rope_source["rope_theta"] = (*rp)["rope_theta"];
  }

  SY_ASSIGN_OR_RETURN(c.vocab_size, Int(j, "vocab_size", std::nullopt));
  if (c.arch == Architecture::kGpt2) {
    SY_ASSIGN_OR_RETURN(c.hidden_size, Int(j, "n_embd", 768));
    SY_ASSIGN_OR_RETURN(c.num_layers, Int(j, "n_layer", 12));
    SY_ASSIGN_OR_RETURN(c.num_heads, Int(j, "n_head", 12));
    SY_ASSIGN_OR_RETURN(c.intermediate_size, Int(j, "n_inner", 4 * c.hidden_size));
    SY_ASSIGN_OR_RETURN(c.max_position_embeddings, Int(j, "n_positions", 1024));
    SY_ASSIGN_OR_RETURN(c.norm_eps, Number(j, "layer_norm_epsilon", 1e-5));
    SY_ASSIGN_OR_RETURN(c.activation, ParseActivation(j, "activation_function", "gelu_new"));
    SY_ASSIGN_OR_RETURN(c.tie_word_embeddings, Bool(j, "tie_word_embeddings", true));
    c.num_kv_heads = c.num_heads;
    c.attention_bias = c.output_bias = c.mlp_bias = true;
    if (!j.value("scale_attn_weights", true) || j.value("scale_attn_by_inverse_layer_idx", false) ||
        j.value("reorder_and_upcast_attn", false)) {
      return FieldError("scale_attn_weights",
                        "only the default GPT-2 attention scaling is supported "
                        "(scale_attn_weights true, the other two false)");
    }
  } else {
    SY_ASSIGN_OR_RETURN(c.hidden_size, Int(j, "hidden_size", std::nullopt));
    SY_ASSIGN_OR_RETURN(c.num_layers, Int(j, "num_hidden_layers", std::nullopt));
    SY_ASSIGN_OR_RETURN(c.num_heads, Int(j, "num_attention_heads", std::nullopt));
    SY_ASSIGN_OR_RETURN(c.intermediate_size, Int(j, "intermediate_size", std::nullopt));
    SY_ASSIGN_OR_RETURN(c.max_position_embeddings, Int(j, "max_position_embeddings",
                                                       c.arch == Architecture::kBert ? 512 : 2048));
  }
  if (c.arch == Architecture::kBert) {
    SY_ASSIGN_OR_RETURN(c.norm_eps, Number(j, "layer_norm_eps", 1e-12));
    SY_ASSIGN_OR_RETURN(c.activation, ParseActivation(j, "hidden_act", "gelu"));
    SY_ASSIGN_OR_RETURN(c.type_vocab_size, Int(j, "type_vocab_size", 2));
    c.num_kv_heads = c.num_heads;
    c.attention_bias = c.output_bias = c.mlp_bias = true;
    if (j.value("position_embedding_type", std::string("absolute")) != "absolute") {
      return FieldError("position_embedding_type", "only \"absolute\" is supported");
    }
  }
  if (c.arch == Architecture::kLlama || c.arch == Architecture::kMistral ||
      c.arch == Architecture::kQwen2) {
    SY_ASSIGN_OR_RETURN(c.num_kv_heads, Int(j, "num_key_value_heads", c.num_heads));
    SY_ASSIGN_OR_RETURN(c.norm_eps, Number(j, "rms_norm_eps", 1e-6));
    SY_ASSIGN_OR_RETURN(c.activation, ParseActivation(j, "hidden_act", "silu"));
    SY_ASSIGN_OR_RETURN(c.rope_theta, Number(rope_source, "rope_theta", 10000.0));
    SY_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(rope_source));
    SY_ASSIGN_OR_RETURN(c.tie_word_embeddings, Bool(j, "tie_word_embeddings", false));
    if (c.arch == Architecture::kQwen2) {
      c.attention_bias = true;  // Qwen2 always has q/k/v bias, never o_proj bias
    } else if (c.arch == Architecture::kLlama) {
      SY_ASSIGN_OR_RETURN(c.attention_bias, Bool(j, "attention_bias", false));
      c.output_bias = c.attention_bias;
      SY_ASSIGN_OR_RETURN(c.mlp_bias, Bool(j, "mlp_bias", false));
    }
    bool sliding = c.arch == Architecture::kMistral;
    if (c.arch == Architecture::kQwen2) {
      SY_ASSIGN_OR_RETURN(sliding, Bool(j, "use_sliding_window", false));
    }
    if (sliding) {
      auto sw = j.find("sliding_window");
      if (sw != j.end() && !sw->is_null()) {
        if (!sw->is_number_integer() || sw->get<int64_t>() <= 0) {
          return FieldError("sliding_window", "must be a positive integer or null");
        }
        c.sliding_window = sw->get<int64_t>();
      }
    }
  }
  if (c.arch == Architecture::kGpt2 || c.arch == Architecture::kBert) {
    c.head_dim = c.num_heads > 0 ? c.hidden_size / c.num_heads : 0;
  } else {
    SY_ASSIGN_OR_RETURN(c.head_dim,
                        Int(j, "head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0));
  }

  SY_RETURN_IF_ERROR(CheckPositive("vocab_size", c.vocab_size));
  SY_RETURN_IF_ERROR(CheckPositive("hidden_size", c.hidden_size));
  SY_RETURN_IF_ERROR(CheckPositive("num_hidden_layers", c.num_layers));
  SY_RETURN_IF_ERROR(CheckPositive("num_attention_heads", c.num_heads));
  SY_RETURN_IF_ERROR(CheckPositive("num_key_value_heads", c.num_kv_heads));
  SY_RETURN_IF_ERROR(CheckPositive("intermediate_size", c.intermediate_size));
  SY_RETURN_IF_ERROR(CheckPositive("max_position_embeddings", c.max_position_embeddings));
  if ((c.arch == Architecture::kGpt2 || c.arch == Architecture::kBert || !j.contains("head_dim")) &&
      c.hidden_size % c.num_heads != 0) {
    return FieldError(
        "num_attention_heads",
        absl::StrCat("(", c.num_heads, ") must divide \"hidden_size\" (", c.hidden_size, ")"));
  }
  SY_RETURN_IF_ERROR(CheckPositive("head_dim", c.head_dim));
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError("num_key_value_heads",
                      absl::StrCat("(", c.num_kv_heads, ") must divide \"num_attention_heads\" (",
                                   c.num_heads, ")"));
  }
  if (c.is_decoder() && c.arch != Architecture::kGpt2 && c.head_dim % 2 != 0) {
    return FieldError("head_dim",
                      absl::StrCat("must be even for rotary embeddings, got ", c.head_dim));
  }

  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer()) {
    c.bos_token_id = it->get<int64_t>();
  }
  if (auto it = j.find("pad_token_id"); it != j.end() && it->is_number_integer()) {
    c.pad_token_id = it->get<int64_t>();
  }
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) {
      c.eos_token_ids.push_back(it->get<int64_t>());
    } else if (it->is_array()) {
      for (const json& e : *it) {
        if (!e.is_number_integer()) return FieldError("eos_token_id", "must hold integers");
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    }
  }
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      c.torch_dtype = it->get<std::string>();
      break;
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text);
  if (!config.ok()) {
    return absl::Status(config.status().code(),
                        absl::StrCat(model_dir, "/", config.status().message()));
  }
  return config;
}

nlohmann::ordered_json ModelConfigToJson(const ModelConfig& c) {
  nlohmann::ordered_json j;
  auto eos = [&]() -> nlohmann::ordered_json {
    if (c.eos_token_ids.empty()) return nullptr;
    if (c.eos_token_ids.size() == 1) return c.eos_token_ids[0];
    return c.eos_token_ids;
  };
  auto opt = [](const std::optional<int64_t>& v) -> nlohmann::ordered_json {
    if (v.has_value()) return *v;
    return nullptr;
  };
  switch (c.arch) {
    case Architecture::kGpt2:
      j["architectures"] = {"GPT2LMHeadModel"};
      j["model_type"] = "gpt2";
      j["vocab_size"] = c.vocab_size;
      j["n_embd"] = c.hidden_size;
      j["n_layer"] = c.num_layers;
      j["n_head"] = c.num_heads;
      j["n_inner"] = c.intermediate_size;
      j["n_positions"] = c.max_position_embeddings;
      j["n_ctx"] = c.max_position_embeddings;
      j["layer_norm_epsilon"] = c.norm_eps;
      j["activation_function"] = ActivationName(c.activation, c.arch);
      j["initializer_range"] = 0.02;
      j["resid_pdrop"] = 0.1;
      j["embd_pdrop"] = 0.1;
      j["attn_pdrop"] = 0.1;
      j["scale_attn_weights"] = true;
      j["tie_word_embeddings"] = c.tie_word_embeddings;
      break;
    case Architecture::kBert:
      j["architectures"] = {"BertModel"};
      j["model_type"] = "bert";
      j["vocab_size"] = c.vocab_size;
      j["hidden_size"] = c.hidden_size;
      j["num_hidden_layers"] = c.num_layers;
      j["num_attention_heads"] = c.num_heads;
      j["intermediate_size"] = c.intermediate_size;
      j["hidden_act"] = ActivationName(c.activation, c.arch);
      j["max_position_embeddings"] = c.max_position_embeddings;
      j["type_vocab_size"] = c.type_vocab_size;
      j["layer_norm_eps"] = c.norm_eps;
      j["initializer_range"] = 0.02;
      j["hidden_dropout_prob"] = 0.1;
      j["attention_probs_dropout_prob"] = 0.1;
      j["position_embedding_type"] = "absolute";
      break;
    default: {
      static const char* kArchitectures[] = {"", "LlamaForCausalLM", "MistralForCausalLM",
                                             "Qwen2ForCausalLM"};
      j["architectures"] = {kArchitectures[static_cast<int>(c.arch)]};
      j["model_type"] = std::string(ArchitectureName(c.arch));
      j["vocab_size"] = c.vocab_size;
      j["hidden_size"] = c.hidden_size;
      j["intermediate_size"] = c.intermediate_size;
      j["num_hidden_layers"] = c.num_layers;
      j["num_attention_heads"] = c.num_heads;
      j["num_key_value_heads"] = c.num_kv_heads;
      j["head_dim"] = c.head_dim;
      j["hidden_act"] = ActivationName(c.activation, c.arch);
      j["max_position_embeddings"] = c.max_position_embeddings;
      j["rms_norm_eps"] = c.norm_eps;
      j["rope_theta"] = c.rope_theta;
      if (c.rope_scaling.type == RopeScaling::Type::kNone) {
        j["rope_scaling"] = nullptr;
      } else if (c.rope_scaling.type == RopeScaling::Type::kLinear) {
        j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling.factor}};
      } else {
        j["rope_scaling"] = {
            {"rope_type", "llama3"},
            {"factor", c.rope_scaling.factor},
            {"low_freq_factor", c.rope_scaling.low_freq_factor},
            {"high_freq_factor", c.rope_scaling.high_freq_factor},
            {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
      }
      if (c.arch == Architecture::kLlama) {
        j["attention_bias"] = c.attention_bias;
        j["mlp_bias"] = c.mlp_bias;
      }
      if (c.arch == Architecture::kMistral) j["sliding_window"] = opt(c.sliding_window);
      if (c.arch == Architecture::kQwen2) {
        j["use_sliding_window"] = c.sliding_window.has_value();
        j["sliding_window"] = opt(c.sliding_window);
      }
      j["initializer_range"] = 0.02;
      j["attention_dropout"] = 0.0;
      j["tie_word_embeddings"] = c.tie_word_embeddings;
      j["use_cache"] = true;
      break;
    }
  }
  j["bos_token_id"] = opt(c.bos_token_id);
  j["eos_token_id"] = eos();
  if (c.pad_token_id.has_value()) j["pad_token_id"] = *c.pad_token_id;
  j["torch_dtype"] = c.torch_dtype;
  j["transformers_version"] = "4.46.0";
  return j;
}

}  // namespace switchyard::model
