// Quantised frozen base weights (QLoRA): NF4 and INT8 round trips, storage,
// and the on-the-fly dequantising linear layer against its dense reference.
#include "shared/model/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "shared/model/dequantize_cpu.h"

namespace switchyard::model {
namespace {

// Half the widest gap between adjacent NF4 codes (-1 to -0.696): the worst
// rounding error of a weight normalised by its block's absmax.
double Nf4HalfMaxGap() {
  const std::array<float, 16>& codes = Nf4Codes();
  double gap = 0;
  for (size_t i = 0; i + 1 < codes.size(); ++i)
    gap = std::max<double>(gap, codes[i + 1] - codes[i]);
  return gap / 2;
}

// (num_blocks, 64) view of a weight's values, zero-padded as Quantize does.
at::Tensor Blocks(const at::Tensor& weight) {
  at::Tensor flat = weight.reshape({-1}).to(at::kDouble);
  const int64_t pad = (kNf4BlockSize - flat.numel() % kNf4BlockSize) % kNf4BlockSize;
  return at::constant_pad_nd(flat, {0, pad}, 0.0).view({-1, kNf4BlockSize});
}

// Block absmax decoded from a double-quantised tensor's public fields.
at::Tensor DecodedAbsmax(const QuantizedTensor& q) {
  at::Tensor scales = q.absmax_scales.to(at::kDouble).repeat_interleave(kDoubleQuantBlockSize);
  at::Tensor a = q.absmax_codes.to(at::kDouble) * scales / 127.0 + q.absmax_offset;
  return a.slice(0, 0, q.num_blocks());
}

TEST(BaseQuantizationTest, NamesRoundTripAndUnknownNamesAreRejected) {
  for (BaseQuantization kind :
       {BaseQuantization::kNone, BaseQuantization::kNf4, BaseQuantization::kInt8}) {
    EXPECT_EQ(ParseBaseQuantization(BaseQuantizationName(kind)), kind);
  }
  EXPECT_EQ(BaseQuantizationName(BaseQuantization::kNf4), "nf4");
  EXPECT_FALSE(ParseBaseQuantization("fp4").has_value());
  EXPECT_FALSE(ParseBaseQuantization("").has_value());
}

TEST(Nf4Test, GaussianRoundTripErrorIsWithinNf4Bounds) {
  at::manual_seed(1);
  const double sigma = 0.02;
  at::Tensor w = at::randn({256, 1024}) * sigma;
  QuantizedTensor q = Quantize(w, BaseQuantization::kNf4, /*double_quant=*/false);
  ASSERT_EQ(q.block_size, kNf4BlockSize);
  at::Tensor d = Dequantize(q, at::kFloat);
  ASSERT_EQ(d.sizes(), w.sizes());
  ASSERT_EQ(d.scalar_type(), at::kFloat);

  // Per element: nearest-code rounding is off by at most half the widest code
  // gap, scaled by the block's absmax (plus fp32 rounding).
  at::Tensor blocks = Blocks(w);
  at::Tensor absmax = blocks.abs().amax(1, /*keepdim=*/true);  // (blocks, 1)
  at::Tensor err = (Blocks(d) - blocks).abs();
  at::Tensor bound = absmax * (Nf4HalfMaxGap() + 1e-6);
  EXPECT_TRUE((err <= bound).all().item<bool>())
      << "worst excess " << (err - bound).max().item<double>();

  // Mean error: for N(0, sigma) weights in blocks of 64, E|w - Q(w)| =
  // 0.0728 sigma and the RMS error 0.092 sigma (Monte Carlo over 2.56M
  // weights with this code table; the block absmax averages 2.60 sigma, so
  // this is about 2.8% of the absmax, in line with the ~0.1 sigma RMS error
  // reported for 4-bit block-64 NF4). Sampling noise here is ~1e-4 sigma.
  const double mae = err.mean().item<double>() / sigma;
  const double rmse = err.pow(2).mean().sqrt().item<double>() / sigma;
  EXPECT_NEAR(mae, 0.0728, 0.004);
  EXPECT_NEAR(rmse, 0.092, 0.005);
}

TEST(Nf4Test, EveryWeightGetsItsNearestCode) {
  // Absmax 1 (each row starts with 1), values uniform in [-1, 1] plus values
  // just either side of every midpoint between codes.
  const std::array<float, 16>& codes = Nf4Codes();
  at::Tensor table = at::tensor(std::vector<float>(codes.begin(), codes.end()));
  at::Tensor mids = (table.slice(0, 1) + table.slice(0, 0, 15)) / 2;
  at::manual_seed(10);
  at::Tensor w = at::cat({at::rand({64 * 1000}) * 2 - 1, mids + 1e-6, mids - 1e-6});
  w = at::constant_pad_nd(w, {0, (63 - w.numel() % 63) % 63}, 0.0).view({-1, 63});
  w = at::cat({at::ones({w.size(0), 1}), w}, 1);  // (rows, 64)

  at::Tensor nearest = (w.unsqueeze(-1) - table).abs().argmin(-1);  // (rows, 64)
  at::Tensor expected = table.index_select(0, nearest.view({-1})).view(w.sizes());
  EXPECT_TRUE(at::equal(Dequantize(Quantize(w, BaseQuantization::kNf4), at::kFloat), expected));
}

TEST(Nf4Test, WeightsOnCodeValuesComeBackExactly) {
  // Each block cycles through all 16 codes (so it holds -1 and +1 and its
  // absmax is its scale) in a shuffled order, at its own random scale.
  const int64_t rows = 8, cols = 128;
  const std::array<float, 16>& codes = Nf4Codes();
  at::manual_seed(2);
  at::Tensor index =
      at::arange(kNf4BlockSize).remainder(16).repeat({rows * cols / kNf4BlockSize, 1});
  index = index.gather(1, at::argsort(at::rand(index.sizes()), /*dim=*/int64_t{1}));
  at::Tensor table = at::tensor(std::vector<float>(codes.begin(), codes.end()));
  at::Tensor scale = at::rand({rows * cols / kNf4BlockSize, 1}) * 3 + 0.01;
  at::Tensor w =
      (table.index_select(0, index.reshape({-1})).view(index.sizes()) * scale).view({rows, cols});

  QuantizedTensor q = Quantize(w, BaseQuantization::kNf4);
  EXPECT_TRUE(at::equal(q.absmax, scale.view({-1})));
  EXPECT_TRUE(at::equal(Dequantize(q, at::kFloat), w));
}

TEST(Nf4Test, ZeroBlocksAndRowsStayExactlyZero) {
  at::manual_seed(3);
  at::Tensor w = at::randn({4, 128});
  w.slice(0, 1, 2).zero_();  // blocks 2 and 3
  for (BaseQuantization kind : {BaseQuantization::kNf4, BaseQuantization::kInt8}) {
    for (bool double_quant : {false, true}) {
      at::Tensor d = Dequantize(Quantize(w, kind, double_quant), at::kFloat);
      EXPECT_FALSE(at::isnan(d).any().item<bool>()) << BaseQuantizationName(kind);
      EXPECT_TRUE(at::equal(d[1], at::zeros({128}))) << BaseQuantizationName(kind);
      EXPECT_FALSE(at::equal(d[0], at::zeros({128}))) << BaseQuantizationName(kind);
    }
  }
}

TEST(Nf4Test, PartialLastBlockIsPaddedAndAnyFloatDtypeWorks) {
  at::manual_seed(4);
  // 150 weights: two full blocks and one of 22; 15 weights: one block.
  for (std::vector<int64_t> shape : {std::vector<int64_t>{3, 50}, {3, 5}, {1, 1}}) {
    for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {
      at::Tensor w = at::randn(shape).to(dtype);
      QuantizedTensor q = Quantize(w, BaseQuantization::kNf4);
      const int64_t blocks = (w.numel() + 63) / 64;
      ASSERT_EQ(q.num_blocks(), blocks);
      EXPECT_EQ(q.codes.numel(), blocks * 32);
      EXPECT_EQ(q.dtype, dtype);
      // The padding does not change the last block's absmax.
      at::Tensor tail = w.reshape({-1}).slice(0, (blocks - 1) * 64).to(at::kFloat);
      EXPECT_EQ(q.absmax[blocks - 1].item<float>(), tail.abs().max().item<float>());

      at::Tensor d = Dequantize(q, dtype);
      ASSERT_EQ(d.sizes(), w.sizes());
      ASSERT_EQ(d.scalar_type(), dtype);
      at::Tensor err = (Blocks(d) - Blocks(w)).abs();
      // bf16 output adds its own rounding: 2^-8 relative to the value.
      const double out_rounding = dtype == at::kBFloat16 ? 1.0 / 256 : 1e-6;
      at::Tensor bound = Blocks(w).abs().amax(1, true) * (Nf4HalfMaxGap() + out_rounding);
      EXPECT_TRUE((err <= bound).all().item<bool>()) << shape[0] << "x" << shape[1];
    }
  }
}

// The CPU decoder (vector and scalar) against a plain LibTorch decoding of
// the same codes: the same fp32 values, and bf16 rounded as LibTorch rounds.
TEST(Nf4Test, CpuDecoderMatchesLibTorchInBothKernelsAndDtypes) {
  at::manual_seed(12);
  at::Tensor w = at::randn({300, 1001}) * 0.05;  // 4,692 blocks, the last partial
  w.slice(0, 7, 8).zero_();
  for (bool double_quant : {false, true}) {
    QuantizedTensor q = Quantize(w, BaseQuantization::kNf4, double_quant);
    const std::array<float, 16>& codes = Nf4Codes();
    at::Tensor table = at::tensor(std::vector<float>(codes.begin(), codes.end()));
    at::Tensor bytes = q.codes.to(at::kLong);
    at::Tensor index = at::stack({bytes.div(16, "floor"), bytes.remainder(16)}, 1).view({-1});
    at::Tensor absmax = double_quant ? DecodedAbsmax(q).to(at::kFloat) : q.absmax;
    at::Tensor expected =
        (table.index_select(0, index).view({-1, kNf4BlockSize}) * absmax.unsqueeze(1))
            .view({-1})
            .slice(0, 0, w.numel())
            .view(w.sizes());
    for (bool vector : {true, false}) {
      SetDequantizeVectorKernelsEnabled(vector);
      at::Tensor f32 = Dequantize(q, at::kFloat);
      at::Tensor bf16 = Dequantize(q, at::kBFloat16);
      SetDequantizeVectorKernelsEnabled(true);
      ASSERT_EQ(f32.sizes(), w.sizes());
      EXPECT_LT((f32 - expected).abs().max().item<double>(), 1e-7 * w.abs().max().item<double>())
          << "vector " << vector << " double_quant " << double_quant;
      EXPECT_TRUE(at::equal(bf16, f32.to(at::kBFloat16)))
          << "vector " << vector << " double_quant " << double_quant;
    }
  }
}

TEST(Int8Test, CpuDecoderMatchesLibTorchInBothKernelsAndDtypes) {
  at::manual_seed(13);
  at::Tensor w = at::randn({37, 1001}) * 0.05;  // rows not a multiple of 16 lanes
  w.slice(0, 3, 4).zero_();
  QuantizedTensor q = Quantize(w, BaseQuantization::kInt8);
  at::Tensor expected = q.codes.to(at::kFloat) * q.absmax.div(127.0).unsqueeze(1);
  for (bool vector : {true, false}) {
    SetDequantizeVectorKernelsEnabled(vector);
    at::Tensor f32 = Dequantize(q, at::kFloat);
    at::Tensor bf16 = Dequantize(q, at::kBFloat16);
    SetDequantizeVectorKernelsEnabled(true);
    EXPECT_TRUE(at::equal(f32, expected)) << "vector " << vector;
    EXPECT_TRUE(at::equal(bf16, expected.to(at::kBFloat16))) << "vector " << vector;
  }
}

TEST(Nf4Test, DoubleQuantisationAddsOnlyASmallAbsmaxError) {
  at::manual_seed(5);
  const double sigma = 0.02;
  at::Tensor w = at::randn({512, 1000}) * sigma;  // 8000 blocks: 32 groups, the last partial
  QuantizedTensor plain = Quantize(w, BaseQuantization::kNf4, false);
  QuantizedTensor dq = Quantize(w, BaseQuantization::kNf4, true);
  ASSERT_TRUE(dq.double_quant());
  EXPECT_FALSE(dq.absmax.defined());
  EXPECT_EQ(dq.absmax_codes.numel(), 32 * kDoubleQuantBlockSize);
  EXPECT_EQ(dq.absmax_scales.numel(), 32);
  EXPECT_TRUE(at::equal(dq.codes, plain.codes));

  // Linear 8-bit rounding of the centred absmax: off by at most half a step,
  // scale / 127 / 2, per group of 256.
  at::Tensor exact = plain.absmax.to(at::kDouble);
  at::Tensor decoded = DecodedAbsmax(dq);
  at::Tensor half_step =
      dq.absmax_scales.to(at::kDouble).repeat_interleave(256).slice(0, 0, dq.num_blocks()) / 254.0;
  EXPECT_TRUE(((decoded - exact).abs() <= half_step * (1 + 1e-5) + 1e-9).all().item<bool>());
  // Gaussian block absmax values (mean 2.6 sigma) lie within about 2 sigma of
  // their mean and above about 1.6 sigma, so half a step is at most about
  // 2 / 254 / 1.6 = 0.5% of an absmax, and a quarter step (the mean rounding
  // error) about 0.12% on average. Measured over 4096 x 4096 weights: 0.55%
  // and 0.12%.
  at::Tensor relative = (decoded - exact).abs() / exact;
  EXPECT_LT(relative.max().item<double>(), 0.008);
  EXPECT_LT(relative.mean().item<double>(), 0.002);

  // The weights' round-trip error barely moves.
  const double mae_plain = (Dequantize(plain, at::kFloat) - w).abs().mean().item<double>();
  const double mae_dq = (Dequantize(dq, at::kFloat) - w).abs().mean().item<double>();
  EXPECT_LT(mae_dq, mae_plain * 1.01);
}

TEST(QuantizeTest, StorageIsAboutHalfAByteOrOneBytePerWeight) {
  at::Tensor w = at::randn({256, 1024});  // 262144 weights, 4096 blocks, 16 groups
  const double n = static_cast<double>(w.numel());
  // NF4: 4 bits per weight + an fp32 absmax per 64 weights.
  EXPECT_EQ(Quantize(w, BaseQuantization::kNf4, false).bytes() / n, 0.5 + 4.0 / 64);
  // Double quantisation: 8 bits per 64 weights + an fp32 scale per 64 * 256
  // weights (0.127 bits per weight) + the 4-byte offset.
  EXPECT_EQ(Quantize(w, BaseQuantization::kNf4, true).bytes(),
            static_cast<int64_t>(n / 2 + n / 64 + 4 * 16 + 4));
  // INT8: one byte per weight + an fp32 absmax per row.
  EXPECT_EQ(Quantize(w, BaseQuantization::kInt8).bytes(), static_cast<int64_t>(n + 4 * 256));
  EXPECT_EQ(Quantize(w, BaseQuantization::kNone).bytes(), static_cast<int64_t>(n * 4));
}

TEST(Int8Test, RoundTripErrorIsAtMostHalfAStepPerRow) {
  at::manual_seed(6);
  at::Tensor w = at::randn({64, 300}) * at::rand({64, 1}) * 0.1;
  QuantizedTensor q = Quantize(w.to(at::kBFloat16), BaseQuantization::kInt8);
  ASSERT_EQ(q.codes.scalar_type(), at::kChar);
  ASSERT_EQ(q.absmax.sizes(), at::IntArrayRef({64}));
  at::Tensor wb = w.to(at::kBFloat16).to(at::kDouble);
  at::Tensor err = (Dequantize(q, at::kDouble) - wb).abs();
  at::Tensor bound = wb.abs().amax(1, true) / 127.0 / 2.0 * (1 + 1e-5);
  EXPECT_TRUE((err <= bound).all().item<bool>());
  EXPECT_LE(q.codes.abs().max().item<int>(), 127);
}

TEST(QuantizeTest, RejectsNonFiniteAndNonMatrixWeights) {
  at::Tensor w = at::randn({4, 64});
  w[2][5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(Quantize(w, BaseQuantization::kNf4), c10::Error);
  w[2][5] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(Quantize(w, BaseQuantization::kInt8), c10::Error);
  EXPECT_THROW(Quantize(at::randn({64}), BaseQuantization::kNf4), c10::Error);
  EXPECT_THROW(Quantize(at::ones({4, 4}, at::kInt), BaseQuantization::kNf4), c10::Error);
}

TEST(QuantizedLinearTest, ForwardAndGradXMatchTheDenseLayer) {
  at::manual_seed(7);
  for (BaseQuantization kind : {BaseQuantization::kNf4, BaseQuantization::kInt8}) {
    QuantizedTensor q = Quantize(at::randn({96, 130}) * 0.05, kind, /*double_quant=*/true);
    at::Tensor dense = Dequantize(q, at::kFloat);
    at::Tensor bias = at::randn({96});
    at::Tensor x = at::randn({2, 3, 130}).requires_grad_();
    at::Tensor x_ref = x.detach().clone().requires_grad_();
    at::Tensor grad_y = at::randn({2, 3, 96});

    at::Tensor y = QuantizedLinear(x, q, bias);
    at::Tensor y_ref = at::linear(x_ref, dense, bias);
    ASSERT_EQ(y.sizes(), y_ref.sizes());
    EXPECT_TRUE(at::allclose(y, y_ref, 1e-5, 1e-6)) << BaseQuantizationName(kind);
    (y * grad_y).sum().backward();
    (y_ref * grad_y).sum().backward();
    EXPECT_TRUE(at::allclose(x.grad(), x_ref.grad(), 1e-5, 1e-6)) << BaseQuantizationName(kind);

    // Without a gradient to x there is no graph at all.
    EXPECT_FALSE(QuantizedLinear(x.detach(), q, bias).requires_grad());
  }
}

TEST(QuantizedLinearTest, LoraGradientsMatchThoseWithADenseFrozenBase) {
  // Two layers, each a frozen base plus a trainable LoRA branch B A x; the
  // input needs no gradient, so layer 1's adapter gets its gradient through
  // layer 2's quantised backward.
  at::manual_seed(8);
  const int64_t d = 128, r = 4;
  QuantizedTensor q1 = Quantize(at::randn({d, d}) * 0.05, BaseQuantization::kNf4, true);
  QuantizedTensor q2 = Quantize(at::randn({d, d}) * 0.05, BaseQuantization::kNf4, true);
  at::Tensor w1 = Dequantize(q1, at::kFloat), w2 = Dequantize(q2, at::kFloat);
  at::Tensor x = at::randn({5, d});
  std::vector<at::Tensor> init = {at::randn({r, d}) * 0.1, at::randn({d, r}) * 0.1,
                                  at::randn({r, d}) * 0.1, at::randn({d, r}) * 0.1};

  auto run = [&](bool quantized) {
    std::vector<at::Tensor> p;
    for (const at::Tensor& t : init) p.push_back(t.clone().requires_grad_());
    at::Tensor h = (quantized ? QuantizedLinear(x, q1, at::Tensor()) : at::linear(x, w1)) +
                   at::linear(at::linear(x, p[0]), p[1]);
    h = at::gelu(h);
    at::Tensor y = (quantized ? QuantizedLinear(h, q2, at::Tensor()) : at::linear(h, w2)) +
                   at::linear(at::linear(h, p[2]), p[3]);
    y.pow(2).sum().backward();
    std::vector<at::Tensor> grads;
    for (const at::Tensor& t : p) grads.push_back(t.grad());
    return grads;
  };
  std::vector<at::Tensor> got = run(true), want = run(false);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].defined()) << "LoRA weight " << i;
    EXPECT_TRUE(at::allclose(got[i], want[i], 1e-5, 1e-6)) << "LoRA weight " << i;
  }
}

TEST(QuantizedLinearTest, Bf16InputComputesInBf16) {
  at::manual_seed(9);
  QuantizedTensor q = Quantize(at::randn({64, 96}), BaseQuantization::kNf4);
  at::Tensor bias = at::randn({64});  // fp32, converted to x's dtype
  at::Tensor x = at::randn({4, 96}).to(at::kBFloat16).requires_grad_();
  at::Tensor y = QuantizedLinear(x, q, bias);
  ASSERT_EQ(y.scalar_type(), at::kBFloat16);
  at::Tensor dense = Dequantize(q, at::kFloat).to(at::kBFloat16);
  EXPECT_TRUE(at::equal(Dequantize(q, at::kBFloat16), dense));
  at::Tensor y_ref = at::linear(x.detach(), dense, bias.to(at::kBFloat16));
  EXPECT_TRUE(at::allclose(y.to(at::kFloat), y_ref.to(at::kFloat), 1e-2, 1e-2));
  y.to(at::kFloat).sum().backward();
  ASSERT_EQ(x.grad().scalar_type(), at::kBFloat16);
  at::Tensor grad_ref = at::ones({4, 64}, at::kBFloat16).matmul(dense);
  EXPECT_TRUE(at::allclose(x.grad().to(at::kFloat), grad_ref.to(at::kFloat), 1e-2, 1e-2));
}

}  // namespace
}  // namespace switchyard::model
