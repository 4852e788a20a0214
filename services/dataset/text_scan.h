// The validator's per-byte work on message text, in one pass: Unicode code
// points, whitespace-separated words, and optionally the normalized form that
// near-duplicate detection compares (ASCII lower-cased, whitespace runs
// collapsed to one space, leading/trailing whitespace dropped).
//
// Most of a validation run is spent here, so the loop runs 32 bytes at a time
// with AVX2 when the CPU has it (chosen at run time), else 16 with SSE2, else
// one byte at a time; all paths give identical results. Thread-safe.
#ifndef SWITCHYARD_SERVICES_DATASET_TEXT_SCAN_H_
#define SWITCHYARD_SERVICES_DATASET_TEXT_SCAN_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace switchyard::dataset {

struct TextScan {
  int64_t characters = 0;  // Unicode code points (UTF-8 lead bytes)
  int64_t words = 0;       // maximal runs of non-whitespace bytes
};

// Counts only.
TextScan ScanText(absl::string_view text);

// Bytes past text.size() that ScanAndNormalize may scribble on in `out`.
inline constexpr size_t kNormalizeSlack = 32;

// Counts, and writes the normalized text to `out`, which must have room for
// text.size() + kNormalizeSlack bytes; sets *written to its length.
TextScan ScanAndNormalize(absl::string_view text, char* out, size_t* written);

// Appends the normalized text only.
void AppendNormalized(absl::string_view text, std::string* out);

// Adds ScanText's counts to *characters and *words.
void CountText(absl::string_view text, int64_t* characters, int64_t* words);

// Which vector path this CPU uses: "avx2", "sse2" or "scalar".
const char* TextScanPath();

// Tests: false forces the SSE2 path on an AVX2 machine; true restores AVX2
// where the CPU has it. Not thread-safe.
void UseAvx2ForTesting(bool enable);

}  // namespace switchyard::dataset

#endif  // SWITCHYARD_SERVICES_DATASET_TEXT_SCAN_H_
