// InferenceService gRPC adapter: loaded models (one Engine each), requests
// translated to Engine calls, roles enforced (admin: loading and unloading
// models and adapters; user: generation, scoring, listing) and the
// switchyard_inference_* metrics exported.
//
// Names resolve against the artifact store as the training service lays it
// out: a model or adapter id "x" is <data_dir>/models/x, a checkpoint name
// "jobs/<job>/checkpoints/<step>" is that directory under <data_dir>. A
// LoadModel / LoadAdapter path, or the serve command's NAME=DIR, names a
// directory directly.
//
// Generate streams through a write reactor fed by the engine's thread:
// tokens that arrive while a write is in flight go out together in the next
// message, so a slow client never holds the batch up. A client that cancels
// or goes away, or whose deadline passes, leaves the batch at the next token.
//
// Thread-safe. Shut the gRPC server down before destroying the service.
#ifndef SWITCHYARD_SERVICES_INFERENCE_INFERENCE_SERVICE_H_
#define SWITCHYARD_SERVICES_INFERENCE_INFERENCE_SERVICE_H_

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "services/inference/engine.h"
#include "shared/core/thread_pool.h"
#include "shared/rpc/auth.h"
#include "switchyard/v1/inference.grpc.pb.h"

namespace switchyard::inference {

struct InferenceMetrics {
  explicit InferenceMetrics(prometheus::Registry& registry);
  // Observer callbacks that feed these metrics for one model.
  EngineObserver ObserverFor(const std::string& model);

  prometheus::Family<prometheus::Histogram>& time_to_first_token;  // {model, adapter}
  prometheus::Family<prometheus::Histogram>& inter_token;          // {model, adapter}
  prometheus::Family<prometheus::Histogram>& e2e;                  // {model, adapter}
  prometheus::Family<prometheus::Counter>& prompt_tokens;          // {model, adapter}
  prometheus::Family<prometheus::Counter>& generation_tokens;      // {model, adapter}
  prometheus::Family<prometheus::Counter>& requests;               // {model, adapter, outcome}
  prometheus::Family<prometheus::Gauge>& running;                  // {model}
  prometheus::Family<prometheus::Gauge>& waiting;                  // {model}
  prometheus::Family<prometheus::Gauge>& kv_usage;                 // {model}
  prometheus::Family<prometheus::Gauge>& adapters_loaded;          // {model}
};

struct InferenceServiceOptions {
  std::string data_dir;  // the artifact store (models/, jobs/)
  // Defaults for every model (LoadModel may override dtype, device, KV
  // budget and context).
  EngineOptions engine;
  int load_threads = 2;  // workers that load models and score
};

class InferenceServiceImpl final : public v1::InferenceService::CallbackService {
 public:
  InferenceServiceImpl(InferenceServiceOptions options, std::shared_ptr<const rpc::Authorizer> auth,
                       prometheus::Registry& registry);
  ~InferenceServiceImpl() override;

  // Loads a model at start; `dir` empty = from the artifact store.
  absl::StatusOr<std::shared_ptr<Engine>> AddModel(const std::string& name, const std::string& dir);
  // Registers an adapter's directory by name (the serve command's
  // --adapter NAME=DIR); loaded on first use.
  void AddAdapterPath(const std::string& name, const std::string& dir);

  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* context,
                                      const v1::LoadModelRequest* request,
                                      v1::LoadedModel* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* context,
                                        const v1::UnloadModelRequest* request,
                                        google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* LoadAdapter(grpc::CallbackServerContext* context,
                                        const v1::LoadAdapterRequest* request,
                                        v1::LoadedAdapter* response) override;
  grpc::ServerUnaryReactor* UnloadAdapter(grpc::CallbackServerContext* context,
                                          const v1::UnloadAdapterRequest* request,
                                          google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListLoadedModelsRequest* request,
                                       v1::ListLoadedModelsResponse* response) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* context,
                                     const v1::GenerateRequest* request,
                                     v1::CompleteResponse* response) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* context,
                                  const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const v1::TokenizeRequest* request,
                                     v1::TokenizeResponse* response) override;

  // For the reactors.
  const rpc::Authorizer& auth() const { return *auth_; }
  InferenceMetrics& metrics() { return metrics_; }
  // NOT_FOUND naming the model when it is not loaded.
  absl::StatusOr<std::shared_ptr<Engine>> FindModel(const std::string& name) const;

 private:
  absl::StatusOr<std::string> ResolveDir(const std::string& name, const char* what) const;
  absl::StatusOr<std::shared_ptr<Engine>> Load(const std::string& name, const std::string& dir,
                                               EngineOptions options);
  void Describe(const Engine& engine, v1::LoadedModel* out) const;

  InferenceServiceOptions options_;
  std::shared_ptr<const rpc::Authorizer> auth_;
  InferenceMetrics metrics_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Engine>> models_;
  std::map<std::string, std::string> adapter_paths_;  // --adapter NAME=DIR
  ThreadPool pool_;                                   // last: joined first
};

// Fills an engine request from the proto: input (chat or prompt), sampling
// over the model's defaults, deadline. INVALID_ARGUMENT names the field.
absl::StatusOr<GenerateInput> ToGenerateInput(const Engine& engine,
                                              const v1::GenerateRequest& request);

}  // namespace switchyard::inference

#endif  // SWITCHYARD_SERVICES_INFERENCE_INFERENCE_SERVICE_H_
