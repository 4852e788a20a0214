// Embedders map texts to L2-normalised vectors; HashEmbedder is the built-in
// one that needs no weights, so a collection works with nothing downloaded.
//
// HashEmbedder features (feature hashing, Weinberger et al. 2009): every word
// (weight 1), every pair of adjacent words (0.5) and every character 3-, 4-
// and 5-gram of "<word>" (0.25 each), hashed with StableHash into `dimension`
// buckets with a sign from the hash, summed, then L2-normalised. Words share
// buckets with their misspellings and inflections through the n-grams, so
// "refund" lands near "refunds". An empty text (no word) gives a zero vector.
//
// Thread-safe.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_HASH_EMBEDDER_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_HASH_EMBEDDER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "services/retrieval/embedder.h"

namespace switchyard::retrieval {

class HashEmbedder : public Embedder {
 public:
  // INVALID_ARGUMENT unless 8 <= dimension <= 65536.
  static absl::StatusOr<HashEmbedder> Create(int dimension = 384);

  int dimension() const override { return dimension_; }
  absl::StatusOr<std::vector<float>> Embed(const std::vector<std::string>& texts) const override;
  // Words (SplitWords) of the piece.
  int CountTokens(absl::string_view piece) const override;
  int max_tokens() const override { return 0; }
  // One text into `out` (dimension() floats).
  void EmbedOne(const std::string& text, float* out) const;

 private:
  explicit HashEmbedder(int dimension) : dimension_(dimension) {}
  int dimension_;
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_HASH_EMBEDDER_H_
