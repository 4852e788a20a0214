// Trainer: the fine-tuning loop of one job, visible in one place (setup,
// train, evaluate, checkpoint, resume), in torchtune's spirit.
//
// Each optimizer step takes its rows from a BatchPlan, runs the micro-batches
// forward and backward (the loss of a step is the mean over all its
// loss-bearing tokens, however they split into micro-batches; with DPO the
// mean over its preference pairs), clips the gradient norm, and updates with
// AdamW at the scheduled learning rate. DPO's reference log-probabilities
// come from the starting weights: computed once before training when
// precomputed, else each step from the base with the adapter disabled (LoRA)
// or from a frozen copy (full).
// Evaluation runs before training, every eval_interval_steps and at each epoch
// end; checkpoints are saved every interval_steps, at each epoch end, at a
// pause and at the end. A checkpoint holds the adapter (PEFT layout) or full
// weights, the optimizer state (with fp32 master weights) and
// trainer_state.json; data order and dropout masks are functions of (seed,
// step), so Run() on a directory with checkpoints continues from the newest
// and, on CPU, ends with the same weights as an uninterrupted run.
//
// Not thread-safe; one Run() at a time.
#ifndef SWITCHYARD_SERVICES_TRAINING_TRAINER_H_
#define SWITCHYARD_SERVICES_TRAINING_TRAINER_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/batching.h"
#include "services/training/dpo.h"
#include "services/training/grpo.h"
#include "services/training/job_types.h"
#include "services/training/optimizer.h"
#include "services/training/sft_data.h"
#include "shared/model/decoder.h"
#include "shared/model/generate.h"

namespace switchyard::training {

struct TrainerSetup {
  // Resolved: every optional hyperparameter and checkpoint field set.
  JobSpec spec;
  std::unique_ptr<model::CausalLm> model;
  // Continue training this adapter (a fine-tuned base model) instead of a new one.
  std::optional<model::LoraAdapter> start_adapter;
  std::vector<SftExample> train;  // method supervised
  std::vector<SftExample> validation;
  std::vector<PreferenceExample> train_pairs;  // method dpo
  std::vector<PreferenceExample> validation_pairs;
  std::vector<RlExample> train_prompts;  // method reinforcement
  std::vector<RlExample> validation_prompts;
  // The tokenizer (decodes sampled completions for the grader) and the EOS
  // ids that end them; method reinforcement.
  std::shared_ptr<const text::ModelText> text;
  std::vector<int64_t> eos_token_ids;
  // DPO with full fine-tuning and no precomputed reference, reinforcement
  // with full fine-tuning and a KL penalty: the frozen reference copy of the
  // starting weights.
  std::unique_ptr<model::CausalLm> reference_model;

  // Training items (examples or pairs) and their token lengths (a pair's:
  // its longer sequence), the BatchPlan's input.
  int64_t train_count() const;
  int64_t validation_count() const;
  std::vector<int64_t> TrainLengths() const;
  std::string checkpoints_dir;  // jobs/<id>/checkpoints
  std::string base_dir;         // tokenizer side files for full-weight checkpoints
  std::string base_model_id;    // adapter_config.json base_model_name_or_path
};

enum class StopRequest { kNone, kPause, kCancel };

// Receives progress. Called on the thread running Run().
class TrainerListener {
 public:
  virtual ~TrainerListener() = default;
  virtual void OnTrain(const TrainMetrics& metrics) {}
  virtual void OnEval(const EvalMetrics& metrics) {}
  virtual void OnCheckpoint(const CheckpointInfo& checkpoint) {}
  // Asked before every optimizer step.
  virtual StopRequest PollStop() { return StopRequest::kNone; }
};

struct TrainerResult {
  enum class Outcome { kCompleted, kEarlyStopped, kPaused, kCancelled };
  Outcome outcome = Outcome::kCompleted;
  int64_t step = 0;
  int64_t tokens = 0;
  // The checkpoint to register: "final", or the best one with keep_best.
  // Paused: the checkpoint the job continues from.
  std::optional<CheckpointInfo> result_checkpoint;
  std::optional<TrainMetrics> last_train;
  std::optional<EvalMetrics> last_eval;
  std::optional<EvalMetrics> best_eval;
};

// The finished checkpoints under `dir` (those with trainer_state.json),
// oldest first; an absent directory has none. size_bytes is left 0 (walking
// every checkpoint's files is for callers that report it).
absl::StatusOr<std::vector<CheckpointInfo>> ListCheckpoints(const std::string& dir);

class Trainer {
 public:
  // Attaches the trainable adapter (or marks full-fine-tuning parameters) and
  // plans the batches. INVALID_ARGUMENT naming the field for settings the
  // model cannot take (a frozen layer past the last, LoRA targets matching
  // nothing).
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(TrainerSetup setup);

  int64_t total_steps() const { return plan_->total_steps(); }
  int64_t trainable_parameters() const { return optimizer_->num_elements(); }
  // The checkpoint Run() will continue from; empty for a fresh start.
  absl::StatusOr<std::optional<CheckpointInfo>> ResumePoint() const;

  // Trains to the end, an early stop, or a stop request. Errors: a checkpoint
  // that cannot be written or read, a non-finite loss (INTERNAL, "nan_loss"
  // in the message), LibTorch failures with context.
  absl::StatusOr<TrainerResult> Run(TrainerListener* listener);

  // Evaluation on the validation examples at the current weights.
  absl::StatusOr<EvalMetrics> Evaluate();

 private:
  struct State;
  // One optimizer step's sums (or a log window's).
  struct StepStats {
    double loss = 0;         // mean per loss unit
    double loss_sum = 0;     // supervised: nats over label tokens; DPO: over pairs
    int64_t loss_units = 0;  // label tokens (supervised) or pairs (DPO)
    int64_t correct = 0, label_tokens = 0, tokens = 0;
    double grad_norm = 0, learning_rate = 0;
    DpoSums dpo;
    std::optional<ReinforcementMetrics> reinforcement;
  };
  // Reference log-probabilities of chosen and rejected, (n,) each.
  struct ReferenceLogProbs {
    std::vector<float> chosen, rejected;
  };
  explicit Trainer(TrainerSetup setup);
  absl::Status Prepare();
  bool dpo() const { return setup_.spec.method == Method::kDpo; }
  bool reinforcement() const { return setup_.spec.method == Method::kReinforcement; }
  // Optimizer updates per step (reinforcement: iterations_per_batch).
  int64_t updates_per_step() const;
  // One reinforcement step: sample num_generations completions per prompt of
  // the step, grade them, and make iterations_per_batch clipped
  // policy-gradient updates on them.
  absl::StatusOr<StepStats> ReinforcementStep(int64_t step);
  // Samples and grades: the completions of `prompts` (each `group` times,
  // greedy when params.temperature is 0) as training sequences, with rewards.
  struct Rollout {
    std::vector<SftExample> sequences;  // prompt + completion, trained on the completion
    std::vector<double> rewards;
    std::map<std::string, double> grader_sums;
    int64_t completion_tokens = 0;
  };
  absl::StatusOr<Rollout> Sample(const std::vector<RlExample>& examples,
                                 const std::vector<int64_t>& prompts, int group,
                                 const model::SamplingParams& params, uint64_t seed);
  // Log-probabilities (B, T) of `batch`'s labels: the policy (with grad when
  // grad mode is on) or the reference (the base with the adapter disabled, or
  // the frozen copy).
  absl::StatusOr<at::Tensor> TokenLogProbs(const Batch& batch, bool reference,
                                           uint64_t dropout_seed);
  absl::StatusOr<EvalMetrics> EvaluateReinforcement();
  absl::StatusOr<StepStats> RunStep(int64_t step);
  // Forward and backward of one micro-batch; `share` is its part of the step.
  absl::StatusOr<StepStats> SupervisedMicroStep(const Batch& batch, uint64_t dropout_seed,
                                                double share);
  absl::StatusOr<StepStats> DpoMicroStep(const std::vector<int64_t>& pairs, uint64_t dropout_seed,
                                         int64_t step_pairs);
  // DPO on `pairs` of `examples`: losses and metrics, differentiable when
  // grad mode is on. `precomputed` (may be null) holds the reference.
  absl::StatusOr<std::pair<at::Tensor, StepStats>> DpoForward(
      const std::vector<PreferenceExample>& examples, const std::vector<int64_t>& pairs,
      const ReferenceLogProbs* precomputed, const model::DecoderInput& input, const Batch& batch);
  absl::StatusOr<ReferenceLogProbs> PrecomputeReference(
      const std::vector<PreferenceExample>& examples);
  absl::StatusOr<EvalMetrics> EvaluateDpo();
  absl::StatusOr<CheckpointInfo> SaveCheckpoint(CheckpointKind kind, const State& state);
  absl::Status LoadCheckpoint(const CheckpointInfo& checkpoint, State* state);
  absl::Status Prune(const State& state);
  model::DecoderInput Input(const Batch& batch, uint64_t dropout_seed) const;

  TrainerSetup setup_;
  bool lora_ = true;
  int adapter_id_ = model::kNoAdapter;
  std::unique_ptr<BatchPlan> plan_;
  std::unique_ptr<AdamW> optimizer_;
  // DPO references computed from the starting weights (precompute on).
  std::optional<ReferenceLogProbs> train_reference_, validation_reference_;
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_TRAINER_H_
