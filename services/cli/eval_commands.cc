// `switchyard eval run|compare|list`: offline evaluation of an experiment's
// arms (and the untuned base model) on a labelled dataset version, through
// the router. JSON output keeps the proto field names.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "services/cli/cli_common.h"
#include "services/cli/commands.h"
#include "switchyard/v1/router.grpc.pb.h"

namespace switchyard::cli {
namespace {

std::string WithCi(const v1::MetricEstimate& e, int digits = 3) {
  if (e.n() == 0) return "-";
  return absl::StrFormat("%.*f (%.*f to %.*f)", digits, e.value(), digits, e.ci_low(), digits,
                         e.ci_high());
}

}  // namespace

// Prints an evaluation: one row per arm, then the comparisons.
void PrintEvaluation(const v1::Evaluation& e) {
  std::cout << "offline evaluation " << e.evaluation_id() << ": " << e.dataset_version() << " ("
            << (e.split() == v1::DATASET_SPLIT_VALIDATION ? "validation" : "train") << ", "
            << e.examples() << " examples), 95% bootstrap intervals\n";
  std::vector<std::vector<std::string>> rows = {{"ARM", "EXACT MATCH", "TOKEN F1", "ROUGE-L",
                                                 "LOG-LIKELIHOOD", "NATS/TOKEN", "P50 MS",
                                                 "PROMPT TOK", "ERRORS"}};
  bool classification = false, retrieval = false;
  for (const v1::ArmEvaluation& a : e.arms()) {
    rows.push_back({a.arm(), WithCi(a.exact_match()), WithCi(a.token_f1()), WithCi(a.rouge_l()),
                    WithCi(a.reference_logprob(), 1) +
                        (a.reference_logprob().n() > 0 && a.reference_logprob().n() < e.examples()
                             ? absl::StrCat(" n=", a.reference_logprob().n())
                             : ""),
                    a.reference_token_logprob().n() > 0
                        ? absl::StrFormat("%.3f", a.reference_token_logprob().value())
                        : "-",
                    absl::StrFormat("%.0f", a.latency().p50() * 1000),
                    absl::StrFormat("%.0f", a.prompt_tokens_per_example()),
                    std::to_string(a.errors())});
    classification = classification || a.has_classification();
    retrieval = retrieval || a.has_retrieval_metrics();
  }
  std::cout << FormatTable(rows);
  if (classification) {
    std::vector<std::vector<std::string>> c = {
        {"ARM", "ACCURACY", "MACRO P", "MACRO R", "MACRO F1"}};
    for (const v1::ArmEvaluation& a : e.arms()) {
      if (!a.has_classification()) continue;
      const v1::ClassificationMetrics& m = a.classification();
      c.push_back({a.arm(), absl::StrFormat("%.3f", m.accuracy()),
                   absl::StrFormat("%.3f", m.macro_precision()),
                   absl::StrFormat("%.3f", m.macro_recall()),
                   absl::StrFormat("%.3f", m.macro_f1())});
    }
    std::cout << "labels: " << absl::StrJoin(e.arms(0).classification().labels(), ", ") << "\n"
              << FormatTable(c);
  }
  if (retrieval) {
    std::vector<std::vector<std::string>> r = {{"ARM", "HIT RATE@K", "MRR", "K", "EXAMPLES"}};
    for (const v1::ArmEvaluation& a : e.arms()) {
      if (!a.has_retrieval_metrics()) continue;
      const v1::RetrievalMetrics& m = a.retrieval_metrics();
      r.push_back({a.arm(), absl::StrFormat("%.3f", m.hit_rate()), absl::StrFormat("%.3f", m.mrr()),
                   std::to_string(m.k()), std::to_string(m.examples())});
    }
    std::cout << FormatTable(r);
  }
}

namespace {

void PrintComparisons(const v1::Evaluation& e) {
  if (e.comparisons().empty()) return;
  std::vector<std::vector<std::string>> rows = {
      {"ARM", "VS", "METRIC", "DIFFERENCE (95% CI)", "SIGNIFICANT"}};
  for (const v1::EvaluationComparison& c : e.comparisons()) {
    rows.push_back({c.arm(), c.baseline(), c.metric(),
                    absl::StrFormat("%+.3f (%+.3f to %+.3f)", c.difference().value(),
                                    c.difference().ci_low(), c.difference().ci_high()),
                    c.significant() ? "yes" : "no"});
  }
  std::cout << FormatTable(rows);
}

std::string ExperimentName(const std::string& s) {
  return s.rfind("experiments/", 0) == 0 ? s : "experiments/" + s;
}

int Run(const std::vector<std::string>& args) {
  FlagSet flags("switchyard eval run --experiment NAME --dataset NAME[@V] [flags]",
                "Runs a labelled dataset version (chat with the reference as the last\n"
                "assistant message, or prompt/completion) through the experiment's arms and\n"
                "the untuned base model, greedy by default, and scores the answers: exact\n"
                "match, token F1, ROUGE-L, the reference's log-likelihood; accuracy and macro\n"
                "P/R/F1 when the references are labels; hit rate@k and MRR when examples name\n"
                "metadata.source_document. The result is stored with the experiment.");
  AddClientFlags(&flags);
  flags.AddString("experiment", "", "Experiment name (required).");
  flags.AddString("dataset", "", "Dataset (NAME for its latest version, NAME@V) (required).");
  flags.AddString("arms", "", "Arms to evaluate, comma separated (default: all).");
  flags.AddString("split", "auto", "validation | train | auto (validation when present).");
  flags.AddBool("no-base", false, "Leave out the untuned base model.");
  flags.AddInt("limit", 0, "Evaluate at most this many examples (0 = all).");
  flags.AddInt("max-tokens", 0, "Tokens per answer (0 = 128).");
  flags.AddInt("concurrency", 0, "Answers generated at once (0 = 8).");
  flags.AddBool("no-score", false, "Skip the reference log-likelihood.");
  flags.AddBool("json", false, "Print the Evaluation as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  if (flags.GetString("experiment").empty() || flags.GetString("dataset").empty()) {
    std::cerr << "error: --experiment and --dataset are required\n";
    return kExitUsage;
  }
  v1::RunEvaluationRequest req;
  req.set_experiment(ExperimentName(flags.GetString("experiment")));
  std::string dataset = flags.GetString("dataset");
  const size_t at = dataset.find('@');
  if (dataset.rfind("datasets/", 0) != 0) {
    dataset = at == std::string::npos ? absl::StrCat("datasets/", dataset)
                                      : absl::StrCat("datasets/", dataset.substr(0, at),
                                                     "/versions/", dataset.substr(at + 1));
  }
  req.set_dataset(dataset);
  for (absl::string_view a : absl::StrSplit(flags.GetString("arms"), ',', absl::SkipEmpty())) {
    req.add_arms(std::string(a));
  }
  v1::DatasetSplit split = v1::DATASET_SPLIT_UNSPECIFIED;
  if (!ParseChoice(flags, "split",
                   {{"auto", v1::DATASET_SPLIT_UNSPECIFIED},
                    {"validation", v1::DATASET_SPLIT_VALIDATION},
                    {"train", v1::DATASET_SPLIT_TRAIN}},
                   &split)) {
    return kExitUsage;
  }
  req.set_split(split);
  req.set_skip_base(flags.GetBool("no-base"));
  req.set_limit(static_cast<int32_t>(flags.GetInt("limit")));
  if (flags.GetInt("max-tokens") > 0) {
    req.mutable_sampling()->set_max_tokens(static_cast<int32_t>(flags.GetInt("max-tokens")));
  }
  req.set_concurrency(static_cast<int32_t>(flags.GetInt("concurrency")));
  req.set_skip_score(flags.GetBool("no-score"));

  ServiceClient<v1::RouterService> c;
  if ((rc = Connect(flags, &c)) >= 0) return rc;
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  auto reader = c.stub->RunEvaluation(&ctx, req);
  v1::EvaluationProgress msg;
  v1::Evaluation result;
  ProgressBar bar("evaluating", 0);
  while (reader->Read(&msg)) {
    if (msg.has_evaluation()) {
      result = msg.evaluation();
    } else if (!flags.GetBool("json")) {
      if (msg.total() > 0) {
        static int64_t last_total = 0;
        if (last_total != msg.total()) bar = ProgressBar("evaluating", msg.total());
        last_total = msg.total();
        bar.Update(msg.done());
      }
    }
  }
  grpc::Status st = reader->Finish();
  if (!st.ok()) return ReportError(st);
  if (!flags.GetBool("json")) bar.Done();
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(result) << "\n";
    return kExitOk;
  }
  PrintEvaluation(result);
  PrintComparisons(result);
  return kExitOk;
}

int Compare(const std::vector<std::string>& args) {
  FlagSet flags("switchyard eval compare (EVALUATION | --experiment NAME) [--json]",
                "Prints an evaluation's arms side by side with 95% bootstrap intervals and, for\n"
                "every arm against the baseline (the base model, else the control arm), the\n"
                "paired difference per metric and whether it is significant. Without an\n"
                "evaluation id: the experiment's newest evaluation.");
  AddClientFlags(&flags);
  flags.AddString("experiment", "", "Experiment whose newest evaluation to show.");
  flags.AddBool("json", false, "Print the Evaluation as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 1);
  if (rc >= 0) return rc;
  v1::Evaluation e;
  if (!flags.positional().empty()) {
    v1::GetEvaluationRequest req;
    req.set_name(flags.positional()[0]);
    rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::GetEvaluation, req, &e);
    if (rc >= 0) return rc;
  } else if (!flags.GetString("experiment").empty()) {
    v1::ListEvaluationsRequest req;
    req.set_experiment(ExperimentName(flags.GetString("experiment")));
    req.set_page_size(1);
    v1::ListEvaluationsResponse resp;
    rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ListEvaluations, req, &resp);
    if (rc >= 0) return rc;
    if (resp.evaluations().empty()) {
      std::cerr << "error: " << req.experiment() << " has no evaluation yet (run `eval run`)\n";
      return kExitNotFound;
    }
    e = resp.evaluations(0);
  } else {
    std::cerr << "error: give an evaluation id or --experiment\n";
    return kExitUsage;
  }
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(e) << "\n";
    return kExitOk;
  }
  PrintEvaluation(e);
  PrintComparisons(e);
  return kExitOk;
}

int List(const std::vector<std::string>& args) {
  FlagSet flags("switchyard eval list --experiment NAME [--json]",
                "An experiment's evaluations, newest first.");
  AddClientFlags(&flags);
  flags.AddString("experiment", "", "Experiment name (required).");
  flags.AddBool("json", false, "Print the ListEvaluationsResponse as JSON.");
  int rc = ParseOrExit(&flags, args, 0, 0);
  if (rc >= 0) return rc;
  if (flags.GetString("experiment").empty()) {
    std::cerr << "error: --experiment is required\n";
    return kExitUsage;
  }
  v1::ListEvaluationsRequest req;
  req.set_experiment(ExperimentName(flags.GetString("experiment")));
  req.set_page_size(1000);
  v1::ListEvaluationsResponse resp;
  rc = CallOnce<v1::RouterService>(flags, &v1::RouterService::Stub::ListEvaluations, req, &resp);
  if (rc >= 0) return rc;
  if (flags.GetBool("json")) {
    std::cout << ProtoNamesJson(resp) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"EVALUATION", "DATASET", "EXAMPLES", "ARMS", "CREATED"}};
  for (const v1::Evaluation& e : resp.evaluations()) {
    std::vector<std::string> arms;
    for (const v1::ArmEvaluation& a : e.arms()) arms.push_back(a.arm());
    rows.push_back({e.evaluation_id(), e.dataset_version(), std::to_string(e.examples()),
                    absl::StrJoin(arms, ","), TimeLabel(e.create_time())});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

constexpr const char* kEvalUsage =
    "Usage: switchyard eval <verb> [args] [flags]\n\n"
    "Offline evaluation of an experiment's arms and the base model on a labelled dataset.\n\n"
    "Verbs:\n"
    "  run --experiment NAME --dataset NAME[@V]   Evaluate; prints the table and differences.\n"
    "  compare (EVALUATION | --experiment NAME)   Arms side by side with 95% intervals.\n"
    "  list --experiment NAME                     Stored evaluations, newest first.\n\n"
    "Run `switchyard eval <verb> --help` for a verb's flags.\n";

}  // namespace

int RunEval(const std::vector<std::string>& args) {
  return DispatchVerb("eval", kEvalUsage, args,
                      {{"run", Run}, {"compare", Compare}, {"list", List}});
}

}  // namespace switchyard::cli
