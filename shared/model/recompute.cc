#include "shared/model/recompute.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <utility>

namespace switchyard::model {
namespace {

// Keeps the function alive until backward.
struct Recompute : torch::CustomClassHolder {
  explicit Recompute(std::function<at::Tensor(const at::Tensor&)> f) : fn(std::move(f)) {}
  std::function<at::Tensor(const at::Tensor&)> fn;
};

class RecomputeFunction : public torch::autograd::Function<RecomputeFunction> {
 public:
  // Autograd is off in here, so fn keeps nothing for backward.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const c10::intrusive_ptr<Recompute>& fn) {
    ctx->save_for_backward({x});
    ctx->saved_data["fn"] = at::IValue::make_capsule(fn);
    return fn->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& grad_y = grad_outputs[0];
    if (!grad_y.defined()) return {at::Tensor(), at::Tensor()};
    c10::intrusive_ptr<torch::CustomClassHolder> holder = ctx->saved_data["fn"].toCapsule();
    const Recompute& fn = *static_cast<const Recompute*>(holder.get());
    at::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      at::AutoGradMode grad_on(true);
      y = fn.fn(x);
    }
    if (y.requires_grad()) torch::autograd::backward({y}, {grad_y});
    return {x.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor RecomputeInBackward(std::function<at::Tensor(const at::Tensor&)> fn,
                               const at::Tensor& x) {
  return RecomputeFunction::apply(x, c10::make_intrusive<Recompute>(std::move(fn)));
}

}  // namespace switchyard::model
