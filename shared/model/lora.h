// LoRA adapters in the PEFT layout.
//
// An adapter is a LoraConfig (adapter_config.json, PEFT's field names) plus,
// for each adapted linear module, A [r, in] and B [out, r]; the module's
// output gains scale * B(A(dropout(x))), scale = alpha / r, or alpha / sqrt(r)
// with rsLoRA. On disk: `adapter_config.json` and `adapter_model.safetensors`
// with keys `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`.
// Plain value types; thread-compatible.

#ifndef SWITCHYARD_SHARED_MODEL_LORA_H_
#define SWITCHYARD_SHARED_MODEL_LORA_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace switchyard::model {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 8;    // lora_alpha
  double dropout = 0;  // lora_dropout, applied to the adapter's input in training
  // Module names matched as PEFT does: a module path equal to an entry or
  // ending in "." + entry. When adapter_config.json gives a string instead of
  // a list, it is a regular expression that must match the whole path.
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  std::string target_regex;
  std::vector<int64_t> layers_to_transform;  // empty: every layer
  bool use_rslora = false;
  bool fan_in_fan_out = false;  // true for GPT-2's Conv1D modules
  std::string base_model_name_or_path;
  std::string task_type = "CAUSAL_LM";

  double Scale() const;
  // Whether the module at `path` (layer index `layer`, if inside a layer) is adapted.
  bool Targets(absl::string_view path, std::optional<int64_t> layer) const;
};

// Parses adapter_config.json. Errors name the field; adapters PEFT can save
// but Switchyard cannot run (DoRA, rank/alpha patterns, non-LORA peft_type,
// LoRA bias, modules_to_save) are errors that say so.
absl::StatusOr<LoraConfig> ParseAdapterConfig(absl::string_view json_text);
nlohmann::ordered_json AdapterConfigToJson(const LoraConfig& config);

struct LoraWeights {
  at::Tensor a;  // (r, in)
  at::Tensor b;  // (out, r)
};

struct LoraAdapter {
  LoraConfig config;
  std::map<std::string, LoraWeights> modules;  // module path -> weights
};

// Reads a PEFT adapter directory. Tensors keep their stored values and are
// converted to `dtype` on `device`. Errors name the file and key.
absl::StatusOr<LoraAdapter> LoadPeftAdapter(const std::string& dir, at::ScalarType dtype,
                                            at::Device device);
// Writes adapter_config.json and adapter_model.safetensors (metadata
// {"format": "pt"}) into `dir`, atomically per file; A and B are stored in
// `dtype` (the base model's dtype, as PEFT saves them).
absl::Status SavePeftAdapter(const LoraAdapter& adapter, const std::string& dir,
                             at::ScalarType dtype);

}  // namespace switchyard::model

#endif  // SWITCHYARD_SHARED_MODEL_LORA_H_
