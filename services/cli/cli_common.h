// Pieces every `switchyard` subcommand shares: exit codes, client connection
// flags, error printing, JSON output of API messages, tables and a progress bar.
#ifndef SWITCHYARD_SERVICES_CLI_CLI_COMMON_H_
#define SWITCHYARD_SERVICES_CLI_CLI_COMMON_H_

#include <google/protobuf/message.h>
#include <google/protobuf/timestamp.pb.h>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_join.h"
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

// A stub of one v1 service and the options its calls carry.
template <typename Service>
struct ServiceClient {
  rpc::ClientOptions options;
  std::unique_ptr<typename Service::Stub> stub;
  void Prepare(grpc::ClientContext* ctx) const { rpc::PrepareContext(options, ctx); }
};

// Prints "error: ..." (with rich details when present) and returns the exit code.
int ReportError(const grpc::Status& status);
int ReportError(const absl::Status& status);
int ExitCodeFor(grpc::StatusCode code);

// Connects `client` with the client flags. Returns -1 to go on, else the exit code.
template <typename Service>
int Connect(const FlagSet& flags, ServiceClient<Service>* client) {
  client->options = ClientOptionsFromFlags(flags);
  auto channel = rpc::MakeChannel(client->options);
  if (!channel.ok()) return ReportError(channel.status());
  client->stub = Service::NewStub(*channel);
  return -1;
}

// Connects with the client flags and makes one unary call,
// CallOnce<v1::Service>(flags, &v1::Service::Stub::Method, request, &response).
// Returns -1 when it succeeded, else the exit code (the error reported).
template <typename Service, typename Request, typename Response>
int CallOnce(const FlagSet& flags,
             grpc::Status (Service::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
             const Request& request, Response* response) {
  ServiceClient<Service> client;
  const int rc = Connect(flags, &client);
  if (rc >= 0) return rc;
  grpc::ClientContext ctx;
  client.Prepare(&ctx);
  grpc::Status s = (client.stub.get()->*method)(&ctx, request, response);
  return s.ok() ? -1 : ReportError(s);
}

// Maps a flag's word to an enum value; prints the accepted words on a miss.
template <typename E>
bool ParseChoice(const FlagSet& flags, const char* name,
                 std::initializer_list<std::pair<const char*, E>> choices, E* out) {
  const std::string value = flags.GetString(name);
  std::vector<std::string> words;
  for (const auto& [word, e] : choices) {
    if (value == word) {
      *out = e;
      return true;
    }
    words.push_back(word);
  }
  std::cerr << "error: --" << name << " must be " << absl::StrJoin(words, ", ") << "; got \""
            << value << "\"\n";
  return false;
}

// --stop (a string, or a JSON array of them) and --stop-token-ids (comma
// separated). False after printing the problem.
bool ParseStopFlags(const FlagSet& flags, std::vector<std::string>* stop,
                    std::vector<int64_t>* stop_token_ids);

// "2026-11-21 10:44:37" (UTC); "-" for an unset time.
std::string TimeLabel(const google::protobuf::Timestamp& t);

// Parses flags; prints help or the usage error. Returns -1 to continue, else
// the exit code to return.
int ParseOrExit(FlagSet* flags, const std::vector<std::string>& args, size_t min_positional,
                size_t max_positional);

// "-o X" is the conventional short form of --output: rewrites it so.
std::vector<std::string> ExpandShortFlags(std::vector<std::string> args);

// Proto message as indented JSON (proto3 JSON mapping), newline-terminated.
std::string ToJson(const google::protobuf::Message& message);
// The same on one line, without the newline (JSON Lines output).
std::string JsonLine(const google::protobuf::Message& message);
// The router's and evaluation's JSON: proto field names as written
// (snake_case: response_id) and every field printed, zeros and empty lists
// included (a score of 0 is a result). Indented unless `one_line`.
std::string ProtoNamesJson(const google::protobuf::Message& message, bool one_line = false);

// The paging flags of a list verb: --page-size, --page-token, --all.
// `items` names what a page holds ("Jobs").
void AddPageFlags(FlagSet* flags, const std::string& items);

// Fetches pages from --page-token on (every page with --all) into `all`:
// `fetch(page_size, page_token, &page)` makes one call; `items(response)`
// returns the response's repeated field. Returns -1 to go on, else the exit
// code (a bad --page-size, a failed call).
template <typename Response, typename Fetch, typename Items>
int FetchPages(const FlagSet& flags, Fetch fetch, Items items, Response* all) {
  const int64_t size = flags.GetInt("page-size");
  if (size < 0 || size > 1000) {
    std::cerr << "error: --page-size must be between 0 and 1000\n";
    return kExitUsage;
  }
  std::string token = flags.GetString("page-token");
  do {
    Response page;
    grpc::Status s = fetch(static_cast<int32_t>(size), token, &page);
    if (!s.ok()) return ReportError(s);
    items(all)->MergeFrom(*items(&page));
    all->set_total_size(page.total_size());
    token = page.next_page_token();
    all->set_next_page_token(token);
  } while (flags.GetBool("all") && !token.empty());
  return -1;
}

// "more: --page-token=... (or --all)" when pages are left.
void PrintMorePages(const std::string& next_page_token);

// `switchyard <command> <verb> ...`: runs the handler of args[0] with the
// remaining arguments. No verb prints `usage` to stderr (exit 2); help
// (--help, -h, help) prints it to stdout (exit 0); an unknown verb is an
// error naming it (exit 2).
using VerbHandler = std::function<int(const std::vector<std::string>&)>;
int DispatchVerb(const std::string& command, const char* usage,
                 const std::vector<std::string>& args,
                 const std::vector<std::pair<std::string, VerbHandler>>& verbs);

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
