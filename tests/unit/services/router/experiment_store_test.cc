#include "services/router/experiment_store.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "shared/core/sqlite_db.h"
#include "tests/testing/temp_dir.h"

namespace switchyard::router {
namespace {

constexpr char kExperiment[] = "exp";

ExperimentRecord Experiment(const std::string& id, int64_t create_us) {
  ExperimentRecord r;
  r.experiment_id = id;
  r.spec_json = absl::StrCat(R"({"name":")", id, R"("})");
  r.create_us = create_us;
  r.update_us = create_us;
  return r;
}

InteractionRecord Interaction(const std::string& response_id, const std::string& arm,
                              int64_t create_us) {
  InteractionRecord r;
  r.response_id = response_id;
  r.experiment_id = kExperiment;
  r.arm = arm;
  r.user_key = "user-1";
  r.create_us = create_us;
  r.detail_json = absl::StrCat(R"({"answer":")", response_id, R"("})");
  return r;
}

FeedbackRecord Feedback(const std::string& feedback_id, const std::string& response_id,
                        const std::string& arm, const std::string& reviewer, double score,
                        int64_t create_us) {
  FeedbackRecord f;
  f.feedback_id = feedback_id;
  f.experiment_id = kExperiment;
  f.response_id = response_id;
  f.arm = arm;
  f.score = score;
  f.normalized = (score - 1) / 4;
  f.reviewer = reviewer;
  f.create_us = create_us;
  return f;
}

ComparisonRecord Comparison(const std::string& comparison_id, const std::string& response_id,
                            const std::string& other_response_id, const std::string& reviewer,
                            int result, int64_t create_us) {
  ComparisonRecord c;
  c.comparison_id = comparison_id;
  c.experiment_id = kExperiment;
  c.response_id = response_id;
  c.other_response_id = other_response_id;
  c.arm = "a";
  c.other_arm = "b";
  c.result = result;
  c.reviewer = reviewer;
  c.create_us = create_us;
  return c;
}

class ExperimentStoreTest : public testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    if (HasFatalFailure()) return;
    path_ = dir_ + "/switchyard.db";
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    TempDirTest::TearDown();
  }

  // Destroys the store (draining its queue) and opens the file again.
  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<ExperimentStore>> store = ExperimentStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  std::vector<std::string> Ids(const InteractionQuery& query) {
    absl::StatusOr<std::vector<InteractionRecord>> list = store_->ListInteractions(query);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> out;
    if (list.ok()) {
      for (const InteractionRecord& r : *list) out.push_back(r.response_id);
    }
    return out;
  }

  static InteractionQuery Query() {
    InteractionQuery q;
    q.experiment_id = kExperiment;
    return q;
  }

  // A small log (newest first: a3 b3 a2s b2 a2 b1s a1) and one interaction
  // of another experiment. a1 has its shadow b1s; b2 has its shadow a2s.
  void AppendLog() {
    auto pair = [](InteractionRecord r, const std::string& paired, bool shadow) {
      r.paired_response_id = paired;
      r.shadow = shadow;
      return r;
    };
    store_->AppendInteraction(pair(Interaction("a1", "a", 100), "b1s", false));
    store_->AppendInteraction(pair(Interaction("b1s", "b", 101), "a1", true));
    store_->AppendInteraction(Interaction("a2", "a", 200));
    store_->AppendInteraction(pair(Interaction("b2", "b", 300), "a2s", false));
    store_->AppendInteraction(pair(Interaction("a2s", "a", 301), "b2", true));
    store_->AppendInteraction(Interaction("b3", "b", 400));
    store_->AppendInteraction(Interaction("a3", "a", 500));
    InteractionRecord other = Interaction("x1", "a", 250);
    other.experiment_id = "exp-other";
    store_->AppendInteraction(other);
  }

  std::string path_;
  std::unique_ptr<ExperimentStore> store_;
};

using IdList = std::vector<std::string>;

TEST_F(ExperimentStoreTest, CreatedExperimentIsReturnedByGet) {
  ExperimentRecord r = Experiment("e1", 1000);
  r.archive_us = 0;
  ASSERT_TRUE(store_->CreateExperiment(r).ok());
  absl::StatusOr<ExperimentRecord> got = store_->GetExperiment("e1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->experiment_id, "e1");
  EXPECT_EQ(got->spec_json, r.spec_json);
  EXPECT_EQ(got->state, ExperimentState::kActive);
  EXPECT_EQ(got->create_us, 1000);
  EXPECT_EQ(got->update_us, 1000);
  EXPECT_EQ(got->archive_us, 0);
}

TEST_F(ExperimentStoreTest, DuplicateExperimentIsAlreadyExistsAndKeepsTheFirst) {
  ASSERT_TRUE(store_->CreateExperiment(Experiment("e1", 1000)).ok());
  ExperimentRecord again = Experiment("e1", 2000);
  again.spec_json = "{}";
  EXPECT_EQ(store_->CreateExperiment(again).code(), absl::StatusCode::kAlreadyExists);
  absl::StatusOr<ExperimentRecord> got = store_->GetExperiment("e1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->create_us, 1000);
  EXPECT_EQ(got->spec_json, Experiment("e1", 1000).spec_json);
}

TEST_F(ExperimentStoreTest, MissingExperimentIsNotFoundOnGetAndUpdate) {
  EXPECT_EQ(store_->GetExperiment("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->UpdateExperiment(Experiment("nope", 1)).code(), absl::StatusCode::kNotFound);
  // The failed update created nothing.
  absl::StatusOr<std::vector<ExperimentRecord>> all = store_->ListExperiments();
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty());
}

TEST_F(ExperimentStoreTest, ListExperimentsIsNewestFirst) {
  ASSERT_TRUE(store_->CreateExperiment(Experiment("middle", 2000)).ok());
  ASSERT_TRUE(store_->CreateExperiment(Experiment("oldest", 1000)).ok());
  ASSERT_TRUE(store_->CreateExperiment(Experiment("newest", 3000)).ok());
  absl::StatusOr<std::vector<ExperimentRecord>> all = store_->ListExperiments();
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].experiment_id, "newest");
  EXPECT_EQ((*all)[1].experiment_id, "middle");
  EXPECT_EQ((*all)[2].experiment_id, "oldest");
}

TEST_F(ExperimentStoreTest, UpdateReplacesStateSpecAndTimesButNotCreateTime) {
  ASSERT_TRUE(store_->CreateExperiment(Experiment("e1", 1000)).ok());
  ExperimentRecord r = Experiment("e1", 9999);  // create_us is not updatable
  r.state = ExperimentState::kArchived;
  r.spec_json = R"({"name":"e1","arms":2})";
  r.update_us = 5000;
  r.archive_us = 5000;
  ASSERT_TRUE(store_->UpdateExperiment(r).ok());
  absl::StatusOr<ExperimentRecord> got = store_->GetExperiment("e1");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->state, ExperimentState::kArchived);
  EXPECT_EQ(got->spec_json, r.spec_json);
  EXPECT_EQ(got->update_us, 5000);
  EXPECT_EQ(got->archive_us, 5000);
  EXPECT_EQ(got->create_us, 1000);
}

TEST_F(ExperimentStoreTest, AppendedInteractionIsFoundRightAwayWithEveryField) {
  InteractionRecord r = Interaction("r1", "rag", 1234567);
  r.user_key = "alice";
  r.shadow = true;
  r.paired_response_id = "r0";
  r.overridden = true;
  r.excluded = true;
  r.error_code = 14;
  r.latency_seconds = 1.25;
  r.time_to_first_token_seconds = 0.5;
  r.compute_seconds = 0.75;
  r.retrieval_seconds = 0.125;
  r.prompt_tokens = 321;
  r.completion_tokens = 123;
  r.context_missing = true;
  store_->AppendInteraction(r);
  // No Flush: the read waits for the writer.
  absl::StatusOr<InteractionRecord> got = store_->GetInteraction("r1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->response_id, "r1");
  EXPECT_EQ(got->experiment_id, kExperiment);
  EXPECT_EQ(got->arm, "rag");
  EXPECT_EQ(got->user_key, "alice");
  EXPECT_TRUE(got->shadow);
  EXPECT_EQ(got->paired_response_id, "r0");
  EXPECT_TRUE(got->overridden);
  EXPECT_TRUE(got->excluded);
  EXPECT_EQ(got->error_code, 14);
  EXPECT_EQ(got->create_us, 1234567);
  EXPECT_DOUBLE_EQ(got->latency_seconds, 1.25);
  EXPECT_DOUBLE_EQ(got->time_to_first_token_seconds, 0.5);
  EXPECT_DOUBLE_EQ(got->compute_seconds, 0.75);
  EXPECT_DOUBLE_EQ(got->retrieval_seconds, 0.125);
  EXPECT_EQ(got->prompt_tokens, 321);
  EXPECT_EQ(got->completion_tokens, 123);
  EXPECT_TRUE(got->context_missing);
  EXPECT_EQ(got->detail_json, r.detail_json);
}

TEST_F(ExperimentStoreTest, MissingInteractionIsNotFoundNamingTheId) {
  absl::StatusOr<InteractionRecord> got = store_->GetInteraction("ghost-17");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(got.status().message().find("ghost-17"), std::string::npos) << got.status();
}

TEST_F(ExperimentStoreTest, ThousandAppendedInteractionsAreAllListedAfterFlush) {
  for (int i = 0; i < 1000; ++i) {
    store_->AppendInteraction(Interaction(absl::StrCat("r", i), i % 2 ? "a" : "b", 1000 + i));
  }
  ASSERT_TRUE(store_->Flush().ok());
  EXPECT_EQ(store_->written(), 1000);
  EXPECT_EQ(store_->write_failures(), 0);
  const IdList ids = Ids(Query());
  ASSERT_EQ(ids.size(), 1000u);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 1000u);
  EXPECT_EQ(ids.front(), "r999");  // newest first
  EXPECT_EQ(ids.back(), "r0");
}

TEST_F(ExperimentStoreTest, FlushReportsAFailedWriteOnceAndLaterWritesGoOn) {
  // A second connection makes inserts of arm "poison" fail.
  absl::StatusOr<std::unique_ptr<SqliteDb>> other = SqliteDb::Open(path_);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_TRUE((*other)
                  ->Exec("CREATE TRIGGER poison BEFORE INSERT ON router_interactions "
                         "WHEN NEW.arm = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned'); END")
                  .ok());
  store_->AppendInteraction(Interaction("good-1", "a", 1));
  ASSERT_TRUE(store_->Flush().ok());
  store_->AppendInteraction(Interaction("bad", "poison", 2));
  const absl::Status failed = store_->Flush();
  EXPECT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find("poisoned"), std::string::npos) << failed;
  EXPECT_EQ(store_->write_failures(), 1);
  store_->AppendInteraction(Interaction("good-2", "a", 3));
  EXPECT_TRUE(store_->Flush().ok());  // the error was reported once
  EXPECT_EQ(store_->written(), 2);
  EXPECT_EQ(store_->GetInteraction("bad").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store_->GetInteraction("good-2").ok());
}

TEST_F(ExperimentStoreTest, OpenFailsWhereNoFileCanBeCreated) {
  EXPECT_FALSE(ExperimentStore::Open(dir_ + "/no/such/dir/switchyard.db").ok());
}

TEST_F(ExperimentStoreTest, AppendsFromManyThreadsAreAllReadBack) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < 250; ++i) {
        store_->AppendInteraction(Interaction(absl::StrCat("t", t, "-", i), "a", 1 + i));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(Ids(Query()).size(), 1000u);  // no Flush: the list waits for the writer
}

TEST_F(ExperimentStoreTest, ListInteractionsIsNewestFirstForOneExperiment) {
  AppendLog();
  EXPECT_EQ(Ids(Query()), (IdList{"a3", "b3", "a2s", "b2", "a2", "b1s", "a1"}));
  InteractionQuery other = Query();
  other.experiment_id = "exp-other";
  EXPECT_EQ(Ids(other), IdList{"x1"});
}

TEST_F(ExperimentStoreTest, SameTimeInteractionsAreOrderedByResponseIdDescending) {
  store_->AppendInteraction(Interaction("m", "a", 100));
  store_->AppendInteraction(Interaction("z", "a", 100));
  store_->AppendInteraction(Interaction("a", "a", 100));
  EXPECT_EQ(Ids(Query()), (IdList{"z", "m", "a"}));
}

TEST_F(ExperimentStoreTest, ListInteractionsFiltersByArm) {
  AppendLog();
  InteractionQuery q = Query();
  q.arm = "a";
  EXPECT_EQ(Ids(q), (IdList{"a3", "a2s", "a2", "a1"}));
  q.arm = "b";
  EXPECT_EQ(Ids(q), (IdList{"b3", "b2", "b1s"}));
  q.arm = "nope";
  EXPECT_TRUE(Ids(q).empty());
}

TEST_F(ExperimentStoreTest, ServedOnlyLeavesOutShadowAnswers) {
  AppendLog();
  InteractionQuery q = Query();
  q.served_only = true;
  EXPECT_EQ(Ids(q), (IdList{"a3", "b3", "b2", "a2", "a1"}));
}

TEST_F(ExperimentStoreTest, ShadowPairsOnlyListsServedAnswersThatHaveAShadow) {
  AppendLog();
  InteractionQuery q = Query();
  q.shadow_pairs_only = true;
  EXPECT_EQ(Ids(q), (IdList{"b2", "a1"}));
}

TEST_F(ExperimentStoreTest, UnreviewedOnlyDropsPairsWithAComparisonInEitherOrder) {
  AppendLog();
  InteractionQuery q = Query();
  q.shadow_pairs_only = true;
  q.unreviewed_only = true;
  EXPECT_EQ(Ids(q), (IdList{"b2", "a1"}));
  // Reviewed as (shadow, served).
  ASSERT_TRUE(store_->PutComparison(Comparison("c1", "b1s", "a1", "ann", 1, 10)).ok());
  EXPECT_EQ(Ids(q), IdList{"b2"});
  // Reviewed as (served, shadow).
  ASSERT_TRUE(store_->PutComparison(Comparison("c2", "b2", "a2s", "ann", 3, 11)).ok());
  EXPECT_TRUE(Ids(q).empty());
  // Without unreviewed_only both pairs are still listed.
  q.unreviewed_only = false;
  EXPECT_EQ(Ids(q), (IdList{"b2", "a1"}));
}

TEST_F(ExperimentStoreTest, WithFeedbackOnlyListsRatedInteractions) {
  AppendLog();
  InteractionQuery q = Query();
  q.with_feedback_only = true;
  EXPECT_TRUE(Ids(q).empty());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f1", "a2", "a", "ann", 4, 10)).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f2", "b3", "b", "", 2, 11)).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f3", "b3", "b", "", 5, 12)).ok());
  EXPECT_EQ(Ids(q), (IdList{"b3", "a2"}));
}

TEST_F(ExperimentStoreTest, TimeWindowIncludesStartAndExcludesEnd) {
  AppendLog();
  InteractionQuery q = Query();
  q.start_us = 200;
  q.end_us = 400;
  EXPECT_EQ(Ids(q), (IdList{"a2s", "b2", "a2"}));
  q.end_us = 0;  // unbounded
  EXPECT_EQ(Ids(q), (IdList{"a3", "b3", "a2s", "b2", "a2"}));
  q.start_us = 0;
  q.end_us = 101;
  EXPECT_EQ(Ids(q), IdList{"a1"});
}

TEST_F(ExperimentStoreTest, OffsetAndLimitPageThroughNewestFirst) {
  AppendLog();
  InteractionQuery q = Query();
  q.limit = 2;
  EXPECT_EQ(Ids(q), (IdList{"a3", "b3"}));
  q.offset = 2;
  q.limit = 3;
  EXPECT_EQ(Ids(q), (IdList{"a2s", "b2", "a2"}));
  q.offset = 5;
  q.limit = -1;  // all the rest
  EXPECT_EQ(Ids(q), (IdList{"b1s", "a1"}));
  q.offset = 7;
  EXPECT_TRUE(Ids(q).empty());
}

TEST_F(ExperimentStoreTest, FiltersCombine) {
  AppendLog();
  InteractionQuery q = Query();
  q.arm = "b";
  q.served_only = true;
  q.start_us = 300;
  EXPECT_EQ(Ids(q), (IdList{"b3", "b2"}));
}

TEST_F(ExperimentStoreTest, WithoutDetailLeavesDetailJsonEmpty) {
  AppendLog();
  InteractionQuery q = Query();
  absl::StatusOr<std::vector<InteractionRecord>> with = store_->ListInteractions(q);
  ASSERT_TRUE(with.ok());
  ASSERT_FALSE(with->empty());
  for (const InteractionRecord& r : *with) EXPECT_FALSE(r.detail_json.empty()) << r.response_id;
  q.with_detail = false;
  absl::StatusOr<std::vector<InteractionRecord>> without = store_->ListInteractions(q);
  ASSERT_TRUE(without.ok());
  ASSERT_EQ(without->size(), with->size());
  for (const InteractionRecord& r : *without) {
    EXPECT_TRUE(r.detail_json.empty()) << r.response_id;
    EXPECT_FALSE(r.arm.empty());  // the columns are still read
  }
}

TEST_F(ExperimentStoreTest, SameReviewersFeedbackReplacesTheirEarlierOne) {
  AppendLog();
  ASSERT_TRUE(store_->PutFeedback(Feedback("f1", "a1", "a", "ann", 2, 10)).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f2", "a1", "a", "bob", 3, 11)).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f3", "a2", "a", "ann", 1, 12)).ok());
  absl::StatusOr<FeedbackRecord> put = store_->PutFeedback(Feedback("f4", "a1", "a", "ann", 5, 13));
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->feedback_id, "f4");
  absl::StatusOr<std::vector<FeedbackRecord>> a1 = store_->ListFeedback(kExperiment, "a1");
  ASSERT_TRUE(a1.ok()) << a1.status();
  ASSERT_EQ(a1->size(), 2u);
  EXPECT_EQ((*a1)[0].feedback_id, "f2");  // oldest first
  EXPECT_EQ((*a1)[1].feedback_id, "f4");
  EXPECT_DOUBLE_EQ((*a1)[1].score, 5);
  EXPECT_DOUBLE_EQ((*a1)[1].normalized, 1);
  // ann's rating of another response stays.
  absl::StatusOr<std::vector<FeedbackRecord>> all = store_->ListFeedback(kExperiment);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].feedback_id, "f2");
  EXPECT_EQ((*all)[1].feedback_id, "f3");
  EXPECT_EQ((*all)[2].feedback_id, "f4");
}

TEST_F(ExperimentStoreTest, AnonymousFeedbackAccumulates) {
  AppendLog();
  ASSERT_TRUE(store_->PutFeedback(Feedback("f1", "a1", "a", "", 2, 10)).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f2", "a1", "a", "", 4, 11)).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f3", "a1", "a", "", 5, 12)).ok());
  absl::StatusOr<std::vector<FeedbackRecord>> list = store_->ListFeedback(kExperiment, "a1");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 3u);
}

TEST_F(ExperimentStoreTest, ListFeedbackJoinsShadowAndExcludedFromTheInteraction) {
  InteractionRecord excluded = Interaction("ex", "a", 50);
  excluded.excluded = true;
  store_->AppendInteraction(excluded);
  AppendLog();
  FeedbackRecord on_shadow = Feedback("f1", "b1s", "b", "ann", 4, 10);
  on_shadow.thumbs = 1;
  on_shadow.comment = "good";
  // Flags in the record passed in are not stored: they come from the log.
  FeedbackRecord on_served = Feedback("f2", "a1", "a", "ann", 2, 11);
  on_served.shadow = true;
  on_served.excluded = true;
  ASSERT_TRUE(store_->PutFeedback(on_shadow).ok());
  ASSERT_TRUE(store_->PutFeedback(on_served).ok());
  ASSERT_TRUE(store_->PutFeedback(Feedback("f3", "ex", "a", "ann", 3, 12)).ok());
  absl::StatusOr<std::vector<FeedbackRecord>> list = store_->ListFeedback(kExperiment);
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 3u);
  const FeedbackRecord& f1 = (*list)[0];
  EXPECT_EQ(f1.feedback_id, "f1");
  EXPECT_TRUE(f1.shadow);
  EXPECT_FALSE(f1.excluded);
  EXPECT_EQ(f1.thumbs, 1);
  EXPECT_EQ(f1.comment, "good");
  EXPECT_EQ(f1.reviewer, "ann");
  EXPECT_EQ(f1.arm, "b");
  EXPECT_EQ(f1.create_us, 10);
  EXPECT_FALSE((*list)[1].shadow);
  EXPECT_FALSE((*list)[1].excluded);
  EXPECT_FALSE((*list)[2].shadow);
  EXPECT_TRUE((*list)[2].excluded);
}

TEST_F(ExperimentStoreTest, SameReviewersComparisonOfSamePairInEitherOrderReplaces) {
  AppendLog();
  ASSERT_TRUE(store_->PutComparison(Comparison("c1", "a1", "b1s", "ann", 1, 10)).ok());
  ASSERT_TRUE(store_->PutComparison(Comparison("c2", "a1", "b1s", "bob", 3, 11)).ok());
  ASSERT_TRUE(store_->PutComparison(Comparison("c3", "b2", "a2s", "ann", 4, 12)).ok());
  // ann again on the first pair, in the other order.
  absl::StatusOr<ComparisonRecord> put =
      store_->PutComparison(Comparison("c4", "b1s", "a1", "ann", 2, 13));
  ASSERT_TRUE(put.ok()) << put.status();
  absl::StatusOr<std::vector<ComparisonRecord>> all = store_->ListComparisons(kExperiment);
  ASSERT_TRUE(all.ok()) << all.status();
  std::vector<std::string> ids;
  for (const ComparisonRecord& c : *all) ids.push_back(c.comparison_id);
  EXPECT_EQ(ids, (IdList{"c2", "c3", "c4"}));
  // And once more in the original order.
  ASSERT_TRUE(store_->PutComparison(Comparison("c5", "a1", "b1s", "ann", 3, 14)).ok());
  all = store_->ListComparisons(kExperiment);
  ASSERT_TRUE(all.ok());
  ids.clear();
  for (const ComparisonRecord& c : *all) ids.push_back(c.comparison_id);
  EXPECT_EQ(ids, (IdList{"c2", "c3", "c5"}));
}

TEST_F(ExperimentStoreTest, AnonymousComparisonsAccumulate) {
  AppendLog();
  ASSERT_TRUE(store_->PutComparison(Comparison("c1", "a1", "b1s", "", 1, 10)).ok());
  ASSERT_TRUE(store_->PutComparison(Comparison("c2", "b1s", "a1", "", 2, 11)).ok());
  absl::StatusOr<std::vector<ComparisonRecord>> all = store_->ListComparisons(kExperiment);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 2u);
}

TEST_F(ExperimentStoreTest, ListComparisonsByExperimentAndByResponseId) {
  AppendLog();
  ComparisonRecord c1 = Comparison("c1", "a1", "b1s", "ann", 1, 10);
  c1.preferred_arm = "a";
  c1.comment = "clearer";
  ASSERT_TRUE(store_->PutComparison(c1).ok());
  ASSERT_TRUE(store_->PutComparison(Comparison("c2", "b2", "a2s", "ann", 3, 11)).ok());
  ComparisonRecord elsewhere = Comparison("c3", "x1", "x2", "ann", 1, 12);
  elsewhere.experiment_id = "exp-other";
  ASSERT_TRUE(store_->PutComparison(elsewhere).ok());

  absl::StatusOr<std::vector<ComparisonRecord>> all = store_->ListComparisons(kExperiment);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  const ComparisonRecord& got = (*all)[0];
  EXPECT_EQ(got.comparison_id, "c1");
  EXPECT_EQ(got.experiment_id, kExperiment);
  EXPECT_EQ(got.response_id, "a1");
  EXPECT_EQ(got.other_response_id, "b1s");
  EXPECT_EQ(got.arm, "a");
  EXPECT_EQ(got.other_arm, "b");
  EXPECT_EQ(got.result, 1);
  EXPECT_EQ(got.preferred_arm, "a");
  EXPECT_EQ(got.reviewer, "ann");
  EXPECT_EQ(got.comment, "clearer");
  EXPECT_EQ(got.create_us, 10);
  EXPECT_EQ((*all)[1].comparison_id, "c2");

  // By response id, as either side of the pair.
  for (const char* id : {"a1", "b1s"}) {
    absl::StatusOr<std::vector<ComparisonRecord>> one = store_->ListComparisons(kExperiment, id);
    ASSERT_TRUE(one.ok());
    ASSERT_EQ(one->size(), 1u) << id;
    EXPECT_EQ((*one)[0].comparison_id, "c1");
  }
  absl::StatusOr<std::vector<ComparisonRecord>> none = store_->ListComparisons(kExperiment, "a3");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  absl::StatusOr<std::vector<ComparisonRecord>> other = store_->ListComparisons("exp-other");
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].comparison_id, "c3");
}

TEST_F(ExperimentStoreTest, ReopeningKeepsEverythingIncludingInteractionsQueuedAtDestruction) {
  ASSERT_TRUE(store_->CreateExperiment(Experiment(kExperiment, 1000)).ok());
  AppendLog();
  ASSERT_TRUE(store_->PutFeedback(Feedback("f1", "a1", "a", "ann", 4, 10)).ok());
  ASSERT_TRUE(store_->PutComparison(Comparison("c1", "a1", "b1s", "ann", 1, 11)).ok());
  // Queued right before the store goes away, with no Flush and no read.
  for (int i = 0; i < 2000; ++i) {
    store_->AppendInteraction(Interaction(absl::StrCat("late-", i), "b", 10000 + i));
  }
  Reopen();
  ASSERT_FALSE(HasFatalFailure());

  absl::StatusOr<ExperimentRecord> e = store_->GetExperiment(kExperiment);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->spec_json, Experiment(kExperiment, 1000).spec_json);
  const IdList ids = Ids(Query());
  ASSERT_EQ(ids.size(), 2007u);
  EXPECT_EQ(ids.front(), "late-1999");
  absl::StatusOr<InteractionRecord> a1 = store_->GetInteraction("a1");
  ASSERT_TRUE(a1.ok());
  EXPECT_EQ(a1->paired_response_id, "b1s");
  absl::StatusOr<std::vector<FeedbackRecord>> feedback = store_->ListFeedback(kExperiment);
  ASSERT_TRUE(feedback.ok());
  ASSERT_EQ(feedback->size(), 1u);
  EXPECT_EQ((*feedback)[0].feedback_id, "f1");
  absl::StatusOr<std::vector<ComparisonRecord>> comparisons = store_->ListComparisons(kExperiment);
  ASSERT_TRUE(comparisons.ok());
  ASSERT_EQ(comparisons->size(), 1u);
  EXPECT_EQ((*comparisons)[0].comparison_id, "c1");
  // Reopening an existing file creates nothing twice.
  EXPECT_EQ(store_->CreateExperiment(Experiment(kExperiment, 1)).code(),
            absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace switchyard::router
