#include "shared/model/quantize.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <vector>

#include "shared/model/dequantize_cpu.h"

namespace switchyard::model {
namespace {

// Quantize and Dequantize work on this many NF4 blocks (1M weights) or on
// about this many weights of INT8 rows at a time, which bounds their fp32 and
// index temporaries to a few MiB whatever the layer's size.
constexpr int64_t kChunkBlocks = 16384;
constexpr int64_t kChunkWeights = kChunkBlocks * kNf4BlockSize;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Nearest-code rounding without a search: [-1, 1] is cut into kNf4Bins equal
// bins of width 0.002, while adjacent code midpoints lie at least 0.08 apart,
// so a bin holds at most one midpoint and a value's code is first[bin] + (value
// > midpoint[bin]). No midpoint lies within 1e-5 of a bin edge, far more than
// the fp32 rounding of the bin computation, so a value never lands in a bin
// whose answer differs from its own.
constexpr int64_t kNf4Bins = 1024;

struct Nf4Lookup {
  at::Tensor first;     // (kNf4Bins,) uint8: the code at the bin's left edge
  at::Tensor midpoint;  // (kNf4Bins,) fp32: the midpoint inside the bin, or 2
};

const Nf4Lookup& CpuNf4Lookup() {
  static const Nf4Lookup lookup = [] {
    const std::array<float, 16>& codes = Nf4Codes();
    std::array<float, 15> mids;
    for (size_t i = 0; i < mids.size(); ++i) mids[i] = 0.5f * (codes[i] + codes[i + 1]);
    std::vector<uint8_t> first(kNf4Bins);
    std::vector<float> midpoint(kNf4Bins);
    size_t m = 0;  // midpoints left of the current bin
    for (int64_t bin = 0; bin < kNf4Bins; ++bin) {
      const double left = -1.0 + 2.0 * bin / kNf4Bins, right = -1.0 + 2.0 * (bin + 1) / kNf4Bins;
      first[bin] = static_cast<uint8_t>(m);
      midpoint[bin] = 2.0f;
      if (m < mids.size() && mids[m] < right) {
        TORCH_INTERNAL_ASSERT(mids[m] - left > 1e-5 && right - mids[m] > 1e-5);
        midpoint[bin] = mids[m++];
        TORCH_INTERNAL_ASSERT(m == mids.size() || mids[m] >= right);
      }
    }
    Nf4Lookup l;
    l.first = at::tensor(at::ArrayRef<uint8_t>(first), at::kByte);
    l.midpoint = at::tensor(midpoint, at::kFloat);
    return l;
  }();
  return lookup;
}

// Code indices (n,) uint8 of normalised values (n,) fp32 in [-1, 1].
at::Tensor Nf4Indices(const at::Tensor& normed, const Nf4Lookup& lookup) {
  at::Tensor bin = normed.add(1.0).mul_(kNf4Bins / 2.0).clamp_(0, kNf4Bins - 1).to(at::kInt);
  return lookup.first.index_select(0, bin).add_(
      at::gt(normed, lookup.midpoint.index_select(0, bin)));
}

// (256, 2) fp32: row b holds the code values of byte b's high and low nibble,
// so one gather decodes two weights.
at::Tensor Nf4PairTable(at::Device device) {
  const std::array<float, 16>& codes = Nf4Codes();
  std::vector<float> pairs(512);
  for (int b = 0; b < 256; ++b) {
    pairs[2 * b] = codes[b >> 4];
    pairs[2 * b + 1] = codes[b & 15];
  }
  return at::tensor(pairs, at::kFloat).view({256, 2}).to(device);
}

// Divisors for normalising by absmax: zero (an all-zero block or row) becomes
// one, so its values stay zero instead of NaN.
at::Tensor SafeDivisor(const at::Tensor& absmax) { return absmax.masked_fill(absmax == 0, 1.0); }

void CheckFinite(const at::Tensor& absmax) {
  // absmax is NaN or inf exactly when its block or row holds one.
  TORCH_CHECK(at::isfinite(absmax).all().item<bool>(),
              "Quantize: the weight has non-finite values");
}

QuantizedTensor QuantizeNf4(const at::Tensor& weight, QuantizedTensor q, bool double_quant) {
  const int64_t n = q.numel();
  const int64_t num_blocks = CeilDiv(n, kNf4BlockSize);
  at::Tensor flat = weight.reshape({-1});  // (n,)
  const Nf4Lookup& cpu_lookup = CpuNf4Lookup();
  const Nf4Lookup lookup{cpu_lookup.first.to(weight.device()),
                         cpu_lookup.midpoint.to(weight.device())};
  at::Tensor absmax = at::empty({num_blocks}, weight.options().dtype(at::kFloat));
  q.codes = at::empty({num_blocks * kNf4BlockSize / 2}, weight.options().dtype(at::kByte));
  for (int64_t b0 = 0; b0 < num_blocks; b0 += kChunkBlocks) {
    const int64_t b1 = std::min(num_blocks, b0 + kChunkBlocks);
    const int64_t e0 = b0 * kNf4BlockSize, e1 = std::min(n, b1 * kNf4BlockSize);
    at::Tensor blocks = flat.slice(0, e0, e1).to(at::kFloat);
    const int64_t pad = (b1 - b0) * kNf4BlockSize - (e1 - e0);
    if (pad > 0) blocks = at::constant_pad_nd(blocks, {0, pad}, 0.0);
    blocks = blocks.view({b1 - b0, kNf4BlockSize});  // (blocks, 64)
    at::Tensor block_absmax = blocks.abs().amax(1);  // (blocks,)
    CheckFinite(block_absmax);
    absmax.slice(0, b0, b1).copy_(block_absmax);
    at::Tensor normed = blocks / SafeDivisor(block_absmax).unsqueeze(1);   // in [-1, 1]
    at::Tensor idx = Nf4Indices(normed.view({-1}), lookup).view({-1, 2});  // (blocks * 32, 2)
    q.codes.slice(0, b0 * kNf4BlockSize / 2, b1 * kNf4BlockSize / 2)
        .copy_(idx.select(1, 0).mul(16).add_(idx.select(1, 1)));
  }
  q.block_size = kNf4BlockSize;
  if (!double_quant) {
    q.absmax = absmax;
    return q;
  }
  // Absmax values sit in a narrow band above zero; centring them on their
  // mean spends the 255 levels of each group of 256 on that band.
  q.absmax_offset = absmax.mean().item<float>();
  const int64_t groups = CeilDiv(num_blocks, kDoubleQuantBlockSize);
  at::Tensor centred = at::constant_pad_nd(absmax - q.absmax_offset,
                                           {0, groups * kDoubleQuantBlockSize - num_blocks}, 0.0)
                           .view({groups, kDoubleQuantBlockSize});  // (groups, 256)
  q.absmax_scales = centred.abs().amax(1);                          // (groups,)
  q.absmax_codes = (centred / SafeDivisor(q.absmax_scales).unsqueeze(1) * 127.0)
                       .round_()
                       .clamp_(-127, 127)
                       .to(at::kChar)
                       .view({-1});
  return q;
}

QuantizedTensor QuantizeInt8(const at::Tensor& weight, QuantizedTensor q) {
  q.codes = at::empty({q.rows, q.cols}, weight.options().dtype(at::kChar));
  q.absmax = at::empty({q.rows}, weight.options().dtype(at::kFloat));
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkWeights / std::max<int64_t>(1, q.cols));
  for (int64_t r0 = 0; r0 < q.rows; r0 += chunk_rows) {
    const int64_t r1 = std::min(q.rows, r0 + chunk_rows);
    at::Tensor w = weight.slice(0, r0, r1).to(at::kFloat);  // (chunk_rows, cols)
    at::Tensor row_absmax = w.abs().amax(1);                // (chunk_rows,)
    CheckFinite(row_absmax);
    q.absmax.slice(0, r0, r1).copy_(row_absmax);
    at::Tensor scale = SafeDivisor(row_absmax).div_(127.0).unsqueeze(1);
    q.codes.slice(0, r0, r1).copy_((w / scale).round_().clamp_(-127, 127));
  }
  return q;
}

// (num_blocks,) fp32 block absmax, decoding double quantisation.
at::Tensor Nf4Absmax(const QuantizedTensor& w) {
  if (!w.double_quant()) return w.absmax;
  const int64_t groups = w.absmax_scales.size(0);
  at::Tensor absmax = w.absmax_codes.to(at::kFloat)
                          .view({groups, kDoubleQuantBlockSize})
                          .mul_(w.absmax_scales.unsqueeze(1))
                          .div_(127.0)
                          .add_(w.absmax_offset)
                          .view({-1})
                          .slice(0, 0, w.num_blocks());
  // A block far below the mean may round just below zero; a negative scale
  // would flip its signs.
  return absmax.clamp_min_(0);
}

at::Tensor DequantizeNf4(const QuantizedTensor& w, at::ScalarType dtype) {
  const int64_t num_blocks = w.num_blocks();
  at::Tensor absmax = Nf4Absmax(w).contiguous();
  at::Tensor out = at::empty({num_blocks * kNf4BlockSize}, w.codes.options().dtype(dtype));
  if (w.codes.device().is_cpu() && w.codes.is_contiguous() &&
      (dtype == at::kFloat || dtype == at::kBFloat16)) {
    // Straight from the codes, no chunk temporaries (dequantize_cpu.h).
    DecodeNf4Cpu(w.codes.data_ptr<uint8_t>(), absmax.data_ptr<float>(), num_blocks, Nf4Codes(),
                 dtype == at::kBFloat16, out.data_ptr());
    return out.slice(0, 0, w.numel()).view({w.rows, w.cols});
  }
  at::Tensor pairs = Nf4PairTable(w.device());
  for (int64_t b0 = 0; b0 < num_blocks; b0 += kChunkBlocks) {
    const int64_t b1 = std::min(num_blocks, b0 + kChunkBlocks);
    at::Tensor bytes = w.codes.slice(0, b0 * kNf4BlockSize / 2, b1 * kNf4BlockSize / 2);
    at::Tensor values = pairs
                            .index_select(0, bytes.to(at::kInt))  // (blocks * 32, 2)
                            .view({b1 - b0, kNf4BlockSize});      // (blocks, 64)
    at::Tensor out_blocks =
        out.slice(0, b0 * kNf4BlockSize, b1 * kNf4BlockSize).view({b1 - b0, kNf4BlockSize});
    at::mul_out(out_blocks, values, absmax.slice(0, b0, b1).unsqueeze(1));
  }
  return out.slice(0, 0, w.numel()).view({w.rows, w.cols});
}

at::Tensor DequantizeInt8(const QuantizedTensor& w, at::ScalarType dtype) {
  at::Tensor out = at::empty({w.rows, w.cols}, w.codes.options().dtype(dtype));
  if (w.codes.device().is_cpu() && w.codes.is_contiguous() && w.absmax.is_contiguous() &&
      (dtype == at::kFloat || dtype == at::kBFloat16)) {
    DecodeInt8Cpu(w.codes.data_ptr<int8_t>(), w.absmax.data_ptr<float>(), w.rows, w.cols,
                  dtype == at::kBFloat16, out.data_ptr());
    return out;
  }
  const int64_t chunk_rows = std::max<int64_t>(1, kChunkWeights / std::max<int64_t>(1, w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk_rows) {
    const int64_t r1 = std::min(w.rows, r0 + chunk_rows);
    at::Tensor scale = w.absmax.slice(0, r0, r1).div(127.0).unsqueeze(1);  // (chunk_rows, 1)
    at::Tensor out_rows = out.slice(0, r0, r1);
    at::mul_out(out_rows, w.codes.slice(0, r0, r1).to(at::kFloat), scale);
  }
  return out;
}

// y = x W^T + b in x's dtype, with W dequantised for this call only.
at::Tensor DenseLinear(const at::Tensor& x, const QuantizedTensor& w, const at::Tensor& bias) {
  at::Tensor weight = Dequantize(w, x.scalar_type());
  at::Tensor b = bias.defined() ? bias.to(x.scalar_type()) : bias;
  return at::linear(x, weight, b);
}

// Keeps the quantised storage alive for backward without copying it.
struct QuantizedStorage : torch::CustomClassHolder {
  explicit QuantizedStorage(QuantizedTensor w) : weight(std::move(w)) {}
  QuantizedTensor weight;
};

class QuantizedLinearFunction : public torch::autograd::Function<QuantizedLinearFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const QuantizedTensor& w, const c10::optional<at::Tensor>& bias) {
    ctx->saved_data["weight"] = at::IValue::make_capsule(c10::make_intrusive<QuantizedStorage>(w));
    ctx->saved_data["x_requires_grad"] = x.requires_grad();
    return DenseLinear(x, w, bias.value_or(at::Tensor()));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& grad_y = grad_outputs[0];  // (..., out)
    at::Tensor grad_x;
    if (ctx->saved_data["x_requires_grad"].toBool() && grad_y.defined()) {
      c10::intrusive_ptr<torch::CustomClassHolder> holder = ctx->saved_data["weight"].toCapsule();
      const QuantizedTensor& w = static_cast<const QuantizedStorage*>(holder.get())->weight;
      grad_x = at::matmul(grad_y, Dequantize(w, grad_y.scalar_type()));  // (..., in)
    }
    return {grad_x, at::Tensor(), at::Tensor()};  // x, w, bias
  }
};

}  // namespace

std::string_view BaseQuantizationName(BaseQuantization kind) {
  switch (kind) {
    case BaseQuantization::kNone:
      return "none";
    case BaseQuantization::kNf4:
      return "nf4";
    case BaseQuantization::kInt8:
      return "int8";
  }
  return "none";
}

std::optional<BaseQuantization> ParseBaseQuantization(std::string_view name) {
  for (BaseQuantization kind :
       {BaseQuantization::kNone, BaseQuantization::kNf4, BaseQuantization::kInt8}) {
    if (name == BaseQuantizationName(kind)) return kind;
  }
  return std::nullopt;
}

const std::array<float, 16>& Nf4Codes() {
  // The quantiles of N(0, 1) rescaled to [-1, 1], with an exact zero: 8
  // non-negative and 7 negative levels (QLoRA, appendix E).
  static const std::array<float, 16> kCodes = {
      -1.0f,
      -0.6961928009986877f,
      -0.5250730514526367f,
      -0.39491748809814453f,
      -0.28444138169288635f,
      -0.18477343022823334f,
      -0.09105003625154495f,
      0.0f,
      0.07958029955625534f,
      0.16093020141124725f,
      0.24611230194568634f,
      0.33791524171829224f,
      0.44070982933044434f,
      0.5626170039176941f,
      0.7229568362236023f,
      1.0f,
  };
  return kCodes;
}

int64_t QuantizedTensor::num_blocks() const {
  return block_size > 0 ? CeilDiv(numel(), block_size) : 0;
}

int64_t QuantizedTensor::bytes() const {
  int64_t total = 0;
  for (const at::Tensor* t : {&codes, &absmax, &absmax_codes, &absmax_scales}) {
    if (t->defined()) total += t->numel() * static_cast<int64_t>(t->element_size());
  }
  if (double_quant()) total += sizeof(absmax_offset);
  return total;
}

QuantizedTensor Quantize(const at::Tensor& weight, BaseQuantization kind, bool double_quant) {
  TORCH_CHECK(weight.dim() == 2, "Quantize: expected a 2-D weight, got ", weight.sizes());
  TORCH_CHECK(at::isFloatingType(weight.scalar_type()), "Quantize: expected a float weight, got ",
              weight.scalar_type());
  TORCH_CHECK(weight.numel() > 0, "Quantize: the weight is empty");
  at::NoGradGuard no_grad;
  QuantizedTensor q;
  q.kind = kind;
  q.rows = weight.size(0);
  q.cols = weight.size(1);
  q.dtype = weight.scalar_type();
  switch (kind) {
    case BaseQuantization::kNone:
      q.codes = weight.detach();
      return q;
    case BaseQuantization::kNf4:
      return QuantizeNf4(weight.detach(), std::move(q), double_quant);
    case BaseQuantization::kInt8:
      return QuantizeInt8(weight.detach(), std::move(q));
  }
  TORCH_CHECK(false, "Quantize: unknown kind");
}

at::Tensor Dequantize(const QuantizedTensor& w, at::ScalarType dtype) {
  at::NoGradGuard no_grad;
  switch (w.kind) {
    case BaseQuantization::kNone:
      return w.codes.to(dtype).contiguous();
    case BaseQuantization::kNf4:
      return DequantizeNf4(w, dtype);
    case BaseQuantization::kInt8:
      return DequantizeInt8(w, dtype);
  }
  TORCH_CHECK(false, "Dequantize: unknown kind");
}

at::Tensor QuantizedLinear(const at::Tensor& x, const QuantizedTensor& w, const at::Tensor& bias) {
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == w.cols, "QuantizedLinear: x ", x.sizes(),
              " does not match a weight of ", w.cols, " inputs");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "QuantizedLinear: expected float x, got ",
              x.scalar_type());
  if (!(at::GradMode::is_enabled() && x.requires_grad())) {
    // No gradient to x, and none to W or the bias by contract.
    at::NoGradGuard no_grad;
    return DenseLinear(x, w, bias);
  }
  // An undefined tensor cannot be a Function input; an empty optional can.
  c10::optional<at::Tensor> optional_bias;
  if (bias.defined()) optional_bias = bias;
  return QuantizedLinearFunction::apply(x, w, optional_bias);
}

}  // namespace switchyard::model
