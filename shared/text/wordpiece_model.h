// WordPieceModel: BERT's greedy longest-match-first subword model as Hugging
// Face tokenizers' "WordPiece": a word longer than max_input_chars_per_word, or
// one that cannot be covered by vocabulary pieces (continuations carry the
// "##" prefix), becomes the unk token. Thread-safe.
#ifndef SWITCHYARD_SHARED_TEXT_WORDPIECE_MODEL_H_
#define SWITCHYARD_SHARED_TEXT_WORDPIECE_MODEL_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "shared/text/model.h"

namespace switchyard::text {

class WordPieceModel : public Model {
 public:
  // Parses tokenizer.json's "model" object (type "WordPiece").
  static absl::StatusOr<std::unique_ptr<WordPieceModel>> FromJson(const nlohmann::json& model);

  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const override;
  std::optional<int32_t> TokenToId(absl::string_view token) const override;
  const std::string& IdToToken(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.tokens.size()); }

 private:
  WordPieceModel() = default;
  Vocabulary vocab_;
  int32_t unk_id_ = 0;
  std::string prefix_ = "##";
  size_t max_chars_ = 100;
};

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_WORDPIECE_MODEL_H_
