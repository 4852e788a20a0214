// Configs, adapter configs and PEFT files, the loss, and `model init`.
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "shared/core/file_util.h"
#include "shared/model/config.h"
#include "shared/model/cpu_allocator.h"
#include "shared/model/decode_attention.h"
#include "shared/model/decoder.h"
#include "shared/model/encoder.h"
#include "shared/model/gemv.h"
#include "shared/model/init.h"
#include "shared/model/lora.h"
#include "shared/model/lora_linear.h"
#include "shared/model/loss.h"
#include "tests/unit/shared/model/model_testing.h"

namespace switchyard::model {
namespace {

using testing::FixtureDir;
using ::testing::HasSubstr;
using testing::RelativeError;

TEST(ModelConfigTest, ReadsEveryFixtureArchitecture) {
  auto llama = LoadModelConfig(FixtureDir("llama"));
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->arch, Architecture::kLlama);
  EXPECT_EQ(llama->num_kv_heads, 2);
  EXPECT_EQ(llama->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_TRUE(llama->tie_word_embeddings);
  auto qwen = LoadModelConfig(FixtureDir("qwen2"));
  ASSERT_TRUE(qwen.ok());
  EXPECT_TRUE(qwen->attention_bias);
  EXPECT_FALSE(qwen->output_bias);
  EXPECT_FALSE(qwen->sliding_window.has_value());  // use_sliding_window false
  auto gpt2 = LoadModelConfig(FixtureDir("gpt2"));
  ASSERT_TRUE(gpt2.ok());
  EXPECT_EQ(gpt2->intermediate_size, 128);
  EXPECT_EQ(gpt2->activation, Activation::kGeluTanh);
  auto mistral = LoadModelConfig(FixtureDir("mistral"));
  ASSERT_TRUE(mistral.ok());
  EXPECT_EQ(mistral->torch_dtype, "bfloat16");
  auto bert = LoadModelConfig(FixtureDir("bert"));
  ASSERT_TRUE(bert.ok());
  EXPECT_FALSE(bert->is_decoder());
}

TEST(ModelConfigTest, ErrorsNameTheField) {
  EXPECT_THAT(ParseModelConfig(R"({"model_type": "t5"})").status().message(),
              HasSubstr("\"model_type\" \"t5\" is not supported"));
  EXPECT_THAT(ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 6, "intermediate_size": 8})")
                  .status()
                  .message(),
              HasSubstr("\"num_attention_heads\" (6) must divide \"hidden_size\" (64)"));
  EXPECT_THAT(ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3,
      "intermediate_size": 8})")
                  .status()
                  .message(),
              HasSubstr("\"num_key_value_heads\" (3) must divide"));
  EXPECT_THAT(ParseModelConfig(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8,
      "rope_scaling": {"rope_type": "yarn", "factor": 4}})")
                  .status()
                  .message(),
              HasSubstr("\"yarn\" is not supported"));
  EXPECT_THAT(ParseModelConfig(R"({"model_type": "llama", "hidden_size": 64})").status().message(),
              HasSubstr("\"vocab_size\" is required"));
}

TEST(ModelConfigTest, JsonRoundTripsThroughTheParser) {
  for (const char* fixture : {"gpt2", "llama", "llama-untied", "mistral", "qwen2", "bert"}) {
    auto c = LoadModelConfig(FixtureDir(fixture));
    ASSERT_TRUE(c.ok());
    auto again = ParseModelConfig(ModelConfigToJson(*c).dump());
    ASSERT_TRUE(again.ok()) << fixture << ": " << again.status();
    EXPECT_EQ(ModelConfigToJson(*again).dump(), ModelConfigToJson(*c).dump()) << fixture;
    EXPECT_EQ(again->NumParameters(), c->NumParameters());
  }
}

TEST(AdapterConfigTest, ReadsPeftFieldsAndRefusesWhatItCannotRun) {
  auto c = ParseAdapterConfig(
      R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
          "use_rslora": true, "layers_to_transform": [1], "rank_pattern": {}, "use_dora": false})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_DOUBLE_EQ(c->Scale(), 16 / std::sqrt(8.0));
  EXPECT_TRUE(c->Targets("model.layers.1.self_attn.q_proj", 1));
  EXPECT_FALSE(c->Targets("model.layers.0.self_attn.q_proj", 0));
  EXPECT_FALSE(c->Targets("model.layers.1.self_attn.k_proj", 1));
  auto regex = ParseAdapterConfig(R"({"r": 4, "target_modules": ".*\\.(q|v)_proj"})");
  ASSERT_TRUE(regex.ok());
  EXPECT_TRUE(regex->Targets("model.layers.3.self_attn.v_proj", 3));
  EXPECT_FALSE(regex->Targets("model.layers.3.self_attn.o_proj", 3));
  EXPECT_THAT(ParseAdapterConfig(R"({"r": 4, "target_modules": ["q"], "use_dora": true})")
                  .status()
                  .message(),
              HasSubstr("\"use_dora\" is set"));
  EXPECT_THAT(
      ParseAdapterConfig(R"({"peft_type": "IA3", "target_modules": ["q"]})").status().message(),
      HasSubstr("only LORA"));
  EXPECT_THAT(ParseAdapterConfig(R"({"r": 0, "target_modules": ["q"]})").status().message(),
              HasSubstr("\"r\" must be a positive integer"));
}

TEST(PeftFilesTest, AdaptersRoundTrip) {
  for (const char* name : {"llama-qv", "llama-all-rslora", "gpt2-attn", "qwen2-qv"}) {
    auto adapter =
        LoadPeftAdapter(FixtureDir(std::string("adapters/") + name), at::kFloat, at::kCPU);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    const std::string dir = ::testing::TempDir() + "/peft-" + RandomHex(4);
    ASSERT_TRUE(SavePeftAdapter(*adapter, dir, at::kFloat).ok());
    auto again = LoadPeftAdapter(dir, at::kFloat, at::kCPU);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(AdapterConfigToJson(again->config).dump(),
              AdapterConfigToJson(adapter->config).dump());
    ASSERT_EQ(again->modules.size(), adapter->modules.size());
    for (const auto& [path, w] : adapter->modules) {
      EXPECT_TRUE(at::equal(again->modules[path].a, w.a)) << path;
      EXPECT_TRUE(at::equal(again->modules[path].b, w.b)) << path;
    }
    RemoveAll(dir).IgnoreError();
  }
}

TEST(PeftFilesTest, TrainedAdapterSavesInPeftLayoutAndServesTheSame) {
  auto lm = CausalLm::Load(FixtureDir("qwen2"), {});
  ASSERT_TRUE(lm.ok());
  LoraConfig config;
  config.r = 2;
  config.alpha = 4;
  config.target_modules = {"o_proj", "down_proj"};
  auto id = (*lm)->CreateAdapter("mine", config, 9);
  ASSERT_TRUE(id.ok());
  {
    at::NoGradGuard no_grad;
    auto params = (*lm)->AdapterParameters("mine");
    ASSERT_TRUE(params.ok());
    for (at::Tensor& t : *params) t.normal_(0, 0.2);
  }
  auto exported = (*lm)->ExportAdapter("mine");
  ASSERT_TRUE(exported.ok());
  const std::string dir = ::testing::TempDir() + "/mine-" + RandomHex(4);
  ASSERT_TRUE(SavePeftAdapter(*exported, dir, at::kFloat).ok());
  auto file = tensors::SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  ASSERT_TRUE(file.ok());
  const tensors::TensorInfo* a =
      (*file)->header().Find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 128}));
  EXPECT_EQ((*file)->header().metadata.at("format"), "pt");
  auto loaded = LoadPeftAdapter(dir, at::kFloat, at::kCPU);
  ASSERT_TRUE(loaded.ok());
  auto other = (*lm)->AddAdapter("loaded", *loaded);
  ASSERT_TRUE(other.ok());
  c10::InferenceMode guard;
  DecoderInput in;
  in.input_ids = at::arange(10, at::kLong).view({1, 10});
  in.adapters = {*id};
  at::Tensor trained = *(*lm)->Forward(in);
  in.adapters = {*other};
  // The same up to rounding: a frozen adapter takes the per-row inference
  // kernel, a trainable one LibTorch's products.
  EXPECT_LT(RelativeError(*(*lm)->Forward(in), trained), 1e-6);
  RemoveAll(dir).IgnoreError();
}

TEST(LossTest, LabelsNeverCrossSegmentsOrPadding) {
  at::Tensor ids = at::tensor(std::vector<int64_t>{5, 6, 7, 8, 9, 0}).view({1, 6});
  at::Tensor seg = at::tensor(std::vector<int64_t>{0, 0, 0, 1, 1, -1}).view({1, 6});
  at::Tensor labels = NextTokenLabels(ids, seg, at::Tensor());
  EXPECT_TRUE(
      at::equal(labels, at::tensor(std::vector<int64_t>{6, 7, -100, 9, -100, -100}).view({1, 6})));
  at::Tensor trained = at::tensor(std::vector<int64_t>{0, 0, 1, 0, 1, 0}).view({1, 6});
  labels = NextTokenLabels(ids, seg, trained);
  EXPECT_TRUE(at::equal(
      labels, at::tensor(std::vector<int64_t>{-100, 7, -100, 9, -100, -100}).view({1, 6})));
}

TEST(LossTest, CrossEntropyCountsOnlyLabelledPositions) {
  at::Tensor logits = at::randn({2, 3, 5});
  at::Tensor labels = at::tensor(std::vector<int64_t>{1, -100, 4, -100, -100, 0}).view({2, 3});
  LossOutput out = CausalLmLoss(logits, labels);
  at::Tensor lp = at::log_softmax(logits, -1);
  double expected = -(lp[0][0][1] + lp[0][2][4] + lp[1][2][0]).item<double>() / 3;
  EXPECT_NEAR(out.loss.item<double>(), expected, 1e-6);
  EXPECT_EQ(out.tokens.item<int64_t>(), 3);
  at::Tensor lps = LabelLogProbs(logits, labels);
  EXPECT_NEAR(lps[0][2].item<double>(), lp[0][2][4].item<double>(), 1e-6);
  EXPECT_EQ(lps[0][1].item<double>(), 0.0);
  LossOutput none = CausalLmLoss(logits, at::full({2, 3}, -100, at::kLong));
  EXPECT_EQ(none.tokens.item<int64_t>(), 0);
  EXPECT_EQ(none.loss.item<double>(), 0.0);
}

class InitTest : public ::testing::TestWithParam<Architecture> {};

TEST_P(InitTest, WritesACheckpointThatLoadsAndRuns) {
  const std::string dir = ::testing::TempDir() + "/init-" + RandomHex(4);
  InitOptions o;
  o.arch = GetParam();
  o.layers = 2;
  o.hidden = 32;
  o.heads = 4;
  o.kv_heads = (o.arch == Architecture::kGpt2 || o.arch == Architecture::kBert) ? 0 : 2;
  o.seed = 1;
  if (o.arch == Architecture::kBert)
    o.vocab_from = std::string(SWITCHYARD_TEST_DATA_DIR) + "/text/bert-uncased";
  absl::Status s = InitCheckpoint(o, dir);
  ASSERT_TRUE(s.ok()) << s;
  auto config = LoadModelConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->hidden_size, 32);
  c10::InferenceMode guard;
  if (o.arch == Architecture::kBert) {
    auto encoder = BertEncoder::Load(dir, {});
    ASSERT_TRUE(encoder.ok()) << encoder.status();
    auto e = (*encoder)->Embed(at::ones({1, 4}, at::kLong), at::ones({1, 4}, at::kLong));
    ASSERT_TRUE(e.ok());
    EXPECT_NEAR(e->norm().item<double>(), 1.0, 1e-5);
  } else {
    auto lm = CausalLm::Load(dir, {});
    ASSERT_TRUE(lm.ok()) << lm.status();
    EXPECT_EQ((*lm)->config().vocab_size, 259);
    DecoderInput in;
    in.input_ids = at::arange(6, at::kLong).view({1, 6});
    auto logits = (*lm)->Forward(in);
    ASSERT_TRUE(logits.ok());
    EXPECT_EQ(logits->size(2), 259);
    // Same seed, same weights.
    const std::string again = dir + "-again";
    ASSERT_TRUE(InitCheckpoint(o, again).ok());
    EXPECT_EQ(*ReadFile(dir + "/model.safetensors"), *ReadFile(again + "/model.safetensors"));
    RemoveAll(again).IgnoreError();
  }
  EXPECT_EQ(InitCheckpoint(o, dir).code(), absl::StatusCode::kAlreadyExists);
  RemoveAll(dir).IgnoreError();
}

INSTANTIATE_TEST_SUITE_P(Architectures, InitTest,
                         ::testing::Values(Architecture::kGpt2, Architecture::kLlama,
                                           Architecture::kMistral, Architecture::kQwen2,
                                           Architecture::kBert),
                         [](const auto& info) {
                           return std::string(ArchitectureName(info.param));
                         });

TEST(InitTest, BadShapesNameTheFlag) {
  InitOptions o;
  o.hidden = 64;
  o.heads = 5;
  EXPECT_THAT(InitCheckpoint(o, ::testing::TempDir() + "/x").message(),
              HasSubstr("--heads (5) must divide --hidden (64)"));
  o.heads = 4;
  o.kv_heads = 3;
  EXPECT_THAT(InitCheckpoint(o, ::testing::TempDir() + "/x").message(),
              HasSubstr("--kv-heads (3)"));
}

}  // namespace
}  // namespace switchyard::model

namespace switchyard::model {
namespace {

TEST(SmallBatchLinearTest, MatchesAtLinearForEveryRowCountAndDtype) {
  c10::InferenceMode guard;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (int64_t in : {7, 64, 203}) {
      at::Tensor w = at::randn({37, in}).to(dtype);
      at::Tensor b = at::randn({37}).to(dtype);
      const int64_t max_rows = SmallBatchLinearMaxRows(dtype);
      for (int64_t m = 1; m <= max_rows; m += m < 10 ? 1 : 7) {
        at::Tensor x = at::randn({m, 1, in}).to(dtype);
        ASSERT_TRUE(UseSmallBatchLinear(x, w, b));
        at::Tensor ours = SmallBatchLinear(x, w, b);
        at::Tensor ref = at::linear(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat));
        EXPECT_EQ(ours.sizes(), ref.sizes());
        EXPECT_LT(RelativeError(ours, ref), dtype == at::kFloat ? 1e-6 : 1e-2) << m << " " << in;
      }
      EXPECT_FALSE(UseSmallBatchLinear(at::randn({max_rows + 1, in}).to(dtype), w, b));
    }
  }
}

}  // namespace
}  // namespace switchyard::model

namespace switchyard::model {
namespace {

// Where the kernel takes more than kGemvMaxRows (fp32 on AVX-512 CPUs, bf16
// on AVX-512 BF16 ones), a row's result does not depend on how many rows come
// with it: a sequence decodes bit-identically batched or alone.
TEST(SmallBatchLinearTest, RowResultsDoNotDependOnTheRowCount) {
  c10::InferenceMode guard;
  int tested = 0;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    const int64_t max_rows = SmallBatchLinearMaxRows(dtype);
    if (max_rows <= kGemvMaxRows) continue;
    ++tested;
    at::Tensor w = at::randn({61, 203}).to(dtype);
    at::Tensor x = at::randn({max_rows, 203}).to(dtype);
    at::Tensor all = SmallBatchLinear(x, w, at::Tensor());
    for (int64_t m : {1, 3, 8, 9, 17}) {
      at::Tensor some = SmallBatchLinear(x.narrow(0, 0, m), w, at::Tensor());
      EXPECT_TRUE(at::equal(some, all.narrow(0, 0, m))) << m << " " << dtype;
    }
  }
  if (tested == 0) GTEST_SKIP() << "no AVX-512";
}

// Packed serving weights: any row count (past the dot-product kernel's 512
// too), odd widths and a last panel of fewer than 64 outputs; the weight
// unpacks bit for bit; each row's result is the same whatever rows come with
// it and however many threads run.
TEST(PackedLinearTest, MatchesAtLinearAndRowsAreIndependent) {
  c10::InferenceMode guard;
  int tested = 0;
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    if (!CanPackWeight(at::zeros({2, 2}, dtype))) continue;
    ++tested;
    for (auto [out, in] : {std::pair<int64_t, int64_t>{37, 7}, {64, 64}, {150, 203}, {130, 600}}) {
      at::Tensor w = at::randn({out, in}).to(dtype);
      at::Tensor b = at::randn({out}).to(dtype);
      const PackedWeight packed = PackWeight(w);
      EXPECT_EQ(packed.out, out);
      EXPECT_EQ(packed.in, in);
      EXPECT_TRUE(at::equal(UnpackWeight(packed), w)) << out << "x" << in;
      at::Tensor x = at::randn({530, in}).to(dtype);
      at::Tensor all = PackedLinear(x, packed, b);
      at::Tensor ref = at::linear(x.to(at::kFloat), w.to(at::kFloat), b.to(at::kFloat));
      EXPECT_EQ(all.scalar_type(), dtype);
      // One running sum per output in k order: fp32 rounding grows like
      // sqrt(in) (~1e-6 at 600), where a blocked product stays nearer 1e-7.
      EXPECT_LT(RelativeError(all, ref), dtype == at::kFloat ? 5e-6 : 1e-2) << out << "x" << in;
      for (int64_t m : {1, 2, 5, 6, 7, 16, 97}) {
        at::Tensor some = PackedLinear(x.narrow(0, 0, m).view({m, 1, in}), packed, b);
        EXPECT_EQ(some.sizes(), (std::vector<int64_t>{m, 1, out}));
        EXPECT_TRUE(at::equal(some.view({m, out}), all.narrow(0, 0, m))) << m << " " << dtype;
      }
      const int threads = at::get_num_threads();
      at::set_num_threads(1);
      at::Tensor one_thread = PackedLinear(x, packed, b);
      at::set_num_threads(threads);
      EXPECT_TRUE(at::equal(one_thread, all)) << dtype;
    }
  }
  if (tested == 0) GTEST_SKIP() << "no AVX-512";
}

TEST(PackedLinearTest, RefusesAutogradAndWrongWidths) {
  if (!CanPackWeight(at::zeros({2, 2}))) GTEST_SKIP() << "no AVX-512";
  const PackedWeight packed = PackWeight(at::randn({8, 16}));
  EXPECT_FALSE(CanPackWeight(at::randn({8, 16}).requires_grad_()));
  EXPECT_FALSE(CanPackWeight(at::randn({8, 16}).to(at::kDouble)));
  EXPECT_THROW(PackedLinear(at::randn({2, 16}).requires_grad_(), packed, at::Tensor()), c10::Error);
  EXPECT_THROW(PackedLinear(at::randn({2, 15}), packed, at::Tensor()), c10::Error);
}

TEST(SmallBatchLinearTest, LoraRowsAddMatchesTheLinearProducts) {
  c10::InferenceMode guard;
  if (!LoraRowsKernelAvailable()) GTEST_SKIP() << "no AVX-512";
  for (int64_t r : {1, 7, 16, 20}) {
    at::Tensor x = at::randn({5, 203}), a = at::randn({r, 203}), b = at::randn({61, r});
    at::Tensor y = at::randn({5, 61});
    at::Tensor want = y.clone();
    const std::vector<int64_t> rows = {0, 2, 4};
    for (int64_t i : rows) want[i] += at::linear(at::linear(x[i], a), b) * 0.5;
    at::Tensor bt = b.t().contiguous();
    LoraRowsAdd(x, y, a, bt, 0.5, rows);
    EXPECT_LT(RelativeError(y, want), 1e-5) << "r " << r;
    EXPECT_TRUE(at::equal(y[1], want[1]));  // rows not listed are untouched
  }
}

// softmax(scale q.k + mask) v per head, the way LibTorch's path computes it,
// in fp64 from the same (rounded) inputs.
at::Tensor ReferenceDecodeAttention(const at::Tensor& q, const at::Tensor& keys,
                                    const at::Tensor& values, int64_t length,
                                    const at::Tensor& mask, double scale) {
  const int64_t B = q.size(0), H = q.size(2), D = q.size(3), KV = keys.size(1);
  at::Tensor qd = q.to(at::kDouble).view({B, H, 1, D});
  at::Tensor k = keys.narrow(0, 0, B).narrow(2, 0, length).to(at::kDouble);
  at::Tensor v = values.narrow(0, 0, B).narrow(2, 0, length).to(at::kDouble);
  k = k.repeat_interleave(H / KV, 1);  // (B, H, S, D)
  v = v.repeat_interleave(H / KV, 1);
  at::Tensor scores = at::matmul(qd, k.transpose(-1, -2)) * scale;  // (B, H, 1, S)
  if (mask.defined()) scores = scores + mask.to(at::kDouble).view({B, 1, 1, length});
  return at::matmul(at::softmax(scores, -1), v).view({B, 1, H * D});
}

TEST(DecodeAttentionTest, MatchesSoftmaxAttentionForEveryShapeAndDtype) {
  c10::InferenceMode guard;
  at::manual_seed(7);
  at::Tensor probe = at::zeros({1, 1, 2, 16});
  if (!UseDecodeAttention(probe, at::zeros({1, 2, 4, 16}), at::zeros({1, 2, 4, 16}))) {
    GTEST_SKIP() << "no AVX-512";
  }
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    for (auto [heads, kv_heads, dim] :
         std::vector<std::array<int64_t, 3>>{{4, 4, 64}, {4, 2, 20}, {6, 2, 8}, {2, 1, 128}}) {
      const int64_t B = 3, rows = 5, capacity = 40, S = 37;
      at::Tensor q = at::randn({B, 1, heads, dim}).to(dtype);
      at::Tensor keys = at::randn({rows, kv_heads, capacity, dim}).to(dtype);
      at::Tensor values = at::randn({rows, kv_heads, capacity, dim}).to(dtype);
      // Row 0 sees everything, row 1 its last 20 positions (left padding),
      // row 2 every other position.
      at::Tensor mask = at::zeros({B, 1, 1, 1, S});
      mask[1].narrow(-1, 0, S - 20).fill_(-1e30);
      for (int64_t p = 0; p < S; p += 2) mask[2][0][0][0][p] = -1e30;
      const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
      ASSERT_TRUE(UseDecodeAttention(q, keys, values));
      for (const at::Tensor& m : {mask, at::Tensor()}) {
        at::Tensor ours = DecodeAttention(q, keys, values, S, m, scale);
        EXPECT_EQ(ours.scalar_type(), dtype);
        at::Tensor want = ReferenceDecodeAttention(q, keys, values, S, m, scale);
        EXPECT_LT(RelativeError(ours.to(at::kDouble), want), dtype == at::kFloat ? 1e-5 : 1e-2)
            << heads << "/" << kv_heads << " x " << dim << " " << dtype;
      }
    }
  }
}

TEST(DecodeAttentionTest, ARowWithEveryPositionMaskedGivesZeros) {
  c10::InferenceMode guard;
  at::Tensor q = at::randn({2, 1, 2, 16}), keys = at::randn({2, 2, 8, 16});
  at::Tensor values = at::randn({2, 2, 8, 16});
  if (!UseDecodeAttention(q, keys, values)) GTEST_SKIP() << "no AVX-512";
  at::Tensor mask = at::zeros({2, 8});
  mask[1].fill_(-1e30);
  at::Tensor out = DecodeAttention(q, keys, values, 8, mask, 0.25);
  EXPECT_TRUE(at::equal(out[1], at::zeros_like(out[1])));
  EXPECT_LT(RelativeError(out[0].to(at::kDouble),
                          ReferenceDecodeAttention(q, keys, values, 8, mask, 0.25)[0]),
            1e-5);
}

// Decoding through the kernel gives the logits LibTorch's attention gives.
TEST(DecodeAttentionTest, CachedDecodingMatchesTheLibTorchPath) {
  c10::InferenceMode guard;
  if (!UseDecodeAttention(at::zeros({1, 1, 2, 16}), at::zeros({1, 2, 4, 16}),
                          at::zeros({1, 2, 4, 16}))) {
    GTEST_SKIP() << "no AVX-512";
  }
  for (Architecture arch : {Architecture::kLlama, Architecture::kGpt2}) {
    const std::string dir = ::testing::TempDir() + "/decode-attention-" + RandomHex(4);
    InitOptions o;
    o.arch = arch;
    o.hidden = 64;
    o.heads = 4;
    o.kv_heads = arch == Architecture::kGpt2 ? 0 : 2;
    o.seed = 3;
    ASSERT_TRUE(InitCheckpoint(o, dir).ok());
    auto loaded = CausalLm::Load(dir, {});
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    const std::unique_ptr<CausalLm>& lm = *loaded;
    auto decode = [&] {
      auto cache = KvCache::Create(lm->config(), 2, 16, lm->dtype(), lm->device());
      EXPECT_TRUE(cache.ok());
      DecoderInput in;
      in.input_ids = at::tensor({5, 6, 7, 8, 9, 10}, at::kLong).view({2, 3});
      in.segment_ids = at::tensor({-1, 0, 0, 0, 0, 0}, at::kLong).view({2, 3});  // left padding
      EXPECT_TRUE(lm->Forward(in, &*cache).ok());
      std::vector<at::Tensor> steps;
      for (int64_t t = 0; t < 4; ++t) {
        DecoderInput next;
        next.input_ids = at::tensor({11 + t, 20 + t}, at::kLong).view({2, 1});
        steps.push_back(*lm->Forward(next, &*cache));
      }
      return at::cat(steps, 1);
    };
    at::Tensor ours = decode();
    SetDecodeAttentionEnabled(false);
    at::Tensor libtorch = decode();
    SetDecodeAttentionEnabled(true);
    EXPECT_LT(RelativeError(ours, libtorch), 1e-5) << static_cast<int>(arch);
    RemoveAll(dir).IgnoreError();
  }
}

// Frozen adapters in fp32 and bf16 go through the per-row kernel; rows of
// one batch take their own adapter's delta (or none), as the plain products.
TEST(LoraLinearTest, RowKernelMatchesTheTensorPathInBothDtypes) {
  c10::InferenceMode guard;
  if (!LoraRowsKernelAvailable()) GTEST_SKIP() << "no AVX-512";
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    LoraLinear linear("proj");
    linear.weight() = at::randn({48, 40}).to(dtype);
    for (int id : {0, 1}) {
      linear.AddAdapter(id, at::randn({8, 40}).to(dtype), at::randn({48, 8}).to(dtype), 0.5, 0.0);
    }
    at::Tensor x = at::randn({4, 3, 40}).to(dtype);  // 4 batch rows of 3 tokens
    AdapterRouting routing;
    routing.groups.push_back({0, false, at::tensor({0, 2}, at::kLong)});
    routing.groups.push_back({1, false, at::tensor({3}, at::kLong)});
    at::Tensor ours = linear.Forward(x, routing);
    at::Tensor want = at::linear(x.to(at::kDouble), linear.weight().to(at::kDouble));
    for (const auto& [id, rows] :
         std::vector<std::pair<int, std::vector<int64_t>>>{{0, {0, 2}}, {1, {3}}}) {
      auto [a, b] = linear.AdapterWeights(id);
      for (int64_t r : rows) {
        want[r] +=
            at::linear(at::linear(x[r].to(at::kDouble), a.to(at::kDouble)), b.to(at::kDouble)) *
            0.5;
      }
    }
    EXPECT_EQ(ours.scalar_type(), dtype);
    EXPECT_LT(RelativeError(ours, want), dtype == at::kFloat ? 1e-5 : 1e-2) << dtype;
  }
}

TEST(CachingCpuAllocatorTest, ReusesLargeBlocksAndPassesSmallOnesThrough) {
  InstallCachingCpuAllocator(size_t{64} << 20);
  void* first = nullptr;
  {
    at::Tensor big = at::empty({4 << 20}, at::kFloat);  // 16 MiB
    first = big.data_ptr();
    big.fill_(1);
  }
  EXPECT_GE(CachedCpuBytes(), size_t{16} << 20);
  at::Tensor again = at::empty({4 << 20}, at::kFloat);
  EXPECT_EQ(again.data_ptr(), first);  // the same block, no new pages
  at::Tensor smaller = at::empty({(4 << 20) - 1000}, at::kFloat);
  EXPECT_NE(smaller.data_ptr(), first);
  at::Tensor tiny = at::ones({10});
  EXPECT_EQ(tiny.sum().item<float>(), 10.0f);
  // Past the budget, freed blocks go back to the system.
  InstallCachingCpuAllocator(0);
  again = at::Tensor();
  smaller = at::Tensor();
  EXPECT_LE(CachedCpuBytes(), size_t{32} << 20);
}

}  // namespace
}  // namespace switchyard::model
