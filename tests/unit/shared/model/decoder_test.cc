// CausalLm against the stored outputs of the independent reference
// (tools/model/reference.py), and its own invariants: KV-cache decoding equals
// the full forward, packed rows equal separate rows, merged adapters equal
// unmerged ones, several adapters in one batch equal one at a time.
#include "shared/model/decoder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "shared/model/generate.h"
#include "shared/model/runtime.h"
#include "tests/unit/shared/model/model_testing.h"

namespace switchyard::model {
namespace {

using testing::FixtureDir;
using ::testing::HasSubstr;
using testing::Reference;
using testing::RelativeError;

// fp32 against the reference's float64 run rounded to fp32; the reference's
// own fp32 run lands within 1e-6, and the subtle mistakes (wrong GELU, wrong
// norm epsilon) move the logits by ~1.6e-4.
constexpr double kParityTolerance = 1e-5;

std::unique_ptr<CausalLm> LoadOrDie(const std::string& fixture, LoadOptions options = {}) {
  auto lm = CausalLm::Load(FixtureDir(fixture), options);
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? *std::move(lm) : nullptr;
}

// The reference inputs: mask 0 becomes segment -1 (padding).
DecoderInput ReferenceInput(const std::string& fixture) {
  DecoderInput in;
  in.input_ids = Reference(fixture, "input_ids");
  in.segment_ids = at::where(Reference(fixture, "attention_mask").eq(1),
                             at::zeros_like(in.input_ids), at::full_like(in.input_ids, -1));
  in.position_ids = Reference(fixture, "position_ids");
  return in;
}

at::Tensor LogitsOrDie(const CausalLm& lm, const DecoderInput& in, KvCache* cache = nullptr) {
  auto logits = lm.Forward(in, cache);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : at::Tensor();
}

struct ParityCase {
  std::string fixture;
  std::vector<std::string> adapters;
  bool serving = false;  // loaded with LoadOptions::serving (packed weights)
};

LoadOptions Serving(bool serving) {
  LoadOptions o;
  o.serving = serving;
  return o;
}

class DecoderParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(DecoderParityTest, LogitsMatchTheReference) {
  const ParityCase& c = GetParam();
  auto lm = LoadOrDie(c.fixture, Serving(c.serving));
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  DecoderInput in = ReferenceInput(c.fixture);
  at::Tensor mask = Reference(c.fixture, "attention_mask");
  double err = RelativeError(LogitsOrDie(*lm, in), Reference(c.fixture, "logits"), mask);
  EXPECT_LT(err, kParityTolerance) << c.fixture;
  RecordProperty("max_relative_error", std::to_string(err));
}

TEST_P(DecoderParityTest, AdapterLogitsMatchTheReference) {
  const ParityCase& c = GetParam();
  auto lm = LoadOrDie(c.fixture, Serving(c.serving));
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  DecoderInput in = ReferenceInput(c.fixture);
  at::Tensor mask = Reference(c.fixture, "attention_mask");
  for (const std::string& name : c.adapters) {
    auto adapter = LoadPeftAdapter(FixtureDir("adapters/" + name), at::kFloat, at::kCPU);
    ASSERT_TRUE(adapter.ok()) << adapter.status();
    auto id = lm->AddAdapter(name, *adapter);
    ASSERT_TRUE(id.ok()) << id.status();
    in.adapters = {*id, *id};
    double err =
        RelativeError(LogitsOrDie(*lm, in), Reference(c.fixture, "logits_adapter_" + name), mask);
    EXPECT_LT(err, kParityTolerance) << c.fixture << " + " << name;
  }
}

TEST_P(DecoderParityTest, GreedyDecodingMatchesTheReference) {
  const ParityCase& c = GetParam();
  auto lm = LoadOrDie(c.fixture, Serving(c.serving));
  ASSERT_NE(lm, nullptr);
  at::Tensor prompt = Reference(c.fixture, "input_ids")[0];
  std::vector<std::string> variants = {""};
  for (const std::string& a : c.adapters) variants.push_back(a);
  for (const std::string& name : variants) {
    GenerationRequest request;
    request.prompt_ids.assign(prompt.data_ptr<int64_t>(),
                              prompt.data_ptr<int64_t>() + prompt.numel());
    request.params.temperature = 0;
    request.params.max_new_tokens = 8;
    request.params.ignore_eos = true;
    std::string expected_name = "greedy_ids";
    if (!name.empty()) {
      auto adapter = LoadPeftAdapter(FixtureDir("adapters/" + name), at::kFloat, at::kCPU);
      ASSERT_TRUE(adapter.ok()) << adapter.status();
      auto id = lm->AddAdapter(name, *adapter);
      ASSERT_TRUE(id.ok()) << id.status();
      request.adapter = *id;
      expected_name = "greedy_ids_adapter_" + name;
    }
    auto out = Generate(*lm, nullptr, {request}, {});
    ASSERT_TRUE(out.ok()) << out.status();
    at::Tensor expected = Reference(c.fixture, expected_name);
    std::vector<int64_t> want(expected.data_ptr<int64_t>(),
                              expected.data_ptr<int64_t>() + expected.numel());
    EXPECT_EQ((*out)[0].token_ids, want) << c.fixture << " " << name;
    EXPECT_EQ((*out)[0].finish_reason, "length");
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, DecoderParityTest,
    ::testing::Values(ParityCase{"gpt2", {"gpt2-attn"}},
                      ParityCase{"llama", {"llama-qv", "llama-all-rslora"}},
                      ParityCase{"llama-sharded", {"llama-qv"}}, ParityCase{"llama-untied", {}},
                      ParityCase{"mistral", {}}, ParityCase{"qwen2", {"qwen2-qv"}},
                      ParityCase{"gpt2", {"gpt2-attn"}, true},
                      ParityCase{"llama", {"llama-qv", "llama-all-rslora"}, true},
                      ParityCase{"llama-untied", {}, true},
                      ParityCase{"qwen2", {"qwen2-qv"}, true}),
    [](const ::testing::TestParamInfo<ParityCase>& info) {
      std::string name = info.param.fixture + (info.param.serving ? "_serving" : "");
      for (char& ch : name) {
        if (ch == '-') ch = '_';
      }
      return name;
    });

// Parameters: a fixture, or "fixture/serving" for it loaded as a serving
// model (packed weights), whose rows must be independent in the same way.
class DecoderInvariantTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string Fixture() const { return GetParam().substr(0, GetParam().find('/')); }
  bool ServingModel() const { return GetParam().find("/serving") != std::string::npos; }
  std::unique_ptr<CausalLm> Load() const { return LoadOrDie(Fixture(), Serving(ServingModel())); }
};

TEST_P(DecoderInvariantTest, KvCacheDecodingEqualsFullForward) {
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  DecoderInput full = ReferenceInput(Fixture());
  full.position_ids = at::Tensor();  // counted from the segments
  at::Tensor expected = LogitsOrDie(*lm, full);
  // Prefill 4 positions, then one token at a time.
  auto cache = KvCache::Create(lm->config(), 2, 16, lm->dtype(), lm->device());
  ASSERT_TRUE(cache.ok());
  std::vector<at::Tensor> pieces;
  for (int64_t start = 0; start < 9;) {
    const int64_t len = start == 0 ? 4 : 1;
    DecoderInput step;
    step.input_ids = full.input_ids.narrow(1, start, len);
    step.segment_ids = full.segment_ids.narrow(1, start, len);
    pieces.push_back(LogitsOrDie(*lm, step, &*cache));
    start += len;
  }
  EXPECT_EQ(cache->length(), 9);
  at::Tensor mask = full.segment_ids.ge(0);
  EXPECT_LT(RelativeError(at::cat(pieces, 1), expected, mask), 1e-5);
}

// A prompt's prefill riding along with a decode step (HiddenPair) gives both
// calls exactly what they get alone, caches included, with adapters per row.
TEST_P(DecoderInvariantTest, PairedCallsEqualSeparateCalls) {
  const std::string fixture = Fixture();
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  std::vector<int> decode_adapters, prompt_adapters;
  if (fixture == "llama") {
    auto qv = LoadPeftAdapter(FixtureDir("adapters/llama-qv"), at::kFloat, at::kCPU);
    auto all = LoadPeftAdapter(FixtureDir("adapters/llama-all-rslora"), at::kFloat, at::kCPU);
    ASSERT_TRUE(qv.ok() && all.ok());
    const int q = *lm->AddAdapter("qv", *qv), a = *lm->AddAdapter("all", *all);
    decode_adapters = {q, kNoAdapter, a};
    prompt_adapters = {a, q};
  }
  c10::InferenceMode guard;
  const int64_t vocab = lm->config().vocab_size;
  at::manual_seed(5);
  // Three running sequences with 6 cached positions, then a decode step; two
  // new prompts of 5 tokens.
  DecoderInput prefix;
  prefix.input_ids = at::randint(vocab, {3, 6}, at::kLong);
  prefix.adapters = decode_adapters;
  DecoderInput step;
  step.input_ids = at::randint(vocab, {3, 1}, at::kLong);
  step.adapters = decode_adapters;
  DecoderInput prompt;
  prompt.input_ids = at::randint(vocab, {2, 5}, at::kLong);
  prompt.adapters = prompt_adapters;
  auto caches = [&] {
    auto running = KvCache::Create(lm->config(), 4, 16, lm->dtype(), lm->device());
    auto prompts = KvCache::Create(lm->config(), 2, 8, lm->dtype(), lm->device());
    EXPECT_TRUE(running.ok() && prompts.ok());
    EXPECT_TRUE(lm->Hidden(prefix, &*running).ok());
    return std::make_pair(*std::move(running), *std::move(prompts));
  };
  auto [alone_running, alone_prompts] = caches();
  auto [paired_running, paired_prompts] = caches();
  auto decode_alone = lm->Hidden(step, &alone_running);
  auto prompt_alone = lm->Hidden(prompt, &alone_prompts);
  auto paired = lm->HiddenPair(step, &paired_running, prompt, &paired_prompts);
  ASSERT_TRUE(decode_alone.ok() && prompt_alone.ok());
  ASSERT_TRUE(paired.ok()) << paired.status();
  EXPECT_TRUE(at::equal(paired->first, *decode_alone)) << fixture;
  EXPECT_TRUE(at::equal(paired->second, *prompt_alone)) << fixture;
  EXPECT_EQ(paired_running.length(), alone_running.length());
  EXPECT_EQ(paired_prompts.length(), alone_prompts.length());
  // The caches hold the same keys and values: the next step agrees too.
  auto next_alone = lm->Hidden(step, &alone_running);
  auto next_paired = lm->Hidden(step, &paired_running);
  ASSERT_TRUE(next_alone.ok() && next_paired.ok());
  EXPECT_TRUE(at::equal(*next_alone, *next_paired)) << fixture;
  DecoderInput more = step;
  more.input_ids = more.input_ids.narrow(0, 0, 2);
  more.adapters = prompt_adapters;
  auto after_alone = lm->Hidden(more, &alone_prompts);
  auto after_paired = lm->Hidden(more, &paired_prompts);
  ASSERT_TRUE(after_alone.ok() && after_paired.ok());
  EXPECT_TRUE(at::equal(*after_alone, *after_paired)) << fixture;
  // One cache cannot serve both calls.
  EXPECT_FALSE(lm->HiddenPair(step, &paired_running, prompt, &paired_running).ok());
}

// Sequences joining and leaving the rows of one cache at token boundaries
// (continuous batching) decode exactly as each does alone.
TEST_P(DecoderInvariantTest, RowsJoiningAndLeavingDecodeAsAlone) {
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  const int64_t V = lm->config().vocab_size;
  const int kNew = 6;
  std::vector<std::vector<int64_t>> prompts = {
      {5, 17, 42, 9, 3}, {100, 7}, {11, 12, 13, 14, 15, 16, 17}};
  for (auto& p : prompts) {
    for (int64_t& t : p) t %= V;
  }
  // Greedy continuation of one prompt; its cache is returned through `out`.
  auto prefill = [&](const std::vector<int64_t>& prompt, KvCache* cache) {
    DecoderInput in;
    in.input_ids = at::tensor(prompt, at::kLong).view({1, -1});
    at::Tensor logits = LogitsOrDie(*lm, in, cache);
    return logits[0][-1].argmax().item<int64_t>();
  };
  std::vector<std::vector<int64_t>> alone(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto cache = KvCache::Create(lm->config(), 1, 32, lm->dtype(), lm->device());
    ASSERT_TRUE(cache.ok());
    int64_t next = prefill(prompts[i], &*cache);
    for (int step = 0; step < kNew; ++step) {
      alone[i].push_back(next);
      DecoderInput in;
      in.input_ids = at::tensor(std::vector<int64_t>{next}, at::kLong).view({1, 1});
      next = LogitsOrDie(*lm, in, &*cache)[0][-1].argmax().item<int64_t>();
    }
  }

  // Two rows: prompt 0 starts alone, prompt 1 joins two steps later, prompt
  // 2 takes row 0 when prompt 0 is done; the cache is compacted on the way.
  auto batch = KvCache::Create(lm->config(), 2, 64, lm->dtype(), lm->device());
  ASSERT_TRUE(batch.ok());
  struct Row {
    int prompt = -1;
    int64_t next = 0;
    std::vector<int64_t> out;
  } rows[2];
  std::vector<std::vector<int64_t>> together(prompts.size());
  auto admit = [&](int row, int prompt) {
    auto single = KvCache::Create(lm->config(), 1, 32, lm->dtype(), lm->device());
    ASSERT_TRUE(single.ok());
    rows[row] = Row{prompt, prefill(prompts[prompt], &*single), {}};
    ASSERT_TRUE(batch->InsertRow(row, *single).ok());
  };
  admit(0, 0);
  EXPECT_EQ(
      batch->InsertRow(0, *KvCache::Create(lm->config(), 1, 4, lm->dtype(), lm->device())).code(),
      absl::StatusCode::kFailedPrecondition);  // row 0 is taken
  int pending = 1;
  for (int step = 0; step < 40 && (rows[0].prompt >= 0 || rows[1].prompt >= 0 || pending < 3);
       ++step) {
    if (step == 2) admit(1, pending++);
    if (step == 5) {
      ASSERT_TRUE(batch->Compact().ok());
    }
    std::vector<int64_t> ids(2, 0), segments(2, -1);
    for (int r = 0; r < 2; ++r) {
      if (rows[r].prompt < 0) continue;
      rows[r].out.push_back(rows[r].next);
      ids[r] = rows[r].next;
      segments[r] = 0;
    }
    DecoderInput in;
    in.input_ids = at::tensor(ids, at::kLong).view({2, 1});
    in.segment_ids = at::tensor(segments, at::kLong).view({2, 1});
    at::Tensor logits = LogitsOrDie(*lm, in, &*batch);
    for (int r = 0; r < 2; ++r) {
      if (rows[r].prompt < 0) continue;
      rows[r].next = logits[r][-1].argmax().item<int64_t>();
      if (static_cast<int>(rows[r].out.size()) == kNew) {
        together[rows[r].prompt] = rows[r].out;
        rows[r] = Row{};
        ASSERT_TRUE(batch->ResetRow(r).ok());
        if (pending < 3) admit(r, pending++);
      }
    }
  }
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i], alone[i]) << "prompt " << i;
  ASSERT_TRUE(batch->Compact().ok());
  EXPECT_EQ(batch->length(), 0);  // every row free: nothing left to attend to
}

// The engine's layout: rows in use packed at the front of a larger cache,
// the batch only as wide as them; a longer prompt joining shifts the others;
// a row leaving is filled by the last one (MoveRow).
TEST_P(DecoderInvariantTest, PackedRowsOfALargerCacheDecodeAsAlone) {
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  const int64_t V = lm->config().vocab_size;
  std::vector<std::vector<int64_t>> prompts = {{5, 17}, {100, 7, 8}, {11, 12, 13, 14, 15, 16, 17}};
  const std::vector<int> steps = {3, 8, 5};  // tokens each generates
  for (auto& p : prompts) {
    for (int64_t& t : p) t %= V;
  }
  auto greedy = [&](const at::Tensor& logits, int64_t row) {
    return logits[row][-1].argmax().item<int64_t>();
  };
  auto prefill = [&](const std::vector<int64_t>& prompt, KvCache* cache) {
    DecoderInput in;
    in.input_ids = at::tensor(prompt, at::kLong).view({1, -1});
    return greedy(LogitsOrDie(*lm, in, cache), 0);
  };
  std::vector<std::vector<int64_t>> alone(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto cache = KvCache::Create(lm->config(), 1, 32, lm->dtype(), lm->device());
    ASSERT_TRUE(cache.ok());
    int64_t next = prefill(prompts[i], &*cache);
    for (int s = 0; s < steps[i]; ++s) {
      alone[i].push_back(next);
      DecoderInput in;
      in.input_ids = at::tensor(std::vector<int64_t>{next}, at::kLong).view({1, 1});
      next = greedy(LogitsOrDie(*lm, in, &*cache), 0);
    }
  }

  auto batch = KvCache::Create(lm->config(), 4, 64, lm->dtype(), lm->device());
  ASSERT_TRUE(batch.ok());
  struct Row {
    int prompt;
    int64_t next;
    std::vector<int64_t> out;
  };
  std::vector<Row> rows;  // row i of the cache
  std::vector<std::vector<int64_t>> together(prompts.size());
  auto admit = [&](int prompt) {
    auto single = KvCache::Create(lm->config(), 1, 32, lm->dtype(), lm->device());
    ASSERT_TRUE(single.ok());
    rows.push_back(Row{prompt, prefill(prompts[prompt], &*single), {}});
    ASSERT_TRUE(batch->InsertRow(static_cast<int64_t>(rows.size()) - 1, *single).ok());
  };
  admit(0);
  admit(1);
  for (int step = 0; step < 20 && !rows.empty(); ++step) {
    if (step == 1) admit(2);  // 7 tokens: longer than the cache so far
    const int64_t B = static_cast<int64_t>(rows.size());
    std::vector<int64_t> ids;
    for (Row& r : rows) {
      r.out.push_back(r.next);
      ids.push_back(r.next);
    }
    DecoderInput in;
    in.input_ids = at::tensor(ids, at::kLong).view({B, 1});
    at::Tensor logits = LogitsOrDie(*lm, in, &*batch);
    for (int64_t r = 0; r < B; ++r) rows[r].next = greedy(logits, r);
    for (int64_t r = B - 1; r >= 0; --r) {
      if (static_cast<int>(rows[r].out.size()) < steps[rows[r].prompt]) continue;
      together[rows[r].prompt] = rows[r].out;
      const int64_t last = static_cast<int64_t>(rows.size()) - 1;
      ASSERT_TRUE(batch->ResetRow(r).ok());
      if (r != last) {
        ASSERT_TRUE(batch->MoveRow(last, r).ok());
        rows[r] = rows[last];
      }
      rows.pop_back();
    }
    ASSERT_TRUE(batch->Compact().ok());
    int64_t longest = 0;
    for (size_t r = 0; r < rows.size(); ++r) longest = std::max(longest, batch->RowLength(r));
    EXPECT_EQ(batch->length(), longest) << "step " << step;
  }
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i], alone[i]) << "prompt " << i;
}

TEST_P(DecoderInvariantTest, PackedRowEqualsSeparateRows) {
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  at::Tensor ids = Reference(Fixture(), "input_ids")[0];  // 9 tokens
  at::Tensor first = ids.narrow(0, 0, 5), second = ids.narrow(0, 5, 4);
  DecoderInput packed;
  packed.input_ids = ids.view({1, 9});
  packed.segment_ids = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1, 1}).view({1, 9});
  at::Tensor together = LogitsOrDie(*lm, packed);
  DecoderInput a, b;
  a.input_ids = first.view({1, 5});
  b.input_ids = second.view({1, 4});
  at::Tensor apart = at::cat({LogitsOrDie(*lm, a), LogitsOrDie(*lm, b)}, 1);
  EXPECT_LT(RelativeError(together, apart), 1e-5);
}

TEST_P(DecoderInvariantTest, BatchedRowsEqualSingleRows) {
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  DecoderInput both = ReferenceInput(Fixture());
  both.position_ids = at::Tensor();
  at::Tensor batched = LogitsOrDie(*lm, both);
  // Row 1 without its padding.
  DecoderInput row1;
  row1.input_ids = both.input_ids[1].narrow(0, 3, 6).view({1, 6});
  at::Tensor alone = LogitsOrDie(*lm, row1);
  EXPECT_LT(RelativeError(batched[1].narrow(0, 3, 6), alone[0]), 1e-5);
}

// Activation checkpointing: recomputing each layer in the backward pass gives
// the loss and gradients of the plain pass, for LoRA (with dropout drawn from
// the generator) and for full fine-tuning, and changes nothing without autograd.
TEST_P(DecoderInvariantTest, RecomputedLayersGiveTheSameGradients) {
  const std::string fixture = Fixture();
  auto lm = Load();
  ASSERT_NE(lm, nullptr);
  if (ServingModel()) {  // packed weights have no autograd: training is refused
    LoraConfig config;
    if (fixture == "gpt2") config.target_modules = {"c_attn"};
    auto id = lm->CreateAdapter("train", config, 3);
    ASSERT_TRUE(id.ok()) << id.status();
    DecoderInput in = ReferenceInput(fixture);
    in.adapters = {*id, *id};
    in.training = true;
    EXPECT_THAT(lm->Forward(in).status().message(), HasSubstr("serving"));
    return;
  }
  LoraConfig config;
  config.r = 4;
  config.alpha = 8;
  config.dropout = 0.2;
  config.target_modules = fixture == "gpt2"
                              ? std::vector<std::string>{"c_attn", "c_fc"}
                              : std::vector<std::string>{"q_proj", "v_proj", "down_proj"};
  auto id = lm->CreateAdapter("train", config, 3);
  ASSERT_TRUE(id.ok()) << id.status();
  auto adapter = lm->AdapterParameters("train");
  ASSERT_TRUE(adapter.ok());
  {
    at::NoGradGuard no_grad;  // B starts at zero; move it so A gets gradients too
    for (size_t i = 1; i < adapter->size(); i += 2) (*adapter)[i].normal_(0, 0.05);
  }
  DecoderInput in = ReferenceInput(fixture);
  in.adapters = {*id, *id};
  in.training = true;
  for (bool full : {false, true}) {
    std::vector<at::Tensor> params = *adapter;
    for (auto& [name, w] : lm->NamedParameters()) {
      w.requires_grad_(full);
      if (full) params.push_back(w);
    }
    auto run = [&](bool recompute) {
      for (at::Tensor& p : params) p.mutable_grad() = at::Tensor();
      DecoderInput step = in;
      step.recompute_layers = recompute;
      step.generator = at::detail::createCPUGenerator(11);
      auto logits = lm->Forward(step);
      EXPECT_TRUE(logits.ok()) << logits.status();
      at::Tensor loss = logits->pow(2).mean();
      loss.backward();
      std::vector<at::Tensor> grads = {loss.detach()};
      for (const at::Tensor& p : params) {
        EXPECT_TRUE(p.grad().defined());
        grads.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
      }
      return grads;
    };
    const std::vector<at::Tensor> plain = run(false), recomputed = run(true);
    ASSERT_EQ(plain.size(), recomputed.size());
    for (size_t i = 0; i < plain.size(); ++i) {
      EXPECT_GT(plain[i].abs().sum().item<double>(), 0) << fixture << " " << full << " " << i;
      // The backward adds a layer input's gradients in another order (fp32
      // rounding, ~1e-6); different dropout masks would differ by ~1e-1.
      EXPECT_LT(RelativeError(recomputed[i], plain[i]), 1e-5) << fixture << " " << full << " " << i;
    }
  }
  // Without a generator the second run could not draw the same dropout masks.
  DecoderInput unseeded = in;
  unseeded.recompute_layers = true;
  EXPECT_THAT(lm->Forward(unseeded).status().message(), HasSubstr("needs a generator"));
  // Without autograd the flag changes nothing.
  c10::InferenceMode guard;
  DecoderInput eval = ReferenceInput(fixture);
  const at::Tensor expected = LogitsOrDie(*lm, eval);
  eval.recompute_layers = true;
  EXPECT_EQ(RelativeError(LogitsOrDie(*lm, eval), expected), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecoderInvariantTest,
                         ::testing::Values("gpt2", "llama", "mistral", "qwen2", "gpt2/serving",
                                           "llama/serving", "qwen2/serving"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& ch : name) {
                             if (ch == '/') ch = '_';
                           }
                           return name;
                         });

// A serving model keeps its linear weights (and an untied LM head) packed:
// NamedWeights gives back the checkpoint's weights bit for bit, the counts
// are the plain model's, and what needs an (out, in) weight is refused.
TEST(DecoderServingTest, PackedWeightsComeBackExactlyAndMergingIsRefused) {
  if (!CanPackWeight(at::zeros({2, 2}))) GTEST_SKIP() << "no AVX-512";
  for (const std::string fixture : {"llama-untied", "gpt2"}) {
    auto plain = LoadOrDie(fixture);
    auto serving = LoadOrDie(fixture, Serving(true));
    ASSERT_TRUE(plain != nullptr && serving != nullptr);
    std::map<std::string, at::Tensor> want;
    for (const auto& [name, w] : plain->NamedWeights()) want[name] = w;
    size_t seen = 0;
    for (const auto& [name, w] : serving->NamedWeights()) {
      ASSERT_EQ(want.count(name), 1u) << name;
      EXPECT_TRUE(at::equal(w, want[name])) << fixture << " " << name;
      ++seen;
    }
    EXPECT_EQ(seen, want.size());
    EXPECT_EQ(serving->ParameterCount(), plain->ParameterCount());
    EXPECT_GT(serving->ParameterCount(), 0);
    // Packed panels pad the last 64 outputs; never less than the plain bytes.
    EXPECT_GE(serving->WeightBytes(), plain->WeightBytes());
    EXPECT_LT(serving->WeightBytes(), plain->WeightBytes() * 2);
    // Frozen: the packed weights are not parameters.
    std::set<std::string> params;
    for (const auto& [name, w] : serving->NamedParameters()) params.insert(name);
    EXPECT_EQ(params.count(fixture == "gpt2" ? "transformer.h.0.attn.c_attn.weight"
                                             : "model.layers.0.self_attn.q_proj.weight"),
              0u);
    LoraConfig config;
    config.target_modules = {fixture == "gpt2" ? "c_attn" : "q_proj"};
    ASSERT_TRUE(serving->CreateAdapter("a", config, 1).ok());
    EXPECT_THAT(serving->MergeAdapter("a").message(), HasSubstr("serving"));
  }
}

class DecoderAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    lm_ = LoadOrDie("llama");
    ASSERT_NE(lm_, nullptr);
    auto qv = LoadPeftAdapter(FixtureDir("adapters/llama-qv"), at::kFloat, at::kCPU);
    auto all = LoadPeftAdapter(FixtureDir("adapters/llama-all-rslora"), at::kFloat, at::kCPU);
    ASSERT_TRUE(qv.ok() && all.ok());
    qv_ = *lm_->AddAdapter("qv", *qv);
    all_ = *lm_->AddAdapter("all", *all);
    in_ = ReferenceInput("llama");
  }
  at::Tensor Run(std::vector<int> adapters) {
    DecoderInput in = in_;
    in.adapters = std::move(adapters);
    return LogitsOrDie(*lm_, in);
  }
  std::unique_ptr<CausalLm> lm_;
  int qv_ = 0, all_ = 0;
  DecoderInput in_;
};

TEST_F(DecoderAdapterTest, MergedAdapterEqualsUnmerged) {
  c10::InferenceMode guard;
  at::Tensor mask = in_.segment_ids.ge(0);
  at::Tensor unmerged = Run({qv_, qv_});
  at::Tensor base = Run({});
  ASSERT_TRUE(lm_->MergeAdapter("qv").ok());
  EXPECT_LT(RelativeError(Run({qv_, qv_}), unmerged, mask), 1e-5);
  // While merged, rows must use it.
  DecoderInput mixed = in_;
  mixed.adapters = {qv_, kNoAdapter};
  EXPECT_EQ(lm_->Forward(mixed).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(lm_->MergeAdapter("all").code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(lm_->UnmergeAdapter("qv").ok());
  EXPECT_LT(RelativeError(Run({}), base, mask), 1e-5);
}

TEST_F(DecoderAdapterTest, EachRowUsesItsOwnAdapter) {
  c10::InferenceMode guard;
  at::Tensor mask = in_.segment_ids.ge(0);
  at::Tensor mixed = Run({all_, qv_});
  at::Tensor only_all = Run({all_, all_});
  at::Tensor only_qv = Run({qv_, qv_});
  EXPECT_LT(RelativeError(mixed[0], only_all[0]), 1e-6);
  EXPECT_LT(RelativeError(mixed[1], only_qv[1], mask[1]), 1e-6);
  at::Tensor base_and_qv = Run({kNoAdapter, qv_});
  EXPECT_LT(RelativeError(base_and_qv[0], Run({})[0]), 1e-6);
}

TEST_F(DecoderAdapterTest, RemovedAdapterIdIsRejectedAndReused) {
  ASSERT_TRUE(lm_->RemoveAdapter("qv").ok());
  EXPECT_FALSE(lm_->AdapterId("qv").has_value());
  DecoderInput in = in_;
  in.adapters = {qv_, qv_};
  EXPECT_EQ(lm_->Forward(in).status().code(), absl::StatusCode::kInvalidArgument);
  auto again = LoadPeftAdapter(FixtureDir("adapters/llama-qv"), at::kFloat, at::kCPU);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*lm_->AddAdapter("qv2", *again), qv_);
  EXPECT_EQ(lm_->AddAdapter("all", *again).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(DecoderAdapterTest, NewAdapterStartsAsTheBaseModel) {
  LoraConfig config;
  config.r = 8;
  config.alpha = 16;
  config.target_modules = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                           "gate_proj", "up_proj", "down_proj"};
  config.layers_to_transform = {0, 2};
  auto id = lm_->CreateAdapter("fresh", config, 7);
  ASSERT_TRUE(id.ok()) << id.status();
  auto params = lm_->AdapterParameters("fresh");
  ASSERT_TRUE(params.ok());
  EXPECT_EQ(params->size(), 2u * 7 * 2);  // A and B, 7 modules, 2 layers
  for (size_t i = 0; i < params->size(); i += 2) {
    const at::Tensor& a = (*params)[i];
    EXPECT_TRUE(a.requires_grad());
    EXPECT_LE(a.abs().max().item<double>(), 1.0 / std::sqrt(static_cast<double>(a.size(1))));
    EXPECT_GT(a.abs().max().item<double>(), 0.5 / std::sqrt(static_cast<double>(a.size(1))));
    EXPECT_EQ((*params)[i + 1].abs().max().item<double>(), 0.0);
  }
  c10::InferenceMode guard;
  EXPECT_EQ(RelativeError(Run({*id, *id}), Run({})), 0.0);
  LoraConfig nothing = config;
  nothing.target_modules = {"no_such_proj"};
  EXPECT_THAT(lm_->CreateAdapter("none", nothing, 1).status().message(),
              HasSubstr("match no linear layer"));
}

TEST_F(DecoderAdapterTest, AdapterGradientsReachAAndBOnly) {
  LoraConfig config;
  config.r = 4;
  config.alpha = 8;
  auto id = lm_->CreateAdapter("train", config, 3);
  ASSERT_TRUE(id.ok());
  DecoderInput in = in_;
  in.adapters = {*id, *id};
  in.training = true;
  auto logits = lm_->Forward(in);
  ASSERT_TRUE(logits.ok());
  logits->pow(2).mean().backward();
  auto params = lm_->AdapterParameters("train");
  ASSERT_TRUE(params.ok());
  // B starts at zero, so only B gets a gradient on the first step.
  EXPECT_GT((*params)[1].grad().abs().sum().item<double>(), 0);
  for (const auto& [name, w] : lm_->NamedParameters()) EXPECT_FALSE(w.grad().defined()) << name;
}

// QLoRA: linear weights quantised as they load; the model stays close to the
// unquantised one, adapters train on it and the rest of the API still works.
TEST(DecoderQuantizedTest, QuantisedBaseIsCloseAndTrainsAdapters) {
  const DecoderInput in = ReferenceInput("llama");
  const at::Tensor mask = in.segment_ids.ge(0);
  auto dense = LoadOrDie("llama");
  ASSERT_NE(dense, nullptr);
  const at::Tensor reference = LogitsOrDie(*dense, in);
  double errors[2];
  for (BaseQuantization kind : {BaseQuantization::kNf4, BaseQuantization::kInt8}) {
    LoadOptions o;
    o.quantize_base = kind;
    o.double_quant = kind == BaseQuantization::kNf4;
    auto lm = LoadOrDie("llama", o);
    ASSERT_NE(lm, nullptr);
    const at::Tensor logits = LogitsOrDie(*lm, in);
    const double error = RelativeError(logits, reference, mask);
    errors[kind == BaseQuantization::kNf4 ? 0 : 1] = error;
    EXPECT_GT(error, 0) << BaseQuantizationName(kind);
    // Quantised weights are frozen: not parameters; NamedWeights dequantises.
    std::set<std::string> params;
    for (const auto& [name, w] : lm->NamedParameters()) params.insert(name);
    EXPECT_EQ(params.count("model.layers.0.self_attn.q_proj.weight"), 0u);
    EXPECT_EQ(params.count("model.embed_tokens.weight"), 1u);
    std::map<std::string, at::Tensor> dense_weights;
    for (const auto& [name, w] : dense->NamedWeights()) dense_weights[name] = w;
    for (const auto& [name, w] : lm->NamedWeights()) {
      ASSERT_TRUE(w.defined()) << name;
      EXPECT_EQ(w.sizes(), dense_weights[name].sizes()) << name;
      // Per-weight RMS error relative to the weights': NF4 on blocks of 64
      // gives about 0.09-0.14 on these small random matrices, int8 0.004.
      EXPECT_LT(RelativeError(w, dense_weights[name]),
                kind == BaseQuantization::kNf4 ? 0.16 : 0.006)
          << name;
    }
    // A LoRA adapter trains on the quantised base.
    LoraConfig config;
    config.r = 4;
    config.alpha = 8;
    auto id = lm->CreateAdapter("train", config, 3);
    ASSERT_TRUE(id.ok()) << id.status();
    DecoderInput train = in;
    train.adapters = {*id, *id};
    train.training = true;
    auto out = lm->Forward(train);
    ASSERT_TRUE(out.ok()) << out.status();
    out->pow(2).mean().backward();
    auto adapter = lm->AdapterParameters("train");
    ASSERT_TRUE(adapter.ok());
    EXPECT_GT((*adapter)[1].grad().abs().sum().item<double>(), 0);
    EXPECT_FALSE(lm->MergeAdapter("train").ok()) << "merging into a quantised weight";
  }
  // int8 (per row) is far closer than 4-bit NF4. This small random model
  // amplifies weight error about sevenfold into its logits (int8: 0.4% per
  // weight, 2.9% in the logits; NF4: 12% and 48%).
  EXPECT_LT(errors[1], 0.05);
  EXPECT_LT(errors[1], errors[0]);
  EXPECT_LT(errors[0], 0.7);
}

TEST(DecoderLoadTest, HalfPrecisionCheckpointsLoadInBf16) {
  auto lm = LoadOrDie("llama", LoadOptions{at::kBFloat16, at::kCPU});
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  DecoderInput in = ReferenceInput("llama");
  at::Tensor logits = LogitsOrDie(*lm, in);
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  // bf16 keeps 8 bits of mantissa: a loose bound, but far below a wrong model.
  EXPECT_LT(RelativeError(logits, Reference("llama", "logits"), in.segment_ids.ge(0)), 0.05);
}

std::map<std::string, at::Tensor> FixtureTensors(const std::string& fixture) {
  std::map<std::string, at::Tensor> out;
  auto checkpoint = tensors::Checkpoint::Open(FixtureDir(fixture));
  EXPECT_TRUE(checkpoint.ok());
  for (const std::string& name : checkpoint->names()) {
    out[name] = *tensors::LoadTensor(*checkpoint, name);
  }
  return out;
}

TEST(DecoderLoadTest, MissingUnexpectedAndMisshapedTensorsAreNamed) {
  auto config = LoadModelConfig(FixtureDir("qwen2"));
  ASSERT_TRUE(config.ok());
  auto tensors = FixtureTensors("qwen2");
  ASSERT_TRUE(CausalLm::FromTensors(*config, tensors, {}).ok());

  auto missing = tensors;
  missing.erase("model.layers.1.self_attn.k_proj.bias");
  EXPECT_THAT(CausalLm::FromTensors(*config, missing, {}).status().message(),
              HasSubstr("missing 1 tensor(s): \"model.layers.1.self_attn.k_proj.bias\""));

  auto extra = tensors;
  extra["model.layers.1.self_attn.o_proj.bias"] = at::zeros({64});
  EXPECT_THAT(
      CausalLm::FromTensors(*config, extra, {}).status().message(),
      HasSubstr(
          "unexpected tensor(s) for this architecture: \"model.layers.1.self_attn.o_proj.bias\""));

  auto misshaped = tensors;
  misshaped["model.layers.0.mlp.up_proj.weight"] = at::zeros({128, 32});
  EXPECT_THAT(CausalLm::FromTensors(*config, misshaped, {}).status().message(),
              HasSubstr("\"model.layers.0.mlp.up_proj.weight\" has shape [128, 32] but the config "
                        "needs [128, 64]"));

  auto buffers = tensors;
  buffers["model.layers.0.self_attn.rotary_emb.inv_freq"] = at::zeros({8});
  EXPECT_TRUE(CausalLm::FromTensors(*config, buffers, {}).ok());
}

TEST(DecoderLoadTest, OldGpt2NamesWithoutPrefixLoad) {
  auto config = LoadModelConfig(FixtureDir("gpt2"));
  ASSERT_TRUE(config.ok());
  std::map<std::string, at::Tensor> renamed;
  for (auto& [name, t] : FixtureTensors("gpt2")) renamed[name.substr(strlen("transformer."))] = t;
  renamed["h.0.attn.bias"] = at::ones({1, 1, 64, 64});
  auto lm = CausalLm::FromTensors(*config, renamed, {});
  ASSERT_TRUE(lm.ok()) << lm.status();
  c10::InferenceMode guard;
  DecoderInput in = ReferenceInput("gpt2");
  EXPECT_LT(RelativeError(LogitsOrDie(**lm, in), Reference("gpt2", "logits"), in.segment_ids.ge(0)),
            kParityTolerance);
}

TEST(DecoderLoadTest, AdapterForAnotherModelIsRejected) {
  auto lm = LoadOrDie("qwen2");
  ASSERT_NE(lm, nullptr);
  auto gpt2 = LoadPeftAdapter(FixtureDir("adapters/gpt2-attn"), at::kFloat, at::kCPU);
  ASSERT_TRUE(gpt2.ok());
  EXPECT_THAT(lm->AddAdapter("x", *gpt2).status().message(),
              HasSubstr("is not a linear layer of this qwen2 model"));
  auto llama = LoadPeftAdapter(FixtureDir("adapters/llama-all-rslora"), at::kFloat, at::kCPU);
  ASSERT_TRUE(llama.ok());
  // Same module names, different shapes (qwen2's MLP is 128 wide, so up_proj fits, but
  // llama-all-rslora adapts layer 1 only; force a mismatch by truncating A).
  llama->modules.begin()->second.a = llama->modules.begin()->second.a.narrow(1, 0, 32);
  EXPECT_THAT(lm->AddAdapter("y", *llama).status().message(), HasSubstr("but the layer is"));
}

TEST(DecoderForwardTest, CacheOverflowAndBadShapesAreErrors) {
  auto lm = LoadOrDie("gpt2");
  ASSERT_NE(lm, nullptr);
  c10::InferenceMode guard;
  auto cache = KvCache::Create(lm->config(), 1, 4, lm->dtype(), lm->device());
  ASSERT_TRUE(cache.ok());
  DecoderInput in;
  in.input_ids = at::arange(5, at::kLong).view({1, 5});
  EXPECT_EQ(lm->Forward(in, &*cache).status().code(), absl::StatusCode::kResourceExhausted);
  in.input_ids = at::arange(65, at::kLong).view({1, 65});
  EXPECT_THAT(lm->Forward(in).status().message(), HasSubstr("past the model's maximum of 63"));
  in.input_ids = at::arange(4, at::kLong);
  EXPECT_EQ(lm->Forward(in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::model
