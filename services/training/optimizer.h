// AdamW with decoupled weight decay (Loshchilov & Hutter; the defaults of
// torch.optim.AdamW and the transformers Trainer: betas 0.9/0.999, eps 1e-8),
// fp32 master weights for parameters stored in bf16/fp16, gradient clipping by
// global L2 norm, and its state saved as safetensors so a resumed run
// continues exactly where it stopped. Plus the learning-rate schedules of
// transformers' get_scheduler (linear, cosine, constant, with linear warmup).
//
// Not thread-safe.
#ifndef SWITCHYARD_SERVICES_TRAINING_OPTIMIZER_H_
#define SWITCHYARD_SERVICES_TRAINING_OPTIMIZER_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/training/job_types.h"

namespace switchyard::training {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
};

struct TrainableParam {
  std::string name;   // stable across runs: keys the saved state
  at::Tensor param;   // a leaf the model computes with; requires_grad
  bool decay = true;  // weight decay applies (not to biases and norms)
};

class AdamW {
 public:
  AdamW(std::vector<TrainableParam> params, AdamWOptions options);

  void ZeroGrad();
  // Global L2 norm of every gradient (computed in fp32); when max_norm > 0 and
  // the norm exceeds it, scales the gradients down to max_norm. Returns the
  // norm before clipping. A missing gradient counts as zero.
  double ClipGradNorm(double max_norm);
  // One update at learning rate `lr`.
  void Step(double lr);
  int64_t steps() const { return steps_; }
  int64_t num_elements() const;

  // Moments, master weights and the step count. Load restores them and copies
  // the master weights into the parameters; INVALID_ARGUMENT naming the
  // tensor when the file does not match these parameters.
  absl::Status Save(const std::string& path) const;
  absl::Status Load(const std::string& path);

 private:
  struct State {
    TrainableParam p;
    at::Tensor master;  // fp32; the parameter itself when it is fp32
    at::Tensor exp_avg, exp_avg_sq;
  };
  std::vector<State> states_;
  AdamWOptions options_;
  int64_t steps_ = 0;
};

// Learning rate of 1-based optimizer step `step` of `total_steps`, as
// transformers' schedulers give it: linear warmup from 0 over `warmup_steps`,
// then linear decay to 0, cosine decay to 0, or constant.
double LearningRateAt(LrScheduler schedule, double peak, int64_t step, int64_t warmup_steps,
                      int64_t total_steps);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_OPTIMIZER_H_
