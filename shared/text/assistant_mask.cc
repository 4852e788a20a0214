#include "shared/text/assistant_mask.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"

namespace switchyard::text {

absl::StatusOr<MaskedConversation> RenderForTraining(const ChatTemplate& chat_template,
                                                     const Tokenizer& tokenizer,
                                                     const nlohmann::ordered_json& context) {
  if (!context.contains("messages") || !context["messages"].is_array()) {
    return absl::InvalidArgumentError("messages: expected an array of messages");
  }
  nlohmann::ordered_json full_context = context;
  full_context["add_generation_prompt"] = false;
  SY_ASSIGN_OR_RETURN(const std::string full, chat_template.Render(full_context));
  SY_ASSIGN_OR_RETURN(std::vector<int32_t> full_ids, tokenizer.Encode(full, false));

  // Find every message's content in the rendering, in order; a trained
  // assistant turn's span is its content plus the special token that closes
  // it (<|im_end|>, <|eot_id|>, </s>, ...).
  std::vector<std::pair<size_t, size_t>> spans;  // byte ranges of `full`
  size_t cursor = 0;
  const nlohmann::ordered_json& messages = context["messages"];
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::ordered_json& m = messages[i];
    if (!m.is_object() || !m.contains("content") || !m["content"].is_string()) continue;
    const std::string& content = m["content"].get_ref<const std::string&>();
    if (content.empty()) continue;
    const size_t pos = full.find(content, cursor);
    if (pos == std::string::npos) {
      return absl::FailedPreconditionError(
          absl::StrCat("messages[", i,
                       "]: its content does not appear verbatim in the chat template's "
                       "rendering (the template rewrites it), so its tokens cannot be located"));
    }
    cursor = pos + content.size();
    const bool trained =
        m.contains("role") && m["role"].is_string() &&
        m["role"].get<std::string>() == "assistant" &&
        !(m.contains("weight") && m["weight"].is_number() && m["weight"].get<double>() == 0);
    if (!trained) continue;
    size_t end = cursor;
    for (const AddedToken& t : tokenizer.added_tokens()) {
      if (t.special && !t.content.empty() && full.compare(end, t.content.size(), t.content) == 0) {
        end += t.content.size();
        break;
      }
    }
    spans.emplace_back(pos, end);
    cursor = end;
  }

  // Tokenize piece by piece at the span edges; the pieces must tokenize as the
  // whole does, or the edges would split tokens.
  MaskedConversation out;
  size_t at = 0;
  auto append = [&](size_t from, size_t to, uint8_t trained) -> absl::Status {
    if (to <= from) return absl::OkStatus();
    SY_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                        tokenizer.Encode(absl::string_view(full).substr(from, to - from), false));
    out.ids.insert(out.ids.end(), ids.begin(), ids.end());
    out.assistant_mask.insert(out.assistant_mask.end(), ids.size(), trained);
    return absl::OkStatus();
  };
  for (const auto& [start, end] : spans) {
    SY_RETURN_IF_ERROR(append(at, start, 0));
    SY_RETURN_IF_ERROR(append(start, end, 1));
    at = end;
  }
  SY_RETURN_IF_ERROR(append(at, full.size(), 0));
  if (out.ids != full_ids) {
    return absl::FailedPreconditionError(
        "tokens merge across the start or end of an assistant turn, so its tokens cannot be "
        "separated from its neighbours");
  }
  return out;
}

}  // namespace switchyard::text
