#include "services/training/grpo.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {

absl::StatusOr<RlExample> TokenizeRlExample(const nlohmann::ordered_json& line,
                                            const text::ModelText& text, const GraderSpec& grader) {
  if (!line.is_object()) return absl::InvalidArgumentError("line is not a JSON object");
  auto messages_it = line.find("messages");
  if (messages_it == line.end() || !messages_it->is_array() || messages_it->empty()) {
    return absl::InvalidArgumentError(
        "messages: reinforcement fine-tuning needs chat examples with \"messages\"");
  }
  nlohmann::ordered_json messages = *messages_it;
  // A final assistant turn is the example's answer, not part of the prompt.
  if (messages.back().is_object() && messages.back().value("role", "") == "assistant") {
    messages.erase(messages.end() - 1);
  }
  if (messages.empty()) return absl::InvalidArgumentError("messages: no prompt before the answer");
  RlExample ex;
  nlohmann::json item = nlohmann::json::object();
  auto metadata = line.find("metadata");
  if (metadata != line.end() && metadata->is_object()) {
    for (auto it = metadata->begin(); it != metadata->end(); ++it) item[it.key()] = it.value();
  }
  for (auto it = line.begin(); it != line.end(); ++it) item[it.key()] = it.value();
  SY_RETURN_IF_ERROR(CheckGraderItem(grader, item));
  ex.item = std::move(item);
  SY_ASSIGN_OR_RETURN(ex.prompt_ids, text::EncodeChatPrompt(text, messages));
  return ex;
}

absl::StatusOr<RlData> TokenizeRlFile(const std::string& path, const text::ModelText& text,
                                      const GraderSpec& grader, SftTokenizeOptions options) {
  RlData data;
  options.require_trained = false;
  nlohmann::json item;  // the line being read: keep runs right after its tokenize
  SY_RETURN_IF_ERROR(TokenizeJsonlFile(
      path, options,
      [&](const nlohmann::ordered_json& line) -> absl::StatusOr<std::vector<SftExample>> {
        SY_ASSIGN_OR_RETURN(RlExample ex, TokenizeRlExample(line, text, grader));
        SftExample seq;
        seq.ids = std::move(ex.prompt_ids);
        seq.trained.assign(seq.ids.size(), 0);
        item = std::move(ex.item);
        return std::vector<SftExample>{std::move(seq)};
      },
      [&](int64_t line, std::vector<SftExample> sequences) {
        RlExample ex;
        ex.prompt_ids = std::move(sequences[0].ids);
        ex.item = std::move(item);
        ex.line = line;
        data.examples.push_back(std::move(ex));
      },
      &data));
  return data;
}

std::vector<double> GroupAdvantages(const std::vector<double>& rewards, int group,
                                    double* mean_std) {
  std::vector<double> out(rewards.size(), 0);
  double std_sum = 0;
  int groups = 0;
  for (size_t first = 0; group > 0 && first < rewards.size(); first += group) {
    const size_t last = std::min(rewards.size(), first + group);
    const double n = static_cast<double>(last - first);
    double mean = 0, var = 0;
    for (size_t i = first; i < last; ++i) mean += rewards[i] / n;
    for (size_t i = first; i < last; ++i) var += (rewards[i] - mean) * (rewards[i] - mean);
    // The sample standard deviation, as torch.std (TRL) computes it.
    const double sd = n > 1 ? std::sqrt(var / (n - 1)) : 0;
    std_sum += sd;
    ++groups;
    for (size_t i = first; i < last; ++i) out[i] = sd > 0 ? (rewards[i] - mean) / (sd + 1e-4) : 0;
  }
  if (mean_std != nullptr) *mean_std = groups > 0 ? std_sum / groups : 0;
  return out;
}

GrpoLossOutput ComputeGrpoLoss(const at::Tensor& logp, const at::Tensor& old_logp,
                               const at::Tensor& ref_logp, const at::Tensor& mask,
                               const at::Tensor& advantages, double clip_epsilon, double kl_beta) {
  const at::Tensor m = mask.to(at::kFloat);
  const at::Tensor a = advantages.to(logp.device(), at::kFloat).unsqueeze(1);
  const at::Tensor ratio = at::exp(logp - old_logp);
  const at::Tensor clipped_ratio = at::clamp(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon);
  at::Tensor per_token = -at::min(ratio * a, clipped_ratio * a);
  GrpoLossOutput out;
  if (kl_beta > 0 && ref_logp.defined()) {
    const at::Tensor diff = ref_logp - logp;
    const at::Tensor kl = at::exp(diff) - diff - 1;
    per_token = per_token + kl_beta * kl;
    out.kl_sum = (kl.detach() * m).sum().item<double>();
  }
  const at::Tensor counts = m.sum(1).clamp_min(1);
  out.row_losses = (per_token * m).sum(1) / counts;
  // A token is clipped when the clipped term is the smaller one and differs.
  const at::Tensor was_clipped =
      (clipped_ratio * a).lt(ratio * a).logical_and(ratio.ne(clipped_ratio)).to(at::kFloat);
  out.clipped = (was_clipped.detach() * m).sum().item<double>();
  out.tokens = m.sum().item<int64_t>();
  return out;
}

}  // namespace switchyard::training
