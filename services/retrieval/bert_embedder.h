// BertEmbedder: a sentence-transformers BERT-family checkpoint (BertEncoder
// plus the directory's tokenizer.json) as a retrieval Embedder.
//
// Texts are tokenized with the tokenizer's special tokens, truncated as
// sentence-transformers does (the text's tokens are cut to max_tokens(), the
// special tokens are kept), right-padded per batch and pooled by the encoder;
// vectors are L2-normalised here when the checkpoint has no Normalize module.
// A text with no tokens at all (empty, or only whitespace) gets a zero vector.
//
// Thread-safe: Embed may run concurrently (the encoder and tokenizer are
// read-only after Load). Torch headers stay out of this file.
#ifndef SWITCHYARD_SERVICES_RETRIEVAL_BERT_EMBEDDER_H_
#define SWITCHYARD_SERVICES_RETRIEVAL_BERT_EMBEDDER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/retrieval/embedder.h"

namespace switchyard::model {
class BertEncoder;
}  // namespace switchyard::model
namespace switchyard::text {
class Tokenizer;
}  // namespace switchyard::text

namespace switchyard::retrieval {

class BertEmbedder : public Embedder {
 public:
  // Loads the encoder (fp32, CPU) and tokenizer.json from `dir`. Errors name
  // `dir`: a missing directory or file, a non-BERT config, an unsupported
  // tokenizer, or batch_size < 1. `batch_size` texts go through one forward.
  static absl::StatusOr<std::unique_ptr<BertEmbedder>> Load(const std::string& dir,
                                                            int batch_size = 32);
  ~BertEmbedder() override;

  int dimension() const override;
  absl::StatusOr<std::vector<float>> Embed(const std::vector<std::string>& texts) const override;
  // Ids of Encode(piece) without special tokens.
  int CountTokens(absl::string_view piece) const override;
  // sentence_bert_config.json's max_seq_length (else the config's
  // max_position_embeddings), less the special tokens, never more than
  // max_position_embeddings less the special tokens.
  int max_tokens() const override { return max_tokens_; }

 private:
  BertEmbedder(std::unique_ptr<model::BertEncoder> encoder,
               std::unique_ptr<text::Tokenizer> tokenizer, int batch_size);
  // Sets prefix_, suffix_, pad_id_ and max_tokens_ from the tokenizer and `dir`.
  absl::Status Configure(const std::string& dir);
  // Ids the encoder reads for `text`: special prefix, at most max_tokens()
  // text tokens, special suffix. Empty when the text has no tokens.
  absl::StatusOr<std::vector<int32_t>> InputIds(const std::string& text) const;

  std::unique_ptr<model::BertEncoder> encoder_;
  std::unique_ptr<text::Tokenizer> tokenizer_;
  int batch_size_;
  std::vector<int32_t> prefix_;  // special tokens before the text ([CLS])
  std::vector<int32_t> suffix_;  // and after it ([SEP])
  int32_t pad_id_ = 0;
  int max_tokens_ = 0;
};

}  // namespace switchyard::retrieval

#endif  // SWITCHYARD_SERVICES_RETRIEVAL_BERT_EMBEDDER_H_
