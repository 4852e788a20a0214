#include "shared/text/unicode.h"

#include <unicode/errorcode.h>
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include "absl/strings/str_cat.h"

namespace switchyard::text {

int Utf8SequenceLength(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xE) return 3;
  if ((c >> 3) == 0x1E) return 4;
  return 1;
}

int64_t FirstInvalidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    int len = 1;
    DecodeUtf8(text.substr(i), &len);
    if (len == 1) return static_cast<int64_t>(i);
    i += static_cast<size_t>(len);
  }
  return -1;
}

std::vector<absl::string_view> Utf8Characters(absl::string_view text) {
  std::vector<absl::string_view> out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t n = static_cast<size_t>(Utf8SequenceLength(static_cast<unsigned char>(text[i])));
    if (i + n > text.size()) n = text.size() - i;
    out.push_back(text.substr(i, n));
    i += n;
  }
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t DecodeUtf8(absl::string_view text, int* length) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  *length = 1;
  if (n == 0) return 0;
  const unsigned c = s[0];
  if (c < 0x80) return c;
  int len = 0;
  uint32_t cp = 0, min = 0;
  if ((c >> 5) == 0x6) {
    len = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c >> 4) == 0xE) {
    len = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c >> 3) == 0x1E) {
    len = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return c;
  }
  if (static_cast<size_t>(len) > n) return c;
  for (int k = 1; k < len; ++k) {
    if ((s[k] & 0xC0) != 0x80) return c;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return c;
  *length = len;
  return cp;
}

std::string Utf8Lossy(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    int len = 1;
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    DecodeUtf8(bytes.substr(i), &len);
    if (len > 1) {
      out.append(bytes.data() + i, static_cast<size_t>(len));
      i += static_cast<size_t>(len);
      continue;
    }
    // Invalid: one U+FFFD per maximal invalid prefix, as Rust does: skip the
    // lead byte and the continuation bytes that could still have belonged to it.
    out.append("\xEF\xBF\xBD");
    const int expected = Utf8SequenceLength(c);
    size_t j = i + 1;
    if (expected > 1) {
      // Advance over continuation bytes that form a valid prefix.
      int k = 1;
      while (k < expected && j < bytes.size() &&
             (static_cast<unsigned char>(bytes[j]) & 0xC0) == 0x80) {
        const unsigned char b = static_cast<unsigned char>(bytes[j]);
        // Second-byte ranges that make a prefix invalid (overlong/surrogate/too large).
        if (k == 1 && ((c == 0xE0 && b < 0xA0) || (c == 0xED && b > 0x9F) ||
                       (c == 0xF0 && b < 0x90) || (c == 0xF4 && b > 0x8F))) {
          break;
        }
        ++j;
        ++k;
      }
      if (c == 0xC0 || c == 0xC1 || c > 0xF4) j = i + 1;
    }
    i = j;
  }
  return out;
}

absl::StatusOr<std::string> Normalize(absl::string_view text, NormalForm form) {
  UErrorCode error = U_ZERO_ERROR;
  const icu::Normalizer2* normalizer = nullptr;
  switch (form) {
    case NormalForm::kNfc:
      normalizer = icu::Normalizer2::getNFCInstance(error);
      break;
    case NormalForm::kNfd:
      normalizer = icu::Normalizer2::getNFDInstance(error);
      break;
    case NormalForm::kNfkc:
      normalizer = icu::Normalizer2::getNFKCInstance(error);
      break;
    case NormalForm::kNfkd:
      normalizer = icu::Normalizer2::getNFKDInstance(error);
      break;
  }
  if (U_FAILURE(error) || normalizer == nullptr) {
    return absl::InternalError(absl::StrCat("ICU normalizer unavailable: ", u_errorName(error)));
  }
  icu::UnicodeString source = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  if (normalizer->isNormalized(source, error) && U_SUCCESS(error)) return std::string(text);
  error = U_ZERO_ERROR;
  icu::UnicodeString result = normalizer->normalize(source, error);
  if (U_FAILURE(error)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot normalize text: ", u_errorName(error)));
  }
  std::string out;
  result.toUTF8String(out);
  return out;
}

const ByteLevelAlphabet& ByteLevelAlphabet::Get() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  decode_.fill(-1);
  // Printable bytes keep their code point: '!'..'~', '¡'..'¬', '®'..'ÿ'.
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = printable[b] ? static_cast<uint32_t>(b) : next++;
    AppendUtf8(cp, &encode_[b]);
    decode_[cp] = static_cast<int16_t>(b);
  }
}

void ByteLevelAlphabet::EncodeTo(absl::string_view bytes, std::string* out) const {
  for (unsigned char b : bytes) out->append(encode_[b]);
}

int ByteLevelAlphabet::Decode(uint32_t cp) const { return cp < 512 ? decode_[cp] : -1; }

}  // namespace switchyard::text
