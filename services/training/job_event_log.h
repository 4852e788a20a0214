// JobEventLog: one job's events, appended one JSON object per line to
// <data_dir>/jobs/<id>/events.jsonl and kept in memory for WatchJob and
// ListJobEvents. A line torn by a crash mid-append is cut off at the next
// Open(), so sequences stay gapless.
//
// Not thread-safe: the JobManager serializes calls.
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_EVENT_LOG_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_EVENT_LOG_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/job_types.h"

namespace switchyard::training {

class JobEventLog {
 public:
  // Creates the file when absent.
  static absl::StatusOr<std::unique_ptr<JobEventLog>> Open(const std::string& path);
  ~JobEventLog();
  JobEventLog(const JobEventLog&) = delete;
  JobEventLog& operator=(const JobEventLog&) = delete;

  // Gives `event` the next sequence (and the current time when unset) and
  // appends it; fsyncs when `durable` (state changes, checkpoints).
  absl::StatusOr<JobEvent> Append(JobEvent event, bool durable);
  // Events with sequence > after_sequence, oldest first, at most `limit`.
  std::vector<JobEvent> After(int64_t after_sequence, int limit) const;
  int64_t last_sequence() const { return events_.empty() ? 0 : events_.back().sequence; }

 private:
  JobEventLog(int fd, std::vector<JobEvent> events) : fd_(fd), events_(std::move(events)) {}
  int fd_;
  std::vector<JobEvent> events_;
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_EVENT_LOG_H_
