#include "services/training/training_service.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "services/training/graders.h"
#include "services/training/training_proto.h"
#include "shared/core/file_util.h"
#include "shared/core/logging.h"
#include "shared/core/status_macros.h"
#include "shared/rpc/status_mapping.h"
#include "shared/rpc/unary.h"

namespace switchyard::training {
namespace {

constexpr int kDefaultEventPage = 100;
constexpr int kDefaultCheckpointPage = 50;
// How long a WatchJob thread waits for an event before it looks again at the
// job and at whether the client went away.
constexpr absl::Duration kWatchPoll = absl::Milliseconds(500);
constexpr int kWatchBatch = 100;

std::string RequestId(const grpc::CallbackServerContext& context) {
  auto it = context.client_metadata().find("x-request-id");
  if (it != context.client_metadata().end())
    return std::string(it->second.data(), it->second.size());
  return RandomHex(6);
}

absl::Status Required(const std::string& value, const char* field, const char* form) {
  if (!value.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " is required (", form, ")"));
}

using rpc::Offload;
using rpc::PageSize;
using rpc::ParsePageToken;
using rpc::Unary;

// Streams a job's events: the stored ones after `after_sequence`, then new
// ones as they arrive, one write at a time. A thread of its own blocks in
// JobManager::WaitEvents with a short timeout so it notices a client that went
// away; OnDone joins it before the reactor is deleted.
class WatchReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  WatchReactor(TrainingServiceImpl* service, grpc::CallbackServerContext* context,
               const v1::WatchJobRequest& request)
      : service_(service), request_(request), request_id_(RequestId(*context)) {
    service_->WatchStarted();
    absl::Status s = service_->auth().Authorize(*context, rpc::Role::kUser);
    if (!s.ok()) {
      Finish(rpc::ToGrpcStatus(s));
      return;
    }
    thread_ = std::thread([this] { Finish(Follow()); });
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_ok_ = ok;
    write_pending_ = false;
    write_done_.notify_all();
  }
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override {
    cancelled_ = true;
    if (thread_.joinable()) {
      // Should gRPC ever run OnDone inline in Finish, it runs on the thread
      // itself, which touches nothing after Finish.
      if (thread_.get_id() == std::this_thread::get_id()) {
        thread_.detach();
      } else {
        thread_.join();
      }
    }
    TrainingServiceImpl* service = service_;
    delete this;
    service->WatchEnded();
  }

 private:
  grpc::Status Follow() {
    absl::Status s = FollowEvents();
    if (!s.ok()) {
      SY_LOG_REQ(kDebug, "training", request_id_)
          << "watch " << request_.name() << " ended: " << s.message();
    }
    return rpc::ToGrpcStatus(s);
  }

  absl::Status FollowEvents() {
    const std::string& name = request_.name();
    SY_RETURN_IF_ERROR(Required(name, "name", "jobs/{job_id}"));
    if (request_.after_sequence() < 0) {
      return absl::InvalidArgumentError("after_sequence must not be negative");
    }
    JobManager* jobs = service_->jobs();
    int64_t after = request_.after_sequence();
    SY_ASSIGN_OR_RETURN(Job job, jobs->GetJob(name));
    while (!cancelled_) {
      if (service_->watches_ended()) {
        return absl::UnavailableError(
            absl::StrCat("the server is shutting down; watch again with after_sequence=", after));
      }
      // A job that is over and whose events were all sent (or skipped by
      // after_sequence) ends the stream; its terminal event ended it otherwise.
      if (IsTerminal(job.state) && job.last_event_sequence <= after) return absl::OkStatus();
      const absl::Time start = absl::Now();
      SY_ASSIGN_OR_RETURN(std::vector<JobEvent> events,
                          jobs->WaitEvents(name, after, kWatchBatch, kWatchPoll));
      if (events.empty() && absl::Now() - start < kWatchPoll / 2) {
        // WaitEvents returns early with nothing only when the manager stops.
        return absl::UnavailableError(absl::StrCat(
            "the training service is stopping; watch again with after_sequence=", after));
      }
      for (const JobEvent& e : events) {
        after = e.sequence;
        if (request_.skip_metrics() && (e.train || e.eval)) continue;
        if (!Write(e)) return absl::CancelledError("the client went away");
        if (e.state_change && IsTerminal(e.state_change->to)) return absl::OkStatus();
      }
      if (events.empty()) {
        SY_ASSIGN_OR_RETURN(job, jobs->GetJob(name));
      }
    }
    return absl::CancelledError("the client cancelled the watch");
  }

  // Sends one event and waits for the write to complete; false when the call
  // is gone.
  bool Write(const JobEvent& e) {
    event_.Clear();
    ToProto(e, &event_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      write_pending_ = true;
    }
    StartWrite(&event_);
    std::unique_lock<std::mutex> lock(mu_);
    write_done_.wait(lock, [this] { return !write_pending_; });
    return write_ok_;
  }

  TrainingServiceImpl* service_;
  const v1::WatchJobRequest request_;
  const std::string request_id_;
  std::atomic<bool> cancelled_{false};
  v1::JobEvent event_;  // the write in flight
  std::mutex mu_;
  std::condition_variable write_done_;
  bool write_pending_ = false;
  bool write_ok_ = false;
  std::thread thread_;  // last: started once the rest is set up
};

}  // namespace

TrainingServiceImpl::TrainingServiceImpl(JobManager* jobs, ModelRegistry* models,
                                         std::shared_ptr<const rpc::Authorizer> auth)
    : jobs_(jobs), models_(models), auth_(std::move(auth)), workers_(2) {}

TrainingServiceImpl::~TrainingServiceImpl() {
  EndWatches();
  std::unique_lock<std::mutex> lock(mu_);
  watch_ended_.wait(lock, [this] { return active_watches_ == 0; });
}

void TrainingServiceImpl::EndWatches() { watches_ended_ = true; }

void TrainingServiceImpl::WatchStarted() {
  std::lock_guard<std::mutex> lock(mu_);
  ++active_watches_;
}

void TrainingServiceImpl::WatchEnded() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--active_watches_ == 0) watch_ended_.notify_all();
}

grpc::ServerUnaryReactor* TrainingServiceImpl::RegisterModel(
    grpc::CallbackServerContext* context, const v1::RegisterModelRequest* request,
    v1::Model* response) {
  return Offload(workers_, *auth_, context, rpc::Role::kAdmin, [=]() -> absl::Status {
    RegisterRequest r;
    r.model_id = request->model_id();
    r.path = request->path();
    switch (request->mode()) {
      case v1::REGISTER_MODE_UNSPECIFIED:
      case v1::REGISTER_MODE_COPY:
        r.link = false;
        break;
      case v1::REGISTER_MODE_LINK:
        r.link = true;
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("mode has unknown value ", static_cast<int>(request->mode())));
    }
    r.base_model = request->base_model();
    r.description = request->description();
    r.labels.insert(request->labels().begin(), request->labels().end());
    r.validate_only = request->validate_only();
    SY_RETURN_IF_ERROR(Required(r.model_id, "model_id", "e.g. tiny-llama"));
    SY_RETURN_IF_ERROR(Required(r.path, "path", "a server-side directory"));
    SY_ASSIGN_OR_RETURN(ModelRecord record, models_->Register(r));
    ToProto(record, response);
    if (!r.validate_only) {
      SY_LOG_REQ(kInfo, "training", RequestId(*context))
          << "registered models/" << record.model_id << " kind=" << ModelKindName(record.kind)
          << " architecture=" << record.architecture;
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::GetModel(grpc::CallbackServerContext* context,
                                                        const v1::GetModelRequest* request,
                                                        v1::Model* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    const std::string& name = request->name();
    SY_RETURN_IF_ERROR(Required(name, "name", "models/{model_id}"));
    ModelRecord record;
    if (absl::StartsWith(name, "jobs/")) {
      SY_ASSIGN_OR_RETURN(record, jobs_->CheckpointModel(name));
    } else {
      SY_ASSIGN_OR_RETURN(record, models_->Get(name));
    }
    ToProto(record, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ListModels(grpc::CallbackServerContext* context,
                                                          const v1::ListModelsRequest* request,
                                                          v1::ListModelsResponse* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    ListModelsFilter filter;
    if (request->kind() != v1::MODEL_KIND_UNSPECIFIED) {
      filter.kind = FromProto(request->kind());
      if (!filter.kind) {
        return absl::InvalidArgumentError(
            absl::StrCat("kind has unknown value ", static_cast<int>(request->kind())));
      }
    }
    filter.base_model = request->base_model();
    SY_ASSIGN_OR_RETURN(ModelPage page,
                        models_->List(request->page_size(), request->page_token(), filter));
    for (const ModelRecord& m : page.models) ToProto(m, response->add_models());
    response->set_next_page_token(page.next_page_token);
    response->set_total_size(static_cast<int32_t>(page.total_size));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::DeleteModel(grpc::CallbackServerContext* context,
                                                           const v1::DeleteModelRequest* request,
                                                           google::protobuf::Empty*) {
  return Offload(workers_, *auth_, context, rpc::Role::kAdmin, [=]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->name(), "name", "models/{model_id}"));
    SY_RETURN_IF_ERROR(
        models_->Delete(request->name(), request->force(),
                        [this](const std::string& id) { return jobs_->ModelInUse(id); }));
    SY_LOG_REQ(kInfo, "training", RequestId(*context))
        << "deleted " << request->name() << (request->force() ? " (force)" : "");
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::CreateJob(grpc::CallbackServerContext* context,
                                                         const v1::CreateJobRequest* request,
                                                         v1::Job* response) {
  // Offloaded: validate_only reads and tokenizes the whole dataset.
  return Offload(workers_, *auth_, context, rpc::Role::kAdmin, [=]() -> absl::Status {
    if (!request->has_spec()) return absl::InvalidArgumentError("spec is required");
    SY_ASSIGN_OR_RETURN(JobSpec spec, JobSpecFromProto(request->spec()));
    CreateJobOptions options;
    options.job_id = request->job_id();
    options.validate_only = request->validate_only();
    SY_ASSIGN_OR_RETURN(Job job, jobs_->CreateJob(spec, options));
    ToProto(job, response);
    if (!options.validate_only) {
      SY_LOG_REQ(kInfo, "training", RequestId(*context))
          << "created jobs/" << job.job_id << " base=" << spec.base_model
          << " dataset=" << spec.training_dataset << " state=" << JobStateName(job.state);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::GetJob(grpc::CallbackServerContext* context,
                                                      const v1::GetJobRequest* request,
                                                      v1::Job* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->name(), "name", "jobs/{job_id}"));
    SY_ASSIGN_OR_RETURN(Job job, jobs_->GetJob(request->name()));
    ToProto(job, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ListJobs(grpc::CallbackServerContext* context,
                                                        const v1::ListJobsRequest* request,
                                                        v1::ListJobsResponse* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    if (request->page_size() < 0)
      return absl::InvalidArgumentError("page_size must not be negative");
    JobFilter filter;
    for (int i = 0; i < request->states_size(); ++i) {
      std::optional<JobState> state = FromProto(request->states(i));
      if (!state) {
        return absl::InvalidArgumentError(absl::StrCat("states[", i, "] has unknown value ",
                                                       static_cast<int>(request->states(i))));
      }
      filter.states.push_back(*state);
    }
    filter.base_model = request->base_model();
    if (absl::StartsWith(filter.base_model, "models/")) filter.base_model.erase(0, 7);
    SY_ASSIGN_OR_RETURN(JobPage page,
                        jobs_->ListJobs(request->page_size(), request->page_token(), filter));
    for (const Job& j : page.jobs) ToProto(j, response->add_jobs());
    response->set_next_page_token(page.next_page_token);
    response->set_total_size(static_cast<int32_t>(page.total_size));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::CancelJob(grpc::CallbackServerContext* context,
                                                         const v1::CancelJobRequest* request,
                                                         v1::Job* response) {
  return Unary(*auth_, context, rpc::Role::kAdmin, [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->name(), "name", "jobs/{job_id}"));
    SY_ASSIGN_OR_RETURN(Job job, jobs_->CancelJob(request->name()));
    ToProto(job, response);
    SY_LOG_REQ(kInfo, "training", RequestId(*context))
        << "cancel requested for jobs/" << job.job_id << " state=" << JobStateName(job.state);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::PauseJob(grpc::CallbackServerContext* context,
                                                        const v1::PauseJobRequest* request,
                                                        v1::Job* response) {
  return Unary(*auth_, context, rpc::Role::kAdmin, [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->name(), "name", "jobs/{job_id}"));
    SY_ASSIGN_OR_RETURN(Job job, jobs_->PauseJob(request->name()));
    ToProto(job, response);
    SY_LOG_REQ(kInfo, "training", RequestId(*context))
        << "pause requested for jobs/" << job.job_id << " state=" << JobStateName(job.state);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ResumeJob(grpc::CallbackServerContext* context,
                                                         const v1::ResumeJobRequest* request,
                                                         v1::Job* response) {
  return Unary(*auth_, context, rpc::Role::kAdmin, [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->name(), "name", "jobs/{job_id}"));
    SY_ASSIGN_OR_RETURN(Job job, jobs_->ResumeJob(request->name()));
    ToProto(job, response);
    SY_LOG_REQ(kInfo, "training", RequestId(*context))
        << "resumed jobs/" << job.job_id << " state=" << JobStateName(job.state);
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::JobEvent>* TrainingServiceImpl::WatchJob(
    grpc::CallbackServerContext* context, const v1::WatchJobRequest* request) {
  return new WatchReactor(this, context, *request);
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ListJobEvents(
    grpc::CallbackServerContext* context, const v1::ListJobEventsRequest* request,
    v1::ListJobEventsResponse* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->parent(), "parent", "jobs/{job_id}"));
    SY_ASSIGN_OR_RETURN(int limit, PageSize(request->page_size(), kDefaultEventPage));
    if (request->after_sequence() < 0) {
      return absl::InvalidArgumentError("after_sequence must not be negative");
    }
    // The token is the sequence of the last event of the previous page.
    SY_ASSIGN_OR_RETURN(int64_t token, ParsePageToken(request->page_token()));
    const int64_t after = std::max(request->after_sequence(), token);
    SY_ASSIGN_OR_RETURN(std::vector<JobEvent> events,
                        jobs_->ListEvents(request->parent(), after, limit + 1));
    const bool more = static_cast<int>(events.size()) > limit;
    if (more) events.resize(static_cast<size_t>(limit));
    for (const JobEvent& e : events) ToProto(e, response->add_events());
    if (more) response->set_next_page_token(absl::StrCat(events.back().sequence));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainingServiceImpl::ListCheckpoints(
    grpc::CallbackServerContext* context, const v1::ListCheckpointsRequest* request,
    v1::ListCheckpointsResponse* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    SY_RETURN_IF_ERROR(Required(request->parent(), "parent", "jobs/{job_id}"));
    SY_ASSIGN_OR_RETURN(int limit, PageSize(request->page_size(), kDefaultCheckpointPage));
    // The token is the index of the first checkpoint of the page.
    SY_ASSIGN_OR_RETURN(int64_t offset, ParsePageToken(request->page_token()));
    SY_ASSIGN_OR_RETURN(Job job, jobs_->GetJob(request->parent()));
    SY_ASSIGN_OR_RETURN(std::vector<CheckpointInfo> checkpoints,
                        jobs_->ListCheckpoints(request->parent()));
    const int64_t total = static_cast<int64_t>(checkpoints.size());
    const int64_t end = std::min(total, offset + limit);
    for (int64_t i = offset; i < end; ++i) {
      ToProto(checkpoints[static_cast<size_t>(i)], job.job_id, response->add_checkpoints());
    }
    if (end < total) response->set_next_page_token(absl::StrCat(end));
    return absl::OkStatus();
  });
}

// Grading runs on the callback thread: it is bounded CPU work (regex inputs,
// fuzzy lengths, ROUGE-L tokens and rendered templates are all capped).
grpc::ServerUnaryReactor* TrainingServiceImpl::RunGrader(grpc::CallbackServerContext* context,
                                                         const v1::RunGraderRequest* request,
                                                         v1::RunGraderResponse* response) {
  return Unary(*auth_, context, rpc::Role::kUser, [&]() -> absl::Status {
    if (!request->has_grader()) return absl::InvalidArgumentError("grader: is required");
    SY_ASSIGN_OR_RETURN(GraderSpec grader, GraderFromProto(request->grader(), "grader"));
    SY_RETURN_IF_ERROR(ValidateGrader(grader, "grader"));
    if (request->output_text().size() > kMaxRenderedBytes) {
      return absl::InvalidArgumentError(absl::StrCat("output_text: longer than ", kMaxRenderedBytes,
                                                     " bytes, got ",
                                                     request->output_text().size()));
    }
    nlohmann::json item = nlohmann::json::object();
    if (request->has_item()) {
      std::string text;
      if (!google::protobuf::util::MessageToJsonString(request->item(), &text).ok()) {
        return absl::InvalidArgumentError("item: is not representable as JSON (a NaN number?)");
      }
      item = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!item.is_object()) return absl::InvalidArgumentError("item: is not a JSON object");
    }
    SY_ASSIGN_OR_RETURN(GradeResult result, Grade(grader, request->output_text(), item));
    response->set_reward(result.reward);
    response->mutable_grader_rewards()->insert(result.grader_rewards.begin(),
                                               result.grader_rewards.end());
    response->mutable_rendered()->insert(result.rendered.begin(), result.rendered.end());
    return absl::OkStatus();
  });
}

}  // namespace switchyard::training
