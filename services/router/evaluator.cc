#include "services/router/evaluator.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/router/eval_metrics.h"
#include "services/router/experiment_proto.h"
#include "services/router/experiment_report.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"
#include "switchyard/v1/dataset.grpc.pb.h"

namespace switchyard::router {
namespace {

constexpr int kDefaultMaxTokens = 128;
constexpr int kMaxExamples = 10000;
constexpr absl::Duration kAnswerDeadline = absl::Minutes(5);

std::string JsonText(const nlohmann::json& j) {
  return j.is_string() ? j.get<std::string>() : std::string();
}

// "x", "x@3", "datasets/x", "datasets/x/versions/3" -> a version name.
std::string VersionName(const std::string& dataset) {
  std::string name = dataset;
  if (!absl::StartsWith(name, "datasets/")) {
    const size_t at = name.find('@');
    if (at != std::string::npos) {
      return absl::StrCat("datasets/", name.substr(0, at), "/versions/", name.substr(at + 1));
    }
    name = absl::StrCat("datasets/", name);
  }
  if (name.find("/versions/") == std::string::npos) absl::StrAppend(&name, "/versions/latest");
  return name;
}

struct Outcome {
  bool ok = false;
  int code = 0;
  std::string text;
  std::vector<std::string> retrieved;  // document ids, in rank order
  double latency = 0;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  bool scored = false;
  double logprob = 0;
  int64_t reference_tokens = 0;
};

v1::MetricEstimate ToEstimate(const Estimate& e) {
  v1::MetricEstimate out;
  out.set_value(e.value);
  out.set_ci_low(e.ci_low);
  out.set_ci_high(e.ci_high);
  out.set_n(e.n);
  return out;
}

}  // namespace

absl::StatusOr<std::vector<EvalExample>> ParseEvalExamples(const std::string& jsonl) {
  std::vector<EvalExample> out;
  size_t start = 0;
  int line = 0;
  while (start < jsonl.size()) {
    size_t end = jsonl.find('\n', start);
    if (end == std::string::npos) end = jsonl.size();
    const std::string text = jsonl.substr(start, end - start);
    start = end + 1;
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("line ", line, ": not a JSON object"));
    }
    EvalExample ex;
    ex.line = line;
    if (j.contains("messages") && j["messages"].is_array() && !j["messages"].empty()) {
      const nlohmann::json& messages = j["messages"];
      const nlohmann::json& last = messages.back();
      if (!last.is_object() || JsonText(last.value("role", nlohmann::json())) != "assistant") {
        return absl::InvalidArgumentError(absl::StrCat(
            "line ", line, ": the last message must be the assistant's reference answer"));
      }
      ex.reference = JsonText(last.value("content", nlohmann::json()));
      for (size_t i = 0; i + 1 < messages.size(); ++i) {
        v1::ChatMessage m;
        m.set_role(JsonText(messages[i].value("role", nlohmann::json())));
        m.set_content(JsonText(messages[i].value("content", nlohmann::json())));
        ex.prompt.push_back(std::move(m));
      }
      if (ex.prompt.empty() || ex.prompt.back().role() != "user") {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line, ": a user message must come before the reference answer"));
      }
    } else if (j.contains("prompt") && j.contains("completion")) {
      v1::ChatMessage m;
      m.set_role("user");
      m.set_content(JsonText(j["prompt"]));
      ex.prompt.push_back(std::move(m));
      ex.reference = JsonText(j["completion"]);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "line ", line,
          ": an evaluation example is chat ({\"messages\": [..., assistant reference]}) or "
          "completion ({\"prompt\", \"completion\"})"));
    }
    if (ex.reference.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line, ": the reference answer is empty"));
    }
    if (j.contains("metadata") && j["metadata"].is_object()) {
      const nlohmann::json& md = j["metadata"];
      ex.source_document = JsonText(md.value("source_document", nlohmann::json()));
      if (ex.source_document.empty())
        ex.source_document = JsonText(md.value("document_id", nlohmann::json()));
    }
    out.push_back(std::move(ex));
  }
  if (out.empty()) return absl::InvalidArgumentError("the dataset has no examples");
  return out;
}

Evaluator::Evaluator(Backends backends, std::shared_ptr<ArmRunner> runner)
    : backends_(std::move(backends)), runner_(std::move(runner)) {}

absl::StatusOr<std::string> Evaluator::FetchDataset(const v1::RunEvaluationRequest& request,
                                                    std::string* version_name,
                                                    v1::DatasetSplit* split) {
  if (!backends_.dataset) {
    return absl::FailedPreconditionError(
        "this router has no --dataset-addr: evaluation datasets come from the dataset service");
  }
  if (request.dataset().empty()) return absl::InvalidArgumentError("dataset: required");
  auto stub = v1::DatasetService::NewStub(backends_.dataset);
  auto context = [&] { return BackendContext(backends_, absl::Now() + absl::Minutes(5)); };
  v1::GetDatasetVersionRequest get;
  get.set_name(VersionName(request.dataset()));
  v1::DatasetVersion version;
  auto c = context();
  SY_RETURN_IF_ERROR(
      rpc::FromGrpcStatus(stub->GetDatasetVersion(c.get(), get, &version), "dataset"));
  if (version.format() == v1::DATASET_FORMAT_PREFERENCE) {
    return absl::InvalidArgumentError(
        absl::StrCat("dataset: ", version.name(),
                     " holds preference pairs; evaluation needs chat or "
                     "completion examples with reference answers"));
  }
  *version_name = version.name();
  *split = request.split();
  if (*split == v1::DATASET_SPLIT_UNSPECIFIED) {
    *split = v1::DATASET_SPLIT_TRAIN;
    for (const v1::DatasetFile& f : version.files()) {
      if (f.split() == v1::DATASET_SPLIT_VALIDATION && f.examples() > 0) {
        *split = v1::DATASET_SPLIT_VALIDATION;
      }
    }
  }
  v1::ExportDatasetRequest exp;
  exp.set_name(version.name());
  exp.set_split(*split);
  auto c2 = context();
  std::unique_ptr<grpc::ClientReader<v1::ExportDatasetResponse>> reader =
      stub->ExportDataset(c2.get(), exp);
  std::string data;
  v1::ExportDatasetResponse part;
  while (reader->Read(&part)) data += part.data();
  SY_RETURN_IF_ERROR(rpc::FromGrpcStatus(reader->Finish(), "dataset export"));
  return data;
}

absl::StatusOr<v1::Evaluation> Evaluator::Run(const v1::Experiment& experiment,
                                              const v1::RunEvaluationRequest& request,
                                              const std::function<void(int64_t, int64_t)>& progress,
                                              const std::function<bool()>& cancelled) {
  if (request.limit() < 0) return absl::InvalidArgumentError("limit: must not be negative");
  if (request.concurrency() < 0) {
    return absl::InvalidArgumentError("concurrency: must not be negative");
  }
  // The arms: the base model of each arm's model first, then the arms asked for.
  std::vector<v1::Arm> arms;
  if (!request.skip_base()) {
    std::vector<std::string> models;  // ids, "models/" stripped
    for (const v1::Arm& a : experiment.arms()) {
      const std::string id =
          absl::StartsWith(a.model(), "models/") ? a.model().substr(7) : a.model();
      if (std::find(models.begin(), models.end(), id) == models.end()) models.push_back(id);
    }
    for (const std::string& model : models) {
      v1::Arm base;
      base.set_name(models.size() == 1 ? "base" : absl::StrCat("base:", model));
      base.set_model(model);
      arms.push_back(std::move(base));
    }
  }
  const size_t base_rows = arms.size();
  if (request.arms().empty()) {
    arms.insert(arms.end(), experiment.arms().begin(), experiment.arms().end());
  } else {
    for (const std::string& name : request.arms()) {
      const v1::Arm* arm = FindArm(experiment, name);
      if (arm == nullptr) {
        return absl::NotFoundError(
            absl::StrCat("arms: ", experiment.name(), " has no arm \"", name, "\""));
      }
      arms.push_back(*arm);
    }
  }
  std::string version_name;
  v1::DatasetSplit split = v1::DATASET_SPLIT_UNSPECIFIED;
  SY_ASSIGN_OR_RETURN(std::string jsonl, FetchDataset(request, &version_name, &split));
  SY_ASSIGN_OR_RETURN(std::vector<EvalExample> examples, ParseEvalExamples(jsonl));
  const int limit = request.limit() > 0 ? std::min(request.limit(), kMaxExamples) : kMaxExamples;
  if (static_cast<int>(examples.size()) > limit) examples.resize(static_cast<size_t>(limit));

  v1::SamplingParams sampling;
  sampling.set_temperature(0);
  sampling.set_max_tokens(kDefaultMaxTokens);
  sampling = MergeSampling(sampling, request.sampling());

  // Every (arm, example) answer, on `concurrency` workers.
  const size_t n = examples.size();
  const int64_t total = static_cast<int64_t>(arms.size() * n);
  std::vector<std::vector<Outcome>> outcomes(arms.size(), std::vector<Outcome>(n));
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  int64_t done = 0;  // under progress_mu
  std::mutex progress_mu;
  auto inference =
      backends_.inference ? v1::InferenceService::NewStub(backends_.inference) : nullptr;
  auto work = [&] {
    while (true) {
      if (stop.load() || (cancelled && cancelled())) {
        stop = true;
        return;
      }
      const int64_t task = next.fetch_add(1);
      if (task >= total) return;
      const size_t a = static_cast<size_t>(task) / n, i = static_cast<size_t>(task) % n;
      const v1::Arm& arm = arms[a];
      v1::ChatRequest chat;
      chat.set_experiment(experiment.name());
      for (const v1::ChatMessage& m : examples[i].prompt) *chat.add_messages() = m;
      *chat.mutable_sampling() = sampling;
      ArmCall call;
      call.experiment = &experiment;
      call.arm = &arm;
      call.request = &chat;
      call.response_id = absl::StrCat("eval-", RandomHex(6));
      call.start = absl::Now();
      call.deadline = call.start + kAnswerDeadline;
      ArmAnswer answer = runner_->Run(call);
      Outcome& o = outcomes[a][i];
      o.ok = answer.status.ok();
      o.code = static_cast<int>(answer.status.code());
      o.text = answer.text;
      o.latency = answer.timings.total_seconds();
      o.prompt_tokens = answer.usage.prompt_tokens();
      o.completion_tokens = answer.usage.completion_tokens();
      o.retrieved = answer.retrieved_documents;
      if (o.ok && !request.skip_score() && inference != nullptr) {
        v1::ScoreRequest score;
        score.set_model(arm.model());
        score.set_adapter(arm.adapter());
        for (const Message& m : answer.prompt_messages) {
          v1::ChatMessage* pm = score.mutable_chat()->add_messages();
          pm->set_role(m.role);
          pm->set_content(m.content);
        }
        score.add_completions(examples[i].reference);
        v1::ScoreResponse scored;
        auto ctx = BackendContext(backends_, absl::Now() + kAnswerDeadline);
        if (inference->Score(ctx.get(), score, &scored).ok() && scored.scores_size() == 1) {
          o.scored = true;
          o.logprob = scored.scores(0).logprob();
          o.reference_tokens = scored.scores(0).tokens();
        }
      }
      std::lock_guard<std::mutex> lock(progress_mu);
      ++done;
      if (progress) progress(done, total);
    }
  };
  constexpr int kMaxConcurrency = 64;
  const int workers =
      std::clamp(request.concurrency() > 0 ? request.concurrency() : 8, 1, kMaxConcurrency);
  std::vector<std::thread> threads;
  for (int w = 0; w < std::min<int64_t>(workers, std::max<int64_t>(total, 1)); ++w) {
    threads.emplace_back(work);
  }
  for (std::thread& t : threads) t.join();
  if (stop.load()) return absl::CancelledError("the evaluation was cancelled");

  // Scores per arm.
  v1::Evaluation out;
  out.set_experiment(experiment.name());
  out.set_dataset_version(version_name);
  out.set_split(split);
  out.set_examples(static_cast<int64_t>(n));
  *out.mutable_sampling() = sampling;
  std::vector<std::string> references;
  for (const EvalExample& ex : examples) references.push_back(ex.reference);
  const bool labels = IsLabelSet(references);
  std::map<std::string, std::vector<std::vector<double>>> per_metric;  // metric -> arm -> values
  const std::vector<std::string> metric_names = {"exact_match", "token_f1", "rouge_l",
                                                 "reference_logprob"};
  for (const std::string& m : metric_names) per_metric[m].resize(arms.size());
  // Reference log-likelihood per example; NaN where the answer or Score failed.
  std::vector<std::vector<double>> logprob_by_example(arms.size(), std::vector<double>(n, NAN));
  for (size_t a = 0; a < arms.size(); ++a) {
    const v1::Arm& arm = arms[a];
    v1::ArmEvaluation* r = out.add_arms();
    r->set_arm(arm.name());
    r->set_model(absl::StartsWith(arm.model(), "models/") ? arm.model()
                                                          : absl::StrCat("models/", arm.model()));
    r->set_adapter(arm.adapter());
    r->set_retrieval(arm.has_retrieval());
    std::vector<double> em, f1, rouge, logprob, token_logprob, latency;
    std::vector<std::string> predictions;
    std::vector<int> ranks;
    double prompt_tokens = 0, completion_tokens = 0;
    int64_t errors = 0;
    for (size_t i = 0; i < n; ++i) {
      const Outcome& o = outcomes[a][i];
      if (!o.ok) ++errors;
      const std::string& text = o.ok ? o.text : std::string();
      em.push_back(ExactMatch(text, examples[i].reference));
      f1.push_back(TokenF1(text, examples[i].reference));
      rouge.push_back(RougeL(text, examples[i].reference));
      predictions.push_back(text);
      if (o.scored) {
        logprob.push_back(o.logprob);
        logprob_by_example[a][i] = o.logprob;
        if (o.reference_tokens > 0) {
          token_logprob.push_back(o.logprob / static_cast<double>(o.reference_tokens));
        }
      }
      if (o.ok) {
        latency.push_back(o.latency);
        prompt_tokens += static_cast<double>(o.prompt_tokens);
        completion_tokens += static_cast<double>(o.completion_tokens);
      }
      if (arm.has_retrieval() && !examples[i].source_document.empty()) {
        ranks.push_back(FirstRelevantRank(o.retrieved, examples[i].source_document));
      }
    }
    r->set_examples(static_cast<int64_t>(n) - errors);
    r->set_errors(errors);
    *r->mutable_exact_match() = ToEstimate(BootstrapMean(em));
    *r->mutable_token_f1() = ToEstimate(BootstrapMean(f1));
    *r->mutable_rouge_l() = ToEstimate(BootstrapMean(rouge));
    if (!logprob.empty()) {
      *r->mutable_reference_logprob() = ToEstimate(BootstrapMean(logprob));
    }
    if (!token_logprob.empty()) {
      *r->mutable_reference_token_logprob() = ToEstimate(BootstrapMean(token_logprob));
    }
    per_metric["exact_match"][a] = em;
    per_metric["token_f1"][a] = f1;
    per_metric["rouge_l"][a] = rouge;

    if (labels) {
      ClassificationReport c = Classify(predictions, references);
      v1::ClassificationMetrics* cm = r->mutable_classification();
      cm->set_examples(c.examples);
      cm->set_accuracy(c.accuracy);
      cm->set_macro_precision(c.macro_precision);
      cm->set_macro_recall(c.macro_recall);
      cm->set_macro_f1(c.macro_f1);
      for (const std::string& l : c.labels) cm->add_labels(l);
    }
    if (!ranks.empty()) {
      RetrievalReport rr = SummarizeRanks(ranks);
      v1::RetrievalMetrics* rm = r->mutable_retrieval_metrics();
      rm->set_examples(rr.examples);
      rm->set_hit_rate(rr.hit_rate);
      rm->set_mrr(rr.mrr);
      rm->set_k(arm.retrieval().k() > 0 ? arm.retrieval().k() : 4);
    }
    if (!latency.empty()) {
      ToProto(SummarizeLatency(latency), r->mutable_latency());
      r->set_prompt_tokens_per_example(prompt_tokens / static_cast<double>(latency.size()));
      r->set_completion_tokens_per_example(completion_tokens / static_cast<double>(latency.size()));
    }
  }
  // Every arm against the baseline: the (first) base model, else the
  // experiment's control arm when it was evaluated, else the first arm.
  size_t baseline = 0;
  if (base_rows == 0) {
    const std::string control = experiment.analysis().control_arm().empty()
                                    ? experiment.arms(0).name()
                                    : experiment.analysis().control_arm();
    for (size_t a = 0; a < arms.size(); ++a) {
      if (arms[a].name() == control) baseline = a;
    }
  }
  for (size_t a = base_rows; a < arms.size(); ++a) {
    if (a == baseline) continue;
    for (const std::string& metric : metric_names) {
      std::vector<double> mine, theirs;
      if (metric == "reference_logprob") {
        // On the examples both scored.
        for (size_t i = 0; i < n; ++i) {
          if (!std::isnan(logprob_by_example[a][i]) &&
              !std::isnan(logprob_by_example[baseline][i])) {
            mine.push_back(logprob_by_example[a][i]);
            theirs.push_back(logprob_by_example[baseline][i]);
          }
        }
      } else {
        mine = per_metric[metric][a];
        theirs = per_metric[metric][baseline];
      }
      if (mine.empty() || mine.size() != theirs.size()) continue;
      PairedDifference d = BootstrapPairedDifference(mine, theirs);
      v1::EvaluationComparison* c = out.add_comparisons();
      c->set_arm(arms[a].name());
      c->set_baseline(arms[baseline].name());
      c->set_metric(metric);
      *c->mutable_difference() = ToEstimate(d.difference);
      c->set_significant(d.significant);
    }
  }
  return out;
}

}  // namespace switchyard::router
