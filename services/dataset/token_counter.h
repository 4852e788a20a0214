// TokenCounter: how many tokens one example costs with a given base model,
// for token statistics, tokens per epoch and the --max-seq-len check.
#ifndef SWITCHYARD_SERVICES_DATASET_TOKEN_COUNTER_H_
#define SWITCHYARD_SERVICES_DATASET_TOKEN_COUNTER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {
class Tokenizer;
}

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

// Counts with a model's tokenizer.json: the tokens of every text, encoded
// without special tokens. The chat template's own tokens (role headers,
// separators) are not included yet.
class TokenizerTokenCounter : public TokenCounter {
 public:
  explicit TokenizerTokenCounter(const text::Tokenizer* tokenizer) : tokenizer_(tokenizer) {}
  absl::StatusOr<int64_t> Count(const std::vector<ExampleText>& texts) const override;

 private:
  const text::Tokenizer* tokenizer_;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_TOKEN_COUNTER_H_
