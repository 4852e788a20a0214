// Evaluator: offline evaluation of an experiment's arms (and the untuned base
// model) on a labelled dataset version. Each example's prompt goes through
// the arm exactly as live traffic would (retrieval, context, adapter; greedy
// by default), the answer is scored against the reference (exact match,
// token F1, ROUGE-L; classification metrics when the references are labels;
// retrieval hit rate and MRR when examples name their source document), and
// InferenceService.Score gives the reference's log-likelihood after the
// arm's prompt. Estimates carry 95% bootstrap intervals; every arm is
// compared with the baseline (the base model, else the control arm) on the
// same examples with a paired bootstrap.
//
// Thread-safe; Run blocks (call it on a worker thread).
#ifndef SWITCHYARD_SERVICES_ROUTER_EVALUATOR_H_
#define SWITCHYARD_SERVICES_ROUTER_EVALUATOR_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/router/arm_runner.h"
#include "switchyard/v1/router.pb.h"

namespace switchyard::router {

struct EvalExample {
  std::vector<v1::ChatMessage> prompt;
  std::string reference;
  std::string source_document;  // empty = none named
  int line = 0;                 // 1-based, in the dataset file
};

// Chat or completion JSONL -> examples. INVALID_ARGUMENT naming the line for
// a line that is neither or has no reference answer.
absl::StatusOr<std::vector<EvalExample>> ParseEvalExamples(const std::string& jsonl);

class Evaluator {
 public:
  Evaluator(Backends backends, std::shared_ptr<ArmRunner> runner);

  // `progress(done, total)` after each answer, in order. `cancelled` is
  // polled between answers: when it turns true, Run stops and returns
  // CANCELLED. The returned evaluation is complete but not stored.
  absl::StatusOr<v1::Evaluation> Run(const v1::Experiment& experiment,
                                     const v1::RunEvaluationRequest& request,
                                     const std::function<void(int64_t, int64_t)>& progress,
                                     const std::function<bool()>& cancelled = nullptr);

 private:
  absl::StatusOr<std::string> FetchDataset(const v1::RunEvaluationRequest& request,
                                           std::string* version_name, v1::DatasetSplit* split);

  Backends backends_;
  std::shared_ptr<ArmRunner> runner_;
};

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EVALUATOR_H_
