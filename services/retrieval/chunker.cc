#include "services/retrieval/chunker.h"

#include <algorithm>

#include "services/retrieval/words.h"

namespace switchyard::retrieval {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

struct Piece {
  size_t begin = 0, end = 0;
  int cost = 0;
  bool ends_paragraph = false;  // a blank line follows
};

std::vector<Piece> SplitPieces(absl::string_view text, const TokenCost& cost) {
  std::vector<Piece> pieces;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    if (i == text.size()) break;
    Piece p;
    p.begin = i;
    while (i < text.size() && !IsSpace(text[i])) ++i;
    p.end = i;
    absl::string_view s = text.substr(p.begin, p.end - p.begin);
    p.cost = cost ? cost(s) : WordCost(s);
    int newlines = 0;
    for (size_t j = i; j < text.size() && IsSpace(text[j]); ++j) newlines += text[j] == '\n';
    p.ends_paragraph = newlines >= 2;
    pieces.push_back(p);
  }
  return pieces;
}

}  // namespace

int WordCost(absl::string_view piece) { return static_cast<int>(SplitWords(piece).size()); }

std::vector<Chunk> ChunkText(absl::string_view text, const ChunkerOptions& options,
                             const TokenCost& cost) {
  const std::vector<Piece> pieces = SplitPieces(text, cost);
  const int limit = std::max(1, options.chunk_tokens);
  const int overlap = std::clamp(options.overlap_tokens, 0, limit - 1);
  std::vector<Chunk> chunks;
  size_t i = 0;
  const size_t n = pieces.size();
  while (i < n) {
    // The longest run from i within the limit (at least one piece).
    size_t j = i;
    int tokens = 0;
    while (j < n && (j == i || tokens + pieces[j].cost <= limit)) tokens += pieces[j++].cost;
    // End at the last paragraph boundary in the chunk's last quarter instead.
    if (j < n && !options.ignore_paragraphs) {
      int upto = 0;
      size_t cut = 0;
      int cut_tokens = 0;
      for (size_t k = i; k < j; ++k) {
        upto += pieces[k].cost;
        if (pieces[k].ends_paragraph && 4 * upto >= 3 * limit) {
          cut = k + 1;
          cut_tokens = upto;
        }
      }
      if (cut > 0) {
        j = cut;
        tokens = cut_tokens;
      }
    }
    Chunk c;
    c.begin = pieces[i].begin;
    c.end = pieces[j - 1].end;
    c.position = static_cast<int>(chunks.size());
    c.tokens = tokens;
    chunks.push_back(c);
    if (j >= n) break;
    // The next chunk repeats the last pieces worth at most `overlap` tokens,
    // and always moves forward.
    size_t next = j;
    int shared = 0;
    while (next - 1 > i && shared + pieces[next - 1].cost <= overlap) shared += pieces[--next].cost;
    i = next;
  }
  return chunks;
}

}  // namespace switchyard::retrieval
