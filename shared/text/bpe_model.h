// BpeModel: byte-pair encoding as Hugging Face tokenizers' "BPE" model. A
// pre-tokenized word is split into characters (or byte tokens with
// byte_fallback, or unk), then the adjacent pair with the lowest merge rank is
// merged, leftmost first, until no pair merges.
//
// Thread-safe: Tokenize may be called concurrently; a bounded cache keeps the
// ids of frequent words.
#ifndef SWITCHYARD_SHARED_TEXT_BPE_MODEL_H_
#define SWITCHYARD_SHARED_TEXT_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/text/model.h"

namespace switchyard::text {

class BpeModel : public Model {
 public:
  // Parses tokenizer.json's "model" object (type "BPE"); errors name the
  // field, e.g. "model.merges[12]".
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized word.
  void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const override;

  std::optional<int32_t> TokenToId(absl::string_view token) const override;
  const std::string& IdToToken(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.tokens.size()); }

 private:
  BpeModel() = default;
  void TokenizeUncached(absl::string_view word, std::vector<int32_t>* ids) const;

  Vocabulary vocab_;
  // (left id << 32 | right id) -> (rank, merged id)
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;

  static constexpr size_t kCacheCapacity = 10000;
  mutable std::shared_mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_BPE_MODEL_H_
