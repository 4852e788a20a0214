// Tokenizer: a model's tokenizer.json as Hugging Face tokenizers runs it:
// added tokens are matched first, then the rest is normalized, pre-tokenized,
// run through the model, and wrapped by the post-processor; decoding runs the
// decoder over the tokens.
//
// Supported: the BPE model (byte-level as GPT-2 / Llama-3 / Qwen, with
// byte_fallback, unk, ignore_merges) and WordPiece (BERT); normalizers
// NFC/NFD/NFKC/NFKD, Lowercase, StripAccents, BertNormalizer, Prepend, Replace
// (string pattern), Sequence; pre-tokenizers ByteLevel, Split (PCRE2 regex or string),
// Metaspace, BertPreTokenizer, Digits, Sequence; post-processors TemplateProcessing
// (single sequences), BertProcessing, RobertaProcessing, ByteLevel, Sequence;
// decoders ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace, WordPiece,
// Sequence; added tokens with lstrip, rstrip, single_word, normalized, special.
// Anything else is refused at load with an error naming the field and type.
//
// Thread-safe after construction: Encode and Decode may run concurrently.
#ifndef SWITCHYARD_SHARED_TEXT_TOKENIZER_H_
#define SWITCHYARD_SHARED_TEXT_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

class Tokenizer {
 public:
  // Reads a tokenizer.json file, or the tokenizer.json inside a model directory.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Parses tokenizer.json text; `origin` names it in errors.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json,
                                                             const std::string& origin);
  ~Tokenizer();

  // Token ids of UTF-8 text; with `add_special_tokens` the post-processor adds
  // its tokens (e.g. Llama-3's <|begin_of_text|>).
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special_tokens = true) const;
  // Text of ids; invalid UTF-8 from partial byte tokens becomes U+FFFD.
  absl::StatusOr<std::string> Decode(const std::vector<int32_t>& ids,
                                     bool skip_special_tokens = false) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Empty for unknown ids.
  std::string IdToToken(int32_t id) const;
  int32_t vocab_size() const;
  const std::vector<AddedToken>& added_tokens() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Decodes ids one at a time as a model generates them, for streaming. Text is
// released only when it is final: bytes of a character split over several
// tokens wait for the rest, so no chunk ends in a broken UTF-8 sequence, and
// decoders that treat the first token specially (Metaspace, Strip) see the
// same context as a full decode. The chunks concatenate to Decode(all ids).
// Not thread-safe: one stream per sequence. The tokenizer must outlive it.
class DecodeStream {
 public:
  DecodeStream(const Tokenizer* tokenizer, bool skip_special_tokens);
  // The text `id` completes; empty while it is still incomplete.
  absl::StatusOr<std::string> Step(int32_t id);

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // start of the context window
  size_t read_ = 0;    // ids before this are already released
};

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_TOKENIZER_H_
