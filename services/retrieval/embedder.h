// Embedder: maps texts to vectors for a collection. The collection also asks
// it how many tokens a piece of text costs (to size chunks) and how long an
// input it reads.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_EMBEDDER_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_EMBEDDER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::retrieval {

// Implementations are thread-safe.
class Embedder {
 public:
  virtual ~Embedder() = default;
  virtual int dimension() const = 0;
  // (texts.size() x dimension()) row-major vectors, each of L2 norm 1 (or 0
  // for a text with nothing to embed).
  virtual absl::StatusOr<std::vector<float>> Embed(const std::vector<std::string>& texts) const = 0;
  // Tokens of one whitespace-free piece of text, without special tokens.
  virtual int CountTokens(absl::string_view piece) const = 0;
  // Longest input read, in tokens, special tokens excluded; 0: no limit.
  virtual int max_tokens() const = 0;
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_EMBEDDER_H_
