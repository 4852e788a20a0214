// A model's text side, loaded from a Hugging Face checkpoint directory (or from
// its tokenizer.json / tokenizer_config.json): the tokenizer, the chat
// template, and the variables templates expect (bos_token, eos_token, ...).
#ifndef SWITCHYARD_SHARED_TEXT_MODEL_TEXT_H_
#define SWITCHYARD_SHARED_TEXT_MODEL_TEXT_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shared/text/chat_template.h"
#include "shared/text/tokenizer.h"

namespace switchyard::text {

struct ModelText {
  std::unique_ptr<Tokenizer> tokenizer;         // null unless asked for
  std::unique_ptr<ChatTemplate> chat_template;  // null when the model has none
  nlohmann::ordered_json template_variables = nlohmann::ordered_json::object();
};

struct ModelTextOptions {
  bool tokenizer = true;          // load tokenizer.json (required)
  bool chat_template = true;      // load tokenizer_config.json's chat_template if any
  bool require_template = false;  // a missing chat_template is an error
  std::string template_name = "default";
};

// `path` is a model directory, its tokenizer.json or its tokenizer_config.json.
absl::StatusOr<ModelText> LoadModelText(const std::string& path,
                                        const ModelTextOptions& options = {});

// The token ids of a conversation rendered with the chat template for
// generation: the template's own special tokens, then the generation prompt
// (add_generation_prompt), or, with continue_final_message, cut right after
// the last message's content so generation continues it.
// FAILED_PRECONDITION when the model has no chat template.
absl::StatusOr<std::vector<int32_t>> EncodeChatPrompt(const ModelText& text,
                                                      const nlohmann::ordered_json& messages,
                                                      bool continue_final_message = false);

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_MODEL_TEXT_H_
