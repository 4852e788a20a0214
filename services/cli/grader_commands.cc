// `switchyard grader validate|run`: try a reinforcement fine-tuning grader
// before a job. Grader files may be in either JSON form (the proto JSON
// mapping or OpenAI's "type" form, see services/training/graders.h); the CLI
// reads them itself and sends the proto. `validate` needs no server.
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "services/training/graders.h"
#include "services/training/training_proto.h"
#include "shared/core/file_util.h"
#include "shared/core/utf8.h"
#include "switchyard/v1/training.grpc.pb.h"

namespace switchyard::cli {
namespace {

using json = nlohmann::json;

// Rendered templates longer than this are cut in the table (--json has them whole).
constexpr size_t kMaxShownBytes = 100;

// Reads --grader: one JSON object in either form. Returns -1 to go on, else
// the exit code (the problem printed, naming the file and the field).
int ReadGrader(const std::string& path, training::GraderSpec* out) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return ReportError(text.status());
  const json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    std::cerr << "error: " << path << ": not a JSON document\n";
    return kExitInvalidData;
  }
  absl::StatusOr<training::GraderSpec> grader = training::GraderFromJson(j, "grader");
  if (!grader.ok()) {
    std::cerr << "error: " << path << ": " << grader.status().message() << "\n";
    return kExitInvalidData;
  }
  *out = std::move(*grader);
  return -1;
}

// One line for the table: newlines and tabs shown escaped, cut at a UTF-8
// character boundary after kMaxShownBytes.
std::string ShowRendered(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= kMaxShownBytes && (static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      return out + "...";
    }
    if (text[i] == '\n') {
      out += "\\n";
    } else if (text[i] == '\t') {
      out += "\\t";
    } else {
      out += text[i];
    }
  }
  return out;
}

int Validate(const std::vector<std::string>& args) {
  FlagSet flags("switchyard grader validate --grader FILE.json",
                "Checks a grader spec locally (no server): its JSON form, templates, regular\n"
                "expressions, weights, names and schema. Prints the grader in the proto JSON\n"
                "form (OpenAI-form files converted, every field written); exits 1 with the\n"
                "field named (grader.multi.graders[0].grader.string_check.operation) when it\n"
                "is invalid.");
  flags.AddString("grader", "",
                  "Grader JSON file, proto form or OpenAI's \"type\" form (required).");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  const std::string path = flags.GetString("grader");
  if (path.empty()) {
    std::cerr << "error: --grader is required\n";
    return kExitUsage;
  }
  training::GraderSpec grader;
  if ((rc = ReadGrader(path, &grader)) >= 0) return rc;
  if (absl::Status s = training::ValidateGrader(grader, "grader"); !s.ok()) {
    std::cerr << "error: " << path << ": " << s.message() << "\n";
    return kExitInvalidData;
  }
  std::cout << training::GraderToJson(grader).dump(2) << "\n";
  return kExitOk;
}

int Run(const std::vector<std::string>& args) {
  FlagSet flags(
      "switchyard grader run --grader FILE.json (--output TEXT | --output-file FILE)\n"
      "                      [--item JSON | --item-file FILE] [flags]",
      "Grades one sample on the training service (RunGrader): the completion given by\n"
      "--output or --output-file is {{sample.output_text}}, the dataset example given by\n"
      "--item or --item-file supplies {{item.FIELD}}. Prints the reward (0 to 1), the\n"
      "reward of every (sub-)grader and the templates as rendered.");
  AddClientFlags(&flags);
  flags.AddString("grader", "",
                  "Grader JSON file, proto form or OpenAI's \"type\" form (required).");
  flags.AddString("output", "", "The generated completion to grade.");
  flags.AddString("output-file", "", "Read the completion from this file (as is, UTF-8).");
  flags.AddString("item", "", "The dataset example, a JSON object (default: {}).");
  flags.AddString("item-file", "", "Read the dataset example from this JSON file.");
  flags.AddBool("json", false, "Print the RunGraderResponse as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  if (flags.GetString("grader").empty()) {
    std::cerr << "error: --grader is required\n";
    return kExitUsage;
  }
  if (flags.IsSet("output") == flags.IsSet("output-file")) {
    std::cerr << "error: give exactly one of --output and --output-file\n";
    return kExitUsage;
  }
  if (flags.IsSet("item") && flags.IsSet("item-file")) {
    std::cerr << "error: give at most one of --item and --item-file\n";
    return kExitUsage;
  }
  training::GraderSpec grader;
  if ((rc = ReadGrader(flags.GetString("grader"), &grader)) >= 0) return rc;

  v1::RunGraderRequest req;
  training::ToProto(grader, req.mutable_grader());
  std::string output = flags.GetString("output");
  if (flags.IsSet("output-file")) {
    absl::StatusOr<std::string> text = ReadFile(flags.GetString("output-file"));
    if (!text.ok()) return ReportError(text.status());
    output = std::move(*text);
  }
  if (!IsValidUtf8(output)) {
    std::cerr << "error: the output is not valid UTF-8\n";
    return kExitInvalidData;
  }
  req.set_output_text(output);

  if (flags.IsSet("item") || flags.IsSet("item-file")) {
    std::string what = "--item";
    std::string text = flags.GetString("item");
    if (flags.IsSet("item-file")) {
      what = flags.GetString("item-file");
      absl::StatusOr<std::string> file = ReadFile(what);
      if (!file.ok()) return ReportError(file.status());
      text = std::move(*file);
    }
    const json item = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!item.is_object()) {
      std::cerr << "error: " << what << ": expected a JSON object (one dataset example)\n";
      return flags.IsSet("item") ? kExitUsage : kExitInvalidData;
    }
    const std::string compact = item.dump(-1, ' ', false, json::error_handler_t::replace);
    if (!google::protobuf::util::JsonStringToMessage(compact, req.mutable_item()).ok()) {
      std::cerr << "error: " << what << ": cannot be sent as a google.protobuf.Struct\n";
      return kExitInvalidData;
    }
  }

  v1::RunGraderResponse resp;
  rc = CallOnce<v1::TrainingService>(flags, &v1::TrainingService::Stub::RunGrader, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
    return kExitOk;
  }
  std::cout << absl::StrFormat("reward %.4f\n", resp.reward());
  // std::map: ordered by name, as the server's map is not.
  const std::map<std::string, double> rewards(resp.grader_rewards().begin(),
                                              resp.grader_rewards().end());
  std::vector<std::vector<std::string>> rows = {{"GRADER", "REWARD"}};
  for (const auto& [name, reward] : rewards) {
    rows.push_back({name, absl::StrFormat("%.4f", reward)});
  }
  std::cout << "\n" << FormatTable(rows);
  const std::map<std::string, std::string> rendered(resp.rendered().begin(), resp.rendered().end());
  if (!rendered.empty()) {
    std::vector<std::vector<std::string>> templates = {{"TEMPLATE", "RENDERED"}};
    for (const auto& [key, text] : rendered) templates.push_back({key, ShowRendered(text)});
    std::cout << "\n" << FormatTable(templates);
  }
  return kExitOk;
}

constexpr const char* kGraderUsage =
    "Usage: switchyard grader <verb> [flags]\n\n"
    "Try a reinforcement fine-tuning grader (a JSON file in the proto or OpenAI form).\n\n"
    "Verbs:\n"
    "  validate --grader FILE.json            Check it locally; print its normalised JSON.\n"
    "  run --grader FILE.json --output TEXT   Grade one sample on the server (RunGrader):\n"
    "                                         reward, per-grader rewards, rendered templates.\n\n"
    "Run `switchyard grader <verb> --help` for a verb's flags.\n";

}  // namespace

int ReadGraderFile(const std::string& path, v1::Grader* out) {
  training::GraderSpec grader;
  const int rc = ReadGrader(path, &grader);
  if (rc >= 0) return rc;
  training::ToProto(grader, out);
  return -1;
}

int RunGrader(const std::vector<std::string>& args) {
  return DispatchVerb("grader", kGraderUsage, args, {{"run", Run}, {"validate", Validate}});
}

}  // namespace switchyard::cli
