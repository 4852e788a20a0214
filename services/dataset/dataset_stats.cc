#include "services/dataset/dataset_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/ascii.h"

namespace switchyard::dataset {
namespace {

constexpr const char* kRoleNames[] = {"system", "user", "assistant", "tool"};

int64_t WordCount(absl::string_view text) { return ScanText(text).words; }

}  // namespace

Summary Summarize(std::vector<int32_t> values) {
  Summary s;
  if (values.empty()) return s;
  const size_t n = values.size();
  // Nearest rank: the ceil(q * n)-th smallest value; selection, not a sort.
  auto rank = [n](double q) {
    size_t r = static_cast<size_t>(std::ceil(q * static_cast<double>(n)));
    return r == 0 ? size_t{0} : r - 1;
  };
  const size_t r50 = rank(0.5), r90 = rank(0.9);
  auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  s.min = *lo;
  s.max = *hi;
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(n);
  const int64_t range = static_cast<int64_t>(*hi) - *lo + 1;
  if (range <= (int64_t{1} << 20)) {
    // Counts per example span a small range: a histogram finds both ranks in
    // one pass, cheaper than selection.
    std::vector<uint32_t> histogram(static_cast<size_t>(range));
    for (int32_t v : values) ++histogram[static_cast<size_t>(v - *lo)];
    size_t seen = 0;
    bool have_p50 = false;
    for (size_t b = 0; b < histogram.size(); ++b) {
      seen += histogram[b];
      if (!have_p50 && seen > r50) {
        s.p50 = static_cast<double>(*lo + static_cast<int64_t>(b));
        have_p50 = true;
      }
      if (seen > r90) {
        s.p90 = static_cast<double>(*lo + static_cast<int64_t>(b));
        break;
      }
    }
    return s;
  }
  std::nth_element(values.begin(), values.begin() + r50, values.end());
  s.p50 = values[r50];
  std::nth_element(values.begin() + r50, values.begin() + r90, values.end());
  s.p90 = values[r90];
  return s;
}

void DatasetStatsAccumulator::AddExample(const ExampleFacts& f) {
  messages_.push_back(f.messages);
  characters_.push_back(static_cast<int32_t>(std::min<int64_t>(f.characters, INT32_MAX)));
  words_.push_back(static_cast<int32_t>(std::min<int64_t>(f.words, INT32_MAX)));
  if (f.tokens >= 0) {
    tokens_.push_back(static_cast<int32_t>(std::min<int64_t>(f.tokens, INT32_MAX)));
    total_tokens_ += f.tokens;
  }
  for (int r = 0; r < static_cast<int>(Role::kCount); ++r) roles_[r] += f.roles[r];
  if (f.roles[static_cast<int>(Role::kSystem)] == 0) ++without_system_;
  trained_assistant_ += f.trained_assistant_messages;
  if (!f.has_label) return;
  ++labelled_examples_;
  if (labels_overflowed_) return;
  if (f.label.size() > 64) labels_too_long_ = true;
  auto it = labels_.find(f.label);
  if (it != labels_.end()) {
    ++it->second;
  } else if (static_cast<int>(labels_.size()) < kMaxTrackedLabels) {
    labels_.emplace(std::string(f.label), 1);
  } else {
    labels_overflowed_ = true;
    labels_.clear();
  }
}

void DatasetStatsAccumulator::AddDuplicate(bool exact) {
  if (exact) ++exact_duplicates_;
  ++normalized_duplicates_;
}

bool DatasetStatsAccumulator::LooksLikeClassification() const {
  if (labels_overflowed_ || labels_too_long_) return false;
  int64_t n = labelled_examples_;
  int64_t distinct = static_cast<int64_t>(labels_.size());
  if (n < 10 || n != examples() || distinct < 2 || distinct > kMaxReportedLabels) return false;
  if (distinct * 3 > n) return false;
  for (const auto& [label, count] : labels_) {
    if (WordCount(label) > 5) return false;
  }
  return true;
}

std::vector<std::pair<std::string, int64_t>> DatasetStatsAccumulator::SortedLabels() const {
  std::vector<std::pair<std::string, int64_t>> out(labels_.begin(), labels_.end());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  return out;
}

DatasetStats DatasetStatsAccumulator::Build() const {
  DatasetStats s;
  s.examples = examples();
  s.bytes = bytes_;
  s.messages_per_example = Summarize(messages_);
  s.characters_per_example = Summarize(characters_);
  s.words_per_example = Summarize(words_);
  if (!tokens_.empty()) {
    s.has_tokens = true;
    s.tokens_per_example = Summarize(tokens_);
    s.total_tokens = total_tokens_;
  }
  for (int r = 0; r < static_cast<int>(Role::kCount); ++r) {
    if (roles_[r] > 0) s.role_counts[kRoleNames[r]] = roles_[r];
  }
  s.exact_duplicates = exact_duplicates_;
  s.normalized_duplicates = normalized_duplicates_;
  s.examples_without_system_message = without_system_;
  s.trained_assistant_messages = trained_assistant_;
  s.looks_like_classification = LooksLikeClassification();
  if (s.looks_like_classification) {
    s.labels = SortedLabels();
    if (static_cast<int>(s.labels.size()) > kMaxReportedLabels) s.labels.resize(kMaxReportedLabels);
  }
  return s;
}

}  // namespace switchyard::dataset
