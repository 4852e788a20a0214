// DatasetStatsAccumulator turns per-example facts into DatasetStats: exact
// percentiles of messages, characters and words per example, role counts and
// the final-answer distribution used to spot classification data.
// Memory: 12 bytes per example plus up to kMaxTrackedLabels label strings.
// Not thread-safe.
#ifndef SWITCHYARD_SERVICES_DATASET_DATASET_STATS_H_
#define SWITCHYARD_SERVICES_DATASET_DATASET_STATS_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "services/dataset/dataset_types.h"
#include "services/dataset/text_scan.h"

namespace switchyard::dataset {

enum class Role { kSystem = 0, kUser, kAssistant, kTool, kCount };

// What the validator learned about one well-formed example.
struct ExampleFacts {
  int32_t messages = 0;
  int64_t characters = 0;  // Unicode code points of all contents
  int64_t words = 0;       // whitespace-separated words of all contents
  std::array<int32_t, static_cast<int>(Role::kCount)> roles{};
  int32_t trained_assistant_messages = 0;
  bool has_label = false;
  absl::string_view label;  // the final answer, valid only during AddExample
  int64_t tokens = -1;      // with a token counter; -1 when not counted
};

class DatasetStatsAccumulator {
 public:
  static constexpr int kMaxTrackedLabels = 1000;
  static constexpr int kMaxReportedLabels = 50;

  void AddExample(const ExampleFacts& facts);
  void AddDuplicate(bool exact);
  void set_bytes(int64_t bytes) { bytes_ = bytes; }

  // Builds the statistics; may be called more than once.
  DatasetStats Build() const;

  // True when the final answers look like class labels: at least 10 examples,
  // 2 to 50 distinct answers of at most 5 words, each used 3 times on average.
  bool LooksLikeClassification() const;
  // Label counts, most frequent first.
  std::vector<std::pair<std::string, int64_t>> SortedLabels() const;
  int64_t examples() const { return static_cast<int64_t>(characters_.size()); }

 private:
  std::vector<int32_t> messages_;
  std::vector<int32_t> characters_;
  std::vector<int32_t> words_;
  std::vector<int32_t> tokens_;  // only when counted
  int64_t total_tokens_ = 0;
  std::array<int64_t, static_cast<int>(Role::kCount)> roles_{};
  int64_t without_system_ = 0;
  int64_t trained_assistant_ = 0;
  int64_t exact_duplicates_ = 0;
  int64_t normalized_duplicates_ = 0;
  int64_t bytes_ = 0;
  int64_t labelled_examples_ = 0;
  bool labels_overflowed_ = false;
  bool labels_too_long_ = false;
  absl::flat_hash_map<std::string, int64_t> labels_;
};

// Summary of a sample (exact nearest-rank percentiles).
Summary Summarize(std::vector<int32_t> values);

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_DATASET_STATS_H_
