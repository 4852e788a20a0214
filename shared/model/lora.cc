#include "shared/model/lora.h"

#include <cmath>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"
#include "shared/tensors/safetensors.h"
#include "shared/tensors/torch_tensors.h"

namespace switchyard::model {
namespace {

using json = nlohmann::json;

constexpr absl::string_view kKeyPrefix = "base_model.model.";
constexpr absl::string_view kASuffix = ".lora_A.weight";
constexpr absl::string_view kBSuffix = ".lora_B.weight";

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("adapter_config.json: \"", field, "\" ", problem));
}

bool IsNullOrEmpty(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return true;
  if (it->is_boolean()) return !it->get<bool>();
  return (it->is_object() || it->is_array() || it->is_string()) && it->empty();
}

}  // namespace

double LoraConfig::Scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

bool LoraConfig::Targets(absl::string_view path, std::optional<int64_t> layer) const {
  if (!layers_to_transform.empty()) {
    if (!layer.has_value()) return false;
    if (std::find(layers_to_transform.begin(), layers_to_transform.end(), *layer) ==
        layers_to_transform.end()) {
      return false;
    }
  }
  if (!target_regex.empty()) {
    return std::regex_match(std::string(path), std::regex(target_regex));
  }
  for (const std::string& t : target_modules) {
    if (t == "all-linear") return !absl::EndsWith(path, "lm_head");
    if (path == t || absl::EndsWith(path, absl::StrCat(".", t))) return true;
  }
  return false;
}

absl::StatusOr<LoraConfig> ParseAdapterConfig(absl::string_view json_text) {
  json j = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("adapter_config.json is not a JSON object");
  }
  LoraConfig c;
  if (j.value("peft_type", std::string("LORA")) != "LORA") {
    return FieldError("peft_type", absl::StrCat("is \"", j["peft_type"].dump(),
                                                "\"; only LORA adapters are supported"));
  }
  auto num = [&](const char* key, double fallback) -> absl::StatusOr<double> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_number())
      return FieldError(key, absl::StrCat("must be a number, got ", it->dump()));
    return it->get<double>();
  };
  SY_ASSIGN_OR_RETURN(double r, num("r", 8));
  if (r < 1 || r != std::floor(r)) return FieldError("r", "must be a positive integer");
  c.r = static_cast<int64_t>(r);
  SY_ASSIGN_OR_RETURN(c.alpha, num("lora_alpha", 8));
  SY_ASSIGN_OR_RETURN(c.dropout, num("lora_dropout", 0));
  if (c.dropout < 0 || c.dropout >= 1) return FieldError("lora_dropout", "must be in [0, 1)");
  c.use_rslora = j.value("use_rslora", false);
  c.fan_in_fan_out = j.value("fan_in_fan_out", false);
  if (auto it = j.find("base_model_name_or_path"); it != j.end() && it->is_string()) {
    c.base_model_name_or_path = it->get<std::string>();
  }
  if (auto it = j.find("task_type"); it != j.end() && it->is_string()) {
    c.task_type = it->get<std::string>();
  }
  auto targets = j.find("target_modules");
  if (targets == j.end() || targets->is_null()) {
    return FieldError("target_modules", "is required");
  } else if (targets->is_string()) {
    const std::string t = targets->get<std::string>();
    if (t == "all-linear") {
      c.target_modules = {t};
    } else {
      c.target_modules.clear();
      c.target_regex = t;
      try {
        std::regex check(t);
      } catch (const std::regex_error& e) {
        return FieldError("target_modules",
                          absl::StrCat("is not a valid regular expression: ", e.what()));
      }
    }
  } else if (targets->is_array()) {
    c.target_modules.clear();
    for (const json& t : *targets) {
      if (!t.is_string()) return FieldError("target_modules", "must hold strings");
      c.target_modules.push_back(t.get<std::string>());
    }
    if (c.target_modules.empty()) return FieldError("target_modules", "is empty");
  } else {
    return FieldError("target_modules", "must be a list of module names or a regex string");
  }
  if (auto it = j.find("layers_to_transform"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.layers_to_transform.push_back(it->get<int64_t>());
    } else if (it->is_array()) {
      for (const json& l : *it) {
        if (!l.is_number_integer()) return FieldError("layers_to_transform", "must hold integers");
        c.layers_to_transform.push_back(l.get<int64_t>());
      }
    } else {
      return FieldError("layers_to_transform", "must be an integer or a list of integers");
    }
  }
  for (const char* unsupported : {"use_dora", "rank_pattern", "alpha_pattern", "modules_to_save",
                                  "lora_bias", "trainable_token_indices"}) {
    if (!IsNullOrEmpty(j, unsupported)) {
      return FieldError(unsupported, "is set; Switchyard runs plain LoRA adapters only");
    }
  }
  if (j.value("bias", std::string("none")) != "none") {
    return FieldError("bias", "must be \"none\"; trained biases are not supported");
  }
  return c;
}

nlohmann::ordered_json AdapterConfigToJson(const LoraConfig& c) {
  nlohmann::ordered_json j;
  j["peft_type"] = "LORA";
  j["task_type"] = c.task_type;
  j["base_model_name_or_path"] = c.base_model_name_or_path;
  j["revision"] = nullptr;
  j["inference_mode"] = true;
  j["r"] = c.r;
  j["lora_alpha"] = c.alpha;
  j["lora_dropout"] = c.dropout;
  if (c.target_regex.empty()) {
    j["target_modules"] = c.target_modules;
  } else {
    j["target_modules"] = c.target_regex;
  }
  j["layers_to_transform"] = nullptr;
  if (!c.layers_to_transform.empty()) j["layers_to_transform"] = c.layers_to_transform;
  j["layers_pattern"] = nullptr;
  j["exclude_modules"] = nullptr;
  j["bias"] = "none";
  j["fan_in_fan_out"] = c.fan_in_fan_out;
  j["use_rslora"] = c.use_rslora;
  j["use_dora"] = false;
  j["init_lora_weights"] = true;
  j["modules_to_save"] = nullptr;
  j["rank_pattern"] = nlohmann::ordered_json::object();
  j["alpha_pattern"] = nlohmann::ordered_json::object();
  j["lora_bias"] = false;
  j["auto_mapping"] = nullptr;
  return j;
}

absl::StatusOr<LoraAdapter> LoadPeftAdapter(const std::string& dir, at::ScalarType dtype,
                                            at::Device device) {
  LoraAdapter adapter;
  const std::string config_path = dir + "/adapter_config.json";
  SY_ASSIGN_OR_RETURN(std::string config_text, ReadFile(config_path));
  absl::StatusOr<LoraConfig> config = ParseAdapterConfig(config_text);
  if (!config.ok()) {
    return absl::Status(config.status().code(), absl::StrCat(dir, "/", config.status().message()));
  }
  adapter.config = *std::move(config);

  const std::string weights_path = dir + "/adapter_model.safetensors";
  SY_ASSIGN_OR_RETURN(std::shared_ptr<tensors::SafetensorsFile> file,
                      tensors::SafetensorsFile::Open(weights_path));
  for (const tensors::TensorInfo& info : file->header().tensors) {
    const std::string& key = info.name;
    auto bad_key = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor \"", key, "\" ", why));
    };
    if (!absl::StartsWith(key, kKeyPrefix)) {
      return bad_key(absl::StrCat("does not start with \"", kKeyPrefix, "\""));
    }
    bool is_a = absl::EndsWith(key, kASuffix);
    bool is_b = absl::EndsWith(key, kBSuffix);
    if (!is_a && !is_b) {
      return bad_key(
          "is neither a lora_A nor a lora_B weight (DoRA, embedding LoRA and "
          "modules_to_save are not supported)");
    }
    std::string path =
        key.substr(kKeyPrefix.size(), key.size() - kKeyPrefix.size() - kASuffix.size());
    // Keys saved by some trainers keep PEFT's in-memory adapter name.
    if (absl::EndsWith(path, ".default")) path.resize(path.size() - 8);
    if (info.shape.size() != 2) return bad_key("must be a matrix");
    SY_ASSIGN_OR_RETURN(at::Tensor t, tensors::LoadTensor(file, info));
    SY_ASSIGN_OR_RETURN(t, TorchCall("adapter tensor", [&] { return t.to(device, dtype); }));
    LoraWeights& w = adapter.modules[path];
    at::Tensor& slot = is_a ? w.a : w.b;
    if (slot.defined()) return bad_key("appears twice");
    slot = t;
    const int64_t r = is_a ? info.shape[0] : info.shape[1];
    if (r != adapter.config.r) {
      return bad_key(
          absl::StrCat("has rank ", r, " but adapter_config.json says r = ", adapter.config.r));
    }
  }
  for (const auto& [path, w] : adapter.modules) {
    if (!w.a.defined() || !w.b.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat(weights_path, ": module \"", path, "\" has only one of lora_A and lora_B"));
    }
  }
  if (adapter.modules.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(weights_path, " holds no LoRA weights"));
  }
  return adapter;
}

absl::Status SavePeftAdapter(const LoraAdapter& adapter, const std::string& dir,
                             at::ScalarType dtype) {
  SY_RETURN_IF_ERROR(MakeDirs(dir));
  std::vector<std::pair<std::string, at::Tensor>> named;
  SY_RETURN_IF_ERROR(TorchCall("saving adapter", [&] {
    for (const auto& [path, w] : adapter.modules) {
      named.emplace_back(absl::StrCat(kKeyPrefix, path, kASuffix), w.a.detach().to(dtype));
      named.emplace_back(absl::StrCat(kKeyPrefix, path, kBSuffix), w.b.detach().to(dtype));
    }
  }));
  SY_RETURN_IF_ERROR(
      tensors::SaveTensors(dir + "/adapter_model.safetensors", named, {{"format", "pt"}}));
  return WriteFileAtomic(dir + "/adapter_config.json",
                         AdapterConfigToJson(adapter.config).dump(2) + "\n");
}

}  // namespace switchyard::model
