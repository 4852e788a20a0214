#include "services/router/experiment_store.h"

#include <functional>

#include "absl/strings/str_cat.h"
#include "shared/core/logging.h"
#include "shared/core/sqlite_db.h"
#include "shared/core/status_macros.h"

namespace switchyard::router {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS router_experiments (
  experiment_id TEXT PRIMARY KEY,
  state INTEGER NOT NULL,
  create_us INTEGER NOT NULL,
  update_us INTEGER NOT NULL,
  archive_us INTEGER NOT NULL,
  spec_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS router_interactions (
  response_id TEXT PRIMARY KEY,
  experiment_id TEXT NOT NULL,
  arm TEXT NOT NULL,
  user_key TEXT NOT NULL,
  shadow INTEGER NOT NULL,
  paired_response_id TEXT NOT NULL,
  overridden INTEGER NOT NULL,
  excluded INTEGER NOT NULL,
  error_code INTEGER NOT NULL,
  create_us INTEGER NOT NULL,
  latency_seconds REAL NOT NULL,
  ttft_seconds REAL NOT NULL,
  compute_seconds REAL NOT NULL,
  retrieval_seconds REAL NOT NULL,
  prompt_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  context_missing INTEGER NOT NULL,
  detail_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS router_interactions_by_time
  ON router_interactions (experiment_id, create_us);
CREATE TABLE IF NOT EXISTS router_feedback (
  feedback_id TEXT PRIMARY KEY,
  experiment_id TEXT NOT NULL,
  response_id TEXT NOT NULL,
  arm TEXT NOT NULL,
  score REAL NOT NULL,
  normalized REAL NOT NULL,
  thumbs INTEGER NOT NULL,
  comment TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  create_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS router_feedback_by_experiment
  ON router_feedback (experiment_id, create_us);
CREATE INDEX IF NOT EXISTS router_feedback_by_response ON router_feedback (response_id);
CREATE TABLE IF NOT EXISTS router_comparisons (
  comparison_id TEXT PRIMARY KEY,
  experiment_id TEXT NOT NULL,
  response_id TEXT NOT NULL,
  other_response_id TEXT NOT NULL,
  arm TEXT NOT NULL,
  other_arm TEXT NOT NULL,
  result INTEGER NOT NULL,
  preferred_arm TEXT NOT NULL,
  reviewer TEXT NOT NULL,
  comment TEXT NOT NULL,
  create_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS router_comparisons_by_experiment
  ON router_comparisons (experiment_id, create_us);
CREATE TABLE IF NOT EXISTS router_evaluations (
  evaluation_id TEXT PRIMARY KEY,
  experiment_id TEXT NOT NULL,
  create_us INTEGER NOT NULL,
  evaluation_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS router_evaluations_by_experiment
  ON router_evaluations (experiment_id, create_us);
)sql";

constexpr const char* kInteractionColumns =
    "i.response_id, i.experiment_id, i.arm, i.user_key, i.shadow, i.paired_response_id, "
    "i.overridden, i.excluded, i.error_code, i.create_us, i.latency_seconds, i.ttft_seconds, "
    "i.compute_seconds, i.retrieval_seconds, i.prompt_tokens, i.completion_tokens, "
    "i.context_missing";

InteractionRecord ReadInteraction(const SqliteStatement& st, bool with_detail) {
  InteractionRecord r;
  r.response_id = st.Text(0);
  r.experiment_id = st.Text(1);
  r.arm = st.Text(2);
  r.user_key = st.Text(3);
  r.shadow = st.Int(4) != 0;
  r.paired_response_id = st.Text(5);
  r.overridden = st.Int(6) != 0;
  r.excluded = st.Int(7) != 0;
  r.error_code = static_cast<int>(st.Int(8));
  r.create_us = st.Int(9);
  r.latency_seconds = st.Double(10);
  r.time_to_first_token_seconds = st.Double(11);
  r.compute_seconds = st.Double(12);
  r.retrieval_seconds = st.Double(13);
  r.prompt_tokens = st.Int(14);
  r.completion_tokens = st.Int(15);
  r.context_missing = st.Int(16) != 0;
  if (with_detail) r.detail_json = st.Text(17);
  return r;
}

ExperimentRecord ReadExperiment(const SqliteStatement& st) {
  ExperimentRecord r;
  r.experiment_id = st.Text(0);
  r.state = static_cast<ExperimentState>(st.Int(1));
  r.create_us = st.Int(2);
  r.update_us = st.Int(3);
  r.archive_us = st.Int(4);
  r.spec_json = st.Text(5);
  return r;
}

constexpr const char* kFeedbackColumns =
    "f.feedback_id, f.experiment_id, f.response_id, f.arm, f.score, f.normalized, f.thumbs, "
    "f.comment, f.reviewer, f.create_us, i.shadow, i.excluded";

FeedbackRecord ReadFeedback(const SqliteStatement& st) {
  FeedbackRecord r;
  r.feedback_id = st.Text(0);
  r.experiment_id = st.Text(1);
  r.response_id = st.Text(2);
  r.arm = st.Text(3);
  r.score = st.Double(4);
  r.normalized = st.Double(5);
  r.thumbs = static_cast<int>(st.Int(6));
  r.comment = st.Text(7);
  r.reviewer = st.Text(8);
  r.create_us = st.Int(9);
  r.shadow = st.Int(10) != 0;
  r.excluded = st.Int(11) != 0;
  return r;
}

constexpr const char* kComparisonColumns =
    "comparison_id, experiment_id, response_id, other_response_id, arm, other_arm, result, "
    "preferred_arm, reviewer, comment, create_us";

ComparisonRecord ReadComparison(const SqliteStatement& st) {
  ComparisonRecord r;
  r.comparison_id = st.Text(0);
  r.experiment_id = st.Text(1);
  r.response_id = st.Text(2);
  r.other_response_id = st.Text(3);
  r.arm = st.Text(4);
  r.other_arm = st.Text(5);
  r.result = static_cast<int>(st.Int(6));
  r.preferred_arm = st.Text(7);
  r.reviewer = st.Text(8);
  r.comment = st.Text(9);
  r.create_us = st.Int(10);
  return r;
}

// Runs `body` in one transaction: committed when it succeeds, rolled back
// when it fails. The caller holds the connection's mutex.
absl::Status InTransaction(SqliteDb& db, const std::function<absl::Status()>& body) {
  SY_RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
  absl::Status s = body();
  if (!s.ok()) {
    (void)db.Exec("ROLLBACK");
    return s;
  }
  s = db.Exec("COMMIT");
  if (!s.ok()) (void)db.Exec("ROLLBACK");  // never leave the transaction open
  return s;
}

}  // namespace

ExperimentStore::ExperimentStore(std::unique_ptr<SqliteDb> db) : db_(std::move(db)) {
  writer_ = std::thread([this] { WriterLoop(); });
}

ExperimentStore::~ExperimentStore() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  writer_.join();
}

absl::StatusOr<std::unique_ptr<ExperimentStore>> ExperimentStore::Open(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(path));
  SY_RETURN_IF_ERROR(db->Exec(kSchema));
  // WAL with synchronous=NORMAL: a commit is not fsynced on its own (the WAL
  // is at checkpoints), so the log writer never stalls chat requests behind
  // the disk. The database stays consistent through crashes; a power loss
  // can lose the last commits, never half of one.
  SY_RETURN_IF_ERROR(db->Exec("PRAGMA synchronous=NORMAL"));
  return std::unique_ptr<ExperimentStore>(new ExperimentStore(std::move(db)));
}

absl::Status ExperimentStore::CreateExperiment(const ExperimentRecord& r) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement exists,
                      db_->Prepare("SELECT 1 FROM router_experiments WHERE experiment_id = ?1"));
  exists.Bind(1, r.experiment_id);
  SY_ASSIGN_OR_RETURN(bool found, exists.Step());
  if (found) {
    return absl::AlreadyExistsError(
        absl::StrCat("experiments/", r.experiment_id, " already exists"));
  }
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare("INSERT INTO router_experiments (experiment_id, state, create_us, update_us, "
                   "archive_us, spec_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  st.Bind(1, r.experiment_id)
      .Bind(2, static_cast<int64_t>(r.state))
      .Bind(3, r.create_us)
      .Bind(4, r.update_us)
      .Bind(5, r.archive_us)
      .Bind(6, r.spec_json);
  return st.Run();
}

absl::Status ExperimentStore::UpdateExperiment(const ExperimentRecord& r) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("UPDATE router_experiments SET state = ?2, update_us = ?3, "
                                   "archive_us = ?4, spec_json = ?5 WHERE experiment_id = ?1"));
  st.Bind(1, r.experiment_id)
      .Bind(2, static_cast<int64_t>(r.state))
      .Bind(3, r.update_us)
      .Bind(4, r.archive_us)
      .Bind(5, r.spec_json);
  SY_RETURN_IF_ERROR(st.Run());
  if (db_->Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("experiments/", r.experiment_id, " not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExperimentRecord> ExperimentStore::GetExperiment(const std::string& id) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("SELECT experiment_id, state, create_us, update_us, archive_us, "
                                   "spec_json FROM router_experiments WHERE experiment_id = ?1"));
  st.Bind(1, id);
  SY_ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("experiments/", id, " not found"));
  return ReadExperiment(st);
}

absl::StatusOr<std::vector<ExperimentRecord>> ExperimentStore::ListExperiments() {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("SELECT experiment_id, state, create_us, update_us, archive_us, "
                                   "spec_json FROM router_experiments "
                                   "ORDER BY create_us DESC, experiment_id"));
  std::vector<ExperimentRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadExperiment(st));
  }
  return out;
}

void ExperimentStore::AppendInteraction(InteractionRecord record) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(record));
    ++queued_;
  }
  wake_.notify_one();
}

void ExperimentStore::WaitWritten() {
  std::unique_lock<std::mutex> lock(mu_);
  const int64_t target = queued_;
  done_.wait(lock, [&] { return written_ + failed_ >= target; });
}

absl::Status ExperimentStore::Flush() {
  WaitWritten();
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status s = write_error_;
  write_error_ = absl::OkStatus();
  return s;
}

int64_t ExperimentStore::written() const {
  std::lock_guard<std::mutex> lock(mu_);
  return written_;
}

int64_t ExperimentStore::write_failures() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

void ExperimentStore::WriterLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, all written
    std::vector<InteractionRecord> batch;
    while (!queue_.empty() && batch.size() < 512) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    lock.unlock();
    absl::Status s = WriteBatch(batch);
    if (!s.ok()) {
      SY_LOG(kError, "router") << "interaction log: " << batch.size()
                               << " interactions not written: " << s.message();
    }
    lock.lock();
    if (s.ok()) {
      written_ += static_cast<int64_t>(batch.size());
    } else {
      failed_ += static_cast<int64_t>(batch.size());
      if (write_error_.ok()) write_error_ = s;
    }
    done_.notify_all();
  }
}

absl::Status ExperimentStore::WriteBatch(const std::vector<InteractionRecord>& batch) {
  std::lock_guard<std::mutex> lock(db_mu_);
  return InTransaction(*db_, [&]() -> absl::Status {
    for (const InteractionRecord& r : batch) {
      SY_ASSIGN_OR_RETURN(
          SqliteStatement st,
          db_->Prepare("INSERT OR REPLACE INTO router_interactions (response_id, experiment_id, "
                       "arm, user_key, shadow, paired_response_id, overridden, excluded, "
                       "error_code, create_us, latency_seconds, ttft_seconds, compute_seconds, "
                       "retrieval_seconds, prompt_tokens, completion_tokens, context_missing, "
                       "detail_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                       "?13, ?14, ?15, ?16, ?17, ?18)"));
      st.Bind(1, r.response_id)
          .Bind(2, r.experiment_id)
          .Bind(3, r.arm)
          .Bind(4, r.user_key)
          .Bind(5, int64_t{r.shadow})
          .Bind(6, r.paired_response_id)
          .Bind(7, int64_t{r.overridden})
          .Bind(8, int64_t{r.excluded})
          .Bind(9, int64_t{r.error_code})
          .Bind(10, r.create_us)
          .BindDouble(11, r.latency_seconds)
          .BindDouble(12, r.time_to_first_token_seconds)
          .BindDouble(13, r.compute_seconds)
          .BindDouble(14, r.retrieval_seconds)
          .Bind(15, r.prompt_tokens)
          .Bind(16, r.completion_tokens)
          .Bind(17, int64_t{r.context_missing})
          .Bind(18, r.detail_json);
      SY_RETURN_IF_ERROR(st.Run());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<InteractionRecord> ExperimentStore::GetInteraction(const std::string& response_id) {
  WaitWritten();
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare(absl::StrCat("SELECT ", kInteractionColumns,
                                                ", i.detail_json FROM router_interactions i "
                                                "WHERE i.response_id = ?1")));
  st.Bind(1, response_id);
  SY_ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("response ", response_id, " not found"));
  return ReadInteraction(st, true);
}

absl::StatusOr<std::vector<InteractionRecord>> ExperimentStore::ListInteractions(
    const InteractionQuery& q) {
  WaitWritten();
  std::string sql =
      absl::StrCat("SELECT ", kInteractionColumns, q.with_detail ? ", i.detail_json" : "",
                   " FROM router_interactions i WHERE i.experiment_id = ?1");
  if (!q.arm.empty()) absl::StrAppend(&sql, " AND i.arm = ?2");
  if (q.served_only || q.shadow_pairs_only) absl::StrAppend(&sql, " AND i.shadow = 0");
  if (q.shadow_pairs_only) absl::StrAppend(&sql, " AND i.paired_response_id != ''");
  if (q.shadow_pairs_only && q.unreviewed_only) {
    absl::StrAppend(&sql,
                    " AND NOT EXISTS (SELECT 1 FROM router_comparisons c WHERE "
                    "c.response_id IN (i.response_id, i.paired_response_id) AND "
                    "c.other_response_id IN (i.response_id, i.paired_response_id))");
  }
  if (q.with_feedback_only) {
    absl::StrAppend(&sql,
                    " AND EXISTS (SELECT 1 FROM router_feedback f WHERE f.response_id = "
                    "i.response_id)");
  }
  if (q.start_us > 0) absl::StrAppend(&sql, " AND i.create_us >= ?3");
  if (q.end_us > 0) absl::StrAppend(&sql, " AND i.create_us < ?4");
  absl::StrAppend(&sql, " ORDER BY i.create_us DESC, i.response_id DESC LIMIT ?5 OFFSET ?6");
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st, db_->Prepare(sql));
  st.Bind(1, q.experiment_id)
      .Bind(2, q.arm)
      .Bind(3, q.start_us)
      .Bind(4, q.end_us)
      .Bind(5, q.limit)
      .Bind(6, q.offset);
  std::vector<InteractionRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadInteraction(st, q.with_detail));
  }
  return out;
}

absl::StatusOr<FeedbackRecord> ExperimentStore::PutFeedback(FeedbackRecord r) {
  WaitWritten();
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_RETURN_IF_ERROR(InTransaction(*db_, [&]() -> absl::Status {
    if (!r.reviewer.empty()) {
      SY_ASSIGN_OR_RETURN(SqliteStatement del,
                          db_->Prepare("DELETE FROM router_feedback WHERE response_id = ?1 AND "
                                       "reviewer = ?2"));
      del.Bind(1, r.response_id).Bind(2, r.reviewer);
      SY_RETURN_IF_ERROR(del.Run());
    }
    SY_ASSIGN_OR_RETURN(
        SqliteStatement st,
        db_->Prepare("INSERT INTO router_feedback (feedback_id, experiment_id, response_id, arm, "
                     "score, normalized, thumbs, comment, reviewer, create_us) VALUES (?1, ?2, "
                     "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"));
    st.Bind(1, r.feedback_id)
        .Bind(2, r.experiment_id)
        .Bind(3, r.response_id)
        .Bind(4, r.arm)
        .BindDouble(5, r.score)
        .BindDouble(6, r.normalized)
        .Bind(7, int64_t{r.thumbs})
        .Bind(8, r.comment)
        .Bind(9, r.reviewer)
        .Bind(10, r.create_us);
    return st.Run();
  }));
  return r;
}

absl::StatusOr<std::vector<FeedbackRecord>> ExperimentStore::ListFeedback(
    const std::string& experiment_id, const std::string& response_id) {
  WaitWritten();
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare(absl::StrCat(
          "SELECT ", kFeedbackColumns,
          " FROM router_feedback f JOIN router_interactions i ON i.response_id = f.response_id "
          "WHERE f.experiment_id = ?1",
          response_id.empty() ? "" : " AND f.response_id = ?2",
          " ORDER BY f.create_us, f.feedback_id")));
  st.Bind(1, experiment_id).Bind(2, response_id);
  std::vector<FeedbackRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadFeedback(st));
  }
  return out;
}

absl::StatusOr<ComparisonRecord> ExperimentStore::PutComparison(ComparisonRecord r) {
  WaitWritten();
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_RETURN_IF_ERROR(InTransaction(*db_, [&]() -> absl::Status {
    if (!r.reviewer.empty()) {
      SY_ASSIGN_OR_RETURN(SqliteStatement del,
                          db_->Prepare("DELETE FROM router_comparisons WHERE reviewer = ?3 AND "
                                       "((response_id = ?1 AND other_response_id = ?2) OR "
                                       "(response_id = ?2 AND other_response_id = ?1))"));
      del.Bind(1, r.response_id).Bind(2, r.other_response_id).Bind(3, r.reviewer);
      SY_RETURN_IF_ERROR(del.Run());
    }
    SY_ASSIGN_OR_RETURN(
        SqliteStatement st,
        db_->Prepare(absl::StrCat("INSERT INTO router_comparisons (", kComparisonColumns,
                                  ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)")));
    st.Bind(1, r.comparison_id)
        .Bind(2, r.experiment_id)
        .Bind(3, r.response_id)
        .Bind(4, r.other_response_id)
        .Bind(5, r.arm)
        .Bind(6, r.other_arm)
        .Bind(7, int64_t{r.result})
        .Bind(8, r.preferred_arm)
        .Bind(9, r.reviewer)
        .Bind(10, r.comment)
        .Bind(11, r.create_us);
    return st.Run();
  }));
  return r;
}

absl::StatusOr<std::vector<ComparisonRecord>> ExperimentStore::ListComparisons(
    const std::string& experiment_id, const std::string& response_id) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(
      SqliteStatement st,
      db_->Prepare(absl::StrCat(
          "SELECT ", kComparisonColumns, " FROM router_comparisons WHERE experiment_id = ?1",
          response_id.empty() ? "" : " AND (response_id = ?2 OR other_response_id = ?2)",
          " ORDER BY create_us, comparison_id")));
  st.Bind(1, experiment_id).Bind(2, response_id);
  std::vector<ComparisonRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back(ReadComparison(st));
  }
  return out;
}

absl::Status ExperimentStore::PutEvaluation(const EvaluationRecord& r) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("INSERT OR REPLACE INTO router_evaluations (evaluation_id, "
                                   "experiment_id, create_us, evaluation_json) VALUES (?1, ?2, "
                                   "?3, ?4)"));
  st.Bind(1, r.evaluation_id).Bind(2, r.experiment_id).Bind(3, r.create_us).Bind(4, r.json);
  return st.Run();
}

absl::StatusOr<EvaluationRecord> ExperimentStore::GetEvaluation(const std::string& evaluation_id) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("SELECT evaluation_id, experiment_id, create_us, "
                                   "evaluation_json FROM router_evaluations WHERE "
                                   "evaluation_id = ?1"));
  st.Bind(1, evaluation_id);
  SY_ASSIGN_OR_RETURN(bool found, st.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("evaluation ", evaluation_id, " not found"));
  return EvaluationRecord{st.Text(0), st.Text(1), st.Int(2), st.Text(3)};
}

absl::StatusOr<std::vector<EvaluationRecord>> ExperimentStore::ListEvaluations(
    const std::string& experiment_id) {
  std::lock_guard<std::mutex> lock(db_mu_);
  SY_ASSIGN_OR_RETURN(SqliteStatement st,
                      db_->Prepare("SELECT evaluation_id, experiment_id, create_us, "
                                   "evaluation_json FROM router_evaluations WHERE "
                                   "experiment_id = ?1 ORDER BY create_us DESC, evaluation_id"));
  st.Bind(1, experiment_id);
  std::vector<EvaluationRecord> out;
  while (true) {
    SY_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    out.push_back({st.Text(0), st.Text(1), st.Int(2), st.Text(3)});
  }
  return out;
}

}  // namespace switchyard::router
