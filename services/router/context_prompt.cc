#include "services/router/context_prompt.h"

#include <algorithm>
#include <set>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "shared/core/utf8.h"

namespace switchyard::router {
namespace {

constexpr int kMinCutTokens = 8;  // a cut source keeps at least this many tokens of its text
constexpr char kDefaultSeparator[] = "\n\n";
constexpr char kMetadataPrefix[] = "metadata.";

// A template split into literal text and placeholders.
struct Piece {
  bool placeholder = false;
  absl::string_view text;  // the literal text, or the name between "{{" and "}}"
};

// Splits `tmpl` into pieces. Returns false and sets *unclosed_at to the byte
// offset of the "{{" when a placeholder is never closed.
bool SplitTemplate(absl::string_view tmpl, std::vector<Piece>* pieces, size_t* unclosed_at) {
  size_t i = 0;
  while (i < tmpl.size()) {
    const size_t open = tmpl.find("{{", i);
    if (open == absl::string_view::npos) {
      pieces->push_back({false, tmpl.substr(i)});
      break;
    }
    if (open > i) pieces->push_back({false, tmpl.substr(i, open - i)});
    const size_t close = tmpl.find("}}", open + 2);
    if (close == absl::string_view::npos) {
      *unclosed_at = open;
      return false;
    }
    pieces->push_back({true, tmpl.substr(open + 2, close - open - 2)});
    i = close + 2;
  }
  return true;
}

std::string FieldName(const std::string& prefix, absl::string_view field) {
  return prefix.empty() ? std::string(field) : absl::StrCat(prefix, ".", field);
}

absl::Status CheckTemplate(absl::string_view tmpl, bool is_context, const std::string& field) {
  if (!IsValidUtf8(std::string_view(tmpl.data(), tmpl.size()))) {
    return absl::InvalidArgumentError(field + ": not valid UTF-8");
  }
  std::vector<Piece> pieces;
  size_t unclosed_at = 0;
  if (!SplitTemplate(tmpl, &pieces, &unclosed_at)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: unclosed placeholder at byte %d", field, unclosed_at));
  }
  bool has_sources = false;
  for (const Piece& p : pieces) {
    if (!p.placeholder) continue;
    if (is_context && p.text == "sources") {
      has_sources = true;
      continue;
    }
    if (!is_context) {
      if (p.text == "citation" || p.text == "text" || p.text == "document_id") continue;
      if (absl::StartsWith(p.text, kMetadataPrefix)) {
        if (p.text.size() > sizeof(kMetadataPrefix) - 1) continue;
        return absl::InvalidArgumentError(
            absl::StrCat(field, ": empty metadata key in {{", p.text, "}}"));
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": unknown placeholder {{", p.text, "}}"));
  }
  if (is_context && !has_sources) {
    return absl::InvalidArgumentError(field + ": must contain {{sources}}");
  }
  return absl::OkStatus();
}

// `s`, or `d` when `s` is empty. A view, never a temporary: pieces split from
// it must outlive the call.
absl::string_view OrDefault(const std::string& s, const char* d) {
  return s.empty() ? absl::string_view(d) : absl::string_view(s);
}

// The effective templates, split once. Views point into the ContextTemplate
// or the default constants.
struct Templates {
  std::vector<Piece> context;
  std::vector<Piece> source;
  absl::string_view separator;
};

Templates SplitTemplates(const ContextTemplate& t) {
  Templates out;
  size_t unused = 0;  // validated before
  SplitTemplate(OrDefault(t.context_template, kDefaultContextTemplate), &out.context, &unused);
  SplitTemplate(OrDefault(t.source_template, kDefaultSourceTemplate), &out.source, &unused);
  out.separator = OrDefault(t.separator, kDefaultSeparator);
  return out;
}

// Renders one source; `text` replaces chunk.text (it may be a cut of it).
std::string RenderSource(const Templates& tpl, int citation, const RetrievedChunk& chunk,
                         absl::string_view text) {
  std::string out;
  for (const Piece& p : tpl.source) {
    if (!p.placeholder) {
      absl::StrAppend(&out, p.text);
    } else if (p.text == "citation") {
      absl::StrAppend(&out, citation);
    } else if (p.text == "text") {
      absl::StrAppend(&out, text);
    } else if (p.text == "document_id") {
      out.append(chunk.document_id);
    } else if (absl::StartsWith(p.text, kMetadataPrefix)) {
      auto it = chunk.metadata.find(std::string(p.text.substr(sizeof(kMetadataPrefix) - 1)));
      if (it != chunk.metadata.end()) out.append(it->second);
    }
  }
  return out;
}

// Renders the context block with the first `count` rendered sources.
std::string RenderContext(const Templates& tpl, const std::vector<std::string>& sources,
                          size_t count) {
  const std::string joined = absl::StrJoin(sources.begin(), sources.begin() + count, tpl.separator);
  std::string out;
  for (const Piece& p : tpl.context) out.append(p.placeholder ? joined : std::string(p.text));
  return out;
}

// Calls token_ends once and checks the shape of its answer.
absl::StatusOr<std::vector<std::vector<int>>> MeasureTokens(const TokenEndsFn& token_ends,
                                                            const std::vector<std::string>& texts) {
  absl::StatusOr<std::vector<std::vector<int>>> ends = token_ends(texts);
  if (!ends.ok()) return ends.status();
  if (ends->size() != texts.size()) {
    return absl::InternalError(
        absl::StrFormat("token_ends: %d lists for %d texts", ends->size(), texts.size()));
  }
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int>& e = (*ends)[i];
    const int size = static_cast<int>(texts[i].size());
    bool ok = e.empty() ? size == 0 : e.back() == size;
    // Non-decreasing: a token that ends inside a character shares the end of
    // the token that completes it.
    for (size_t j = 0; ok && j < e.size(); ++j) ok = e[j] >= (j == 0 ? 0 : e[j - 1]);
    if (!ok) return absl::InternalError(absl::StrFormat("token_ends: bad list for text %d", i));
  }
  return ends;
}

// Moves a cut at byte `cut` of `text` back to the start of a UTF-8 character.
size_t BackOffToCharBoundary(absl::string_view text, size_t cut) {
  while (cut > 0 && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) {
    --cut;
  }
  return cut;
}

// What fits the budget: `whole` chunks in rank order, then maybe a cut of the next.
struct Fit {
  size_t whole = 0;
  bool has_cut = false;
  size_t cut_bytes = 0;  // length of the cut text of chunks[whole]
  int context_tokens = 0;
};

absl::StatusOr<Fit> FitToBudget(const Templates& tpl, const std::vector<RetrievedChunk>& chunks,
                                const std::vector<std::string>& rendered, int budget,
                                const TokenEndsFn& token_ends) {
  const size_t n = chunks.size();
  Fit fit;
  fit.whole = n;
  if (budget < 0 || n == 0) return fit;  // unlimited, or nothing to measure
  if (!token_ends) return absl::InvalidArgumentError("a token budget needs token_ends");
  // Call 1: the context with the first 1..n sources (exact, at the price of
  // O(n^2) bytes for the few chunks an arm retrieves), then each chunk's text
  // alone for the token boundaries a cut may use.
  std::vector<std::string> texts;
  for (size_t k = 1; k <= n; ++k) texts.push_back(RenderContext(tpl, rendered, k));
  for (const RetrievedChunk& c : chunks) texts.push_back(c.text);
  absl::StatusOr<std::vector<std::vector<int>>> ends = MeasureTokens(token_ends, texts);
  if (!ends.ok()) return ends.status();

  fit.whole = 0;
  const auto tokens = [](const std::vector<int>& e) { return static_cast<int>(e.size()); };
  while (fit.whole < n && tokens((*ends)[fit.whole]) <= budget) {
    fit.context_tokens = tokens((*ends)[fit.whole]);
    ++fit.whole;
  }
  if (fit.whole == n) return fit;

  // Chunk `j` does not fit whole. Everything but its text costs about
  // `overhead` tokens, so about `most` tokens of its text fit.
  const size_t j = fit.whole;
  const std::string& text = chunks[j].text;
  const std::vector<int>& text_ends = (*ends)[n + j];
  const int overhead = std::max(0, tokens((*ends)[j]) - tokens(text_ends));
  const int most = std::min(budget - overhead, tokens(text_ends) - 1);
  // Tokens merge across the template's edges, so the estimate may be off:
  // call 2 measures a few cut lengths (most, most-1, most-2, most-4, ...) and
  // the longest that fits wins.
  std::vector<size_t> cuts;  // in bytes, descending
  for (int back = 0; most - back >= kMinCutTokens; back = back == 0 ? 1 : back * 2) {
    const size_t cut = BackOffToCharBoundary(text, text_ends[most - back - 1]);
    const auto kept = std::upper_bound(text_ends.begin(), text_ends.end(), cut) - text_ends.begin();
    if (kept < kMinCutTokens || (!cuts.empty() && cuts.back() == cut)) continue;
    cuts.push_back(cut);
  }
  if (cuts.empty()) return fit;
  std::vector<std::string> sources(rendered.begin(), rendered.begin() + j + 1);
  texts.clear();
  for (size_t cut : cuts) {
    sources[j] = RenderSource(tpl, j + 1, chunks[j], absl::string_view(text).substr(0, cut));
    texts.push_back(RenderContext(tpl, sources, j + 1));
  }
  ends = MeasureTokens(token_ends, texts);
  if (!ends.ok()) return ends.status();
  for (size_t i = 0; i < cuts.size(); ++i) {
    if (tokens((*ends)[i]) > budget) continue;
    fit.has_cut = true;
    fit.cut_bytes = cuts[i];
    fit.context_tokens = tokens((*ends)[i]);
    break;
  }
  return fit;
}

int LastIndexOfRole(const std::vector<Message>& messages, absl::string_view role) {
  for (int i = static_cast<int>(messages.size()) - 1; i >= 0; --i) {
    if (messages[i].role == role) return i;
  }
  return -1;
}

std::string JoinParagraphs(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (b.empty()) return a;
  return absl::StrCat(a, "\n\n", b);
}

void PlaceBlock(const std::string& block, ContextPlacement placement,
                std::vector<Message>* messages) {
  if (placement == ContextPlacement::kUser) {
    Message& user = (*messages)[LastIndexOfRole(*messages, "user")];
    user.content = JoinParagraphs(block, user.content);
    return;
  }
  for (Message& m : *messages) {
    if (m.role == "system") {
      m.content = JoinParagraphs(m.content, block);
      return;
    }
  }
  messages->insert(messages->begin(), Message{"system", block, "", ""});
}

// If a citation marker ("[1]", "[1, 2]") starts at text[i], appends its
// numbers to *numbers (when given) and returns its length; else returns 0.
size_t MatchCitation(absl::string_view text, size_t i, std::vector<absl::string_view>* numbers) {
  if (i >= text.size() || text[i] != '[') return 0;
  std::vector<absl::string_view> found;
  size_t j = i + 1;
  while (true) {
    const size_t start = j;
    while (j < text.size() && absl::ascii_isdigit(static_cast<unsigned char>(text[j]))) ++j;
    if (j == start) return 0;
    found.push_back(text.substr(start, j - start));
    if (j < text.size() && text[j] == ']') break;
    if (j >= text.size() || text[j] != ',') return 0;
    ++j;
    while (j < text.size() && text[j] == ' ') ++j;
  }
  if (numbers != nullptr) numbers->insert(numbers->end(), found.begin(), found.end());
  return j + 1 - i;
}

}  // namespace

absl::Status ValidateContextTemplate(const ContextTemplate& t, const std::string& field_prefix) {
  absl::Status s = CheckTemplate(OrDefault(t.context_template, kDefaultContextTemplate),
                                 /*is_context=*/true, FieldName(field_prefix, "context_template"));
  if (!s.ok()) return s;
  s = CheckTemplate(OrDefault(t.source_template, kDefaultSourceTemplate), /*is_context=*/false,
                    FieldName(field_prefix, "source_template"));
  if (!s.ok()) return s;
  for (const auto& [field, text] :
       {std::pair<const char*, const std::string*>{"separator", &t.separator},
        {"missing_context_note", &t.missing_context_note}}) {
    if (!IsValidUtf8(*text)) {
      return absl::InvalidArgumentError(FieldName(field_prefix, field) + ": not valid UTF-8");
    }
  }
  return absl::OkStatus();
}

std::string RetrievalQuery(const std::vector<Message>& conversation, int query_messages) {
  const size_t wanted = query_messages > 0 ? static_cast<size_t>(query_messages) : 1;
  std::vector<absl::string_view> parts;
  for (auto it = conversation.rbegin(); it != conversation.rend() && parts.size() < wanted; ++it) {
    if (it->role == "user" && !it->content.empty()) parts.push_back(it->content);
  }
  return absl::StrJoin(parts, "\n");
}

absl::StatusOr<BuiltPrompt> BuildPrompt(const std::vector<Message>& conversation,
                                        const std::string& system_prompt,
                                        const std::vector<RetrievedChunk>& chunks,
                                        const ContextTemplate& t, int token_budget,
                                        const TokenEndsFn& token_ends, bool context_missing) {
  if (conversation.empty()) return absl::InvalidArgumentError("conversation is empty");
  if (t.placement == ContextPlacement::kUser && LastIndexOfRole(conversation, "user") < 0) {
    return absl::InvalidArgumentError("context placement USER needs a user message");
  }
  if (absl::Status s = ValidateContextTemplate(t, "context"); !s.ok()) return s;
  const Templates tpl = SplitTemplates(t);

  BuiltPrompt built;
  built.messages = conversation;
  if (!system_prompt.empty() && LastIndexOfRole(conversation, "system") < 0) {
    built.messages.insert(built.messages.begin(), Message{"system", system_prompt, "", ""});
  }

  std::vector<std::string> rendered;
  for (size_t i = 0; i < chunks.size(); ++i) {
    rendered.push_back(RenderSource(tpl, i + 1, chunks[i], chunks[i].text));
  }
  absl::StatusOr<Fit> f = FitToBudget(tpl, chunks, rendered, token_budget, token_ends);
  if (!f.ok()) return f.status();
  const Fit& fit = *f;
  rendered.resize(fit.whole);
  for (size_t i = 0; i < fit.whole; ++i) {
    built.sources.push_back(PromptSource{chunks[i], std::to_string(i + 1), false});
  }
  if (fit.has_cut) {
    PromptSource cut{chunks[fit.whole], std::to_string(fit.whole + 1), true};
    cut.chunk.text.resize(fit.cut_bytes);
    rendered.push_back(RenderSource(tpl, fit.whole + 1, cut.chunk, cut.chunk.text));
    built.sources.push_back(std::move(cut));
  }
  built.context_tokens = fit.context_tokens;
  built.dropped_sources = static_cast<int>(chunks.size() - built.sources.size());

  std::string block;
  if (!built.sources.empty()) {
    block = RenderContext(tpl, rendered, rendered.size());
  } else if (context_missing) {
    block = t.missing_context_note;
  }
  if (!block.empty()) PlaceBlock(block, t.placement, &built.messages);
  return built;
}

std::vector<bool> CitedSources(const std::string& answer,
                               const std::vector<PromptSource>& sources) {
  std::vector<absl::string_view> numbers;
  for (size_t i = 0; i < answer.size(); ++i) {
    const size_t len = MatchCitation(answer, i, &numbers);
    if (len > 0) i += len - 1;
  }
  const std::set<absl::string_view> cited(numbers.begin(), numbers.end());
  std::vector<bool> out;
  for (const PromptSource& s : sources) out.push_back(cited.count(s.citation_id) > 0);
  return out;
}

std::string StripCitations(const std::string& text) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = MatchCitation(text, i, nullptr);
    if (len == 0) {
      out.push_back(text[i++]);
      continue;
    }
    if (!out.empty() && out.back() == ' ') out.pop_back();
    i += len;
  }
  return out;
}

}  // namespace switchyard::router
