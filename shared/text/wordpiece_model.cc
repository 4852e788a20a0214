#include "shared/text/wordpiece_model.h"

#include "absl/strings/str_cat.h"
#include "shared/core/status_macros.h"
#include "shared/text/unicode.h"

namespace switchyard::text {
absl::StatusOr<std::unique_ptr<WordPieceModel>> WordPieceModel::FromJson(
    const nlohmann::json& model) {
  std::unique_ptr<WordPieceModel> m(new WordPieceModel());
  SY_RETURN_IF_ERROR(ParseVocabulary(model, &m->vocab_));
  const std::string unk = model.value("unk_token", std::string("[UNK]"));
  auto it = m->vocab_.ids.find(unk);
  if (it == m->vocab_.ids.end()) {
    return TokenizerJsonError("model.unk_token",
                              absl::StrCat("\"", unk, "\" is not in model.vocab"));
  }
  m->unk_id_ = it->second;
  if (auto p = model.find("continuing_subword_prefix"); p != model.end() && p->is_string()) {
    m->prefix_ = p->get<std::string>();
  }
  if (auto n = model.find("max_input_chars_per_word"); n != model.end()) {
    if (!n->is_number_unsigned()) {
      return TokenizerJsonError("model.max_input_chars_per_word", "must be a positive integer");
    }
    m->max_chars_ = n->get<size_t>();
  }
  return m;
}

void WordPieceModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  const std::vector<absl::string_view> chars = Utf8Characters(word);
  if (chars.size() > max_chars_) {
    ids->push_back(unk_id_);
    return;
  }
  std::vector<int32_t> pieces;
  size_t start = 0;  // in characters
  std::string candidate;
  while (start < chars.size()) {
    size_t end = chars.size();
    int32_t found = -1;
    while (start < end) {
      candidate.clear();
      if (start > 0) candidate = prefix_;
      const char* begin = chars[start].data();
      const char* stop = chars[end - 1].data() + chars[end - 1].size();
      candidate.append(begin, static_cast<size_t>(stop - begin));
      auto it = vocab_.ids.find(candidate);
      if (it != vocab_.ids.end()) {
        found = it->second;
        break;
      }
      --end;
    }
    if (found < 0) {
      ids->push_back(unk_id_);  // the whole word is unknown
      return;
    }
    pieces.push_back(found);
    start = end;
  }
  ids->insert(ids->end(), pieces.begin(), pieces.end());
}

std::optional<int32_t> WordPieceModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.ids.find(token);
  if (it == vocab_.ids.end()) return std::nullopt;
  return it->second;
}

const std::string& WordPieceModel::IdToToken(int32_t id) const {
  static const std::string* empty = new std::string();
  if (id < 0 || id >= vocab_size()) return *empty;
  return vocab_.tokens[static_cast<size_t>(id)];
}

}  // namespace switchyard::text
