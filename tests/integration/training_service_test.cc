// The training service over real gRPC in-process: ServerRunner on 127.0.0.1:0
// with TrainingServiceImpl over a real JobManager, ModelRegistry and dataset
// catalog in a temp data dir, training a tiny Llama-shaped model on the CPU.
#include "services/training/training_service.h"

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_catalog.h"
#include "services/dataset/dataset_manager.h"
#include "services/training/graders.h"
#include "services/training/job_manager.h"
#include "services/training/job_store.h"
#include "services/training/model_registry.h"
#include "services/training/training_proto.h"
#include "shared/core/file_util.h"
#include "shared/model/lora.h"
#include "shared/rpc/auth.h"
#include "shared/rpc/server_runner.h"
#include "switchyard/v1/training.grpc.pb.h"
#include "tests/unit/services/training/training_testing.h"

namespace switchyard::training {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kAdminToken[] = "admin-token-0123456789";
constexpr char kUserToken[] = "user-token-0123456789";

struct ServerConfig {
  std::shared_ptr<const rpc::Authorizer> auth = std::make_shared<rpc::Authorizer>();
  int max_jobs_per_device = 1;
};

class TrainingServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/training_service_test_", RandomHex(8));
    data_ = dir_ + "/data";
    ASSERT_TRUE(MakeDirs(data_ + "/models").ok());
    // Before the registry opens: it adopts directories under models/ as bases.
    testing::MakeTinyModel(data_ + "/models/tiny");
  }

  void TearDown() override {
    StopServer();
    (void)RemoveAll(dir_);
  }

  void StartServer(const ServerConfig& config = ServerConfig()) {
    metrics_ = std::make_shared<prometheus::Registry>();
    const std::string db = data_ + "/switchyard.db";
    auto catalog = dataset::SqliteDatasetCatalog::Open(db);
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    dataset::ManagerOptions dataset_options;
    dataset_options.data_dir = data_;
    dataset_options.validator.min_examples = 1;
    dataset_options.validator.recommended_examples = 1;
    auto datasets = dataset::DatasetManager::Open(dataset_options, std::move(*catalog));
    ASSERT_TRUE(datasets.ok()) << datasets.status();
    datasets_ = std::move(*datasets);

    auto models = ModelRegistry::Open(data_, db);
    ASSERT_TRUE(models.ok()) << models.status();
    models_ = std::move(*models);
    auto jobs_catalog = dataset::SqliteDatasetCatalog::Open(db);
    ASSERT_TRUE(jobs_catalog.ok()) << jobs_catalog.status();
    jobs_catalog_ = std::move(*jobs_catalog);
    auto store = SqliteJobStore::Open(db);
    ASSERT_TRUE(store.ok()) << store.status();
    JobManagerOptions options;
    options.data_dir = data_;
    options.max_jobs_per_device = config.max_jobs_per_device;
    options.metrics = metrics_.get();
    auto jobs = JobManager::Open(options, std::move(*store), models_.get(), jobs_catalog_.get());
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    jobs_ = std::move(*jobs);
    service_ = std::make_unique<TrainingServiceImpl>(jobs_.get(), models_.get(), config.auth);

    rpc::ServerOptions server_options;
    server_options.grpc_listen = "127.0.0.1:0";
    server_options.metrics_listen = "";
    server_options.drain_timeout = absl::Seconds(2);
    runner_ = std::make_unique<rpc::ServerRunner>(server_options, metrics_);
    runner_->AddService(service_.get(), "switchyard.v1.TrainingService");
    absl::Status s = runner_->Start();
    ASSERT_TRUE(s.ok()) << s;
    s = jobs_->Start();
    ASSERT_TRUE(s.ok()) << s;
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", runner_->grpc_port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::TrainingService::NewStub(channel_);
  }

  void StopServer() {
    if (service_) service_->EndWatches();
    if (runner_) {
      runner_->Shutdown();
      runner_->Wait();
    }
    if (jobs_) jobs_->Shutdown();
    stub_.reset();
    channel_.reset();
    runner_.reset();
    service_.reset();
    jobs_.reset();
    jobs_catalog_.reset();
    models_.reset();
    datasets_.reset();
  }

  // Stores `train` (and `validation`) as the next version of dataset `id`.
  void AddDataset(const std::string& id, const std::string& train,
                  const std::string& validation = "") {
    dataset::UploadRequest request;
    request.dataset_id = id;
    auto session = datasets_->StartUpload(request);
    ASSERT_TRUE(session.ok()) << session.status();
    ASSERT_TRUE((*session)->Write(dataset::Split::kTrain, train).ok());
    if (!validation.empty()) {
      ASSERT_TRUE((*session)->Write(dataset::Split::kValidation, validation).ok());
    }
    auto result = (*session)->Commit();
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_TRUE(result->version.has_value()) << "dataset " << id << " did not validate";
  }

  // The echo task: 12 training and 4 validation examples.
  void AddEchoDatasets() {
    AddDataset("echo", testing::ChatJsonl(12));
    AddDataset("echo-val", testing::ChatJsonl(4, 5));
  }

  // LoRA r 4 on the tiny model, 3 steps per epoch, fp32 on the CPU, seeded.
  static v1::JobSpec SmallSpec(int epochs = 2) {
    v1::JobSpec spec;
    spec.set_base_model("tiny");
    spec.set_training_dataset("echo@1");
    spec.set_validation_dataset("echo-val@1");
    spec.mutable_adapter()->mutable_lora()->set_r(4);
    v1::Hyperparameters* h = spec.mutable_hyperparameters();
    h->set_epochs(epochs);
    h->set_batch_size(4);
    h->set_learning_rate(1e-2);
    h->set_eval_interval_steps(2);
    h->set_log_interval_steps(1);
    h->set_precision(v1::PRECISION_FP32);
    spec.mutable_checkpoints()->set_interval_steps(2);
    spec.set_seed(7);
    spec.set_suffix("echo");
    spec.set_device("cpu");
    return spec;
  }

  grpc::Status Create(const v1::JobSpec& spec, v1::Job* job, const std::string& job_id = "",
                      const std::string& token = "") {
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    v1::CreateJobRequest req;
    *req.mutable_spec() = spec;
    req.set_job_id(job_id);
    return stub_->CreateJob(&ctx, req, job);
  }

  v1::Job GetJob(const std::string& name) {
    grpc::ClientContext ctx;
    v1::GetJobRequest req;
    req.set_name(name);
    v1::Job job;
    grpc::Status s = stub_->GetJob(&ctx, req, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return job;
  }

  // Reads a WatchJob stream to its end. `on_event` may act on the job (pause,
  // cancel, create another) as events arrive.
  grpc::Status Watch(const std::string& name, std::vector<v1::JobEvent>* events, int64_t after = 0,
                     bool skip_metrics = false,
                     const std::function<void(const v1::JobEvent&)>& on_event = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(240));
    v1::WatchJobRequest req;
    req.set_name(name);
    req.set_after_sequence(after);
    req.set_skip_metrics(skip_metrics);
    auto reader = stub_->WatchJob(&ctx, req);
    v1::JobEvent event;
    while (reader->Read(&event)) {
      events->push_back(event);
      if (on_event) on_event(event);
    }
    return reader->Finish();
  }

  // Creates a job and watches it to its end; returns the finished job.
  v1::Job RunToEnd(const v1::JobSpec& spec, std::vector<v1::JobEvent>* events) {
    v1::Job job;
    grpc::Status s = Create(spec, &job);
    EXPECT_TRUE(s.ok()) << s.error_message();
    s = Watch(job.name(), events);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return GetJob(job.name());
  }

  // A Grader from its proto JSON mapping.
  static v1::Grader GraderProto(const std::string& json) {
    v1::Grader g;
    auto s = google::protobuf::util::JsonStringToMessage(json, &g);
    EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << json;
    return g;
  }

  // RunGrader with `grader` in the proto JSON mapping (empty: none) and
  // `item` a JSON object.
  grpc::Status RunGrader(const std::string& grader, const std::string& output,
                         const std::string& item, v1::RunGraderResponse* response,
                         const std::string& token = "") {
    v1::RunGraderRequest req;
    if (!grader.empty()) *req.mutable_grader() = GraderProto(grader);
    req.set_output_text(output);
    auto s = google::protobuf::util::JsonStringToMessage(item, req.mutable_item());
    EXPECT_TRUE(s.ok()) << s.ToString() << "\n" << item;
    grpc::ClientContext ctx;
    SetToken(&ctx, token);
    return stub_->RunGrader(&ctx, req, response);
  }

  static void SetToken(grpc::ClientContext* ctx, const std::string& token) {
    if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }

  static bool IsStateChangeTo(const v1::JobEvent& e, v1::JobState state) {
    return e.has_state_change() && e.state_change().to_state() == state;
  }

  std::string dir_, data_;
  std::shared_ptr<prometheus::Registry> metrics_;
  std::unique_ptr<dataset::DatasetManager> datasets_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<dataset::SqliteDatasetCatalog> jobs_catalog_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<TrainingServiceImpl> service_;
  std::unique_ptr<rpc::ServerRunner> runner_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::TrainingService::Stub> stub_;
};

TEST_F(TrainingServiceTest, ListsTheAdoptedBaseModel) {
  StartServer();
  grpc::ClientContext ctx;
  v1::ListModelsResponse resp;
  ASSERT_TRUE(stub_->ListModels(&ctx, v1::ListModelsRequest(), &resp).ok());
  ASSERT_EQ(resp.models_size(), 1);
  const v1::Model& m = resp.models(0);
  EXPECT_EQ(m.name(), "models/tiny");
  EXPECT_EQ(m.kind(), v1::MODEL_KIND_BASE);
  EXPECT_EQ(m.architecture(), "LlamaForCausalLM");
  EXPECT_TRUE(m.has_chat_template());
  EXPECT_GT(m.parameter_count(), 0);
  EXPECT_FALSE(m.has_fine_tune());
}

TEST_F(TrainingServiceTest, LoraJobSucceedsStreamingGaplessEventsAndRegistersAdapter) {
  StartServer();
  AddEchoDatasets();
  v1::Job created;
  grpc::Status s = Create(SmallSpec(), &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(created.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(created.name(), "jobs/" + created.job_id());
  // The spec comes back as submitted: unset optional fields stay unset.
  EXPECT_TRUE(created.spec().hyperparameters().has_epochs());
  EXPECT_FALSE(created.spec().hyperparameters().has_warmup_ratio());
  EXPECT_FALSE(created.spec().adapter().lora().has_alpha());

  std::vector<v1::JobEvent> events;
  s = Watch(created.name(), &events);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(events.empty());
  std::vector<v1::JobState> states;
  int train = 0, evals = 0, checkpoints = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const v1::JobEvent& e = events[i];
    EXPECT_EQ(e.sequence(), static_cast<int64_t>(i) + 1) << "events are gapless from 1";
    EXPECT_EQ(e.job(), created.name());
    EXPECT_TRUE(e.has_time());
    if (e.has_state_change()) states.push_back(e.state_change().to_state());
    if (e.has_train()) {
      ++train;
      EXPECT_GT(e.train().loss(), 0);
      EXPECT_EQ(e.train().total_steps(), 6);
    }
    if (e.has_eval()) ++evals;
    if (e.has_checkpoint()) {
      ++checkpoints;
      EXPECT_THAT(e.checkpoint().name(), HasSubstr(created.name() + "/checkpoints/"));
    }
  }
  EXPECT_EQ(states.front(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(states.back(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_NE(std::find(states.begin(), states.end(), v1::JOB_STATE_RUNNING), states.end());
  EXPECT_TRUE(IsStateChangeTo(events.back(), v1::JOB_STATE_SUCCEEDED))
      << "the stream ends after the terminal event";
  EXPECT_EQ(train, 6);  // 12 examples / batch 4 x 2 epochs, logged every step
  EXPECT_GT(evals, 0);
  EXPECT_GT(checkpoints, 0);

  v1::Job job = GetJob(created.name());
  EXPECT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job.step(), 6);
  EXPECT_EQ(job.total_steps(), 6);
  EXPECT_EQ(job.training_examples(), 12);
  EXPECT_EQ(job.validation_examples(), 4);
  EXPECT_EQ(job.last_event_sequence(), static_cast<int64_t>(events.size()));
  EXPECT_TRUE(job.has_end_time());
  EXPECT_TRUE(job.has_resolved_spec());
  EXPECT_EQ(job.resolved_spec().adapter().lora().r(), 4);
  EXPECT_TRUE(job.resolved_spec().adapter().lora().has_alpha()) << "auto values resolved";
  const std::string model_id = absl::StrCat("ft:tiny:echo:", job.job_id());
  EXPECT_EQ(job.fine_tuned_model(), "models/" + model_id);

  grpc::ClientContext list_ctx;
  v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&list_ctx, v1::ListModelsRequest(), &models).ok());
  ASSERT_EQ(models.models_size(), 2);
  const v1::Model& m = models.models(0);  // newest first
  EXPECT_EQ(m.model_id(), model_id);
  EXPECT_EQ(m.kind(), v1::MODEL_KIND_ADAPTER);
  EXPECT_EQ(m.base_model(), "models/tiny");
  EXPECT_EQ(m.lora().r(), 4);
  EXPECT_GT(m.adapter_parameter_count(), 0);
  ASSERT_TRUE(m.has_fine_tune());
  EXPECT_EQ(m.fine_tune().job(), created.name());
  EXPECT_EQ(m.fine_tune().method(), v1::TRAINING_METHOD_SUPERVISED);
  EXPECT_EQ(m.fine_tune().training_dataset(), "echo@1");
  EXPECT_EQ(m.fine_tune().validation_dataset(), "echo-val@1");
  EXPECT_EQ(m.fine_tune().resolved_spec().adapter().lora().r(), 4);
  EXPECT_EQ(m.fine_tune().final_train().step(), 6);
  EXPECT_TRUE(m.fine_tune().has_final_eval());
  EXPECT_THAT(m.fine_tune().checkpoint(), HasSubstr(created.name() + "/checkpoints/"));

  grpc::ClientContext kind_ctx;
  v1::ListModelsRequest adapters_only;
  adapters_only.set_kind(v1::MODEL_KIND_ADAPTER);
  v1::ListModelsResponse adapters;
  ASSERT_TRUE(stub_->ListModels(&kind_ctx, adapters_only, &adapters).ok());
  ASSERT_EQ(adapters.models_size(), 1);
  EXPECT_EQ(adapters.models(0).model_id(), model_id);

  // Checkpoints are listed and each reads as a model.
  grpc::ClientContext ck_ctx;
  v1::ListCheckpointsRequest ck_req;
  ck_req.set_parent(created.name());
  v1::ListCheckpointsResponse cks;
  ASSERT_TRUE(stub_->ListCheckpoints(&ck_ctx, ck_req, &cks).ok());
  ASSERT_GT(cks.checkpoints_size(), 0);
  grpc::ClientContext get_ctx;
  v1::GetModelRequest get_req;
  get_req.set_name(cks.checkpoints(0).name());
  v1::Model ck_model;
  s = stub_->GetModel(&get_ctx, get_req, &ck_model);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(ck_model.kind(), v1::MODEL_KIND_ADAPTER);

  // ListJobEvents pages through the same events.
  std::vector<v1::JobEvent> listed;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext ctx;
    v1::ListJobEventsRequest req;
    req.set_parent(created.name());
    req.set_page_size(5);
    req.set_page_token(token);
    v1::ListJobEventsResponse resp;
    ASSERT_TRUE(stub_->ListJobEvents(&ctx, req, &resp).ok());
    ASSERT_LE(resp.events_size(), 5);
    listed.insert(listed.end(), resp.events().begin(), resp.events().end());
    token = resp.next_page_token();
    ASSERT_LT(++pages, 100);
  } while (!token.empty());
  ASSERT_EQ(listed.size(), events.size());
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(listed[i].SerializeAsString(), events[i].SerializeAsString()) << "event " << i;
  }
}

TEST_F(TrainingServiceTest, WatchReconnectReplaysOnlyLaterEvents) {
  StartServer();
  AddEchoDatasets();
  std::vector<v1::JobEvent> all;
  v1::Job job = RunToEnd(SmallSpec(), &all);
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_GT(all.size(), 5u);

  std::vector<v1::JobEvent> later;
  grpc::Status s = Watch(job.name(), &later, /*after=*/4);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(later.size(), all.size() - 4);
  EXPECT_EQ(later.front().sequence(), 5);
  EXPECT_TRUE(IsStateChangeTo(later.back(), v1::JOB_STATE_SUCCEEDED));

  // Nothing newer than the last event: the stream of a finished job ends at once.
  std::vector<v1::JobEvent> none;
  s = Watch(job.name(), &none, job.last_event_sequence());
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_THAT(none, IsEmpty());

  std::vector<v1::JobEvent> quiet;
  s = Watch(job.name(), &quiet, 0, /*skip_metrics=*/true);
  ASSERT_TRUE(s.ok()) << s.error_message();
  for (const v1::JobEvent& e : quiet) {
    EXPECT_FALSE(e.has_train() || e.has_eval()) << "event " << e.sequence();
  }
  EXPECT_LT(quiet.size(), all.size());
  EXPECT_TRUE(IsStateChangeTo(quiet.back(), v1::JOB_STATE_SUCCEEDED));
}

TEST_F(TrainingServiceTest, CreateJobRejectsBadSettingsNamingTheField) {
  StartServer();
  AddEchoDatasets();
  struct Case {
    std::function<void(v1::JobSpec*)> change;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::JobSpec* s) { s->mutable_hyperparameters()->set_epochs(0); },
       "hyperparameters.epochs"},
      {[](v1::JobSpec* s) { s->mutable_hyperparameters()->set_learning_rate(-1); },
       "hyperparameters.learning_rate"},
      {[](v1::JobSpec* s) { s->mutable_hyperparameters()->set_batch_size(0); },
       "hyperparameters.batch_size"},
      {[](v1::JobSpec* s) { s->set_suffix("Bad Suffix!"); }, "suffix"},
      {[](v1::JobSpec* s) { s->mutable_adapter()->mutable_lora()->set_dropout(1.5); },
       "adapter.lora.dropout"},
      {[](v1::JobSpec* s) { s->set_base_model(""); }, "base_model"},
      {[](v1::JobSpec* s) {
         s->mutable_adapter()->mutable_lora()->set_quantize_base(v1::BASE_QUANTIZATION_INT8);
         s->mutable_adapter()->mutable_lora()->set_double_quantization(true);
       },
       "adapter.lora.double_quantization"},
  };
  for (const Case& c : cases) {
    v1::JobSpec spec = SmallSpec();
    c.change(&spec);
    v1::Job job;
    grpc::Status s = Create(spec, &job);
    EXPECT_FALSE(s.ok()) << c.field;
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(c.field));
  }
  grpc::ClientContext ctx;
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(&ctx, v1::ListJobsRequest(), &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0) << "a refused job is not stored";
}

TEST_F(TrainingServiceTest, QloraJobTrainsOnAnNf4BaseAndRegistersAPeftAdapter) {
  StartServer();
  AddEchoDatasets();
  v1::JobSpec spec = SmallSpec();
  spec.mutable_adapter()->mutable_lora()->set_quantize_base(v1::BASE_QUANTIZATION_NF4);
  spec.mutable_adapter()->mutable_lora()->set_double_quantization(true);
  v1::Job created;
  grpc::Status s = Create(spec, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(Watch(created.name(), &events).ok());
  v1::Job job = GetJob(created.name());
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.resolved_spec().adapter().lora().quantize_base(), v1::BASE_QUANTIZATION_NF4);
  EXPECT_TRUE(job.resolved_spec().adapter().lora().double_quantization());
  // The adapter is an ordinary PEFT adapter over the unquantised base.
  grpc::ClientContext ctx;
  v1::GetModelRequest req;
  req.set_name(job.fine_tuned_model());
  v1::Model model;
  ASSERT_TRUE(stub_->GetModel(&ctx, req, &model).ok());
  EXPECT_EQ(model.kind(), v1::MODEL_KIND_ADAPTER);
  auto adapter = model::LoadPeftAdapter(model.path(), at::kFloat, at::kCPU);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
}

TEST_F(TrainingServiceTest, UnknownDatasetOrModelIsNotFound) {
  StartServer();
  AddEchoDatasets();
  v1::JobSpec spec = SmallSpec();
  spec.set_training_dataset("nope@1");
  v1::Job job;
  grpc::Status s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("nope"));

  spec = SmallSpec();
  spec.set_base_model("no-such-model");
  s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();

  grpc::ClientContext ctx;
  v1::GetJobRequest req;
  req.set_name("jobs/ft-0000");
  s = stub_->GetJob(&ctx, req, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();

  std::vector<v1::JobEvent> events;
  s = Watch("jobs/ft-0000", &events);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
}

TEST_F(TrainingServiceTest, DpoNeedsPreferenceDataAndReinforcementAGraderItsDataSatisfies) {
  StartServer();
  AddEchoDatasets();
  v1::JobSpec spec = SmallSpec();
  spec.set_method(v1::TRAINING_METHOD_DPO);
  v1::Job job;
  grpc::Status s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("training_dataset"));
  EXPECT_THAT(s.error_message(), HasSubstr("preference data"));
  spec.mutable_dpo()->set_beta(-1);
  s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("dpo.beta"));
  spec = SmallSpec();
  spec.mutable_dpo()->set_beta(0.2);
  s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  spec = SmallSpec();
  spec.set_method(v1::TRAINING_METHOD_REINFORCEMENT);
  s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_EQ(s.error_message(), "reinforcement.grader: is required");
  *spec.mutable_reinforcement()->mutable_grader() =
      GraderProto(R"({"string_check": {"reference": "{{item.answer"}})");
  s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("reinforcement.grader.string_check.reference"));
  // The echo examples have no "answer": validation fails naming the line.
  *spec.mutable_reinforcement()->mutable_grader() =
      GraderProto(R"({"string_check": {"reference": "{{item.answer}}"}})");
  s = Create(spec, &job);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(Watch(job.name(), &events).ok());
  job = GetJob(job.name());
  EXPECT_EQ(job.state(), v1::JOB_STATE_FAILED);
  ASSERT_GT(job.errors_size(), 0);
  EXPECT_EQ(job.errors(0).line(), 1);
  EXPECT_THAT(job.errors(0).message(), HasSubstr("answer"));
  spec = SmallSpec();
  *spec.mutable_reinforcement()->mutable_grader() =
      GraderProto(R"({"string_check": {"reference": "x"}})");
  s = Create(spec, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("TRAINING_METHOD_REINFORCEMENT"));
}

TEST_F(TrainingServiceTest, ReinforcementJobSamplesGradesAndRegistersAnAdapter) {
  StartServer();
  AddEchoDatasets();
  v1::JobSpec spec = SmallSpec(1);
  spec.set_method(v1::TRAINING_METHOD_REINFORCEMENT);
  v1::ReinforcementSpec* rl = spec.mutable_reinforcement();
  *rl->mutable_grader() =
      GraderProto(R"({"name": "letters", "string_check": {"reference": "^[a-z ]+$",
                      "operation": "STRING_CHECK_OPERATION_REGEX"}})");
  rl->set_num_generations(2);
  rl->set_max_completion_tokens(3);
  v1::Job created;
  grpc::Status s = Create(spec, &created);
  ASSERT_TRUE(s.ok()) << s.error_message();
  std::vector<v1::JobEvent> events;
  ASSERT_TRUE(Watch(created.name(), &events).ok());
  v1::Job job = GetJob(created.name());
  ASSERT_EQ(job.state(), v1::JOB_STATE_SUCCEEDED) << job.DebugString();
  EXPECT_EQ(job.resolved_spec().reinforcement().num_generations(), 2);
  EXPECT_DOUBLE_EQ(job.resolved_spec().reinforcement().kl_beta(), 0.04);
  int train = 0, evals = 0;
  for (const v1::JobEvent& e : events) {
    if (e.has_train()) {
      ++train;
      ASSERT_TRUE(e.train().has_reinforcement());
      const v1::ReinforcementMetrics& m = e.train().reinforcement();
      EXPECT_GE(m.reward_mean(), 0);
      EXPECT_LE(m.reward_mean(), 1);
      EXPECT_LE(m.completion_length_mean(), 3);
      EXPECT_EQ(m.grader_rewards().count("letters"), 1u);
    }
    if (e.has_eval()) {
      ++evals;
      EXPECT_TRUE(e.eval().has_reinforcement());
    }
  }
  EXPECT_EQ(train, 3);  // 12 prompts / batch 4
  EXPECT_GT(evals, 0);
  EXPECT_FALSE(job.fine_tuned_model().empty());
}

TEST_F(TrainingServiceTest, RunGraderScoresEachKind) {
  StartServer();
  const std::string item = R"({"answer": "Paris", "meta": {"n": 4}})";
  // string_check: pass and fail, with the rendered templates.
  const std::string check =
      R"({"name": "exact", "string_check": {"reference": "{{item.answer}}",
          "operation": "STRING_CHECK_OPERATION_EQ", "ignore_case": true, "trim": true}})";
  v1::RunGraderResponse r;
  grpc::Status s = RunGrader(check, " paris\n", item, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.reward(), 1.0);
  EXPECT_EQ(r.grader_rewards().at("exact"), 1.0);
  EXPECT_EQ(r.rendered().at("exact.input"), " paris\n");
  EXPECT_EQ(r.rendered().at("exact.reference"), "Paris");
  ASSERT_TRUE(RunGrader(check, "London", item, &r).ok());
  EXPECT_EQ(r.reward(), 0.0);

  // regex over a number rendered from the item.
  ASSERT_TRUE(RunGrader(R"({"string_check": {"reference": "^\\d+ = {{item.meta.n}}$",
                           "operation": "STRING_CHECK_OPERATION_REGEX"}})",
                        "2 = 4", item, &r)
                  .ok());
  EXPECT_EQ(r.reward(), 1.0);
  EXPECT_EQ(r.rendered().at("string_check.reference"), "^\\d+ = 4$");

  // text_similarity: token F1 of "paris france" against "Paris" is 2/3.
  ASSERT_TRUE(RunGrader(R"({"text_similarity": {"reference": "{{item.answer}}"}})", "paris france",
                        item, &r)
                  .ok());
  EXPECT_NEAR(r.reward(), 2.0 / 3.0, 1e-9);
  EXPECT_NEAR(r.grader_rewards().at("text_similarity"), 2.0 / 3.0, 1e-9);
  ASSERT_TRUE(RunGrader(R"({"text_similarity": {"reference": "{{item.answer}}",
                           "metric": "TEXT_SIMILARITY_METRIC_FUZZY", "pass_threshold": 0.8}})",
                        "Parise", item, &r)
                  .ok());
  EXPECT_EQ(r.reward(), 1.0);  // 1 - 1/6 >= 0.8

  // json_schema: match, mismatch with partial credit, not JSON.
  const std::string schema = R"({"json_schema": {"partial_credit": true, "schema": {
      "type": "object", "required": ["city"],
      "properties": {"city": {"type": "string"}}}}})";
  ASSERT_TRUE(RunGrader(schema, "```json\n{\"city\": \"Paris\"}\n```", item, &r).ok());
  EXPECT_EQ(r.reward(), 1.0);
  EXPECT_EQ(r.rendered().count("json_schema.reference"), 0u);
  ASSERT_TRUE(RunGrader(schema, R"({"town": 1})", item, &r).ok());
  EXPECT_EQ(r.reward(), 0.5);
  ASSERT_TRUE(RunGrader(schema, "Paris", item, &r).ok());
  EXPECT_EQ(r.reward(), 0.0);

  // multi: the weighted mean, every grader's reward by name.
  const std::string multi = R"({"name": "total", "multi": {"graders": [
      {"grader": {"name": "exact", "string_check": {"reference": "{{item.answer}}"}},
       "weight": 3},
      {"grader": {"string_check": {"reference": "Par", "operation": "STRING_CHECK_OPERATION_CONTAINS"}},
       "weight": 1}]}})";
  ASSERT_TRUE(RunGrader(multi, "Paris!", item, &r).ok());
  EXPECT_EQ(r.reward(), 0.25);
  EXPECT_EQ(r.grader_rewards().at("total"), 0.25);
  EXPECT_EQ(r.grader_rewards().at("exact"), 0.0);
  EXPECT_EQ(r.grader_rewards().at("string_check"), 1.0);
  EXPECT_EQ(r.rendered().at("string_check.reference"), "Par");
  ASSERT_TRUE(RunGrader(multi, "Paris", item, &r).ok());
  EXPECT_EQ(r.reward(), 1.0);
}

TEST_F(TrainingServiceTest, RunGraderRunsAnOpenAiFormGraderConvertedToTheProto) {
  StartServer();
  absl::StatusOr<GraderSpec> spec = GraderFromJson(nlohmann::json::parse(R"({
      "type": "multi", "name": "score", "calculate_output": "0.75 * exact + 0.25 * close",
      "graders": {
        "exact": {"type": "string_check", "name": "ignored", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "operation": "ilike"},
        "close": {"type": "text_similarity", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}}})"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  v1::RunGraderRequest req;
  ToProto(*spec, req.mutable_grader());
  absl::StatusOr<GraderSpec> back = GraderFromProto(req.grader(), "grader");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, *spec) << "the proto carries every field";
  req.set_output_text("It is PARIS.");
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(R"({"answer": "paris"})", req.mutable_item())
          .ok());
  grpc::ClientContext ctx;
  v1::RunGraderResponse r;
  grpc::Status s = stub_->RunGrader(&ctx, req, &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.grader_rewards().at("exact"), 1.0);  // ilike: contains, ignoring case
  const double close = r.grader_rewards().at("close");
  EXPECT_GT(close, 0.0);
  EXPECT_LT(close, 1.0);
  EXPECT_NEAR(r.reward(), 0.75 + 0.25 * close, 1e-12);
  EXPECT_NEAR(r.grader_rewards().at("score"), r.reward(), 1e-12);
  EXPECT_EQ(r.rendered().at("exact.reference"), "paris");
}

TEST_F(TrainingServiceTest, RunGraderErrorsNameTheField) {
  StartServer();
  struct Case {
    std::string grader;  // proto JSON; empty = no grader
    std::string output, item;
    std::string message;  // expected substring
  };
  const std::vector<Case> cases = {
      {"", "x", "{}", "grader: is required"},
      {R"({"name": "x"})", "x", "{}",
       "grader: needs one of string_check, text_similarity, json_schema, multi"},
      {R"({"string_check": {"reference": "(unclosed", "operation": "STRING_CHECK_OPERATION_REGEX"}})",
       "x", "{}", "grader.string_check.reference"},
      {R"({"string_check": {"reference": "{{item.answer}}"}})", "x", R"({"other": 1})",
       "grader.string_check.reference: {{item.answer}}: the example has no field \"answer\""},
      {R"({"string_check": {"reference": "({{item.p}}", "operation": "STRING_CHECK_OPERATION_REGEX"}})",
       "x", R"({"p": "a"})", "grader.string_check.reference"},
      {R"({"string_check": {"reference": "{{ sample.output }}"}})", "x", "{}",
       "grader.string_check.reference"},
      {R"({"text_similarity": {"reference": "a", "pass_threshold": 2}})", "x", "{}",
       "grader.text_similarity.pass_threshold: must be in [0, 1], got 2"},
      {R"({"json_schema": {"schema": {"oneOf": []}}})", "x", "{}", "grader.json_schema.schema"},
      {R"({"multi": {}})", "x", "{}", "grader.multi.graders: needs at least one sub-grader"},
      {R"({"multi": {"graders": [{"grader": {"string_check": {"reference": "a"}}, "weight": -1}]}})",
       "x", "{}", "grader.multi.graders[0].weight"},
      {R"({"multi": {"graders": [{"grader": {"name": "a", "string_check": {"reference": "a"}}, "weight": 1},
                                 {"grader": {"name": "a", "string_check": {"reference": "b"}}, "weight": 1}]}})",
       "x", "{}", "grader.multi.graders[1].grader.name"},
  };
  for (const Case& c : cases) {
    v1::RunGraderResponse r;
    grpc::Status s = RunGrader(c.grader, c.output, c.item, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.grader;
    EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.grader;
  }
  // An enum number this server does not know, deep in the tree.
  v1::RunGraderRequest req;
  *req.mutable_grader() = GraderProto(R"({"multi": {"graders": [
      {"grader": {"string_check": {"reference": "a"}}, "weight": 1},
      {"grader": {"string_check": {"reference": "a"}}, "weight": 1}]}})");
  req.mutable_grader()
      ->mutable_multi()
      ->mutable_graders(1)
      ->mutable_grader()
      ->mutable_string_check()
      ->set_operation(static_cast<v1::StringCheckOperation>(9));
  grpc::ClientContext ctx;
  v1::RunGraderResponse r;
  grpc::Status s = stub_->RunGrader(&ctx, req, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("grader.multi.graders[1].grader.string_check.operation"));
}

TEST_F(TrainingServiceTest, SecondJobQueuesBehindTheFirstAndBothFinish) {
  StartServer();  // max_jobs_per_device 1
  AddEchoDatasets();
  v1::Job first;
  ASSERT_TRUE(Create(SmallSpec(/*epochs=*/4), &first).ok());
  v1::Job second;
  bool created_second = false;
  std::vector<v1::JobEvent> first_events;
  grpc::Status s = Watch(first.name(), &first_events, 0, false, [&](const v1::JobEvent& e) {
    if (created_second || !e.has_train()) return;
    // The first job holds the CPU's one slot now.
    created_second = true;
    grpc::Status c = Create(SmallSpec(), &second);
    ASSERT_TRUE(c.ok()) << c.error_message();
    EXPECT_EQ(second.state(), v1::JOB_STATE_QUEUED);
    EXPECT_EQ(second.queue_position(), 1);
    v1::Job running = GetJob(first.name());
    EXPECT_EQ(running.state(), v1::JOB_STATE_RUNNING);
    EXPECT_EQ(running.queue_position(), 0);
  });
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(created_second);
  EXPECT_EQ(GetJob(first.name()).state(), v1::JOB_STATE_SUCCEEDED);

  std::vector<v1::JobEvent> second_events;
  s = Watch(second.name(), &second_events);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::Job done = GetJob(second.name());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  // It started only once the first had ended.
  using google::protobuf::util::TimeUtil;
  EXPECT_GE(TimeUtil::TimestampToMilliseconds(done.start_time()),
            TimeUtil::TimestampToMilliseconds(GetJob(first.name()).end_time()));
}

TEST_F(TrainingServiceTest, CancelRunningJobEndsCancelledAndFreesTheDevice) {
  StartServer();
  AddEchoDatasets();
  v1::Job doomed;
  ASSERT_TRUE(Create(SmallSpec(/*epochs=*/30), &doomed).ok());
  v1::Job next;
  ASSERT_TRUE(Create(SmallSpec(), &next).ok());
  EXPECT_EQ(next.state(), v1::JOB_STATE_QUEUED);

  bool cancelled = false;
  std::vector<v1::JobEvent> events;
  grpc::Status s = Watch(doomed.name(), &events, 0, false, [&](const v1::JobEvent& e) {
    if (cancelled || !e.has_train()) return;
    cancelled = true;
    // A model a job in progress uses cannot be deleted.
    grpc::ClientContext del_ctx;
    v1::DeleteModelRequest del;
    del.set_name("models/tiny");
    google::protobuf::Empty empty;
    grpc::Status d = stub_->DeleteModel(&del_ctx, del, &empty);
    EXPECT_EQ(d.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << d.error_message();

    grpc::ClientContext ctx;
    v1::CancelJobRequest req;
    req.set_name(doomed.name());
    v1::Job job;
    grpc::Status c = stub_->CancelJob(&ctx, req, &job);
    EXPECT_TRUE(c.ok()) << c.error_message();
  });
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(cancelled);
  EXPECT_TRUE(IsStateChangeTo(events.back(), v1::JOB_STATE_CANCELLED));
  v1::Job job = GetJob(doomed.name());
  EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED);
  EXPECT_LT(job.step(), job.total_steps());
  EXPECT_THAT(job.fine_tuned_model(), IsEmpty());

  // The queued job gets the freed device and finishes.
  std::vector<v1::JobEvent> next_events;
  s = Watch(next.name(), &next_events);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(GetJob(next.name()).state(), v1::JOB_STATE_SUCCEEDED);

  // A terminal job cannot be cancelled again.
  grpc::ClientContext ctx;
  v1::CancelJobRequest req;
  req.set_name(doomed.name());
  s = stub_->CancelJob(&ctx, req, &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
}

TEST_F(TrainingServiceTest, PausedJobResumesAndSucceeds) {
  StartServer();
  AddEchoDatasets();
  v1::Job job;
  ASSERT_TRUE(Create(SmallSpec(/*epochs=*/4), &job).ok());
  bool paused = false, resumed = false;
  int64_t paused_at_step = -1, paused_at_sequence = -1;
  std::vector<v1::JobEvent> events;
  grpc::Status s = Watch(job.name(), &events, 0, false, [&](const v1::JobEvent& e) {
    if (!paused && e.has_train()) {
      paused = true;
      grpc::ClientContext ctx;
      v1::PauseJobRequest req;
      req.set_name(job.name());
      v1::Job j;
      grpc::Status p = stub_->PauseJob(&ctx, req, &j);
      EXPECT_TRUE(p.ok()) << p.error_message();
    }
    if (!resumed && IsStateChangeTo(e, v1::JOB_STATE_PAUSED)) {
      resumed = true;
      v1::Job j = GetJob(job.name());
      EXPECT_EQ(j.state(), v1::JOB_STATE_PAUSED);
      paused_at_step = j.step();
      paused_at_sequence = e.sequence();
      grpc::ClientContext ctx;
      v1::ResumeJobRequest req;
      req.set_name(job.name());
      grpc::Status r = stub_->ResumeJob(&ctx, req, &j);
      EXPECT_TRUE(r.ok()) << r.error_message();
    }
  });
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_TRUE(paused);
  ASSERT_TRUE(resumed) << "no PAUSED state change was streamed";
  EXPECT_TRUE(IsStateChangeTo(events.back(), v1::JOB_STATE_SUCCEEDED));
  // Pausing saved a checkpoint at the step it stopped at (a pause checkpoint,
  // or the interval checkpoint just written at that step).
  bool checkpoint_at_pause = false;
  for (const v1::JobEvent& e : events) {
    if (e.has_checkpoint() && e.sequence() < paused_at_sequence &&
        e.checkpoint().step() == paused_at_step) {
      checkpoint_at_pause = true;
    }
  }
  EXPECT_GT(paused_at_step, 0);
  EXPECT_TRUE(checkpoint_at_pause) << "paused at step " << paused_at_step;
  v1::Job done = GetJob(job.name());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.step(), done.total_steps());
}

TEST_F(TrainingServiceTest, RolesGateMutations) {
  auto auth = rpc::Authorizer::FromText(
      absl::StrCat(kAdminToken, " admin\n", kUserToken, " user\n"), "test");
  ASSERT_TRUE(auth.ok()) << auth.status();
  ServerConfig config;
  config.auth = *auth;
  StartServer(config);
  AddEchoDatasets();
  v1::Job job;
  grpc::Status s = Create(SmallSpec(), &job, "", kUserToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  s = Create(SmallSpec(), &job, "", "");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();

  grpc::ClientContext ctx;
  SetToken(&ctx, kUserToken);
  v1::ListModelsResponse models;
  EXPECT_TRUE(stub_->ListModels(&ctx, v1::ListModelsRequest(), &models).ok());
  v1::RunGraderResponse graded;
  const std::string grader = R"({"string_check": {"reference": "a"}})";
  s = RunGrader(grader, "a", "{}", &graded, kUserToken);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(graded.reward(), 1.0);
  s = RunGrader(grader, "a", "{}", &graded);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();

  grpc::ClientContext del_ctx;
  SetToken(&del_ctx, kUserToken);
  v1::DeleteModelRequest del;
  del.set_name("models/tiny");
  google::protobuf::Empty empty;
  s = stub_->DeleteModel(&del_ctx, del, &empty);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);

  s = Create(SmallSpec(), &job, "ft-by-admin", kAdminToken);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(job.job_id(), "ft-by-admin");
  s = Create(SmallSpec(), &job, "ft-by-admin", kAdminToken);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
}

}  // namespace
}  // namespace switchyard::training
