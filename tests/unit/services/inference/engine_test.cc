// Engine on a tiny Llama with three random LoRA adapters: continuous batching
// gives each sequence what it would get alone, with its own adapter; streams
// arrive in order; cancel, deadlines and a full queue behave; a bad adapter is
// refused while other requests keep going; Score agrees with generation.
#include "services/inference/engine.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>

#include "absl/time/clock.h"
#include "shared/model/init.h"
#include "shared/model/runtime.h"
#include "shared/text/model_text.h"

namespace switchyard::inference {
namespace {

const std::vector<std::string> kAdapters = {"", "a1", "a2", "a3"};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::SetTorchThreads(1);
    dir_static_ =
        std::filesystem::temp_directory_path() / ("engine_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_static_);
    model::InitOptions o;
    o.layers = 2;
    o.hidden = 64;
    o.heads = 4;
    o.kv_heads = 2;
    o.max_positions = 256;
    o.init_std = 0.1;
    o.seed = 7;
    ASSERT_TRUE(model::InitCheckpoint(o, dir_static_ + "/model").ok());
    for (int i = 1; i <= 3; ++i) {
      model::LoraConfig c;
      c.r = 4;
      c.alpha = 8;
      c.target_modules = {"q_proj", "v_proj", "o_proj", "down_proj"};
      absl::Status s = model::InitAdapter(dir_static_ + "/model", c, 100 + i, 0.2,
                                          dir_static_ + "/a" + std::to_string(i));
      ASSERT_TRUE(s.ok()) << s;
    }
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(dir_static_); }

  std::string ModelDir() { return dir_static_ + "/model"; }

  EngineOptions Options(int rows) {
    EngineOptions o;
    o.dtype = "float32";
    o.device = "cpu";
    o.max_batch_size = rows;
    o.max_adapters = 4;
    o.threads = 1;
    o.resolve_adapter = [](const std::string& name) -> absl::StatusOr<std::string> {
      const std::string dir = dir_static_ + "/" + name;
      if (!std::filesystem::exists(dir)) {
        return absl::NotFoundError("adapter \"" + name + "\" is unknown");
      }
      return dir;
    };
    return o;
  }

  std::unique_ptr<Engine> Start(EngineOptions options) {
    auto engine = Engine::Load("tiny", ModelDir(), std::move(options));
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? std::move(*engine) : nullptr;
  }

  static std::vector<int64_t> Prompt(const Engine& engine, int i) {
    static const char* kPrompts[] = {"The river", "Once upon a time there was", "apple",
                                     "Switchyard serves many adapters at once", "x y z"};
    return *engine.EncodePrompt(kPrompts[i % 5]);
  }

  static GenerateInput Greedy(std::vector<int64_t> prompt, const std::string& adapter, int n) {
    GenerateInput in;
    in.prompt_ids = std::move(prompt);
    in.adapter = adapter;
    in.params.temperature = 0;
    in.params.max_new_tokens = n;
    in.params.ignore_eos = true;
    return in;
  }

  // What model::Generate gives for one request alone.
  std::vector<int64_t> Alone(const std::vector<int64_t>& prompt, const std::string& adapter,
                             int n) {
    auto lm = model::CausalLm::Load(ModelDir(), {});
    EXPECT_TRUE(lm.ok());
    model::GenerationRequest r;
    r.prompt_ids = prompt;
    r.params.temperature = 0;
    r.params.max_new_tokens = n;
    r.params.ignore_eos = true;
    if (!adapter.empty()) {
      auto a = model::LoadPeftAdapter(dir_static_ + "/" + adapter, at::kFloat, at::kCPU);
      EXPECT_TRUE(a.ok());
      r.adapter = *(*lm)->AddAdapter(adapter, *a);
    }
    auto out = model::Generate(**lm, nullptr, {r}, {});
    EXPECT_TRUE(out.ok()) << out.status();
    return (*out)[0].token_ids;
  }

  static std::string dir_static_;
};
std::string EngineTest::dir_static_;

// Records a stream.
class Recorder : public GenerationSink {
 public:
  void OnToken(const model::StreamedToken& t) override {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_FALSE(done_set_) << "a token after OnDone";
    ids.push_back(t.id);
    text += t.text;
    if (!first_set_) first_.set_value();
    first_set_ = true;
  }
  void OnDone(absl::StatusOr<GenerateResult> r) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_set_ = true;
    done_.set_value(std::move(r));
  }
  void WaitFirstToken() { first_token.wait(); }
  absl::StatusOr<GenerateResult> Result() { return done.get(); }

  std::vector<int64_t> ids;
  std::string text;

 private:
  std::mutex mu_;
  bool done_set_ = false, first_set_ = false;
  std::promise<void> first_;
  std::promise<absl::StatusOr<GenerateResult>> done_;

 public:
  std::future<void> first_token = first_.get_future();
  std::future<absl::StatusOr<GenerateResult>> done = done_.get_future();
};

TEST_F(EngineTest, BatchedMixedAdaptersEqualEachAlone) {
  auto engine = Start(Options(/*rows=*/4));
  ASSERT_NE(engine, nullptr);
  // 10 requests over 4 rows: they join as others leave (different lengths).
  struct Case {
    std::vector<int64_t> prompt;
    std::string adapter;
    int n;
    std::shared_ptr<Recorder> rec;
  };
  std::vector<Case> cases;
  for (int i = 0; i < 10; ++i) {
    cases.push_back(
        {Prompt(*engine, i), kAdapters[i % 4], 3 + (i * 5) % 11, std::make_shared<Recorder>()});
  }
  for (Case& c : cases) {
    ASSERT_TRUE(engine->Submit(Greedy(c.prompt, c.adapter, c.n), c.rec).ok());
  }
  for (Case& c : cases) {
    absl::StatusOr<GenerateResult> r = c.rec->Result();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->generation.token_ids, Alone(c.prompt, c.adapter, c.n))
        << "adapter \"" << c.adapter << "\"";
    EXPECT_EQ(c.rec->ids, r->generation.token_ids);  // streamed in order, each once
    EXPECT_EQ(c.rec->text, r->generation.text);
    EXPECT_EQ(r->generation.finish_reason, "length");
    EXPECT_GT(r->timings.total_seconds, 0);
  }
  // The adapters really differ: isolation is not vacuous.
  std::vector<int64_t> p = Prompt(*engine, 1);
  EXPECT_NE(Alone(p, "", 12), Alone(p, "a1", 12));
  EXPECT_NE(Alone(p, "a1", 12), Alone(p, "a2", 12));
  EXPECT_EQ(engine->Stats().running, 0);
  // Requests that joined running ones were prefilled in a decode step's pass.
  EXPECT_GT(engine->Stats().prefills_with_decode, 0);
}

TEST_F(EngineTest, FinishReasonsAndStopStrings) {
  auto engine = Start(Options(2));
  ASSERT_NE(engine, nullptr);
  std::vector<int64_t> prompt = Prompt(*engine, 0);
  auto full = GenerateAndWait(*engine, Greedy(prompt, "", 16));
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_GE(full->generation.text.size(), 4u);
  // A stop string from the middle of that text: output ends before it.
  GenerateInput in = Greedy(prompt, "", 16);
  const std::string stop = full->generation.text.substr(2, 2);
  in.params.stop = {stop};
  auto stopped = GenerateAndWait(*engine, in);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(stopped->generation.finish_reason, "stop");
  EXPECT_EQ(stopped->generation.stop_reason, stop);
  EXPECT_EQ(stopped->generation.text,
            full->generation.text.substr(0, full->generation.text.find(stop)));
  // EOS as a stop token id: the token the model picks first ends it at once.
  in = Greedy(prompt, "", 16);
  in.params.stop_token_ids = {full->generation.token_ids[0]};
  auto at_once = GenerateAndWait(*engine, in);
  ASSERT_TRUE(at_once.ok());
  EXPECT_EQ(at_once->generation.finish_reason, "stop");
  EXPECT_TRUE(at_once->generation.token_ids.empty());
  // The context caps max tokens: "length" at the model's 256 positions.
  in = Greedy(prompt, "", 100000);
  auto capped = GenerateAndWait(*engine, in);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->generation.finish_reason, "length");
  EXPECT_EQ(static_cast<int64_t>(capped->generation.token_ids.size() + prompt.size()), 256);
  // Bad params are refused before queueing, naming the field.
  in = Greedy(prompt, "", 4);
  in.params.top_p = 2;
  auto bad = engine->Submit(in, std::make_shared<Recorder>());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("top_p"), std::string::npos);
  // Seeded sampling repeats itself.
  in = Greedy(prompt, "a1", 12);
  in.params.temperature = 0.9;
  in.params.top_k = 20;
  in.params.seed = 42;
  auto s1 = GenerateAndWait(*engine, in), s2 = GenerateAndWait(*engine, in);
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_EQ(s1->generation.token_ids, s2->generation.token_ids);
}

TEST_F(EngineTest, CancelAndDeadlineFreeTheRow) {
  auto engine = Start(Options(/*rows=*/1));
  ASSERT_NE(engine, nullptr);
  std::vector<int64_t> prompt = Prompt(*engine, 2);
  // A long request takes the only row; a second waits behind it.
  auto longer = std::make_shared<Recorder>();
  auto handle = engine->Submit(Greedy(prompt, "a1", 100000), longer);
  ASSERT_TRUE(handle.ok());
  auto next = std::make_shared<Recorder>();
  ASSERT_TRUE(engine->Submit(Greedy(prompt, "a2", 5), next).ok());
  longer->WaitFirstToken();
  engine->Cancel(*handle);
  auto cancelled = longer->Result();
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  auto after = next->Result();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->generation.token_ids, Alone(prompt, "a2", 5));

  // A deadline ends a running sequence with the tokens it had (a slow
  // client here: 2 ms per token, so 250 tokens take past the deadline).
  struct SlowRecorder : Recorder {
    void OnToken(const model::StreamedToken& t) override {
      Recorder::OnToken(t);
      absl::SleepFor(absl::Milliseconds(2));
    }
  };
  GenerateInput in = Greedy(prompt, "", 100000);
  in.deadline = absl::Now() + absl::Milliseconds(100);
  auto expired = std::make_shared<SlowRecorder>();
  ASSERT_TRUE(engine->Submit(in, expired).ok());
  EXPECT_EQ(expired->Result().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(expired->ids.size() + prompt.size(), 256u);
  // The row is free again.
  auto again = GenerateAndWait(*engine, Greedy(prompt, "", 3));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(engine->Stats().running, 0);
}

TEST_F(EngineTest, FullQueueAnswersResourceExhausted) {
  EngineOptions o = Options(/*rows=*/1);
  o.max_waiting = 1;
  auto engine = Start(o);
  ASSERT_NE(engine, nullptr);
  std::vector<int64_t> prompt = Prompt(*engine, 3);
  auto first = std::make_shared<Recorder>();
  auto h1 = engine->Submit(Greedy(prompt, "", 100000), first);
  ASSERT_TRUE(h1.ok());
  first->WaitFirstToken();  // running: the row is taken
  auto second = std::make_shared<Recorder>();
  auto h2 = engine->Submit(Greedy(prompt, "", 2), second);
  ASSERT_TRUE(h2.ok());  // waits
  auto third = engine->Submit(Greedy(prompt, "", 2), std::make_shared<Recorder>());
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("waiting"), std::string::npos);
  EXPECT_EQ(engine->Stats().waiting, 1);
  engine->Cancel(*h1);
  EXPECT_TRUE(second->Result().ok());
}

TEST_F(EngineTest, BadAdapterIsRefusedWhileOthersFlow) {
  std::filesystem::create_directories(dir_static_ + "/broken");
  std::filesystem::copy(dir_static_ + "/a1/adapter_config.json", dir_static_ + "/broken");
  std::ofstream(dir_static_ + "/broken/adapter_model.safetensors") << "not safetensors";
  auto engine = Start(Options(4));
  ASSERT_NE(engine, nullptr);
  std::vector<int64_t> prompt = Prompt(*engine, 4);
  auto good = std::make_shared<Recorder>();
  ASSERT_TRUE(engine->Submit(Greedy(prompt, "a3", 40), good).ok());
  good->WaitFirstToken();
  auto broken = GenerateAndWait(*engine, Greedy(prompt, "broken", 4));
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("broken"), std::string::npos);
  auto unknown = GenerateAndWait(*engine, Greedy(prompt, "nope", 4));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  auto done = good->Result();
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->generation.token_ids, Alone(prompt, "a3", 40));
  std::filesystem::remove_all(dir_static_ + "/broken");
}

TEST_F(EngineTest, ScoreAgreesWithGreedyGeneration) {
  auto engine = Start(Options(2));
  ASSERT_NE(engine, nullptr);
  std::vector<int64_t> prompt = Prompt(*engine, 1);
  GenerateInput in = Greedy(prompt, "a2", 8);
  auto gen = GenerateAndWait(*engine, in);
  ASSERT_TRUE(gen.ok());
  auto scores = engine->Score(prompt, {gen->generation.token_ids, {5, 6, 7}}, "a2");
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->size(), 2u);
  const CompletionScore& s = (*scores)[0];
  ASSERT_EQ(s.logprobs.size(), gen->generation.logprobs.size());
  for (size_t i = 0; i < s.logprobs.size(); ++i) {
    EXPECT_NEAR(s.logprobs[i], gen->generation.logprobs[i], 1e-4) << "token " << i;
  }
  EXPECT_EQ(s.greedy_matches, 8);
  EXPECT_LE((*scores)[1].greedy_matches, 3);
  EXPECT_EQ(engine->Score(prompt, {{}}, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, AdaptersLoadPinAndEvict) {
  EngineOptions o = Options(2);
  o.max_adapters = 2;
  auto engine = Start(o);
  ASSERT_NE(engine, nullptr);
  auto pinned = engine->LoadAdapter("a1", "", /*pin=*/true);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_TRUE(pinned->pinned);
  EXPECT_GT(pinned->bytes, 0);
  std::vector<int64_t> prompt = Prompt(*engine, 0);
  for (const char* a : {"a2", "a3", "a2"}) {
    auto r = GenerateAndWait(*engine, Greedy(prompt, a, 3));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->generation.token_ids, Alone(prompt, a, 3));
  }
  std::vector<std::string> names;
  for (const AdapterInfo& info : engine->Adapters()) names.push_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"a1", "a2"}));  // a3 evicted, a1 pinned
  EXPECT_TRUE(engine->UnloadAdapter("a1").ok());
  EXPECT_EQ(engine->UnloadAdapter("a1").code(), absl::StatusCode::kNotFound);
  // A directory given at load time names a new adapter.
  auto named = engine->LoadAdapter("support", dir_static_ + "/a3", false);
  ASSERT_TRUE(named.ok()) << named.status();
  auto r = GenerateAndWait(*engine, Greedy(prompt, "support", 3));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->generation.token_ids, Alone(prompt, "a3", 3));
}

}  // namespace
}  // namespace switchyard::inference
