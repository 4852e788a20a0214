// UTF-8 and Unicode helpers for tokenizers: code point iteration, Unicode
// normalization (NFC, NFKC, NFD, NFKD through ICU) and GPT-2's byte-to-unicode
// alphabet used by byte-level BPE. Thread-safe.
#ifndef SWITCHYARD_SHARED_TEXT_UNICODE_H_
#define SWITCHYARD_SHARED_TEXT_UNICODE_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {

// Length in bytes of the UTF-8 sequence starting with lead byte `c`; 1 for
// bytes that cannot start a sequence (they are treated as one unit).
int Utf8SequenceLength(unsigned char c);

// Offset of the first byte that is not part of a valid UTF-8 sequence, or -1.
int64_t FirstInvalidUtf8(absl::string_view text);

// Splits UTF-8 text into its characters (each a 1-4 byte substring).
std::vector<absl::string_view> Utf8Characters(absl::string_view text);

// Appends the UTF-8 encoding of code point `cp` to `out`.
void AppendUtf8(uint32_t cp, std::string* out);

// Replaces invalid UTF-8 sequences with U+FFFD, as Rust's from_utf8_lossy.
std::string Utf8Lossy(absl::string_view bytes);

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// Normalizes UTF-8 text. INVALID_ARGUMENT for text ICU cannot convert.
absl::StatusOr<std::string> Normalize(absl::string_view text, NormalForm form);

// GPT-2's reversible byte <-> printable-character mapping: bytes that are
// printable Latin-1 map to themselves, the others to U+0100 and up.
class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& Get();
  // UTF-8 of the character standing for `byte`.
  const std::string& Encode(unsigned char byte) const { return encode_[byte]; }
  // Appends the characters for every byte of `bytes`.
  void EncodeTo(absl::string_view bytes, std::string* out) const;
  // The byte a character stands for, or -1 when it is not in the alphabet.
  int Decode(uint32_t cp) const;

 private:
  ByteLevelAlphabet();
  std::array<std::string, 256> encode_;
  std::array<int16_t, 512> decode_;  // code points < 512
};

// Decodes one UTF-8 character at the start of `text`; returns its code point
// and sets *length (1 for an invalid byte, whose value is returned).
uint32_t DecodeUtf8(absl::string_view text, int* length);

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_UNICODE_H_
