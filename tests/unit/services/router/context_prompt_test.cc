#include "services/router/context_prompt.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "shared/core/utf8.h"

namespace switchyard::router {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Fake tokenizer: each whitespace-separated word is split into pieces of at
// most `max_piece` bytes (0 = whole words), whitespace joining the token after
// it and trailing whitespace the last token, like GPT-style BPE.
bool IsSpace(char c) { return c == ' ' || c == '\n'; }

std::vector<int> WordPieceEnds(const std::string& text, size_t max_piece) {
  std::vector<int> ends;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !IsSpace(text[i])) ++i;
    for (size_t p = start; max_piece > 0 && p + max_piece < i; p += max_piece) {
      ends.push_back(static_cast<int>(p + max_piece));
    }
    if (i > start) ends.push_back(static_cast<int>(i));
  }
  if (!text.empty() && (ends.empty() || ends.back() != static_cast<int>(text.size()))) {
    if (!ends.empty()) ends.pop_back();
    ends.push_back(static_cast<int>(text.size()));
  }
  return ends;
}

// A TokenEndsFn that counts its calls.
struct FakeTokenizer {
  enum Kind { kWords, kWordPieces4, kBytes };
  Kind kind = kWords;
  int calls = 0;

  TokenEndsFn Fn() {
    return [this](const std::vector<std::string>& texts)
               -> absl::StatusOr<std::vector<std::vector<int>>> {
      ++calls;
      std::vector<std::vector<int>> out;
      for (const std::string& t : texts) {
        if (kind == kBytes) {
          std::vector<int> ends;
          for (size_t i = 1; i <= t.size(); ++i) ends.push_back(static_cast<int>(i));
          out.push_back(ends);
        } else {
          out.push_back(WordPieceEnds(t, kind == kWordPieces4 ? 4 : 0));
        }
      }
      return out;
    };
  }
  int Count(const std::string& text) {
    return static_cast<int>(kind == kBytes ? text.size()
                                           : WordPieceEnds(text, kind == kWords ? 0 : 4).size());
  }
};

RetrievedChunk Chunk(const std::string& doc, const std::string& text) {
  RetrievedChunk c;
  c.collection = "collections/handbook";
  c.document_id = doc;
  c.position = 0;
  c.chunk_id = doc + "#0";
  c.text = text;
  c.score = 0.5;
  return c;
}

// "w1 w2 ... wN" with a per-chunk prefix, one word-token each.
std::string Words(const std::string& prefix, int n) {
  std::vector<std::string> words;
  for (int i = 1; i <= n; ++i) words.push_back(absl::StrCat(prefix, i));
  return absl::StrJoin(words, " ");
}

std::vector<Message> UserOnly(const std::string& q) { return {{"user", q, "", ""}}; }

// Just the sources, so that budgets are easy to count.
ContextTemplate BareTemplate() {
  ContextTemplate t;
  t.context_template = "{{sources}}";
  return t;
}

TEST(ContextPromptTest, DefaultTemplatesNumberSourcesInNewSystemMessage) {
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q?"), "", {Chunk("a", "Alpha."), Chunk("b", "Beta.")},
                  ContextTemplate(), -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].role, "system");
  EXPECT_EQ(p->messages[0].content,
            "Answer using the numbered sources below and cite them as [n]. If they do not contain "
            "the answer, say so.\n\n[1] Alpha.\n\n[2] Beta.");
  EXPECT_EQ(p->messages[1].content, "q?");
  ASSERT_EQ(p->sources.size(), 2u);
  EXPECT_EQ(p->sources[0].citation_id, "1");
  EXPECT_EQ(p->sources[1].citation_id, "2");
  EXPECT_EQ(p->sources[1].chunk.chunk_id, "b#0");
  EXPECT_FALSE(p->sources[1].truncated);
  EXPECT_EQ(p->dropped_sources, 0);
}

TEST(ContextPromptTest, SourceTemplateSubstitutesDocumentIdMetadataAndSeparator) {
  ContextTemplate t;
  t.context_template = "Sources:\n{{sources}}\nEnd.";
  t.source_template =
      "({{citation}}) {{document_id}} [{{metadata.title}}|{{metadata.none}}]: {{text}}";
  t.separator = "\n---\n";
  RetrievedChunk a = Chunk("doc-a", "Alpha {{sources}}");
  a.metadata["title"] = "Refunds";
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", {a, Chunk("doc-b", "Beta")}, t, -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  // Substituted text is not scanned again: the chunk's "{{sources}}" stays.
  EXPECT_EQ(p->messages[0].content,
            "Sources:\n(1) doc-a [Refunds|]: Alpha {{sources}}\n---\n(2) doc-b [|]: Beta\nEnd.");
}

TEST(ContextPromptTest, ValidateAcceptsDefaultsAndAllSourcePlaceholders) {
  EXPECT_TRUE(ValidateContextTemplate(ContextTemplate(), "arms[0].context").ok());
  ContextTemplate t;
  t.context_template = "Use these: {{sources}} and again {{sources}}";
  t.source_template = "{{citation}} {{text}} {{document_id}} {{metadata.page}} }} {";
  EXPECT_TRUE(ValidateContextTemplate(t, "arms[0].context").ok());
}

TEST(ContextPromptTest, ValidateNamesFieldAndPlaceholder) {
  ContextTemplate t;
  t.source_template = "[{{citation}}] {{foo}}";
  absl::Status s = ValidateContextTemplate(t, "arms[1].context");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(s.message()),
            "arms[1].context.source_template: unknown placeholder {{foo}}");

  t = ContextTemplate();
  t.context_template = "{{sources}} {{text}}";
  s = ValidateContextTemplate(t, "arms[1].context");
  EXPECT_EQ(std::string(s.message()),
            "arms[1].context.context_template: unknown placeholder {{text}}");

  t.context_template = "No sources here.";
  s = ValidateContextTemplate(t, "arms[1].context");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(std::string(s.message()), "arms[1].context.context_template: must contain {{sources}}");

  t = ContextTemplate();
  t.source_template = "{{metadata.}} {{text}}";
  s = ValidateContextTemplate(t, "arms[2].context");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("arms[2].context.source_template"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("{{metadata.}}"));

  t.source_template = "{{text}} {{citation";
  s = ValidateContextTemplate(t, "arms[2].context");
  EXPECT_EQ(std::string(s.message()),
            "arms[2].context.source_template: unclosed placeholder at byte 9");

  t.source_template = "{{ text }}";
  s = ValidateContextTemplate(t, "");
  EXPECT_EQ(std::string(s.message()), "source_template: unknown placeholder {{ text }}");
}

TEST(ContextPromptTest, BuildPromptRejectsInvalidTemplate) {
  ContextTemplate t;
  t.source_template = "{{bogus}}";
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", {Chunk("a", "x")}, t, -1, nullptr, false);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ContextPromptTest, UnlimitedBudgetKeepsAllAndNeverCallsTokenEnds) {
  FakeTokenizer tok;
  std::vector<RetrievedChunk> chunks;
  for (int i = 0; i < 5; ++i) chunks.push_back(Chunk(absl::StrCat("d", i), Words("w", 100)));
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", chunks, BareTemplate(), -1, tok.Fn(), false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(tok.calls, 0);
  EXPECT_EQ(p->sources.size(), 5u);
  EXPECT_EQ(p->dropped_sources, 0);
}

TEST(ContextPromptTest, BudgetThatFitsAllMeasuresOnce) {
  FakeTokenizer tok;
  std::vector<RetrievedChunk> chunks = {Chunk("a", Words("a", 10)), Chunk("b", Words("b", 10))};
  // "[1] a1 .. a10" is 11 tokens; two sources are 22.
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", chunks, BareTemplate(), 22, tok.Fn(), false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(tok.calls, 1);
  EXPECT_EQ(p->sources.size(), 2u);
  EXPECT_EQ(p->context_tokens, 22);
  EXPECT_EQ(p->context_tokens, tok.Count(p->messages[0].content));
}

TEST(ContextPromptTest, BudgetDropsLowestRankedFirstThenCutsLastKept) {
  FakeTokenizer tok;
  std::vector<RetrievedChunk> chunks = {Chunk("a", Words("a", 10)), Chunk("b", Words("b", 10)),
                                        Chunk("c", Words("c", 10))};
  // Source 1 takes 11 tokens; 10 are left, "[2]" takes 1, so 9 words of b.
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", chunks, BareTemplate(), 21, tok.Fn(), false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(tok.calls, 2);
  ASSERT_EQ(p->sources.size(), 2u);
  EXPECT_FALSE(p->sources[0].truncated);
  EXPECT_EQ(p->sources[0].chunk.text, Words("a", 10));
  EXPECT_TRUE(p->sources[1].truncated);
  EXPECT_EQ(p->sources[1].chunk.text, Words("b", 9));
  EXPECT_EQ(p->sources[1].chunk.document_id, "b");
  EXPECT_EQ(p->dropped_sources, 1);
  EXPECT_EQ(p->context_tokens, 21);
  EXPECT_EQ(p->messages[0].content,
            absl::StrCat("[1] ", Words("a", 10), "\n\n[2] ", Words("b", 9)));
}

TEST(ContextPromptTest, CutKeepsAtLeastEightTokens) {
  std::vector<RetrievedChunk> chunks = {Chunk("a", Words("a", 10)), Chunk("b", Words("b", 10)),
                                        Chunk("c", Words("c", 10))};
  {
    FakeTokenizer tok;  // 31 - 22 - "[3]" leaves exactly 8 words of c
    absl::StatusOr<BuiltPrompt> p =
        BuildPrompt(UserOnly("q"), "", chunks, BareTemplate(), 31, tok.Fn(), false);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->sources.size(), 3u);
    EXPECT_TRUE(p->sources[2].truncated);
    EXPECT_EQ(p->sources[2].chunk.text, Words("c", 8));
    EXPECT_EQ(p->dropped_sources, 0);
  }
  {
    FakeTokenizer tok;  // only 7 words of c would fit: c is dropped, no second call
    absl::StatusOr<BuiltPrompt> p =
        BuildPrompt(UserOnly("q"), "", chunks, BareTemplate(), 30, tok.Fn(), false);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(tok.calls, 1);
    ASSERT_EQ(p->sources.size(), 2u);
    EXPECT_FALSE(p->sources[1].truncated);
    EXPECT_EQ(p->dropped_sources, 1);
    EXPECT_EQ(p->context_tokens, 22);
  }
}

TEST(ContextPromptTest, NothingFitsLeavesConversationUnchanged) {
  FakeTokenizer tok;
  absl::StatusOr<BuiltPrompt> p = BuildPrompt(UserOnly("q"), "", {Chunk("a", Words("a", 10))},
                                              BareTemplate(), 5, tok.Fn(), false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->sources.empty());
  EXPECT_EQ(p->dropped_sources, 1);
  EXPECT_EQ(p->context_tokens, 0);
  ASSERT_EQ(p->messages.size(), 1u);
  EXPECT_EQ(p->messages[0].content, "q");
}

TEST(ContextPromptTest, CutIsRemeasuredWhenTemplateEdgesCostMore) {
  // Pieces of 4 bytes: "<abcd" and "abcd>" are 2 tokens each, so the estimate
  // from the whole chunk (whose last word "ab>" is 1 token) is one too high.
  FakeTokenizer tok;
  tok.kind = FakeTokenizer::kWordPieces4;
  std::string text;
  for (int i = 0; i < 19; ++i) text += "abcd ";
  text += "ab";
  ContextTemplate t = BareTemplate();
  t.source_template = "<{{text}}>";
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", {Chunk("a", text)}, t, 12, tok.Fn(), false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(tok.calls, 2);
  ASSERT_EQ(p->sources.size(), 1u);
  EXPECT_TRUE(p->sources[0].truncated);
  EXPECT_EQ(p->sources[0].chunk.text, text.substr(0, 10 * 5 - 1));  // 10 words
  EXPECT_EQ(p->context_tokens, 12);
  EXPECT_EQ(tok.Count(p->messages[0].content), 12);
}

TEST(ContextPromptTest, CutBacksOffToUtf8CharacterBoundary) {
  ContextTemplate t = BareTemplate();
  t.source_template = "{{text}}";
  {
    FakeTokenizer tok;
    tok.kind = FakeTokenizer::kBytes;
    const std::string text = "éééééééééé";  // 2 bytes each
    // Byte 9 is inside the fifth "é": back off to 8 bytes.
    absl::StatusOr<BuiltPrompt> p =
        BuildPrompt(UserOnly("q"), "", {Chunk("a", text)}, t, 9, tok.Fn(), false);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->sources.size(), 1u);
    EXPECT_TRUE(p->sources[0].truncated);
    EXPECT_EQ(p->sources[0].chunk.text, "éééé");
    EXPECT_TRUE(IsValidUtf8(p->messages[0].content));
  }
  {
    FakeTokenizer tok;
    tok.kind = FakeTokenizer::kBytes;
    const std::string text = "日本日本日本日本";  // 3 bytes each
    absl::StatusOr<BuiltPrompt> p =
        BuildPrompt(UserOnly("q"), "", {Chunk("a", text)}, t, 10, tok.Fn(), false);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_EQ(p->sources.size(), 1u);
    EXPECT_EQ(p->sources[0].chunk.text, "日本日");
    EXPECT_TRUE(IsValidUtf8(p->sources[0].chunk.text));
  }
  {
    // 8 bytes fit, but backing off to "日本" leaves 6 tokens: dropped.
    FakeTokenizer tok;
    tok.kind = FakeTokenizer::kBytes;
    absl::StatusOr<BuiltPrompt> p =
        BuildPrompt(UserOnly("q"), "", {Chunk("a", "日本日本日本日本")}, t, 8, tok.Fn(), false);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(p->sources.empty());
    EXPECT_EQ(p->dropped_sources, 1);
  }
}

TEST(ContextPromptTest, TokenEndsErrorsPassThrough) {
  TokenEndsFn failing =
      [](const std::vector<std::string>&) -> absl::StatusOr<std::vector<std::vector<int>>> {
    return absl::UnavailableError("inference down");
  };
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", {Chunk("a", "x")}, ContextTemplate(), 100, failing, false);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kUnavailable);

  TokenEndsFn wrong_shape =
      [](const std::vector<std::string>&) -> absl::StatusOr<std::vector<std::vector<int>>> {
    return std::vector<std::vector<int>>{{1}};
  };
  p = BuildPrompt(UserOnly("q"), "", {Chunk("a", "x")}, ContextTemplate(), 100, wrong_shape, false);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInternal);
}

TEST(ContextPromptTest, SystemPlacementAppendsToExistingSystemMessage) {
  std::vector<Message> conv = {{"system", "Be brief.", "", ""}, {"user", "q", "", ""}};
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(conv, "Arm prompt.", {Chunk("a", "Alpha")}, BareTemplate(), -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].content, "Be brief.\n\n[1] Alpha");  // no arm prompt
  EXPECT_EQ(p->messages[1].content, "q");
}

TEST(ContextPromptTest, SystemPlacementCreatesOrExtendsArmSystemPrompt) {
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "", {Chunk("a", "Alpha")}, BareTemplate(), -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].role, "system");
  EXPECT_EQ(p->messages[0].content, "[1] Alpha");

  p = BuildPrompt(UserOnly("q"), "You help.", {Chunk("a", "Alpha")}, BareTemplate(), -1, nullptr,
                  false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].content, "You help.\n\n[1] Alpha");
}

TEST(ContextPromptTest, SystemPromptAddedOnlyWhenConversationHasNone) {
  // An arm without retrieval: no chunks.
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "You help.", {}, ContextTemplate(), -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].role, "system");
  EXPECT_EQ(p->messages[0].content, "You help.");

  std::vector<Message> conv = {{"user", "q1", "", ""},
                               {"assistant", "a1", "", ""},
                               {"system", "Mine.", "", ""},
                               {"user", "q2", "", ""}};
  p = BuildPrompt(conv, "You help.", {}, ContextTemplate(), -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 4u);
  EXPECT_EQ(p->messages[0].content, "q1");
  EXPECT_EQ(p->messages[2].content, "Mine.");
}

TEST(ContextPromptTest, UserPlacementPrependsToLastUserMessage) {
  ContextTemplate t = BareTemplate();
  t.placement = ContextPlacement::kUser;
  std::vector<Message> conv = {{"system", "Sys.", "", ""},
                               {"user", "first", "", ""},
                               {"assistant", "answer", "", ""},
                               {"user", "second", "", ""}};
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(conv, "", {Chunk("a", "Alpha")}, t, -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 4u);
  EXPECT_EQ(p->messages[0].content, "Sys.");
  EXPECT_EQ(p->messages[1].content, "first");
  EXPECT_EQ(p->messages[3].content, "[1] Alpha\n\nsecond");
}

TEST(ContextPromptTest, RejectsEmptyConversationAndUserPlacementWithoutUser) {
  absl::StatusOr<BuiltPrompt> p = BuildPrompt({}, "", {}, ContextTemplate(), -1, nullptr, false);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);

  ContextTemplate t;
  t.placement = ContextPlacement::kUser;
  p = BuildPrompt({{"system", "Sys.", "", ""}}, "", {Chunk("a", "x")}, t, -1, nullptr, false);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ContextPromptTest, MissingContextNoteGoesWhereContextWould) {
  ContextTemplate t;
  t.missing_context_note = "Search is unavailable; answer from general knowledge.";
  absl::StatusOr<BuiltPrompt> p =
      BuildPrompt(UserOnly("q"), "You help.", {}, t, -1, nullptr, /*context_missing=*/true);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 2u);
  EXPECT_EQ(p->messages[0].content,
            "You help.\n\nSearch is unavailable; answer from general knowledge.");
  EXPECT_TRUE(p->sources.empty());

  t.placement = ContextPlacement::kUser;
  p = BuildPrompt(UserOnly("q"), "", {}, t, -1, nullptr, true);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->messages.size(), 1u);
  EXPECT_EQ(p->messages[0].content, "Search is unavailable; answer from general knowledge.\n\nq");

  // Not missing, or no note: unchanged.
  p = BuildPrompt(UserOnly("q"), "", {}, t, -1, nullptr, false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->messages[0].content, "q");
  t.missing_context_note.clear();
  p = BuildPrompt(UserOnly("q"), "", {}, t, -1, nullptr, true);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->messages[0].content, "q");
}

TEST(ContextPromptTest, RetrievalQueryJoinsLastUserMessagesNewestFirst) {
  std::vector<Message> conv = {{"system", "Sys.", "", ""},
                               {"user", "How do refunds work?", "", ""},
                               {"assistant", "Within 30 days.", "", ""},
                               {"tool", "{}", "", "call-1"},
                               {"user", "And for gift cards?", "", ""}};
  EXPECT_EQ(RetrievalQuery(conv, 1), "And for gift cards?");
  EXPECT_EQ(RetrievalQuery(conv, 0), "And for gift cards?");
  EXPECT_EQ(RetrievalQuery(conv, 2), "And for gift cards?\nHow do refunds work?");
  EXPECT_EQ(RetrievalQuery(conv, 5), "And for gift cards?\nHow do refunds work?");
  EXPECT_EQ(RetrievalQuery({{"system", "Sys.", "", ""}}, 1), "");
}

TEST(ContextPromptTest, CitedSourcesFindsSingleAndGroupedMarkers) {
  std::vector<PromptSource> sources(4);
  for (int i = 0; i < 4; ++i) sources[i].citation_id = std::to_string(i + 1);
  EXPECT_THAT(CitedSources("Refunds take 30 days [1]. Gift cards [3][10].", sources),
              ElementsAre(true, false, true, false));
  EXPECT_THAT(CitedSources("See [2, 4].", sources), ElementsAre(false, true, false, true));
  EXPECT_THAT(CitedSources("No citations [x] here [1", sources),
              ElementsAre(false, false, false, false));
}

TEST(ContextPromptTest, StripCitationsRemovesMarkersAndOneSpaceBefore) {
  EXPECT_EQ(StripCitations("See [1] and [2][3]. Also [1, 2]."), "See and. Also.");
  EXPECT_EQ(StripCitations("Keep [a] and x[10"), "Keep [a] and x[10");
  EXPECT_EQ(StripCitations("[12] first.  Two spaces [3]"), " first.  Two spaces");
}

}  // namespace
}  // namespace switchyard::router
