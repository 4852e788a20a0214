// Plain C++ types of the training service: the job spec (every "auto" field an
// unset optional), states, metrics, checkpoints and events, with their JSON
// forms (field names as in the v1 API's JSON mapping) for the job store and
// events.jsonl. No gRPC or protobuf here; the adapter translates.
#ifndef SWITCHYARD_SERVICES_TRAINING_JOB_TYPES_H_
#define SWITCHYARD_SERVICES_TRAINING_JOB_TYPES_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/dataset/dataset_types.h"
#include "services/training/graders.h"

namespace switchyard::training {

using Issue = dataset::ValidationIssue;

enum class Method { kSupervised = 1, kDpo = 2, kReinforcement = 3 };
enum class AdapterKind { kAuto = 0, kLora = 1, kFull = 2 };
enum class LrScheduler { kAuto = 0, kLinear = 1, kCosine = 2, kConstant = 3 };
enum class LossOn { kAuto = 0, kAssistant = 1, kAll = 2 };
enum class Precision { kAuto = 0, kFp32 = 1, kBf16 = 2 };
enum class QuantizeBase { kNone = 0, kNf4 = 1, kInt8 = 2 };
enum class DpoLoss { kAuto = 0, kSigmoid = 1, kIpo = 2, kHinge = 3, kRobust = 4 };

struct LoraSpec {
  std::optional<int> r;
  std::optional<double> alpha;
  std::optional<double> dropout;
  std::vector<std::string> target_modules;  // empty = auto
  std::vector<int> layers;                  // empty = all
  bool rslora = false;
  // QLoRA: the frozen base stored 4-bit NF4 (blocks of 64, absmax) or int8
  // (per row) and dequantised on the fly; the adapter trains in the job's
  // precision and loads on the unquantised base.
  QuantizeBase quantize_base = QuantizeBase::kNone;
  bool double_quantization = false;  // NF4 only: the absmax values in 8 bits too
};

struct FullSpec {
  std::vector<int> frozen_layers;
  bool freeze_embeddings = false;
};

struct AdapterSpec {
  AdapterKind kind = AdapterKind::kAuto;
  LoraSpec lora;  // with kLora (or kAuto)
  FullSpec full;  // with kFull
};

struct Hyperparameters {
  std::optional<int> epochs;
  std::optional<int> batch_size;
  std::optional<int> gradient_accumulation_steps;
  std::optional<double> learning_rate;
  LrScheduler lr_scheduler = LrScheduler::kAuto;
  std::optional<double> warmup_ratio;
  std::optional<int> warmup_steps;
  std::optional<double> weight_decay;
  std::optional<double> max_grad_norm;
  std::optional<int> max_seq_length;
  std::optional<bool> packing;
  LossOn loss_on = LossOn::kAuto;
  std::optional<int> eval_interval_steps;
  std::optional<int> log_interval_steps;
  Precision precision = Precision::kAuto;
  std::optional<bool> gradient_checkpointing;
};

struct CheckpointSpec {
  std::optional<int> interval_steps;
  std::optional<int> keep_last;
  std::optional<bool> keep_best;
  std::optional<int> early_stopping_patience;
  std::optional<double> early_stopping_min_delta;
};

// Direct preference optimisation (method dpo). Unset = auto.
struct DpoSpec {
  DpoLoss loss_type = DpoLoss::kAuto;     // auto: sigmoid
  std::optional<double> beta;             // auto: 0.1
  std::optional<double> label_smoothing;  // auto: 0
  // Reference log-probabilities computed once, from the starting weights,
  // before the first step. Auto: true for full fine-tuning and when
  // continuing a fine-tuned adapter, false for a new LoRA adapter (the
  // reference is then the base with the adapter disabled, each step).
  std::optional<bool> precompute_reference_logprobs;
};

// Reinforcement fine-tuning (method reinforcement): group-relative policy
// optimisation with a grader as the reward. Unset = auto.
struct ReinforcementSpec {
  GraderSpec grader;                         // required
  std::optional<int> num_generations;        // completions per prompt; auto: 8
  std::optional<double> temperature;         // auto: 1.0
  std::optional<double> top_p;               // auto: 1.0
  std::optional<int> max_completion_tokens;  // tokens; auto: 256
  std::optional<double> kl_beta;             // KL penalty weight, 0 disables; auto: 0.04
  std::optional<double> clip_epsilon;        // PPO ratio clipping; auto: 0.2
  std::optional<int> iterations_per_batch;   // policy updates per generation batch; auto: 1
};

struct JobSpec {
  std::string base_model;
  std::string training_dataset;    // "name@version"
  std::string validation_dataset;  // "" = none or held-out fraction
  double validation_fraction = 0;
  Method method = Method::kSupervised;
  AdapterSpec adapter;
  Hyperparameters hyperparameters;
  CheckpointSpec checkpoints;
  DpoSpec dpo;                                     // with kDpo
  std::optional<ReinforcementSpec> reinforcement;  // set with kReinforcement only
  std::optional<uint64_t> seed;
  std::string suffix;
  std::map<std::string, std::string> metadata;
  std::string device;  // "", "auto", "cpu", "cuda", "cuda:N"
};

enum class JobState {
  kQueued = 1,
  kValidating = 2,
  kRunning = 3,
  kPaused = 4,
  kSucceeded = 5,
  kFailed = 6,
  kCancelled = 7,
};
// An error Issue of `kind` naming `field` (may be empty).
Issue MakeIssue(std::string kind, std::string field, std::string message);

// "queued", "validating", ...
const char* JobStateName(JobState state);
bool ParseJobState(const std::string& name, JobState* state);
bool IsTerminal(JobState state);

// Preference metrics (TRL's names in brackets), means over pairs; rewards are
// beta * (policy - reference) log-probabilities of a completion.
struct DpoMetrics {
  double rewards_chosen = 0;    // [rewards/chosen]
  double rewards_rejected = 0;  // [rewards/rejected]
  double reward_accuracy = 0;   // fraction with chosen > rejected [rewards/accuracies]
  double reward_margin = 0;     // [rewards/margins]
  double logps_chosen = 0;      // summed over the completion, nats [logps/chosen]
  double logps_rejected = 0;    // [logps/rejected]
};

// Reinforcement metrics, means over the step's generations.
struct ReinforcementMetrics {
  double reward_mean = 0;             // grader reward, 0 to 1
  double reward_std = 0;              // mean within-group standard deviation of the reward
  double kl = 0;                      // per-token KL to the reference policy, nats
  double completion_length_mean = 0;  // tokens
  double clip_ratio = 0;              // fraction of tokens whose ratio was clipped, 0 to 1
  std::map<std::string, double> grader_rewards;  // mean reward per named (sub-)grader
};

struct TrainMetrics {
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  double loss = 0;                 // nats per loss-bearing token
  double mean_token_accuracy = 0;  // 0 to 1
  double learning_rate = 0;
  double tokens_per_second = 0;
  double grad_norm = 0;
  int64_t tokens = 0;             // since the start
  int64_t peak_memory_bytes = 0;  // process peak RSS (CPU) or device peak (CUDA)
  std::optional<DpoMetrics> dpo;  // method dpo
  std::optional<ReinforcementMetrics> reinforcement;  // method reinforcement
};

struct EvalMetrics {
  int64_t step = 0;
  double epoch = 0;
  double validation_loss = 0;
  double validation_mean_token_accuracy = 0;
  bool is_best = false;
  double duration_seconds = 0;
  std::optional<DpoMetrics> dpo;                      // method dpo, on the validation pairs
  std::optional<ReinforcementMetrics> reinforcement;  // method reinforcement, validation prompts
};

enum class CheckpointKind { kStep = 1, kEpoch = 2, kPause = 3, kFinal = 4 };

struct CheckpointInfo {
  std::string checkpoint_id;  // "step-200", "epoch-1", "final"
  CheckpointKind kind = CheckpointKind::kStep;
  int64_t step = 0;
  double epoch = 0;
  double train_loss = 0;
  std::optional<double> validation_loss;
  bool is_best = false;
  std::string path;
  int64_t size_bytes = 0;
  int64_t create_time_ms = 0;
};

struct StateChange {
  std::optional<JobState> from;  // unset for the first event
  JobState to = JobState::kQueued;
  std::string reason;
  std::vector<Issue> errors;
};

enum class EventLevel { kInfo = 1, kWarning = 2, kError = 3 };

struct JobEvent {
  std::string job_id;
  int64_t sequence = 0;  // 1-based, gapless per job
  int64_t time_ms = 0;
  EventLevel level = EventLevel::kInfo;
  std::string message;
  // At most one payload.
  std::optional<StateChange> state_change;
  std::optional<TrainMetrics> train;
  std::optional<EvalMetrics> eval;
  std::optional<CheckpointInfo> checkpoint;
};

struct Job {
  std::string job_id;
  JobState state = JobState::kQueued;
  JobSpec spec;
  std::optional<JobSpec> resolved_spec;  // after validation
  std::vector<Issue> errors;
  std::vector<Issue> warnings;
  std::string fine_tuned_model;  // model id on success
  std::string device;
  int queue_position = 0;
  int64_t step = 0;
  int64_t total_steps = 0;
  double epoch = 0;
  int64_t trained_tokens = 0;
  int64_t training_examples = 0;
  int64_t validation_examples = 0;
  std::optional<TrainMetrics> latest_train;
  std::optional<EvalMetrics> latest_eval;
  std::optional<EvalMetrics> best_eval;
  int restarts = 0;
  int64_t last_event_sequence = 0;
  int64_t create_time_ms = 0;
  int64_t start_time_ms = 0;  // 0 = not yet
  int64_t end_time_ms = 0;
  int64_t estimated_end_time_ms = 0;
  // Order in the queue: smaller runs first (creation or requeue time, ms;
  // jobs interrupted by a restart go before every other).
  int64_t queue_order_ms = 0;
};

nlohmann::json JobSpecToJson(const JobSpec& spec);
// INVALID_ARGUMENT naming the field for a value of the wrong type or an
// unknown enum name.
absl::StatusOr<JobSpec> JobSpecFromJson(const nlohmann::json& j);
nlohmann::json TrainMetricsToJson(const TrainMetrics& m);
TrainMetrics TrainMetricsFromJson(const nlohmann::json& j);
nlohmann::json DpoMetricsToJson(const DpoMetrics& m);
DpoMetrics DpoMetricsFromJson(const nlohmann::json& j);
nlohmann::json ReinforcementMetricsToJson(const ReinforcementMetrics& m);
ReinforcementMetrics ReinforcementMetricsFromJson(const nlohmann::json& j);
nlohmann::json EvalMetricsToJson(const EvalMetrics& m);
EvalMetrics EvalMetricsFromJson(const nlohmann::json& j);
nlohmann::json CheckpointToJson(const CheckpointInfo& c);
CheckpointInfo CheckpointFromJson(const nlohmann::json& j);
nlohmann::json IssuesToJson(const std::vector<Issue>& issues);
std::vector<Issue> IssuesFromJson(const nlohmann::json& j);
// The whole job record (the job store's row).
nlohmann::json JobToJson(const Job& job);
absl::StatusOr<Job> JobFromJson(const nlohmann::json& j);
// One line of events.jsonl.
nlohmann::json JobEventToJson(const JobEvent& e);
absl::StatusOr<JobEvent> JobEventFromJson(const nlohmann::json& j);

const char* MethodName(Method m);                  // "supervised", "dpo", "reinforcement"
const char* AdapterKindName(AdapterKind k);        // "auto", "lora", "full"
const char* LrSchedulerName(LrScheduler s);        // "auto", "linear", "cosine", "constant"
const char* LossOnName(LossOn l);                  // "auto", "assistant", "all"
const char* PrecisionName(Precision p);            // "auto", "fp32", "bf16"
const char* QuantizeBaseName(QuantizeBase q);      // "none", "nf4", "int8"
const char* DpoLossName(DpoLoss l);                // "auto", "sigmoid", "ipo", "hinge", "robust"
const char* CheckpointKindName(CheckpointKind k);  // "step", "epoch", "pause", "final"
const char* EventLevelName(EventLevel l);          // "info", "warning", "error"

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JOB_TYPES_H_
