#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/retrieval/bm25_index.h"
#include "services/retrieval/chunker.h"
#include "services/retrieval/hash_embedder.h"
#include "services/retrieval/words.h"

namespace switchyard::retrieval {
namespace {

double Cosine(const std::vector<float>& v, int a, int b, int d) {
  double dot = 0;
  for (int i = 0; i < d; ++i) dot += static_cast<double>(v[a * d + i]) * v[b * d + i];
  return dot;  // rows are unit vectors
}

TEST(WordsTest, SplitsOnPunctuationLowerCasesAsciiAndKeepsUtf8) {
  std::vector<Word> w = SplitWords("Hello, WORLD! Straße 42x");
  ASSERT_EQ(w.size(), 4u);
  EXPECT_EQ(w[0].norm, "hello");
  EXPECT_EQ(w[1].norm, "world");
  EXPECT_EQ(w[2].norm, "straße");
  EXPECT_EQ(w[3].norm, "42x");
  EXPECT_EQ(w[1].begin, 7u);
  EXPECT_EQ(w[1].end, 12u);
}

TEST(WordsTest, StableHashIsFixedAcrossReleases) {
  // Persisted collections depend on these values never changing.
  EXPECT_EQ(StableHash(""), StableHash(""));
  EXPECT_NE(StableHash("a"), StableHash("b"));
  // FNV-1a 64 then fmix64, computed independently (Python).
  EXPECT_EQ(StableHash("refund"), 0xb6b82ed945ea3082ull);
}

TEST(HashEmbedderTest, VectorsAreUnitLengthDeterministicAndZeroForEmptyText) {
  auto e = HashEmbedder::Create(64);
  ASSERT_TRUE(e.ok());
  auto v = e->Embed({"Refunds take five days.", "Refunds take five days.", "  ...  "});
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->size(), 3u * 64);
  double norm = 0;
  for (int i = 0; i < 64; ++i) norm += (*v)[i] * (*v)[i];
  EXPECT_NEAR(norm, 1.0, 1e-5);
  EXPECT_TRUE(std::equal(v->begin(), v->begin() + 64, v->begin() + 64));
  EXPECT_TRUE(std::all_of(v->begin() + 128, v->end(), [](float x) { return x == 0; }));
  EXPECT_FALSE(HashEmbedder::Create(4).ok());
}

TEST(HashEmbedderTest, RelatedTextsAreCloserThanUnrelatedOnes) {
  auto e = HashEmbedder::Create(384);
  ASSERT_TRUE(e.ok());
  auto v = e->Embed({"how long do refunds take", "refund processing time in days",
                     "which boots are waterproof", "How long do REFUNDS take?"});
  ASSERT_TRUE(v.ok());
  EXPECT_GT(Cosine(*v, 0, 1, 384), Cosine(*v, 0, 2, 384));  // "refund(s)" shares n-grams
  EXPECT_NEAR(Cosine(*v, 0, 3, 384), 1.0, 1e-5);            // case and punctuation do not count
}

std::string Words(int n, int offset = 0) {
  std::string s;
  for (int i = 0; i < n; ++i) absl::StrAppend(&s, i ? " " : "", "w", i + offset);
  return s;
}

TEST(ChunkerTest, ChunksCoverEveryWordWithinTheLimitAndOverlap) {
  const std::string text = Words(100);
  ChunkerOptions o;
  o.chunk_tokens = 30;
  o.overlap_tokens = 5;
  std::vector<Chunk> chunks = ChunkText(text, o);
  ASSERT_GE(chunks.size(), 4u);
  EXPECT_EQ(chunks.front().begin, 0u);
  EXPECT_EQ(chunks.back().end, text.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    EXPECT_EQ(chunks[i].position, static_cast<int>(i));
    EXPECT_LE(chunks[i].tokens, 30);
    EXPECT_EQ(
        WordCost(absl::string_view(text).substr(chunks[i].begin, chunks[i].end - chunks[i].begin)),
        chunks[i].tokens);
    if (i > 0) {
      // The next chunk starts 5 words before the previous one ended.
      absl::string_view shared =
          absl::string_view(text).substr(chunks[i].begin, chunks[i - 1].end - chunks[i].begin);
      EXPECT_EQ(WordCost(shared), 5) << "chunk " << i;
    }
  }
  EXPECT_EQ(chunks[0].tokens, 30);
}

TEST(ChunkerTest, EndsAtAParagraphBoundaryInTheLastQuarter) {
  // Paragraphs of 26 and 40 words; limit 30: the first chunk ends at the
  // blank line (26 >= 3/4 of 30) rather than 4 words into the next paragraph.
  const std::string text = Words(26) + "\n\n" + Words(40, 100);
  ChunkerOptions o;
  o.chunk_tokens = 30;
  o.overlap_tokens = 0;
  std::vector<Chunk> chunks = ChunkText(text, o);
  ASSERT_GE(chunks.size(), 2u);
  EXPECT_EQ(chunks[0].tokens, 26);
  EXPECT_EQ(text.substr(chunks[1].begin, 4), "w100");
  o.ignore_paragraphs = true;
  EXPECT_EQ(ChunkText(text, o)[0].tokens, 30);
  // A boundary early in the chunk (10 of 30) is not used.
  o.ignore_paragraphs = false;
  EXPECT_EQ(ChunkText(Words(10) + "\n\n" + Words(40, 100), o)[0].tokens, 30);
}

TEST(ChunkerTest, CustomTokenCostsAndOversizedPieces) {
  ChunkerOptions o;
  o.chunk_tokens = 4;
  o.overlap_tokens = 1;
  // Each piece costs its length in bytes: "abcdefgh" alone is over the limit.
  std::vector<Chunk> chunks =
      ChunkText("ab abcdefgh c", o, [](absl::string_view p) { return static_cast<int>(p.size()); });
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[1].tokens, 8);
  EXPECT_TRUE(ChunkText("   \n\n ", o).empty());
}

TEST(Bm25IndexTest, ScoresFollowOkapiBm25) {
  Bm25Index index;
  index.Add(1, "refund refund policy");
  index.Add(2, "shipping policy");
  index.Add(3, "boots sizes");
  auto hits = index.Search("refund", 10);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].id, 1);
  // N 3, df 1, tf 2, len 3, avg 7/3.
  const double idf = std::log(1 + (3 - 1 + 0.5) / (1 + 0.5));
  const double norm = 1.2 * (1 - 0.75 + 0.75 * 3 / (7.0 / 3));
  EXPECT_NEAR(hits[0].score, idf * 2 * 2.2 / (2 + norm), 1e-12);
  hits = index.Search("POLICY!", 10);
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0].id, 2);  // shorter document, same tf
}

TEST(Bm25IndexTest, RemoveReplaceAndFilter) {
  Bm25Index index;
  index.Add(1, "alpha beta");
  index.Add(2, "alpha gamma");
  index.Add(1, "delta");  // replaces
  EXPECT_EQ(index.size(), 2u);
  auto hits = index.Search("alpha", 10);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].id, 2);
  EXPECT_TRUE(index.Search("alpha", 10, [](int64_t id) { return id != 2; }).empty());
  index.Remove(2);
  index.Remove(42);
  EXPECT_TRUE(index.Search("alpha", 10).empty());
  EXPECT_EQ(index.Search("delta", 10).size(), 1u);
}

}  // namespace
}  // namespace switchyard::retrieval
