// The router over real gRPC in-process, as `serve --target=all` runs it: one
// ServerRunner with the dataset, retrieval, inference and router services,
// the router calling the others through the server's in-process channel. A
// tiny Llama with a random LoRA adapter (the fine-tuned arm) and a small
// handbook collection (the RAG arm).
#include "services/router/router_service.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/dataset/dataset_catalog.h"
#include "services/dataset/dataset_manager.h"
#include "services/dataset/dataset_service.h"
#include "services/inference/inference_service.h"
#include "services/retrieval/collection_store.h"
#include "services/retrieval/retrieval_service.h"
#include "shared/core/file_util.h"
#include "shared/core/utf8.h"
#include "shared/model/init.h"
#include "shared/model/runtime.h"
#include "shared/rpc/server_runner.h"
#include "switchyard/v1/dataset.grpc.pb.h"
#include "switchyard/v1/router.grpc.pb.h"

namespace switchyard::router {
namespace {

using grpc::StatusCode;

class RouterServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model::SetTorchThreads(2);
    dir_ = absl::StrCat(::testing::TempDir(), "/router_service_test_", RandomHex(8));
    model::InitOptions o;
    o.layers = 2;
    o.hidden = 64;
    o.heads = 4;
    o.max_positions = 512;
    o.init_std = 0.1;
    o.seed = 21;
    ASSERT_TRUE(model::InitCheckpoint(o, dir_ + "/models/base").ok());
    model::LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    c.target_modules = {"q_proj", "v_proj"};
    ASSERT_TRUE(model::InitAdapter(dir_ + "/models/base", c, 7, 0.3, dir_ + "/models/ft-1").ok());

    registry_ = std::make_shared<prometheus::Registry>();
    auto auth = std::make_shared<rpc::Authorizer>();
    auto catalog = dataset::SqliteDatasetCatalog::Open(dir_ + "/switchyard.db");
    ASSERT_TRUE(catalog.ok()) << catalog.status();
    dataset::ManagerOptions dopts;
    dopts.data_dir = dir_;
    dopts.validator.min_examples = 1;
    dopts.validator.recommended_examples = 1;
    auto manager = dataset::DatasetManager::Open(dopts, std::move(*catalog));
    ASSERT_TRUE(manager.ok()) << manager.status();
    datasets_ = std::move(*manager).release();
    dataset_service_ = new dataset::DatasetServiceImpl(datasets_, auth, *registry_);
    auto collections = retrieval::CollectionStore::Open(dir_);
    ASSERT_TRUE(collections.ok()) << collections.status();
    collections_ = std::move(*collections).release();
    retrieval_service_ = new retrieval::RetrievalServiceImpl(collections_, auth, *registry_);
    inference::InferenceServiceOptions iopts;
    iopts.data_dir = dir_;
    iopts.engine.max_batch_size = 16;
    iopts.engine.threads = 2;
    inference_service_ = new inference::InferenceServiceImpl(iopts, auth, *registry_);
    ASSERT_TRUE(inference_service_->AddModel("base", "").ok());
    auto store = ExperimentStore::Open(dir_ + "/switchyard.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store).release();
    RouterServiceOptions ropts;
    ropts.chat_threads = 16;
    auto router = RouterServiceImpl::Create(ropts, store_, Backends{}, auth, *registry_);
    ASSERT_TRUE(router.ok()) << router.status();
    router_ = std::move(*router).release();

    rpc::ServerOptions server;
    server.grpc_listen = "127.0.0.1:0";
    server.metrics_listen = "";
    server.drain_timeout = absl::Seconds(2);
    runner_ = new rpc::ServerRunner(server, registry_);
    runner_->AddService(dataset_service_, "switchyard.v1.DatasetService");
    runner_->AddService(retrieval_service_, "switchyard.v1.RetrievalService");
    runner_->AddService(inference_service_, "switchyard.v1.InferenceService");
    runner_->AddService(router_, "switchyard.v1.RouterService");
    absl::Status s = runner_->Start();
    ASSERT_TRUE(s.ok()) << s;
    router_->SetBackends(InProcess());
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", runner_->grpc_port()),
                                       grpc::InsecureChannelCredentials());
    stub_ = v1::RouterService::NewStub(channel).release();
    inference_ = v1::InferenceService::NewStub(channel).release();
    datasets_stub_ = v1::DatasetService::NewStub(channel).release();

    // The handbook.
    auto retrieval = v1::RetrievalService::NewStub(channel);
    grpc::ClientContext ctx;
    v1::CreateCollectionRequest create;
    create.mutable_collection()->set_collection_id("handbook");
    v1::Collection made;
    ASSERT_TRUE(retrieval->CreateCollection(&ctx, create, &made).ok());
    v1::UpsertDocumentsRequest docs;
    docs.set_collection("collections/handbook");
    const std::vector<std::pair<std::string, std::string>> texts = {
        {"refunds", "Refunds are paid within 14 days of the request."},
        {"hours", "The office is open Monday to Friday from 9 to 5."},
        {"parking", "Staff parking is on level 2 of the north garage."},
        {"tokyo",
         "東京オフィスは月曜日から金曜日まで、午前九時から午後五時まで開いています。"
         " Café hours: 8–4."}};
    for (const auto& [id, text] : texts) {
      v1::Document* d = docs.add_documents();
      d->set_id(id);
      d->set_text(text);
      (*d->mutable_metadata())["team"] = "ops";
    }
    grpc::ClientContext ctx2;
    v1::UpsertDocumentsResponse upserted;
    grpc::Status st = retrieval->UpsertDocuments(&ctx2, docs, &upserted);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }

  static void TearDownTestSuite() {
    runner_->Shutdown();
    runner_->Wait();
    delete stub_;
    delete inference_;
    delete datasets_stub_;
    delete router_;
    delete store_;
    delete inference_service_;
    delete retrieval_service_;
    delete collections_;
    delete dataset_service_;
    delete datasets_;
    delete runner_;
    (void)RemoveAll(dir_);
  }

  static Backends InProcess() {
    Backends b;
    b.inference = runner_->InProcessChannel();
    b.retrieval = runner_->InProcessChannel();
    b.dataset = runner_->InProcessChannel();
    return b;
  }

  static v1::Arm Arm(const std::string& name, const std::string& adapter, bool rag,
                     int max_tokens = 4) {
    v1::Arm a;
    a.set_name(name);
    a.set_model("base");
    a.set_adapter(adapter);
    if (rag) {
      a.mutable_retrieval()->set_collection("handbook");
      a.mutable_retrieval()->set_k(2);
    }
    a.mutable_sampling()->set_temperature(0);
    a.mutable_sampling()->set_max_tokens(max_tokens);
    a.mutable_sampling()->set_ignore_eos(true);
    return a;
  }

  // ft (adapter), rag (retrieval), both.
  static v1::Experiment ThreeArms(const std::string& id) {
    v1::Experiment e;
    e.set_name(id);
    *e.add_arms() = Arm("ft", "ft-1", false);
    *e.add_arms() = Arm("rag", "", true);
    *e.add_arms() = Arm("both", "ft-1", true);
    return e;
  }

  static grpc::Status Create(const v1::Experiment& e, v1::Experiment* out = nullptr) {
    grpc::ClientContext ctx;
    v1::CreateExperimentRequest req;
    *req.mutable_experiment() = e;
    v1::Experiment ignored;
    return stub_->CreateExperiment(&ctx, req, out ? out : &ignored);
  }

  static v1::ChatRequest Ask(const std::string& experiment, const std::string& text,
                             const std::string& user_key = "", const std::string& arm = "") {
    v1::ChatRequest r;
    r.set_experiment(experiment);
    v1::ChatMessage* m = r.add_messages();
    m->set_role("user");
    m->set_content(text);
    r.set_user_key(user_key);
    r.set_arm(arm);
    return r;
  }

  static grpc::Status Chat(const v1::ChatRequest& r, v1::ChatResponse* out,
                           int deadline_ms = 60000) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
    return stub_->Chat(&ctx, r, out);
  }

  static v1::ExperimentReport Report(const std::string& name) {
    grpc::ClientContext ctx;
    v1::GetExperimentReportRequest req;
    req.set_name(name);
    v1::ExperimentReport out;
    grpc::Status s = stub_->GetExperimentReport(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  static grpc::Status Feedback(const std::string& response_id, double score,
                               const std::string& reviewer = "") {
    grpc::ClientContext ctx;
    v1::RecordFeedbackRequest req;
    req.set_response_id(response_id);
    req.set_score(score);
    req.set_reviewer(reviewer);
    v1::Feedback out;
    return stub_->RecordFeedback(&ctx, req, &out);
  }

  static absl::StatusOr<v1::Interaction> Interaction(const std::string& response_id) {
    grpc::ClientContext ctx;
    v1::GetInteractionRequest req;
    req.set_response_id(response_id);
    v1::Interaction out;
    grpc::Status s = stub_->GetInteraction(&ctx, req, &out);
    if (!s.ok())
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return out;
  }

  // The text inference gives for these messages and adapter (greedy).
  static std::string Direct(const google::protobuf::RepeatedPtrField<v1::ChatMessage>& messages,
                            const std::string& adapter, int max_tokens) {
    grpc::ClientContext ctx;
    v1::GenerateRequest req;
    req.set_model("base");
    req.set_adapter(adapter);
    *req.mutable_chat()->mutable_messages() = messages;
    req.mutable_sampling()->set_temperature(0);
    req.mutable_sampling()->set_max_tokens(max_tokens);
    req.mutable_sampling()->set_ignore_eos(true);
    v1::CompleteResponse out;
    grpc::Status s = inference_->Complete(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out.text();
  }

  static inline std::string dir_;
  static inline std::shared_ptr<prometheus::Registry> registry_;
  static inline dataset::DatasetManager* datasets_ = nullptr;
  static inline dataset::DatasetServiceImpl* dataset_service_ = nullptr;
  static inline retrieval::CollectionStore* collections_ = nullptr;
  static inline retrieval::RetrievalServiceImpl* retrieval_service_ = nullptr;
  static inline inference::InferenceServiceImpl* inference_service_ = nullptr;
  static inline ExperimentStore* store_ = nullptr;
  static inline RouterServiceImpl* router_ = nullptr;
  static inline rpc::ServerRunner* runner_ = nullptr;
  static inline v1::RouterService::Stub* stub_ = nullptr;
  static inline v1::InferenceService::Stub* inference_ = nullptr;
  static inline v1::DatasetService::Stub* datasets_stub_ = nullptr;
};

TEST_F(RouterServiceTest, EachArmKindAnswersWithItsRecipe) {
  ASSERT_TRUE(Create(ThreeArms("kinds")).ok());
  const std::string question = "How long do refunds take?";
  std::map<std::string, v1::ChatResponse> answers;
  for (const char* arm : {"ft", "rag", "both"}) {
    v1::ChatRequest r = Ask("kinds", question, "", arm);
    r.set_return_prompt(true);
    grpc::Status s = Chat(r, &answers[arm]);
    ASSERT_TRUE(s.ok()) << arm << ": " << s.error_message();
    const v1::ChatResponse& a = answers[arm];
    EXPECT_EQ(a.arm(), arm);
    EXPECT_TRUE(a.overridden());
    EXPECT_TRUE(absl::StartsWith(a.response_id(), "r-"));
    EXPECT_EQ(a.usage().completion_tokens(), 4);
    // The model answered exactly what inference answers for the prompt the
    // router built (the arm's adapter applied).
    EXPECT_EQ(a.text(), Direct(a.prompt_messages(), a.adapter(), 4)) << arm;
  }
  EXPECT_EQ(answers["ft"].adapter(), "ft-1");
  EXPECT_TRUE(answers["ft"].sources().empty());
  EXPECT_EQ(answers["ft"].prompt_messages_size(), 1);
  for (const char* arm : {"rag", "both"}) {
    const v1::ChatResponse& a = answers[arm];
    ASSERT_EQ(a.sources_size(), 2) << arm;
    EXPECT_EQ(a.sources(0).citation_id(), "1");
    EXPECT_EQ(a.sources(0).collection(), "collections/handbook");
    EXPECT_EQ(a.sources(0).metadata().at("team"), "ops");
    ASSERT_EQ(a.prompt_messages_size(), 2);
    EXPECT_EQ(a.prompt_messages(0).role(), "system");
    EXPECT_TRUE(absl::StrContains(a.prompt_messages(0).content(),
                                  absl::StrCat("[1] ", a.sources(0).text())));
    // The RAG arms' longer prompts show in the usage.
    EXPECT_GT(a.usage().prompt_tokens(), answers["ft"].usage().prompt_tokens() + 20);
    EXPECT_GT(a.timings().retrieval_seconds(), 0);
    EXPECT_FALSE(a.context_missing());
  }
  EXPECT_EQ(answers["rag"].adapter(), "");
}

TEST_F(RouterServiceTest, SplitFollowsWeightsWithinThreePointsAndKeysAreSticky) {
  v1::Experiment e;
  e.set_name("split");
  *e.add_arms() = Arm("a", "", false, 1);
  *e.add_arms() = Arm("b", "ft-1", false, 1);
  (*e.mutable_weights())["a"] = 70;
  (*e.mutable_weights())["b"] = 30;
  ASSERT_TRUE(Create(e).ok());
  std::map<std::string, std::string> first;
  int a = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    v1::ChatResponse out;
    const std::string key = absl::StrCat("user-", i);
    grpc::Status s = Chat(Ask("split", "hi", key), &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
    first[key] = out.arm();
    a += out.arm() == "a";
  }
  const double share = static_cast<double>(a) / n;
  std::cout << "split over " << n << " keys: a " << share << "\n";
  EXPECT_NEAR(share, 0.70, 0.03);
  for (int i = 0; i < 100; ++i) {
    v1::ChatResponse out;
    const std::string key = absl::StrCat("user-", i * 7);
    ASSERT_TRUE(Chat(Ask("split", "again", key), &out).ok());
    EXPECT_EQ(out.arm(), first[key]) << key;
  }
  v1::ExperimentReport report = Report("split");
  ASSERT_EQ(report.arms_size(), 2);
  EXPECT_EQ(report.arms(0).requests() + report.arms(1).requests(), n + 100);
  EXPECT_NEAR(report.arms(0).traffic_share(), 0.70, 0.03);
}

TEST_F(RouterServiceTest, OverridesAreServedAndLeftOutOfTheReport) {
  ASSERT_TRUE(Create(ThreeArms("override")).ok());
  v1::ChatResponse out;
  ASSERT_TRUE(Chat(Ask("override", "hello", "k", "both"), &out).ok());
  EXPECT_EQ(out.arm(), "both");
  EXPECT_TRUE(out.overridden());
  EXPECT_EQ(Chat(Ask("override", "hello", "k", "nope"), &out).error_code(), StatusCode::NOT_FOUND);
  EXPECT_EQ(Chat(Ask("missing", "hello"), &out).error_code(), StatusCode::NOT_FOUND);
  v1::ExperimentReport report = Report("override");
  for (const v1::ArmReport& a : report.arms()) EXPECT_EQ(a.requests(), 0) << a.arm();
  grpc::ClientContext ctx;
  v1::GetExperimentReportRequest req;
  req.set_name("experiments/override");
  req.set_include_excluded(true);
  v1::ExperimentReport all;
  ASSERT_TRUE(stub_->GetExperimentReport(&ctx, req, &all).ok());
  EXPECT_EQ(all.arms(2).requests(), 1);
}

TEST_F(RouterServiceTest, ShadowRunsInTheBackgroundAndIsReviewedAsAPair) {
  v1::Experiment e;
  e.set_name("shadow");
  *e.add_arms() = Arm("fast", "", false, 1);
  *e.add_arms() = Arm("slow", "ft-1", false, 300);
  (*e.mutable_weights())["fast"] = 1;
  e.mutable_shadow()->set_arm("slow");
  ASSERT_TRUE(Create(e).ok());
  v1::ChatResponse out;
  ASSERT_TRUE(Chat(Ask("shadow", "Where can staff park?", "u1"), &out).ok());
  EXPECT_EQ(out.arm(), "fast");
  EXPECT_EQ(out.shadow_arm(), "slow");
  // The caller has its answer while the shadow (300 tokens) still runs.
  absl::StatusOr<v1::Interaction> served = Interaction(out.response_id());
  ASSERT_TRUE(served.ok()) << served.status();
  const std::string shadow_id = served->paired_response_id();
  ASSERT_FALSE(shadow_id.empty());
  EXPECT_TRUE(absl::IsNotFound(Interaction(shadow_id).status()))
      << "the shadow answer was logged before the served one returned";
  absl::StatusOr<v1::Interaction> shadow = Interaction(shadow_id);
  for (int i = 0; i < 600 && !shadow.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    shadow = Interaction(shadow_id);
  }
  ASSERT_TRUE(shadow.ok()) << shadow.status();
  EXPECT_TRUE(shadow->shadow());
  EXPECT_EQ(shadow->arm(), "slow");
  EXPECT_EQ(shadow->paired_response_id(), out.response_id());
  EXPECT_EQ(shadow->usage().completion_tokens(), 300);

  // Review the pair (the shadow pair is the default other answer).
  grpc::ClientContext ctx;
  v1::RecordComparisonRequest cmp;
  cmp.set_response_id(out.response_id());
  cmp.set_result(v1::COMPARISON_RESULT_SECOND_BETTER);
  cmp.set_reviewer("expert");
  v1::Comparison recorded;
  grpc::Status s = stub_->RecordComparison(&ctx, cmp, &recorded);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(recorded.preferred_arm(), "slow");
  v1::ExperimentReport report = Report("shadow");
  EXPECT_EQ(report.arms(1).shadow_requests(), 1);
  EXPECT_EQ(report.arms(1).wins(), 1);
  EXPECT_EQ(report.arms(0).losses(), 1);

  // The pair exports as a preference dataset version.
  grpc::ClientContext ectx;
  v1::ExportComparisonsRequest exp;
  exp.set_experiment("shadow");
  exp.set_dataset_id("shadow-prefs");
  v1::ExportComparisonsResponse exported;
  s = stub_->ExportComparisons(&ectx, exp, &exported);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(exported.examples(), 1);
  EXPECT_EQ(exported.dataset_version(), "datasets/shadow-prefs/versions/1");
  EXPECT_EQ(exported.report().format(), v1::DATASET_FORMAT_PREFERENCE);
  EXPECT_TRUE(exported.report().valid());
}

TEST_F(RouterServiceTest, RetrievalDownFailsOrAnswersWithoutContextAsConfigured) {
  v1::Experiment strict;
  strict.set_name("strict");
  *strict.add_arms() = Arm("rag", "", true);
  ASSERT_TRUE(Create(strict).ok());
  v1::Experiment lenient = strict;
  lenient.set_name("lenient");
  lenient.set_allow_rag_without_context(true);
  ASSERT_TRUE(Create(lenient).ok());

  Backends down = InProcess();
  down.retrieval = grpc::CreateChannel("127.0.0.1:1", grpc::InsecureChannelCredentials());
  router_->SetBackends(down);
  v1::ChatResponse out;
  grpc::Status s = Chat(Ask("strict", "refunds?"), &out);
  EXPECT_EQ(s.error_code(), StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "retrieval")) << s.error_message();
  s = Chat(Ask("lenient", "refunds?"), &out);
  router_->SetBackends(InProcess());
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(out.context_missing());
  EXPECT_EQ(out.context_missing_reason(), v1::CONTEXT_MISSING_REASON_RETRIEVAL_ERROR);
  EXPECT_TRUE(out.sources().empty());
  EXPECT_EQ(out.usage().completion_tokens(), 4);
  v1::ExperimentReport report = Report("strict");
  EXPECT_EQ(report.arms(0).errors(), 1);
  EXPECT_EQ(report.arms(0).errors_by_code().at("UNAVAILABLE"), 1);
  EXPECT_EQ(Report("lenient").arms(0).context_missing(), 1);
}

TEST_F(RouterServiceTest, FeedbackFlowsIntoTheReport) {
  v1::Experiment e = ThreeArms("feedback");
  e.mutable_feedback_scale()->set_min(1);
  e.mutable_feedback_scale()->set_max(5);
  e.mutable_analysis()->set_min_samples_per_arm(3);
  ASSERT_TRUE(Create(e).ok());
  std::map<std::string, std::vector<double>> given;
  for (int i = 0; i < 24; ++i) {
    v1::ChatResponse out;
    ASSERT_TRUE(Chat(Ask("feedback", "hours?", absl::StrCat("fb-", i)), &out).ok());
    const double score = out.arm() == "rag" ? 5 : (i % 2 ? 2 : 3);
    ASSERT_TRUE(Feedback(out.response_id(), score).ok());
    given[out.arm()].push_back(score);
  }
  v1::ChatResponse out;
  ASSERT_TRUE(Chat(Ask("feedback", "hours?", "fb-x"), &out).ok());
  EXPECT_EQ(Feedback(out.response_id(), 6).error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Feedback("r-unknown", 3).error_code(), StatusCode::NOT_FOUND);
  // A reviewer's newer rating replaces the earlier one.
  ASSERT_TRUE(Feedback(out.response_id(), 1, "ann").ok());
  ASSERT_TRUE(Feedback(out.response_id(), 2, "ann").ok());
  given[out.arm()].push_back(2);

  v1::ExperimentReport report = Report("feedback");
  for (const v1::ArmReport& a : report.arms()) {
    const std::vector<double>& v = given[a.arm()];
    EXPECT_EQ(a.feedback_count(), static_cast<int64_t>(v.size())) << a.arm();
    double sum = 0;
    for (double x : v) sum += x;
    if (!v.empty()) EXPECT_NEAR(a.feedback_mean(), sum / v.size(), 1e-9) << a.arm();
    EXPECT_LE(a.feedback_ci_low(), a.feedback_mean());
    EXPECT_GE(a.feedback_ci_high(), a.feedback_mean());
  }
  EXPECT_EQ(report.comparisons_size(), 2);
  EXPECT_FALSE(report.verdict().summary().empty());
  EXPECT_FALSE(report.verdict().method().empty());
  // The metrics carry experiment and arm.
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, registry_->Collect());
  EXPECT_TRUE(absl::StrContains(
      text.str(), "switchyard_router_feedback_total{arm=\"rag\",experiment=\"feedback\"}"))
      << "missing feedback counter";
  EXPECT_TRUE(absl::StrContains(
      text.str(),
      "switchyard_router_requests_total{arm=\"rag\",code=\"OK\",experiment=\"feedback\"}"));
}

TEST_F(RouterServiceTest, RatedInteractionsExportAsAChatDatasetVersion) {
  ASSERT_TRUE(Create(ThreeArms("export")).ok());
  int good = 0;
  for (int i = 0; i < 12; ++i) {
    v1::ChatResponse out;
    ASSERT_TRUE(
        Chat(Ask("export", absl::StrCat("question ", i), absl::StrCat("ex-", i)), &out).ok());
    const double score = i % 3 == 0 ? 0.2 : 0.9;
    good += score >= 0.5;
    ASSERT_TRUE(Feedback(out.response_id(), score).ok());
  }
  grpc::ClientContext ctx;
  v1::ExportInteractionsRequest req;
  req.set_experiment("experiments/export");
  req.set_dataset_id("rated-good");
  req.set_min_feedback_score(0.5);
  req.set_strip_citations(true);
  v1::ExportInteractionsResponse out;
  grpc::Status s = stub_->ExportInteractions(&ctx, req, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // Answers of a random model may decode to nothing; those are left out.
  EXPECT_EQ(out.examples() + out.skipped_empty(), good);
  EXPECT_GT(out.examples(), 0);
  EXPECT_TRUE(out.report().valid());
  EXPECT_EQ(out.report().format(), v1::DATASET_FORMAT_CHAT);
  grpc::ClientContext gctx;
  v1::GetDatasetVersionRequest get;
  get.set_name(out.dataset_version());
  v1::DatasetVersion version;
  s = datasets_stub_->GetDatasetVersion(&gctx, get, &version);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(version.format(), v1::DATASET_FORMAT_CHAT);
  EXPECT_EQ(version.train_stats().examples(), out.examples());
}

TEST_F(RouterServiceTest, StreamSendsHeadThenDeltasThenUsage) {
  ASSERT_TRUE(Create(ThreeArms("stream")).ok());
  v1::ChatRequest r = Ask("stream", "What are the office hours?", "", "both");
  r.mutable_sampling()->set_max_tokens(12);
  v1::ChatResponse unary;
  ASSERT_TRUE(Chat(r, &unary).ok());
  grpc::ClientContext ctx;
  auto reader = stub_->ChatStream(&ctx, r);
  std::vector<v1::ChatStreamResponse> messages;
  v1::ChatStreamResponse m;
  while (reader->Read(&m)) messages.push_back(m);
  grpc::Status s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_GE(messages.size(), 2u);
  EXPECT_EQ(messages.front().arm(), "both");
  EXPECT_EQ(messages.front().sources_size(), 2);
  std::string text;
  for (const auto& msg : messages) {
    EXPECT_EQ(msg.response_id(), messages.front().response_id());
    text += msg.text();
  }
  EXPECT_EQ(text, unary.text());
  EXPECT_EQ(messages.back().usage().completion_tokens(), 12);
  EXPECT_NE(messages.back().finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
}

TEST_F(RouterServiceTest, BadExperimentsAreRefusedNamingTheField) {
  v1::Experiment e = ThreeArms("bad");
  e.mutable_arms(1)->mutable_retrieval()->set_collection("nowhere");
  grpc::Status s = Create(e);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "arms[1].retrieval.collection"))
      << s.error_message();
  e = ThreeArms("bad");
  e.mutable_arms(0)->set_model("missing-model");
  s = Create(e);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "arms[0].model")) << s.error_message();
  e = ThreeArms("bad");
  e.mutable_arms(2)->set_adapter("no-such-adapter");
  s = Create(e);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "arms[2].adapter")) << s.error_message();
  e = ThreeArms("bad");
  (*e.mutable_weights())["nope"] = 1;
  s = Create(e);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "weights.nope")) << s.error_message();
  e = ThreeArms("bad");
  e.mutable_arms(2)->set_name("ft");
  EXPECT_EQ(Create(e).error_code(), StatusCode::INVALID_ARGUMENT);
  e = ThreeArms("Bad Id");
  EXPECT_EQ(Create(e).error_code(), StatusCode::INVALID_ARGUMENT);
  ASSERT_TRUE(Create(ThreeArms("good")).ok());
  EXPECT_EQ(Create(ThreeArms("good")).error_code(), StatusCode::ALREADY_EXISTS);
}

TEST_F(RouterServiceTest, UpdateRampsWeightsAndArchiveStopsTraffic) {
  v1::Experiment e;
  e.set_name("ramp");
  *e.add_arms() = Arm("a", "", false, 1);
  *e.add_arms() = Arm("b", "", false, 1);
  (*e.mutable_weights())["a"] = 90;
  (*e.mutable_weights())["b"] = 10;
  ASSERT_TRUE(Create(e).ok());
  std::map<std::string, std::string> before;
  for (int i = 0; i < 300; ++i) {
    v1::ChatResponse out;
    ASSERT_TRUE(Chat(Ask("ramp", "x", absl::StrCat("k", i)), &out).ok());
    before[absl::StrCat("k", i)] = out.arm();
  }
  grpc::ClientContext ctx;
  v1::UpdateExperimentRequest up;
  up.mutable_experiment()->set_name("experiments/ramp");
  (*up.mutable_experiment()->mutable_weights())["a"] = 50;
  (*up.mutable_experiment()->mutable_weights())["b"] = 50;
  up.mutable_update_mask()->add_paths("weights");
  v1::Experiment updated;
  ASSERT_TRUE(stub_->UpdateExperiment(&ctx, up, &updated).ok());
  EXPECT_NEAR(updated.effective_weights().at("b"), 0.5, 1e-12);
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("k", i);
    v1::ChatResponse out;
    ASSERT_TRUE(Chat(Ask("ramp", "x", key), &out).ok());
    // Keys move only into the arm whose weight rose.
    if (before[key] == "b") EXPECT_EQ(out.arm(), "b") << key;
  }
  grpc::ClientContext actx;
  v1::ArchiveExperimentRequest ar;
  ar.set_name("ramp");
  v1::Experiment archived;
  ASSERT_TRUE(stub_->ArchiveExperiment(&actx, ar, &archived).ok());
  EXPECT_EQ(archived.state(), v1::EXPERIMENT_STATE_ARCHIVED);
  v1::ChatResponse out;
  EXPECT_EQ(Chat(Ask("ramp", "x", "k1"), &out).error_code(), StatusCode::FAILED_PRECONDITION);
  grpc::ClientContext uctx;
  EXPECT_EQ(stub_->UpdateExperiment(&uctx, up, &updated).error_code(),
            StatusCode::FAILED_PRECONDITION);
}

TEST_F(RouterServiceTest, DeadlineEndsTheRequestAndIsLogged) {
  v1::Experiment e;
  e.set_name("deadline");
  *e.add_arms() = Arm("long", "", false, 500);
  ASSERT_TRUE(Create(e).ok());
  v1::ChatResponse out;
  // 500 tokens take longer than 30 ms even on a fast machine.
  grpc::Status s = Chat(Ask("deadline", "go on", "d1"), &out, 30);
  EXPECT_EQ(s.error_code(), StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  v1::ExperimentReport report;
  for (int i = 0; i < 100 && (report.arms_size() == 0 || report.arms(0).requests() == 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    report = Report("deadline");
  }
  ASSERT_EQ(report.arms_size(), 1);
  EXPECT_EQ(report.arms(0).errors(), 1);
}

TEST_F(RouterServiceTest, BanditMovesTrafficToTheWinnerKeepingTheFloor) {
  v1::Experiment e;
  e.set_name("bandit");
  *e.add_arms() = Arm("a", "", false, 1);
  *e.add_arms() = Arm("b", "", false, 1);
  e.mutable_bandit()->set_enabled(true);
  e.mutable_bandit()->set_floor(0.1);
  ASSERT_TRUE(Create(e).ok());
  for (int i = 0; i < 40; ++i) {
    v1::ChatResponse out;
    ASSERT_TRUE(Chat(Ask("bandit", "x", "", i % 2 ? "a" : "b"), &out).ok());
  }
  // Overridden requests are left out of the bandit: rate served ones.
  for (int i = 0; i < 80; ++i) {
    v1::ChatResponse out;
    ASSERT_TRUE(Chat(Ask("bandit", "x", absl::StrCat("bk", i)), &out).ok());
    ASSERT_TRUE(Feedback(out.response_id(), out.arm() == "b" ? 0.9 : 0.1).ok());
  }
  router_->UpdateBandits(true);
  grpc::ClientContext ctx;
  v1::GetExperimentRequest get;
  get.set_name("bandit");
  v1::Experiment now;
  ASSERT_TRUE(stub_->GetExperiment(&ctx, get, &now).ok());
  EXPECT_GT(now.effective_weights().at("b"), 0.85);
  EXPECT_GE(now.effective_weights().at("a"), 0.1 - 1e-12);
  EXPECT_NEAR(now.effective_weights().at("a") + now.effective_weights().at("b"), 1, 1e-9);
}

TEST_F(RouterServiceTest, EvaluationScoresEveryArmAndTheBaseAgainstReferences) {
  ASSERT_TRUE(Create(ThreeArms("offline")).ok());
  // References: for the first half of the questions, exactly what the base
  // model answers greedily (so the base scores 1 there); for the rest,
  // something no model here says. Each names the document holding it.
  const std::vector<std::pair<std::string, std::string>> questions = {
      {"How long do refunds take?", "refunds"},
      {"When is the office open?", "hours"},
      {"Where do staff park?", "parking"},
      {"Refund timing?", "refunds"},
      {"Opening hours?", "hours"},
      {"Parking level?", "parking"}};
  std::string jsonl;
  std::vector<std::string> base_answers;
  for (size_t i = 0; i < questions.size(); ++i) {
    google::protobuf::RepeatedPtrField<v1::ChatMessage> prompt;
    v1::ChatMessage* m = prompt.Add();
    m->set_role("user");
    m->set_content(questions[i].first);
    const std::string base = Direct(prompt, "", 6);
    const std::string reference = i < 3 && !base.empty() ? base : "a reference nobody says";
    base_answers.push_back(reference);
    nlohmann::json line = {{"messages",
                            {{{"role", "user"}, {"content", questions[i].first}},
                             {{"role", "assistant"}, {"content", reference}}}},
                           {"metadata", {{"source_document", questions[i].second}}}};
    jsonl += line.dump() + "\n";
  }
  {
    grpc::ClientContext ctx;
    v1::UploadDatasetResponse uploaded;
    auto writer = datasets_stub_->UploadDataset(&ctx, &uploaded);
    v1::UploadDatasetRequest header;
    header.mutable_header()->set_dataset_id("offline-qa");
    ASSERT_TRUE(writer->Write(header));
    v1::UploadDatasetRequest chunk;
    chunk.mutable_chunk()->set_data(jsonl);
    ASSERT_TRUE(writer->Write(chunk));
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  grpc::ClientContext ctx;
  v1::RunEvaluationRequest req;
  req.set_experiment("offline");
  req.set_dataset("datasets/offline-qa");
  req.mutable_sampling()->set_max_tokens(6);
  req.mutable_sampling()->set_ignore_eos(true);
  auto reader = stub_->RunEvaluation(&ctx, req);
  v1::EvaluationProgress p;
  v1::Evaluation e;
  int64_t last_done = 0;
  while (reader->Read(&p)) {
    EXPECT_GE(p.done(), last_done);
    last_done = p.done();
    if (p.has_evaluation()) e = p.evaluation();
  }
  grpc::Status s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(last_done, 4 * 6);
  ASSERT_EQ(e.arms_size(), 4);
  EXPECT_EQ(e.arms(0).arm(), "base");
  EXPECT_EQ(e.examples(), 6);
  // The base model's answers are its references on half the examples.
  const int matched = static_cast<int>(
      std::count_if(base_answers.begin(), base_answers.begin() + 3,
                    [](const std::string& r) { return r != "a reference nobody says"; }));
  EXPECT_NEAR(e.arms(0).exact_match().value(), matched / 6.0, 1e-9);
  EXPECT_NEAR(e.arms(0).token_f1().value(), matched / 6.0, 1e-9);
  EXPECT_LE(e.arms(0).exact_match().ci_low(), e.arms(0).exact_match().value());
  for (const v1::ArmEvaluation& a : e.arms()) {
    EXPECT_EQ(a.errors(), 0) << a.arm();
    EXPECT_EQ(a.reference_logprob().n(), 6) << a.arm();
    EXPECT_LT(a.reference_logprob().value(), 0) << a.arm();
    EXPECT_EQ(a.has_retrieval_metrics(), a.retrieval()) << a.arm();
  }
  // The RAG arms found each question's document among their two sources.
  EXPECT_GT(e.arms(2).retrieval_metrics().hit_rate(), 0.5);
  EXPECT_EQ(e.arms(2).retrieval_metrics().examples(), 6);
  EXPECT_GT(e.arms(2).prompt_tokens_per_example(), e.arms(0).prompt_tokens_per_example());
  // Every arm against the base, on four metrics.
  EXPECT_EQ(e.comparisons_size(), 3 * 4);
  for (const v1::EvaluationComparison& c : e.comparisons()) EXPECT_EQ(c.baseline(), "base");

  // Stored: listed and readable by id.
  grpc::ClientContext lctx;
  v1::ListEvaluationsRequest list;
  list.set_experiment("offline");
  v1::ListEvaluationsResponse listed;
  ASSERT_TRUE(stub_->ListEvaluations(&lctx, list, &listed).ok());
  ASSERT_EQ(listed.evaluations_size(), 1);
  EXPECT_EQ(listed.evaluations(0).evaluation_id(), e.evaluation_id());
  grpc::ClientContext gctx;
  v1::GetEvaluationRequest get;
  get.set_name(e.name());
  v1::Evaluation again;
  ASSERT_TRUE(stub_->GetEvaluation(&gctx, get, &again).ok());
  EXPECT_EQ(again.arms(1).token_f1().value(), e.arms(1).token_f1().value());

  // A preference dataset is refused.
  grpc::ClientContext bctx;
  v1::RunEvaluationRequest bad = req;
  bad.set_dataset("datasets/shadow-prefs");
  auto bad_reader = stub_->RunEvaluation(&bctx, bad);
  while (bad_reader->Read(&p)) {
  }
  s = bad_reader->Finish();
  EXPECT_TRUE(s.error_code() == StatusCode::INVALID_ARGUMENT ||
              s.error_code() == StatusCode::NOT_FOUND)
      << s.error_message();
}

TEST_F(RouterServiceTest, ABudgetThatHoldsNoSourceAnswersWithoutContextAndSaysSo) {
  v1::Experiment e;
  e.set_name("nobudget");
  *e.add_arms() = Arm("rag", "", true);
  e.mutable_arms(0)->mutable_context()->set_context_template("{{sources}}");
  e.mutable_arms(0)->mutable_context()->set_context_token_budget(5);
  ASSERT_TRUE(Create(e).ok());
  v1::ChatRequest r = Ask("nobudget", "refunds?");
  r.set_return_prompt(true);
  v1::ChatResponse out;
  grpc::Status s = Chat(r, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(out.sources().empty());
  EXPECT_TRUE(out.context_missing());
  EXPECT_EQ(out.context_missing_reason(), v1::CONTEXT_MISSING_REASON_NO_BUDGET);
  ASSERT_EQ(out.prompt_messages_size(), 1);  // the conversation as sent
}

TEST_F(RouterServiceTest, NonAsciiSourcesAreMeasuredAndCutOnCharacterBoundaries) {
  // Tokenize: offsets never decrease, end at the text's size and fall on
  // character boundaries (byte-level BPE splits these characters).
  const std::string text = "東京 café – 日本";
  grpc::ClientContext ctx;
  v1::TokenizeRequest req;
  req.set_model("base");
  req.add_texts(text);
  req.set_return_offsets(true);
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(inference_->Tokenize(&ctx, req, &tokens).ok());
  ASSERT_EQ(tokens.texts_size(), 1);
  const auto& ends = tokens.texts(0).token_end_offsets();
  ASSERT_EQ(ends.size(), tokens.texts(0).token_count());
  ASSERT_FALSE(ends.empty());
  EXPECT_EQ(ends[ends.size() - 1], static_cast<int>(text.size()));
  for (int i = 0; i < ends.size(); ++i) {
    if (i > 0) EXPECT_GE(ends[i], ends[i - 1]);
    EXPECT_TRUE(IsValidUtf8(text.substr(0, ends[i]))) << "offset " << ends[i];
  }
  EXPECT_GT(tokens.max_context_tokens(), 0);

  // Every source of the collection, with the auto budget and with one so
  // small the Japanese source must be cut.
  v1::Experiment e;
  e.set_name("unicode");
  *e.add_arms() = Arm("all", "", true);
  e.mutable_arms(0)->mutable_retrieval()->set_k(10);
  *e.add_arms() = Arm("tight", "", true);
  e.mutable_arms(1)->mutable_retrieval()->set_k(10);
  e.mutable_arms(1)->mutable_retrieval()->set_query_messages(1);
  e.mutable_arms(1)->mutable_context()->set_context_template("{{sources}}");
  e.mutable_arms(1)->mutable_context()->set_context_token_budget(30);
  ASSERT_TRUE(Create(e).ok());
  for (const char* arm : {"all", "tight"}) {
    v1::ChatRequest r = Ask("unicode", "東京オフィス", "", arm);
    r.set_retrieval_query("東京オフィスは何時まで開いていますか");
    v1::ChatResponse out;
    grpc::Status s = Chat(r, &out);
    ASSERT_TRUE(s.ok()) << arm << ": " << s.error_message();
    ASSERT_GT(out.sources_size(), 0) << arm;
    for (const v1::Source& src : out.sources()) {
      EXPECT_TRUE(IsValidUtf8(src.text())) << arm << " " << src.chunk_id();
    }
    if (std::string(arm) == "all") EXPECT_EQ(out.sources_size(), 4);
    if (std::string(arm) == "tight") {
      EXPECT_EQ(out.sources_size(), 1);
      EXPECT_TRUE(out.sources(0).truncated());
    }
  }
}

}  // namespace
}  // namespace switchyard::router
