#include "services/training/job_manager.h"

#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "services/dataset/dataset_manager.h"
#include "services/training/job_spec.h"
#include "shared/core/file_util.h"
#include "shared/model/runtime.h"
#include "tests/testing/temp_dir.h"
#include "tests/unit/services/training/training_testing.h"

namespace switchyard::training {
namespace {

namespace fs = std::filesystem;

// A data dir with the tiny model registered as "tiny" and the chat dataset
// "echo" (train + validation), and a JobManager over it.
class JobManagerTest : public switchyard::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    testing::MakeTinyModel(dir_ + "/models/tiny");
    auto catalog = dataset::SqliteDatasetCatalog::Open(dir_ + "/switchyard.db");
    ASSERT_TRUE(catalog.ok());
    dataset::ManagerOptions o;
    o.data_dir = dir_;
    auto datasets = dataset::DatasetManager::Open(o, std::move(*catalog));
    ASSERT_TRUE(datasets.ok()) << datasets.status();
    dataset::UploadRequest request;
    request.dataset_id = "echo";
    auto session = (*datasets)->StartUpload(request);
    ASSERT_TRUE(session.ok());
    ASSERT_TRUE((*session)->Write(dataset::Split::kTrain, testing::ChatJsonl(16)).ok());
    ASSERT_TRUE((*session)->Write(dataset::Split::kValidation, testing::ChatJsonl(4, 5)).ok());
    auto committed = (*session)->Commit();
    ASSERT_TRUE(committed.ok() && committed->version) << committed.status();
    session->reset();
    request.dataset_id = "prefs";
    session = (*datasets)->StartUpload(request);
    ASSERT_TRUE(session.ok());
    ASSERT_TRUE((*session)->Write(dataset::Split::kTrain, testing::PreferenceJsonl(12)).ok());
    committed = (*session)->Commit();
    ASSERT_TRUE(committed.ok() && committed->version) << committed.status();
    session->reset();
    datasets->reset();
    Open();
  }
  void TearDown() override {
    jobs_.reset();
    TempDirTest::TearDown();
  }

  void Open(int max_jobs_per_device = 1) {
    jobs_.reset();
    registry_.reset();
    catalog_.reset();
    auto registry = ModelRegistry::Open(dir_, dir_ + "/switchyard.db");
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = std::move(*registry);
    auto catalog = dataset::SqliteDatasetCatalog::Open(dir_ + "/switchyard.db");
    ASSERT_TRUE(catalog.ok());
    catalog_ = std::move(*catalog);
    auto store = SqliteJobStore::Open(dir_ + "/switchyard.db");
    ASSERT_TRUE(store.ok());
    JobManagerOptions o;
    o.data_dir = dir_;
    o.max_jobs_per_device = max_jobs_per_device;
    o.cpu_threads = 1;
    o.metrics = &metrics_;
    auto jobs = JobManager::Open(o, std::move(*store), registry_.get(), catalog_.get());
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    jobs_ = std::move(*jobs);
  }

  static JobSpec Spec() {
    JobSpec s;
    s.base_model = "tiny";
    s.training_dataset = "echo";
    s.device = "cpu";
    s.suffix = "t";
    s.seed = 11;
    s.adapter.kind = AdapterKind::kLora;
    s.adapter.lora.r = 4;
    s.hyperparameters.epochs = 3;
    s.hyperparameters.batch_size = 4;
    s.hyperparameters.learning_rate = 1e-2;
    s.checkpoints.interval_steps = 2;
    return s;
  }

  // Waits for a terminal state (or `state`) and returns the job.
  Job WaitFor(const std::string& id, std::optional<JobState> state = std::nullopt,
              int64_t min_step = 0) {
    int64_t seen = 0;
    for (int i = 0; i < 6000; ++i) {
      auto job = jobs_->GetJob(id);
      EXPECT_TRUE(job.ok()) << job.status();
      if (!job.ok()) return Job();
      const bool done =
          state ? job->state == *state && job->step >= min_step : IsTerminal(job->state);
      if (done) return *job;
      auto events = jobs_->WaitEvents(id, seen, 100, absl::Milliseconds(50));
      if (events.ok() && !events->empty()) seen = events->back().sequence;
    }
    ADD_FAILURE() << "jobs/" << id << " did not get there";
    return Job();
  }

  prometheus::Registry metrics_;
  std::unique_ptr<ModelRegistry> registry_;
  std::unique_ptr<dataset::SqliteDatasetCatalog> catalog_;
  std::unique_ptr<JobManager> jobs_;
};

TEST_F(JobManagerTest, JobRunsToSuccessAndRegistersAnAdapterModel) {
  ASSERT_TRUE(jobs_->Start().ok());
  auto created = jobs_->CreateJob(Spec(), {});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->state, JobState::kQueued);
  EXPECT_EQ(created->spec.training_dataset, "echo@1");  // pinned at creation
  Job job = WaitFor(created->job_id);
  ASSERT_EQ(job.state, JobState::kSucceeded) << (job.errors.empty() ? "" : job.errors[0].message);
  EXPECT_EQ(job.fine_tuned_model, "ft:tiny:t:" + job.job_id);
  EXPECT_EQ(job.step, 12);
  EXPECT_EQ(job.total_steps, 12);
  EXPECT_EQ(job.training_examples, 16);
  EXPECT_EQ(job.validation_examples, 4);  // the version's validation file
  ASSERT_TRUE(job.resolved_spec);
  EXPECT_TRUE(job.resolved_spec->hyperparameters.warmup_steps.has_value());
  ASSERT_TRUE(job.best_eval && job.latest_eval);

  auto model = registry_->Get(job.fine_tuned_model);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->kind, ModelKind::kAdapter);
  EXPECT_EQ(model->base_model, "tiny");
  EXPECT_NE(model->fine_tune_json.find("\"jobs/" + job.job_id + "\""), std::string::npos);
  EXPECT_FALSE(fs::exists(model->path + "/optimizer.safetensors"));

  // Events: gapless, states in order, the same lines in events.jsonl.
  auto events = jobs_->ListEvents(job.job_id, 0, 1000);
  ASSERT_TRUE(events.ok());
  std::vector<JobState> states;
  int train = 0, checkpoints = 0;
  for (size_t i = 0; i < events->size(); ++i) {
    const JobEvent& e = (*events)[i];
    EXPECT_EQ(e.sequence, static_cast<int64_t>(i + 1));
    if (e.state_change) states.push_back(e.state_change->to);
    train += e.train.has_value();
    checkpoints += e.checkpoint.has_value();
  }
  EXPECT_EQ(states, (std::vector<JobState>{JobState::kQueued, JobState::kValidating,
                                           JobState::kRunning, JobState::kSucceeded}));
  EXPECT_EQ(train, 12);
  EXPECT_GE(checkpoints, 4);
  std::ifstream log(dir_ + "/jobs/" + job.job_id + "/events.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(log, line)) ++lines;
  EXPECT_EQ(lines, static_cast<int>(events->size()));
  EXPECT_EQ(job.last_event_sequence, static_cast<int64_t>(events->size()));

  std::string text = prometheus::TextSerializer().Serialize(metrics_.Collect());
  EXPECT_NE(text.find("switchyard_training_steps_total 12"), std::string::npos) << text;
  EXPECT_NE(text.find("switchyard_training_jobs{state=\"succeeded\"} 1"), std::string::npos);
  // A fine-tuned model trains further from its adapter.
  JobSpec again = Spec();
  again.base_model = job.fine_tuned_model;
  again.hyperparameters.epochs = 1;
  auto second = jobs_->CreateJob(again, {});
  ASSERT_TRUE(second.ok()) << second.status();
  Job done = WaitFor(second->job_id);
  ASSERT_EQ(done.state, JobState::kSucceeded)
      << (done.errors.empty() ? "" : done.errors[0].message);
  EXPECT_EQ(done.fine_tuned_model, "ft:tiny:t:" + done.job_id);
}

TEST_F(JobManagerTest, BaseGivenAsADirectoryIsRegisteredLinkedOnce) {
  ASSERT_TRUE(jobs_->Start().ok());
  testing::MakeTinyModel(dir_ + "/elsewhere/my model", 3);
  JobSpec spec = Spec();
  spec.base_model = dir_ + "/elsewhere/my model/";
  spec.hyperparameters.epochs = 1;
  auto first = jobs_->CreateJob(spec, {});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->spec.base_model, "my-model");
  auto again = jobs_->CreateJob(spec, {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->spec.base_model, "my-model");  // the same registration
  auto model = registry_->Get("my-model");
  ASSERT_TRUE(model.ok());
  EXPECT_TRUE(fs::is_symlink(dir_ + "/models/my-model"));
  Job done = WaitFor(first->job_id);
  ASSERT_EQ(done.state, JobState::kSucceeded);
  EXPECT_EQ(done.fine_tuned_model, "ft:my-model:t:" + done.job_id);
  spec.base_model = dir_ + "/nowhere";
  EXPECT_EQ(jobs_->CreateJob(spec, {}).status().code(), absl::StatusCode::kNotFound);
  WaitFor(again->job_id);
}

TEST_F(JobManagerTest, ShutdownMidRunResumesAfterRestartWithTheSameResult) {
  ASSERT_TRUE(jobs_->Start().ok());
  JobSpec spec = Spec();
  auto reference = jobs_->CreateJob(spec, {});
  ASSERT_TRUE(reference.ok());
  Job ref = WaitFor(reference->job_id);
  ASSERT_EQ(ref.state, JobState::kSucceeded);

  auto created = jobs_->CreateJob(spec, {});
  ASSERT_TRUE(created.ok());
  WaitFor(created->job_id, JobState::kRunning, 3);
  Open();  // destroys the manager: Shutdown() stops the job after a checkpoint
  auto stopped = jobs_->GetJob(created->job_id);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->state, JobState::kRunning);
  ASSERT_TRUE(jobs_->Start().ok());
  Job job = WaitFor(created->job_id);
  ASSERT_EQ(job.state, JobState::kSucceeded);
  EXPECT_EQ(job.restarts, 1);
  auto events = jobs_->ListEvents(job.job_id, 0, 1000);
  ASSERT_TRUE(events.ok());
  bool requeued = false;
  for (const JobEvent& e : *events) {
    // The newest checkpoint is a step's, or an epoch end's when the stop
    // came right there.
    const std::string from = "restarted; resumes from jobs/" + job.job_id + "/checkpoints/";
    if (e.state_change && e.state_change->to == JobState::kQueued &&
        (e.state_change->reason.find(from + "step-") != std::string::npos ||
         e.state_change->reason.find(from + "epoch-") != std::string::npos)) {
      requeued = true;
    }
  }
  EXPECT_TRUE(requeued) << "no requeue event naming the checkpoint";
  auto checkpoints = jobs_->ListCheckpoints(job.job_id);
  ASSERT_TRUE(checkpoints.ok() && !checkpoints->empty());
  EXPECT_GT(checkpoints->back().size_bytes, 0);
  EXPECT_EQ(checkpoints->back().path.front(), '/');
  auto a = ReadFile(dir_ + "/models/" + ref.fine_tuned_model + "/adapter_model.safetensors");
  auto b = ReadFile(dir_ + "/models/" + job.fine_tuned_model + "/adapter_model.safetensors");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(*a == *b) << "the resumed job's adapter differs from the uninterrupted one's";
}

TEST_F(JobManagerTest, SecondJobQueuesBehindTheFirstAndCancelFreesTheDevice) {
  ASSERT_TRUE(jobs_->Start().ok());
  JobSpec slow = Spec();
  slow.hyperparameters.epochs = 50;
  auto first = jobs_->CreateJob(slow, {});
  auto second = jobs_->CreateJob(Spec(), {});
  ASSERT_TRUE(first.ok() && second.ok());
  WaitFor(first->job_id, JobState::kRunning, 1);
  auto queued = jobs_->GetJob(second->job_id);
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queued->state, JobState::kQueued);
  EXPECT_EQ(queued->queue_position, 1);
  ASSERT_TRUE(jobs_->CancelJob(first->job_id).ok());
  EXPECT_EQ(WaitFor(first->job_id).state, JobState::kCancelled);
  EXPECT_EQ(WaitFor(second->job_id).state, JobState::kSucceeded);
  EXPECT_EQ(jobs_->CancelJob(first->job_id).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, CancelRightAfterCreateStaysCancelled) {
  ASSERT_TRUE(jobs_->Start().ok());
  for (int i = 0; i < 3; ++i) {
    auto created = jobs_->CreateJob(Spec(), {});
    ASSERT_TRUE(created.ok());
    auto cancelled = jobs_->CancelJob(created->job_id);
    ASSERT_TRUE(cancelled.ok()) << cancelled.status();
    Job job = WaitFor(created->job_id);
    EXPECT_EQ(job.state, JobState::kCancelled);
    // Nothing moves it afterwards: the worker that picked it up (if any) lets it be.
    auto later =
        jobs_->WaitEvents(created->job_id, job.last_event_sequence, 10, absl::Milliseconds(300));
    ASSERT_TRUE(later.ok());
    EXPECT_TRUE(later->empty()) << later->front().message;
  }
}

TEST_F(JobManagerTest, RegistrationDebrisOfACrashIsClearedBeforeRegistering) {
  // What a kill -9 between AddFineTuned's rename and its insert leaves: the
  // model's directory without a registry row.
  ASSERT_TRUE(MakeDirs(dir_ + "/models/ft:tiny:t:debris").ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/models/ft:tiny:t:debris/adapter_config.json", "{").ok());
  ASSERT_TRUE(jobs_->Start().ok());
  CreateJobOptions o;
  o.job_id = "debris";
  JobSpec spec = Spec();
  spec.hyperparameters.epochs = 1;
  ASSERT_TRUE(jobs_->CreateJob(spec, o).ok());
  Job job = WaitFor("debris");
  ASSERT_EQ(job.state, JobState::kSucceeded) << (job.errors.empty() ? "" : job.errors[0].message);
  auto model = registry_->Get("ft:tiny:t:debris");
  ASSERT_TRUE(model.ok()) << model.status();
  auto config = ReadFile(model->path + "/adapter_config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_NE(*config, "{");
}

TEST_F(JobManagerTest, ValidateOnlyRefusesATakenJobId) {
  CreateJobOptions o;
  o.job_id = "taken";
  ASSERT_TRUE(jobs_->CreateJob(Spec(), o).ok());
  o.validate_only = true;
  EXPECT_EQ(jobs_->CreateJob(Spec(), o).status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(fs::exists(dir_ + "/jobs/taken/data"));  // validation pinned nothing
}

TEST(JobTypesTest, NonFiniteMetricsSurviveTheStore) {
  Job job;
  job.job_id = "x";
  TrainMetrics m;
  m.grad_norm = std::numeric_limits<double>::infinity();
  m.loss = 1.5;
  job.latest_train = m;
  auto back = JobFromJson(nlohmann::json::parse(JobToJson(job).dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(std::isnan(back->latest_train->grad_norm));  // JSON has no infinity
  EXPECT_DOUBLE_EQ(back->latest_train->loss, 1.5);
}

TEST(JobTypesTest, ReinforcementSpecAndMetricsSurviveTheStore) {
  JobSpec spec;
  spec.base_model = "tiny";
  spec.training_dataset = "math@1";
  spec.method = Method::kReinforcement;
  auto grader = GraderFromJson(nlohmann::json::parse(R"({
      "type": "multi", "calculate_output": "0.7 * exact + 0.3 * close",
      "graders": {
        "exact": {"type": "string_check", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "operation": "eq"},
        "close": {"type": "text_similarity", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}", "evaluation_metric": "rouge_l",
                  "pass_threshold": 0.5}}})"));
  ASSERT_TRUE(grader.ok()) << grader.status();
  GraderSpec schema;
  schema.kind = GraderKind::kJsonSchema;
  schema.json_schema.schema = nlohmann::json::parse(R"({"type": "object", "required": ["a"]})");
  schema.json_schema.partial_credit = true;
  grader->multi.graders.push_back({schema, 0.5});
  ReinforcementSpec r;
  r.grader = *grader;
  r.num_generations = 4;
  r.temperature = 0.7;
  r.kl_beta = 0.0;  // set to 0 is not unset
  r.iterations_per_batch = 2;
  spec.reinforcement = r;
  Job job;
  job.job_id = "rl";
  job.spec = spec;
  TrainMetrics train;
  train.reinforcement = ReinforcementMetrics{0.5, 0.25, 0.01, 42.5, 0.1, {{"exact", 0.4}}};
  job.latest_train = train;
  EvalMetrics eval;
  eval.reinforcement = ReinforcementMetrics{0.75, 0.0, 0.0, 10, 0, {{"close", 0.9}}};
  job.latest_eval = eval;

  auto back = JobFromJson(nlohmann::json::parse(JobToJson(job).dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_TRUE(back->spec.reinforcement.has_value());
  const ReinforcementSpec& b = *back->spec.reinforcement;
  EXPECT_EQ(b.grader, r.grader);
  EXPECT_EQ(b.num_generations, 4);
  EXPECT_EQ(b.temperature, 0.7);
  EXPECT_FALSE(b.top_p.has_value());
  EXPECT_FALSE(b.max_completion_tokens.has_value());
  EXPECT_EQ(b.kl_beta, 0.0);
  EXPECT_FALSE(b.clip_epsilon.has_value());
  EXPECT_EQ(b.iterations_per_batch, 2);
  ASSERT_TRUE(back->latest_train->reinforcement.has_value());
  const ReinforcementMetrics& m = *back->latest_train->reinforcement;
  EXPECT_EQ(m.reward_mean, 0.5);
  EXPECT_EQ(m.reward_std, 0.25);
  EXPECT_EQ(m.kl, 0.01);
  EXPECT_EQ(m.completion_length_mean, 42.5);
  EXPECT_EQ(m.clip_ratio, 0.1);
  EXPECT_EQ(m.grader_rewards, (std::map<std::string, double>{{"exact", 0.4}}));
  EXPECT_EQ(back->latest_eval->reinforcement->grader_rewards.at("close"), 0.9);
  EXPECT_FALSE(back->latest_train->dpo.has_value());

  // Without the method's settings nothing is written.
  job.spec.reinforcement.reset();
  EXPECT_FALSE(JobToJson(job)["spec"].contains("reinforcement"));
}

TEST(JobTypesTest, ReinforcementFromJsonNamesTheField) {
  auto spec = JobSpecFromJson(nlohmann::json::parse(
      R"({"method": "reinforcement", "reinforcement": {"num_generations": "many",
          "grader": {"string_check": {}}}})"));
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("reinforcement.num_generations"), std::string::npos)
      << spec.status();
  spec = JobSpecFromJson(nlohmann::json::parse(
      R"({"method": "reinforcement", "reinforcement": {"grader": {"string_check": {"operation": "equals"}}}})"));
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(spec.status().message().find("reinforcement.grader.string_check.operation"),
            std::string::npos)
      << spec.status();
  spec = JobSpecFromJson(nlohmann::json::parse(R"({"reinforcement": {}})"));
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobManagerTest, DpoJobRunsOnPreferenceDataAndContinuesAnSftModel) {
  ASSERT_TRUE(jobs_->Start().ok());
  auto sft = jobs_->CreateJob(Spec(), {});
  ASSERT_TRUE(sft.ok()) << sft.status();
  Job sft_job = WaitFor(sft->job_id);
  ASSERT_EQ(sft_job.state, JobState::kSucceeded);

  JobSpec s = Spec();
  s.base_model = sft_job.fine_tuned_model;  // SFT then DPO
  s.training_dataset = "prefs";
  s.method = Method::kDpo;
  s.adapter = AdapterSpec();
  s.validation_fraction = 0.25;
  auto created = jobs_->CreateJob(s, {});
  ASSERT_TRUE(created.ok()) << created.status();
  Job job = WaitFor(created->job_id);
  ASSERT_EQ(job.state, JobState::kSucceeded) << (job.errors.empty() ? "" : job.errors[0].message);
  EXPECT_EQ(job.training_examples, 9);
  EXPECT_EQ(job.validation_examples, 3);
  ASSERT_TRUE(job.resolved_spec);
  const JobSpec& r = *job.resolved_spec;
  EXPECT_EQ(r.dpo.loss_type, DpoLoss::kSigmoid);
  EXPECT_DOUBLE_EQ(*r.dpo.beta, 0.1);
  EXPECT_TRUE(*r.dpo.precompute_reference_logprobs);  // continuing an adapter
  EXPECT_DOUBLE_EQ(*r.adapter.lora.dropout, 0.0);
  EXPECT_EQ(*r.adapter.lora.r, 4);  // the SFT adapter's rank
  ASSERT_TRUE(job.latest_train && job.latest_train->dpo);
  ASSERT_TRUE(job.latest_eval && job.latest_eval->dpo);
  auto model = registry_->Get(job.fine_tuned_model);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ(model->kind, ModelKind::kAdapter);
  EXPECT_NE(model->fine_tune_json.find("\"dpo\""), std::string::npos);
  // The stored events carry the preference metrics.
  auto events = jobs_->WaitEvents(job.job_id, 0, 1000, absl::Milliseconds(1));
  ASSERT_TRUE(events.ok());
  int with_dpo = 0;
  for (const JobEvent& e : *events) with_dpo += e.train && e.train->dpo;
  EXPECT_EQ(with_dpo, job.total_steps);
}

TEST_F(JobManagerTest, PauseAndResumeFinishTheJob) {
  ASSERT_TRUE(jobs_->Start().ok());
  JobSpec spec = Spec();
  spec.hyperparameters.epochs = 6;
  auto created = jobs_->CreateJob(spec, {});
  ASSERT_TRUE(created.ok());
  WaitFor(created->job_id, JobState::kRunning, 2);
  ASSERT_TRUE(jobs_->PauseJob(created->job_id).ok());
  Job paused = WaitFor(created->job_id, JobState::kPaused);
  EXPECT_GT(paused.step, 0);
  EXPECT_EQ(jobs_->PauseJob(created->job_id).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(jobs_->ResumeJob(created->job_id).ok());
  Job done = WaitFor(created->job_id);
  EXPECT_EQ(done.state, JobState::kSucceeded);
  EXPECT_EQ(done.step, 24);
}

TEST_F(JobManagerTest, CreateJobChecksFieldsAndReferencesBeforeQueueing) {
  JobSpec s = Spec();
  s.hyperparameters.learning_rate = -1;
  auto r = jobs_->CreateJob(s, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("hyperparameters.learning_rate"), std::string::npos);
  s = Spec();
  s.suffix = "Bad Suffix!";
  EXPECT_NE(jobs_->CreateJob(s, {}).status().message().find("suffix"), std::string::npos);
  s = Spec();
  s.training_dataset = "missing@1";
  EXPECT_EQ(jobs_->CreateJob(s, {}).status().code(), absl::StatusCode::kNotFound);
  s = Spec();
  s.base_model = "nope";
  r = jobs_->CreateJob(s, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("base_model"), std::string::npos);
  s = Spec();
  s.method = Method::kDpo;  // on chat data
  r = jobs_->CreateJob(s, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("DPO needs preference data"), std::string::npos);
  s = Spec();
  s.method = Method::kReinforcement;  // no grader
  EXPECT_EQ(jobs_->CreateJob(s, {}).status().code(), absl::StatusCode::kInvalidArgument);
  auto listed = jobs_->ListJobs(0, "", {});
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->total_size, 0);
}

TEST_F(JobManagerTest, ValidateOnlyResolvesAutoSettingsFromTheData) {
  JobSpec s;
  s.base_model = "tiny";
  s.training_dataset = "echo@1";
  CreateJobOptions o;
  o.validate_only = true;
  auto job = jobs_->CreateJob(s, o);
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_TRUE(job->errors.empty()) << job->errors[0].message;
  ASSERT_TRUE(job->resolved_spec);
  const Hyperparameters& h = job->resolved_spec->hyperparameters;
  EXPECT_EQ(*h.epochs, 7);  // 16 examples: ceil(100 / 16)
  EXPECT_EQ(*h.batch_size, 1);
  EXPECT_DOUBLE_EQ(*h.learning_rate, 2e-4);
  EXPECT_EQ(job->resolved_spec->adapter.kind, AdapterKind::kLora);
  EXPECT_EQ(*job->resolved_spec->adapter.lora.r, 8);
  EXPECT_EQ(job->resolved_spec->adapter.lora.target_modules.size(), 7u);
  EXPECT_EQ(job->resolved_spec->device, "cpu");
  EXPECT_EQ(h.precision, model::CpuSupportsBf16() ? Precision::kBf16 : Precision::kFp32);
  EXPECT_FALSE(*h.gradient_checkpointing);
  EXPECT_EQ(job->total_steps, 7 * 16);
  EXPECT_TRUE(job->resolved_spec->seed.has_value());
  auto listed = jobs_->ListJobs(0, "", {});
  EXPECT_EQ(listed->total_size, 0);  // nothing queued

  // QLoRA recomputes activations unless told not to (as PEFT prepares k-bit models).
  JobSpec quantized = s;
  quantized.adapter.lora.quantize_base = QuantizeBase::kNf4;
  job = jobs_->CreateJob(quantized, o);
  ASSERT_TRUE(job.ok() && job->resolved_spec) << job.status();
  EXPECT_TRUE(*job->resolved_spec->hyperparameters.gradient_checkpointing);
  quantized.hyperparameters.gradient_checkpointing = false;
  job = jobs_->CreateJob(quantized, o);
  ASSERT_TRUE(job.ok() && job->resolved_spec) << job.status();
  EXPECT_FALSE(*job->resolved_spec->hyperparameters.gradient_checkpointing);

  s.hyperparameters.max_seq_length = 20;  // shorter than every example
  job = jobs_->CreateJob(s, o);
  ASSERT_TRUE(job.ok());
  ASSERT_FALSE(job->errors.empty());
  EXPECT_EQ(job->errors[0].kind, "example_too_long");
  EXPECT_EQ(job->errors[0].line, 1);
  EXPECT_EQ(job->errors[0].file, "train");
}

TEST_F(JobManagerTest, ExamplesTooLongFailTheJobNamingTheLine) {
  ASSERT_TRUE(jobs_->Start().ok());
  JobSpec s = Spec();
  s.hyperparameters.max_seq_length = 20;
  auto created = jobs_->CreateJob(s, {});
  ASSERT_TRUE(created.ok());
  Job job = WaitFor(created->job_id);
  EXPECT_EQ(job.state, JobState::kFailed);
  ASSERT_FALSE(job.errors.empty());
  EXPECT_EQ(job.errors[0].kind, "example_too_long");
  auto events = jobs_->ListEvents(job.job_id, 0, 100);
  ASSERT_TRUE(events.ok());
  EXPECT_NE(events->back().message.find("train line 1"), std::string::npos)
      << events->back().message;
}

TEST_F(JobManagerTest, TornEventLineIsDroppedOnReopen) {
  const std::string path = dir_ + "/events.jsonl";
  {
    auto log = JobEventLog::Open(path);
    ASSERT_TRUE(log.ok());
    JobEvent e;
    e.message = "one";
    ASSERT_TRUE((*log)->Append(e, true).ok());
    e.message = "two";
    ASSERT_TRUE((*log)->Append(e, true).ok());
  }
  std::ofstream(path, std::ios::app) << R"({"job":"x","sequence":3,"mess)";
  auto log = JobEventLog::Open(path);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ((*log)->last_sequence(), 2);
  JobEvent e;
  e.message = "three";
  auto appended = (*log)->Append(e, true);
  ASSERT_TRUE(appended.ok());
  EXPECT_EQ(appended->sequence, 3);
  auto again = JobEventLog::Open(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->last_sequence(), 3);
  EXPECT_EQ((*again)->After(2, 10)[0].message, "three");
}

TEST(JobSpecTest, AutoEpochsAndBatchFollowTheDatasetSize) {
  JobSpec s;
  SpecFacts f;
  f.training_examples = 20;
  f.longest_example = 100;
  f.context_length = 2048;
  JobSpec r = ResolveJobSpec(s, f, 1);
  EXPECT_EQ(*r.hyperparameters.epochs, 5);
  f.training_examples = 1000;
  r = ResolveJobSpec(s, f, 1);
  EXPECT_EQ(*r.hyperparameters.epochs, 3);
  EXPECT_EQ(*r.hyperparameters.batch_size, 2);
  f.training_examples = 100000;
  r = ResolveJobSpec(s, f, 1);
  EXPECT_EQ(*r.hyperparameters.epochs, 1);
  EXPECT_EQ(*r.hyperparameters.batch_size, 200);
  // 200 rows x 100 tokens per step on CPU: micro-batches of <= 8192 tokens.
  EXPECT_EQ(*r.hyperparameters.gradient_accumulation_steps, 4);
  EXPECT_EQ(*r.hyperparameters.max_seq_length, 100);
  EXPECT_EQ(*r.seed, 1u);
  s.adapter.kind = AdapterKind::kFull;
  EXPECT_DOUBLE_EQ(*ResolveJobSpec(s, f, 1).hyperparameters.learning_rate, 1e-5);
}

TEST(JobSpecTest, ValidationNamesTheField) {
  JobSpec s;
  s.base_model = "tiny";
  s.training_dataset = "echo@1";
  EXPECT_TRUE(ValidateJobSpec(s).ok());
  auto check = [&](auto mutate, const std::string& field) {
    JobSpec t = s;
    mutate(t);
    absl::Status st = ValidateJobSpec(t);
    EXPECT_FALSE(st.ok()) << field;
    EXPECT_NE(st.message().find(field), std::string::npos) << st;
  };
  check([](JobSpec& t) { t.hyperparameters.epochs = 0; }, "hyperparameters.epochs");
  check([](JobSpec& t) { t.hyperparameters.batch_size = 0; }, "hyperparameters.batch_size");
  check([](JobSpec& t) { t.adapter.lora.r = 0; }, "adapter.lora.r");
  check([](JobSpec& t) { t.adapter.lora.dropout = 1.0; }, "adapter.lora.dropout");
  check(
      [](JobSpec& t) {
        t.hyperparameters.batch_size = 6;
        t.hyperparameters.gradient_accumulation_steps = 4;
      },
      "hyperparameters.gradient_accumulation_steps");
  check([](JobSpec& t) { t.validation_fraction = 0.7; }, "validation_fraction");
  check([](JobSpec& t) { t.checkpoints.early_stopping_patience = -1; },
        "checkpoints.early_stopping_patience");
  check([](JobSpec& t) { t.device = "tpu"; }, "device");
  check([](JobSpec& t) { t.training_dataset = "echo@x"; }, "training_dataset");
  check([](JobSpec& t) { t.base_model = ""; }, "base_model");
  check([](JobSpec& t) { t.reinforcement = ReinforcementSpec(); }, "reinforcement");
}

// A reinforcement spec with a valid grader and every field unset.
ReinforcementSpec RlSpec() {
  ReinforcementSpec r;
  r.grader.kind = GraderKind::kStringCheck;
  r.grader.string_check.reference = "{{item.answer}}";
  return r;
}

TEST(JobSpecTest, ReinforcementRangesNameTheField) {
  EXPECT_TRUE(ValidateReinforcementSpec(RlSpec()).ok());
  auto bad = [](auto mutate, const std::string& message) {
    ReinforcementSpec r = RlSpec();
    mutate(r);
    absl::Status st = ValidateReinforcementSpec(r);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << message;
    EXPECT_EQ(st.message(), message);
  };
  auto good = [](auto mutate, const char* what) {
    ReinforcementSpec r = RlSpec();
    mutate(r);
    EXPECT_TRUE(ValidateReinforcementSpec(r).ok()) << what;
  };
  bad([](ReinforcementSpec& r) { r.num_generations = 1; },
      "reinforcement.num_generations: must be in [2, 64], got 1");
  bad([](ReinforcementSpec& r) { r.num_generations = 65; },
      "reinforcement.num_generations: must be in [2, 64], got 65");
  good([](ReinforcementSpec& r) { r.num_generations = 2; }, "num_generations 2");
  good([](ReinforcementSpec& r) { r.num_generations = 64; }, "num_generations 64");
  bad([](ReinforcementSpec& r) { r.temperature = 0.0; },
      "reinforcement.temperature: must be in (0, 2], got 0");
  bad([](ReinforcementSpec& r) { r.temperature = 2.5; },
      "reinforcement.temperature: must be in (0, 2], got 2.5");
  bad([](ReinforcementSpec& r) { r.temperature = std::nan(""); },
      "reinforcement.temperature: must be in (0, 2], got nan");
  good([](ReinforcementSpec& r) { r.temperature = 2.0; }, "temperature 2");
  bad([](ReinforcementSpec& r) { r.top_p = 0.0; }, "reinforcement.top_p: must be in (0, 1], got 0");
  bad([](ReinforcementSpec& r) { r.top_p = 1.01; },
      "reinforcement.top_p: must be in (0, 1], got 1.01");
  good([](ReinforcementSpec& r) { r.top_p = 1.0; }, "top_p 1");
  bad([](ReinforcementSpec& r) { r.max_completion_tokens = 0; },
      "reinforcement.max_completion_tokens: must be in [1, 4096], got 0");
  bad([](ReinforcementSpec& r) { r.max_completion_tokens = 4097; },
      "reinforcement.max_completion_tokens: must be in [1, 4096], got 4097");
  good([](ReinforcementSpec& r) { r.max_completion_tokens = 4096; }, "max_completion_tokens");
  bad([](ReinforcementSpec& r) { r.kl_beta = -0.1; },
      "reinforcement.kl_beta: must be in [0, 10], got -0.1");
  bad([](ReinforcementSpec& r) { r.kl_beta = 10.5; },
      "reinforcement.kl_beta: must be in [0, 10], got 10.5");
  good([](ReinforcementSpec& r) { r.kl_beta = 0.0; }, "kl_beta 0 disables the penalty");
  bad([](ReinforcementSpec& r) { r.clip_epsilon = 0.0; },
      "reinforcement.clip_epsilon: must be in (0, 1], got 0");
  bad([](ReinforcementSpec& r) { r.clip_epsilon = 1.5; },
      "reinforcement.clip_epsilon: must be in (0, 1], got 1.5");
  good([](ReinforcementSpec& r) { r.clip_epsilon = 1.0; }, "clip_epsilon 1");
  bad([](ReinforcementSpec& r) { r.iterations_per_batch = 0; },
      "reinforcement.iterations_per_batch: must be in [1, 16], got 0");
  bad([](ReinforcementSpec& r) { r.iterations_per_batch = 17; },
      "reinforcement.iterations_per_batch: must be in [1, 16], got 17");
  good([](ReinforcementSpec& r) { r.iterations_per_batch = 16; }, "iterations_per_batch 16");
  ReinforcementSpec r = RlSpec();
  r.grader.string_check.reference = "{{item.answer";
  EXPECT_EQ(ValidateReinforcementSpec(r).message().rfind(
                "reinforcement.grader.string_check.reference: unclosed", 0),
            0u)
      << ValidateReinforcementSpec(r);
}

TEST(JobSpecTest, ReinforcementSpecIsValidatedWithTheJob) {
  JobSpec s;
  s.base_model = "tiny";
  s.training_dataset = "math@1";
  s.method = Method::kReinforcement;
  s.reinforcement = RlSpec();
  EXPECT_TRUE(ValidateJobSpec(s).ok());
  s.reinforcement->num_generations = 1;
  EXPECT_NE(ValidateJobSpec(s).message().find("reinforcement.num_generations"), std::string::npos);
  s.reinforcement = RlSpec();
  s.hyperparameters.packing = true;
  EXPECT_NE(ValidateJobSpec(s).message().find("hyperparameters.packing"), std::string::npos);
  s.hyperparameters.packing.reset();
  s.reinforcement.reset();
  EXPECT_NE(ValidateJobSpec(s).message().find("reinforcement"), std::string::npos);
}

TEST(JobSpecTest, ReinforcementAutoSettingsFollowTheApi) {
  JobSpec s;
  s.method = Method::kReinforcement;
  s.reinforcement = RlSpec();
  s.reinforcement->temperature = 0.5;
  SpecFacts f;
  f.training_examples = 1000;
  f.longest_example = 100;
  const JobSpec r = ResolveJobSpec(s, f, 1);
  const ReinforcementSpec& rl = *r.reinforcement;
  EXPECT_EQ(*rl.num_generations, 8);
  EXPECT_EQ(*rl.temperature, 0.5);  // set values stay
  EXPECT_EQ(*rl.top_p, 1.0);
  EXPECT_EQ(*rl.max_completion_tokens, 256);
  EXPECT_EQ(*rl.kl_beta, 0.04);
  EXPECT_EQ(*rl.clip_epsilon, 0.2);
  EXPECT_EQ(*rl.iterations_per_batch, 1);
  EXPECT_EQ(*r.hyperparameters.batch_size, 8);  // prompts per step
  EXPECT_DOUBLE_EQ(*r.hyperparameters.learning_rate, 5e-6);
  EXPECT_EQ(rl.grader, s.reinforcement->grader);
}

}  // namespace
}  // namespace switchyard::training
