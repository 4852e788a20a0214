// Supervised fine-tuning examples as the model sees them: token ids of a chat
// example rendered with the model's own chat template (or a prompt/completion
// pair), and which tokens the loss covers.
//
// Chat: the template's rendering tokenized as transformers'
// apply_chat_template does; with loss on assistant tokens, those of assistant
// messages whose "weight" is absent or 1 (text::RenderForTraining).
// Completion: [BOS if the tokenizer adds one] + prompt + completion + EOS,
// with loss on the completion and EOS (TRL's prompt-completion convention).
#ifndef SWITCHYARD_SERVICES_TRAINING_SFT_DATA_H_
#define SWITCHYARD_SERVICES_TRAINING_SFT_DATA_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/job_types.h"
#include "shared/text/model_text.h"

namespace switchyard::training {

struct SftExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;  // 1 where the next-token loss counts, per token
  int64_t line = 0;              // 1-based line in its file
};

struct SftTokenizeOptions {
  LossOn loss_on = LossOn::kAssistant;
  // Longer examples are errors ("example_too_long"); 0 = no limit.
  int64_t max_seq_length = 0;
  std::string file = "train";  // names the file in issues: "train" or "validation"
  int max_listed_errors = 20;  // errors beyond this are counted, not listed
  // Lines whose sequences train no token are skipped with a warning; off for
  // prompts that only start generation (reinforcement).
  bool require_trained = true;
};

// What reading a JSONL file of examples found besides the examples.
struct TokenizeReport {
  std::vector<Issue> errors;    // the first max_listed_errors
  int64_t error_count = 0;      // all of them
  std::vector<Issue> warnings;  // e.g. examples with no trained token (skipped)
  int64_t longest = 0;          // tokens of the longest sequence kept
};

struct SftData : TokenizeReport {
  std::vector<SftExample> examples;
};

// Turns one parsed JSONL line into the sequences it trains on (one for
// supervised data; chosen and rejected for a preference pair).
// INVALID_ARGUMENT naming the field for a line that cannot be rendered;
// FAILED_PRECONDITION when no line can be (the model has no chat template).
using LineTokenizer =
    std::function<absl::StatusOr<std::vector<SftExample>>(const nlohmann::ordered_json& line)>;

// Reads every line of `path` through `tokenize`. A line is kept (passed to
// `keep` with its 1-based line number) when every sequence fits
// max_seq_length and has a trained token; too long is an error naming the
// line, nothing trained a warning (the line is skipped). The status is an
// error only when the file cannot be read or `tokenize` says
// FAILED_PRECONDITION.
absl::Status TokenizeJsonlFile(const std::string& path, const SftTokenizeOptions& options,
                               const LineTokenizer& tokenize,
                               const std::function<void(int64_t, std::vector<SftExample>)>& keep,
                               TokenizeReport* report);

// Tokenizes every line of a chat or prompt/completion JSONL file. Problems
// with lines land in SftData::errors (naming line and field); the status is
// an error only when the file cannot be read or the model cannot render chat
// (no chat_template: FAILED_PRECONDITION).
absl::StatusOr<SftData> TokenizeSftFile(const std::string& path, const text::ModelText& text,
                                        const SftTokenizeOptions& options);

// One example (a parsed JSONL line). INVALID_ARGUMENT naming the field.
absl::StatusOr<SftExample> TokenizeSftExample(const nlohmann::ordered_json& line,
                                              const text::ModelText& text, LossOn loss_on);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_SFT_DATA_H_
