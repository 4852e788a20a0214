#include "services/router/router_service.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/router/evaluator.h"
#include "services/router/experiment_proto.h"
#include "services/router/experiment_stats.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"
#include "shared/rpc/unary.h"

namespace switchyard::router {

using rpc::Offload;
using rpc::Role;
using rpc::Unary;

namespace {

prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
}

const char* MissingReasonName(v1::ContextMissingReason r) {
  switch (r) {
    case v1::CONTEXT_MISSING_REASON_RETRIEVAL_ERROR:
      return "retrieval_error";
    case v1::CONTEXT_MISSING_REASON_RETRIEVAL_TIMEOUT:
      return "retrieval_timeout";
    case v1::CONTEXT_MISSING_REASON_NO_RESULTS:
      return "no_results";
    case v1::CONTEXT_MISSING_REASON_NO_BUDGET:
      return "no_budget";
    default:
      return "unknown";
  }
}

std::string NewId(const char* prefix) { return absl::StrCat(prefix, RandomHex(8)); }

absl::Time Deadline(const grpc::CallbackServerContext& context) {
  const auto d = context.deadline();
  if (d >= std::chrono::system_clock::time_point::max() - std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

}  // namespace

RouterMetrics::RouterMetrics(prometheus::Registry& registry)
    : requests(prometheus::BuildCounter()
                   .Name("switchyard_router_requests_total")
                   .Help("Chat requests answered, by experiment, arm and gRPC code.")
                   .Register(registry)),
      duration(prometheus::BuildHistogram()
                   .Name("switchyard_router_request_duration_seconds")
                   .Help("Chat request latency at the router, arrival to last token.")
                   .Register(registry)),
      retrieval_duration(prometheus::BuildHistogram()
                             .Name("switchyard_router_retrieval_duration_seconds")
                             .Help("Retrieval time of chat requests of arms with retrieval.")
                             .Register(registry)),
      tokens(prometheus::BuildCounter()
                 .Name("switchyard_router_tokens_total")
                 .Help("Tokens of served chat requests, by kind (prompt, completion).")
                 .Register(registry)),
      feedback(prometheus::BuildCounter()
                   .Name("switchyard_router_feedback_total")
                   .Help("Feedback recorded, by experiment and arm.")
                   .Register(registry)),
      feedback_score(prometheus::BuildHistogram()
                         .Name("switchyard_router_feedback_score")
                         .Help("Feedback scores normalised to [0, 1] (the experiment's scale "
                               "minimum is 0, its maximum 1).")
                         .Register(registry)),
      arm_weight(prometheus::BuildGauge()
                     .Name("switchyard_router_arm_weight")
                     .Help("Traffic weight in force per arm (bandit-adjusted), 0 to 1.")
                     .Register(registry)),
      shadow(prometheus::BuildCounter()
                 .Name("switchyard_router_shadow_requests_total")
                 .Help("Shadow answers by outcome: ok, error, skipped (max_in_flight).")
                 .Register(registry)),
      context_missing(prometheus::BuildCounter()
                          .Name("switchyard_router_context_missing_total")
                          .Help("Answers of retrieval arms given without context, by reason.")
                          .Register(registry)) {}

RouterServiceImpl::RouterServiceImpl(RouterServiceOptions options, ExperimentStore* store,
                                     std::shared_ptr<const rpc::Authorizer> auth,
                                     prometheus::Registry& registry)
    : options_(options),
      store_(store),
      auth_(std::move(auth)),
      metrics_(registry),
      eval_pool_(2),
      shadow_pool_(std::max(1, options.shadow_threads)),
      chat_pool_(std::max(1, options.chat_threads)) {}

absl::StatusOr<std::unique_ptr<RouterServiceImpl>> RouterServiceImpl::Create(
    RouterServiceOptions options, ExperimentStore* store, Backends backends,
    std::shared_ptr<const rpc::Authorizer> auth, prometheus::Registry& registry) {
  std::unique_ptr<RouterServiceImpl> service(
      new RouterServiceImpl(options, store, std::move(auth), registry));
  SY_ASSIGN_OR_RETURN(std::vector<ExperimentRecord> records, store->ListExperiments());
  for (const ExperimentRecord& record : records) {
    SY_ASSIGN_OR_RETURN(v1::Experiment experiment, FromRecord(record));
    service->PublishWeights(experiment);
    service->experiments_[record.experiment_id] =
        std::make_shared<const v1::Experiment>(std::move(experiment));
  }
  service->SetBackends(std::move(backends));
  service->bandit_thread_ = std::thread([s = service.get()] { s->BanditLoop(); });
  return service;
}

RouterServiceImpl::~RouterServiceImpl() {
  {
    std::lock_guard<std::mutex> lock(bandit_mu_);
    stopping_ = true;
  }
  bandit_wake_.notify_all();
  if (bandit_thread_.joinable()) bandit_thread_.join();
}

void RouterServiceImpl::SetBackends(Backends backends) {
  auto runner = std::make_shared<ArmRunner>(backends);
  std::lock_guard<std::mutex> lock(mu_);
  backends_ = std::move(backends);
  runner_ = std::move(runner);
}

std::shared_ptr<ArmRunner> RouterServiceImpl::runner() const {
  std::lock_guard<std::mutex> lock(mu_);
  return runner_;
}

absl::StatusOr<std::shared_ptr<const v1::Experiment>> RouterServiceImpl::Find(
    const std::string& name) const {
  SY_ASSIGN_OR_RETURN(std::string id, ExperimentIdFrom(name, "experiment"));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = experiments_.find(id);
  if (it == experiments_.end())
    return absl::NotFoundError(absl::StrCat("experiments/", id, " not found"));
  return it->second;
}

void RouterServiceImpl::PublishWeights(const v1::Experiment& e) {
  const std::string& id = e.experiment_id();
  for (const auto& [arm, weight] : e.effective_weights()) {
    metrics_.arm_weight.Add({{"experiment", id}, {"arm", arm}})
        .Set(e.state() == v1::EXPERIMENT_STATE_ARCHIVED ? 0 : weight);
  }
}

absl::Status RouterServiceImpl::Put(v1::Experiment experiment, bool create) {
  ExperimentRecord record = ToRecord(experiment);
  SY_RETURN_IF_ERROR(create ? store_->CreateExperiment(record) : store_->UpdateExperiment(record));
  PublishWeights(experiment);
  const std::string id = experiment.experiment_id();
  auto shared = std::make_shared<const v1::Experiment>(std::move(experiment));
  std::lock_guard<std::mutex> lock(mu_);
  experiments_[id] = std::move(shared);
  return absl::OkStatus();
}

absl::Status RouterServiceImpl::CheckBackends(const v1::Experiment& e) const {
  Backends backends;
  {
    std::lock_guard<std::mutex> lock(mu_);
    backends = backends_;
  }
  auto context = [&] { return BackendContext(backends, absl::Now() + absl::Seconds(5)); };
  if (backends.inference) {
    auto stub = v1::InferenceService::NewStub(backends.inference);
    v1::ListLoadedModelsRequest request;
    request.set_page_size(1000);
    v1::ListLoadedModelsResponse models;
    auto c = context();
    grpc::Status s = stub->ListModels(c.get(), request, &models);
    if (s.ok()) {
      for (int i = 0; i < e.arms_size(); ++i) {
        const std::string want = absl::StartsWith(e.arms(i).model(), "models/")
                                     ? e.arms(i).model()
                                     : absl::StrCat("models/", e.arms(i).model());
        bool found = false;
        for (const v1::LoadedModel& m : models.models()) found = found || m.name() == want;
        if (!found) {
          return absl::InvalidArgumentError(absl::StrCat(
              "arms[", i, "].model: ", want, " is not loaded in the inference service"));
        }
      }
    } else {
      SY_LOG(kWarning, "router") << "could not check models with inference: " << s.error_message();
    }
    // Adapters: loading one checks it exists and fits its base (and warms
    // it up for the first requests).
    for (int i = 0; s.ok() && i < e.arms_size(); ++i) {
      if (e.arms(i).adapter().empty()) continue;
      v1::LoadAdapterRequest load;
      load.set_model(e.arms(i).model());
      load.set_adapter(e.arms(i).adapter());
      v1::LoadedAdapter loaded;
      auto c2 = context();
      grpc::Status ls = stub->LoadAdapter(c2.get(), load, &loaded);
      if (ls.error_code() == grpc::StatusCode::NOT_FOUND ||
          ls.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        return absl::InvalidArgumentError(
            absl::StrCat("arms[", i, "].adapter: ", ls.error_message()));
      }
      if (!ls.ok()) {
        SY_LOG(kWarning, "router")
            << "could not check adapter " << e.arms(i).adapter() << ": " << ls.error_message();
      }
    }
  }
  if (backends.retrieval) {
    auto stub = v1::RetrievalService::NewStub(backends.retrieval);
    for (int i = 0; i < e.arms_size(); ++i) {
      if (!e.arms(i).has_retrieval()) continue;
      v1::GetCollectionRequest request;
      const std::string& c = e.arms(i).retrieval().collection();
      request.set_name(absl::StartsWith(c, "collections/") ? c : absl::StrCat("collections/", c));
      v1::Collection collection;
      auto ctx = context();
      grpc::Status s = stub->GetCollection(ctx.get(), request, &collection);
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        return absl::InvalidArgumentError(absl::StrCat(
            "arms[", i, "].retrieval.collection: ", request.name(), " does not exist"));
      }
      if (!s.ok()) {
        SY_LOG(kWarning, "router")
            << "could not check " << request.name() << ": " << s.error_message();
      }
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Experiments

grpc::ServerUnaryReactor* RouterServiceImpl::CreateExperiment(
    grpc::CallbackServerContext* context, const v1::CreateExperimentRequest* request,
    v1::Experiment* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kAdmin, [this, request, response]() -> absl::Status {
        v1::Experiment e = request->experiment();
        const std::string& given =
            request->experiment_id().empty() ? e.name() : request->experiment_id();
        if (given.empty()) {
          return absl::InvalidArgumentError("experiment.name: required (the experiment's id)");
        }
        SY_ASSIGN_OR_RETURN(std::string id, ExperimentIdFrom(given, request->experiment_id().empty()
                                                                        ? "experiment.name"
                                                                        : "experiment_id"));
        SY_RETURN_IF_ERROR(ValidateExperiment(e));
        SY_RETURN_IF_ERROR(CheckBackends(e));
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (experiments_.count(id) > 0) {
            return absl::AlreadyExistsError(absl::StrCat("experiments/", id, " already exists"));
          }
        }
        e.set_name(absl::StrCat("experiments/", id));
        e.set_experiment_id(id);
        e.set_state(v1::EXPERIMENT_STATE_ACTIVE);
        e.clear_effective_weights();
        for (const auto& [arm, w] : NormalizedWeights(e)) (*e.mutable_effective_weights())[arm] = w;
        const int64_t now = NowMicros();
        *e.mutable_create_time() = ToTimestamp(now);
        *e.mutable_update_time() = ToTimestamp(now);
        e.clear_archive_time();
        *response = e;
        if (request->validate_only()) return absl::OkStatus();
        SY_LOG(kInfo, "router") << "experiment created: experiments/" << id
                                << " arms=" << e.arms_size();
        return Put(std::move(e), true);
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetExperiment(grpc::CallbackServerContext* context,
                                                           const v1::GetExperimentRequest* request,
                                                           v1::Experiment* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->name()));
    *response = *e;
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RouterServiceImpl::ListExperiments(
    grpc::CallbackServerContext* context, const v1::ListExperimentsRequest* request,
    v1::ListExperimentsResponse* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(int page_size, rpc::PageSize(request->page_size(), 50));
    SY_ASSIGN_OR_RETURN(int64_t offset, rpc::ParsePageToken(request->page_token()));
    std::vector<std::shared_ptr<const v1::Experiment>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [id, e] : experiments_) {
        if (request->show_archived() || e->state() != v1::EXPERIMENT_STATE_ARCHIVED) {
          all.push_back(e);
        }
      }
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
      const int64_t ta = FromTimestamp(a->create_time()), tb = FromTimestamp(b->create_time());
      return ta != tb ? ta > tb : a->experiment_id() < b->experiment_id();
    });
    response->set_total_size(static_cast<int32_t>(all.size()));
    for (int64_t i = offset; i < static_cast<int64_t>(all.size()) && i < offset + page_size; ++i) {
      *response->add_experiments() = *all[static_cast<size_t>(i)];
    }
    if (offset + page_size < static_cast<int64_t>(all.size())) {
      response->set_next_page_token(std::to_string(offset + page_size));
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RouterServiceImpl::UpdateExperiment(
    grpc::CallbackServerContext* context, const v1::UpdateExperimentRequest* request,
    v1::Experiment* response) {
  return Offload(
      chat_pool_, *auth_, context, Role::kAdmin, [this, request, response]() -> absl::Status {
        SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> current,
                            Find(request->experiment().name()));
        if (current->state() == v1::EXPERIMENT_STATE_ARCHIVED) {
          return absl::FailedPreconditionError(
              absl::StrCat(current->name(), " is archived; create a new experiment"));
        }
        v1::Experiment e = *current;
        const v1::Experiment& in = request->experiment();
        std::vector<std::string> paths(request->update_mask().paths().begin(),
                                       request->update_mask().paths().end());
        if (paths.empty()) {
          paths = {"description",
                   "labels",
                   "arms",
                   "weights",
                   "shadow",
                   "bandit",
                   "allow_rag_without_context",
                   "feedback_scale",
                   "analysis"};
        }
        for (const std::string& path : paths) {
          if (path == "description") {
            e.set_description(in.description());
          } else if (path == "labels") {
            *e.mutable_labels() = in.labels();
          } else if (path == "arms") {
            *e.mutable_arms() = in.arms();
          } else if (path == "weights") {
            *e.mutable_weights() = in.weights();
          } else if (path == "shadow") {
            if (in.has_shadow()) {
              *e.mutable_shadow() = in.shadow();
            } else {
              e.clear_shadow();
            }
          } else if (path == "bandit") {
            if (in.has_bandit()) {
              *e.mutable_bandit() = in.bandit();
            } else {
              e.clear_bandit();
            }
          } else if (path == "allow_rag_without_context") {
            e.set_allow_rag_without_context(in.allow_rag_without_context());
          } else if (path == "feedback_scale") {
            *e.mutable_feedback_scale() = in.feedback_scale();
          } else if (path == "analysis") {
            *e.mutable_analysis() = in.analysis();
          } else {
            return absl::InvalidArgumentError(
                absl::StrCat("update_mask: \"", path,
                             "\" cannot be changed (mutable: description, labels, arms, "
                             "weights, shadow, bandit, "
                             "allow_rag_without_context, feedback_scale, analysis)"));
          }
        }
        SY_RETURN_IF_ERROR(ValidateExperiment(e));
        if (std::find(paths.begin(), paths.end(), "arms") != paths.end()) {
          SY_RETURN_IF_ERROR(CheckBackends(e));
        }
        // New weights (or arms, or bandit settings) take force now; the
        // bandit moves them again at its next update. Other changes keep
        // the weights in force.
        const bool reweigh = std::any_of(paths.begin(), paths.end(), [](const std::string& p) {
          return p == "weights" || p == "arms" || p == "bandit";
        });
        if (reweigh) {
          e.clear_effective_weights();
          for (const auto& [arm, w] : NormalizedWeights(e))
            (*e.mutable_effective_weights())[arm] = w;
        }
        *e.mutable_update_time() = ToTimestamp(NowMicros());
        *response = e;
        return Put(std::move(e), false);
      });
}

grpc::ServerUnaryReactor* RouterServiceImpl::ArchiveExperiment(
    grpc::CallbackServerContext* context, const v1::ArchiveExperimentRequest* request,
    v1::Experiment* response) {
  return Unary(*auth_, context, Role::kAdmin, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> current, Find(request->name()));
    v1::Experiment e = *current;
    if (e.state() != v1::EXPERIMENT_STATE_ARCHIVED) {
      const int64_t now = NowMicros();
      e.set_state(v1::EXPERIMENT_STATE_ARCHIVED);
      *e.mutable_archive_time() = ToTimestamp(now);
      *e.mutable_update_time() = ToTimestamp(now);
      SY_RETURN_IF_ERROR(Put(e, false));
    }
    *response = e;
    return absl::OkStatus();
  });
}

// ---------------------------------------------------------------------------
// Chat

absl::Status RouterServiceImpl::Answer(const grpc::CallbackServerContext& context,
                                       const v1::ChatRequest& request, absl::Time start,
                                       const Streaming* stream, v1::ChatResponse* response) {
  const int64_t create_us = absl::ToUnixMicros(start);
  SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request.experiment()));
  if (e->state() == v1::EXPERIMENT_STATE_ARCHIVED) {
    return absl::FailedPreconditionError(absl::StrCat(e->name(), " is archived"));
  }
  if (request.messages_size() == 0) {
    return absl::InvalidArgumentError("messages: at least one message is required");
  }
  if (request.messages(request.messages_size() - 1).role() != "user") {
    return absl::InvalidArgumentError(
        absl::StrCat("messages[", request.messages_size() - 1,
                     "].role: the last message must be from the user, got \"",
                     request.messages(request.messages_size() - 1).role(), "\""));
  }
  if (request.metadata_size() > 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata: at most 16 pairs, got ", request.metadata_size()));
  }
  // The arm: override, sticky hash of the user key, or random by weight.
  const v1::Arm* arm = nullptr;
  const bool overridden = !request.arm().empty();
  if (overridden) {
    arm = FindArm(*e, request.arm());
    if (arm == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("arm: ", e->name(), " has no arm \"", request.arm(), "\""));
    }
  } else {
    const std::vector<WeightedArm> arms = ArmsInForce(*e);
    const int i = request.user_key().empty()
                      ? RandomArm(arms)
                      : AssignArm(e->experiment_id(), request.user_key(), arms);
    if (i < 0)
      return absl::FailedPreconditionError(absl::StrCat(e->name(), " has no arm with weight"));
    arm = &e->arms(i);
  }
  const std::string response_id = NewId("r-");
  // Shadow: another arm on the same request, in the background.
  std::string shadow_id;
  const v1::Arm* shadow_arm = nullptr;
  if (e->has_shadow() && !e->shadow().arm().empty() && e->shadow().arm() != arm->name()) {
    const double rate = e->shadow().sample_rate() > 0 ? e->shadow().sample_rate() : 1.0;
    if (rate >= 1.0 || UniformDraw() < rate) {
      shadow_arm = FindArm(*e, e->shadow().arm());
      const int limit = e->shadow().max_in_flight() > 0 ? e->shadow().max_in_flight() : 16;
      std::lock_guard<std::mutex> lock(mu_);
      int& in_flight = shadows_in_flight_[e->experiment_id()];
      // Per experiment, and never more than the shadow pool runs at once
      // (a shadow is skipped, never queued).
      if (shadow_arm != nullptr && in_flight < limit && shadows_total_ < options_.shadow_threads) {
        ++in_flight;
        ++shadows_total_;
        shadow_id = NewId("r-");
      } else if (shadow_arm != nullptr) {
        metrics_.shadow
            .Add({{"experiment", e->experiment_id()},
                  {"arm", shadow_arm->name()},
                  {"outcome", "skipped"}})
            .Increment();
        shadow_arm = nullptr;
      }
    }
  }
  if (!shadow_id.empty()) StartShadow(e, shadow_arm, request, shadow_id, response_id);

  ArmCall call;
  call.experiment = e.get();
  call.arm = arm;
  call.request = &request;
  call.response_id = response_id;
  call.start = start;
  call.deadline = Deadline(context);
  call.parent = &context;
  auto fill_head = [&](const ArmAnswer& a, auto* out) {
    out->set_response_id(response_id);
    out->set_experiment(e->name());
    out->set_arm(arm->name());
    out->set_model(absl::StartsWith(arm->model(), "models/")
                       ? arm->model()
                       : absl::StrCat("models/", arm->model()));
    out->set_adapter(arm->adapter());
    out->set_context_missing(a.context_missing);
    out->set_context_missing_reason(a.context_missing_reason);
    if (shadow_arm != nullptr) out->set_shadow_arm(shadow_arm->name());
    out->set_overridden(overridden);
    for (size_t i = 0; i < a.sources.size(); ++i) {
      ToProto(a.sources[i], i < a.cited.size() && a.cited[i], out->add_sources());
    }
    if (request.return_prompt()) {
      for (const Message& m : a.prompt_messages) {
        v1::ChatMessage* pm = out->add_prompt_messages();
        pm->set_role(m.role);
        pm->set_content(m.content);
        pm->set_name(m.name);
        pm->set_tool_call_id(m.tool_call_id);
      }
    }
  };
  if (stream != nullptr) {
    call.on_head = [&](const ArmAnswer& a) {
      v1::ChatStreamResponse head;
      fill_head(a, &head);
      stream->head(head);
    };
    call.on_text = stream->text;
  }
  std::shared_ptr<ArmRunner> r = runner();
  ArmAnswer answer = r->Run(call);

  // Metrics and log.
  const std::string& id = e->experiment_id();
  const prometheus::Labels labels = {{"experiment", id}, {"arm", arm->name()}};
  metrics_.requests
      .Add({{"experiment", id},
            {"arm", arm->name()},
            {"code", rpc::GrpcCodeName(static_cast<grpc::StatusCode>(answer.status.code()))}})
      .Increment();
  metrics_.duration.Add(labels, LatencyBuckets()).Observe(answer.timings.total_seconds());
  if (arm->has_retrieval()) {
    metrics_.retrieval_duration.Add(labels, LatencyBuckets())
        .Observe(answer.timings.retrieval_seconds());
    if (answer.context_missing) {
      metrics_.context_missing
          .Add({{"experiment", id},
                {"arm", arm->name()},
                {"reason", MissingReasonName(answer.context_missing_reason)}})
          .Increment();
    }
  }
  if (answer.status.ok()) {
    metrics_.tokens.Add({{"experiment", id}, {"arm", arm->name()}, {"kind", "prompt"}})
        .Increment(static_cast<double>(answer.usage.prompt_tokens()));
    metrics_.tokens.Add({{"experiment", id}, {"arm", arm->name()}, {"kind", "completion"}})
        .Increment(static_cast<double>(answer.usage.completion_tokens()));
  }
  Log(*e, *arm, request, answer, response_id, false, shadow_id, overridden, create_us);
  SY_RETURN_IF_ERROR(answer.status);
  fill_head(answer, response);
  response->set_text(answer.text);
  response->set_finish_reason(answer.finish_reason);
  *response->mutable_usage() = answer.usage;
  *response->mutable_timings() = answer.timings;
  return absl::OkStatus();
}

void RouterServiceImpl::StartShadow(std::shared_ptr<const v1::Experiment> e, const v1::Arm* arm,
                                    const v1::ChatRequest& request, const std::string& shadow_id,
                                    const std::string& served_id) {
  auto copy = std::make_shared<v1::ChatRequest>(request);
  shadow_pool_.Submit([this, e, arm, copy, shadow_id, served_id] {
    ArmCall call;
    call.experiment = e.get();
    call.arm = arm;
    call.request = copy.get();
    call.response_id = shadow_id;
    call.start = absl::Now();
    call.deadline = call.start + options_.shadow_timeout;
    ArmAnswer answer = runner()->Run(call);
    metrics_.shadow
        .Add({{"experiment", e->experiment_id()},
              {"arm", arm->name()},
              {"outcome", answer.status.ok() ? "ok" : "error"}})
        .Increment();
    Log(*e, *arm, *copy, answer, shadow_id, true, served_id, false, absl::ToUnixMicros(call.start));
    std::lock_guard<std::mutex> lock(mu_);
    --shadows_in_flight_[e->experiment_id()];
    --shadows_total_;
  });
}

void RouterServiceImpl::Log(const v1::Experiment& e, const v1::Arm& arm,
                            const v1::ChatRequest& request, const ArmAnswer& answer,
                            const std::string& response_id, bool shadow,
                            const std::string& paired_id, bool overridden, int64_t create_us) {
  InteractionRecord r;
  r.response_id = response_id;
  r.experiment_id = e.experiment_id();
  r.arm = arm.name();
  r.user_key = request.user_key();
  r.shadow = shadow;
  r.paired_response_id = paired_id;
  r.overridden = overridden;
  r.excluded = overridden || request.exclude_from_report();
  r.error_code = static_cast<int>(answer.status.code());
  r.create_us = create_us;
  r.latency_seconds = answer.timings.total_seconds();
  r.time_to_first_token_seconds = answer.timings.time_to_first_token_seconds();
  r.compute_seconds = answer.timings.compute_seconds();
  r.retrieval_seconds = answer.timings.retrieval_seconds();
  r.prompt_tokens = answer.usage.prompt_tokens();
  r.completion_tokens = answer.usage.completion_tokens();
  r.context_missing = answer.context_missing;
  // The detail: what the API shows beyond the columns.
  v1::Interaction detail;
  *detail.mutable_messages() = request.messages();
  detail.set_text(answer.text);
  for (size_t i = 0; i < answer.sources.size(); ++i) {
    ToProto(answer.sources[i], i < answer.cited.size() && answer.cited[i], detail.add_sources());
  }
  detail.set_finish_reason(answer.finish_reason);
  *detail.mutable_usage() = answer.usage;
  *detail.mutable_timings() = answer.timings;
  detail.set_context_missing_reason(answer.context_missing_reason);
  detail.set_error_message(std::string(answer.status.message()));
  *detail.mutable_metadata() = request.metadata();
  (void)google::protobuf::util::MessageToJsonString(detail, &r.detail_json);
  store_->AppendInteraction(std::move(r));
}

// A server stream fed by a worker: `work` runs on a pool and pushes
// messages; OnWriteDone sends what gathered meanwhile (`merge` may fold a
// message into the last queued one), then the status `work` returned. A
// client that goes away cancels the call's context, which the work sees.
template <typename T>
class WorkerWriteReactor : public grpc::ServerWriteReactor<T> {
 public:
  using Work = std::function<absl::Status(WorkerWriteReactor*)>;
  // True when `next` was folded into `queued`.
  using Merge = std::function<bool(T& queued, const T& next)>;

  WorkerWriteReactor(ThreadPool& pool, const rpc::Authorizer& auth,
                     grpc::CallbackServerContext* context, rpc::Role role, Work work,
                     Merge merge = nullptr)
      : work_(std::move(work)), merge_(std::move(merge)) {
    absl::Status s = auth.Authorize(*context, role);
    if (!s.ok()) {
      this->Finish(rpc::ToGrpcStatus(s));
      return;
    }
    pool.Submit([this] {
      absl::Status status = work_(this);
      std::lock_guard<std::mutex> lock(mu_);
      final_ = rpc::ToGrpcStatus(status);
      worker_done_ = true;
      Pump();
    });
  }

  void Push(const T& m) {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.empty() || !merge_ || !merge_(queue_.back(), m)) queue_.push_back(m);
    Pump();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) client_gone_ = true;
    Pump();
  }
  void OnDone() override {
    // Finish is called only once the worker is done (or never started);
    // taking the lock waits until it has let go of it.
    { std::lock_guard<std::mutex> lock(mu_); }
    delete this;
  }

 private:
  // With mu_ held.
  void Pump() {
    if (writing_ || finished_) return;
    if (client_gone_) {
      if (worker_done_) {
        finished_ = true;
        this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      }
      return;
    }
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      this->StartWrite(&current_);
      return;
    }
    if (worker_done_) {
      finished_ = true;
      this->Finish(final_);
    }
  }

  Work work_;
  Merge merge_;
  std::mutex mu_;
  std::deque<T> queue_;
  T current_;
  grpc::Status final_;
  bool writing_ = false, client_gone_ = false, worker_done_ = false, finished_ = false;
};

grpc::ServerUnaryReactor* RouterServiceImpl::Chat(grpc::CallbackServerContext* context,
                                                  const v1::ChatRequest* request,
                                                  v1::ChatResponse* response) {
  const absl::Time arrival = absl::Now();  // queueing for a worker counts
  return Offload(chat_pool_, *auth_, context, Role::kUser,
                 [this, context, request, response, arrival] {
                   return Answer(*context, *request, arrival, nullptr, response);
                 });
}

grpc::ServerWriteReactor<v1::ChatStreamResponse>* RouterServiceImpl::ChatStream(
    grpc::CallbackServerContext* context, const v1::ChatRequest* request) {
  using Reactor = WorkerWriteReactor<v1::ChatStreamResponse>;
  const absl::Time arrival = absl::Now();
  auto work = [this, context, request, arrival](Reactor* out) -> absl::Status {
    Streaming stream;
    std::string response_id;
    stream.head = [&](const v1::ChatStreamResponse& head) {
      response_id = head.response_id();
      out->Push(head);
    };
    stream.text = [&](const std::string& delta) {
      v1::ChatStreamResponse m;
      m.set_response_id(response_id);
      m.set_text(delta);
      out->Push(m);
    };
    v1::ChatResponse full;
    SY_RETURN_IF_ERROR(Answer(*context, *request, arrival, &stream, &full));
    v1::ChatStreamResponse last;
    last.set_response_id(full.response_id());
    *last.mutable_sources() = full.sources();
    last.set_finish_reason(full.finish_reason());
    *last.mutable_usage() = full.usage();
    *last.mutable_timings() = full.timings();
    out->Push(last);
    return absl::OkStatus();
  };
  // Text deltas that gather while a write is in flight go out together.
  auto merge = [](v1::ChatStreamResponse& queued, const v1::ChatStreamResponse& next) {
    const bool text_only = next.arm().empty() && next.finish_reason() == 0;
    if (!text_only || !queued.arm().empty() || queued.finish_reason() != 0) return false;
    queued.mutable_text()->append(next.text());
    return true;
  };
  return new Reactor(chat_pool_, *auth_, context, Role::kUser, work, merge);
}

grpc::ServerWriteReactor<v1::EvaluationProgress>* RouterServiceImpl::RunEvaluation(
    grpc::CallbackServerContext* context, const v1::RunEvaluationRequest* request) {
  using Reactor = WorkerWriteReactor<v1::EvaluationProgress>;
  auto work = [this, context, request](Reactor* out) -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->experiment()));
    Backends backends;
    {
      std::lock_guard<std::mutex> lock(mu_);
      backends = backends_;
    }
    Evaluator evaluator(backends, runner());
    const int64_t created = NowMicros();
    SY_ASSIGN_OR_RETURN(v1::Evaluation evaluation,
                        evaluator.Run(
                            *e, *request,
                            [&](int64_t done, int64_t total) {
                              v1::EvaluationProgress p;
                              p.set_done(done);
                              p.set_total(total);
                              out->Push(p);
                            },
                            [context] { return context->IsCancelled(); }));
    const std::string id = absl::StrCat("e-", RandomHex(8));
    evaluation.set_evaluation_id(id);
    evaluation.set_name(absl::StrCat(e->name(), "/evaluations/", id));
    *evaluation.mutable_create_time() = ToTimestamp(created);
    *evaluation.mutable_finish_time() = ToTimestamp(NowMicros());
    EvaluationRecord record{id, e->experiment_id(), created, ""};
    (void)google::protobuf::util::MessageToJsonString(evaluation, &record.json);
    SY_RETURN_IF_ERROR(store_->PutEvaluation(record));
    SY_LOG(kInfo, "router") << "evaluation " << evaluation.name() << ": " << evaluation.examples()
                            << " examples x " << evaluation.arms_size() << " arms of "
                            << evaluation.dataset_version();
    v1::EvaluationProgress last;
    last.set_done(evaluation.examples() * evaluation.arms_size());
    last.set_total(last.done());
    *last.mutable_evaluation() = std::move(evaluation);
    out->Push(last);
    return absl::OkStatus();
  };
  // Only the newest count matters while a write is in flight.
  auto merge = [](v1::EvaluationProgress& queued, const v1::EvaluationProgress& next) {
    if (queued.has_evaluation() || next.has_evaluation()) return false;
    queued = next;
    return true;
  };
  // Evaluations hold a worker for minutes: they run on a pool of their own,
  // away from live chat traffic and shadows.
  // Admin: a run loads inference like live traffic for minutes.
  return new Reactor(eval_pool_, *auth_, context, Role::kAdmin, work, merge);
}

grpc::ServerUnaryReactor* RouterServiceImpl::GetEvaluation(grpc::CallbackServerContext* context,
                                                           const v1::GetEvaluationRequest* request,
                                                           v1::Evaluation* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    const std::string& name = request->name();
    const size_t slash = name.rfind('/');
    const std::string id = slash == std::string::npos ? name : name.substr(slash + 1);
    if (id.empty()) return absl::InvalidArgumentError("name: required");
    SY_ASSIGN_OR_RETURN(EvaluationRecord r, store_->GetEvaluation(id));
    // "experiments/x/evaluations/id" must name the evaluation's experiment.
    if (slash != std::string::npos &&
        name != absl::StrCat("experiments/", r.experiment_id, "/evaluations/", id)) {
      return absl::NotFoundError(absl::StrCat(name, " not found"));
    }
    auto s = google::protobuf::util::JsonStringToMessage(r.json, response);
    if (!s.ok()) return absl::DataLossError(absl::StrCat("evaluation ", id, " is unreadable"));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* RouterServiceImpl::ListEvaluations(
    grpc::CallbackServerContext* context, const v1::ListEvaluationsRequest* request,
    v1::ListEvaluationsResponse* response) {
  return Unary(*auth_, context, Role::kUser, [&]() -> absl::Status {
    SY_ASSIGN_OR_RETURN(std::shared_ptr<const v1::Experiment> e, Find(request->experiment()));
    SY_ASSIGN_OR_RETURN(int page_size, rpc::PageSize(request->page_size(), 50));
    SY_ASSIGN_OR_RETURN(int64_t offset, rpc::ParsePageToken(request->page_token()));
    SY_ASSIGN_OR_RETURN(std::vector<EvaluationRecord> records,
                        store_->ListEvaluations(e->experiment_id()));
    for (int64_t i = offset; i < static_cast<int64_t>(records.size()) && i < offset + page_size;
         ++i) {
      auto s = google::protobuf::util::JsonStringToMessage(records[static_cast<size_t>(i)].json,
                                                           response->add_evaluations());
      if (!s.ok()) return absl::DataLossError("a stored evaluation is unreadable");
    }
    if (offset + page_size < static_cast<int64_t>(records.size())) {
      response->set_next_page_token(std::to_string(offset + page_size));
    }
    return absl::OkStatus();
  });
}

}  // namespace switchyard::router
