// VectorIndex against exact search on the same vectors: recall per index
// type, removal (tombstones) for every type, rebuilds, persistence.
#include "services/retrieval/vector_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <random>
#include <set>
#include <thread>

#include "tests/testing/temp_dir.h"

namespace switchyard::retrieval {
namespace {

constexpr int kDim = 32;

// Clustered unit vectors (as real embeddings are), deterministic.
std::vector<float> Vectors(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> centers(40 * kDim);
  for (float& c : centers) c = normal(rng);
  std::vector<float> out(static_cast<size_t>(n) * kDim);
  for (int i = 0; i < n; ++i) {
    const float* c = &centers[(rng() % 40) * kDim];
    double norm = 0;
    for (int j = 0; j < kDim; ++j) {
      out[i * kDim + j] = c[j] + 0.6f * normal(rng);
      norm += out[i * kDim + j] * out[i * kDim + j];
    }
    for (int j = 0; j < kDim; ++j) out[i * kDim + j] /= static_cast<float>(std::sqrt(norm));
  }
  return out;
}

std::vector<int64_t> Ids(int64_t first, int n) {
  std::vector<int64_t> ids(n);
  for (int i = 0; i < n; ++i) ids[i] = first + i;
  return ids;
}

// Exact top-k ids by brute force, skipping `removed`.
std::vector<std::vector<int64_t>> Exact(const std::vector<float>& base,
                                        const std::vector<int64_t>& ids,
                                        const std::vector<float>& queries, int k,
                                        const std::set<int64_t>& removed) {
  const int n = static_cast<int>(ids.size()), nq = static_cast<int>(queries.size() / kDim);
  std::vector<std::vector<int64_t>> out(nq);
  for (int q = 0; q < nq; ++q) {
    std::vector<std::pair<float, int64_t>> scored;
    for (int i = 0; i < n; ++i) {
      if (removed.count(ids[i])) continue;
      float dot = 0;
      for (int j = 0; j < kDim; ++j) dot += queries[q * kDim + j] * base[i * kDim + j];
      scored.emplace_back(-dot, ids[i]);
    }
    std::sort(scored.begin(), scored.end());
    for (int j = 0; j < k && j < static_cast<int>(scored.size()); ++j) {
      out[q].push_back(scored[j].second);
    }
  }
  return out;
}

double Recall(const std::vector<std::vector<VectorIndex::Hit>>& got,
              const std::vector<std::vector<int64_t>>& truth) {
  double found = 0, total = 0;
  for (size_t q = 0; q < truth.size(); ++q) {
    std::set<int64_t> expected(truth[q].begin(), truth[q].end());
    for (const auto& h : got[q]) found += expected.count(h.id);
    total += static_cast<double>(expected.size());
  }
  return found / total;
}

// Trains (through the rebuild path, as a collection does) when needed.
void TrainIfDue(VectorIndex* index) {
  if (!index->WantsRebuild()) return;
  VectorIndex::RebuildInput input = index->SnapshotForRebuild();
  auto rebuilt = VectorIndex::Build(index->options(), input);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.status();
  ASSERT_TRUE(index->Install(input, std::move(*rebuilt)).ok());
}

struct TypeCase {
  const char* factory;
  double min_recall;
  const char* type;
};

class IndexTypeTest : public switchyard::testing::TempDirTest,
                      public ::testing::WithParamInterface<TypeCase> {};

TEST_P(IndexTypeTest, RecallRemovalRebuildAndReload) {
  const TypeCase& tc = GetParam();
  VectorIndexOptions options;
  options.factory = tc.factory;
  options.dimension = kDim;
  options.train_size = 2000;
  options.nprobe = 8;
  auto created = VectorIndex::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::unique_ptr<VectorIndex> index = std::move(*created);
  EXPECT_EQ(index->stats().type, tc.type);

  const int n = 3000;
  std::vector<float> base = Vectors(n, 1);
  std::vector<int64_t> ids = Ids(100, n);
  ASSERT_TRUE(index->Add(n, base.data(), ids.data()).ok());
  TrainIfDue(index.get());
  EXPECT_TRUE(index->stats().trained);

  std::vector<float> queries = Vectors(50, 2);
  VectorIndex::SearchOptions so;
  so.k = 10;
  auto hits = index->Search(50, queries.data(), so);
  ASSERT_TRUE(hits.ok()) << hits.status();
  const double recall = Recall(*hits, Exact(base, ids, queries, 10, {}));
  EXPECT_GE(recall, tc.min_recall) << tc.factory;
  // Scores are inner products, best first.
  for (const auto& list : *hits) {
    for (size_t j = 1; j < list.size(); ++j) EXPECT_GE(list[j - 1].score, list[j].score);
  }

  // Remove the current best hit of every query and a third of all ids:
  // none may come back, for every index type.
  std::set<int64_t> removed;
  for (const auto& list : *hits) removed.insert(list[0].id);
  for (int i = 0; i < n; i += 3) removed.insert(ids[i]);
  EXPECT_EQ(index->Remove({removed.begin(), removed.end()}), static_cast<int64_t>(removed.size()));
  EXPECT_EQ(index->Remove({removed.begin(), removed.end()}), 0);
  EXPECT_EQ(index->stats().tombstones, static_cast<int64_t>(removed.size()));
  auto after = index->Search(50, queries.data(), so);
  ASSERT_TRUE(after.ok());
  for (const auto& list : *after) {
    EXPECT_EQ(list.size(), 10u);
    for (const auto& h : list) EXPECT_EQ(removed.count(h.id), 0u) << h.id;
  }
  const auto truth = Exact(base, ids, queries, 10, removed);
  EXPECT_GE(Recall(*after, truth), tc.min_recall - 0.05);

  // Past the threshold: the rebuild compacts and keeps answers.
  ASSERT_TRUE(index->WantsRebuild());
  TrainIfDue(index.get());
  EXPECT_EQ(index->stats().tombstones, 0);
  EXPECT_EQ(index->stats().vectors, n - static_cast<int64_t>(removed.size()));
  auto rebuilt = index->Search(50, queries.data(), so);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_GE(Recall(*rebuilt, truth), tc.min_recall - 0.05);

  // Saved and loaded: the same answers.
  ASSERT_TRUE(index->Save(dir_).ok());
  auto loaded = VectorIndex::Load(options, dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto again = (*loaded)->Search(50, queries.data(), so);
  ASSERT_TRUE(again.ok());
  for (size_t q = 0; q < again->size(); ++q) {
    ASSERT_EQ((*again)[q].size(), (*rebuilt)[q].size());
    for (size_t j = 0; j < (*again)[q].size(); ++j) {
      EXPECT_EQ((*again)[q][j].id, (*rebuilt)[q][j].id);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, IndexTypeTest,
                         ::testing::Values(TypeCase{"Flat", 1.0, "IndexFlatIP"},
                                           TypeCase{"HNSW32", 0.85, "IndexHNSWFlat"},
                                           TypeCase{"IVF32,Flat", 0.9, "IndexIVFFlat"},
                                           TypeCase{"IVF32,SQ8", 0.85, "IndexIVFScalarQuantizer"},
                                           TypeCase{"IVF32,PQ8", 0.4, "IndexIVFPQ"},
                                           // IndexPQ refuses search parameters: the filter falls
                                           // back to asking for more hits.
                                           TypeCase{"PQ8", 0.4, "IndexPQ"}),
                         [](const ::testing::TestParamInfo<TypeCase>& info) {
                           std::string name = info.param.factory;
                           std::replace_if(
                               name.begin(), name.end(), [](char c) { return !std::isalnum(c); },
                               '_');
                           return name;
                         });

TEST(VectorIndexTest, UntrainedIndexSearchesExactly) {
  VectorIndexOptions options;
  options.factory = "IVF16,Flat";
  options.dimension = kDim;
  options.train_size = 1000;
  auto index = VectorIndex::Create(options);
  ASSERT_TRUE(index.ok());
  std::vector<float> base = Vectors(500, 3);
  std::vector<int64_t> ids = Ids(0, 500);
  ASSERT_TRUE((*index)->Add(500, base.data(), ids.data()).ok());
  EXPECT_FALSE((*index)->stats().trained);
  EXPECT_FALSE((*index)->WantsRebuild());
  std::vector<float> queries = Vectors(10, 4);
  auto hits = (*index)->Search(10, queries.data(), {});
  ASSERT_TRUE(hits.ok());
  EXPECT_EQ(Recall(*hits, Exact(base, ids, queries, 10, {})), 1.0);
}

TEST(VectorIndexTest, AcceptAndCandidatesRestrictHits) {
  VectorIndexOptions options;
  options.factory = "HNSW16";
  options.dimension = kDim;
  auto index = VectorIndex::Create(options);
  ASSERT_TRUE(index.ok());
  std::vector<float> base = Vectors(2000, 5);
  std::vector<int64_t> ids = Ids(0, 2000);
  ASSERT_TRUE((*index)->Add(2000, base.data(), ids.data()).ok());
  std::vector<float> queries = Vectors(5, 6);

  std::function<bool(int64_t)> even = [](int64_t id) { return id % 2 == 0; };
  VectorIndex::SearchOptions so;
  so.k = 20;
  so.accept = &even;
  auto hits = (*index)->Search(5, queries.data(), so);
  ASSERT_TRUE(hits.ok());
  for (const auto& list : *hits) {
    EXPECT_EQ(list.size(), 20u);
    for (const auto& h : list) EXPECT_EQ(h.id % 2, 0);
  }

  // Candidates: exact over just those ids, in score order.
  std::vector<int64_t> few = {3, 50, 700, 1999, 123456};
  so.accept = nullptr;
  so.candidates = &few;
  so.k = 10;
  auto exact = (*index)->Search(5, queries.data(), so);
  ASSERT_TRUE(exact.ok());
  const auto truth = Exact(base, ids, queries, 2000, {});
  for (size_t q = 0; q < exact->size(); ++q) {
    ASSERT_EQ((*exact)[q].size(), 4u);  // 123456 does not exist
    std::vector<int64_t> expected;
    for (int64_t id : truth[q]) {
      if (id == 3 || id == 50 || id == 700 || id == 1999) expected.push_back(id);
    }
    for (size_t j = 0; j < 4; ++j) EXPECT_EQ((*exact)[q][j].id, expected[j]);
  }
}

TEST(VectorIndexTest, InstallCatchesUpWithWritesDuringTheBuild) {
  VectorIndexOptions options;
  options.factory = "HNSW16";
  options.dimension = kDim;
  auto created = VectorIndex::Create(options);
  ASSERT_TRUE(created.ok());
  VectorIndex& index = **created;
  std::vector<float> base = Vectors(600, 7);
  std::vector<int64_t> ids = Ids(0, 600);
  ASSERT_TRUE(index.Add(400, base.data(), ids.data()).ok());
  index.Remove({0, 1, 2});
  VectorIndex::RebuildInput input = index.SnapshotForRebuild();
  EXPECT_EQ(input.ids.size(), 397u);
  // Written while the rebuild would run without the lock.
  ASSERT_TRUE(index.Add(200, base.data() + 400 * kDim, ids.data() + 400).ok());
  index.Remove({10, 450});
  auto rebuilt = VectorIndex::Build(options, input);
  ASSERT_TRUE(rebuilt.ok());
  ASSERT_TRUE(index.Install(input, std::move(*rebuilt)).ok());
  EXPECT_EQ(index.live(), 595);
  EXPECT_EQ(index.stats().tombstones, 1);  // 10 was in the snapshot; 450 was skipped
  for (int64_t id : {0, 1, 2, 10, 450}) EXPECT_FALSE(index.Contains(id)) << id;
  for (int64_t id : {3, 399, 400, 599}) EXPECT_TRUE(index.Contains(id)) << id;
  // Every live vector finds itself.
  VectorIndex::SearchOptions so;
  so.k = 1;
  for (int64_t id : {3, 399, 400, 599}) {
    auto hit = index.Search(1, base.data() + id * kDim, so);
    ASSERT_TRUE(hit.ok());
    EXPECT_EQ((*hit)[0][0].id, id);
  }
}

TEST(VectorIndexTest, PerQueryEfSearchAndNprobeApply) {
  // Uniform random vectors: the hard case, where the parameters matter.
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal;
  const int n = 4000;
  std::vector<float> base(n * kDim), queries(100 * kDim);
  for (float& v : base) v = normal(rng);
  for (float& v : queries) v = normal(rng);
  std::vector<int64_t> ids = Ids(0, n);
  const auto truth = Exact(base, ids, queries, 10, {});
  for (const char* factory : {"HNSW8", "IVF64,Flat"}) {
    VectorIndexOptions options;
    options.factory = factory;
    options.dimension = kDim;
    options.train_size = 4000;
    options.ef_search = 16;
    options.nprobe = 1;
    auto index = VectorIndex::Create(options);
    ASSERT_TRUE(index.ok());
    ASSERT_TRUE((*index)->Add(n, base.data(), ids.data()).ok());
    TrainIfDue(index->get());
    VectorIndex::SearchOptions low, high;
    high.ef_search = 400;
    high.nprobe = 64;
    auto a = (*index)->Search(100, queries.data(), low);
    auto b = (*index)->Search(100, queries.data(), high);
    auto c = (*index)->Search(100, queries.data(), low);  // the default is back
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_GT(Recall(*b, truth), Recall(*a, truth) + 0.1) << factory;
    EXPECT_GE(Recall(*b, truth), 0.95) << factory;
    EXPECT_EQ(Recall(*c, truth), Recall(*a, truth)) << factory;
  }
}

TEST(VectorIndexTest, ConcurrentSearchesWithDifferentEfSearchEachGetTheirOwn) {
  // FAISS 1.7.3 takes efSearch from the index: concurrent searches wanting
  // different values must not see each other's.
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal;
  const int n = 3000;
  std::vector<float> base(n * kDim), queries(20 * kDim);
  for (float& v : base) v = normal(rng);
  for (float& v : queries) v = normal(rng);
  VectorIndexOptions options;
  options.factory = "HNSW8";
  options.dimension = kDim;
  auto index = VectorIndex::Create(options);
  ASSERT_TRUE(index.ok());
  std::vector<int64_t> ids = Ids(0, n);
  ASSERT_TRUE((*index)->Add(n, base.data(), ids.data()).ok());
  const int efs[] = {10, 64, 300};
  std::vector<std::vector<std::vector<VectorIndex::Hit>>> expected;
  for (int ef : efs) {
    VectorIndex::SearchOptions so;
    so.ef_search = ef;
    expected.push_back(*(*index)->Search(20, queries.data(), so));
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 30; ++round) {
        const int which = (t + round) % 3;
        const int q = (t * 7 + round) % 20;
        VectorIndex::SearchOptions so;
        so.ef_search = efs[which];
        auto got = (*index)->Search(1, queries.data() + q * kDim, so);
        if (!got.ok() || (*got)[0].size() != expected[which][q].size()) {
          ++mismatches;
          continue;
        }
        for (size_t j = 0; j < (*got)[0].size(); ++j) {
          if ((*got)[0][j].id != expected[which][q][j].id) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(VectorIndexTest, L2ScoresAreNegatedSquaredDistances) {
  VectorIndexOptions options;
  options.dimension = 2;
  options.metric = Metric::kL2;
  auto index = VectorIndex::Create(options);
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)->stats().type, "IndexFlatL2");
  std::vector<float> base = {0, 0, 3, 4};
  std::vector<int64_t> ids = {7, 8};
  ASSERT_TRUE((*index)->Add(2, base.data(), ids.data()).ok());
  float q[2] = {0, 0};
  auto hits = (*index)->Search(1, q, {});
  ASSERT_TRUE(hits.ok());
  ASSERT_EQ((*hits)[0].size(), 2u);
  EXPECT_EQ((*hits)[0][0].id, 7);
  EXPECT_FLOAT_EQ((*hits)[0][1].score, -25.0f);
}

TEST(VectorIndexTest, BadSpecsNameTheField) {
  VectorIndexOptions options;
  options.dimension = kDim;
  options.factory = "HNSW32,Nonsense";
  auto bad = CheckIndexOptions(options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("index.factory"), std::string::npos) << bad.status();
  options.factory = "IDMap,Flat";
  EXPECT_NE(CheckIndexOptions(options).status().message().find("id map"), std::string::npos);
  options.factory = "IVF100,Flat";
  options.train_size = 50;
  EXPECT_NE(CheckIndexOptions(options).status().message().find("index.train_size"),
            std::string::npos);
  options.train_size = 0;
  auto kind = CheckIndexOptions(options);
  ASSERT_TRUE(kind.ok());
  EXPECT_EQ(kind->nlist, 100);
  EXPECT_EQ(kind->train_size, 10000);  // max(39 x nlist, 10000)
  EXPECT_TRUE(kind->needs_training);
  options.rebuild_threshold = 0;
  EXPECT_NE(CheckIndexOptions(options).status().message().find("index.rebuild_threshold"),
            std::string::npos);
}

using VectorIndexFilesTest = switchyard::testing::TempDirTest;

TEST_F(VectorIndexFilesTest, LoadRejectsMismatchedFiles) {
  const std::string& dir = dir_;
  VectorIndexOptions options;
  options.dimension = kDim;
  auto index = VectorIndex::Create(options);
  std::vector<float> base = Vectors(10, 8);
  std::vector<int64_t> ids = Ids(0, 10);
  ASSERT_TRUE((*index)->Add(10, base.data(), ids.data()).ok());
  ASSERT_TRUE((*index)->Save(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/ids.bin", "short").ok());
  auto loaded = VectorIndex::Load(options, dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("ids.bin"), std::string::npos);
}

}  // namespace
}  // namespace switchyard::retrieval
