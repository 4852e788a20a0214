#include "services/retrieval/bm25_index.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "services/retrieval/words.h"

namespace switchyard::retrieval {

void Bm25Index::Add(int64_t id, absl::string_view text) {
  Remove(id);
  std::unordered_map<std::string, int> tf;
  const std::vector<Word> words = SplitWords(text);
  for (const Word& w : words) ++tf[w.norm];
  std::vector<std::string>& terms = terms_[id];
  for (auto& [term, count] : tf) {
    postings_[term][id] = count;
    terms.push_back(term);
  }
  lengths_[id] = static_cast<int>(words.size());
  total_length_ += static_cast<int64_t>(words.size());
}

void Bm25Index::Remove(int64_t id) {
  auto it = terms_.find(id);
  if (it == terms_.end()) return;
  for (const std::string& term : it->second) {
    auto p = postings_.find(term);
    p->second.erase(id);
    if (p->second.empty()) postings_.erase(p);
  }
  terms_.erase(it);
  total_length_ -= lengths_[id];
  lengths_.erase(id);
}

std::vector<Bm25Index::Hit> Bm25Index::Search(absl::string_view query, int k,
                                              const std::function<bool(int64_t)>& accept) const {
  std::vector<Hit> hits;
  if (lengths_.empty() || k <= 0) return hits;
  const double n = static_cast<double>(lengths_.size());
  const double avg = std::max(1.0, static_cast<double>(total_length_) / n);
  std::set<std::string> terms;
  for (const Word& w : SplitWords(query)) terms.insert(w.norm);
  std::unordered_map<int64_t, double> scores;
  for (const std::string& term : terms) {
    auto p = postings_.find(term);
    if (p == postings_.end()) continue;
    const double df = static_cast<double>(p->second.size());
    const double idf = std::log(1 + (n - df + 0.5) / (df + 0.5));
    for (const auto& [id, tf] : p->second) {
      if (accept && !accept(id)) continue;
      const double len = lengths_.at(id);
      const double norm = options_.k1 * (1 - options_.b + options_.b * len / avg);
      scores[id] += idf * tf * (options_.k1 + 1) / (tf + norm);
    }
  }
  hits.reserve(scores.size());
  for (const auto& [id, score] : scores) hits.push_back({id, score});
  auto better = [](const Hit& a, const Hit& b) {
    return a.score != b.score ? a.score > b.score : a.id < b.id;
  };
  if (static_cast<int>(hits.size()) > k) {
    std::partial_sort(hits.begin(), hits.begin() + k, hits.end(), better);
    hits.resize(k);
  } else {
    std::sort(hits.begin(), hits.end(), better);
  }
  return hits;
}

}  // namespace switchyard::retrieval
