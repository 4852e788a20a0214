// SearchBatcher: runs searches on a fixed pool of workers, each limited to one
// OpenMP thread (FAISS and BLAS parallelise inside a call; concurrent calls
// with every core each would oversubscribe them). When searches queue up, a
// worker takes every queued search of the same collection with the same
// parameters (up to max_queries queries) and answers them with one Search
// call: one embedding batch and one FAISS batch, which FAISS answers much
// faster per query than one at a time (BLAS for flat indexes, shared
// quantizer work for IVF). Nothing waits to form a batch: an idle pool
// answers a search at once.
//
// Thread-safe.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_SEARCH_BATCHER_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_SEARCH_BATCHER_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "services/retrieval/collection.h"

namespace switchyard::retrieval {

class SearchBatcher {
 public:
  using Done = std::function<void(absl::StatusOr<SearchOutcome>)>;

  // threads 0: every core. `observe`, when set, is told the number of
  // searches answered by each call.
  explicit SearchBatcher(int threads = 0, int max_queries = 64,
                         std::function<void(size_t)> observe = nullptr);
  // Answers what is queued, then stops the workers.
  ~SearchBatcher();

  // Calls done(outcome) on a worker when answered.
  void Submit(std::shared_ptr<const Collection> collection, SearchQuery query, Done done);

  // Searches answered in a batch with others so far (for tests and metrics).
  int64_t batched_searches() const;

 private:
  struct Item {
    std::shared_ptr<const Collection> collection;
    SearchQuery query;
    Done done;
  };
  void Run();
  // Answers `items` (compatible queries of one collection) with one call.
  static void Answer(std::vector<Item>& items);

  const int max_queries_;
  const std::function<void(size_t)> observe_;
  mutable std::mutex mu_;
  std::condition_variable ready_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  int64_t batched_ = 0;
  std::vector<std::thread> workers_;
};

// Whether two searches can share one Search call (same parameters, and no
// per-query score threshold that would differ).
bool SameSearchParameters(const SearchQuery& a, const SearchQuery& b);

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_SEARCH_BATCHER_H_
