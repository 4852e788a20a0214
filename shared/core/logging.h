// A small structured logger: one line per event on stderr,
//   2026-11-21T05:41:00.123Z INFO dataset req=9f2c1a upload committed name=faq version=3
// Thread-safe: lines from concurrent threads never interleave.
#ifndef SWITCHYARD_SHARED_CORE_LOGGING_H_
#define SWITCHYARD_SHARED_CORE_LOGGING_H_

#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace switchyard {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below `level` are dropped. Default kInfo.
void SetMinLogLevel(LogLevel level);
// Parses "debug", "info", "warning", "error"; false when unknown.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
bool LogEnabled(LogLevel level);

// Collects one line and writes it when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, absl::string_view component, absl::string_view request_id);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;

  template <typename T>
  LogLine& operator<<(const T& value) {
    stream_ << value;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace switchyard

// SY_LOG(kInfo, "dataset") << "message " << value;
#define SY_LOG(level, component)                                \
  if (!::switchyard::LogEnabled(::switchyard::LogLevel::level)) \
    ;                                                           \
  else                                                          \
    ::switchyard::LogLine(::switchyard::LogLevel::level, component, "")
// SY_LOG_REQ(kInfo, "dataset", request_id) << ...
#define SY_LOG_REQ(level, component, request_id)                \
  if (!::switchyard::LogEnabled(::switchyard::LogLevel::level)) \
    ;                                                           \
  else                                                          \
    ::switchyard::LogLine(::switchyard::LogLevel::level, component, request_id)

#endif  // SWITCHYARD_SHARED_CORE_LOGGING_H_
