// ExperimentStore: the router's records in SQLite (switchyard.db): the
// experiments, the interaction log (every served and shadow answer), feedback
// and pairwise comparisons.
//
// Experiments and interactions carry their full description as an opaque
// JSON document written by the service layer; the columns beside it are what
// queries and the report need. Interactions are written by a background
// thread in batches (one transaction each), so a chat request never waits
// for the disk; every read waits for the queued writes first, so feedback
// recorded right after an answer finds it. A crash loses at most the
// interactions of the batch in flight, never a committed one.
//
// Thread-safe.
#ifndef SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_STORE_H_
#define SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_STORE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard {
class SqliteDb;
}

namespace switchyard::router {

enum class ExperimentState { kActive = 1, kArchived = 2 };

struct ExperimentRecord {
  std::string experiment_id;
  std::string spec_json;  // the service's description of the experiment
  ExperimentState state = ExperimentState::kActive;
  int64_t create_us = 0;  // microseconds since the Unix epoch
  int64_t update_us = 0;
  int64_t archive_us = 0;  // 0 while active
};

struct InteractionRecord {
  std::string response_id;
  std::string experiment_id;
  std::string arm;
  std::string user_key;
  bool shadow = false;
  std::string paired_response_id;  // served <-> shadow
  bool overridden = false;
  bool excluded = false;  // left out of the report and the bandit
  int error_code = 0;     // gRPC code, 0 = OK
  int64_t create_us = 0;
  double latency_seconds = 0;  // at the router, arrival to last token
  double time_to_first_token_seconds = 0;
  double compute_seconds = 0;
  double retrieval_seconds = 0;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  bool context_missing = false;
  std::string detail_json;  // conversation, answer, sources, ... (service layer)
};

struct FeedbackRecord {
  std::string feedback_id;
  std::string experiment_id;
  std::string response_id;
  std::string arm;
  double score = 0;       // experiment scale
  double normalized = 0;  // [0, 1]
  int thumbs = 0;         // 0 none, 1 up, 2 down (proto Thumbs)
  std::string comment;
  std::string reviewer;
  int64_t create_us = 0;
  // From the rated interaction (read only).
  bool shadow = false;
  bool excluded = false;
};

struct ComparisonRecord {
  std::string comparison_id;
  std::string experiment_id;
  std::string response_id;
  std::string other_response_id;
  std::string arm;
  std::string other_arm;
  int result = 0;  // proto ComparisonResult
  std::string preferred_arm;
  std::string reviewer;
  std::string comment;
  int64_t create_us = 0;
};

struct EvaluationRecord {
  std::string evaluation_id;
  std::string experiment_id;
  int64_t create_us = 0;
  std::string json;  // the service's description of the evaluation
};

struct InteractionQuery {
  std::string experiment_id;  // required
  std::string arm;            // empty = all
  bool served_only = false;   // no shadow answers
  bool shadow_pairs_only = false;
  bool unreviewed_only = false;  // with shadow_pairs_only: pairs without a comparison
  bool with_feedback_only = false;
  int64_t start_us = 0;  // 0 = unbounded
  int64_t end_us = 0;    // exclusive; 0 = unbounded
  bool with_detail = true;
  int64_t offset = 0;
  int64_t limit = -1;  // -1 = all
};

class ExperimentStore {
 public:
  // Opens (creating the tables as needed) the database at `path` and starts
  // the log writer.
  static absl::StatusOr<std::unique_ptr<ExperimentStore>> Open(const std::string& path);
  // Writes what is queued, then stops the writer.
  ~ExperimentStore();

  // ALREADY_EXISTS when the id is taken.
  absl::Status CreateExperiment(const ExperimentRecord& record);
  // NOT_FOUND when absent.
  absl::Status UpdateExperiment(const ExperimentRecord& record);
  absl::StatusOr<ExperimentRecord> GetExperiment(const std::string& experiment_id);
  // Newest first.
  absl::StatusOr<std::vector<ExperimentRecord>> ListExperiments();

  // Queues an interaction for the writer.
  void AppendInteraction(InteractionRecord record);
  // Waits until everything queued before the call is written. Returns the
  // first write error since the previous Flush (those records are lost).
  absl::Status Flush();

  // NOT_FOUND naming the id.
  absl::StatusOr<InteractionRecord> GetInteraction(const std::string& response_id);
  // Newest first.
  absl::StatusOr<std::vector<InteractionRecord>> ListInteractions(const InteractionQuery& query);

  // A reviewer's newer rating of a response replaces their earlier one
  // (anonymous ratings never replace). Returns the stored record.
  absl::StatusOr<FeedbackRecord> PutFeedback(FeedbackRecord record);
  // Oldest first; for the experiment, or (response_id set) one response.
  absl::StatusOr<std::vector<FeedbackRecord>> ListFeedback(const std::string& experiment_id,
                                                           const std::string& response_id = "");
  // A reviewer's newer review of the same pair (either order) replaces the
  // earlier one.
  absl::StatusOr<ComparisonRecord> PutComparison(ComparisonRecord record);
  // Oldest first; for the experiment, or (response_id set) those involving it.
  absl::StatusOr<std::vector<ComparisonRecord>> ListComparisons(
      const std::string& experiment_id, const std::string& response_id = "");

  // Offline evaluations. Put replaces one with the same id.
  absl::Status PutEvaluation(const EvaluationRecord& record);
  // NOT_FOUND naming the id.
  absl::StatusOr<EvaluationRecord> GetEvaluation(const std::string& evaluation_id);
  // Newest first.
  absl::StatusOr<std::vector<EvaluationRecord>> ListEvaluations(const std::string& experiment_id);

  // Interactions written and failed so far (for metrics and tests).
  int64_t written() const;
  int64_t write_failures() const;

 private:
  explicit ExperimentStore(std::unique_ptr<SqliteDb> db);
  void WriterLoop();
  // Waits until everything queued before the call is written or failed.
  void WaitWritten();
  absl::Status WriteBatch(const std::vector<InteractionRecord>& batch);

  std::mutex db_mu_;  // the connection
  std::unique_ptr<SqliteDb> db_;

  mutable std::mutex mu_;  // the queue
  std::condition_variable wake_, done_;
  std::deque<InteractionRecord> queue_;
  int64_t queued_ = 0, written_ = 0, failed_ = 0;
  absl::Status write_error_;
  bool stop_ = false;
  std::thread writer_;
};

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_EXPERIMENT_STORE_H_
