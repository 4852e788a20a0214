#include "services/dataset/issue_collector.h"

namespace switchyard::dataset {

void IssueCollector::Add(ValidationIssue issue) {
  IssueCount& c = counts_[issue.kind];
  c.severity = issue.severity;
  ++c.count;
  if (issue.severity == Severity::kError)
    ++errors_;
  else
    ++warnings_;
  if (static_cast<int>(listed_.size()) < max_listed_) listed_.push_back(std::move(issue));
}

}  // namespace switchyard::dataset
