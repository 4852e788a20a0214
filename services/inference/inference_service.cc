#include "services/inference/inference_service.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/model/runtime.h"
#include "shared/rpc/status_mapping.h"
#include "shared/rpc/unary.h"

namespace switchyard::inference {
namespace {

using rpc::Offload;
using rpc::Role;
using rpc::Unary;

const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
    0.75,  1,     2.5,  5,    7.5,  10,   20,   40,  80};
const prometheus::Histogram::BucketBoundaries kItlBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075,
    0.1,   0.15,   0.2,   0.3,  0.4,   0.5,  0.75,  1.0,  2.5,  5.0};
const prometheus::Histogram::BucketBoundaries kE2eBuckets = {
    0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 300, 600};

std::string ModelId(const std::string& name) {
  return absl::StartsWith(name, "models/") ? name.substr(7) : name;
}

std::string RequestId(const grpc::CallbackServerContext& context, const std::string& given) {
  if (!given.empty()) return given;
  auto it = context.client_metadata().find("x-request-id");
  if (it != context.client_metadata().end())
    return std::string(it->second.data(), it->second.size());
  return RandomHex(8);
}

absl::Time Deadline(const grpc::CallbackServerContext& context) {
  const auto d = context.deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

google::protobuf::Timestamp ToTimestamp(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t ns = absl::ToUnixNanos(t);
  ts.set_seconds(ns / 1000000000);
  ts.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return ts;
}

// config.json's architectures[0] for the decoder families served.
std::string HfArchitecture(model::Architecture arch) {
  switch (arch) {
    case model::Architecture::kGpt2:
      return "GPT2LMHeadModel";
    case model::Architecture::kLlama:
      return "LlamaForCausalLM";
    case model::Architecture::kMistral:
      return "MistralForCausalLM";
    case model::Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    default:
      return std::string(model::ArchitectureName(arch));
  }
}

v1::FinishReason FinishReason(const std::string& reason) {
  if (reason == "stop") return v1::FINISH_REASON_STOP;
  if (reason == "length") return v1::FINISH_REASON_LENGTH;
  return v1::FINISH_REASON_UNSPECIFIED;
}

// "token:{id}" for a stop token id of the request, "eos" for the model's EOS
// tokens, else the stop string.
std::string StopReason(const model::Generation& g, const std::vector<int64_t>& stop_ids) {
  if (g.finish_reason != "stop") return "";
  if (g.stop_token >= 0) {
    const bool asked = std::find(stop_ids.begin(), stop_ids.end(), g.stop_token) != stop_ids.end();
    return asked ? absl::StrCat("token:", g.stop_token) : "eos";
  }
  return g.stop_reason;
}

void FillLogprob(const Engine& engine, int64_t id, double logprob,
                 const std::vector<std::pair<int64_t, double>>& top, v1::TokenLogprob* out) {
  out->set_token_id(static_cast<int32_t>(id));
  out->set_token(engine.TokenText(id));
  out->set_logprob(logprob);
  for (const auto& [alt, lp] : top) {
    v1::TopLogprob* t = out->add_top_logprobs();
    t->set_token_id(static_cast<int32_t>(alt));
    t->set_token(engine.TokenText(alt));
    t->set_logprob(lp);
  }
}

void FillTimings(const Timings& t, v1::GenerationTimings* out) {
  out->set_queue_seconds(t.queue_seconds);
  out->set_time_to_first_token_seconds(t.time_to_first_token_seconds);
  out->set_mean_inter_token_seconds(t.mean_inter_token_seconds);
  out->set_total_seconds(t.total_seconds);
}

// The outcome label of switchyard_inference_requests_total.
std::string Outcome(const absl::StatusOr<GenerateResult>& r) {
  if (r.ok()) return r->generation.finish_reason;
  switch (r.status().code()) {
    case absl::StatusCode::kCancelled:
      return "cancelled";
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline_exceeded";
    case absl::StatusCode::kResourceExhausted:
      return "rejected";
    default:
      return "error";
  }
}

// The usage, finish reason, stop reason and timings of a finished request.
template <typename Response>
void FillFinal(const GenerateResult& r, const std::vector<int64_t>& stop_ids, Response* out) {
  const model::Generation& g = r.generation;
  out->set_finish_reason(FinishReason(g.finish_reason));
  out->set_stop_reason(StopReason(g, stop_ids));
  v1::Usage* usage = out->mutable_usage();
  usage->set_prompt_tokens(g.prompt_tokens);
  usage->set_completion_tokens(static_cast<int64_t>(g.token_ids.size()));
  usage->set_total_tokens(g.prompt_tokens + static_cast<int64_t>(g.token_ids.size()));
  out->set_cached_prompt_tokens(r.cached_prompt_tokens);
  FillTimings(r.timings, out->mutable_timings());
}

// What Generate and Complete share: the checks, the engine request and its
// handle, cancellation (before or after submission), the outcome count.
class Submission {
 public:
  explicit Submission(InferenceServiceImpl* service) : service_(service) {}

  // Authorizes, finds the model and queues the request, whose tokens and end
  // go to `sink`.
  absl::Status Start(const grpc::CallbackServerContext& context, const v1::GenerateRequest& request,
                     const std::string& request_id, std::shared_ptr<GenerationSink> sink) {
    SY_RETURN_IF_ERROR(service_->auth().Authorize(context, Role::kUser));
    SY_ASSIGN_OR_RETURN(engine_, service_->FindModel(request.model()));
    SY_ASSIGN_OR_RETURN(GenerateInput input, ToGenerateInput(*engine_, request));
    input.deadline = Deadline(context);
    input.request_id = request_id;
    adapter_ = input.adapter;
    logprobs_ = request.sampling().logprobs();
    stop_ids_ = input.params.stop_token_ids;
    std::lock_guard<std::mutex> lock(mu_);
    SY_ASSIGN_OR_RETURN(handle_, engine_->Submit(std::move(input), std::move(sink)));
    submitted_ = true;
    if (cancel_requested_) engine_->Cancel(handle_);
    return absl::OkStatus();
  }

  // Stops the request at its next token (or as soon as it is submitted).
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    cancel_requested_ = true;
    if (submitted_ && !done_) engine_->Cancel(handle_);
  }

  // The request ended (or never started): counts its outcome.
  void Done(const absl::StatusOr<GenerateResult>& r) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    service_->metrics()
        .requests
        .Add({{"model", engine_ ? engine_->name() : ""},
              {"adapter", adapter_},
              {"outcome", Outcome(r)}})
        .Increment();
  }

  const Engine& engine() const { return *engine_; }
  bool logprobs() const { return logprobs_; }
  const std::vector<int64_t>& stop_ids() const { return stop_ids_; }

 private:
  InferenceServiceImpl* service_;
  std::shared_ptr<Engine> engine_;
  std::string adapter_;
  bool logprobs_ = false;
  std::vector<int64_t> stop_ids_;
  std::mutex mu_;
  uint64_t handle_ = 0;
  bool submitted_ = false, cancel_requested_ = false, done_ = false;
};

// Forwards an engine's callbacks to a reactor (which outlives the request).
template <typename Reactor>
class ReactorSink : public GenerationSink {
 public:
  explicit ReactorSink(Reactor* r) : r_(r) {}
  void OnToken(const model::StreamedToken& t) override { r_->Token(t); }
  void OnDone(absl::StatusOr<GenerateResult> result) override { r_->Done(std::move(result)); }

 private:
  Reactor* r_;
};

// Streams one generation. The engine's sink appends tokens to the pending
// message and starts a write when none is in flight; OnWriteDone sends what
// gathered meanwhile, then the final status once the engine is done.
class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  GenerateReactor(InferenceServiceImpl* service, grpc::CallbackServerContext* context,
                  const v1::GenerateRequest& request)
      : submission_(service), request_id_(RequestId(*context, request.request_id())) {
    pending_.set_request_id(request_id_);
    absl::Status s = submission_.Start(*context, request, request_id_,
                                       std::make_shared<ReactorSink<GenerateReactor>>(this));
    if (!s.ok()) {
      submission_.Done(s);
      Finish(rpc::ToGrpcStatus(s));
    }
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      client_gone_ = true;
      submission_.Cancel();
    }
    Pump();
  }
  void OnCancel() override { submission_.Cancel(); }
  void OnDone() override { delete this; }

  void Token(const model::StreamedToken& t) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.mutable_text()->append(t.text);
    pending_.add_token_ids(static_cast<int32_t>(t.id));
    if (submission_.logprobs()) {
      FillLogprob(submission_.engine(), t.id, t.logprob, t.top_logprobs, pending_.add_logprobs());
    }
    has_pending_ = true;
    Pump();
  }

  void Done(absl::StatusOr<GenerateResult> result) {
    submission_.Done(result);
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    if (result.ok()) {
      FillFinal(*result, submission_.stop_ids(), &pending_);
      has_pending_ = true;
      if (result->generation.finish_reason == "cancelled") {
        final_ = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
    } else {
      final_ = rpc::ToGrpcStatus(result.status());
      if (!absl::IsCancelled(result.status()) && !absl::IsDeadlineExceeded(result.status())) {
        SY_LOG_REQ(kWarning, "inference", request_id_) << "generation failed: " << result.status();
      }
    }
    Pump();
  }

 private:
  // With mu_ held: starts the next write, or finishes.
  void Pump() {
    if (writing_ || finished_) return;
    if (has_pending_ && !client_gone_) {
      out_ = pending_;
      pending_.Clear();
      pending_.set_request_id(request_id_);
      has_pending_ = false;
      writing_ = true;
      StartWrite(&out_);
      return;
    }
    if (done_) {
      finished_ = true;
      Finish(final_);
    }
  }

  Submission submission_;
  const std::string request_id_;
  std::mutex mu_;
  v1::GenerateResponse pending_, out_;
  bool has_pending_ = false, writing_ = false, done_ = false, finished_ = false;
  bool client_gone_ = false;
  grpc::Status final_ = grpc::Status::OK;
};

// The unary form: the whole text in one response.
class CompleteReactor : public grpc::ServerUnaryReactor {
 public:
  CompleteReactor(InferenceServiceImpl* service, grpc::CallbackServerContext* context,
                  const v1::GenerateRequest& request, v1::CompleteResponse* response)
      : submission_(service), response_(response) {
    response_->set_request_id(RequestId(*context, request.request_id()));
    absl::Status s = submission_.Start(*context, request, response_->request_id(),
                                       std::make_shared<ReactorSink<CompleteReactor>>(this));
    if (!s.ok()) {
      submission_.Done(s);
      Finish(rpc::ToGrpcStatus(s));
    }
  }
  void OnCancel() override { submission_.Cancel(); }
  void OnDone() override { delete this; }

  // Logprobs are gathered per token; the rest comes with the result.
  void Token(const model::StreamedToken& t) {
    if (submission_.logprobs()) {
      FillLogprob(submission_.engine(), t.id, t.logprob, t.top_logprobs, response_->add_logprobs());
    }
  }

  void Done(absl::StatusOr<GenerateResult> result) {
    submission_.Done(result);
    if (!result.ok()) {
      Finish(rpc::ToGrpcStatus(result.status()));
      return;
    }
    const model::Generation& g = result->generation;
    if (g.finish_reason == "cancelled") {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    response_->set_text(g.text);
    for (int64_t id : g.token_ids) response_->add_token_ids(static_cast<int32_t>(id));
    // A stop token's logprob is not output.
    while (response_->logprobs_size() > static_cast<int>(g.token_ids.size())) {
      response_->mutable_logprobs()->RemoveLast();
    }
    FillFinal(*result, submission_.stop_ids(), response_);
    Finish(grpc::Status::OK);
  }

 private:
  Submission submission_;
  v1::CompleteResponse* response_;
};

}  // namespace

InferenceMetrics::InferenceMetrics(prometheus::Registry& registry)
    : time_to_first_token(prometheus::BuildHistogram()
                              .Name("switchyard_inference_time_to_first_token_seconds")
                              .Help("From a request's arrival to its first generated token "
                                    "(queue and prefill included).")
                              .Register(registry)),
      inter_token(prometheus::BuildHistogram()
                      .Name("switchyard_inference_inter_token_latency_seconds")
                      .Help("Gap between consecutive generated tokens of a request.")
                      .Register(registry)),
      e2e(prometheus::BuildHistogram()
              .Name("switchyard_inference_e2e_request_latency_seconds")
              .Help("From a request's arrival to its end.")
              .Register(registry)),
      prompt_tokens(prometheus::BuildCounter()
                        .Name("switchyard_inference_prompt_tokens_total")
                        .Help("Prompt tokens prefilled.")
                        .Register(registry)),
      generation_tokens(prometheus::BuildCounter()
                            .Name("switchyard_inference_generation_tokens_total")
                            .Help("Tokens generated.")
                            .Register(registry)),
      requests(prometheus::BuildCounter()
                   .Name("switchyard_inference_requests_total")
                   .Help("Generation requests by outcome: stop, length, cancelled, "
                         "deadline_exceeded, rejected (queue full), error.")
                   .Register(registry)),
      running(prometheus::BuildGauge()
                  .Name("switchyard_inference_requests_running")
                  .Help("Sequences in the running batch.")
                  .Register(registry)),
      waiting(prometheus::BuildGauge()
                  .Name("switchyard_inference_requests_waiting")
                  .Help("Requests waiting for a batch slot.")
                  .Register(registry)),
      kv_usage(prometheus::BuildGauge()
                   .Name("switchyard_inference_kv_cache_usage_ratio")
                   .Help("KV-cache positions held by running sequences over those allocated, "
                         "0 to 1.")
                   .Register(registry)),
      adapters_loaded(prometheus::BuildGauge()
                          .Name("switchyard_inference_adapters_loaded")
                          .Help("LoRA adapters loaded on a base model.")
                          .Register(registry)) {}

EngineObserver InferenceMetrics::ObserverFor(const std::string& model) {
  EngineObserver o;
  o.time_to_first_token = [this, model](const std::string& adapter, double s) {
    time_to_first_token.Add({{"model", model}, {"adapter", adapter}}, kTtftBuckets).Observe(s);
  };
  o.inter_token = [this, model](const std::string& adapter, double s) {
    inter_token.Add({{"model", model}, {"adapter", adapter}}, kItlBuckets).Observe(s);
  };
  o.e2e = [this, model](const std::string& adapter, double s) {
    e2e.Add({{"model", model}, {"adapter", adapter}}, kE2eBuckets).Observe(s);
  };
  o.prompt_tokens = [this, model](const std::string& adapter, int64_t n) {
    prompt_tokens.Add({{"model", model}, {"adapter", adapter}}).Increment(static_cast<double>(n));
  };
  o.generation_tokens = [this, model](const std::string& adapter, int64_t n) {
    generation_tokens.Add({{"model", model}, {"adapter", adapter}})
        .Increment(static_cast<double>(n));
  };
  prometheus::Gauge* run = &running.Add({{"model", model}});
  prometheus::Gauge* wait = &waiting.Add({{"model", model}});
  prometheus::Gauge* kv = &kv_usage.Add({{"model", model}});
  prometheus::Gauge* loaded = &adapters_loaded.Add({{"model", model}});
  o.step = [run, wait, kv, loaded](int r, int w, double usage, int adapters) {
    run->Set(r);
    wait->Set(w);
    kv->Set(usage);
    loaded->Set(adapters);
  };
  return o;
}

absl::StatusOr<GenerateInput> ToGenerateInput(const Engine& engine,
                                              const v1::GenerateRequest& request) {
  GenerateInput in;
  in.adapter = ModelId(request.adapter());  // "models/ft:x" and "ft:x" alike
  switch (request.input_case()) {
    case v1::GenerateRequest::kChat: {
      if (request.chat().messages_size() == 0) {
        return absl::InvalidArgumentError("chat.messages must hold at least one message");
      }
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      for (int i = 0; i < request.chat().messages_size(); ++i) {
        const v1::ChatMessage& m = request.chat().messages(i);
        if (m.role().empty()) {
          return absl::InvalidArgumentError(
              absl::StrCat("chat.messages[", i, "].role is required"));
        }
        nlohmann::ordered_json j = {{"role", m.role()}, {"content", m.content()}};
        if (!m.name().empty()) j["name"] = m.name();
        if (!m.tool_call_id().empty()) j["tool_call_id"] = m.tool_call_id();
        messages.push_back(std::move(j));
      }
      SY_ASSIGN_OR_RETURN(in.prompt_ids,
                          engine.EncodeChat(messages, request.chat().continue_final_message()));
      break;
    }
    case v1::GenerateRequest::kPrompt: {
      if (request.prompt().empty()) return absl::InvalidArgumentError("prompt is empty");
      SY_ASSIGN_OR_RETURN(in.prompt_ids, engine.EncodePrompt(request.prompt()));
      break;
    }
    default:
      return absl::InvalidArgumentError("one of chat or prompt is required");
  }
  if (in.prompt_ids.empty()) return absl::InvalidArgumentError("the prompt has no tokens");
  model::SamplingParams& p = in.params;
  p = engine.default_params();
  const v1::SamplingParams& s = request.sampling();
  if (s.has_temperature()) p.temperature = s.temperature();
  if (s.has_top_k()) p.top_k = s.top_k();
  if (s.has_top_p()) p.top_p = s.top_p();
  if (s.has_min_p()) p.min_p = s.min_p();
  if (s.has_repetition_penalty()) p.repetition_penalty = s.repetition_penalty();
  if (s.has_seed()) p.seed = s.seed();
  if (s.has_max_tokens()) {
    if (s.max_tokens() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sampling.max_tokens must be positive, got ", s.max_tokens()));
    }
    p.max_new_tokens = s.max_tokens();
  }
  if (s.stop_size() > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.stop has ", s.stop_size(), " strings; at most 16"));
  }
  for (const std::string& stop : s.stop()) {
    if (stop.size() > 256) {
      return absl::InvalidArgumentError("a sampling.stop string is longer than 256 bytes");
    }
    p.stop.push_back(stop);
  }
  for (int32_t id : s.stop_token_ids()) p.stop_token_ids.push_back(id);
  p.ignore_eos = s.ignore_eos();
  if (s.top_logprobs() != 0 && !s.logprobs()) {
    return absl::InvalidArgumentError("sampling.top_logprobs needs sampling.logprobs");
  }
  p.top_logprobs = s.top_logprobs();
  absl::Status valid = p.Validate();
  if (!valid.ok()) return absl::InvalidArgumentError(absl::StrCat("sampling: ", valid.message()));
  return in;
}

InferenceServiceImpl::InferenceServiceImpl(InferenceServiceOptions options,
                                           std::shared_ptr<const rpc::Authorizer> auth,
                                           prometheus::Registry& registry)
    : options_(std::move(options)),
      auth_(std::move(auth)),
      metrics_(registry),
      pool_(std::max(1, options_.load_threads)) {}

InferenceServiceImpl::~InferenceServiceImpl() = default;

absl::StatusOr<std::string> InferenceServiceImpl::ResolveDir(const std::string& name,
                                                             const char* what) const {
  const std::string id = ModelId(name);
  if (id.empty() || absl::StrContains(id, "..") || absl::StartsWith(id, "/")) {
    return absl::InvalidArgumentError(absl::StrCat(what, " name \"", name, "\" is not valid"));
  }
  const bool checkpoint = absl::StartsWith(id, "jobs/");
  const std::string dir = absl::StrCat(options_.data_dir, checkpoint ? "/" : "/models/", id);
  if (options_.data_dir.empty() || !std::filesystem::is_directory(dir)) {
    return absl::NotFoundError(absl::StrCat(what, " \"", id, "\" is not in the artifact store (",
                                            dir, "); give its path"));
  }
  return dir;
}

absl::StatusOr<std::shared_ptr<Engine>> InferenceServiceImpl::Load(const std::string& name,
                                                                   const std::string& dir,
                                                                   EngineOptions options) {
  const std::string id = ModelId(name);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = models_.find(id); it != models_.end()) {
      std::error_code ec;
      if (std::filesystem::equivalent(it->second->dir(), dir, ec)) return it->second;
      return absl::AlreadyExistsError(
          absl::StrCat("models/", id, " is already loaded from ", it->second->dir()));
    }
  }
  options.resolve_adapter = [this](const std::string& adapter) -> absl::StatusOr<std::string> {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = adapter_paths_.find(adapter); it != adapter_paths_.end()) return it->second;
    }
    return ResolveDir(adapter, "adapter");
  };
  SY_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                      Engine::Load(id, dir, std::move(options), metrics_.ObserverFor(id)));
  std::shared_ptr<Engine> shared = std::move(engine);
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = models_.emplace(id, shared);
  if (!inserted) return absl::AlreadyExistsError(absl::StrCat("models/", id, " is already loaded"));
  return shared;
}

absl::StatusOr<std::shared_ptr<Engine>> InferenceServiceImpl::AddModel(const std::string& name,
                                                                       const std::string& dir) {
  std::string path = dir;
  if (path.empty()) {
    SY_ASSIGN_OR_RETURN(path, ResolveDir(name, "model"));
  }
  return Load(name, path, options_.engine);
}

void InferenceServiceImpl::AddAdapterPath(const std::string& name, const std::string& dir) {
  std::lock_guard<std::mutex> lock(mu_);
  adapter_paths_[name] = dir;
}

absl::StatusOr<std::shared_ptr<Engine>> InferenceServiceImpl::FindModel(
    const std::string& name) const {
  if (name.empty()) return absl::InvalidArgumentError("model is required (\"models/{id}\")");
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(ModelId(name));
  if (it == models_.end()) {
    return absl::NotFoundError(absl::StrCat("models/", ModelId(name), " is not loaded"));
  }
  return it->second;
}

void InferenceServiceImpl::Describe(const Engine& engine, v1::LoadedModel* out) const {
  out->set_name("models/" + engine.name());
  out->set_path(engine.dir());
  out->set_architecture(HfArchitecture(engine.config().arch));
  out->set_dtype(std::string(model::DtypeName(engine.dtype())));
  out->set_device(engine.device().str());
  const EngineStats s = engine.Stats();
  out->set_parameter_count(s.parameter_count);
  out->set_max_context_tokens(static_cast<int32_t>(s.max_context_tokens));
  out->set_weights_bytes(s.weights_bytes);
  out->set_kv_cache_bytes(s.kv_cache_bytes);
  out->set_kv_cache_used_bytes(s.kv_used_bytes);
  out->set_max_adapters(engine.options().max_adapters);
  out->set_requests_running(s.running);
  out->set_requests_waiting(s.waiting);
  *out->mutable_load_time() = ToTimestamp(engine.load_time());
  std::vector<AdapterInfo> adapters = engine.Adapters();
  std::sort(adapters.begin(), adapters.end(),
            [](const AdapterInfo& a, const AdapterInfo& b) { return a.last_used > b.last_used; });
  int64_t adapter_bytes = 0;
  for (const AdapterInfo& a : adapters) {
    adapter_bytes += a.bytes;
    v1::LoadedAdapter* la = out->add_adapters();
    la->set_name(a.name);
    la->set_model("models/" + engine.name());
    la->set_path(a.dir);
    la->set_memory_bytes(a.bytes);
    la->set_pinned(a.pinned);
    la->set_requests_running(static_cast<int32_t>(a.in_use));
    la->set_requests_served(a.served);
    *la->mutable_load_time() = ToTimestamp(a.loaded);
    *la->mutable_last_used_time() = ToTimestamp(a.last_used);
    auto config = model::ParseAdapterConfig(ReadFile(a.dir + "/adapter_config.json").value_or(""));
    if (config.ok()) {
      la->set_r(static_cast<int32_t>(config->r));
      la->set_alpha(config->alpha);
      la->set_rslora(config->use_rslora);
      for (const std::string& m : config->target_modules) la->add_target_modules(m);
    }
  }
  out->set_adapters_bytes(adapter_bytes);
  metrics_.adapters_loaded.Add({{"model", engine.name()}})
      .Set(static_cast<double>(adapters.size()));
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadModel(grpc::CallbackServerContext* context,
                                                          const v1::LoadModelRequest* request,
                                                          v1::LoadedModel* response) {
  return Offload(pool_, *auth_, context, Role::kAdmin, [this, request, response]() -> absl::Status {
    if (request->model().empty()) return absl::InvalidArgumentError("model is required");
    std::string dir = request->path();
    if (dir.empty()) {
      SY_ASSIGN_OR_RETURN(dir, ResolveDir(request->model(), "model"));
    }
    EngineOptions options = options_.engine;
    if (!request->dtype().empty()) options.dtype = request->dtype();
    if (!request->device().empty()) options.device = request->device();
    if (request->kv_cache_bytes() > 0) options.kv_cache_bytes = request->kv_cache_bytes();
    if (request->max_context_tokens() > 0)
      options.max_context_tokens = request->max_context_tokens();
    const bool was_loaded = FindModel(request->model()).ok();
    auto engine = Load(request->model(), dir, options);
    if (!engine.ok()) {
      if (absl::IsInternal(engine.status()) || absl::IsFailedPrecondition(engine.status())) {
        return absl::InvalidArgumentError(engine.status().message());
      }
      return engine.status();
    }
    for (const std::string& adapter : request->adapters()) {
      absl::Status s = (*engine)->LoadAdapter(adapter, "", false).status();
      if (!s.ok()) {
        if (!was_loaded) {  // all or nothing
          std::lock_guard<std::mutex> lock(mu_);
          models_.erase(ModelId(request->model()));
        }
        if (!was_loaded) (*engine)->Stop();
        return s;
      }
    }
    Describe(**engine, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::UnloadModel(grpc::CallbackServerContext* context,
                                                            const v1::UnloadModelRequest* request,
                                                            google::protobuf::Empty*) {
  return Offload(pool_, *auth_, context, Role::kAdmin, [this, request]() -> absl::Status {
    std::shared_ptr<Engine> engine;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = models_.find(ModelId(request->name()));
      if (it == models_.end()) {
        return absl::NotFoundError(
            absl::StrCat("models/", ModelId(request->name()), " is not loaded"));
      }
      engine = it->second;
      models_.erase(it);  // new requests get NOT_FOUND from here on
    }
    if (!request->force()) {
      // Running and queued requests finish first.
      while (true) {
        const EngineStats s = engine->Stats();
        if (s.running == 0 && s.waiting == 0) break;
        absl::SleepFor(absl::Milliseconds(20));
      }
    }
    SY_LOG(kInfo, "inference") << "unloading models/" << engine->name();
    engine->Stop();  // what is left ends UNAVAILABLE
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::LoadAdapter(grpc::CallbackServerContext* context,
                                                            const v1::LoadAdapterRequest* request,
                                                            v1::LoadedAdapter* response) {
  return Offload(pool_, *auth_, context, Role::kAdmin, [this, request, response]() -> absl::Status {
    if (request->adapter().empty()) return absl::InvalidArgumentError("adapter is required");
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Engine> engine, FindModel(request->model()));
    SY_RETURN_IF_ERROR(
        engine->LoadAdapter(ModelId(request->adapter()), request->path(), request->pin()).status());
    v1::LoadedModel model;
    Describe(*engine, &model);
    for (const v1::LoadedAdapter& a : model.adapters()) {
      if (a.name() == ModelId(request->adapter())) *response = a;
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::UnloadAdapter(
    grpc::CallbackServerContext* context, const v1::UnloadAdapterRequest* request,
    google::protobuf::Empty*) {
  return Offload(pool_, *auth_, context, Role::kAdmin, [this, request]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Engine> engine, FindModel(request->model()));
    return engine->UnloadAdapter(ModelId(request->adapter()));
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::ListModels(
    grpc::CallbackServerContext* context, const v1::ListLoadedModelsRequest* request,
    v1::ListLoadedModelsResponse* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(int page_size, rpc::PageSize(request->page_size(), 50));
    SY_ASSIGN_OR_RETURN(int64_t offset, rpc::ParsePageToken(request->page_token()));
    std::vector<std::shared_ptr<Engine>> engines;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, engine] : models_) engines.push_back(engine);
    }
    int64_t used = 0;
    for (size_t i = 0; i < engines.size(); ++i) {
      v1::LoadedModel model;
      Describe(*engines[i], &model);
      used += model.weights_bytes() + model.kv_cache_bytes() + model.adapters_bytes();
      if (static_cast<int64_t>(i) >= offset && response->models_size() < page_size) {
        *response->add_models() = std::move(model);
      }
    }
    if (offset + response->models_size() < static_cast<int64_t>(engines.size())) {
      response->set_next_page_token(absl::StrCat(offset + response->models_size()));
    }
    response->set_memory_used_bytes(used);
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages > 0 && page > 0) response->set_memory_total_bytes(static_cast<int64_t>(pages) * page);
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::GenerateResponse>* InferenceServiceImpl::Generate(
    grpc::CallbackServerContext* context, const v1::GenerateRequest* request) {
  return new GenerateReactor(this, context, *request);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Complete(grpc::CallbackServerContext* context,
                                                         const v1::GenerateRequest* request,
                                                         v1::CompleteResponse* response) {
  return new CompleteReactor(this, context, *request, response);
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Tokenize(grpc::CallbackServerContext* context,
                                                         const v1::TokenizeRequest* request,
                                                         v1::TokenizeResponse* response) {
  // Inline: tokenizing a few chunks takes microseconds.
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<Engine> engine, FindModel(request->model()));
    if (request->texts_size() > 256) {
      return absl::InvalidArgumentError(
          absl::StrCat("texts holds ", request->texts_size(), " texts; at most 256"));
    }
    response->set_max_context_tokens(static_cast<int32_t>(engine->max_context_tokens()));
    if (request->has_chat()) {
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      for (const v1::ChatMessage& m : request->chat().messages()) {
        messages.push_back({{"role", m.role()}, {"content", m.content()}});
      }
      SY_ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                          engine->EncodeChat(messages, request->chat().continue_final_message()));
      response->set_chat_token_count(static_cast<int32_t>(ids.size()));
    }
    for (const std::string& text : request->texts()) {
      SY_ASSIGN_OR_RETURN(std::vector<int> ends, engine->TokenEnds(text));
      v1::TokenizedText* out = response->add_texts();
      out->set_token_count(static_cast<int32_t>(ends.size()));
      if (request->return_offsets())
        out->mutable_token_end_offsets()->Add(ends.begin(), ends.end());
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Score(grpc::CallbackServerContext* context,
                                                      const v1::ScoreRequest* request,
                                                      v1::ScoreResponse* response) {
  return Offload(
      pool_, *auth_, context, Role::kUser, [this, context, request, response]() -> absl::Status {
        response->set_request_id(RequestId(*context, request->request_id()));
        SY_ASSIGN_OR_RETURN(std::shared_ptr<Engine> engine, FindModel(request->model()));
        if (request->completions_size() == 0 || request->completions_size() > 64) {
          return absl::InvalidArgumentError(absl::StrCat(
              "completions must hold 1 to 64 texts, got ", request->completions_size()));
        }
        std::vector<int64_t> prompt;
        if (request->has_chat()) {
          nlohmann::ordered_json messages = nlohmann::ordered_json::array();
          for (const v1::ChatMessage& m : request->chat().messages()) {
            messages.push_back({{"role", m.role()}, {"content", m.content()}});
          }
          SY_ASSIGN_OR_RETURN(
              prompt, engine->EncodeChat(messages, request->chat().continue_final_message()));
        } else {
          SY_ASSIGN_OR_RETURN(prompt, engine->EncodePrompt(request->prompt()));
        }
        std::vector<std::vector<int64_t>> completions;
        for (int i = 0; i < request->completions_size(); ++i) {
          SY_ASSIGN_OR_RETURN(std::vector<int64_t> ids,
                              engine->EncodeCompletion(request->completions(i)));
          if (ids.empty()) {
            return absl::InvalidArgumentError(absl::StrCat("completions[", i, "] is empty"));
          }
          completions.push_back(std::move(ids));
        }
        SY_ASSIGN_OR_RETURN(std::vector<CompletionScore> scores,
                            engine->Score(prompt, completions, ModelId(request->adapter())));
        int64_t completion_tokens = 0;
        for (const CompletionScore& s : scores) {
          v1::CompletionScore* out = response->add_scores();
          double sum = 0;
          for (double lp : s.logprobs) sum += lp;
          const int64_t n = static_cast<int64_t>(s.token_ids.size());
          completion_tokens += n;
          out->set_logprob(sum);
          out->set_tokens(n);
          out->set_mean_logprob(n > 0 ? sum / n : 0);
          out->set_greedy_match_fraction(n > 0 ? static_cast<double>(s.greedy_matches) / n : 0);
          if (request->token_logprobs()) {
            for (int64_t t = 0; t < n; ++t) {
              FillLogprob(*engine, s.token_ids[t], s.logprobs[t], {}, out->add_token_logprobs());
            }
          }
        }
        v1::Usage* usage = response->mutable_usage();
        usage->set_prompt_tokens(static_cast<int64_t>(prompt.size()));
        usage->set_completion_tokens(completion_tokens);
        usage->set_total_tokens(static_cast<int64_t>(prompt.size()) + completion_tokens);
        return absl::OkStatus();
      });
}

}  // namespace switchyard::inference
