#include "services/training/model_dir.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/model/config.h"
#include "shared/model/decoder.h"
#include "shared/model/encoder.h"
#include "shared/model/lora.h"
#include "shared/model/runtime.h"
#include "shared/tensors/safetensors.h"
#include "shared/text/model_text.h"

namespace switchyard::training {

namespace fs = std::filesystem;

// A directory that does not load is the caller's mistake: INVALID_ARGUMENT
// with the loader's message (which names the file or tensor).
absl::Status LoadError(const std::string& dir, const absl::Status& s) {
  if (absl::StrContains(s.message(), dir)) return absl::InvalidArgumentError(s.message());
  return absl::InvalidArgumentError(absl::StrCat(dir, ": ", s.message()));
}

absl::StatusOr<std::vector<fs::directory_entry>> ListDir(const std::string& dir) {
  try {
    return std::vector<fs::directory_entry>(fs::directory_iterator(dir), fs::directory_iterator());
  } catch (const fs::filesystem_error& e) {
    return absl::InternalError(absl::StrCat("list ", dir, ": ", e.code().message()));
  }
}

namespace {

// sentence-transformers module directories: "1_Pooling", "2_Dense", ...
bool IsModuleDir(const std::string& name) {
  size_t digits = 0;
  while (digits < name.size() && std::isdigit(static_cast<unsigned char>(name[digits]))) ++digits;
  return digits > 0 && digits + 1 < name.size() && name[digits] == '_';
}

}  // namespace

// Copies the regular files of `src` (symlinks followed, as in a Hugging Face
// cache snapshot) and, at the top, its module directories; fsyncs each.
absl::Status CopyModelFiles(const std::string& src, const std::string& dst, bool top) {
  SY_RETURN_IF_ERROR(MakeDirs(dst));
  SY_ASSIGN_OR_RETURN(std::vector<fs::directory_entry> entries, ListDir(src));
  for (const fs::directory_entry& e : entries) {
    const std::string name = e.path().filename().string();
    const std::string to = absl::StrCat(dst, "/", name);
    std::error_code ec;
    if (e.is_regular_file(ec)) {
      fs::copy_file(e.path(), to, ec);
      if (ec) {
        return absl::InternalError(
            absl::StrCat("copy ", e.path().string(), " to ", to, ": ", ec.message()));
      }
      SY_RETURN_IF_ERROR(FsyncPath(to));
    } else if (top && e.is_directory(ec) && IsModuleDir(name)) {
      SY_RETURN_IF_ERROR(CopyModelFiles(e.path().string(), to, false));
    }
  }
  return FsyncPath(dst);
}

namespace {

// Non-parameter buffers older checkpoints carry (GPT-2's causal mask, rotary
// inv_freq, BERT's position ids): not counted as parameters.
bool IsBuffer(const std::string& name) {
  for (const char* suffix :
       {".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "embeddings.position_ids"}) {
    if (absl::EndsWith(name, suffix)) return true;
  }
  return false;
}

// Elements of every tensor of `<dir>/<stem>.safetensors` (or its shards),
// from the headers only.
absl::StatusOr<int64_t> CountElements(const std::string& dir, std::string_view stem) {
  SY_ASSIGN_OR_RETURN(tensors::Checkpoint checkpoint, tensors::Checkpoint::Open(dir, stem));
  int64_t total = 0;
  for (const std::string& name : checkpoint.names()) {
    if (IsBuffer(name)) continue;
    SY_ASSIGN_OR_RETURN(tensors::Checkpoint::Entry entry, checkpoint.Find(name));
    total += entry.info->NumElements();
  }
  return total;
}

}  // namespace

// A Hugging Face checkpoint directory described as a base. Loads it in the
// stored dtype (memory-mapped, no copy) to check every tensor, then the
// tokenizer: required for a base, checked when present otherwise.
absl::StatusOr<ModelRecord> InspectCheckpoint(const std::string& dir, bool require_tokenizer) {
  std::error_code ec;
  if (!fs::is_regular_file(dir + "/config.json", ec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": no config.json (expected a Hugging Face checkpoint or a PEFT adapter directory)"));
  }
  absl::StatusOr<model::ModelConfig> config = model::LoadModelConfig(dir);
  if (!config.ok()) return LoadError(dir, config.status());
  absl::StatusOr<at::ScalarType> dtype = model::ParseDtype(config->torch_dtype);
  if (!dtype.ok()) return LoadError(dir, dtype.status());
  model::LoadOptions options;
  options.dtype = *dtype;
  options.device = at::kCPU;
  absl::Status loaded = model::TorchCall("load", [&]() -> absl::Status {
    if (config->is_decoder()) return model::CausalLm::Load(dir, options).status();
    return model::BertEncoder::Load(dir, options).status();
  });
  if (!loaded.ok()) return LoadError(dir, loaded);

  ModelRecord r;
  const bool has_tokenizer = fs::exists(dir + "/tokenizer.json", ec);
  if (require_tokenizer && !has_tokenizer) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": no tokenizer.json (a base model needs its tokenizer)"));
  }
  if (has_tokenizer) {
    absl::StatusOr<text::ModelText> text = text::LoadModelText(dir);
    if (!text.ok()) return LoadError(dir, text.status());
    r.has_chat_template = text->chat_template != nullptr;
  }
  absl::StatusOr<int64_t> count = CountElements(dir, "model");
  if (!count.ok()) return LoadError(dir, count.status());

  // config.json's own architectures[0]; the canonical class when absent.
  absl::StatusOr<std::string> json_text = ReadFile(dir + "/config.json");
  nlohmann::json json =
      json_text.ok() ? nlohmann::json::parse(*json_text, nullptr, false) : nlohmann::json();
  if (json.is_object() && json.contains("architectures") && json["architectures"].is_array() &&
      !json["architectures"].empty() && json["architectures"][0].is_string()) {
    r.architecture = json["architectures"][0].get<std::string>();
  } else {
    r.architecture = model::ModelConfigToJson(*config)["architectures"][0].get<std::string>();
  }
  r.kind = ModelKind::kBase;
  r.path = dir;
  r.parameter_count = *count;
  r.size_bytes = DirectoryBytes(dir);
  r.context_length = config->max_position_embeddings;
  r.vocab_size = config->vocab_size;
  r.dtype = std::string(model::DtypeName(*dtype));
  return r;
}

// A PEFT directory; the model-wide fields come from `base` when given.
absl::StatusOr<ModelRecord> InspectAdapter(const std::string& dir, const ModelRecord* base) {
  absl::StatusOr<std::string> text = ReadFile(dir + "/adapter_config.json");
  if (!text.ok()) return LoadError(dir, text.status());
  absl::StatusOr<model::LoraConfig> config = model::ParseAdapterConfig(*text);
  if (!config.ok()) return LoadError(dir, config.status());
  absl::StatusOr<int64_t> count = CountElements(dir, "adapter_model");
  if (!count.ok()) return LoadError(dir, count.status());

  ModelRecord r;
  r.kind = ModelKind::kAdapter;
  r.path = dir;
  r.adapter_parameter_count = *count;
  r.size_bytes = DirectoryBytes(dir);
  LoraSummary lora;
  lora.r = config->r;
  lora.alpha = config->alpha;
  lora.dropout = config->dropout;
  lora.target_modules = config->target_regex.empty()
                            ? config->target_modules
                            : std::vector<std::string>{config->target_regex};
  lora.layers = config->layers_to_transform;
  lora.rslora = config->use_rslora;
  r.lora = std::move(lora);
  if (base != nullptr) {
    r.base_model = base->model_id;
    r.architecture = base->architecture;
    r.parameter_count = base->parameter_count + *count;
    r.context_length = base->context_length;
    r.vocab_size = base->vocab_size;
    r.dtype = base->dtype;
    r.has_chat_template = base->has_chat_template;
  }
  return r;
}

}  // namespace switchyard::training
