// The retrieval service over real gRPC in-process: ServerRunner on
// 127.0.0.1:0 with RetrievalServiceImpl over a CollectionStore in a temp data
// dir; the built-in embedder and a tiny sentence-transformers BERT checkpoint.
#include "services/retrieval/retrieval_service.h"

#include <gmock/gmock.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/retrieval/hash_embedder.h"
#include "shared/core/file_util.h"
#include "shared/rpc/auth.h"
#include "shared/rpc/server_runner.h"
#include "switchyard/v1/retrieval.grpc.pb.h"
#include "tests/testing/tiny_bert.h"

namespace switchyard::retrieval {
namespace {

using ::testing::HasSubstr;

constexpr char kAdminToken[] = "admin-token-0123456789";
constexpr char kUserToken[] = "user-token-0123456789";

class RetrievalServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/retrieval_service_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  void TearDown() override {
    StopServer();
    (void)RemoveAll(dir_);
  }

  void StartServer(
      std::shared_ptr<const rpc::Authorizer> auth = std::make_shared<rpc::Authorizer>()) {
    metrics_ = std::make_shared<prometheus::Registry>();
    auto store = CollectionStore::Open(dir_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    service_ = std::make_unique<RetrievalServiceImpl>(store_.get(), auth, *metrics_);
    rpc::ServerOptions options;
    options.grpc_listen = "127.0.0.1:0";
    options.metrics_listen = "";
    options.drain_timeout = absl::Seconds(2);
    runner_ = std::make_unique<rpc::ServerRunner>(options, metrics_);
    runner_->AddService(service_.get(), "switchyard.v1.RetrievalService");
    absl::Status s = runner_->Start();
    ASSERT_TRUE(s.ok()) << s;
    stub_ = v1::RetrievalService::NewStub(grpc::CreateChannel(
        absl::StrCat("127.0.0.1:", runner_->grpc_port()), grpc::InsecureChannelCredentials()));
  }

  void StopServer() {
    if (runner_) {
      runner_->Shutdown();
      runner_->Wait();
    }
    runner_.reset();
    service_.reset();
    store_.reset();
  }

  static void Prepare(grpc::ClientContext* ctx, const std::string& token = "") {
    if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  }

  grpc::Status Create(const std::string& id, const std::string& model, v1::Collection* out,
                      int dimension = 0, const std::string& token = "") {
    grpc::ClientContext ctx;
    Prepare(&ctx, token);
    v1::CreateCollectionRequest req;
    req.mutable_collection()->set_collection_id(id);
    req.mutable_collection()->mutable_embedder()->set_model(model);
    req.mutable_collection()->mutable_embedder()->set_dimension(dimension);
    return stub_->CreateCollection(&ctx, req, out);
  }

  static v1::Document Doc(const std::string& id, const std::string& text,
                          const std::string& team = "") {
    v1::Document d;
    d.set_id(id);
    d.set_text(text);
    if (!team.empty()) (*d.mutable_metadata())["team"] = team;
    return d;
  }

  // Header, then one message per batch.
  grpc::Status Ingest(const std::string& collection,
                      const std::vector<std::vector<v1::Document>>& batches,
                      v1::IngestDocumentsResponse* out) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    auto writer = stub_->IngestDocuments(&ctx, out);
    v1::IngestDocumentsRequest header;
    header.mutable_header()->set_collection(collection);
    writer->Write(header);
    for (const auto& batch : batches) {
      v1::IngestDocumentsRequest msg;
      for (const auto& d : batch) *msg.mutable_batch()->add_documents() = d;
      if (!writer->Write(msg)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  v1::SearchResponse Search(v1::SearchRequest req, grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::SearchResponse out;
    grpc::Status s = stub_->Search(&ctx, req, &out);
    if (status != nullptr) {
      *status = s;
    } else {
      EXPECT_TRUE(s.ok()) << s.error_message();
    }
    return out;
  }

  int64_t Documents(const std::string& name) {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::GetCollectionRequest req;
    req.set_name(name);
    v1::Collection c;
    grpc::Status s = stub_->GetCollection(&ctx, req, &c);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return c.stats().documents();
  }

  std::string dir_;
  std::shared_ptr<prometheus::Registry> metrics_;
  std::unique_ptr<CollectionStore> store_;
  std::unique_ptr<RetrievalServiceImpl> service_;
  std::unique_ptr<rpc::ServerRunner> runner_;
  std::unique_ptr<v1::RetrievalService::Stub> stub_;
};

TEST_F(RetrievalServiceTest, IngestErrorNamesTheMessageAndKeepsEarlierBatches) {
  StartServer();
  v1::Collection c;
  ASSERT_TRUE(Create("kb", "hash", &c).ok());
  EXPECT_EQ(c.name(), "collections/kb");
  EXPECT_EQ(c.embedder().dimension(), 384);
  EXPECT_EQ(c.chunking().chunk_tokens(), 256);
  EXPECT_EQ(c.stats().index_type(), "IndexFlatIP");

  v1::IngestDocumentsResponse out;
  grpc::Status s = Ingest(
      "kb",
      {{Doc("a", "refunds take five days", "billing"), Doc("b", "boots run true to size", "shop")},
       {Doc("c", "gift cards never expire"), Doc("d", "  ")}},
      &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("message 3: documents[1].text"));
  EXPECT_EQ(Documents("kb"), 2);

  // Saved on the error: still there after a restart.
  StopServer();
  StartServer();
  EXPECT_EQ(Documents("collections/kb"), 2);

  // A duplicate id in one stream is a warning; the later copy wins.
  s = Ingest("kb", {{Doc("e", "first copy")}, {Doc("e", "second copy wins")}}, &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(out.documents(), 2);
  ASSERT_EQ(out.warnings_size(), 1);
  EXPECT_EQ(out.warnings(0).kind(), "duplicate_id_in_stream");
  EXPECT_EQ(out.warnings(0).line(), 2);
  EXPECT_EQ(out.stats().documents(), 3);

  // Upsert refuses duplicates within a request, naming the second.
  grpc::ClientContext ctx;
  Prepare(&ctx);
  v1::UpsertDocumentsRequest up;
  up.set_collection("kb");
  *up.add_documents() = Doc("x", "one");
  *up.add_documents() = Doc("x", "two");
  v1::UpsertDocumentsResponse up_out;
  s = stub_->UpsertDocuments(&ctx, up, &up_out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("documents[1].id"));

  // An ingest into a missing collection.
  s = Ingest("nope", {{Doc("a", "text")}}, &out);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(RetrievalServiceTest, SearchTakesTextsAndPrecomputedVectors) {
  StartServer();
  v1::Collection c;
  ASSERT_TRUE(Create("kb", "hash", &c, 128).ok());
  v1::IngestDocumentsResponse out;
  ASSERT_TRUE(Ingest("kb",
                     {{Doc("refunds", "refunds take five business days", "billing"),
                       Doc("boots", "our boots run true to size", "shop"),
                       Doc("cards", "gift cards never expire", "billing")}},
                     &out)
                  .ok());
  v1::SearchRequest req;
  req.set_collection("collections/kb");
  req.add_queries("how long do refunds take");
  auto embedded = HashEmbedder::Create(128)->Embed({"gift cards expire"});
  v1::QueryVector* v = req.add_query_vectors();
  v->mutable_values()->Add(embedded->begin(), embedded->end());
  req.set_k(2);
  v1::SearchResponse r = Search(req);
  ASSERT_EQ(r.results_size(), 2);
  EXPECT_EQ(r.results(0).query(), "how long do refunds take");
  EXPECT_EQ(r.results(0).hits(0).document_id(), "refunds");
  EXPECT_EQ(r.results(0).hits(0).chunk_id(), "refunds#0");
  EXPECT_EQ(r.results(0).hits(0).text(), "refunds take five business days");
  EXPECT_EQ(r.results(0).hits(0).metadata().at("team"), "billing");
  EXPECT_EQ(r.results(1).query(), "");
  EXPECT_EQ(r.results(1).hits(0).document_id(), "cards");

  // Hybrid with a filter: fields of both lists; only billing documents.
  v1::SearchRequest hybrid;
  hybrid.set_collection("kb");
  hybrid.add_queries("refunds");
  hybrid.set_mode(v1::SEARCH_MODE_HYBRID);
  auto* cond = hybrid.mutable_filter()->add_conditions();
  cond->set_key("team");
  cond->add_values("billing");
  r = Search(hybrid);
  ASSERT_GE(r.results(0).hits_size(), 1);
  EXPECT_EQ(r.results(0).hits(0).document_id(), "refunds");
  EXPECT_EQ(r.results(0).hits(0).lexical_rank(), 1);
  for (const auto& h : r.results(0).hits()) EXPECT_EQ(h.metadata().at("team"), "billing");

  grpc::Status s;
  v1::SearchRequest bad = req;
  bad.mutable_query_vectors(0)->mutable_values()->RemoveLast();
  Search(bad, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("query_vectors[0]"));
  bad = req;
  bad.set_k(1001);
  Search(bad, &s);
  EXPECT_THAT(s.error_message(), HasSubstr("k: must be in [1, 1000]"));
  bad = req;
  bad.set_collection("missing");
  Search(bad, &s);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);

  // The search metrics count answered queries by collection and mode.
  std::map<std::string, double> by_mode;
  for (const auto& family : metrics_->Collect()) {
    if (family.name != "switchyard_retrieval_queries_total") continue;
    for (const auto& m : family.metric) {
      for (const auto& l : m.label) {
        if (l.name == "mode") by_mode[l.value] += m.counter.value;
      }
    }
  }
  EXPECT_EQ(by_mode["dense"], 2);  // one request of two queries; the bad ones not
  EXPECT_EQ(by_mode["hybrid"], 1);
}

TEST_F(RetrievalServiceTest, BertCheckpointEmbedsChunksOfItsTokenLimit) {
  switchyard::testing::TinyBertDir model("bert");
  StartServer();
  v1::Collection c;
  grpc::Status s = Create("bert-kb", model.path(), &c);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(c.embedder().dimension(), 64);
  EXPECT_EQ(c.embedder().max_tokens(), 62);
  EXPECT_EQ(c.chunking().chunk_tokens(), 62);  // 256 capped at the embedder's limit
  EXPECT_EQ(Create("bert-bad", model.path(), &c, 128).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create("bert-none", dir_ + "/no-such-model", &c).error_code(),
            grpc::StatusCode::NOT_FOUND);

  std::string long_text;
  for (int i = 0; i < 100; ++i) absl::StrAppend(&long_text, "the big red dog ran to the mat . ");
  v1::IngestDocumentsResponse out;
  s = Ingest("bert-kb",
             {{Doc("cat", "the cat sat on the mat ."), Doc("hello", "hello world"),
               Doc("long", long_text)}},
             &out);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(out.chunks(), 2 + 10);  // 1000 word pieces in chunks of at most 62
  v1::SearchRequest req;
  req.set_collection("bert-kb");
  req.add_queries("hello world");
  req.set_k(1);
  v1::SearchResponse r = Search(req);
  ASSERT_EQ(r.results(0).hits_size(), 1);
  EXPECT_EQ(r.results(0).hits(0).document_id(), "hello");
  EXPECT_NEAR(r.results(0).hits(0).score(), 1.0, 1e-4);  // the same text: cosine 1

  // Reloaded (the embedder too) after a restart.
  StopServer();
  StartServer();
  r = Search(req);
  ASSERT_EQ(r.results(0).hits_size(), 1);
  EXPECT_EQ(r.results(0).hits(0).document_id(), "hello");
}

TEST_F(RetrievalServiceTest, ListPagesAndRolesAreEnforced) {
  auto auth = rpc::Authorizer::FromText(
      absl::StrCat(kAdminToken, " admin ops\n", kUserToken, " user app\n"), "tokens");
  ASSERT_TRUE(auth.ok()) << auth.status();
  StartServer(*auth);
  v1::Collection c;
  EXPECT_EQ(Create("a", "hash", &c, 0, kUserToken).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Create("a", "hash", &c, 0, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  for (const char* id : {"c", "a", "b"}) ASSERT_TRUE(Create(id, "hash", &c, 0, kAdminToken).ok());
  EXPECT_EQ(Create("a", "hash", &c, 0, kAdminToken).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  grpc::ClientContext ctx;
  Prepare(&ctx, kUserToken);
  v1::ListCollectionsRequest list;
  list.set_page_size(2);
  v1::ListCollectionsResponse page;
  ASSERT_TRUE(stub_->ListCollections(&ctx, list, &page).ok());
  ASSERT_EQ(page.collections_size(), 2);
  EXPECT_EQ(page.collections(0).collection_id(), "a");
  EXPECT_EQ(page.total_size(), 3);
  ASSERT_FALSE(page.next_page_token().empty());
  grpc::ClientContext ctx2;
  Prepare(&ctx2, kUserToken);
  list.set_page_token(page.next_page_token());
  ASSERT_TRUE(stub_->ListCollections(&ctx2, list, &page).ok());
  ASSERT_EQ(page.collections_size(), 1);
  EXPECT_EQ(page.collections(0).collection_id(), "c");
  EXPECT_TRUE(page.next_page_token().empty());

  grpc::ClientContext del;
  Prepare(&del, kAdminToken);
  v1::DeleteCollectionRequest dreq;
  dreq.set_name("collections/b");
  google::protobuf::Empty empty;
  ASSERT_TRUE(stub_->DeleteCollection(&del, dreq, &empty).ok());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/collections/b"));
  // The id is free again.
  EXPECT_TRUE(Create("b", "hash", &c, 0, kAdminToken).ok());
}

}  // namespace
}  // namespace switchyard::retrieval
