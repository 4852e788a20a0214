#include "services/cli/cli_common.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "google/rpc/status.pb.h"
#include "nlohmann/json.hpp"
#include "shared/rpc/status_mapping.h"
#include "switchyard/v1/dataset.pb.h"

namespace switchyard::cli {

void AddClientFlags(FlagSet* flags) {
  flags->AddString("server", "127.0.0.1:50051", "Address of the Switchyard server (host:port).",
                   "SWITCHYARD_SERVER");
  flags->AddString("token", "", "Bearer token for servers started with --auth-tokens.",
                   "SWITCHYARD_TOKEN");
  flags->AddString("tls-ca", "", "PEM CA certificate; connect with TLS and verify the server.");
  flags->AddString("tls-cert", "", "PEM client certificate for mTLS.");
  flags->AddString("tls-key", "", "PEM client key for mTLS.");
  flags->AddDouble("timeout", 0, "Deadline per call in seconds; 0 waits forever.");
}

rpc::ClientOptions ClientOptionsFromFlags(const FlagSet& flags) {
  rpc::ClientOptions o;
  o.address = flags.GetString("server");
  o.token = flags.GetString("token");
  o.tls_ca = flags.GetString("tls-ca");
  o.tls_cert = flags.GetString("tls-cert");
  o.tls_key = flags.GetString("tls-key");
  double t = flags.GetDouble("timeout");
  if (t > 0) o.timeout = absl::Seconds(t);
  return o;
}

int ExitCodeFor(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return kExitOk;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return kExitInvalidData;
    case grpc::StatusCode::NOT_FOUND:
      return kExitNotFound;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return kExitUnavailable;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitDenied;
    default:
      return kExitError;
  }
}

int ReportError(const grpc::Status& status) {
  std::cerr << "error: " << status.error_message() << " (" << rpc::GrpcCodeName(status.error_code())
            << ")\n";
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    std::cerr << "hint: is the server running and reachable at --server?\n";
  }
  return ExitCodeFor(status.error_code());
}

int ReportError(const absl::Status& status) {
  return ReportError(
      grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message())));
}

std::vector<std::string> ExpandShortFlags(std::vector<std::string> args) {
  for (std::string& a : args) {
    if (a == "-o") a = "--output";
  }
  return args;
}

int ParseOrExit(FlagSet* flags, const std::vector<std::string>& args, size_t min_positional,
                size_t max_positional) {
  absl::Status s = flags->Parse(args);
  if (flags->help_requested()) {
    std::cout << flags->Help();
    return kExitOk;
  }
  if (!s.ok()) {
    std::cerr << "error: " << s.message() << "\n\n" << flags->Help();
    return kExitUsage;
  }
  size_t n = flags->positional().size();
  if (n < min_positional || n > max_positional) {
    std::cerr << "error: wrong number of arguments\n\n" << flags->Help();
    return kExitUsage;
  }
  return -1;
}

std::string ToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = false;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string ProtoNamesJson(const google::protobuf::Message& message, bool one_line) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = !one_line;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

bool ParseStopFlags(const FlagSet& flags, std::vector<std::string>* stop,
                    std::vector<int64_t>* stop_token_ids) {
  const std::string text = flags.GetString("stop");
  if (!text.empty() && text[0] == '[') {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    bool ok = j.is_array();
    for (const auto& s : j) ok = ok && s.is_string();
    if (!ok) {
      std::cerr << "error: --stop: not a JSON array of strings\n";
      return false;
    }
    for (const auto& s : j) stop->push_back(s.get<std::string>());
  } else if (!text.empty()) {
    stop->push_back(text);
  }
  for (absl::string_view piece :
       absl::StrSplit(flags.GetString("stop-token-ids"), ',', absl::SkipEmpty())) {
    int64_t id = 0;
    if (!absl::SimpleAtoi(piece, &id)) {
      std::cerr << "error: --stop-token-ids: '" << piece << "' is not a token id\n";
      return false;
    }
    stop_token_ids->push_back(id);
  }
  return true;
}

std::string JsonLine(const google::protobuf::Message& message) {
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out);
  return out;
}

std::string TimeLabel(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

void AddPageFlags(FlagSet* flags, const std::string& items) {
  flags->AddInt("page-size", 0, items + " per page; 0 = server default (50).");
  flags->AddString("page-token", "", "Token from a previous page.");
  flags->AddBool("all", false, "Follow page tokens to the end.");
}

void PrintMorePages(const std::string& next_page_token) {
  if (!next_page_token.empty()) {
    std::cout << "more: --page-token=" << next_page_token << " (or --all)\n";
  }
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i]);
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string HumanBytes(int64_t bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(STDERR_FILENO) == 1) {}

void ProgressBar::Update(int64_t done) {
  if (!tty_ || total_ <= 0) return;
  int percent = static_cast<int>(100 * std::min(done, total_) / total_);
  if (percent == last_percent_) return;
  last_percent_ = percent;
  int filled = percent * 30 / 100;
  std::fprintf(stderr, "\r%s [%s%s] %3d%% %s / %s", label_.c_str(),
               std::string(filled, '#').c_str(), std::string(30 - filled, ' ').c_str(), percent,
               HumanBytes(done).c_str(), HumanBytes(total_).c_str());
  std::fflush(stderr);
}

void ProgressBar::Done() {
  if (tty_ && last_percent_ >= 0) std::fprintf(stderr, "\n");
}

int DispatchVerb(const std::string& command, const char* usage,
                 const std::vector<std::string>& args,
                 const std::vector<std::pair<std::string, VerbHandler>>& verbs) {
  if (args.empty()) {
    std::cerr << usage;
    return kExitUsage;
  }
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << usage;
    return kExitOk;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  for (const auto& [verb, handler] : verbs) {
    if (verb == args[0]) return handler(rest);
  }
  std::cerr << "error: unknown verb `" << command << " " << args[0] << "`\n\n" << usage;
  return kExitUsage;
}

}  // namespace switchyard::cli
