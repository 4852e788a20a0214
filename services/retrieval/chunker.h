// Chunking: a document split into chunks of at most `chunk_tokens` tokens,
// consecutive chunks sharing about `overlap_tokens`, each ending at a
// paragraph boundary (a blank line) when one lies in its last quarter.
//
// The text is cut only between whitespace-separated pieces, so a chunk is an
// exact byte range of the document. A piece's cost in tokens comes from the
// caller (the embedder's tokenizer); the built-in embedder counts words. A
// piece longer than a whole chunk becomes a chunk of its own.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_CHUNKER_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_CHUNKER_H_

#include <cstddef>
#include <functional>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchyard::retrieval {

struct ChunkerOptions {
  int chunk_tokens = 256;
  int overlap_tokens = 32;  // < chunk_tokens
  bool ignore_paragraphs = false;
};

struct Chunk {
  size_t begin = 0, end = 0;  // bytes [begin, end) of the document
  int position = 0;           // 0-based index in the document
  int tokens = 0;
};

// Tokens of one whitespace-free piece of text.
using TokenCost = std::function<int(absl::string_view piece)>;

// Words per piece (the built-in embedder's tokens).
int WordCost(absl::string_view piece);

// `cost` null means WordCost. An empty or blank text has no chunks.
std::vector<Chunk> ChunkText(absl::string_view text, const ChunkerOptions& options,
                             const TokenCost& cost = nullptr);

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_CHUNKER_H_
