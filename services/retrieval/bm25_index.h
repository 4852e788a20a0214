// Bm25Index: lexical search over chunks with Okapi BM25 (k1 1.2, b 0.75, and
// Lucene's idf, log(1 + (N - df + 0.5) / (df + 0.5)), which is never
// negative). Terms are SplitWords' lower-cased words.
//
// Not thread-safe: a collection serializes writers and readers.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_BM25_INDEX_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_BM25_INDEX_H_

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchyard::retrieval {

struct Bm25Options {
  double k1 = 1.2;
  double b = 0.75;
};

class Bm25Index {
 public:
  struct Hit {
    int64_t id = 0;
    double score = 0;
  };

  explicit Bm25Index(Bm25Options options = {}) : options_(options) {}

  // Indexes `text` under `id`, replacing what `id` had.
  void Add(int64_t id, absl::string_view text);
  // No-op for an unknown id.
  void Remove(int64_t id);
  // The `k` best chunks for `query` among those `accept` allows (null: all),
  // best first; ties by id. Chunks sharing no term with the query are left out.
  std::vector<Hit> Search(absl::string_view query, int k,
                          const std::function<bool(int64_t)>& accept = nullptr) const;
  size_t size() const { return lengths_.size(); }

 private:
  Bm25Options options_;
  std::unordered_map<std::string, std::unordered_map<int64_t, int>> postings_;  // term -> id -> tf
  std::unordered_map<int64_t, std::vector<std::string>> terms_;  // id -> its distinct terms
  std::unordered_map<int64_t, int> lengths_;                     // id -> words
  int64_t total_length_ = 0;
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_BM25_INDEX_H_
