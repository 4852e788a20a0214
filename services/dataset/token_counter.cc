#include "services/dataset/token_counter.h"

#include <algorithm>

#include "shared/text/chat_template.h"
#include "shared/text/tokenizer.h"

namespace switchyard::dataset {

absl::StatusOr<int64_t> TokenizerTokenCounter::Count(const std::vector<ExampleText>& texts) const {
  const bool chat =
      chat_template_ != nullptr && !texts.empty() &&
      std::all_of(texts.begin(), texts.end(), [](const ExampleText& t) { return !t.role.empty(); });
  if (chat) {
    nlohmann::ordered_json context =
        variables_.is_object() ? variables_ : nlohmann::ordered_json::object();
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    for (const ExampleText& t : texts) {
      messages.push_back({{"role", t.role}, {"content", std::string(t.content)}});
    }
    context["messages"] = std::move(messages);
    context["add_generation_prompt"] = false;
    absl::StatusOr<std::string> rendered = chat_template_->Render(context);
    if (!rendered.ok()) return rendered.status();
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(*rendered, false);
    if (!ids.ok()) return ids.status();
    return static_cast<int64_t>(ids->size());
  }
  int64_t total = 0;
  for (const ExampleText& t : texts) {
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer_->Encode(t.content, false);
    if (!ids.ok()) return ids.status();
    total += static_cast<int64_t>(ids->size());
  }
  return total;
}

}  // namespace switchyard::dataset
