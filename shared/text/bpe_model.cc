#include "shared/text/bpe_model.h"

#include <functional>
#include <mutex>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "shared/core/status_macros.h"
#include "shared/text/unicode.h"

namespace switchyard::text {
namespace {

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& model) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  SY_RETURN_IF_ERROR(ParseVocabulary(model, &m->vocab_));

  auto merges = model.find("merges");
  if (merges != model.end() && !merges->is_null()) {
    if (!merges->is_array()) return TokenizerJsonError("model.merges", "must be an array");
    int32_t rank = 0;
    for (const auto& merge : *merges) {
      std::string left, right;
      const std::string field = absl::StrCat("model.merges[", rank, "]");
      if (merge.is_string()) {  // "a b"
        const std::string& s = merge.get_ref<const std::string&>();
        size_t space = s.find(' ', 1);
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          return TokenizerJsonError(
              field, absl::StrCat("\"", s, "\" is not two tokens separated by a space"));
        }
        left = s.substr(0, space);
        right = s.substr(space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
                 merge[1].is_string()) {  // ["a", "b"]
        left = merge[0].get<std::string>();
        right = merge[1].get<std::string>();
      } else {
        return TokenizerJsonError(field, "must be \"a b\" or [\"a\", \"b\"]");
      }
      auto l = m->vocab_.ids.find(left), r = m->vocab_.ids.find(right);
      auto merged = m->vocab_.ids.find(left + right);
      if (l == m->vocab_.ids.end() || r == m->vocab_.ids.end() || merged == m->vocab_.ids.end()) {
        return TokenizerJsonError(
            field, absl::StrCat("\"", left, "\", \"", right, "\" or their merge \"", left, right,
                                "\" is not in model.vocab"));
      }
      // A pair listed twice keeps its last rank, as tokenizers' map does.
      m->merges_.insert_or_assign(PairKey(l->second, r->second),
                                  std::make_pair(rank, merged->second));
      ++rank;
    }
  }
  auto get_bool = [&](const char* key) {
    auto it = model.find(key);
    return it != model.end() && it->is_boolean() && it->get<bool>();
  };
  auto get_string = [&](const char* key) {
    auto it = model.find(key);
    return it != model.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  m->byte_fallback_ = get_bool("byte_fallback");
  m->fuse_unk_ = get_bool("fuse_unk");
  m->ignore_merges_ = get_bool("ignore_merges");
  m->continuing_subword_prefix_ = get_string("continuing_subword_prefix");
  m->end_of_word_suffix_ = get_string("end_of_word_suffix");
  const std::string unk = get_string("unk_token");
  if (!unk.empty()) {
    auto it = m->vocab_.ids.find(unk);
    if (it == m->vocab_.ids.end()) {
      return TokenizerJsonError("model.unk_token",
                                absl::StrCat("\"", unk, "\" is not in model.vocab"));
    }
    m->unk_id_ = it->second;
  }
  auto dropout = model.find("dropout");
  if (dropout != model.end() && dropout->is_number() && dropout->get<double>() > 0) {
    return TokenizerJsonError("model.dropout",
                              "BPE dropout is for training; set it to null to encode");
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.ids.find(token);
  if (it == vocab_.ids.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::IdToToken(int32_t id) const {
  static const std::string* empty = new std::string();
  if (id < 0 || id >= vocab_size()) return *empty;
  return vocab_.tokens[static_cast<size_t>(id)];
}

void BpeModel::Tokenize(absl::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  {
    std::shared_lock<std::shared_mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> out;
  TokenizeUncached(word, &out);
  ids->insert(ids->end(), out.begin(), out.end());
  if (word.size() <= 256) {
    std::unique_lock<std::shared_mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(out));
  }
}

void BpeModel::TokenizeUncached(absl::string_view word, std::vector<int32_t>* ids) const {
  if (ignore_merges_) {
    auto it = vocab_.ids.find(word);
    if (it != vocab_.ids.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  // Initial symbols: one per character (with the subword prefix/suffix).
  std::vector<int32_t> symbols;
  std::vector<bool> is_unk;
  const std::vector<absl::string_view> chars = Utf8Characters(word);
  for (size_t i = 0; i < chars.size(); ++i) {
    std::string piece;
    if (i > 0) piece = continuing_subword_prefix_;
    absl::StrAppend(&piece, chars[i]);
    if (i + 1 == chars.size()) absl::StrAppend(&piece, end_of_word_suffix_);
    auto it = vocab_.ids.find(piece);
    if (it != vocab_.ids.end()) {
      symbols.push_back(it->second);
      is_unk.push_back(false);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      std::vector<int32_t> bytes;
      for (unsigned char b : chars[i]) {
        auto byte_token = vocab_.ids.find(absl::StrFormat("<0x%02X>", b));
        if (byte_token == vocab_.ids.end()) {
          all = false;
          break;
        }
        bytes.push_back(byte_token->second);
      }
      if (all) {
        for (int32_t id : bytes) {
          symbols.push_back(id);
          is_unk.push_back(false);
        }
        continue;
      }
    }
    if (!unk_id_) continue;  // no unk token: the character is dropped, as HF does
    if (fuse_unk_ && !is_unk.empty() && is_unk.back()) continue;
    symbols.push_back(*unk_id_);
    is_unk.push_back(true);
  }
  // Merge the lowest-ranked adjacent pair, leftmost first, until none merges:
  // a min-heap of candidate pairs over a linked list of symbols, O(n log n).
  // Entries whose pair changed since they were pushed are skipped when popped.
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int pos;  // index of the left symbol
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push = [&](int left) {
    if (left < 0) return;
    const int right = next[left];
    if (right < 0 || is_unk[left] || is_unk[right]) return;
    auto it = merges_.find(PairKey(symbols[left], symbols[right]));
    if (it != merges_.end()) heap.push({it->second.first, left, it->second.second});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(static_cast<size_t>(n), true);
  while (!heap.empty()) {
    const Candidate top = heap.top();
    heap.pop();
    const int left = top.pos;
    if (!alive[left] || next[left] < 0) continue;
    const int right = next[left];
    auto it = merges_.find(PairKey(symbols[left], symbols[right]));
    if (it == merges_.end() || it->second.second != top.merged_id || it->second.first != top.rank) {
      continue;  // stale: the pair changed since this entry was pushed
    }
    symbols[left] = top.merged_id;
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    push(prev[left]);
    push(left);
  }
  std::vector<int32_t> merged;
  merged.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    if (alive[i]) merged.push_back(symbols[i]);
  }
  symbols = std::move(merged);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
}

}  // namespace switchyard::text
