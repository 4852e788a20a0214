#include "services/training/optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"
#include "shared/tensors/safetensors.h"
#include "shared/tensors/torch_tensors.h"

namespace switchyard::training {

AdamW::AdamW(std::vector<TrainableParam> params, AdamWOptions options) : options_(options) {
  at::NoGradGuard no_grad;
  for (TrainableParam& p : params) {
    State s;
    s.master = p.param.scalar_type() == at::kFloat ? p.param : p.param.detach().to(at::kFloat);
    s.exp_avg = at::zeros_like(s.master);
    s.exp_avg_sq = at::zeros_like(s.master);
    s.p = std::move(p);
    states_.push_back(std::move(s));
  }
}

void AdamW::ZeroGrad() {
  for (State& s : states_) {
    if (s.p.param.grad().defined()) s.p.param.mutable_grad() = at::Tensor();
  }
}

double AdamW::ClipGradNorm(double max_norm) {
  at::NoGradGuard no_grad;
  at::Tensor total;
  for (State& s : states_) {
    const at::Tensor& g = s.p.param.grad();
    if (!g.defined()) continue;
    at::Tensor sq = g.to(at::kFloat).pow(2).sum();
    total = total.defined() ? total + sq : sq;
  }
  if (!total.defined()) return 0;
  const double norm = std::sqrt(total.item<double>());
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (State& s : states_) {
      if (s.p.param.grad().defined()) s.p.param.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

void AdamW::Step(double lr) {
  at::NoGradGuard no_grad;
  ++steps_;
  const double bc1 = 1 - std::pow(options_.beta1, static_cast<double>(steps_));
  const double bc2 = 1 - std::pow(options_.beta2, static_cast<double>(steps_));
  for (State& s : states_) {
    const at::Tensor& grad = s.p.param.grad();
    if (!grad.defined()) continue;
    at::Tensor g = grad.to(at::kFloat);
    if (s.p.decay && options_.weight_decay > 0) s.master.mul_(1 - lr * options_.weight_decay);
    s.exp_avg.mul_(options_.beta1).add_(g, 1 - options_.beta1);
    s.exp_avg_sq.mul_(options_.beta2).addcmul_(g, g, 1 - options_.beta2);
    at::Tensor denom = (s.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(options_.eps);
    s.master.addcdiv_(s.exp_avg, denom, -lr / bc1);
    if (!s.master.is_same(s.p.param)) s.p.param.copy_(s.master);
  }
}

int64_t AdamW::num_elements() const {
  int64_t n = 0;
  for (const State& s : states_) n += s.master.numel();
  return n;
}

absl::Status AdamW::Save(const std::string& path) const {
  tensors::NamedTensors out;
  for (const State& s : states_) {
    out.emplace_back(s.p.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.p.name + ".exp_avg_sq", s.exp_avg_sq);
    out.emplace_back(s.p.name + ".master", s.master);
  }
  return tensors::SaveTensors(path, out,
                              {{"format", "switchyard-adamw"}, {"step", std::to_string(steps_)}});
}

absl::Status AdamW::Load(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::shared_ptr<tensors::SafetensorsFile> file,
                      tensors::SafetensorsFile::Open(path));
  const auto& meta = file->header().metadata;
  auto step = meta.find("step");
  if (step == meta.end()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no \"step\" in __metadata__"));
  }
  at::NoGradGuard no_grad;
  for (State& s : states_) {
    for (auto [suffix, target] : {std::pair<const char*, at::Tensor*>{".exp_avg", &s.exp_avg},
                                  {".exp_avg_sq", &s.exp_avg_sq},
                                  {".master", &s.master}}) {
      const std::string name = s.p.name + suffix;
      const tensors::TensorInfo* info = file->header().Find(name);
      if (info == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": optimizer state has no tensor \"", name, "\""));
      }
      SY_ASSIGN_OR_RETURN(at::Tensor t, tensors::LoadTensor(file, *info));
      if (!t.sizes().equals(target->sizes())) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", name, "\" does not match the parameter's shape"));
      }
      target->copy_(t);
    }
    if (!s.master.is_same(s.p.param)) s.p.param.copy_(s.master);
  }
  steps_ = std::stoll(step->second);
  return absl::OkStatus();
}

double LearningRateAt(LrScheduler schedule, double peak, int64_t step, int64_t warmup_steps,
                      int64_t total_steps) {
  // transformers' LambdaLR counts from 0 at the first optimizer step.
  const double s = static_cast<double>(step - 1);
  if (s < warmup_steps) return peak * s / std::max<int64_t>(1, warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  const double progress = (s - warmup_steps) / span;
  switch (schedule) {
    case LrScheduler::kConstant:
      return peak;
    case LrScheduler::kCosine:
      return peak * std::max(0.0, 0.5 * (1 + std::cos(M_PI * progress)));
    case LrScheduler::kAuto:
    case LrScheduler::kLinear:
      break;
  }
  return peak * std::max(0.0, 1 - progress);
}

}  // namespace switchyard::training
