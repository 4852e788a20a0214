#include "services/training/dpo.h"

#include <algorithm>

#include "shared/model/loss.h"

namespace switchyard::training {

DpoLossOutput ComputeDpoLoss(const at::Tensor& policy_chosen, const at::Tensor& policy_rejected,
                             const at::Tensor& reference_chosen,
                             const at::Tensor& reference_rejected, const DpoSpec& spec) {
  const double beta = spec.beta.value_or(0.1);
  const double e = spec.label_smoothing.value_or(0);
  const at::Tensor chosen = policy_chosen - reference_chosen;
  const at::Tensor rejected = policy_rejected - reference_rejected;
  const at::Tensor h = chosen - rejected;
  DpoLossOutput out;
  switch (spec.loss_type) {
    case DpoLoss::kIpo:
      out.losses = (h - 1.0 / (2.0 * beta)).pow(2);
      break;
    case DpoLoss::kHinge:
      out.losses = at::relu(1.0 - beta * h);
      break;
    case DpoLoss::kRobust:
      out.losses = (-(1.0 - e) * at::log_sigmoid(beta * h) + e * at::log_sigmoid(-beta * h)) /
                   (1.0 - 2.0 * e);
      break;
    case DpoLoss::kSigmoid:
    case DpoLoss::kAuto:
      out.losses = -(1.0 - e) * at::log_sigmoid(beta * h) - e * at::log_sigmoid(-beta * h);
      break;
  }
  out.chosen_rewards = (beta * chosen).detach();
  out.rejected_rewards = (beta * rejected).detach();
  return out;
}

at::Tensor SequenceLogProbs(const at::Tensor& logits, const at::Tensor& labels) {
  return model::LabelLogProbs(logits, labels).sum(1);
}

at::Tensor LabelCounts(const at::Tensor& labels) {
  return labels.ne(model::kIgnoreLabel).sum(1).to(at::kFloat).clamp_min(1);
}

Batch MakePairBatch(const std::vector<PreferenceExample>& examples,
                    const std::vector<int64_t>& pairs) {
  std::vector<SftExample> sequences;
  sequences.reserve(2 * pairs.size());
  for (int64_t i : pairs) sequences.push_back(examples[i].chosen);
  for (int64_t i : pairs) sequences.push_back(examples[i].rejected);
  std::vector<Row> rows;
  for (int64_t i = 0; i < static_cast<int64_t>(sequences.size()); ++i) rows.push_back({i});
  return MakeBatch(sequences, rows);
}

void DpoSums::Add(const DpoSums& o) {
  pairs += o.pairs;
  loss += o.loss;
  rewards_chosen += o.rewards_chosen;
  rewards_rejected += o.rewards_rejected;
  correct += o.correct;
  logps_chosen += o.logps_chosen;
  logps_rejected += o.logps_rejected;
}

DpoMetrics DpoSums::Means() const {
  const double n = static_cast<double>(std::max<int64_t>(1, pairs));
  DpoMetrics m;
  m.rewards_chosen = rewards_chosen / n;
  m.rewards_rejected = rewards_rejected / n;
  m.reward_accuracy = correct / n;
  m.reward_margin = (rewards_chosen - rewards_rejected) / n;
  m.logps_chosen = logps_chosen / n;
  m.logps_rejected = logps_rejected / n;
  return m;
}

}  // namespace switchyard::training
