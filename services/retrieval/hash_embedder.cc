#include "services/retrieval/hash_embedder.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "services/retrieval/chunker.h"
#include "services/retrieval/words.h"

namespace switchyard::retrieval {
namespace {

constexpr float kWordWeight = 1.0f;
constexpr float kPairWeight = 0.5f;
constexpr float kGramWeight = 0.25f;

// English function words: frequent in every text, they carry little of its
// meaning and, unweighted, would pull every vector toward every other (BM25
// discounts them through idf; a stateless embedder cannot, so it skips them).
bool IsStopWord(absl::string_view w) {
  static const auto* words = new absl::flat_hash_set<std::string>{
      "a",     "about", "after", "all",   "also", "am",   "an",    "and",   "any",  "are",
      "as",    "at",    "be",    "been",  "but",  "by",   "can",   "could", "did",  "do",
      "does",  "for",   "from",  "had",   "has",  "have", "he",    "her",   "his",  "how",
      "i",     "if",    "in",    "into",  "is",   "it",   "its",   "just",  "me",   "my",
      "no",    "not",   "of",    "on",    "or",   "our",  "out",   "she",   "so",   "some",
      "than",  "that",  "the",   "their", "them", "then", "there", "these", "they", "this",
      "those", "to",    "up",    "us",    "was",  "we",   "were",  "what",  "when", "where",
      "which", "while", "who",   "why",   "will", "with", "would", "you",   "your", "yours"};
  return words->count(std::string(w)) > 0;
}

}  // namespace

absl::StatusOr<HashEmbedder> HashEmbedder::Create(int dimension) {
  if (dimension < 8 || dimension > 65536) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dimension: must be in [8, 65536] for the built-in embedder, got ", dimension));
  }
  return HashEmbedder(dimension);
}

void HashEmbedder::EmbedOne(const std::string& text, float* out) const {
  std::fill(out, out + dimension_, 0.0f);
  auto add = [&](absl::string_view kind, absl::string_view feature, float weight) {
    // The kind keeps a word and an equal n-gram apart.
    const uint64_t h = StableHash(absl::StrCat(kind, feature));
    out[h % static_cast<uint64_t>(dimension_)] += (h >> 63) ? -weight : weight;
  };
  std::vector<Word> words = SplitWords(text);
  const std::vector<Word> all = words;
  words.erase(
      std::remove_if(words.begin(), words.end(), [](const Word& w) { return IsStopWord(w.norm); }),
      words.end());
  if (words.empty()) words = all;  // a text of function words only keeps them
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i].norm;
    add("w:", w, kWordWeight);
    if (i + 1 < words.size()) add("p:", absl::StrCat(w, " ", words[i + 1].norm), kPairWeight);
    const std::string marked = absl::StrCat("<", w, ">");
    for (size_t n = 3; n <= 5; ++n) {
      for (size_t s = 0; s + n <= marked.size(); ++s) add("g:", marked.substr(s, n), kGramWeight);
    }
  }
  double norm = 0;
  for (int d = 0; d < dimension_; ++d) norm += static_cast<double>(out[d]) * out[d];
  if (norm == 0) return;
  const float scale = static_cast<float>(1.0 / std::sqrt(norm));
  for (int d = 0; d < dimension_; ++d) out[d] *= scale;
}

absl::StatusOr<std::vector<float>> HashEmbedder::Embed(
    const std::vector<std::string>& texts) const {
  std::vector<float> out(texts.size() * static_cast<size_t>(dimension_));
  for (size_t i = 0; i < texts.size(); ++i) EmbedOne(texts[i], out.data() + i * dimension_);
  return out;
}

int HashEmbedder::CountTokens(absl::string_view piece) const { return WordCost(piece); }

}  // namespace switchyard::retrieval
