#include "shared/text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"
#include "shared/text/bpe_model.h"
#include "shared/text/model.h"
#include "shared/text/unicode.h"
#include "shared/text/wordpiece_model.h"

namespace switchyard::text {
namespace {

using Json = nlohmann::json;

// GPT-2's pre-tokenization regex, used by ByteLevel with use_regex.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string TypeOf(const Json& j) {
  auto it = j.find("type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool BoolField(const Json& j, const char* key, bool fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// ---------------------------------------------------------------- normalizers

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual absl::StatusOr<std::string> Apply(std::string text) const = 0;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  absl::StatusOr<std::string> Apply(std::string text) const override {
    return Normalize(text, form_);
  }

 private:
  NormalForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  absl::StatusOr<std::string> Apply(std::string text) const override {
    icu::UnicodeString s = icu::UnicodeString::fromUTF8(
        icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
    std::string out;
    s.toLower().toUTF8String(out);
    return out;
  }
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::StatusOr<std::string> Apply(std::string text) const override {
    return text.empty() ? text : prefix_ + text;
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string from, std::string to)
      : from_(std::move(from)), to_(std::move(to)) {}
  absl::StatusOr<std::string> Apply(std::string text) const override {
    return absl::StrReplaceAll(text, {{from_, to_}});
  }

 private:
  std::string from_, to_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  absl::StatusOr<std::string> Apply(std::string text) const override {
    for (const auto& step : steps_) {
      SY_ASSIGN_OR_RETURN(text, step->Apply(std::move(text)));
    }
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// Character classes as BERT and tokenizers define them.
bool IsBertWhitespace(uint32_t c) {
  return c == '\t' || c == '\n' || c == '\r' || u_isUWhiteSpace(static_cast<UChar32>(c));
}
bool IsBertControl(uint32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONTROL_CHAR:
    case U_FORMAT_CHAR:
    case U_UNASSIGNED:
    case U_PRIVATE_USE_CHAR:
    case U_SURROGATE:
      return true;
    default:
      return false;
  }
}
bool IsChineseChar(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}
bool IsBertPunctuation(uint32_t c) {
  if (c < 0x80)
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
           (c >= 123 && c <= 126);
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_CONNECTOR_PUNCTUATION:
    case U_DASH_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_START_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

// Calls fn(code point) for each character of UTF-8 text.
template <typename Fn>
void ForEachCodePoint(absl::string_view text, Fn fn) {
  size_t i = 0;
  while (i < text.size()) {
    int len = 1;
    const uint32_t cp = DecodeUtf8(text.substr(i), &len);
    fn(cp, text.substr(i, static_cast<size_t>(len)));
    i += static_cast<size_t>(len);
  }
}

// BERT's normalizer: drop control characters, whitespace to ' ', spaces
// around CJK ideographs, strip accents (NFD, drop Mn), lowercase.
class BertNormalizer : public Normalizer {
 public:
  BertNormalizer(bool clean_text, bool chinese, bool strip_accents, bool lowercase)
      : clean_text_(clean_text),
        chinese_(chinese),
        strip_accents_(strip_accents),
        lowercase_(lowercase) {}
  absl::StatusOr<std::string> Apply(std::string text) const override {
    std::string out;
    out.reserve(text.size());
    ForEachCodePoint(text, [&](uint32_t cp, absl::string_view ch) {
      if (clean_text_) {
        if (cp == 0 || cp == 0xFFFD || IsBertControl(cp)) return;
        if (IsBertWhitespace(cp)) {
          out.push_back(' ');
          return;
        }
      }
      if (chinese_ && IsChineseChar(cp)) {
        out.push_back(' ');
        out.append(ch.data(), ch.size());
        out.push_back(' ');
        return;
      }
      out.append(ch.data(), ch.size());
    });
    if (strip_accents_) {
      SY_ASSIGN_OR_RETURN(std::string nfd, Normalize(out, NormalForm::kNfd));
      out.clear();
      ForEachCodePoint(nfd, [&](uint32_t cp, absl::string_view ch) {
        if (u_charType(static_cast<UChar32>(cp)) != U_NON_SPACING_MARK)
          out.append(ch.data(), ch.size());
      });
    }
    if (lowercase_) return LowercaseNormalizer().Apply(std::move(out));
    return out;
  }

 private:
  bool clean_text_, chinese_, strip_accents_, lowercase_;
};

// Drops combining marks (Unicode Mn), as tokenizers' StripAccents; models put
// an NFD normalizer before it so accents are separate marks.
class StripAccentsNormalizer : public Normalizer {
 public:
  absl::StatusOr<std::string> Apply(std::string text) const override {
    std::string out;
    out.reserve(text.size());
    ForEachCodePoint(text, [&](uint32_t cp, absl::string_view ch) {
      if (u_charType(static_cast<UChar32>(cp)) != U_NON_SPACING_MARK)
        out.append(ch.data(), ch.size());
    });
    return out;
  }
};

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& j,
                                                            const std::string& field) {
  const std::string type = TypeOf(j);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  if (type == "BertNormalizer") {
    const bool lowercase = BoolField(j, "lowercase", true);
    auto strip = j.find("strip_accents");
    const bool strip_accents =
        strip != j.end() && strip->is_boolean() ? strip->get<bool>() : lowercase;
    return std::make_unique<BertNormalizer>(BoolField(j, "clean_text", true),
                                            BoolField(j, "handle_chinese_chars", true),
                                            strip_accents, lowercase);
  }
  if (type == "Prepend") {
    auto it = j.find("prepend");
    if (it == j.end() || !it->is_string())
      return TokenizerJsonError(field + ".prepend", "missing string");
    return std::make_unique<PrependNormalizer>(it->get<std::string>());
  }
  if (type == "Replace") {
    auto pattern = j.find("pattern");
    auto content = j.find("content");
    if (pattern == j.end() || !pattern->is_object() || !pattern->contains("String") ||
        !(*pattern)["String"].is_string()) {
      return TokenizerJsonError(field + ".pattern",
                                "only {\"String\": ...} patterns are supported yet");
    }
    if (content == j.end() || !content->is_string()) {
      return TokenizerJsonError(field + ".content", "missing string");
    }
    return std::make_unique<ReplaceNormalizer>((*pattern)["String"].get<std::string>(),
                                               content->get<std::string>());
  }
  if (type == "Sequence") {
    auto list = j.find("normalizers");
    if (list == j.end() || !list->is_array()) {
      return TokenizerJsonError(field + ".normalizers", "missing array");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      SY_ASSIGN_OR_RETURN(
          auto step, ParseNormalizer((*list)[i], absl::StrCat(field, ".normalizers[", i, "]")));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return TokenizerJsonError(field + ".type",
                            absl::StrCat("normalizer \"", type, "\" is not supported yet"));
}

// ------------------------------------------------------------ pre-tokenizers

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits every piece further (or rewrites it). `at_start`: the pieces come
  // from the very start of the input (not after an added token).
  virtual absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const = 0;
};

// A compiled PCRE2 pattern (UTF, Unicode properties, JIT). Thread-safe: match
// data is made per call.
class Regex {
 public:
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern, bool literal,
                                                        const std::string& field) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // PCRE2_LITERAL allows no Unicode-property option (nor needs one).
    // \C could split characters, which the matcher (run without UTF checks on
    // text checked once) must never see.
    const uint32_t options =
        literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return TokenizerJsonError(field, absl::StrCat("regex does not compile at offset ", offset,
                                                    ": ", reinterpret_cast<const char*>(message)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return std::unique_ptr<Regex>(new Regex(code));
  }
  ~Regex() { pcre2_code_free(code_); }

  // Calls fn(start, end) for each non-overlapping match in `text`. A matching
  // error (a PCRE2 limit) is returned rather than taken for "no match".
  template <typename Fn>
  absl::Status ForEachMatch(absl::string_view text, Fn fn) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t offset = 0;
    while (offset <= text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), offset,
                           PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(rc, message, sizeof(message));
        return absl::ResourceExhaustedError(
            absl::StrCat("pre-tokenizer regex failed: ", reinterpret_cast<const char*>(message)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t start = ov[0], end = ov[1];
      if (end == start) {  // empty match: step one character
        if (start >= text.size()) break;
        offset = start +
                 static_cast<size_t>(Utf8SequenceLength(static_cast<unsigned char>(text[start])));
        continue;
      }
      fn(start, end);
      offset = end;
    }
    pcre2_match_data_free(md);
    return absl::OkStatus();
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// Splits `text` by the matches of `regex` the way tokenizers' Split does.
absl::Status SplitByRegex(const Regex& regex, absl::string_view text, SplitBehavior behavior,
                          bool invert, std::vector<std::string>* out) {
  // (start, end, is_match) spans covering the text.
  std::vector<std::tuple<size_t, size_t, bool>> spans;
  size_t last = 0;
  SY_RETURN_IF_ERROR(regex.ForEachMatch(text, [&](size_t start, size_t end) {
    if (start > last) spans.emplace_back(last, start, false);
    spans.emplace_back(start, end, true);
    last = end;
  }));
  if (last < text.size()) spans.emplace_back(last, text.size(), false);
  if (invert) {
    for (auto& span : spans) std::get<2>(span) = !std::get<2>(span);
  }
  std::string pending;  // MergedWithNext: a delimiter waiting for the next piece
  for (size_t k = 0; k < spans.size(); ++k) {
    auto [start, end, is_match] = spans[k];
    absl::string_view piece = text.substr(start, end - start);
    switch (behavior) {
      case SplitBehavior::kRemoved:
        if (!is_match) out->emplace_back(piece);
        break;
      case SplitBehavior::kIsolated:
        out->emplace_back(piece);
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (is_match && !out->empty() && k > 0) {
          out->back().append(piece.data(), piece.size());
        } else {
          out->emplace_back(piece);
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (is_match) {
          pending.append(piece.data(), piece.size());
        } else {
          out->push_back(pending + std::string(piece));
          pending.clear();
        }
        break;
      case SplitBehavior::kContiguous:
        if (is_match && k > 0 && std::get<2>(spans[k - 1])) {
          out->back().append(piece.data(), piece.size());
        } else {
          out->emplace_back(piece);
        }
        break;
    }
  }
  if (!pending.empty()) out->push_back(pending);
  return absl::OkStatus();
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) {
      SY_RETURN_IF_ERROR(SplitByRegex(*regex_, piece, behavior_, invert_, &out));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Regex> regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const override {
    std::vector<std::string> split;
    for (std::string& piece : *pieces) {
      if (add_prefix_space_ && !absl::StartsWith(piece, " ")) piece.insert(0, " ");
      if (regex_) {
        SY_RETURN_IF_ERROR(SplitByRegex(*regex_, piece, SplitBehavior::kIsolated, false, &split));
      } else {
        split.push_back(std::move(piece));
      }
    }
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    pieces->clear();
    for (const std::string& piece : split) {
      std::string mapped;
      alphabet.EncodeTo(piece, &mapped);
      pieces->push_back(std::move(mapped));
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // null without use_regex
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const override {
    for (const auto& step : steps_) SY_RETURN_IF_ERROR(step->Apply(pieces, at_start));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// Isolates digits: each one alone, or runs of them (individual_digits false).
class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) {
      std::string run;
      bool run_is_digits = false;
      ForEachCodePoint(piece, [&](uint32_t cp, absl::string_view ch) {
        // Rust's char::is_numeric, as tokenizers uses: Nd, Nl and No.
        const int8_t type = u_charType(static_cast<UChar32>(cp));
        const bool digit =
            type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
        if (!run.empty() && (digit != run_is_digits || (digit && individual_))) {
          out.push_back(std::move(run));
          run.clear();
        }
        run_is_digits = digit;
        run.append(ch.data(), ch.size());
      });
      if (!run.empty()) out.push_back(std::move(run));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  bool individual_;
};

// Splits on whitespace (dropped) and isolates each punctuation character.
class BertPreTokenizer : public PreTokenizer {
 public:
  absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) {
      std::string word;
      ForEachCodePoint(piece, [&](uint32_t cp, absl::string_view ch) {
        if (IsBertWhitespace(cp)) {
          if (!word.empty()) out.push_back(std::move(word));
          word.clear();
        } else if (IsBertPunctuation(cp)) {
          if (!word.empty()) out.push_back(std::move(word));
          word.clear();
          out.emplace_back(ch);
        } else {
          word.append(ch.data(), ch.size());
        }
      });
      if (!word.empty()) out.push_back(std::move(word));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }
};

// SentencePiece style: spaces become "▁", a "▁" is prepended (always, or only
// at the start of the input), and with `split` each "▁" starts a new piece.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  MetaspacePreTokenizer(std::string replacement, Prepend prepend, bool split)
      : replacement_(std::move(replacement)), prepend_(prepend), split_(split) {}
  absl::Status Apply(std::vector<std::string>* pieces, bool at_start) const override {
    std::vector<std::string> out;
    for (size_t k = 0; k < pieces->size(); ++k) {
      std::string piece = absl::StrReplaceAll((*pieces)[k], {{" ", replacement_}});
      const bool prepend =
          prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && at_start && k == 0);
      if (prepend && !absl::StartsWith(piece, replacement_)) piece.insert(0, replacement_);
      if (!split_) {
        out.push_back(std::move(piece));
        continue;
      }
      // MergedWithNext on the replacement: each "▁" begins a piece.
      size_t start = 0;
      for (size_t pos = piece.find(replacement_, 1); pos != std::string::npos;
           pos = piece.find(replacement_, pos + replacement_.size())) {
        if (pos > start) out.push_back(piece.substr(start, pos - start));
        start = pos;
      }
      if (start < piece.size()) out.push_back(piece.substr(start));
    }
    *pieces = std::move(out);
    return absl::OkStatus();
  }

 private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> ParsePreTokenizer(const Json& j,
                                                                const std::string& field) {
  const std::string type = TypeOf(j);
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> regex;
    if (BoolField(j, "use_regex", true)) {
      SY_ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern, false, field));
    }
    return std::make_unique<ByteLevelPreTokenizer>(BoolField(j, "add_prefix_space", false),
                                                   std::move(regex));
  }
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "Digits") {
    return std::make_unique<DigitsPreTokenizer>(BoolField(j, "individual_digits", false));
  }
  if (type == "Metaspace") {
    const std::string scheme = j.value(
        "prepend_scheme", std::string(BoolField(j, "add_prefix_space", true) ? "always" : "never"));
    MetaspacePreTokenizer::Prepend prepend;
    if (scheme == "always")
      prepend = MetaspacePreTokenizer::Prepend::kAlways;
    else if (scheme == "first")
      prepend = MetaspacePreTokenizer::Prepend::kFirst;
    else if (scheme == "never")
      prepend = MetaspacePreTokenizer::Prepend::kNever;
    else
      return TokenizerJsonError(field + ".prepend_scheme",
                                absl::StrCat("unknown scheme \"", scheme, "\""));
    const std::string replacement = j.value("replacement", std::string("\u2581"));
    if (replacement.empty()) return TokenizerJsonError(field + ".replacement", "must not be empty");
    return std::make_unique<MetaspacePreTokenizer>(replacement, prepend,
                                                   BoolField(j, "split", true));
  }
  if (type == "Split") {
    auto pattern = j.find("pattern");
    if (pattern == j.end() || !pattern->is_object()) {
      return TokenizerJsonError(field + ".pattern",
                                "missing {\"Regex\": ...} or {\"String\": ...}");
    }
    std::unique_ptr<Regex> regex;
    if (pattern->contains("Regex") && (*pattern)["Regex"].is_string()) {
      SY_ASSIGN_OR_RETURN(regex, Regex::Compile((*pattern)["Regex"].get<std::string>(), false,
                                                field + ".pattern.Regex"));
    } else if (pattern->contains("String") && (*pattern)["String"].is_string()) {
      SY_ASSIGN_OR_RETURN(regex, Regex::Compile((*pattern)["String"].get<std::string>(), true,
                                                field + ".pattern.String"));
    } else {
      return TokenizerJsonError(field + ".pattern", "needs a string \"Regex\" or \"String\"");
    }
    const std::string behavior = j.value("behavior", "Isolated");
    SplitBehavior b;
    if (behavior == "Removed")
      b = SplitBehavior::kRemoved;
    else if (behavior == "Isolated")
      b = SplitBehavior::kIsolated;
    else if (behavior == "MergedWithPrevious")
      b = SplitBehavior::kMergedWithPrevious;
    else if (behavior == "MergedWithNext")
      b = SplitBehavior::kMergedWithNext;
    else if (behavior == "Contiguous")
      b = SplitBehavior::kContiguous;
    else
      return TokenizerJsonError(field + ".behavior",
                                absl::StrCat("unknown behavior \"", behavior, "\""));
    return std::make_unique<SplitPreTokenizer>(std::move(regex), b, BoolField(j, "invert", false));
  }
  if (type == "Sequence") {
    auto list = j.find("pretokenizers");
    if (list == j.end() || !list->is_array()) {
      return TokenizerJsonError(field + ".pretokenizers", "missing array");
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      SY_ASSIGN_OR_RETURN(
          auto step, ParsePreTokenizer((*list)[i], absl::StrCat(field, ".pretokenizers[", i, "]")));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return TokenizerJsonError(field + ".type",
                            absl::StrCat("pre-tokenizer \"", type, "\" is not supported yet"));
}

// ----------------------------------------------------------- post-processors

// The ids the post-processor puts around a single sequence.
struct Template {
  std::vector<int32_t> before;
  std::vector<int32_t> after;
};

absl::Status ParsePostProcessor(const Json& j, const std::string& field, Template* t) {
  const std::string type = TypeOf(j);
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only
  if (type == "Sequence") {
    auto list = j.find("processors");
    if (list == j.end() || !list->is_array())
      return TokenizerJsonError(field + ".processors", "missing");
    for (size_t i = 0; i < list->size(); ++i) {
      SY_RETURN_IF_ERROR(
          ParsePostProcessor((*list)[i], absl::StrCat(field, ".processors[", i, "]"), t));
    }
    return absl::OkStatus();
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    for (const char* key : {"cls", "sep"}) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_array() || it->size() != 2 || !(*it)[1].is_number_integer()) {
        return TokenizerJsonError(absl::StrCat(field, ".", key), "must be [token, id]");
      }
    }
    t->before.push_back(j["cls"][1].get<int32_t>());
    t->after.push_back(j["sep"][1].get<int32_t>());
    return absl::OkStatus();
  }
  if (type == "TemplateProcessing") {
    auto single = j.find("single");
    auto specials = j.find("special_tokens");
    if (single == j.end() || !single->is_array())
      return TokenizerJsonError(field + ".single", "missing");
    bool seen_sequence = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const Json& item = (*single)[i];
      const std::string item_field = absl::StrCat(field, ".single[", i, "]");
      if (item.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      if (!item.contains("SpecialToken") || !item["SpecialToken"].contains("id")) {
        return TokenizerJsonError(item_field,
                                  "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      if (specials == j.end() || !specials->contains(name) || !(*specials)[name].contains("ids") ||
          !(*specials)[name]["ids"].is_array()) {
        return TokenizerJsonError(field + ".special_tokens",
                                  absl::StrCat("no ids for special token \"", name, "\""));
      }
      for (const Json& id : (*specials)[name]["ids"]) {
        (seen_sequence ? t->after : t->before).push_back(id.get<int32_t>());
      }
    }
    return absl::OkStatus();
  }
  return TokenizerJsonError(field + ".type",
                            absl::StrCat("post-processor \"", type, "\" is not supported yet"));
}

// ------------------------------------------------------------------ decoders

// Decoders rewrite the list of token strings, as tokenizers' decode_chain; the
// text is their concatenation at the end.
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void Apply(std::vector<std::string>* tokens) const = 0;
};

// Maps byte-level characters back to bytes; other characters keep their UTF-8.
std::string ByteLevelDecode(absl::string_view text) {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
  std::string bytes;
  size_t i = 0;
  while (i < text.size()) {
    int len = 1;
    const uint32_t cp = DecodeUtf8(text.substr(i), &len);
    const int b = alphabet.Decode(cp);
    if (b >= 0) {
      bytes.push_back(static_cast<char>(b));
    } else {
      bytes.append(text.data() + i, static_cast<size_t>(len));
    }
    i += static_cast<size_t>(len);
  }
  return bytes;
}

class ByteLevelDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& t : *tokens) joined += t;
    *tokens = {Utf8Lossy(ByteLevelDecode(joined))};
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) t = absl::StrReplaceAll(t, {{from_, to_}});
  }

 private:
  std::string from_, to_;
};

// "<0xE3>" tokens become bytes; a run of them that is not valid UTF-8 becomes
// one U+FFFD per byte.
class ByteFallbackDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t byte_tokens = 0;
    auto flush = [&] {
      if (byte_tokens == 0) return;
      int len = 0;
      bool valid = true;
      for (size_t i = 0; i < bytes.size(); i += static_cast<size_t>(len)) {
        DecodeUtf8(absl::string_view(bytes).substr(i), &len);
        if (len == 1 && static_cast<unsigned char>(bytes[i]) >= 0x80) valid = false;
      }
      if (valid) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < byte_tokens; ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      byte_tokens = 0;
    };
    for (std::string& t : *tokens) {
      unsigned value = 0;
      if (t.size() == 6 && absl::StartsWith(t, "<0x") && t[5] == '>' &&
          absl::SimpleHexAtoi(absl::string_view(t).substr(3, 2), &value)) {
        bytes.push_back(static_cast<char>(value));
        ++byte_tokens;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    *tokens = std::move(out);
  }
};

class FuseDecoder : public Decoder {
 public:
  void Apply(std::vector<std::string>* tokens) const override {
    std::string joined;
    for (const std::string& t : *tokens) joined += t;
    *tokens = {std::move(joined)};
  }
};

// Removes up to `start` leading and `stop` trailing copies of `content` from
// each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void Apply(std::vector<std::string>* tokens) const override {
    if (content_.empty()) return;
    for (std::string& t : *tokens) {
      for (int k = 0; k < start_ && absl::StartsWith(t, content_); ++k) t.erase(0, content_.size());
      for (int k = 0; k < stop_ && absl::EndsWith(t, content_); ++k) {
        t.resize(t.size() - content_.size());
      }
    }
  }

 private:
  std::string content_;
  int start_, stop_;
};

// "▁" back to spaces; in the first token, where the pre-tokenizer prepended
// one, every "▁" is dropped instead (as tokenizers does).
class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      t = absl::StrReplaceAll(t, {{replacement_, i == 0 && strip_first_ ? "" : " "}});
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

// WordPiece: "##" continuations join the previous token, other tokens get a
// space before them; `cleanup` undoes BERT's spacing around punctuation.
class WordPieceDecoder : public Decoder {
 public:
  WordPieceDecoder(std::string prefix, bool cleanup)
      : prefix_(std::move(prefix)), cleanup_(cleanup) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string& t = (*tokens)[i];
      if (i != 0) {
        if (!prefix_.empty() && absl::StartsWith(t, prefix_)) {
          t.erase(0, prefix_.size());
        } else {
          t.insert(0, " ");
        }
      }
      if (cleanup_) {
        t = absl::StrReplaceAll(t, {{" .", "."},
                                    {" ?", "?"},
                                    {" !", "!"},
                                    {" ,", ","},
                                    {" ' ", "'"},
                                    {" n't", "n't"},
                                    {" 'm", "'m"},
                                    {" do not", " don't"},
                                    {" 's", "'s"},
                                    {" 've", "'ve"},
                                    {" 're", "'re"}});
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void Apply(std::vector<std::string>* tokens) const override {
    for (const auto& step : steps_) step->Apply(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

absl::StatusOr<std::string> StringPattern(const Json& j, const std::string& field) {
  auto pattern = j.find("pattern");
  if (pattern == j.end() || !pattern->is_object() || !pattern->contains("String") ||
      !(*pattern)["String"].is_string()) {
    return TokenizerJsonError(field + ".pattern",
                              "only {\"String\": ...} patterns are supported yet");
  }
  return (*pattern)["String"].get<std::string>();
}

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& j, const std::string& field) {
  const std::string type = TypeOf(j);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    SY_ASSIGN_OR_RETURN(std::string from, StringPattern(j, field));
    auto content = j.find("content");
    if (content == j.end() || !content->is_string()) {
      return TokenizerJsonError(field + ".content", "missing string");
    }
    return std::make_unique<ReplaceDecoder>(from, content->get<std::string>());
  }
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(j.value("content", std::string(" ")), j.value("start", 0),
                                          j.value("stop", 0));
  }
  if (type == "WordPiece") {
    return std::make_unique<WordPieceDecoder>(j.value("prefix", std::string("##")),
                                              BoolField(j, "cleanup", true));
  }
  if (type == "Metaspace") {
    const std::string scheme = j.value("prepend_scheme", std::string("always"));
    const bool strip = BoolField(j, "add_prefix_space", scheme != "never");
    return std::make_unique<MetaspaceDecoder>(j.value("replacement", std::string("\u2581")), strip);
  }
  if (type == "Sequence") {
    auto list = j.find("decoders");
    if (list == j.end() || !list->is_array())
      return TokenizerJsonError(field + ".decoders", "missing");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      SY_ASSIGN_OR_RETURN(auto step,
                          ParseDecoder((*list)[i], absl::StrCat(field, ".decoders[", i, "]")));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return TokenizerJsonError(field + ".type",
                            absl::StrCat("decoder \"", type, "\" is not supported yet"));
}

bool IsWordByte(unsigned char c) { return c >= 0x80 || absl::ascii_isalnum(c) || c == '_'; }
bool IsSpaceByte(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

}  // namespace

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<Model> model;
  Template post;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  // What each added token matches: its content, normalized when it is a
  // `normalized` token (those match the normalized text).
  std::vector<std::string> added_match;
  // Added tokens by the first byte they match, longest first, per stage
  // ([0]: raw text, [1]: normalized text): each position checks only those.
  std::array<std::vector<size_t>, 256> added_by_first_byte[2];
  absl::flat_hash_map<int32_t, size_t> added_by_id;  // id -> index in `added`
  absl::flat_hash_map<std::string, int32_t> added_by_content;

  // One span of input: an added token (id >= 0) or plain text (id < 0).
  struct Segment {
    int32_t id;
    absl::string_view text;
  };
  // Splits on the added tokens whose `normalized` flag equals `normalized`.
  std::vector<Segment> SplitOnAddedTokens(absl::string_view text, bool normalized) const;
  // Pre-tokenizes normalized text and runs the model.
  absl::Status EncodeNormalized(absl::string_view text, bool at_start,
                                std::vector<int32_t>* ids) const;
};

std::vector<Tokenizer::Impl::Segment> Tokenizer::Impl::SplitOnAddedTokens(absl::string_view text,
                                                                          bool normalized) const {
  std::vector<Segment> out;
  size_t plain_start = 0, i = 0;
  while (i < text.size()) {
    // Longest added token starting at i.
    const AddedToken* best = nullptr;
    size_t best_size = 0;
    for (size_t k : added_by_first_byte[normalized ? 1 : 0][static_cast<unsigned char>(text[i])]) {
      const AddedToken& t = added[k];
      const std::string& match = added_match[k];
      if (match.size() <= best_size) continue;
      if (text.compare(i, match.size(), match) != 0) continue;
      if (t.single_word) {
        const bool before_ok = i == 0 || !IsWordByte(static_cast<unsigned char>(text[i - 1]));
        const size_t end = i + match.size();
        const bool after_ok =
            end >= text.size() || !IsWordByte(static_cast<unsigned char>(text[end]));
        if (!before_ok || !after_ok) continue;
      }
      best = &t;
      best_size = match.size();
    }
    if (best == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, end = i + best_size;
    if (best->lstrip) {
      while (start > plain_start && IsSpaceByte(static_cast<unsigned char>(text[start - 1])))
        --start;
    }
    if (best->rstrip) {
      while (end < text.size() && IsSpaceByte(static_cast<unsigned char>(text[end]))) ++end;
    }
    if (start > plain_start) out.push_back({-1, text.substr(plain_start, start - plain_start)});
    out.push_back({best->id, text.substr(start, end - start)});
    plain_start = i = end;
  }
  if (plain_start < text.size()) out.push_back({-1, text.substr(plain_start)});
  return out;
}

absl::Status Tokenizer::Impl::EncodeNormalized(absl::string_view text, bool at_start,
                                               std::vector<int32_t>* ids) const {
  std::vector<std::string> pieces = {std::string(text)};
  if (pre_tokenizer) SY_RETURN_IF_ERROR(pre_tokenizer->Apply(&pieces, at_start));
  for (const std::string& piece : pieces) model->Tokenize(piece, ids);
  return absl::OkStatus();
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::string file = path;
  if (std::filesystem::is_directory(path)) file = path + "/tokenizer.json";
  SY_ASSIGN_OR_RETURN(std::string json, ReadFile(file));
  return FromJson(json, file);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view text,
                                                               const std::string& origin) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": not a JSON object"));
  }
  auto impl = std::make_unique<Impl>();
  auto wrap = [&](absl::Status s) {
    return s.ok() ? s : absl::Status(s.code(), absl::StrCat(origin, ": ", s.message()));
  };
  try {
    auto model = j.find("model");
    if (model == j.end() || !model->is_object()) {
      return wrap(TokenizerJsonError("model", "missing object"));
    }
    const std::string model_type = TypeOf(*model);
    if (model_type == "BPE" || (model_type.empty() && model->contains("merges"))) {
      auto bpe = BpeModel::FromJson(*model);
      if (!bpe.ok()) return wrap(bpe.status());
      impl->model = std::move(*bpe);
    } else if (model_type == "WordPiece") {
      auto wordpiece = WordPieceModel::FromJson(*model);
      if (!wordpiece.ok()) return wrap(wordpiece.status());
      impl->model = std::move(*wordpiece);
    } else {
      return wrap(TokenizerJsonError(
          "model.type", absl::StrCat("model \"", model_type, "\" is not supported yet")));
    }

    if (auto n = j.find("normalizer"); n != j.end() && !n->is_null()) {
      auto parsed = ParseNormalizer(*n, "normalizer");
      if (!parsed.ok()) return wrap(parsed.status());
      impl->normalizer = std::move(*parsed);
    }
    if (auto p = j.find("pre_tokenizer"); p != j.end() && !p->is_null()) {
      auto parsed = ParsePreTokenizer(*p, "pre_tokenizer");
      if (!parsed.ok()) return wrap(parsed.status());
      impl->pre_tokenizer = std::move(*parsed);
    }
    if (auto p = j.find("post_processor"); p != j.end() && !p->is_null()) {
      SY_RETURN_IF_ERROR(wrap(ParsePostProcessor(*p, "post_processor", &impl->post)));
    }
    if (auto d = j.find("decoder"); d != j.end() && !d->is_null()) {
      auto parsed = ParseDecoder(*d, "decoder");
      if (!parsed.ok()) return wrap(parsed.status());
      impl->decoder = std::move(*parsed);
    }
    if (auto a = j.find("added_tokens"); a != j.end() && !a->is_null()) {
      if (!a->is_array()) return wrap(TokenizerJsonError("added_tokens", "must be an array"));
      for (size_t i = 0; i < a->size(); ++i) {
        const Json& t = (*a)[i];
        if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() ||
            !t.contains("content") || !t["content"].is_string()) {
          return wrap(TokenizerJsonError(absl::StrCat("added_tokens[", i, "]"),
                                         "needs an integer \"id\" and a string \"content\""));
        }
        AddedToken token;
        if (t["id"].get<int64_t>() < 0 || t["id"].get<int64_t>() >= INT32_MAX) {
          return wrap(TokenizerJsonError(absl::StrCat("added_tokens[", i, "].id"),
                                         "must be a non-negative 32-bit id"));
        }
        token.id = t["id"].get<int32_t>();
        token.content = t["content"].get<std::string>();
        token.single_word = BoolField(t, "single_word", false);
        token.lstrip = BoolField(t, "lstrip", false);
        token.rstrip = BoolField(t, "rstrip", false);
        token.normalized = BoolField(t, "normalized", false);
        token.special = BoolField(t, "special", false);
        std::string match = token.content;
        if (token.normalized && impl->normalizer) {
          auto normalized = impl->normalizer->Apply(match);
          if (!normalized.ok()) return wrap(normalized.status());
          match = *normalized;
        }
        impl->added_by_id[token.id] = impl->added.size();
        impl->added_by_content[token.content] = token.id;
        if (!match.empty()) {
          impl->added_by_first_byte[token.normalized ? 1 : 0][static_cast<unsigned char>(match[0])]
              .push_back(impl->added.size());
        }
        impl->added.push_back(std::move(token));
        impl->added_match.push_back(std::move(match));
      }
    }
    for (auto& stage : impl->added_by_first_byte) {
      for (auto& candidates : stage) {
        std::stable_sort(candidates.begin(), candidates.end(), [&](size_t a, size_t b) {
          return impl->added_match[a].size() > impl->added_match[b].size();
        });
      }
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": unexpected value: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": cannot load: ", e.what()));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens) const {
  // The regexes run without PCRE2's own (per call) UTF-8 check: check once.
  if (const int64_t bad = FirstInvalidUtf8(text); bad >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (byte ", bad + 1, " of ", text.size(), ")"));
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = impl_->post.before;
  // As tokenizers: split on raw added tokens, normalize the rest, split that
  // on normalized added tokens, then pre-tokenize and run the model.
  for (const Impl::Segment& segment : impl_->SplitOnAddedTokens(text, /*normalized=*/false)) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    std::string normalized(segment.text);
    if (impl_->normalizer) {
      SY_ASSIGN_OR_RETURN(normalized, impl_->normalizer->Apply(std::move(normalized)));
    }
    for (const Impl::Segment& part : impl_->SplitOnAddedTokens(normalized, /*normalized=*/true)) {
      if (part.id >= 0) {
        ids.push_back(part.id);
        continue;
      }
      const bool at_start =
          segment.text.data() == text.data() && part.text.data() == normalized.data();
      SY_RETURN_IF_ERROR(impl_->EncodeNormalized(part.text, at_start, &ids));
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->post.after.begin(), impl_->post.after.end());
  return ids;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids,
                                              bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto added = impl_->added_by_id.find(id);
    if (added != impl_->added_by_id.end()) {
      const AddedToken& t = impl_->added[added->second];
      if (skip_special_tokens && t.special) continue;
      tokens.push_back(t.content);
      continue;
    }
    const std::string& token = impl_->model->IdToToken(id);
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("unknown token id ", id));
    tokens.push_back(token);
  }
  if (impl_->decoder) impl_->decoder->Apply(&tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return Utf8Lossy(text);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  auto it = impl_->added_by_content.find(token);
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model->TokenToId(token);
}

std::string Tokenizer::IdToToken(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  if (it != impl_->added_by_id.end()) return impl_->added[it->second].content;
  return impl_->model->IdToToken(id);
}

int32_t Tokenizer::vocab_size() const {
  int32_t n = impl_->model->vocab_size();
  for (const AddedToken& t : impl_->added) n = std::max(n, t.id + 1);
  return n;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

DecodeStream::DecodeStream(const Tokenizer* tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

absl::StatusOr<std::string> DecodeStream::Step(int32_t id) {
  ids_.push_back(id);
  const std::vector<int32_t> context(ids_.begin() + static_cast<std::ptrdiff_t>(prefix_),
                                     ids_.begin() + static_cast<std::ptrdiff_t>(read_));
  const std::vector<int32_t> window(ids_.begin() + static_cast<std::ptrdiff_t>(prefix_),
                                    ids_.end());
  SY_ASSIGN_OR_RETURN(std::string before, tokenizer_->Decode(context, skip_special_tokens_));
  SY_ASSIGN_OR_RETURN(std::string after, tokenizer_->Decode(window, skip_special_tokens_));
  // A trailing U+FFFD is an incomplete character: wait for the next token.
  if (after.size() <= before.size() || absl::EndsWith(after, "\xEF\xBF\xBD") ||
      !absl::StartsWith(after, before)) {
    return std::string();
  }
  std::string delta = after.substr(before.size());
  prefix_ = read_;
  read_ = ids_.size();
  return delta;
}

}  // namespace switchyard::text
