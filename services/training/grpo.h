// Reinforcement fine-tuning with group-relative policy optimisation (GRPO,
// Shao et al. 2024, as TRL's GRPOTrainer runs it): the prompts of a chat
// dataset, the group-normalised advantages of sampled completions, and the
// clipped policy-gradient loss with a KL penalty to the reference policy.
#ifndef SWITCHYARD_SERVICES_TRAINING_GRPO_H_
#define SWITCHYARD_SERVICES_TRAINING_GRPO_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/training/graders.h"
#include "services/training/sft_data.h"

namespace switchyard::training {

// A prompt to sample completions for, and the fields graders read.
struct RlExample {
  std::vector<int32_t> prompt_ids;  // the conversation rendered for generation
  // The JSONL line, with the fields of its "metadata" object also at the top
  // level (the line's own fields win), so {{item.answer}} reads either.
  nlohmann::json item;
  int64_t line = 0;
};

struct RlData : TokenizeReport {
  std::vector<RlExample> examples;
};

// One chat line: its messages without a final assistant turn, rendered with
// the chat template and the generation prompt. INVALID_ARGUMENT naming the
// field, or the grader template whose {{item....}} the line lacks.
absl::StatusOr<RlExample> TokenizeRlExample(const nlohmann::ordered_json& line,
                                            const text::ModelText& text, const GraderSpec& grader);

// Every line of a chat JSONL file; problems land in the report's errors
// naming the line. options.max_seq_length bounds the prompt.
absl::StatusOr<RlData> TokenizeRlFile(const std::string& path, const text::ModelText& text,
                                      const GraderSpec& grader, SftTokenizeOptions options);

// Advantages of rewards in groups of `group` consecutive ones: (r - group
// mean) / (group standard deviation + 1e-4), 0 for a group whose rewards are
// all equal. `mean_std` (may be null) receives the mean within-group
// standard deviation.
std::vector<double> GroupAdvantages(const std::vector<double>& rewards, int group,
                                    double* mean_std = nullptr);

struct GrpoLossOutput {
  at::Tensor row_losses;  // (B,) the mean over each row's completion tokens
  double kl_sum = 0;      // per-token KL summed over the completion tokens
  double clipped = 0;     // completion tokens whose ratio was clipped
  int64_t tokens = 0;     // completion tokens
};

// Per token t of a completion with advantage A: ratio = exp(logp - old_logp),
// loss = -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A) + beta KL, where
// KL = exp(ref - logp) - (ref - logp) - 1 (the k3 estimator, >= 0). logp,
// old_logp, ref_logp (undefined when beta is 0) are (B, T) float32 log
// probabilities of the tokens `mask` (B, T) marks; advantages (B,).
GrpoLossOutput ComputeGrpoLoss(const at::Tensor& logp, const at::Tensor& old_logp,
                               const at::Tensor& ref_logp, const at::Tensor& mask,
                               const at::Tensor& advantages, double clip_epsilon, double kl_beta);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_GRPO_H_
