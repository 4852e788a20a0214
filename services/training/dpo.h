// Direct preference optimisation (Rafailov et al. 2023): the loss over the
// log-probabilities a policy and a reference give the chosen and rejected
// completions of preference pairs, in the variants TRL's DPOTrainer offers.
//
// With h = (policy_chosen - reference_chosen) - (policy_rejected -
// reference_rejected), beta and label smoothing e:
//   sigmoid: -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)
//   robust:  (-(1 - e) log sigmoid(beta h) + e log sigmoid(-beta h)) / (1 - 2e)
//   hinge:   relu(1 - beta h)                      (SLiC)
//   ipo:     (h - 1 / (2 beta))^2, on log-probabilities averaged over the
//            completion's tokens (IPO's length normalisation)
// The implicit rewards are beta (policy - reference) of each completion.
#ifndef SWITCHYARD_SERVICES_TRAINING_DPO_H_
#define SWITCHYARD_SERVICES_TRAINING_DPO_H_

#include <ATen/ATen.h>

#include <vector>

#include "services/training/batching.h"
#include "services/training/job_types.h"
#include "services/training/preference_data.h"

namespace switchyard::training {

struct DpoLossOutput {
  at::Tensor losses;            // (N,) float32, differentiable
  at::Tensor chosen_rewards;    // (N,) detached
  at::Tensor rejected_rewards;  // (N,) detached
};

// Log-probabilities (N,) float32; `spec` resolved (loss type, beta, label
// smoothing set).
DpoLossOutput ComputeDpoLoss(const at::Tensor& policy_chosen, const at::Tensor& policy_rejected,
                             const at::Tensor& reference_chosen,
                             const at::Tensor& reference_rejected, const DpoSpec& spec);

// Per-row sum of the labels' log-probabilities (kIgnoreLabel counts
// nothing), (B,) float32.
at::Tensor SequenceLogProbs(const at::Tensor& logits, const at::Tensor& labels);
// Labels per row (at least 1), (B,) float32: divides sums into IPO's means.
at::Tensor LabelCounts(const at::Tensor& labels);

// The batch of pairs `pairs` (indices into `examples`): rows 0..n-1 are the
// chosen sequences, rows n..2n-1 the rejected ones, right-padded.
Batch MakePairBatch(const std::vector<PreferenceExample>& examples,
                    const std::vector<int64_t>& pairs);

// Sums of a step's (or an evaluation's) pairs, for DpoMetrics means.
struct DpoSums {
  int64_t pairs = 0;
  double loss = 0;
  double rewards_chosen = 0, rewards_rejected = 0, correct = 0;
  double logps_chosen = 0, logps_rejected = 0;

  void Add(const DpoSums& other);
  DpoMetrics Means() const;
};

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_DPO_H_
