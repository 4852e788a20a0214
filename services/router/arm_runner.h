// ArmRunner: answers one request with one arm by calling the backends:
// RetrievalService.Search (arms with retrieval), InferenceService.Tokenize
// (to fit the context into the token budget) and InferenceService.Complete
// or Generate (streaming). The caller's deadline bounds every call;
// retrieval also gets the arm's own timeout. A served request's backend calls
// are cancelled with it; a shadow request's are not.
//
// Thread-safe; calls block (run them on a worker thread).
#ifndef SWITCHYARD_SERVICES_ROUTER_ARM_RUNNER_H_
#define SWITCHYARD_SERVICES_ROUTER_ARM_RUNNER_H_

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/router/context_prompt.h"
#include "switchyard/v1/inference.grpc.pb.h"
#include "switchyard/v1/retrieval.grpc.pb.h"
#include "switchyard/v1/router.pb.h"

namespace switchyard::router {

// Channels to the services the router calls (the network, or in-process
// channels of the same server with --target=all).
struct Backends {
  std::shared_ptr<grpc::Channel> inference;
  std::shared_ptr<grpc::Channel> retrieval;
  std::shared_ptr<grpc::Channel> dataset;
  std::string token;  // sent as a bearer token on every backend call; empty = none
};

// A client context for a call to a backend: the bearer token and, unless
// infinite, the deadline.
std::unique_ptr<grpc::ClientContext> BackendContext(const Backends& backends, absl::Time deadline);

struct ArmCall {
  const v1::Experiment* experiment = nullptr;
  const v1::Arm* arm = nullptr;
  const v1::ChatRequest* request = nullptr;
  std::string response_id;                       // passed to inference as its request id
  absl::Time start;                              // arrival at the router
  absl::Time deadline = absl::InfiniteFuture();  // the caller's
  // The served request's context (cancellation and deadline propagate to
  // the backend calls); null for shadow requests.
  const grpc::CallbackServerContext* parent = nullptr;
  // Streaming: called once with the answer's head (sources, context state)
  // before generation, then with each text delta. Unset = unary.
  std::function<void(const struct ArmAnswer& head)> on_head;
  std::function<void(const std::string& delta)> on_text;
};

struct ArmAnswer {
  absl::Status status;
  std::string text;
  std::vector<PromptSource> sources;
  std::vector<bool> cited;
  // Document ids of every retrieved chunk, best first (also those the token
  // budget left out of the prompt).
  std::vector<std::string> retrieved_documents;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
  v1::ChatTimings timings;
  bool context_missing = false;
  v1::ContextMissingReason context_missing_reason = v1::CONTEXT_MISSING_REASON_UNSPECIFIED;
  std::vector<Message> prompt_messages;
};

class ArmRunner {
 public:
  explicit ArmRunner(Backends backends);

  ArmAnswer Run(const ArmCall& call);

 private:
  // Sets token, deadline and (served requests) propagation from the parent.
  std::unique_ptr<grpc::ClientContext> Context(const ArmCall& call, absl::Time deadline) const;
  // Retrieves and places the context; fills sources and context state.
  absl::Status Retrieve(const ArmCall& call, std::vector<Message>* messages, ArmAnswer* answer);
  absl::Status Generate(const ArmCall& call, const std::vector<Message>& messages,
                        ArmAnswer* answer);

  Backends backends_;
  std::unique_ptr<v1::InferenceService::Stub> inference_;
  std::unique_ptr<v1::RetrievalService::Stub> retrieval_;
};

// The arm's sampling defaults with the request's set fields on top.
v1::SamplingParams MergeSampling(const v1::SamplingParams& arm, const v1::SamplingParams& request);

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_ARM_RUNNER_H_
