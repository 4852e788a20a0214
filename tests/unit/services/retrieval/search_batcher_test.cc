// SearchBatcher: batched answers equal single ones, incompatible searches
// stay apart, and one bad query does not fail the others of its batch.
#include "services/retrieval/search_batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

#include "absl/strings/str_cat.h"
#include "services/retrieval/hash_embedder.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::retrieval {
namespace {

class SearchBatcherTest : public switchyard::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    CollectionSpec spec;
    spec.id = "kb";
    spec.embedder.dimension = 64;
    spec.index.dimension = 64;
    spec.create_time = absl::Now();
    auto c = Collection::Create(dir_ + "/kb", spec,
                                std::make_shared<HashEmbedder>(*HashEmbedder::Create(64)));
    ASSERT_TRUE(c.ok()) << c.status();
    std::vector<DocumentInput> docs;
    for (int i = 0; i < 200; ++i) {
      docs.push_back({absl::StrCat("d", i),
                      absl::StrCat("item", i, " topic", i % 7, " note"),
                      {{"shard", absl::StrCat(i % 2)}}});
    }
    auto prepared = (*c)->Prepare(std::move(docs));
    ASSERT_TRUE(prepared.ok());
    ASSERT_TRUE((*c)->Apply(std::move(*prepared)).ok());
    collection_ = std::move(*c);
  }

  SearchQuery Query(const std::string& text) {
    SearchQuery q;
    q.texts = {text};
    q.k = 5;
    return q;
  }

  std::shared_ptr<Collection> collection_;
};

TEST_F(SearchBatcherTest, BatchedAnswersEqualSingleOnes) {
  // One worker, held busy by the first search, so the rest queue and batch.
  int batches = 0;
  size_t largest = 0;
  std::mutex mu;
  SearchBatcher batcher(1, 64, [&](size_t n) {
    std::lock_guard<std::mutex> lock(mu);
    ++batches;
    largest = std::max(largest, n);
  });
  std::vector<std::promise<absl::StatusOr<SearchOutcome>>> promises(40);
  for (int i = 0; i < 40; ++i) {
    SearchQuery q = Query(absl::StrCat("item", i * 3, " topic", i % 7));
    if (i % 4 == 3) {  // some with precomputed vectors
      auto v = HashEmbedder::Create(64)->Embed({q.texts[0]});
      q.vectors = {std::vector<float>(v->begin(), v->end())};
      q.texts.clear();
    }
    batcher.Submit(collection_, q, [&promises, i](absl::StatusOr<SearchOutcome> out) {
      promises[i].set_value(std::move(out));
    });
  }
  for (int i = 0; i < 40; ++i) {
    absl::StatusOr<SearchOutcome> got = promises[i].get_future().get();
    ASSERT_TRUE(got.ok()) << got.status();
    auto single = collection_->Search(Query(absl::StrCat("item", i * 3, " topic", i % 7)));
    ASSERT_TRUE(single.ok());
    ASSERT_EQ(got->results.size(), 1u);
    ASSERT_EQ(got->results[0].size(), single->results[0].size());
    // Batched FAISS calls take a different (BLAS) path: equal scores per
    // rank, and equal documents wherever the scores do not tie.
    const auto& want = single->results[0];
    for (size_t j = 0; j < want.size(); ++j) {
      EXPECT_NEAR(got->results[0][j].score, want[j].score, 1e-5);
      const bool tie = (j > 0 && want[j - 1].score - want[j].score < 1e-5) ||
                       (j + 1 < want.size() && want[j].score - want[j + 1].score < 1e-5);
      if (!tie) {
        EXPECT_EQ(got->results[0][j].document_id, want[j].document_id) << i;
      }
    }
  }
  EXPECT_GT(largest, 1u);
  EXPECT_LT(batches, 40);
  EXPECT_GT(batcher.batched_searches(), 0);
}

TEST_F(SearchBatcherTest, DifferentParametersAndBadQueriesStayApart) {
  SearchQuery a = Query("item3 topic3");
  SearchQuery b = a;
  b.filter = {{"shard", {"1"}}};
  EXPECT_FALSE(SameSearchParameters(a, b));
  b = a;
  b.k = 6;
  EXPECT_FALSE(SameSearchParameters(a, b));
  EXPECT_TRUE(SameSearchParameters(a, Query("other text")));

  SearchBatcher batcher(1);
  std::vector<std::promise<absl::StatusOr<SearchOutcome>>> promises(3);
  SearchQuery bad = Query("x");
  bad.texts.clear();
  bad.vectors = {std::vector<float>(3, 0.5f)};  // wrong dimension
  SearchQuery filtered = Query("item3 topic3");
  filtered.filter = {{"shard", {"1"}}};
  const SearchQuery queries[] = {Query("item3 topic3"), bad, filtered};
  for (int i = 0; i < 3; ++i) {
    batcher.Submit(collection_, queries[i], [&promises, i](absl::StatusOr<SearchOutcome> out) {
      promises[i].set_value(std::move(out));
    });
  }
  auto first = promises[0].get_future().get();
  auto second = promises[1].get_future().get();
  auto third = promises[2].get_future().get();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->results[0][0].document_id, "d3");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(third.ok());
  for (const auto& h : third->results[0]) EXPECT_EQ(h.metadata->at("shard"), "1");
}

}  // namespace
}  // namespace switchyard::retrieval
