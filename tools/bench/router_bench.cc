// Router benchmark: the latency the router adds over calling inference
// directly, and requests per second through it, with a fast backend (a tiny
// Llama generating one token). One process serves inference, retrieval and
// the router on loopback, as `serve --target=all` does; the client calls over
// TCP. Each row alternates direct and routed calls so drift hits both alike.
//
//   ./tools/bench/run router [--requests=2000] [--concurrency=16] [--seconds=5]
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "services/inference/inference_service.h"
#include "services/retrieval/collection_store.h"
#include "services/retrieval/retrieval_service.h"
#include "services/router/router_service.h"
#include "shared/core/file_util.h"
#include "shared/core/flags.h"
#include "shared/model/init.h"
#include "shared/model/runtime.h"
#include "shared/rpc/server_runner.h"
#include "tools/bench/bench_util.h"

namespace switchyard::bench {
namespace {

v1::SamplingParams OneToken() {
  v1::SamplingParams s;
  s.set_temperature(0);
  s.set_max_tokens(1);
  s.set_ignore_eos(true);
  return s;
}

v1::ChatMessage User(const std::string& text) {
  v1::ChatMessage m;
  m.set_role("user");
  m.set_content(text);
  return m;
}

void CheckGrpc(const grpc::Status& s, const std::string& what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s.error_message() << "\n";
    std::exit(1);
  }
}

struct Latencies {
  std::vector<double> direct, routed;
};

int Main(int argc, char** argv) {
  FlagSet flags("router_bench [flags]", "Latency the router adds over inference; requests/s.");
  flags.AddInt("requests", 2000, "Sequential requests per row and path.");
  flags.AddInt("concurrency", 16, "Concurrent clients for the throughput rows.");
  flags.AddInt("seconds", 5, "Duration of each throughput row.");
  absl::Status parsed = flags.Parse(std::vector<std::string>(argv + 1, argv + argc));
  Check(parsed, "flags");
  const int requests = static_cast<int>(flags.GetInt("requests"));
  model::SetTorchThreads(1);  // leave a core for gRPC and the router

  const std::string dir = absl::StrCat("/tmp/router_bench_", RandomHex(6));
  model::InitOptions o;
  o.layers = 2;
  o.hidden = 64;
  o.heads = 4;
  o.max_positions = 512;
  o.seed = 3;
  Check(model::InitCheckpoint(o, dir + "/models/base"), "init model");
  model::LoraConfig lora;
  lora.r = 8;
  lora.target_modules = {"q_proj", "v_proj"};
  Check(model::InitAdapter(dir + "/models/base", lora, 5, 0.1, dir + "/models/ft"), "adapter");

  auto registry = std::make_shared<prometheus::Registry>();
  auto auth = std::make_shared<rpc::Authorizer>();
  inference::InferenceServiceOptions iopts;
  iopts.data_dir = dir;
  iopts.engine.max_batch_size = 32;
  iopts.engine.threads = 1;
  inference::InferenceServiceImpl inference(iopts, auth, *registry);
  Check(inference.AddModel("base", "").status(), "load model");
  auto collections = retrieval::CollectionStore::Open(dir);
  Check(collections.status(), "collections");
  retrieval::RetrievalServiceImpl retrieval(collections->get(), auth, *registry);
  auto store = router::ExperimentStore::Open(dir + "/switchyard.db");
  Check(store.status(), "store");
  auto router = router::RouterServiceImpl::Create({}, store->get(), {}, auth, *registry);
  Check(router.status(), "router");
  rpc::ServerOptions server;
  server.grpc_listen = "127.0.0.1:0";
  server.metrics_listen = "";
  rpc::ServerRunner runner(server, registry);
  runner.AddService(&inference, "switchyard.v1.InferenceService");
  runner.AddService(&retrieval, "switchyard.v1.RetrievalService");
  runner.AddService(router->get(), "switchyard.v1.RouterService");
  Check(runner.Start(), "start");
  router::Backends backends;
  backends.inference = runner.InProcessChannel();
  backends.retrieval = runner.InProcessChannel();
  (*router)->SetBackends(backends);

  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", runner.grpc_port()),
                                     grpc::InsecureChannelCredentials());
  auto inference_stub = v1::InferenceService::NewStub(channel);
  auto router_stub = v1::RouterService::NewStub(channel);
  auto retrieval_stub = v1::RetrievalService::NewStub(channel);
  {
    grpc::ClientContext ctx;
    v1::CreateCollectionRequest create;
    create.mutable_collection()->set_collection_id("handbook");
    v1::Collection made;
    CheckGrpc(retrieval_stub->CreateCollection(&ctx, create, &made), "create collection");
    v1::UpsertDocumentsRequest docs;
    docs.set_collection("collections/handbook");
    for (int i = 0; i < 200; ++i) {
      v1::Document* d = docs.add_documents();
      d->set_id(absl::StrCat("doc-", i));
      d->set_text(absl::StrCat("Policy ", i, ": requests of kind ", i % 17, " are answered within ",
                               i % 9 + 1, " days by team ", i % 5, "."));
    }
    grpc::ClientContext ctx2;
    v1::UpsertDocumentsResponse up;
    CheckGrpc(retrieval_stub->UpsertDocuments(&ctx2, docs, &up), "upsert documents");
  }
  // Arms: base, adapter, RAG (k=2, sources in the prompt).
  {
    grpc::ClientContext ctx;
    v1::CreateExperimentRequest req;
    v1::Experiment* e = req.mutable_experiment();
    e->set_name("bench");
    for (const char* name : {"base", "ft", "rag"}) {
      v1::Arm* arm = e->add_arms();
      arm->set_name(name);
      arm->set_model("base");
      if (std::string(name) == "ft") arm->set_adapter("ft");
      if (std::string(name) == "rag") {
        arm->mutable_retrieval()->set_collection("handbook");
        arm->mutable_retrieval()->set_k(2);
        arm->mutable_context()->set_context_token_budget(200);
      }
      *arm->mutable_sampling() = OneToken();
    }
    v1::Experiment out;
    CheckGrpc(router_stub->CreateExperiment(&ctx, req, &out), "create experiment");
  }

  const std::string question = "How many days until kind 3 requests are answered?";
  // The direct call the arm makes (without and with the RAG prompt).
  auto direct = [&](const std::string& adapter, const v1::ChatRequest* rag_prompt) {
    v1::GenerateRequest req;
    req.set_model("base");
    req.set_adapter(adapter);
    if (rag_prompt != nullptr) {
      *req.mutable_chat()->mutable_messages() = rag_prompt->messages();
    } else {
      *req.mutable_chat()->add_messages() = User(question);
    }
    *req.mutable_sampling() = OneToken();
    grpc::ClientContext ctx;
    v1::CompleteResponse out;
    CheckGrpc(inference_stub->Complete(&ctx, req, &out), "direct");
  };
  auto routed = [&](const std::string& arm, v1::ChatResponse* out) {
    v1::ChatRequest req;
    req.set_experiment("bench");
    req.set_arm(arm);
    *req.add_messages() = User(question);
    req.set_return_prompt(out != nullptr);
    grpc::ClientContext ctx;
    v1::ChatResponse ignored;
    CheckGrpc(router_stub->Chat(&ctx, req, out ? out : &ignored), "routed");
  };
  // The RAG arm's prompt as the router builds it, for its direct baseline.
  v1::ChatResponse rag_answer;
  routed("rag", &rag_answer);
  v1::ChatRequest rag_prompt;
  *rag_prompt.mutable_messages() = rag_answer.prompt_messages();

  struct Row {
    std::string arm, adapter;
    bool rag;
  };
  std::printf(
      "Router benchmark: tiny Llama (2 layers, 64 wide), 1 generated token per request,\n"
      "sequential requests over loopback TCP, %d per path, alternating.\n\n",
      requests);
  std::printf("%-6s %12s %12s %12s %12s %12s %12s\n", "arm", "direct p50", "routed p50",
              "added p50", "direct p99", "routed p99", "added p99");
  for (const Row& row : {Row{"base", "", false}, Row{"ft", "ft", false}, Row{"rag", "", true}}) {
    Latencies lat;
    for (int i = 0; i < 50; ++i) {  // warm up
      direct(row.adapter, row.rag ? &rag_prompt : nullptr);
      routed(row.arm, nullptr);
    }
    for (int i = 0; i < requests; ++i) {
      Clock::time_point t0 = Clock::now();
      direct(row.adapter, row.rag ? &rag_prompt : nullptr);
      Clock::time_point t1 = Clock::now();
      routed(row.arm, nullptr);
      Clock::time_point t2 = Clock::now();
      lat.direct.push_back(Seconds(t0, t1) * 1e3);
      lat.routed.push_back(Seconds(t1, t2) * 1e3);
    }
    const double d50 = Percentile(lat.direct, 0.5), r50 = Percentile(lat.routed, 0.5);
    const double d99 = Percentile(lat.direct, 0.99), r99 = Percentile(lat.routed, 0.99);
    std::printf("%-6s %9.3f ms %9.3f ms %9.3f ms %9.3f ms %9.3f ms %9.3f ms\n", row.arm.c_str(),
                d50, r50, r50 - d50, d99, r99, r99 - d99);
  }

  // Throughput: closed loop with `concurrency` clients.
  const int concurrency = static_cast<int>(flags.GetInt("concurrency"));
  const double seconds = static_cast<double>(flags.GetInt("seconds"));
  std::printf("\n%-22s %12s\n", absl::StrFormat("%d clients", concurrency).c_str(), "requests/s");
  for (int path = 0; path < 3; ++path) {
    std::atomic<int64_t> done{0};
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    const Clock::time_point start = Clock::now();
    for (int c = 0; c < concurrency; ++c) {
      clients.emplace_back([&, path] {
        while (!stop.load()) {
          if (path == 0) direct("", nullptr);
          if (path == 1) routed("base", nullptr);
          if (path == 2) routed("rag", nullptr);
          done.fetch_add(1);
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop = true;
    for (std::thread& t : clients) t.join();
    const double rate = static_cast<double>(done.load()) / Seconds(start, Clock::now());
    const char* names[] = {"direct inference", "router, base arm", "router, rag arm"};
    std::printf("%-22s %12.0f\n", names[path], rate);
  }
  runner.Shutdown();
  runner.Wait();
  (void)RemoveAll(dir);
  return 0;
}

}  // namespace
}  // namespace switchyard::bench

int main(int argc, char** argv) { return switchyard::bench::Main(argc, argv); }
