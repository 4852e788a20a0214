#include "services/dataset/issue_collector.h"

namespace switchyard::dataset {

void IssueCollector::Add(ValidationIssue issue) {
  IssueCount& c = counts_[issue.kind];
  c.severity = issue.severity;
  ++c.count;
  const bool error = issue.severity == Severity::kError;
  int64_t& total = error ? errors_ : warnings_;
  int64_t& listed = error ? listed_errors_ : listed_warnings_;
  ++total;
  if (listed < max_listed_) {
    ++listed;
    listed_.push_back(std::move(issue));
  }
}

}  // namespace switchyard::dataset
