#include "services/retrieval/search_batcher.h"

#include <omp.h>

#include <algorithm>

namespace switchyard::retrieval {
namespace {

// Queries of one Search call at most (SearchQuery's own limit).
constexpr int kMaxQueriesPerCall = 256;

size_t QueryCount(const SearchQuery& q) { return q.texts.size() + q.vectors.size(); }

bool SameFilter(const std::vector<FilterCondition>& a, const std::vector<FilterCondition>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].key != b[i].key || a[i].values != b[i].values) return false;
  }
  return true;
}

}  // namespace

bool SameSearchParameters(const SearchQuery& a, const SearchQuery& b) {
  return a.k == b.k && a.mode == b.mode && a.rrf_k == b.rrf_k && a.dense_weight == b.dense_weight &&
         a.lexical_weight == b.lexical_weight && a.candidates == b.candidates &&
         a.nprobe == b.nprobe && a.ef_search == b.ef_search && a.min_score == b.min_score &&
         a.omit_text == b.omit_text && SameFilter(a.filter, b.filter);
}

SearchBatcher::SearchBatcher(int threads, int max_queries, std::function<void(size_t)> observe)
    : max_queries_(std::clamp(max_queries, 1, kMaxQueriesPerCall)), observe_(std::move(observe)) {
  if (threads <= 0) threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Run(); });
}

SearchBatcher::~SearchBatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (auto& w : workers_) w.join();
}

void SearchBatcher::Submit(std::shared_ptr<const Collection> collection, SearchQuery query,
                           Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({std::move(collection), std::move(query), std::move(done)});
  }
  ready_.notify_one();
}

int64_t SearchBatcher::batched_searches() const {
  std::lock_guard<std::mutex> lock(mu_);
  return batched_;
}

void SearchBatcher::Run() {
  omp_set_num_threads(1);
  while (true) {
    std::vector<Item> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything answered
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
      size_t queries = QueryCount(batch[0].query);
      for (auto it = queue_.begin(); it != queue_.end();) {
        if (it->collection == batch[0].collection &&
            SameSearchParameters(it->query, batch[0].query) &&
            queries + QueryCount(it->query) <= static_cast<size_t>(max_queries_)) {
          queries += QueryCount(it->query);
          batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      if (batch.size() > 1) batched_ += static_cast<int64_t>(batch.size());
    }
    if (observe_) observe_(batch.size());
    Answer(batch);
  }
}

void SearchBatcher::Answer(std::vector<Item>& items) {
  if (items.size() == 1) {
    items[0].done(items[0].collection->Search(items[0].query));
    return;
  }
  // One call: every item's texts, then every item's vectors.
  SearchQuery merged = items[0].query;
  merged.texts.clear();
  merged.vectors.clear();
  for (const Item& item : items) {
    merged.texts.insert(merged.texts.end(), item.query.texts.begin(), item.query.texts.end());
  }
  for (const Item& item : items) {
    merged.vectors.insert(merged.vectors.end(), item.query.vectors.begin(),
                          item.query.vectors.end());
  }
  absl::StatusOr<SearchOutcome> outcome = items[0].collection->Search(merged);
  if (!outcome.ok()) {
    // One bad query (a wrong vector size, ...) must not fail the others.
    for (Item& item : items) item.done(item.collection->Search(item.query));
    return;
  }
  const size_t total_texts = merged.texts.size();
  size_t text_at = 0, vector_at = 0;
  const double share = 1.0 / static_cast<double>(items.size());
  for (Item& item : items) {
    SearchOutcome mine;
    for (size_t i = 0; i < item.query.texts.size(); ++i) {
      mine.results.push_back(std::move(outcome->results[text_at++]));
    }
    for (size_t i = 0; i < item.query.vectors.size(); ++i) {
      mine.results.push_back(std::move(outcome->results[total_texts + vector_at++]));
    }
    // The batch's time, shared out.
    mine.embed_seconds = outcome->embed_seconds * share;
    mine.search_seconds = outcome->search_seconds * share;
    item.done(std::move(mine));
  }
}

}  // namespace switchyard::retrieval
