#include "services/training/job_event_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {

absl::StatusOr<std::unique_ptr<JobEventLog>> JobEventLog::Open(const std::string& path) {
  std::string text;
  if (absl::StatusOr<std::string> existing = ReadFile(path); existing.ok()) {
    text = std::move(*existing);
  }
  std::vector<JobEvent> events;
  size_t good = 0;  // bytes of whole, parsed lines
  while (good < text.size()) {
    const size_t nl = text.find('\n', good);
    if (nl == std::string::npos) break;  // torn tail
    nlohmann::json j = nlohmann::json::parse(text.substr(good, nl - good), nullptr, false);
    absl::StatusOr<JobEvent> e = JobEventFromJson(j);
    if (!e.ok() || e->sequence != static_cast<int64_t>(events.size()) + 1) break;
    events.push_back(std::move(*e));
    good = nl + 1;
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  if (good < text.size()) {
    SY_LOG(kWarning, "jobs") << path << ": dropping " << text.size() - good << " bytes after event "
                             << events.size() << " (torn by a crash)";
    if (::ftruncate(fd, static_cast<off_t>(good)) != 0) {
      ::close(fd);
      return absl::InternalError(
          absl::StrCat("cannot truncate ", path, ": ", std::strerror(errno)));
    }
  }
  return std::unique_ptr<JobEventLog>(new JobEventLog(fd, std::move(events)));
}

JobEventLog::~JobEventLog() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<JobEvent> JobEventLog::Append(JobEvent event, bool durable) {
  event.sequence = last_sequence() + 1;
  if (event.time_ms == 0) event.time_ms = absl::ToUnixMillis(absl::Now());
  const std::string line = JobEventToJson(event).dump() + "\n";
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return absl::InternalError(absl::StrCat("cannot append an event: ", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  if (durable && ::fdatasync(fd_) != 0) {
    return absl::InternalError(absl::StrCat("cannot sync the event log: ", std::strerror(errno)));
  }
  events_.push_back(event);
  return event;
}

std::vector<JobEvent> JobEventLog::After(int64_t after_sequence, int limit) const {
  std::vector<JobEvent> out;
  // Sequences are 1-based and gapless: event s sits at index s - 1.
  for (int64_t i = std::max<int64_t>(0, after_sequence);
       i < static_cast<int64_t>(events_.size()) && static_cast<int>(out.size()) < limit; ++i) {
    out.push_back(events_[i]);
  }
  return out;
}

}  // namespace switchyard::training
