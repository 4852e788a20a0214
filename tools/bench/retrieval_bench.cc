// Retrieval benchmark.
//
// Quality: the labelled set in tests/data/retrieval/quality (documents and
// queries with their relevant documents) in a collection with the built-in
// embedder; recall@5 and MRR@10 per mode (dense, lexical, hybrid), overall
// and per query kind.
//
// Speed: for each size (random unit 384-d vectors) and index spec, one
// collection is built in-process and saved. Then, on the same saved index:
//   faiss:  in-process FAISS (faiss::read_index of the collection's files),
//           single queries from --threads threads, one OpenMP thread each;
//   grpc:   `switchyard serve --target=retrieval` in its own process on that
//           data directory (--search-threads = --threads), single-query
//           Search calls with query_vectors from --clients concurrent
//           clients, each on its own channel.
// Both report QPS, p50 and p99 latency and recall@10 against exact search.
#include <faiss/IVFlib.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIVF.h>
#include <faiss/index_io.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <omp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "services/retrieval/collection.h"
#include "services/retrieval/hash_embedder.h"
#include "shared/core/file_util.h"
#include "shared/core/flags.h"
#include "switchyard/v1/retrieval.grpc.pb.h"
#include "tools/bench/bench_util.h"

namespace {

using namespace switchyard;
using namespace switchyard::retrieval;
using bench::Clock;
using json = nlohmann::json;

using bench::Check;
using bench::Percentile;
using bench::Seconds;

// ---------------------------------------------------------------------------
// Quality

struct Labelled {
  std::string query, kind;
  std::set<std::string> relevant;
};

void Quality(const std::string& dir) {
  std::vector<DocumentInput> docs;
  std::vector<Labelled> queries;
  {
    std::ifstream in(dir + "/docs.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json j = json::parse(line);
      DocumentInput d{j.at("id"), j.at("text"), {}};
      if (j.contains("metadata")) d.metadata = j["metadata"].get<Metadata>();
      docs.push_back(std::move(d));
    }
    std::ifstream q(dir + "/queries.jsonl");
    while (std::getline(q, line)) {
      if (line.empty()) continue;
      json j = json::parse(line);
      queries.push_back(
          {j.at("query"), j.value("kind", "all"), j.at("relevant").get<std::set<std::string>>()});
    }
  }
  if (docs.empty() || queries.empty()) {
    std::cerr << "quality: no documents or queries under " << dir << "\n";
    std::exit(1);
  }
  const std::string tmp = absl::StrCat("/tmp/retrieval_quality_", RandomHex(4));
  CollectionSpec spec;
  spec.id = "quality";
  spec.create_time = absl::Now();
  auto embedder = std::make_shared<HashEmbedder>(*HashEmbedder::Create(384));
  auto c = Collection::Create(tmp + "/quality", spec, embedder);
  Check(c.status(), "create");
  auto prepared = (*c)->Prepare(docs);
  Check(prepared.status(), "prepare");
  Check((*c)->Apply(std::move(*prepared)).status(), "apply");

  std::printf("retrieval quality: %zu documents, %zu queries, built-in hash embedder (384)\n\n",
              docs.size(), queries.size());
  std::map<std::string, int> kinds;
  for (const auto& q : queries) kinds[q.kind]++;
  std::printf("%-8s %-16s %8s %8s %8s\n", "mode", "queries", "recall@5", "MRR@10", "hit@1");
  for (SearchMode mode : {SearchMode::kDense, SearchMode::kLexical, SearchMode::kHybrid}) {
    const char* name = mode == SearchMode::kDense     ? "dense"
                       : mode == SearchMode::kLexical ? "lexical"
                                                      : "hybrid";
    std::map<std::string, std::array<double, 4>> sums;  // kind -> recall, mrr, hit1, n
    for (const auto& q : queries) {
      SearchQuery sq;
      sq.texts = {q.query};
      sq.k = 30;  // chunks; documents are deduplicated below
      sq.mode = mode;
      auto out = (*c)->Search(sq);
      Check(out.status(), "search");
      std::vector<std::string> ranked;  // distinct documents, best first
      for (const auto& h : out->results[0]) {
        if (std::find(ranked.begin(), ranked.end(), h.document_id) == ranked.end()) {
          ranked.push_back(h.document_id);
        }
      }
      double found = 0, rr = 0;
      for (size_t i = 0; i < ranked.size() && i < 10; ++i) {
        if (!q.relevant.count(ranked[i])) continue;
        if (i < 5) ++found;
        if (rr == 0) rr = 1.0 / static_cast<double>(i + 1);
      }
      const double hit1 = !ranked.empty() && q.relevant.count(ranked[0]) ? 1 : 0;
      for (const std::string& k : {q.kind, std::string("all")}) {
        auto& s = sums[k];
        s[0] += found / static_cast<double>(q.relevant.size());
        s[1] += rr;
        s[2] += hit1;
        s[3] += 1;
      }
    }
    for (const auto& [kind, s] : sums) {
      std::printf("%-8s %-16s %8.3f %8.3f %8.3f\n", name,
                  absl::StrCat(kind, " (", static_cast<int>(s[3]), ")").c_str(), s[0] / s[3],
                  s[1] / s[3], s[2] / s[3]);
    }
  }
  std::printf("\n");
  c->reset();
  RemoveAll(tmp).IgnoreError();
}

// ---------------------------------------------------------------------------
// Speed

std::vector<float> RandomUnit(int64_t n, int d, uint64_t seed) {
  std::vector<float> out(static_cast<size_t>(n) * d);
  const int64_t chunk = 65536;
  const int64_t parts = (n + chunk - 1) / chunk;
#pragma omp parallel for
  for (int64_t p = 0; p < parts; ++p) {
    std::mt19937_64 rng(seed * 1000003 + p);
    std::normal_distribution<float> normal;
    for (int64_t i = p * chunk; i < std::min(n, (p + 1) * chunk); ++i) {
      float* v = &out[i * d];
      double norm = 0;
      for (int j = 0; j < d; ++j) {
        v[j] = normal(rng);
        norm += v[j] * v[j];
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(norm));
      for (int j = 0; j < d; ++j) v[j] *= inv;
    }
  }
  return out;
}

struct Run {
  double qps = 0, p50_ms = 0, p99_ms = 0, recall = 0;
  int64_t queries = 0;
};

// Recall@10 of `got` (vector ids) against exact ids.
double RecallAt10(const std::vector<std::vector<int64_t>>& got,
                  const std::vector<std::vector<int64_t>>& truth, int64_t answered) {
  double found = 0;
  for (int64_t q = 0; q < answered; ++q) {
    std::set<int64_t> t(truth[q].begin(), truth[q].end());
    for (int64_t id : got[q]) found += t.count(id);
  }
  return answered == 0 ? 0 : found / (10.0 * static_cast<double>(answered));
}

// Runs `search(q, n)` over queries [q, q + n) (n <= batch) from `threads`
// threads until all are done or `seconds` pass; it returns the ids found per
// query. A query's latency is its call's.
template <typename Search>
Run Drive(int threads, int64_t nq, double seconds, const std::vector<std::vector<int64_t>>& truth,
          int64_t batch, Search search) {
  std::atomic<int64_t> next{0};
  std::vector<std::vector<int64_t>> got(nq);
  std::vector<std::vector<double>> latencies(threads);
  const auto start = Clock::now();
  const auto stop = start + std::chrono::duration<double>(seconds);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      omp_set_num_threads(1);
      while (Clock::now() < stop) {
        const int64_t q = next.fetch_add(batch);
        if (q >= nq) break;
        const int64_t n = std::min(batch, nq - q);
        const auto a = Clock::now();
        std::vector<std::vector<int64_t>> found = search(q, n);
        const double ms = Seconds(a, Clock::now()) * 1000;
        for (int64_t i = 0; i < n; ++i) {
          got[q + i] = std::move(found[i]);
          latencies[t].push_back(ms);
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  const double elapsed = Seconds(start, Clock::now());
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  Run r;
  r.queries = static_cast<int64_t>(all.size());
  r.qps = static_cast<double>(all.size()) / elapsed;
  r.p50_ms = Percentile(all, 0.5);
  r.p99_ms = Percentile(all, 0.99);
  // Only the queries answered (a prefix, up to the threads still in flight).
  int64_t answered = 0;
  while (answered < nq && !got[answered].empty()) ++answered;
  r.recall = RecallAt10(got, truth, answered);
  return r;
}

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

struct Case {
  int64_t n;
  std::string factory;
};

void Speed(const FlagSet& f) {
  const int d = static_cast<int>(f.GetInt("dim"));
  const int threads = f.GetInt("threads") > 0
                          ? static_cast<int>(f.GetInt("threads"))
                          : static_cast<int>(std::thread::hardware_concurrency());
  const int clients = static_cast<int>(f.GetInt("clients"));
  const int64_t nq = f.GetInt("queries");
  const double seconds = f.GetDouble("seconds");
  std::vector<int> nprobes, efs;
  for (absl::string_view v : absl::StrSplit(f.GetString("nprobe"), ',', absl::SkipEmpty())) {
    int x = 0;
    if (absl::SimpleAtoi(v, &x) && x > 0) nprobes.push_back(x);
  }
  for (absl::string_view v : absl::StrSplit(f.GetString("ef-search"), ',', absl::SkipEmpty())) {
    int x = 0;
    if (absl::SimpleAtoi(v, &x) && x > 0) efs.push_back(x);
  }
  if (nprobes.empty() || efs.empty()) {
    std::cerr << "--nprobe and --ef-search: comma-separated positive integers\n";
    std::exit(2);
  }
  std::vector<Case> cases;
  for (absl::string_view c : absl::StrSplit(f.GetString("cases"), ';', absl::SkipEmpty())) {
    std::pair<std::string, std::string> p = absl::StrSplit(c, absl::MaxSplits(':', 1));
    int64_t n = 0;
    if (!absl::SimpleAtoi(p.first, &n) || p.second.empty()) {
      std::cerr << "--cases: expected N:FACTORY;N:FACTORY..., got \"" << c << "\"\n";
      std::exit(2);
    }
    cases.push_back({n, p.second});
  }
  const std::string binary = f.GetString("switchyard");

  std::printf(
      "retrieval speed: random unit %d-d vectors, %lld queries max (or %.0f s) per run;\n"
      "faiss = in-process FAISS on the collection's saved index, %d threads x 1 OpenMP "
      "thread\n(faiss xN: N queries per call);\ngrpc = switchyard serve (--search-threads=%d), %d "
      "concurrent clients, one "
      "query per Search call.\n%u cores.\n\n",
      d, (long long)nq, seconds, threads, threads, clients, std::thread::hardware_concurrency());
  std::printf("%-7s %-14s %8s %-11s %-9s %9s %8s %8s %9s %10s\n", "vectors", "index", "build s",
              "search", "path", "QPS", "p50 ms", "p99 ms", "recall@10", "grpc/faiss");

  int64_t generated_n = -1;
  std::vector<float> base, queries;
  std::vector<std::vector<int64_t>> truth;
  for (const Case& c : cases) {
    if (c.n != generated_n) {
      base = RandomUnit(c.n, d, 1);
      queries = RandomUnit(nq, d, 2);
      // Exact top-10 by brute force (batched, every core).
      faiss::IndexFlatIP exact(d);
      exact.add(c.n, base.data());
      std::vector<float> dist(nq * 10);
      std::vector<faiss::Index::idx_t> labels(nq * 10);
      omp_set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
      exact.search(nq, queries.data(), 10, dist.data(), labels.data());
      truth.assign(nq, {});
      for (int64_t q = 0; q < nq; ++q) truth[q].assign(&labels[q * 10], &labels[q * 10 + 10]);
      generated_n = c.n;
    }
    // Build the collection: one chunk per vector, document id = row.
    const std::string data_dir = absl::StrCat(f.GetString("work-dir"), "/bench_", RandomHex(4));
    const auto build_start = Clock::now();
    {
      CollectionSpec spec;
      spec.id = "bench";
      spec.embedder.dimension = d;
      spec.index.dimension = d;
      spec.index.factory = c.factory;
      spec.create_time = absl::Now();
      auto kind = CheckIndexOptions(spec.index);
      Check(kind.status(), "index");
      spec.index.train_size = kind->train_size;
      auto embedder = std::make_shared<HashEmbedder>(*HashEmbedder::Create(d));
      auto col = Collection::Create(data_dir + "/collections/bench", spec, embedder);
      Check(col.status(), "create");
      const int64_t batch = 50000;
      for (int64_t b = 0; b < c.n; b += batch) {
        std::vector<PreparedDocument> docs;
        for (int64_t i = b; i < std::min(c.n, b + batch); ++i) {
          PreparedDocument p;
          p.document.id = absl::StrCat(i);
          p.document.text = absl::StrCat("v", i);
          Chunk chunk;
          chunk.begin = 0;
          chunk.end = p.document.text.size();
          p.chunks.push_back(chunk);
          p.vectors.assign(&base[i * d], &base[(i + 1) * d]);
          docs.push_back(std::move(p));
        }
        Check((*col)->Apply(std::move(docs), /*save=*/false).status(), "apply");
      }
      (*col)->WaitForRebuild();  // training, for trained indexes
      Check((*col)->Save(), "save");
      (*col)->WaitForRebuild();
    }
    const double build = Seconds(build_start, Clock::now());

    // In-process FAISS on the saved index.
    const std::string col_dir = data_dir + "/collections/bench";
    std::string current = *ReadFile(col_dir + "/CURRENT");
    current.erase(current.find_last_not_of("\n ") + 1);
    const std::string snap = col_dir + "/" + current;
    const std::string index_file = std::filesystem::exists(snap + "/index.faiss")
                                       ? snap + "/index.faiss"
                                       : snap + "/vectors.faiss";
    std::unique_ptr<faiss::Index> index(faiss::read_index(index_file.c_str()));
    faiss::IndexIVF* ivf = faiss::ivflib::try_extract_index_ivf(index.get());
    auto* hnsw = dynamic_cast<faiss::IndexHNSW*>(index.get());
    std::vector<int64_t> ids;  // position -> vector id (the row), from ids.bin
    {
      std::string raw = *ReadFile(snap + "/ids.bin");
      ids.resize(raw.size() / sizeof(int64_t));
      std::memcpy(ids.data(), raw.data(), raw.size());
    }
    // Operating points: the search parameter of the index type.
    std::vector<int> points = {0};
    if (ivf != nullptr) points = nprobes;
    if (hnsw != nullptr) points = efs;

    // The service, in its own process.
    const int port = FreePort();
    std::fflush(stdout);  // the child's freopen would flush it again
    const pid_t server = fork();
    if (server == 0) {
      const std::string log = data_dir + "/serve.log";
      freopen(log.c_str(), "w", stderr);
      freopen("/dev/null", "w", stdout);
      execl(binary.c_str(), binary.c_str(), "serve", "--target=retrieval",
            absl::StrCat("--grpc-listen=127.0.0.1:", port).c_str(),
            "--metrics-listen=", absl::StrCat("--data-dir=", data_dir).c_str(),
            absl::StrCat("--search-threads=", threads).c_str(), nullptr);
      _exit(127);
    }
    const std::string address = absl::StrCat("127.0.0.1:", port);
    {
      auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
      auto stub = v1::RetrievalService::NewStub(channel);
      bool ready = false;
      for (int i = 0; i < 3000 && !ready; ++i) {
        grpc::ClientContext ctx;
        v1::GetCollectionRequest req;
        req.set_name("collections/bench");
        v1::Collection out;
        ready = stub->GetCollection(&ctx, req, &out).ok();
        if (!ready) usleep(200000);
      }
      if (!ready) {
        std::cerr << "the server did not come up; see " << data_dir << "/serve.log\n";
        kill(server, SIGKILL);
        std::exit(1);
      }
    }
    std::vector<std::unique_ptr<v1::RetrievalService::Stub>> stubs;
    for (int i = 0; i < clients; ++i) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt("switchyard.bench.client", i);  // a distinct channel per client
      stubs.push_back(v1::RetrievalService::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
    }
    std::atomic<int64_t> errors{0};
    bool first_row = true;
    for (int point : points) {
      std::string param = "-";
      if (ivf != nullptr) {
        ivf->nprobe = point;
        param = absl::StrCat("nprobe ", point);
      }
      if (hnsw != nullptr) {
        hnsw->hnsw.efSearch = point;
        param = absl::StrCat("ef ", point);
      }
      auto faiss_search = [&](int64_t q, int64_t n) {
        std::vector<float> dist(n * 10);
        std::vector<faiss::Index::idx_t> labels(n * 10);
        index->search(n, &queries[q * d], 10, dist.data(), labels.data());
        std::vector<std::vector<int64_t>> out(n);
        for (int64_t i = 0; i < n; ++i) {
          for (int j = 0; j < 10; ++j) {
            const auto l = labels[i * 10 + j];
            out[i].push_back(l < 0 ? -1 : ids[l]);
          }
        }
        return out;
      };
      Run local = Drive(threads, nq, seconds, truth, 1, faiss_search);
      // `clients` queries per call spread over the threads: what FAISS gives
      // a caller that batches.
      const int per_call = std::max(1, clients / threads);
      Run local_batch = Drive(threads, nq, seconds, truth, per_call, faiss_search);

      std::atomic<int> client_slot{0};
      Run remote = Drive(clients, nq, seconds, truth, 1, [&](int64_t q, int64_t) {
        thread_local int my_stub = -1;
        thread_local const void* my_run = nullptr;
        if (my_run != &client_slot) {  // a new run: take a stub of this run
          my_run = &client_slot;
          my_stub = client_slot.fetch_add(1);
        }
        v1::SearchRequest req;
        req.set_collection("collections/bench");
        req.set_k(10);
        req.set_omit_text(true);
        if (ivf != nullptr) req.set_nprobe(point);
        if (hnsw != nullptr) req.set_ef_search(point);
        auto* v = req.add_query_vectors();
        v->mutable_values()->Add(&queries[q * d], &queries[(q + 1) * d]);
        v1::SearchResponse resp;
        grpc::ClientContext ctx;
        grpc::Status s = stubs[my_stub]->Search(&ctx, req, &resp);
        std::vector<int64_t> out;
        if (!s.ok()) {
          ++errors;
          return std::vector<std::vector<int64_t>>{{-1}};
        }
        for (const auto& h : resp.results(0).hits()) {
          int64_t id = -1;
          absl::SimpleAtoi(h.document_id(), &id);
          out.push_back(id);
        }
        if (out.empty()) out.push_back(-1);
        return std::vector<std::vector<int64_t>>{out};
      });

      const char* label = c.n >= 1000000 ? "M" : "k";
      const std::string size =
          first_row ? absl::StrCat(c.n >= 1000000 ? c.n / 1000000 : c.n / 1000, label) : "";
      std::printf("%-7s %-14s %8s %-11s %-9s %9.1f %8.2f %8.2f %9.3f\n", size.c_str(),
                  first_row ? c.factory.c_str() : "",
                  first_row ? absl::StrFormat("%.1f", build).c_str() : "", param.c_str(), "faiss",
                  local.qps, local.p50_ms, local.p99_ms, local.recall);
      std::printf("%-7s %-14s %8s %-11s %-9s %9.1f %8.2f %8.2f %9.3f\n", "", "", "", "",
                  absl::StrCat("faiss x", per_call).c_str(), local_batch.qps, local_batch.p50_ms,
                  local_batch.p99_ms, local_batch.recall);
      std::printf("%-7s %-14s %8s %-11s %-9s %9.1f %8.2f %8.2f %9.3f %9.0f%%\n", "", "", "", "",
                  "grpc", remote.qps, remote.p50_ms, remote.p99_ms, remote.recall,
                  100.0 * remote.qps / local.qps);
      std::fflush(stdout);
      first_row = false;
    }
    index.reset();
    kill(server, SIGTERM);
    int status = 0;
    waitpid(server, &status, 0);
    if (errors > 0) std::cerr << errors << " Search calls failed; see " << data_dir << "\n";
    if (errors == 0) RemoveAll(data_dir).IgnoreError();
  }
}

}  // namespace

int main(int argc, char** argv) {
  FlagSet f("retrieval_bench [flags]",
            "Retrieval quality on the labelled set, then search speed through gRPC beside\n"
            "in-process FAISS on the same index.");
  f.AddString("quality-dir", "tests/data/retrieval/quality",
              "Labelled set (docs.jsonl, queries.jsonl); empty skips quality.");
  f.AddString("cases",
              "100000:Flat;100000:HNSW32;100000:IVF1024,Flat;1000000:IVF1024,Flat;1000000:Flat",
              "Vectors:factory pairs, ';'-separated; empty skips speed.");
  f.AddInt("dim", 384, "Vector dimension.");
  f.AddInt("queries", 2000, "Queries per run at most.");
  f.AddDouble("seconds", 10, "Seconds per run at most.");
  f.AddInt("threads", 0, "Search threads, in-process and in the server (0 = every core).");
  f.AddInt("clients", 8, "Concurrent gRPC clients.");
  f.AddString("nprobe", "16,64", "IVF lists probed: the operating points, comma-separated.");
  f.AddString("ef-search", "64,256", "HNSW efSearch: the operating points, comma-separated.");
  f.AddString("switchyard", "build/services/switchyard", "The switchyard binary.");
  f.AddString("work-dir", "/tmp", "Where collections are built.");
  absl::Status s = f.Parse(std::vector<std::string>(argv + 1, argv + argc));
  if (!s.ok() || f.help_requested()) {
    std::cerr << (s.ok() ? "" : std::string(s.message()) + "\n") << f.Help();
    return s.ok() ? 0 : 2;
  }
  if (!f.GetString("quality-dir").empty()) Quality(f.GetString("quality-dir"));
  if (!f.GetString("cases").empty()) Speed(f);
  return 0;
}
