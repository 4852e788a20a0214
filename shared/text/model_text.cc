#include "shared/text/model_text.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard::text {
namespace {

namespace fs = std::filesystem;

std::string DirOf(const std::string& path) {
  if (fs::is_directory(path)) return path;
  std::string dir = fs::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

absl::StatusOr<ModelText> LoadModelText(const std::string& path, const ModelTextOptions& options) {
  ModelText out;
  const std::string dir = DirOf(path);
  if (options.tokenizer) {
    const std::string file =
        absl::EndsWith(path, "tokenizer.json") ? path : dir + "/tokenizer.json";
    SY_ASSIGN_OR_RETURN(out.tokenizer, Tokenizer::FromFile(file));
  }
  if (!options.chat_template) return out;
  const std::string config_path =
      absl::EndsWith(path, "tokenizer_config.json") ? path : dir + "/tokenizer_config.json";
  if (!fs::exists(config_path)) {
    if (options.require_template) {
      return absl::NotFoundError(absl::StrCat(config_path, " not found: no chat template"));
    }
    return out;
  }
  SY_ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
  nlohmann::json config = nlohmann::json::parse(text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
  }
  // Special tokens are strings or {"content": ...} objects.
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
    auto it = config.find(key);
    if (it == config.end()) continue;
    if (it->is_string()) {
      out.template_variables[key] = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
      out.template_variables[key] = (*it)["content"].get<std::string>();
    }
  }
  absl::StatusOr<std::string> source = ChatTemplateFromConfig(config, options.template_name);
  if (!source.ok()) {
    if (options.require_template || !absl::IsNotFound(source.status())) {
      return absl::Status(source.status().code(),
                          absl::StrCat(config_path, ": ", source.status().message()));
    }
    return out;
  }
  absl::StatusOr<std::unique_ptr<ChatTemplate>> parsed = ChatTemplate::Parse(*source);
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(config_path, ": chat_template: ", parsed.status().message()));
  }
  out.chat_template = std::move(*parsed);
  return out;
}

absl::StatusOr<std::vector<int32_t>> EncodeChatPrompt(const ModelText& text,
                                                      const nlohmann::ordered_json& messages,
                                                      bool continue_final_message) {
  if (text.chat_template == nullptr) {
    return absl::FailedPreconditionError(
        "the model has no chat template (tokenizer_config.json chat_template)");
  }
  nlohmann::ordered_json context = text.template_variables;
  context["messages"] = messages;
  context["add_generation_prompt"] = !continue_final_message;
  SY_ASSIGN_OR_RETURN(std::string rendered, text.chat_template->Render(context));
  if (continue_final_message && !messages.empty()) {
    // Cut the rendering after the last message's content, so generation
    // continues it rather than starting a new turn.
    const std::string content = messages.back().value("content", "");
    const size_t at = rendered.rfind(content);
    if (!content.empty() && at != std::string::npos) rendered.resize(at + content.size());
  }
  // The template writes the special tokens itself.
  return text.tokenizer->Encode(rendered, false);
}

}  // namespace switchyard::text
