// The inference service over real gRPC in-process: ServerRunner on
// 127.0.0.1:0 with InferenceServiceImpl over a tiny Llama (byte-level
// tokenizer, ChatML template) and random LoRA adapters in an artifact store
// laid out as the training service writes it.
#include "services/inference/inference_service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shared/core/file_util.h"
#include "shared/model/generate.h"
#include "shared/model/init.h"
#include "shared/model/runtime.h"
#include "shared/rpc/auth.h"
#include "shared/rpc/server_runner.h"
#include "shared/text/model_text.h"
#include "switchyard/v1/inference.grpc.pb.h"

namespace switchyard::inference {
namespace {

constexpr char kAdminToken[] = "admin-token-0123456789";
constexpr char kUserToken[] = "user-token-0123456789";

class InferenceServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::SetTorchThreads(2);
    store_ = absl::StrCat(::testing::TempDir(), "/inference_service_test_", RandomHex(8));
    model::InitOptions o;
    o.layers = 2;
    o.hidden = 64;
    o.heads = 4;
    o.max_positions = 256;
    o.init_std = 0.1;
    o.seed = 11;
    ASSERT_TRUE(model::InitCheckpoint(o, store_ + "/models/tiny").ok());
    for (int i = 0; i < 17; ++i) {
      model::LoraConfig c;
      c.r = 4;
      c.alpha = 8;
      c.target_modules = {"q_proj", "v_proj", "o_proj"};
      absl::Status s = model::InitAdapter(store_ + "/models/tiny", c, 200 + i, 0.2,
                                          store_ + "/models/ft-" + std::to_string(i));
      ASSERT_TRUE(s.ok()) << s;
    }
  }
  static void TearDownTestSuite() { (void)RemoveAll(store_); }

  void TearDown() override { StopServer(); }

  void StartServer(
      std::shared_ptr<const rpc::Authorizer> auth = std::make_shared<rpc::Authorizer>(),
      int rows = 8, int max_waiting = 64) {
    metrics_ = std::make_shared<prometheus::Registry>();
    InferenceServiceOptions options;
    options.data_dir = store_;
    options.engine.max_batch_size = rows;
    options.engine.max_waiting = max_waiting;
    options.engine.max_adapters = 8;
    options.engine.threads = 2;
    service_ = std::make_unique<InferenceServiceImpl>(options, auth, *metrics_);
    auto loaded = service_->AddModel("tiny", "");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    rpc::ServerOptions server;
    server.grpc_listen = "127.0.0.1:0";
    server.metrics_listen = "";
    server.drain_timeout = absl::Seconds(2);
    runner_ = std::make_unique<rpc::ServerRunner>(server, metrics_);
    runner_->AddService(service_.get(), "switchyard.v1.InferenceService");
    absl::Status s = runner_->Start();
    ASSERT_TRUE(s.ok()) << s;
    stub_ = v1::InferenceService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", runner_->grpc_port()), grpc::InsecureChannelCredentials()));
  }

  void StopServer() {
    if (runner_) {
      runner_->Shutdown();
      runner_->Wait();
    }
    runner_.reset();
    service_.reset();
  }

  static void Prepare(grpc::ClientContext* ctx, const std::string& token = "",
                      int deadline_ms = 60000) {
    if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  }

  static v1::GenerateRequest Greedy(const std::string& prompt, const std::string& adapter, int n) {
    v1::GenerateRequest r;
    r.set_model("models/tiny");
    r.set_adapter(adapter);
    r.set_prompt(prompt);
    r.mutable_sampling()->set_temperature(0);
    r.mutable_sampling()->set_max_tokens(n);
    r.mutable_sampling()->set_ignore_eos(true);
    return r;
  }

  // The same generation with the model core alone (what `model generate` runs).
  static model::Generation Alone(const std::string& prompt, const std::string& adapter, int n) {
    const std::string dir = store_ + "/models/tiny";
    auto lm = model::CausalLm::Load(dir, {});
    auto text = text::LoadModelText(dir);
    EXPECT_TRUE(lm.ok() && text.ok());
    model::GenerationRequest r;
    auto ids = text->tokenizer->Encode(prompt, true);
    r.prompt_ids.assign(ids->begin(), ids->end());
    r.params.temperature = 0;
    r.params.max_new_tokens = n;
    r.params.ignore_eos = true;
    if (!adapter.empty()) {
      auto a = model::LoadPeftAdapter(store_ + "/models/" + adapter, at::kFloat, at::kCPU);
      r.adapter = *(*lm)->AddAdapter(adapter, *a);
    }
    auto out = model::Generate(**lm, text->tokenizer.get(), {r}, {});
    EXPECT_TRUE(out.ok());
    return (*out)[0];
  }

  struct Streamed {
    std::vector<v1::GenerateResponse> messages;
    grpc::Status status;
    std::string text;
    std::vector<int32_t> ids;
  };
  Streamed Stream(const v1::GenerateRequest& req, const std::string& token = "",
                  int deadline_ms = 60000) {
    grpc::ClientContext ctx;
    Prepare(&ctx, token, deadline_ms);
    auto reader = stub_->Generate(&ctx, req);
    Streamed out;
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
      out.text += m.text();
      out.ids.insert(out.ids.end(), m.token_ids().begin(), m.token_ids().end());
      out.messages.push_back(m);
    }
    out.status = reader->Finish();
    return out;
  }

  std::string Metrics() {
    prometheus::TextSerializer s;
    return s.Serialize(metrics_->Collect());
  }

  static std::string store_;
  std::shared_ptr<prometheus::Registry> metrics_;
  std::unique_ptr<InferenceServiceImpl> service_;
  std::unique_ptr<rpc::ServerRunner> runner_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
};
std::string InferenceServiceTest::store_;

TEST_F(InferenceServiceTest, StreamMatchesModelGenerateAndEndsWithUsage) {
  StartServer();
  const model::Generation alone = Alone("Hello there", "ft-1", 24);
  Streamed s = Stream(Greedy("Hello there", "ft-1", 24));
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  ASSERT_FALSE(s.messages.empty());
  EXPECT_EQ(std::vector<int64_t>(s.ids.begin(), s.ids.end()), alone.token_ids);
  EXPECT_EQ(s.text, alone.text);
  // Only the last message carries the finish reason and usage.
  for (size_t i = 0; i + 1 < s.messages.size(); ++i) {
    EXPECT_EQ(s.messages[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
    EXPECT_FALSE(s.messages[i].has_usage());
  }
  const v1::GenerateResponse& last = s.messages.back();
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().completion_tokens(), 24);
  EXPECT_EQ(last.usage().prompt_tokens(), alone.prompt_tokens);
  EXPECT_GT(last.timings().total_seconds(), 0);
  EXPECT_FALSE(last.request_id().empty());

  // The unary form gives the same, with logprobs when asked.
  v1::GenerateRequest req = Greedy("Hello there", "ft-1", 24);
  req.mutable_sampling()->set_logprobs(true);
  req.mutable_sampling()->set_top_logprobs(2);
  req.set_request_id("req-42");
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::CompleteResponse c;
  ASSERT_TRUE(stub_->Complete(&ctx, req, &c).ok());
  EXPECT_EQ(c.request_id(), "req-42");
  EXPECT_EQ(c.text(), alone.text);
  ASSERT_EQ(c.logprobs_size(), 24);
  EXPECT_NEAR(c.logprobs(0).logprob(), alone.logprobs[0], 1e-4);
  EXPECT_EQ(c.logprobs(0).top_logprobs_size(), 2);
  EXPECT_EQ(c.logprobs(0).top_logprobs(0).token_id(), c.logprobs(0).token_id());  // greedy

  // A stop string ends the stream before it, with FINISH_REASON_STOP.
  ASSERT_GE(alone.text.size(), 6u);
  const std::string stop = alone.text.substr(3, 3);
  req = Greedy("Hello there", "ft-1", 24);
  req.mutable_sampling()->add_stop(stop);
  Streamed stopped = Stream(req);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.messages.back().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(stopped.messages.back().stop_reason(), stop);
  EXPECT_EQ(stopped.text, alone.text.substr(0, alone.text.find(stop)));

  const std::string metrics = Metrics();
  for (const char* name :
       {"switchyard_inference_time_to_first_token_seconds_count{adapter=\"ft-1\",model=\"tiny\"}",
        "switchyard_inference_inter_token_latency_seconds_count{adapter=\"ft-1\"",
        "switchyard_inference_e2e_request_latency_seconds_count{adapter=\"ft-1\"",
        "switchyard_inference_prompt_tokens_total{adapter=\"ft-1\"",
        "switchyard_inference_generation_tokens_total{adapter=\"ft-1\"",
        "switchyard_inference_requests_running{model=\"tiny\"}",
        "switchyard_inference_requests_waiting{model=\"tiny\"}",
        "switchyard_inference_kv_cache_usage_ratio{model=\"tiny\"}",
        "switchyard_inference_requests_total{adapter=\"ft-1\",model=\"tiny\",outcome=\"length\"} 2",
        "switchyard_inference_requests_total{adapter=\"ft-1\",model=\"tiny\",outcome=\"stop\"} "
        "1"}) {
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
  }
}

// The contract: greedy text equals the model core's while 16 other requests
// with other adapters run at once.
TEST_F(InferenceServiceTest, GreedyTextHoldsUnderSixteenConcurrentAdapters) {
  StartServer(std::make_shared<rpc::Authorizer>(), /*rows=*/8);
  const model::Generation alone = Alone("The switchyard", "ft-0", 40);
  std::vector<std::thread> others;
  std::vector<Streamed> results(16);
  for (int i = 0; i < 16; ++i) {
    others.emplace_back([&, i] {
      results[i] = Stream(
          Greedy("Other prompt " + std::to_string(i), "ft-" + std::to_string(i + 1), 20 + i));
    });
  }
  Streamed s = Stream(Greedy("The switchyard", "ft-0", 40));
  for (auto& t : others) t.join();
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.text, alone.text);
  for (int i = 0; i < 16; i += 5) {  // and a few of the others against their own reference
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(
        results[i].text,
        Alone("Other prompt " + std::to_string(i), "ft-" + std::to_string(i + 1), 20 + i).text);
  }
}

TEST_F(InferenceServiceTest, ErrorsNameTheProblemAndOthersKeepFlowing) {
  // A corrupt adapter in the store.
  const std::string broken = store_ + "/models/broken";
  std::filesystem::create_directories(broken);
  std::filesystem::copy(store_ + "/models/ft-2/adapter_config.json", broken);
  std::ofstream(broken + "/adapter_model.safetensors") << "garbage";
  StartServer();
  std::thread good([&] {
    Streamed s = Stream(Greedy("keep going", "ft-3", 60));
    EXPECT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.text, Alone("keep going", "ft-3", 60).text);
  });
  Streamed bad = Stream(Greedy("x", "broken", 4));
  EXPECT_EQ(bad.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.status.error_message().find("broken"), std::string::npos);
  EXPECT_TRUE(bad.messages.empty());
  EXPECT_EQ(Stream(Greedy("x", "nope", 4)).status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::GenerateRequest req = Greedy("x", "", 4);
  req.set_model("other");
  EXPECT_EQ(Stream(req).status.error_code(), grpc::StatusCode::NOT_FOUND);
  req = Greedy("x", "", 4);
  req.mutable_sampling()->set_top_p(3);
  Streamed s = Stream(req);
  EXPECT_EQ(s.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.status.error_message().find("top_p"), std::string::npos);
  req = Greedy("x", "", 4);
  req.clear_prompt();
  EXPECT_EQ(Stream(req).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A deadline mid-stream: DEADLINE_EXCEEDED after the tokens sent.
  Streamed late = Stream(Greedy("slow", "", 200), "", /*deadline_ms=*/1);
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  good.join();
  std::filesystem::remove_all(broken);
}

TEST_F(InferenceServiceTest, FullQueueAnswersResourceExhaustedAtOnce) {
  StartServer(std::make_shared<rpc::Authorizer>(), /*rows=*/1, /*max_waiting=*/1);
  // One running (long) and one waiting; the third is refused at once.
  grpc::ClientContext c1, c2;
  Prepare(&c1);
  Prepare(&c2);
  auto r1 = stub_->Generate(&c1, Greedy("a", "", 240));
  v1::GenerateResponse m;
  ASSERT_TRUE(r1->Read(&m));  // running
  auto r2 = stub_->Generate(&c2, Greedy("b", "", 2));
  // Wait until the second is queued.
  for (int i = 0; i < 200 && service_->FindModel("tiny").value()->Stats().waiting < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Streamed third = Stream(Greedy("c", "", 2));
  EXPECT_EQ(third.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_NE(third.status.error_message().find("waiting"), std::string::npos);
  // Cancelling the first frees its row: the second runs.
  c1.TryCancel();
  while (r1->Read(&m)) {
  }
  EXPECT_EQ(r1->Finish().error_code(), grpc::StatusCode::CANCELLED);
  while (r2->Read(&m)) {
  }
  EXPECT_TRUE(r2->Finish().ok());
  EXPECT_NE(Metrics().find("outcome=\"rejected\"} 1"), std::string::npos);
}

TEST_F(InferenceServiceTest, ModelsAdaptersScoreAndRoles) {
  auto auth = rpc::Authorizer::FromText(
      absl::StrCat(kAdminToken, " admin ops\n", kUserToken, " user app\n"), "tokens");
  ASSERT_TRUE(auth.ok());
  StartServer(*auth);
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kUserToken);
    v1::LoadAdapterRequest req;
    req.set_model("tiny");
    req.set_adapter("ft-4");
    v1::LoadedAdapter a;
    EXPECT_EQ(stub_->LoadAdapter(&ctx, req, &a).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kAdminToken);
    v1::LoadAdapterRequest req;
    req.set_model("tiny");
    req.set_adapter("pinned-one");
    req.set_path(store_ + "/models/ft-4");
    req.set_pin(true);
    v1::LoadedAdapter a;
    ASSERT_TRUE(stub_->LoadAdapter(&ctx, req, &a).ok());
    EXPECT_TRUE(a.pinned());
    EXPECT_EQ(a.r(), 4);
    EXPECT_GT(a.memory_bytes(), 0);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kUserToken);
    v1::ListLoadedModelsResponse list;
    ASSERT_TRUE(stub_->ListModels(&ctx, v1::ListLoadedModelsRequest(), &list).ok());
    ASSERT_EQ(list.models_size(), 1);
    const v1::LoadedModel& m = list.models(0);
    EXPECT_EQ(m.name(), "models/tiny");
    EXPECT_EQ(m.architecture(), "LlamaForCausalLM");
    EXPECT_EQ(m.dtype(), "float32");
    EXPECT_GT(m.weights_bytes(), 0);
    EXPECT_GT(m.kv_cache_bytes(), 0);
    ASSERT_EQ(m.adapters_size(), 1);
    EXPECT_EQ(m.adapters(0).name(), "pinned-one");
    EXPECT_GT(list.memory_used_bytes(), m.weights_bytes());
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kUserToken);
    v1::ScoreRequest req;
    req.set_model("tiny");
    req.set_adapter("pinned-one");
    req.set_prompt("Hello there");
    const model::Generation g = Alone("Hello there", "ft-4", 1);
    req.add_completions("ab");
    req.add_completions("zzzz");
    req.set_token_logprobs(true);
    v1::ScoreResponse resp;
    grpc::Status st = stub_->Score(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.scores_size(), 2);
    const v1::CompletionScore& zz = resp.scores(1);
    EXPECT_EQ(zz.tokens(), 4);  // byte-level: one token per byte
    ASSERT_EQ(zz.token_logprobs_size(), 4);
    double sum = 0;
    for (const v1::TokenLogprob& t : zz.token_logprobs()) {
      EXPECT_LT(t.logprob(), 0);
      EXPECT_EQ(t.token(), "z");
      sum += t.logprob();
    }
    EXPECT_NEAR(zz.logprob(), sum, 1e-9);
    EXPECT_NEAR(zz.mean_logprob(), sum / 4, 1e-9);
    EXPECT_GE(zz.greedy_match_fraction(), 0);
    EXPECT_LE(zz.greedy_match_fraction(), 1);
    EXPECT_EQ(resp.usage().completion_tokens(), 6);
    EXPECT_EQ(resp.usage().prompt_tokens(), g.prompt_tokens);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kAdminToken);
    v1::LoadModelRequest req;
    req.set_model("tiny");
    req.set_path(store_ + "/models/ft-1");  // another path for a loaded id
    v1::LoadedModel m;
    EXPECT_EQ(stub_->LoadModel(&ctx, req, &m).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  }
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kAdminToken);
    v1::UnloadModelRequest req;
    req.set_name("models/tiny");
    google::protobuf::Empty e;
    ASSERT_TRUE(stub_->UnloadModel(&ctx, req, &e).ok());
  }
  EXPECT_EQ(Stream(Greedy("x", "", 2), kUserToken).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  {
    grpc::ClientContext ctx;
    Prepare(&ctx, kAdminToken);
    v1::LoadModelRequest req;
    req.set_model("tiny");
    req.set_max_context_tokens(64);
    v1::LoadedModel m;
    ASSERT_TRUE(stub_->LoadModel(&ctx, req, &m).ok());
    EXPECT_EQ(m.max_context_tokens(), 64);
  }
  Streamed s = Stream(Greedy("again", "", 1000), kUserToken);
  ASSERT_TRUE(s.status.ok());
  EXPECT_EQ(s.messages.back().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(s.messages.back().usage().total_tokens(), 64);
}

}  // namespace
}  // namespace switchyard::inference
