// DatasetValidator checks fine-tuning JSONL the way a hosted fine-tuning API
// does, and computes the dataset's statistics, in one streaming pass.
//
// Bytes arrive in chunks of any size (a file read, a gRPC upload stream); lines
// may span chunks. Memory is constant in the file size except for about 60
// bytes per example kept for duplicate detection (two hash tables) and exact
// percentiles. Lines longer than `max_line_bytes` are reported and skipped
// without being buffered.
//
// Every error names its 1-based line and the JSON field path. The first
// `max_listed_issues` errors and as many warnings are listed; all are counted
// per kind.
//
// Not thread-safe: one validator per upload.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_VALIDATOR_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_VALIDATOR_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/dataset/dataset_types.h"
#include "services/dataset/issue_collector.h"
#include "services/dataset/token_counter.h"

namespace switchyard::dataset {

struct ValidatorOptions {
  // kAuto: the first well-formed line decides; later lines must match.
  DatasetFormat format = DatasetFormat::kAuto;
  // Longer lines are an error ("line_too_long").
  int64_t max_line_bytes = 8 << 20;
  // Errors listed, and warnings listed (each); all are counted.
  int max_listed_issues = 100;
  // Fewer examples than this is an error.
  int64_t min_examples = 10;
  // Fewer examples than this is a warning.
  int64_t recommended_examples = 100;
  // Examples with more characters than this get a "long_example" warning.
  int64_t long_example_chars = 32768;
  // Warnings make the report invalid too.
  bool strict = false;
  // When set, tokens are counted per example (statistics and max_seq_len).
  // Not owned; must outlive the validator.
  const TokenCounter* token_counter = nullptr;
  // With a token counter: examples with more tokens are an error
  // ("too_many_tokens"); 0 means no limit.
  int64_t max_seq_len = 0;
};

enum class Split { kTrain, kValidation };

class FileValidator;
struct FormatState;

class DatasetValidator {
 public:
  explicit DatasetValidator(ValidatorOptions options);
  ~DatasetValidator();
  DatasetValidator(const DatasetValidator&) = delete;
  DatasetValidator& operator=(const DatasetValidator&) = delete;

  // Feeds the next bytes of one file. Chunks of one split must come in order.
  void Feed(Split split, absl::string_view chunk);

  // Completes both files, runs whole-file and cross-file checks (example
  // counts, train/validation overlap) and returns the report. Call once.
  ValidationReport Finish();

  // Errors so far (lets an upload stop early, e.g. on an over-long stream).
  int64_t errors_so_far() const { return issues_.errors(); }

  // Validates files on disk; `validation_path` may be empty. NOT_FOUND when a
  // file cannot be opened.
  static absl::StatusOr<ValidationReport> ValidateFiles(const ValidatorOptions& options,
                                                        const std::string& train_path,
                                                        const std::string& validation_path);

 private:
  FileValidator* ForSplit(Split split);

  ValidatorOptions options_;
  IssueCollector issues_;
  std::unique_ptr<FormatState> format_state_;  // shared by both files
  std::unique_ptr<FileValidator> train_;
  std::unique_ptr<FileValidator> validation_;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_VALIDATOR_H_
