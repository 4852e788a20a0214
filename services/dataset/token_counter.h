// TokenCounter: how many tokens one example costs with a given base model,
// for token statistics, tokens per epoch and the --max-seq-len check.
#ifndef SWITCHYARD_SERVICES_DATASET_TOKEN_COUNTER_H_
#define SWITCHYARD_SERVICES_DATASET_TOKEN_COUNTER_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {
class ChatTemplate;
class Tokenizer;
}  // namespace switchyard::text

namespace switchyard::dataset {

// One text of an example: a message's content (role "system", "user",
// "assistant", "tool") or a completion field ("user" for prompts, "assistant"
// for answers).
struct ExampleText {
  std::string role;
  absl::string_view content;
};

// Implementations are thread-safe.
class TokenCounter {
 public:
  virtual ~TokenCounter() = default;
  virtual absl::StatusOr<int64_t> Count(const std::vector<ExampleText>& texts) const = 0;
};

// Counts with a model's tokenizer. With the model's chat template, a chat
// example costs the tokens of its rendering (role headers and separators
// included), as training sees it; otherwise, and for completion and
// preference data, the tokens of its texts encoded without special tokens.
class TokenizerTokenCounter : public TokenCounter {
 public:
  // `chat_template` may be null; `template_variables` (bos_token, ...) are
  // passed to it. Neither pointer is owned.
  explicit TokenizerTokenCounter(const text::Tokenizer* tokenizer,
                                 const text::ChatTemplate* chat_template = nullptr,
                                 nlohmann::ordered_json template_variables = {})
      : tokenizer_(tokenizer),
        chat_template_(chat_template),
        variables_(std::move(template_variables)) {}
  absl::StatusOr<int64_t> Count(const std::vector<ExampleText>& texts) const override;

 private:
  const text::Tokenizer* tokenizer_;
  const text::ChatTemplate* chat_template_;
  nlohmann::ordered_json variables_;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_TOKEN_COUNTER_H_
