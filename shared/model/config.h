// Model configuration read from a Hugging Face `config.json`.
//
// One struct describes every architecture Switchyard runs: the decoder family
// (GPT-2, Llama, Mistral, Qwen2) and the BERT encoder. Fields keep Hugging
// Face's meaning; ParseModelConfig fills the defaults transformers would use
// for fields a config leaves out. No LibTorch here, so the CLI and tests can
// read configs without it. Plain value type; thread-compatible.

#ifndef SWITCHYARD_SHARED_MODEL_CONFIG_H_
#define SWITCHYARD_SHARED_MODEL_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace switchyard::model {

enum class Architecture { kGpt2, kLlama, kMistral, kQwen2, kBert };

// "gpt2", "llama", ... (the config's model_type).
absl::string_view ArchitectureName(Architecture arch);
absl::StatusOr<Architecture> ParseArchitectureName(absl::string_view name);

enum class Activation { kSilu, kGeluTanh, kGeluExact, kRelu };

// `rope_scaling` from config.json. kNone when absent or null.
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;                     // llama3
  double high_freq_factor = 4.0;                    // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;       // == num_heads without GQA
  int64_t head_dim = 0;           // hidden_size / num_heads unless given
  int64_t intermediate_size = 0;  // MLP width
  int64_t max_position_embeddings = 0;
  double norm_eps = 1e-6;  // rms_norm_eps, layer_norm_epsilon or layer_norm_eps
  Activation activation = Activation::kSilu;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // bias on q/k/v (and o for Llama's attention_bias)
  bool output_bias = false;     // bias on o_proj (Llama attention_bias only)
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;  // Mistral; absent means full attention
  int64_t type_vocab_size = 0;            // BERT token types
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype = "float32";  // the dtype the checkpoint was saved in

  bool is_decoder() const { return arch != Architecture::kBert; }
  // Parameters of the whole model (embeddings included, tied ones once).
  int64_t NumParameters() const;
};

// Parses config.json text. Errors name the field, e.g.
// `config.json: "num_attention_heads" (6) must divide "hidden_size" (64)`.
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

// The config.json transformers would write for `config` (field names of the
// architecture's own config class), used by `model init` and `model merge`.
nlohmann::ordered_json ModelConfigToJson(const ModelConfig& config);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_CONFIG_H_
