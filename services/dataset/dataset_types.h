// Plain C++ domain types of the dataset service: formats, issues, statistics and
// validation reports. No gRPC or protobuf here; the adapter translates.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_TYPES_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_TYPES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchyard::dataset {

enum class DatasetFormat { kAuto = 0, kChat = 1, kCompletion = 2, kPreference = 3 };

// "auto", "chat", "completion", "preference".
absl::string_view FormatName(DatasetFormat format);
// Parses a FormatName(); false when unknown.
bool ParseFormat(absl::string_view name, DatasetFormat* format);

enum class Severity { kError = 0, kWarning = 1 };
absl::string_view SeverityName(Severity severity);

// One problem in a dataset file. `line` is 1-based (0: the whole file);
// `field` is a JSON path inside the line such as "messages[2].role".
struct ValidationIssue {
  Severity severity = Severity::kError;
  std::string kind;
  int64_t line = 0;
  std::string field;
  std::string message;
  std::string file;  // "train", "validation", or empty for a single file
};

// mean/p50/p90/min/max of a per-example count.
struct Summary {
  double mean = 0, p50 = 0, p90 = 0, min = 0, max = 0;
};

struct DatasetStats {
  int64_t examples = 0;
  int64_t bytes = 0;
  Summary messages_per_example;
  Summary characters_per_example;
  Summary words_per_example;
  std::map<std::string, int64_t> role_counts;
  int64_t exact_duplicates = 0;
  int64_t normalized_duplicates = 0;
  int64_t examples_without_system_message = 0;
  int64_t trained_assistant_messages = 0;
  bool looks_like_classification = false;
  // Most frequent first; only when looks_like_classification.
  std::vector<std::pair<std::string, int64_t>> labels;
  // Only when counted with a tokenizer (has_tokens).
  bool has_tokens = false;
  Summary tokens_per_example;
  int64_t total_tokens = 0;  // one epoch
};

struct IssueCount {
  Severity severity = Severity::kError;
  int64_t count = 0;
};

struct ValidationReport {
  DatasetFormat format = DatasetFormat::kAuto;
  // No errors (and, when strict, no warnings).
  bool valid = false;
  // First issues in file order, up to the listing limit.
  std::vector<ValidationIssue> issues;
  // Every kind with its full count.
  std::map<std::string, IssueCount> counts;
  int64_t error_count = 0;
  int64_t warning_count = 0;
  bool truncated = false;
  DatasetStats train_stats;
  std::optional<DatasetStats> validation_stats;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_TYPES_H_
