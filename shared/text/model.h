// The interface of a tokenization model (tokenizer.json's "model"): turns one
// pre-tokenized word into ids. Implementations are thread-safe.
#ifndef SWITCHYARD_SHARED_TEXT_MODEL_H_
#define SWITCHYARD_SHARED_TEXT_MODEL_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {

// A model's token <-> id table, read from tokenizer.json's "model.vocab".
struct Vocabulary {
  absl::flat_hash_map<std::string, int32_t> ids;
  std::vector<std::string> tokens;  // by id; empty where an id is unused
};

// Parses `model["vocab"]` (an object of token -> non-negative id); errors name
// the field.
absl::Status ParseVocabulary(const nlohmann::json& model, Vocabulary* vocab);

// INVALID_ARGUMENT "tokenizer.json: <field>: <what>".
absl::Status TokenizerJsonError(absl::string_view field, absl::string_view what);

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one pre-tokenized word.
  virtual void Tokenize(absl::string_view word, std::vector<int32_t>* ids) const = 0;
  virtual std::optional<int32_t> TokenToId(absl::string_view token) const = 0;
  // Empty for ids outside the vocabulary.
  virtual const std::string& IdToToken(int32_t id) const = 0;
  virtual int32_t vocab_size() const = 0;
};

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_MODEL_H_
