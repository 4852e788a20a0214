// Preference pairs as DPO sees them: the prompt followed by the chosen and by
// the rejected completion, each tokenized as supervised training would
// (services/training/sft_data.h), with the loss covering the completion only.
//
// Both dataset layouts are read:
//   * {"input": {"messages": [...], "tools": [...]}, "preferred_output": [...],
//      "non_preferred_output": [...]} (hosted fine-tuning APIs);
//   * {"prompt": P, "chosen": C, "rejected": R} (TRL), where each part is a
//     string or a list of messages and "prompt" may be absent: then the
//     prompt is the messages chosen and rejected share at their start (TRL's
//     implicit prompt), or nothing for strings.
// Chat parts are rendered with the model's chat template (assistant messages
// of the prompt get "weight": 0 so only the completion is trained); when
// every part is a string the pair is prompt/completion text: [BOS] + prompt +
// completion + EOS.
#ifndef SWITCHYARD_SERVICES_TRAINING_PREFERENCE_DATA_H_
#define SWITCHYARD_SERVICES_TRAINING_PREFERENCE_DATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/sft_data.h"

namespace switchyard::training {

struct PreferenceExample {
  SftExample chosen;    // prompt + chosen completion; trained on the completion
  SftExample rejected;  // prompt + rejected completion
  int64_t line = 0;     // 1-based line in its file
};

struct PreferenceData : TokenizeReport {
  std::vector<PreferenceExample> examples;
};

// One parsed JSONL line. INVALID_ARGUMENT naming the field.
absl::StatusOr<PreferenceExample> TokenizePreferenceExample(const nlohmann::ordered_json& line,
                                                            const text::ModelText& text);

// Every line of a preference JSONL file; problems with lines land in the
// report's errors (naming line and field), a pair longer than max_seq_length
// is an error, a pair whose completions are empty a warning (skipped).
absl::StatusOr<PreferenceData> TokenizePreferenceFile(const std::string& path,
                                                      const text::ModelText& text,
                                                      const SftTokenizeOptions& options);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_PREFERENCE_DATA_H_
