// TrainingService gRPC adapter: translates switchyard.v1 training messages to
// ModelRegistry and JobManager calls and enforces roles (admin: RegisterModel,
// DeleteModel, CreateJob, CancelJob, PauseJob, ResumeJob; user: reads,
// WatchJob and RunGrader). The switchyard_training_* metrics are the
// JobManager's.
//
// Calls that may copy or read a lot (RegisterModel, DeleteModel, CreateJob)
// run on the service's own workers, not on gRPC's callback threads. Each
// WatchJob stream follows its job on a thread of its own.
//
// Thread-safe. The manager, registry and authorizer must outlive the service;
// shut the gRPC server down before destroying it (the destructor also ends
// and waits for any WatchJob stream still open).
#ifndef SWITCHYARD_SERVICES_TRAINING_TRAINING_SERVICE_H_
#define SWITCHYARD_SERVICES_TRAINING_TRAINING_SERVICE_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "services/training/job_manager.h"
#include "services/training/model_registry.h"
#include "shared/core/thread_pool.h"
#include "shared/rpc/auth.h"
#include "switchyard/v1/training.grpc.pb.h"

namespace switchyard::training {

class TrainingServiceImpl final : public v1::TrainingService::CallbackService {
 public:
  TrainingServiceImpl(JobManager* jobs, ModelRegistry* models,
                      std::shared_ptr<const rpc::Authorizer> auth);
  ~TrainingServiceImpl() override;

  // Ends every open WatchJob stream, and any opened later, with UNAVAILABLE
  // (within about half a second) so that a server drain need not wait for
  // jobs to finish; clients watch again with after_sequence. Call before
  // shutting the server down.
  void EndWatches();

  grpc::ServerUnaryReactor* RegisterModel(grpc::CallbackServerContext* context,
                                          const v1::RegisterModelRequest* request,
                                          v1::Model* response) override;
  grpc::ServerUnaryReactor* GetModel(grpc::CallbackServerContext* context,
                                     const v1::GetModelRequest* request,
                                     v1::Model* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext* context,
                                        const v1::DeleteModelRequest* request,
                                        google::protobuf::Empty* response) override;
  grpc::ServerUnaryReactor* CreateJob(grpc::CallbackServerContext* context,
                                      const v1::CreateJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* context,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* context,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* context,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* PauseJob(grpc::CallbackServerContext* context,
                                     const v1::PauseJobRequest* request,
                                     v1::Job* response) override;
  grpc::ServerUnaryReactor* ResumeJob(grpc::CallbackServerContext* context,
                                      const v1::ResumeJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(grpc::CallbackServerContext* context,
                                                   const v1::WatchJobRequest* request) override;
  grpc::ServerUnaryReactor* ListJobEvents(grpc::CallbackServerContext* context,
                                          const v1::ListJobEventsRequest* request,
                                          v1::ListJobEventsResponse* response) override;
  grpc::ServerUnaryReactor* ListCheckpoints(grpc::CallbackServerContext* context,
                                            const v1::ListCheckpointsRequest* request,
                                            v1::ListCheckpointsResponse* response) override;
  grpc::ServerUnaryReactor* RunGrader(grpc::CallbackServerContext* context,
                                      const v1::RunGraderRequest* request,
                                      v1::RunGraderResponse* response) override;

  // Internal to the WatchJob reactor.
  JobManager* jobs() { return jobs_; }
  const rpc::Authorizer& auth() const { return *auth_; }
  bool watches_ended() const { return watches_ended_; }
  void WatchStarted();
  void WatchEnded();

 private:
  JobManager* jobs_;
  ModelRegistry* models_;
  std::shared_ptr<const rpc::Authorizer> auth_;

  std::atomic<bool> watches_ended_{false};
  std::mutex mu_;
  std::condition_variable watch_ended_;
  int active_watches_ = 0;  // WatchJob reactors not yet deleted

  ThreadPool workers_;  // last: joined first, while the rest is alive
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_TRAINING_SERVICE_H_
