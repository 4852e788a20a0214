// Collections: writes visible at once and after reopening, filters, the
// three search modes, rebuilds, and saves interrupted by kill -9.
#include "services/retrieval/collection.h"

#include <gtest/gtest.h>
#include <omp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "services/retrieval/hash_embedder.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::retrieval {
namespace {

std::shared_ptr<const Embedder> Hash(int dim = 256) {
  return std::make_shared<HashEmbedder>(*HashEmbedder::Create(dim));
}

CollectionSpec Spec(const std::string& id, const std::string& factory = "Flat", int dim = 256) {
  CollectionSpec spec;
  spec.id = id;
  spec.embedder.dimension = dim;
  spec.index.dimension = dim;
  spec.index.factory = factory;
  spec.chunking.chunk_tokens = 40;
  spec.chunking.overlap_tokens = 8;
  spec.create_time = absl::Now();
  return spec;
}

DocumentInput Doc(const std::string& id, const std::string& text, Metadata metadata = {}) {
  return DocumentInput{id, text, std::move(metadata)};
}

class CollectionTest : public switchyard::testing::TempDirTest {
 protected:
  std::unique_ptr<Collection> Make(const CollectionSpec& spec) {
    auto c = Collection::Create(dir_ + "/" + spec.id, spec, Hash(spec.embedder.dimension));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::unique_ptr<Collection> Reopen(const std::string& id, int dim = 256) {
    auto c = Collection::Open(dir_ + "/" + id, Hash(dim));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }
  static WriteResult Upsert(Collection* c, std::vector<DocumentInput> docs) {
    auto prepared = c->Prepare(std::move(docs));
    EXPECT_TRUE(prepared.ok()) << prepared.status();
    auto result = c->Apply(std::move(*prepared));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : WriteResult{};
  }
  static std::vector<std::string> DocIds(const Collection& c, const std::string& text,
                                         SearchMode mode = SearchMode::kDense, int k = 10,
                                         std::vector<FilterCondition> filter = {}) {
    SearchQuery q;
    q.texts = {text};
    q.k = k;
    q.mode = mode;
    q.filter = std::move(filter);
    auto out = c.Search(q);
    EXPECT_TRUE(out.ok()) << out.status();
    std::vector<std::string> ids;
    if (out.ok()) {
      for (const auto& h : out->results[0]) ids.push_back(h.document_id);
    }
    return ids;
  }
};

const char* kRefunds =
    "Refunds are issued within 14 days of a return. Contact billing to request a refund.";
const char* kShipping = "Orders ship from our warehouse in two business days by ground courier.";
const char* kPasswords = "Reset your password from the login page; the link expires in an hour.";

TEST_F(CollectionTest, UpsertAndDeleteAreVisibleAtOnceAndAfterReopening) {
  CollectionSpec spec = Spec("faq");
  spec.index.rebuild_threshold = 0.9;  // keep the tombstones to count them
  auto c = Make(spec);
  ASSERT_NE(c, nullptr);
  WriteResult w = Upsert(c.get(), {Doc("refunds", kRefunds, {{"team", "billing"}}),
                                   Doc("shipping", kShipping, {{"team", "logistics"}}),
                                   Doc("passwords", kPasswords, {{"team", "it"}})});
  EXPECT_EQ(w.created, 3);
  EXPECT_EQ(DocIds(*c, "how do I get a refund")[0], "refunds");
  EXPECT_EQ(DocIds(*c, "when will my order ship")[0], "shipping");

  // Replacing a document replaces all its chunks.
  w = Upsert(c.get(), {Doc("refunds", "Gift cards cannot be exchanged for cash.")});
  EXPECT_EQ(w.replaced, 1);
  EXPECT_EQ(w.chunks_removed, 1);
  SearchQuery q;
  q.texts = {"refund within 14 days"};
  q.mode = SearchMode::kLexical;
  auto hits = c->Search(q);
  ASSERT_TRUE(hits.ok());
  for (const auto& h : hits->results[0]) EXPECT_EQ(h.text.find("14 days"), std::string::npos);

  auto d = c->Delete({"shipping", "nope"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->deleted, 1);
  EXPECT_EQ(d->missing_ids, std::vector<std::string>{"nope"});
  for (const auto& id : DocIds(*c, "when will my order ship")) EXPECT_NE(id, "shipping");
  CollectionStatsInfo stats = c->Stats();
  EXPECT_EQ(stats.documents, 2);
  EXPECT_EQ(stats.chunks, 2);
  EXPECT_EQ(stats.vectors, 4);  // Flat keeps tombstones until a rebuild
  EXPECT_EQ(stats.tombstoned_vectors, 2);
  EXPECT_GT(stats.index_bytes, 0);
  EXPECT_GT(stats.chunk_store_bytes, 0);
  c->WaitForRebuild();
  c.reset();

  auto r = Reopen("faq");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->Stats().documents, 2);
  EXPECT_EQ(DocIds(*r, "reset password link")[0], "passwords");
  for (const auto& id : DocIds(*r, "when will my order ship")) EXPECT_NE(id, "shipping");
  auto gift = r->Search([] {
    SearchQuery q;
    q.texts = {"gift cards cash"};
    return q;
  }());
  ASSERT_TRUE(gift.ok());
  ASSERT_FALSE(gift->results[0].empty());
  const SearchHitInfo& top = gift->results[0][0];
  EXPECT_EQ(top.document_id, "refunds");
  EXPECT_EQ(top.text, "Gift cards cannot be exchanged for cash.");
  EXPECT_EQ(top.rank, 1);
  EXPECT_EQ(top.start_offset, 0);
  EXPECT_EQ(top.end_offset, 40);
}

TEST_F(CollectionTest, LongDocumentsSplitIntoOverlappingChunksWithPositions) {
  auto c = Make(Spec("long"));
  std::string text;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&text, "word", i, " ");
  WriteResult w = Upsert(c.get(), {Doc("big", text, {{"kind", "manual"}})});
  EXPECT_GE(w.chunks_added, 6);  // 200 words, 40 per chunk, 8 shared
  SearchQuery q;
  q.texts = {"word150"};
  q.mode = SearchMode::kLexical;
  auto out = c->Search(q);
  ASSERT_TRUE(out.ok());
  ASSERT_FALSE(out->results[0].empty());
  const SearchHitInfo& hit = out->results[0][0];
  EXPECT_NE(hit.text.find("word150 "), std::string::npos);
  EXPECT_EQ(text.substr(hit.start_offset, hit.end_offset - hit.start_offset), hit.text);
  EXPECT_GT(hit.position, 0);
  EXPECT_EQ(hit.metadata->at("kind"), "manual");
}

TEST_F(CollectionTest, FilteredSearchReturnsOnlyMatchingChunks) {
  auto c = Make(Spec("filtered"));
  std::vector<DocumentInput> docs;
  const char* teams[] = {"billing", "logistics", "it"};
  const char* langs[] = {"en", "de"};
  for (int i = 0; i < 60; ++i) {
    docs.push_back(Doc(absl::StrCat("d", i), absl::StrCat("refund policy note number ", i),
                       {{"team", teams[i % 3]}, {"lang", langs[i % 2]}}));
  }
  docs.push_back(Doc("nometa", "refund policy note without metadata"));
  Upsert(c.get(), std::move(docs));

  for (SearchMode mode : {SearchMode::kDense, SearchMode::kLexical, SearchMode::kHybrid}) {
    SearchQuery q;
    q.texts = {"refund policy"};
    q.k = 100;
    q.mode = mode;
    q.filter = {{"team", {"billing", "it"}}, {"lang", {"de"}}};
    auto out = c->Search(q);
    ASSERT_TRUE(out.ok()) << out.status();
    // i % 3 in {0, 2} and i odd: 20 of the 60.
    EXPECT_EQ(out->results[0].size(), 20u);
    for (const auto& h : out->results[0]) {
      EXPECT_NE(h.metadata->at("team"), "logistics");
      EXPECT_EQ(h.metadata->at("lang"), "de");
    }
    q.filter = {{"missing-key", {"x"}}};
    out = c->Search(q);
    ASSERT_TRUE(out.ok());
    EXPECT_TRUE(out->results[0].empty());
  }
  SearchQuery bad;
  bad.texts = {"x"};
  bad.filter = {{"team", {}}};
  EXPECT_NE(c->Search(bad).status().message().find("filter.conditions[0]"), std::string::npos);
}

TEST_F(CollectionTest, HybridRanksALexicalOnlyMatchThatDenseMisses) {
  auto c = Make(Spec("hybrid"));
  std::vector<DocumentInput> docs;
  for (int i = 0; i < 30; ++i) {
    docs.push_back(Doc(absl::StrCat("printer-", i),
                       absl::StrCat("printer error code troubleshooting guide for the office "
                                    "printer model ",
                                    i)));
  }
  // The query's words in other forms ("printers", "errors") bring the
  // printer guides close in the embedding (shared character n-grams) but
  // match no BM25 term; the rare exact token is lexical-only.
  docs.push_back(Doc("firmware",
                     "Quarterly maintenance calendar, cafeteria menu rotation, parking permit "
                     "renewals, visitor badges and the zx81q firmware notice for facilities "
                     "staff, plus holiday schedules and fire drill assembly points."));
  Upsert(c.get(), std::move(docs));
  const std::string query = "printers errors zx81q";

  auto dense = DocIds(*c, query, SearchMode::kDense, 5);
  EXPECT_EQ(std::count(dense.begin(), dense.end(), "firmware"), 0);
  auto lexical = DocIds(*c, query, SearchMode::kLexical, 5);
  ASSERT_FALSE(lexical.empty());
  EXPECT_EQ(lexical[0], "firmware");

  SearchQuery q;
  q.texts = {query};
  q.k = 5;
  q.mode = SearchMode::kHybrid;
  auto out = c->Search(q);
  ASSERT_TRUE(out.ok());
  bool found = false;
  for (const auto& h : out->results[0]) {
    if (h.document_id != "firmware") continue;
    found = true;
    EXPECT_EQ(h.lexical_rank, 1);
    EXPECT_TRUE(h.dense_rank == 0 || h.dense_rank > 5) << h.dense_rank;
    EXPECT_NEAR(h.score,
                (h.dense_rank ? 1.0 / (60 + h.dense_rank) : 0.0) + 1.0 / (60 + h.lexical_rank),
                1e-12);
  }
  EXPECT_TRUE(found);

  // Weights: lexical weight 0 leaves the dense order.
  q.lexical_weight = 0;
  out = c->Search(q);
  ASSERT_TRUE(out.ok());
  for (size_t i = 0; i < out->results[0].size(); ++i) {
    EXPECT_EQ(out->results[0][i].document_id, dense[i]);
  }
  // min_score drops hits below it.
  q.lexical_weight = 1;
  q.min_score = 1.0;
  out = c->Search(q);
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->results[0].empty());
}

TEST_F(CollectionTest, HnswDeletesBecomeTombstonesUntilTheBackgroundRebuild) {
  CollectionSpec spec = Spec("hnsw", "HNSW16");
  spec.index.rebuild_threshold = 0.3;
  auto c = Make(spec);
  std::vector<DocumentInput> docs;
  for (int i = 0; i < 100; ++i) {
    docs.push_back(Doc(absl::StrCat("d", i), absl::StrCat("topic ", i, " text about item", i)));
  }
  Upsert(c.get(), std::move(docs));
  std::vector<std::string> gone;
  for (int i = 0; i < 20; ++i) gone.push_back(absl::StrCat("d", i));
  ASSERT_TRUE(c->Delete(gone).ok());
  EXPECT_EQ(c->Stats().tombstoned_vectors, 20);  // below 0.3: no rebuild
  for (const auto& id : DocIds(*c, "topic 5 text about item5", SearchMode::kDense, 100)) {
    EXPECT_EQ(std::count(gone.begin(), gone.end(), id), 0) << id;
  }
  gone.clear();
  for (int i = 20; i < 40; ++i) gone.push_back(absl::StrCat("d", i));
  ASSERT_TRUE(c->Delete(gone).ok());  // 40 of 100: rebuild
  c->WaitForRebuild();
  CollectionStatsInfo stats = c->Stats();
  EXPECT_EQ(stats.tombstoned_vectors, 0);
  EXPECT_EQ(stats.vectors, 60);
  EXPECT_EQ(stats.index_type, "IndexHNSWFlat");
  EXPECT_EQ(DocIds(*c, "topic 77 text about item77")[0], "d77");
  c.reset();
  auto r = Reopen("hnsw");
  EXPECT_EQ(r->Stats().vectors, 60);
  EXPECT_EQ(DocIds(*r, "topic 77 text about item77")[0], "d77");
}

TEST_F(CollectionTest, TrainedIndexSearchesExactlyUntilTrainedInTheBackground) {
  CollectionSpec spec = Spec("ivf", "IVF8,Flat", 64);
  spec.index.train_size = 200;
  spec.index.nprobe = 8;  // every list: results equal exact search
  auto c = Make(spec);
  std::vector<DocumentInput> docs;
  for (int i = 0; i < 150; ++i) {
    docs.push_back(Doc(absl::StrCat("d", i), absl::StrCat("entry ", i, " about subject", i)));
  }
  Upsert(c.get(), docs);
  EXPECT_FALSE(c->Stats().trained);
  EXPECT_EQ(DocIds(*c, "entry 42 about subject42")[0], "d42");
  docs.clear();
  for (int i = 150; i < 250; ++i) {
    docs.push_back(Doc(absl::StrCat("d", i), absl::StrCat("entry ", i, " about subject", i)));
  }
  Upsert(c.get(), docs);
  c->WaitForRebuild();
  EXPECT_TRUE(c->Stats().trained);
  EXPECT_EQ(c->Stats().index_type, "IndexIVFFlat");
  EXPECT_EQ(DocIds(*c, "entry 42 about subject42")[0], "d42");
  EXPECT_EQ(DocIds(*c, "entry 242 about subject242")[0], "d242");
  c.reset();
  auto r = Reopen("ivf", 64);
  EXPECT_TRUE(r->Stats().trained);
  EXPECT_EQ(DocIds(*r, "entry 242 about subject242")[0], "d242");
}

TEST_F(CollectionTest, BadDocumentsAreRejectedByIndexAndChangeNothing) {
  auto c = Make(Spec("strict"));
  Upsert(c.get(), {Doc("a", kRefunds)});
  auto prepared = c->Prepare({Doc("b", kShipping), Doc("c", "   \n ")});
  EXPECT_EQ(prepared.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(prepared.status().message().find("documents[1].text"), std::string::npos)
      << prepared.status();
  prepared = c->Prepare({Doc("", "text")});
  EXPECT_NE(prepared.status().message().find("documents[0].id"), std::string::npos);
  prepared = c->Prepare({Doc("bad-utf8", "caf\xc3")});
  EXPECT_NE(prepared.status().message().find("UTF-8"), std::string::npos);
  EXPECT_EQ(c->Stats().documents, 1);
  EXPECT_EQ(Collection::Create(dir_ + "/strict", Spec("strict"), Hash()).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Collection::Create(dir_ + "/Bad", Spec("Bad"), Hash()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CollectionTest, SearchesRunSafelyDuringWrites) {
  CollectionSpec spec = Spec("busy", "HNSW16");
  spec.index.rebuild_threshold = 0.1;
  auto c = Make(spec);
  Upsert(c.get(), {Doc("anchor", kRefunds)});
  std::atomic<bool> stop{false};
  std::atomic<int> searches{0}, failures{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      while (!stop) {
        SearchQuery q;
        q.texts = {"refund request billing"};
        q.mode = static_cast<SearchMode>(t % 3);
        auto out = c->Search(q);
        if (!out.ok() || out->results[0].empty()) ++failures;
        ++searches;
      }
    });
  }
  for (int round = 0; round < 15; ++round) {
    std::vector<DocumentInput> docs;
    for (int i = 0; i < 20; ++i) {
      docs.push_back(Doc(absl::StrCat("r", round, "-", i), absl::StrCat("refund note ", round, i)));
    }
    auto prepared = c->Prepare(std::move(docs));
    ASSERT_TRUE(prepared.ok());
    ASSERT_TRUE(c->Apply(std::move(*prepared), /*save=*/round % 5 == 0).ok());
    std::vector<std::string> drop;
    for (int i = 0; i < 10; ++i) drop.push_back(absl::StrCat("r", round, "-", i));
    ASSERT_TRUE(c->Delete(drop, /*save=*/false).ok());
  }
  stop = true;
  for (auto& r : readers) r.join();
  c->WaitForRebuild();
  EXPECT_GT(searches.load(), 0);
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(c->Stats().documents, 1 + 15 * 10);
  EXPECT_EQ(DocIds(*c, kRefunds)[0], "anchor");
}

// --- kill -9 in the middle of saves ----------------------------------------

// Runs in a child process (this binary re-executed): keeps writing batches
// "b<N>-<i>" to the collection, saving each, and reports N on stdout.
TEST(CollectionCrashChild, WriteForever) {
  const char* dir = std::getenv("SY_CRASH_CHILD_DIR");
  if (dir == nullptr) GTEST_SKIP() << "runs only as the child of the crash test";
  auto c = Collection::Open(dir, Hash());
  ASSERT_TRUE(c.ok()) << c.status();
  // Continues the numbering of earlier runs.
  for (int batch = static_cast<int>((*c)->Stats().documents / 50);; ++batch) {
    std::vector<DocumentInput> docs;
    for (int i = 0; i < 50; ++i) {
      docs.push_back(Doc(absl::StrCat("b", batch, "-", i),
                         absl::StrCat("batch ", batch, " document ", i, " ", kShipping)));
    }
    auto prepared = (*c)->Prepare(std::move(docs));
    ASSERT_TRUE(prepared.ok());
    ASSERT_TRUE((*c)->Apply(std::move(*prepared)).ok());
    std::printf("saved %d\n", batch);
    std::fflush(stdout);
  }
}

TEST_F(CollectionTest, KillDuringSavesLeavesTheLastGoodVersion) {
  {
    auto c = Make(Spec("crash"));
    ASSERT_NE(c, nullptr);
  }
  const std::string dir = dir_ + "/crash";
  int last_seen = -1;
  for (int attempt = 0; attempt < 4; ++attempt) {
    int out[2];
    ASSERT_EQ(pipe(out), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      setenv("SY_CRASH_CHILD_DIR", dir.c_str(), 1);
      execl("/proc/self/exe", "collection_crash_child",
            "--gtest_filter=CollectionCrashChild.WriteForever", nullptr);
      _exit(127);
    }
    close(out[1]);
    // Let it finish a few saves, then kill it at a varying point of the next.
    FILE* from_child = fdopen(out[0], "r");
    char line[64];
    int saves = 0;
    while (saves < 2 + attempt && std::fgets(line, sizeof line, from_child) != nullptr) {
      if (std::sscanf(line, "saved %d", &last_seen) == 1) ++saves;
    }
    ASSERT_EQ(saves, 2 + attempt) << "the child stopped early";
    usleep(2000 * (attempt + 1));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    // Saves it reported before it died.
    while (std::fgets(line, sizeof line, from_child) != nullptr) {
      std::sscanf(line, "saved %d", &last_seen);
    }
    std::fclose(from_child);

    // Whatever was saved last is back, whole: full batches only.
    auto c = Reopen("crash");
    ASSERT_NE(c, nullptr);
    const int64_t docs = c->Stats().documents;
    EXPECT_EQ(docs % 50, 0) << "a half batch survived";
    // Every reported save, and at most the one in flight when it died.
    EXPECT_GE(docs, 50 * (last_seen + 1)) << "a reported save was lost";
    EXPECT_LE(docs, 50 * (last_seen + 2));
    EXPECT_EQ(c->Stats().chunks, docs);
    EXPECT_FALSE(DocIds(*c, "batch 0 document 7").empty());
    // Only the current snapshot is left.
    int snapshots = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      EXPECT_FALSE(absl::StartsWith(name, ".tmp-")) << name;
      snapshots += absl::StartsWith(name, "snapshot-");
    }
    EXPECT_EQ(snapshots, 1);
  }
}

}  // namespace
}  // namespace switchyard::retrieval
