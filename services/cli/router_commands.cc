// `switchyard experiment ...`, `switchyard chat`, `switchyard feedback` and
// `switchyard compare`: the router's client. JSON output keeps the proto
// field names (snake_case: response_id, ...).
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "shared/core/file_util.h"
#include "switchyard/v1/router.grpc.pb.h"

namespace switchyard::cli {
namespace {

using Client = ServiceClient<v1::RouterService>;

std::string ExperimentName(const std::string& s) {
  return s.rfind("experiments/", 0) == 0 ? s : "experiments/" + s;
}

// Reads an Experiment from a JSON file (proto JSON: snake_case or
// lowerCamelCase field names).
int ReadExperimentFile(const std::string& path, v1::Experiment* out) {
  auto text = ReadFile(path);
  if (!text.ok()) return ReportError(text.status());
  google::protobuf::util::JsonParseOptions options;
  auto s = google::protobuf::util::JsonStringToMessage(*text, out, options);
  if (!s.ok()) {
    std::cerr << "error: " << path << ": not an experiment: " << s.ToString() << "\n";
    return kExitInvalidData;
  }
  return -1;
}

std::string Pct(double x) { return absl::StrFormat("%.1f%%", 100 * x); }
std::string Num(double x) { return absl::StrFormat("%.3g", x); }
std::string Ms(double s) { return absl::StrFormat("%.0f", s * 1000); }

void PrintExperiment(const v1::Experiment& e) {
  std::cout << e.name() << "  "
            << (e.state() == v1::EXPERIMENT_STATE_ARCHIVED ? "archived" : "active") << "\n";
  if (!e.description().empty()) std::cout << e.description() << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"ARM", "MODEL", "ADAPTER", "RETRIEVAL", "WEIGHT", "IN FORCE"}};
  for (const v1::Arm& arm : e.arms()) {
    auto w = e.weights().find(arm.name());
    auto f = e.effective_weights().find(arm.name());
    rows.push_back({arm.name(), arm.model(), arm.adapter().empty() ? "-" : arm.adapter(),
                    arm.has_retrieval()
                        ? absl::StrCat(arm.retrieval().collection(),
                                       " k=", arm.retrieval().k() > 0 ? arm.retrieval().k() : 4)
                        : "-",
                    e.weights().empty() ? "equal" : (w == e.weights().end() ? "0" : Num(w->second)),
                    f == e.effective_weights().end() ? "-" : Pct(f->second)});
  }
  std::cout << FormatTable(rows);
  if (e.has_shadow() && !e.shadow().arm().empty()) {
    std::cout << "shadow: " << e.shadow().arm() << " on "
              << Pct(e.shadow().sample_rate() > 0 ? e.shadow().sample_rate() : 1) << "\n";
  }
  if (e.bandit().enabled()) std::cout << "bandit: Thompson sampling\n";
}

int Create(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment create --file EXPERIMENT.json [--id ID] [flags]",
                "Creates an experiment from a JSON file, e.g.\n"
                "  {\"name\":\"ft-vs-rag\",\"arms\":[{\"name\":\"ft\",\"model\":\"base\","
                "\"adapter\":\"ft-1\"},\n"
                "   {\"name\":\"rag\",\"model\":\"base\",\"retrieval\":{\"collection\":"
                "\"handbook\",\"k\":4}}],\n"
                "   \"weights\":{\"ft\":50,\"rag\":50}}\n"
                "Every field of the Experiment message is accepted (docs/api.md, Router).");
  AddClientFlags(&flags);
  flags.AddString("file", "", "Experiment JSON file (required).");
  flags.AddString("id", "", "Experiment id (default: the file's name field).");
  flags.AddBool("validate-only", false, "Check everything, create nothing.");
  flags.AddBool("json", false, "Print the Experiment as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  if (flags.GetString("file").empty()) {
    std::cerr << "error: --file is required\n";
    return kExitUsage;
  }
  v1::CreateExperimentRequest req;
  if ((rc = ReadExperimentFile(flags.GetString("file"), req.mutable_experiment())) >= 0) return rc;
  req.set_experiment_id(flags.GetString("id"));
  req.set_validate_only(flags.GetBool("validate-only"));
  v1::Experiment resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::CreateExperiment, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
  } else {
    std::cout << (req.validate_only() ? "valid: " : "created: ");
    PrintExperiment(resp);
  }
  return kExitOk;
}

int Show(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment show NAME [--json]", "An experiment's arms and weights.");
  AddClientFlags(&flags);
  flags.AddBool("json", false, "Print the Experiment as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::GetExperimentRequest req;
  req.set_name(ExperimentName(flags.positional()[0]));
  v1::Experiment resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::GetExperiment, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
  } else {
    PrintExperiment(resp);
  }
  return kExitOk;
}

int List(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment list [--archived] [--json]", "Experiments, newest first.");
  AddClientFlags(&flags);
  flags.AddBool("archived", false, "Include archived experiments.");
  flags.AddBool("json", false, "Print the ListExperimentsResponse as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  v1::ListExperimentsRequest req;
  req.set_page_size(1000);
  req.set_show_archived(flags.GetBool("archived"));
  v1::ListExperimentsResponse resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ListExperiments, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "STATE", "ARMS", "CREATED"}};
  for (const v1::Experiment& e : resp.experiments()) {
    std::vector<std::string> arms;
    for (const v1::Arm& a : e.arms()) arms.push_back(a.name());
    rows.push_back({e.experiment_id(),
                    e.state() == v1::EXPERIMENT_STATE_ARCHIVED ? "archived" : "active",
                    absl::StrJoin(arms, ","), TimeLabel(e.create_time())});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

void PrintReport(const v1::ExperimentReport& r) {
  std::cout << r.experiment() << " report\n";
  std::vector<std::vector<std::string>> rows = {
      {"ARM", "WEIGHT", "REQUESTS", "ERRORS", "P50 MS", "P95 MS", "P99 MS", "PROMPT TOK",
       "COMPL TOK", "COMPUTE S", "FEEDBACK", "MEAN (95% CI)", "WIN RATE"}};
  for (const v1::ArmReport& a : r.arms()) {
    rows.push_back(
        {a.arm(), Pct(a.effective_weight()), std::to_string(a.requests()),
         std::to_string(a.errors()), Ms(a.latency().p50()), Ms(a.latency().p95()),
         Ms(a.latency().p99()), absl::StrFormat("%.1f", a.prompt_tokens_per_request()),
         absl::StrFormat("%.1f", a.completion_tokens_per_request()),
         absl::StrFormat("%.3f", a.compute_seconds_per_request()),
         std::to_string(a.feedback_count()),
         a.feedback_count() > 0 ? absl::StrFormat("%.3f (%.3f-%.3f)", a.feedback_mean(),
                                                  a.feedback_ci_low(), a.feedback_ci_high())
                                : "-",
         a.comparisons() > 0 ? absl::StrFormat("%.2f (%d)", a.win_rate(), a.comparisons()) : "-"});
  }
  std::cout << FormatTable(rows);
  for (const v1::ArmComparison& c : r.comparisons()) {
    std::cout << absl::StrFormat("%s vs %s: %+.3f, always-valid CI [%.3f, %.3f], p %.3g%s\n",
                                 c.arm(), c.control_arm(), c.difference(), c.ci_low(), c.ci_high(),
                                 c.p_value(), c.significant() ? " (significant)" : "");
  }
  std::cout << "verdict: " << r.verdict().summary() << "\n";
  std::cout << "method: " << r.verdict().method() << "\n";
}

int Report(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment report NAME [--json]",
                "Per-arm traffic, latency, tokens, feedback and reviews, every arm against the\n"
                "control with an always-valid sequential test, and the verdict.");
  AddClientFlags(&flags);
  flags.AddBool("include-excluded", false, "Count overridden and excluded requests too.");
  flags.AddBool("json", false, "Print the ExperimentReport as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::GetExperimentReportRequest req;
  req.set_name(ExperimentName(flags.positional()[0]));
  req.set_include_excluded(flags.GetBool("include-excluded"));
  v1::ExperimentReport resp;
  rc =
      CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::GetExperimentReport, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
    return kExitOk;
  }
  PrintReport(resp);
  // The newest offline evaluation beside the online numbers.
  v1::ListEvaluationsRequest list;
  list.set_experiment(req.name());
  list.set_page_size(1);
  v1::ListEvaluationsResponse evaluations;
  ServiceClient<v1::RouterService> client;
  if (Connect(flags, &client) < 0) {
    grpc::ClientContext ctx;
    client.Prepare(&ctx);
    if (client.stub->ListEvaluations(&ctx, list, &evaluations).ok() &&
        !evaluations.evaluations().empty()) {
      std::cout << "\n";
      PrintEvaluation(evaluations.evaluations(0));
    }
  }
  return kExitOk;
}

// "ft=70,rag=30" -> weights.
bool ParseWeights(const std::string& text, v1::Experiment* e) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> kv = absl::StrSplit(part, '=');
    double w = 0;
    if (kv.size() != 2 || kv[0].empty() || !absl::SimpleAtod(kv[1], &w)) {
      std::cerr << "error: --weights: expected ARM=WEIGHT,..., got \"" << part << "\"\n";
      return false;
    }
    (*e->mutable_weights())[kv[0]] = w;
  }
  return true;
}

int Update(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment update NAME (--weights ARM=W,... | --file F) [flags]",
                "Changes an experiment: --weights ramps traffic (keys move only into or out of\n"
                "the arms whose weight changed); --file replaces the fields named by --fields\n"
                "(default: every mutable field) with the file's.");
  AddClientFlags(&flags);
  flags.AddString("weights", "", "New weights, e.g. ft=70,rag=30.");
  flags.AddString("file", "", "Experiment JSON with the new values.");
  flags.AddString("fields", "",
                  "Comma-separated fields to take from --file (arms, weights, shadow, bandit, "
                  "allow_rag_without_context, feedback_scale, analysis, description, labels).");
  flags.AddBool("json", false, "Print the Experiment as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::UpdateExperimentRequest req;
  if (!flags.GetString("file").empty()) {
    if ((rc = ReadExperimentFile(flags.GetString("file"), req.mutable_experiment())) >= 0) {
      return rc;
    }
    for (absl::string_view f : absl::StrSplit(flags.GetString("fields"), ',', absl::SkipEmpty())) {
      req.mutable_update_mask()->add_paths(std::string(f));
    }
  } else if (!flags.GetString("weights").empty()) {
    if (!ParseWeights(flags.GetString("weights"), req.mutable_experiment())) return kExitUsage;
    req.mutable_update_mask()->add_paths("weights");
  } else {
    std::cerr << "error: --weights or --file is required\n";
    return kExitUsage;
  }
  req.mutable_experiment()->set_name(ExperimentName(flags.positional()[0]));
  v1::Experiment resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::UpdateExperiment, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
  } else {
    std::cout << "updated: ";
    PrintExperiment(resp);
  }
  return kExitOk;
}

int Archive(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment archive NAME",
                "Stops serving an experiment; its log, feedback and report stay readable.");
  AddClientFlags(&flags);
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::ArchiveExperimentRequest req;
  req.set_name(ExperimentName(flags.positional()[0]));
  v1::Experiment resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ArchiveExperiment, req, &resp);
  if (rc >= 0) return rc;
  std::cout << "archived " << resp.name() << "\n";
  return kExitOk;
}

int Interactions(const std::vector<std::string>& args) {
  FlagSet flags("switchyard experiment interactions NAME [flags]",
                "Logged requests and answers, newest first.");
  AddClientFlags(&flags);
  flags.AddString("arm", "", "Only this arm.");
  flags.AddBool("pairs", false, "Only served answers with a shadow pair.");
  flags.AddBool("unreviewed", false, "With --pairs: only pairs without a comparison.");
  flags.AddBool("with-feedback", false, "Only answers with feedback.");
  flags.AddInt("limit", 20, "Most interactions shown.");
  flags.AddBool("json", false, "Print one Interaction per line as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::ListInteractionsRequest req;
  req.set_parent(ExperimentName(flags.positional()[0]));
  req.set_arm(flags.GetString("arm"));
  req.set_shadow_pairs_only(flags.GetBool("pairs"));
  req.set_unreviewed_only(flags.GetBool("unreviewed"));
  req.set_with_feedback_only(flags.GetBool("with-feedback"));
  req.set_page_size(static_cast<int32_t>(std::clamp<int64_t>(flags.GetInt("limit"), 1, 1000)));
  v1::ListInteractionsResponse resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ListInteractions, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    for (const v1::Interaction& i : resp.interactions())
      std::cout << ProtoNamesJson(i, true) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"RESPONSE", "ARM", "SHADOW", "PAIR", "CODE", "MS", "FEEDBACK", "ANSWER"}};
  for (const v1::Interaction& i : resp.interactions()) {
    std::string text = i.text().substr(0, 40);
    for (char& ch : text) ch = ch == '\n' ? ' ' : ch;
    rows.push_back({i.response_id(), i.arm(), i.shadow() ? "yes" : "-",
                    i.paired_response_id().empty() ? "-" : i.paired_response_id(),
                    std::to_string(i.error_code()), Ms(i.timings().total_seconds()),
                    std::to_string(i.feedback_size()), text});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

int Export(const std::vector<std::string>& args, bool comparisons) {
  FlagSet flags(comparisons ? "switchyard experiment export-comparisons NAME --dataset ID [flags]"
                            : "switchyard experiment export-interactions NAME --dataset ID [flags]",
                comparisons
                    ? "Writes the pairwise reviews as a new version of a preference dataset "
                      "(for DPO)."
                    : "Writes logged answers (e.g. rated good) as a new version of a chat "
                      "dataset.");
  AddClientFlags(&flags);
  flags.AddString("dataset", "", "Dataset id to add a version to (created if missing).");
  flags.AddBool("validate-only", false, "Validate the would-be version; commit nothing.");
  if (!comparisons) {
    flags.AddString("arms", "", "Only these arms (comma separated).");
    flags.AddDouble("min-score", 0, "Only answers whose mean feedback is at least this.");
    flags.AddBool("include-shadow", false, "Include shadow answers.");
    flags.AddBool("strip-citations", false, "Remove [n] citation markers from answers.");
  }
  flags.AddBool("json", false, "Print the response as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  if (flags.GetString("dataset").empty()) {
    std::cerr << "error: --dataset is required\n";
    return kExitUsage;
  }
  google::protobuf::Message* shown = nullptr;
  v1::ExportComparisonsResponse cresp;
  v1::ExportInteractionsResponse iresp;
  if (comparisons) {
    v1::ExportComparisonsRequest req;
    req.set_experiment(ExperimentName(flags.positional()[0]));
    req.set_dataset_id(flags.GetString("dataset"));
    req.set_validate_only(flags.GetBool("validate-only"));
    rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ExportComparisons, req,
                                     &cresp);
    shown = &cresp;
  } else {
    v1::ExportInteractionsRequest req;
    req.set_experiment(ExperimentName(flags.positional()[0]));
    req.set_dataset_id(flags.GetString("dataset"));
    req.set_validate_only(flags.GetBool("validate-only"));
    for (absl::string_view a : absl::StrSplit(flags.GetString("arms"), ',', absl::SkipEmpty())) {
      req.add_arms(std::string(a));
    }
    if (flags.IsSet("min-score")) req.set_min_feedback_score(flags.GetDouble("min-score"));
    req.set_include_shadow(flags.GetBool("include-shadow"));
    req.set_strip_citations(flags.GetBool("strip-citations"));
    rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ExportInteractions, req,
                                     &iresp);
    shown = &iresp;
  }
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(*shown) << "\n";
  } else if (comparisons) {
    std::cout << "exported " << cresp.examples() << " preference pairs (" << cresp.skipped()
              << " ties or both-bad skipped)"
              << (cresp.dataset_version().empty() ? "" : " to " + cresp.dataset_version()) << "\n";
  } else {
    std::cout << "exported " << iresp.examples() << " conversations"
              << (iresp.dataset_version().empty() ? "" : " to " + iresp.dataset_version()) << "\n";
  }
  return kExitOk;
}

constexpr const char* kExperimentUsage =
    "Usage: switchyard experiment <verb> [args] [flags]\n\n"
    "A/B experiments between fine-tuned, RAG and both arms on the router.\n\n"
    "Verbs:\n"
    "  create --file F       Create an experiment from a JSON file.\n"
    "  show NAME             Arms, weights in force, shadow and bandit.\n"
    "  list                  Experiments, newest first.\n"
    "  report NAME           Per-arm statistics, sequential test and verdict.\n"
    "  update NAME           Ramp weights (--weights ft=70,rag=30) or change fields.\n"
    "  archive NAME          Stop serving; keep the log and report.\n"
    "  interactions NAME     Logged requests and answers.\n"
    "  export-comparisons NAME --dataset ID    Pairwise reviews -> preference dataset.\n"
    "  export-interactions NAME --dataset ID   Answers -> chat dataset.\n\n"
    "Run `switchyard experiment <verb> --help` for a verb's flags.\n";

}  // namespace

int RunExperiment(const std::vector<std::string>& args) {
  return DispatchVerb(
      "experiment", kExperimentUsage, args,
      {
          {"create", Create},
          {"show", Show},
          {"list", List},
          {"report", Report},
          {"update", Update},
          {"archive", Archive},
          {"interactions", Interactions},
          {"export-comparisons", [](const std::vector<std::string>& a) { return Export(a, true); }},
          {"export-interactions",
           [](const std::vector<std::string>& a) { return Export(a, false); }},
      });
}

int RunChat(const std::vector<std::string>& args) {
  FlagSet flags("switchyard chat --server ADDR --experiment NAME [flags] \"message\"",
                "Sends a chat request through the router: the experiment assigns the arm (sticky\n"
                "per --user-key, random without), or --arm overrides it. Prints the answer, then\n"
                "the arm, response id and sources on stderr; --json prints the ChatResponse\n"
                "(arm, response_id, text, sources, usage, timings).");
  AddClientFlags(&flags);
  flags.AddString("experiment", "", "Experiment name (required).");
  flags.AddString("user-key", "", "Stable key of the end user (sticky assignment).");
  flags.AddString("arm", "", "Serve this arm instead of the assigned one.");
  flags.AddString("system", "", "A system message before the user's.");
  flags.AddString("messages", "",
                  "JSON file of earlier messages ([{\"role\":..,\"content\":..}]); the message "
                  "argument is appended as the last user message.");
  flags.AddBool("stream", false, "Print the answer as it is generated.");
  flags.AddInt("max-tokens", 0, "Tokens to generate at most (0 = the arm's default).");
  flags.AddDouble("temperature", -1, "0 = greedy (default: the arm's, then the model's).");
  flags.AddInt("seed", -1, "Random seed (-1 = random).");
  flags.AddString("retrieval-query", "", "Search with this text instead of the message.");
  flags.AddBool("exclude-from-report", false, "Log, but leave out of the report and bandit.");
  flags.AddBool("show-prompt", false, "Also return the messages sent to the model (with --json).");
  flags.AddBool("json", false,
                "Print the ChatResponse as JSON (with --stream: one message per line).");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  if (flags.GetString("experiment").empty()) {
    std::cerr << "error: --experiment is required\n";
    return kExitUsage;
  }
  v1::ChatRequest req;
  req.set_experiment(flags.GetString("experiment"));
  req.set_user_key(flags.GetString("user-key"));
  req.set_arm(flags.GetString("arm"));
  req.set_retrieval_query(flags.GetString("retrieval-query"));
  req.set_exclude_from_report(flags.GetBool("exclude-from-report"));
  req.set_return_prompt(flags.GetBool("show-prompt"));
  if (!flags.GetString("system").empty()) {
    v1::ChatMessage* m = req.add_messages();
    m->set_role("system");
    m->set_content(flags.GetString("system"));
  }
  if (!flags.GetString("messages").empty()) {
    auto text = ReadFile(flags.GetString("messages"));
    if (!text.ok()) return ReportError(text.status());
    v1::ChatInput input;
    auto s = google::protobuf::util::JsonStringToMessage("{\"messages\":" + *text + "}", &input);
    if (!s.ok()) {
      std::cerr << "error: --messages " << flags.GetString("messages")
                << ": expected a JSON array of {\"role\", \"content\"}: " << s.ToString() << "\n";
      return kExitInvalidData;
    }
    for (const v1::ChatMessage& m : input.messages()) *req.add_messages() = m;
  }
  v1::ChatMessage* user = req.add_messages();
  user->set_role("user");
  user->set_content(flags.positional()[0]);
  v1::SamplingParams* s = req.mutable_sampling();
  if (flags.GetInt("max-tokens") > 0)
    s->set_max_tokens(static_cast<int32_t>(flags.GetInt("max-tokens")));
  if (flags.IsSet("temperature")) s->set_temperature(flags.GetDouble("temperature"));
  if (flags.GetInt("seed") >= 0) s->set_seed(static_cast<uint64_t>(flags.GetInt("seed")));

  Client c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  const bool json = flags.GetBool("json");
  auto print_sources = [](const auto& sources) {
    for (const v1::Source& src : sources) {
      std::cerr << "  [" << src.citation_id() << "] " << src.chunk_id()
                << absl::StrFormat(" (score %.3f)", src.score()) << (src.cited() ? " cited" : "")
                << "\n";
    }
  };
  if (!flags.GetBool("stream")) {
    v1::ChatResponse resp;
    grpc::Status st = c.stub->Chat(&ctx, req, &resp);
    if (!st.ok()) return ReportError(st);
    if (json) {
      std::cout << ProtoNamesJson(resp) << "\n";
      return kExitOk;
    }
    std::cout << resp.text() << "\n";
    std::cerr << "[arm " << resp.arm() << ", response " << resp.response_id() << ", "
              << resp.usage().prompt_tokens() << "+" << resp.usage().completion_tokens()
              << " tokens, " << Ms(resp.timings().total_seconds()) << " ms"
              << (resp.context_missing() ? ", answered without context" : "") << "]\n";
    print_sources(resp.sources());
    return kExitOk;
  }
  auto reader = c.stub->ChatStream(&ctx, req);
  v1::ChatStreamResponse msg, head, last;
  bool first = true;
  while (reader->Read(&msg)) {
    if (first) head = msg;
    first = false;
    if (json) {
      std::cout << ProtoNamesJson(msg, true) << "\n" << std::flush;
    } else {
      std::cout << msg.text() << std::flush;
    }
    if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = msg;
  }
  grpc::Status st = reader->Finish();
  if (!json) std::cout << "\n";
  if (!st.ok()) return ReportError(st);
  if (!json) {
    std::cerr << "[arm " << head.arm() << ", response " << head.response_id() << ", "
              << last.usage().prompt_tokens() << "+" << last.usage().completion_tokens()
              << " tokens, " << Ms(last.timings().total_seconds()) << " ms]\n";
    print_sources(last.sources());
  }
  return kExitOk;
}

int RunFeedback(const std::vector<std::string>& args) {
  FlagSet flags(
      "switchyard feedback --server ADDR RESPONSE_ID (--score X | --thumbs up|down) [flags]",
      "Rates an answer (served or shadow) on the experiment's feedback scale.");
  AddClientFlags(&flags);
  flags.AddDouble("score", 0, "Score on the experiment's scale (default [0, 1]).");
  flags.AddString("thumbs", "", "up or down (the scale's max or min).");
  flags.AddString("comment", "", "Free text.");
  flags.AddString("reviewer", "", "Who rates (a newer rating by the same reviewer replaces).");
  flags.AddBool("json", false, "Print the Feedback as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 1);
  if (rc >= 0) return rc;
  v1::RecordFeedbackRequest req;
  req.set_response_id(flags.positional()[0]);
  if (flags.IsSet("score") == !flags.GetString("thumbs").empty()) {
    std::cerr << "error: give exactly one of --score and --thumbs\n";
    return kExitUsage;
  }
  if (flags.IsSet("score")) {
    req.set_score(flags.GetDouble("score"));
  } else {
    v1::Thumbs t;
    if (!ParseChoice(flags, "thumbs", {{"up", v1::THUMBS_UP}, {"down", v1::THUMBS_DOWN}}, &t)) {
      return kExitUsage;
    }
    req.set_thumbs(t);
  }
  req.set_comment(flags.GetString("comment"));
  req.set_reviewer(flags.GetString("reviewer"));
  v1::Feedback resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::RecordFeedback, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
  } else {
    std::cout << "recorded " << resp.name() << " (arm " << resp.arm() << ", score "
              << Num(resp.score()) << ")\n";
  }
  return kExitOk;
}

int RunCompare(const std::vector<std::string>& args) {
  FlagSet flags("switchyard compare --server ADDR RESPONSE_ID [OTHER_ID] --result R [flags]",
                "Records which of two answers to the same request is better (by default the\n"
                "response's shadow pair). R: first | second | tie | both-bad.");
  AddClientFlags(&flags);
  flags.AddString("result", "", "first | second | tie | both-bad (required).");
  flags.AddString("comment", "", "Free text.");
  flags.AddString("reviewer", "", "Who reviews.");
  flags.AddBool("json", false, "Print the Comparison as JSON.");
  int rc = ParseOrExit(&flags, args, 1, 2);
  if (rc >= 0) return rc;
  v1::RecordComparisonRequest req;
  req.set_response_id(flags.positional()[0]);
  if (flags.positional().size() > 1) req.set_other_response_id(flags.positional()[1]);
  v1::ComparisonResult result;
  if (!ParseChoice(flags, "result",
                   {{"first", v1::COMPARISON_RESULT_FIRST_BETTER},
                    {"second", v1::COMPARISON_RESULT_SECOND_BETTER},
                    {"tie", v1::COMPARISON_RESULT_TIE},
                    {"both-bad", v1::COMPARISON_RESULT_BOTH_BAD}},
                   &result)) {
    return kExitUsage;
  }
  req.set_result(result);
  req.set_comment(flags.GetString("comment"));
  req.set_reviewer(flags.GetString("reviewer"));
  v1::Comparison resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::RecordComparison, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
  } else {
    std::cout << "recorded " << resp.name() << " (" << resp.arm() << " vs " << resp.other_arm()
              << ", preferred: " << (resp.preferred_arm().empty() ? "none" : resp.preferred_arm())
              << ")\n";
  }
  return kExitOk;
}

}  // namespace switchyard::cli
