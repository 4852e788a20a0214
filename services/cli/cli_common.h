// Pieces every `switchyard` subcommand shares: exit codes, client connection
// flags, error printing, JSON output of API messages, tables and a progress bar.
#ifndef SWITCHYARD_SERVICES_CLI_CLI_COMMON_H_
#define SWITCHYARD_SERVICES_CLI_CLI_COMMON_H_

#include <google/protobuf/message.h>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "shared/core/flags.h"
#include "shared/rpc/client_channel.h"

namespace switchyard::cli {

// Documented in README "Exit codes".
enum ExitCode {
  kExitOk = 0,
  kExitInvalidData = 1,  // the data failed validation
  kExitUsage = 2,        // bad command line
  kExitNotFound = 3,     // the named resource does not exist
  kExitUnavailable = 4,  // server unreachable, unavailable or deadline exceeded
  kExitDenied = 5,       // missing/invalid token or role too low
  kExitError = 6,        // anything else (internal error, already exists, ...)
};

// --server, --token ($SWITCHYARD_TOKEN), --tls-ca, --tls-cert, --tls-key, --timeout.
void AddClientFlags(FlagSet* flags);
rpc::ClientOptions ClientOptionsFromFlags(const FlagSet& flags);

// Prints "error: ..." (with rich details when present) and returns the exit code.
int ReportError(const grpc::Status& status);
int ReportError(const absl::Status& status);
int ExitCodeFor(grpc::StatusCode code);

// Parses flags; prints help or the usage error. Returns -1 to continue, else
// the exit code to return.
int ParseOrExit(FlagSet* flags, const std::vector<std::string>& args, size_t min_positional,
                size_t max_positional);

// "-o X" is the conventional short form of --output: rewrites it so.
std::vector<std::string> ExpandShortFlags(std::vector<std::string> args);

// Proto message as indented JSON (proto3 JSON mapping), newline-terminated.
std::string ToJson(const google::protobuf::Message& message);

// Aligned text table with a header row.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

// 12.3 MB, 512 B.
std::string HumanBytes(int64_t bytes);

// A progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  void Update(int64_t done);
  void Done();

 private:
  std::string label_;
  int64_t total_;
  bool tty_;
  int last_percent_ = -1;
};

}  // namespace switchyard::cli

#endif  // SWITCHYARD_SERVICES_CLI_CLI_COMMON_H_
