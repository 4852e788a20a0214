// RouterService gRPC adapter: experiments (create, update, archive), chat
// requests answered by the assigned arm (with shadow answers in the
// background), the interaction log, feedback, pairwise reviews, exports to
// the dataset service and the report. Roles: admin for changing experiments
// and exporting; user for the rest.
//
// Chat requests run on a worker pool (each holds a thread while its backend
// calls run); shadow answers on a pool of their own, skipped (never queued)
// past the experiment's max_in_flight. Experiments live in memory, written
// through to the store; the bandit recomputes weights on its own thread.
//
// Thread-safe. Shut the gRPC server down before destroying the service.
#ifndef SWITCHYARD_SERVICES_ROUTER_ROUTER_SERVICE_H_
#define SWITCHYARD_SERVICES_ROUTER_ROUTER_SERVICE_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "services/router/arm_runner.h"
#include "services/router/experiment_store.h"
#include "shared/core/thread_pool.h"
#include "shared/rpc/auth.h"
#include "switchyard/v1/router.grpc.pb.h"

namespace switchyard::router {

struct RouterMetrics {
  explicit RouterMetrics(prometheus::Registry& registry);

  prometheus::Family<prometheus::Counter>& requests;              // {experiment, arm, code}
  prometheus::Family<prometheus::Histogram>& duration;            // {experiment, arm}
  prometheus::Family<prometheus::Histogram>& retrieval_duration;  // {experiment, arm}
  prometheus::Family<prometheus::Counter>& tokens;                // {experiment, arm, kind}
  prometheus::Family<prometheus::Counter>& feedback;              // {experiment, arm}
  prometheus::Family<prometheus::Histogram>& feedback_score;      // {experiment, arm}, [0, 1]
  prometheus::Family<prometheus::Gauge>& arm_weight;              // {experiment, arm}
  prometheus::Family<prometheus::Counter>& shadow;                // {experiment, arm, outcome}
  prometheus::Family<prometheus::Counter>& context_missing;       // {experiment, arm, reason}
};

struct RouterServiceOptions {
  int chat_threads = 64;    // chat requests answered at once
  int shadow_threads = 16;  // shadow answers generated at once (all experiments)
  // Deadline of a shadow answer (it never has the caller's).
  absl::Duration shadow_timeout = absl::Minutes(2);
  // How often the bandit thread looks for experiments due an update.
  absl::Duration bandit_tick = absl::Seconds(1);
};

class RouterServiceImpl final : public v1::RouterService::CallbackService {
 public:
  // Loads the experiments from `store`. Backends may come later (SetBackends)
  // when they are this process's own in-process channels.
  static absl::StatusOr<std::unique_ptr<RouterServiceImpl>> Create(
      RouterServiceOptions options, ExperimentStore* store, Backends backends,
      std::shared_ptr<const rpc::Authorizer> auth, prometheus::Registry& registry);
  ~RouterServiceImpl() override;

  void SetBackends(Backends backends);

  grpc::ServerUnaryReactor* CreateExperiment(grpc::CallbackServerContext* context,
                                             const v1::CreateExperimentRequest* request,
                                             v1::Experiment* response) override;
  grpc::ServerUnaryReactor* GetExperiment(grpc::CallbackServerContext* context,
                                          const v1::GetExperimentRequest* request,
                                          v1::Experiment* response) override;
  grpc::ServerUnaryReactor* ListExperiments(grpc::CallbackServerContext* context,
                                            const v1::ListExperimentsRequest* request,
                                            v1::ListExperimentsResponse* response) override;
  grpc::ServerUnaryReactor* UpdateExperiment(grpc::CallbackServerContext* context,
                                             const v1::UpdateExperimentRequest* request,
                                             v1::Experiment* response) override;
  grpc::ServerUnaryReactor* ArchiveExperiment(grpc::CallbackServerContext* context,
                                              const v1::ArchiveExperimentRequest* request,
                                              v1::Experiment* response) override;
  grpc::ServerUnaryReactor* Chat(grpc::CallbackServerContext* context,
                                 const v1::ChatRequest* request,
                                 v1::ChatResponse* response) override;
  grpc::ServerWriteReactor<v1::ChatStreamResponse>* ChatStream(
      grpc::CallbackServerContext* context, const v1::ChatRequest* request) override;
  grpc::ServerUnaryReactor* GetInteraction(grpc::CallbackServerContext* context,
                                           const v1::GetInteractionRequest* request,
                                           v1::Interaction* response) override;
  grpc::ServerUnaryReactor* ListInteractions(grpc::CallbackServerContext* context,
                                             const v1::ListInteractionsRequest* request,
                                             v1::ListInteractionsResponse* response) override;
  grpc::ServerUnaryReactor* RecordFeedback(grpc::CallbackServerContext* context,
                                           const v1::RecordFeedbackRequest* request,
                                           v1::Feedback* response) override;
  grpc::ServerUnaryReactor* RecordComparison(grpc::CallbackServerContext* context,
                                             const v1::RecordComparisonRequest* request,
                                             v1::Comparison* response) override;
  grpc::ServerUnaryReactor* ExportComparisons(grpc::CallbackServerContext* context,
                                              const v1::ExportComparisonsRequest* request,
                                              v1::ExportComparisonsResponse* response) override;
  grpc::ServerUnaryReactor* ExportInteractions(grpc::CallbackServerContext* context,
                                               const v1::ExportInteractionsRequest* request,
                                               v1::ExportInteractionsResponse* response) override;
  grpc::ServerUnaryReactor* GetExperimentReport(grpc::CallbackServerContext* context,
                                                const v1::GetExperimentReportRequest* request,
                                                v1::ExperimentReport* response) override;
  grpc::ServerWriteReactor<v1::EvaluationProgress>* RunEvaluation(
      grpc::CallbackServerContext* context, const v1::RunEvaluationRequest* request) override;
  grpc::ServerUnaryReactor* GetEvaluation(grpc::CallbackServerContext* context,
                                          const v1::GetEvaluationRequest* request,
                                          v1::Evaluation* response) override;
  grpc::ServerUnaryReactor* ListEvaluations(grpc::CallbackServerContext* context,
                                            const v1::ListEvaluationsRequest* request,
                                            v1::ListEvaluationsResponse* response) override;

  // One chat request, start to end, on the calling (worker) thread: plan,
  // answer, shadow, log, metrics. With `stream` set, the streaming callbacks
  // get the head and text deltas. Used by Chat and ChatStream.
  struct Streaming {
    std::function<void(const v1::ChatStreamResponse& head)> head;
    std::function<void(const std::string& delta)> text;
  };
  // `arrival`: when the request reached the router (timings count from it).
  absl::Status Answer(const grpc::CallbackServerContext& context, const v1::ChatRequest& request,
                      absl::Time arrival, const Streaming* stream, v1::ChatResponse* response);
  ThreadPool& chat_pool() { return chat_pool_; }
  const rpc::Authorizer& auth() const { return *auth_; }

  // Recomputes bandit weights of experiments that are due (the bandit
  // thread's work; public for tests). `force` ignores the interval.
  void UpdateBandits(bool force);

 private:
  struct Plan;
  RouterServiceImpl(RouterServiceOptions options, ExperimentStore* store,
                    std::shared_ptr<const rpc::Authorizer> auth, prometheus::Registry& registry);

  absl::StatusOr<std::shared_ptr<const v1::Experiment>> Find(const std::string& name) const;
  absl::Status Put(v1::Experiment experiment, bool create);
  absl::Status CheckBackends(const v1::Experiment& experiment) const;
  void PublishWeights(const v1::Experiment& experiment);
  std::shared_ptr<ArmRunner> runner() const;
  void StartShadow(std::shared_ptr<const v1::Experiment> experiment, const v1::Arm* arm,
                   const v1::ChatRequest& request, const std::string& shadow_id,
                   const std::string& served_id);
  void Log(const v1::Experiment& experiment, const v1::Arm& arm, const v1::ChatRequest& request,
           const ArmAnswer& answer, const std::string& response_id, bool shadow,
           const std::string& paired_id, bool overridden, int64_t create_us);
  absl::StatusOr<v1::Interaction> ReadInteraction(const InteractionRecord& record,
                                                  bool with_reviews);
  absl::Status Upload(const std::string& dataset_id, v1::DatasetFormat format,
                      const std::string& jsonl, bool validate_only, const std::string& description,
                      v1::UploadDatasetResponse* response);
  void BanditLoop();

  RouterServiceOptions options_;
  ExperimentStore* store_;
  std::shared_ptr<const rpc::Authorizer> auth_;
  RouterMetrics metrics_;

  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const v1::Experiment>> experiments_;
  std::map<std::string, int> shadows_in_flight_;  // by experiment id
  int shadows_total_ = 0;                         // all experiments
  std::map<std::string, absl::Time> bandit_updated_;
  std::shared_ptr<ArmRunner> runner_;
  Backends backends_;

  std::mutex bandit_mu_;
  std::condition_variable bandit_wake_;
  bool stopping_ = false;
  std::thread bandit_thread_;
  ThreadPool eval_pool_;  // evaluations (each runs its own answer workers)
  ThreadPool shadow_pool_;
  ThreadPool chat_pool_;  // last: joined first
};

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_ROUTER_SERVICE_H_
