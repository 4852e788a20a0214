// Words as the retrieval core sees them (the built-in embedder, the chunker
// and BM25): runs of ASCII letters and digits or non-ASCII UTF-8 bytes, with
// ASCII letters lower-cased, and their byte offsets in the text.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_WORDS_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_WORDS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace switchyard::retrieval {

struct Word {
  size_t begin = 0, end = 0;  // bytes [begin, end) of the text
  std::string norm;           // lower-cased
};

std::vector<Word> SplitWords(absl::string_view text);

// A 64-bit hash that is the same in every process and release (features and
// buckets are persisted with collections): FNV-1a, then a finalizer.
uint64_t StableHash(absl::string_view s);

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_WORDS_H_
