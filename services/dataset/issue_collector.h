// IssueCollector keeps the first N errors and the first N warnings of a
// validation run, in file order, and a full count per kind, so a file with a
// million bad lines reports in constant memory, and a flood of warnings never
// hides the errors. Not thread-safe: one collector per validation run.
#ifndef SWITCHYARD_SERVICES_DATASET_ISSUE_COLLECTOR_H_
#define SWITCHYARD_SERVICES_DATASET_ISSUE_COLLECTOR_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "services/dataset/dataset_types.h"

namespace switchyard::dataset {

class IssueCollector {
 public:
  // `max_listed` errors and `max_listed` warnings are kept verbatim; the rest
  // are only counted.
  explicit IssueCollector(int max_listed) : max_listed_(max_listed) {}

  void Add(ValidationIssue issue);

  int64_t errors() const { return errors_; }
  int64_t warnings() const { return warnings_; }
  const std::vector<ValidationIssue>& listed() const { return listed_; }
  const std::map<std::string, IssueCount>& counts() const { return counts_; }
  bool truncated() const { return errors_ > listed_errors_ || warnings_ > listed_warnings_; }

 private:
  int max_listed_;
  int64_t errors_ = 0;
  int64_t warnings_ = 0;
  int64_t listed_errors_ = 0;
  int64_t listed_warnings_ = 0;
  std::vector<ValidationIssue> listed_;
  std::map<std::string, IssueCount> counts_;
};

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_ISSUE_COLLECTOR_H_
