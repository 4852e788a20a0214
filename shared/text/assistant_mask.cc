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

  // Locate each message's content through a second rendering in which every
  // content is a unique placeholder (private-use characters no template
  // touches), so a short reply like "a" can never be matched inside a role
  // header. Placeholder offsets map back to the real rendering by the length
  // differences before them, and the real content must be found there.
  const nlohmann::ordered_json& messages = context["messages"];
  nlohmann::ordered_json marked = full_context;
  std::vector<std::string> placeholders(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::ordered_json& m = messages[i];
    if (!m.is_object() || !m.contains("content") || !m["content"].is_string() ||
        m["content"].get_ref<const std::string&>().empty()) {
      continue;
    }
    placeholders[i] = absl::StrCat("\xEE\x80\x80", i, "\xEE\x80\x81");  // U+E000 i U+E001
    marked["messages"][i]["content"] = placeholders[i];
  }
  SY_ASSIGN_OR_RETURN(const std::string marked_text, chat_template.Render(marked));

  std::vector<std::pair<size_t, size_t>> spans;  // byte ranges of `full`
  size_t cursor = 0;
  int64_t shift = 0;  // real offset minus marked offset, so far
  for (size_t i = 0; i < messages.size(); ++i) {
    if (placeholders[i].empty()) continue;
    const nlohmann::ordered_json& m = messages[i];
    const std::string& content = m["content"].get_ref<const std::string&>();
    const size_t at = marked_text.find(placeholders[i], cursor);
    const size_t pos = at == std::string::npos
                           ? std::string::npos
                           : static_cast<size_t>(static_cast<int64_t>(at) + shift);
    if (at == std::string::npos || full.compare(pos, content.size(), content) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("messages[", i,
                       "]: the chat template does not render this content verbatim (it "
                       "rewrites it or branches on it), so its tokens cannot be located"));
    }
    cursor = at + placeholders[i].size();
    shift += static_cast<int64_t>(content.size()) - static_cast<int64_t>(placeholders[i].size());
    const bool trained =
        m.contains("role") && m["role"].is_string() &&
        m["role"].get<std::string>() == "assistant" &&
        !(m.contains("weight") && m["weight"].is_number() && m["weight"].get<double>() == 0);
    if (!trained) continue;
    size_t end = pos + content.size();
    for (const AddedToken& t : tokenizer.added_tokens()) {
      if (t.special && !t.content.empty() && full.compare(end, t.content.size(), t.content) == 0) {
        end += t.content.size();
        break;
      }
    }
    spans.emplace_back(pos, end);
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
