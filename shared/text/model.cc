#include "shared/text/model.h"

#include "absl/strings/str_cat.h"

namespace switchyard::text {

absl::Status TokenizerJsonError(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", field, ": ", what));
}

absl::Status ParseVocabulary(const nlohmann::json& model, Vocabulary* vocab) {
  auto it = model.find("vocab");
  if (it == model.end() || !it->is_object()) {
    return TokenizerJsonError("model.vocab", "missing or not an object of token -> id");
  }
  int64_t max_id = -1;
  for (auto entry = it->begin(); entry != it->end(); ++entry) {
    if (!entry.value().is_number_integer() || entry.value().get<int64_t>() < 0 ||
        entry.value().get<int64_t>() > INT32_MAX) {
      return TokenizerJsonError(absl::StrCat("model.vocab[\"", entry.key(), "\"]"),
                                "id must be a non-negative integer");
    }
    const int32_t id = entry.value().get<int32_t>();
    vocab->ids[entry.key()] = id;
    max_id = std::max<int64_t>(max_id, id);
  }
  // Ids are dense in real vocabularies; a far-out id would make a huge table.
  if (max_id >= 2 * static_cast<int64_t>(vocab->ids.size()) + 1024) {
    return TokenizerJsonError("model.vocab", absl::StrCat("id ", max_id, " is far beyond the ",
                                                          vocab->ids.size(), " tokens"));
  }
  vocab->tokens.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& [token, id] : vocab->ids) vocab->tokens[static_cast<size_t>(id)] = token;
  return absl::OkStatus();
}

}  // namespace switchyard::text
