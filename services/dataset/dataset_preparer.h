// DatasetPreparer: the counterpart of the hosted APIs' data-preparation tool.
//
// Reads CSV, TSV, a JSON array of objects, or JSONL (prompt/completion, chat or
// preference) and writes JSONL in a chosen format, with optional fixes and a
// seeded train/validation split (stratified by final answer when the data looks
// like classification). It never modifies its input file; outputs are written
// atomically. Thread-compatible: one Prepare() call per instance at a time.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_PREPARER_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_PREPARER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/dataset/dataset_types.h"

namespace switchyard::dataset {

enum class InputKind { kAuto, kCsv, kTsv, kJsonArray, kJsonl };

struct PrepareOptions {
  InputKind input_kind = InputKind::kAuto;  // auto: by extension, then by content
  // Output format; kAuto keeps chat/preference JSONL as is and turns tabular or
  // prompt/completion input into chat.
  DatasetFormat output_format = DatasetFormat::kAuto;
  // Fraction of examples (0 <= split < 1) written to the validation file.
  double validation_split = 0.0;
  uint64_t seed = 42;
  // Apply the fixes listed in the report (otherwise only report them).
  bool apply_fixes = false;
  // Column names for tabular input; empty means detect ("prompt"/"completion",
  // "question"/"answer", "input"/"output", "text"/"label", or the first two columns).
  std::string prompt_column;
  std::string completion_column;
  // Optional system message added to every chat example converted from
  // tabular or completion data.
  std::string system_message;
};

// One kind of fix found (and applied when apply_fixes).
struct PrepareFix {
  std::string kind;     // "strip_whitespace", "drop_empty", "drop_duplicate",
                        // "completion_separator", "completion_stop", "completion_leading_space"
  int64_t count = 0;    // examples affected
  std::string message;  // what it does, for a person
  std::vector<int64_t> example_lines;  // up to 5 input line/record numbers (1-based)
  bool advice_only = false;            // reported, never applied (completion_leading_space)
};

struct PrepareReport {
  InputKind input_kind = InputKind::kAuto;  // what was detected
  DatasetFormat output_format = DatasetFormat::kAuto;
  int64_t input_examples = 0;
  int64_t train_examples = 0;
  int64_t validation_examples = 0;
  bool stratified = false;
  std::vector<PrepareFix> fixes;
  std::vector<std::string> notes;  // other observations for the person
  std::string train_path;
  std::string validation_path;  // empty when validation_split == 0
};

class DatasetPreparer {
 public:
  explicit DatasetPreparer(PrepareOptions options);

  // Converts `input_path` and writes `output_path` (train) and, with a split,
  // `<output stem>_validation.jsonl` beside it. Bad input is INVALID_ARGUMENT
  // naming the line/record and field.
  absl::StatusOr<PrepareReport> Prepare(const std::string& input_path,
                                        const std::string& output_path);

 private:
  PrepareOptions options_;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_PREPARER_H_
