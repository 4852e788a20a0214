// Context prompts for RAG arms: turns a conversation plus retrieved chunks into
// the messages sent to the model. Chunks become numbered sources through the
// arm's templates (switchyard.v1.ContextPrompt), are fitted to a token budget
// measured in the model's tokenizer, and are placed in the system message or
// the last user message. Also: the retrieval query of a conversation and the
// citation helpers applied to answers.
//
// Plain C++: the router's gRPC layer translates protos to these structs.
// Thread-safety: every function is pure and may be called concurrently;
// BuildPrompt calls the given TokenEndsFn on the calling thread.
#ifndef SWITCHYARD_SERVICES_ROUTER_CONTEXT_PROMPT_H_
#define SWITCHYARD_SERVICES_ROUTER_CONTEXT_PROMPT_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::router {

// One chat message; role is "system", "user", "assistant" or "tool".
struct Message {
  std::string role;
  std::string content;
  std::string name;
  std::string tool_call_id;
};

// One search hit. Lists of chunks are ordered best first.
struct RetrievedChunk {
  std::string collection;  // "collections/handbook"
  std::string document_id;
  int position = 0;
  std::string chunk_id;  // "{document_id}#{position}"
  std::string text;
  double score = 0;
  std::map<std::string, std::string> metadata;
};

enum class ContextPlacement { kSystem, kUser };

inline constexpr char kDefaultContextTemplate[] =
    "Answer using the numbered sources below and cite them as [n]. If they do not contain the "
    "answer, say so.\n\n{{sources}}";
inline constexpr char kDefaultSourceTemplate[] = "[{{citation}}] {{text}}";

// How chunks are rendered and where the result goes. Placeholders are
// substituted in one pass: text substituted in is never scanned again.
struct ContextTemplate {
  std::string context_template;  // empty -> kDefaultContextTemplate
  std::string source_template;   // empty -> kDefaultSourceTemplate
  std::string separator;         // between rendered sources; empty -> "\n\n"
  ContextPlacement placement = ContextPlacement::kSystem;
  // Placed verbatim where the context would go when context is missing;
  // empty = add nothing.
  std::string missing_context_note;
};

// Checks the templates (empty ones mean the defaults, which are valid).
// context_template allows only {{sources}} and must contain it;
// source_template allows {{citation}}, {{text}}, {{document_id}} and
// {{metadata.KEY}} (KEY non-empty; a key the chunk lacks renders as "").
// Returns INVALID_ARGUMENT naming the field under `field_prefix` for an
// unknown placeholder, a "{{" never closed, or text (templates, separator,
// note) that is not valid UTF-8, e.g.
// "arms[1].context.source_template: unknown placeholder {{foo}}".
absl::Status ValidateContextTemplate(const ContextTemplate& t, const std::string& field_prefix);

// The search query: the last `query_messages` user messages with content
// (0 or less means 1), newest first, joined with "\n". Empty if there is none.
std::string RetrievalQuery(const std::vector<Message>& conversation, int query_messages);

// Token boundaries of texts in the model's tokenizer: for each text, the byte
// offset where each token ends (strictly ascending; size = token count; last =
// text size; empty for an empty text). Batched so that the caller makes one
// call to the inference service per batch.
using TokenEndsFn = std::function<absl::StatusOr<std::vector<std::vector<int>>>(
    const std::vector<std::string>& texts)>;

// A chunk as placed in the prompt.
struct PromptSource {
  RetrievedChunk chunk;     // chunk.text is the text as placed (possibly cut)
  std::string citation_id;  // "1", "2", ... in prompt order
  bool truncated = false;   // chunk.text was cut to fit the budget
};

struct BuiltPrompt {
  std::vector<Message> messages;      // what the model gets
  std::vector<PromptSource> sources;  // in citation order; dropped chunks absent
  int context_tokens = 0;             // tokens of the rendered context; 0 when not measured
  int dropped_sources = 0;            // chunks left out for the budget
};

// Builds the messages for one generation.
//
// system_prompt: the arm's system message, added first when the conversation
// has none (also for arms without retrieval); empty = none.
// chunks: best first; rendered with source_template (citation = 1-based
// position among kept sources) and joined by the separator into {{sources}}.
// token_budget: most tokens of the rendered context block; < 0 = unlimited
// (every chunk is kept, token_ends is not called and may be empty). Otherwise
// chunks are kept in rank order while the whole rendered context fits; the
// first one that does not fit whole is cut at a token boundary of its text
// (backed off to a UTF-8 character boundary) and marked truncated if at least
// 8 tokens of its text fit, else dropped; all chunks after it are dropped.
// token_ends is called at most twice: once for all candidates, once for the
// cut.
// Placement kSystem: the context block is appended to the first system message
// ("\n\n" between) or becomes a new system message at the front. kUser:
// prepended to the last user message ("\n\n" between).
// With no source kept: if context_missing and t.missing_context_note is
// non-empty, the note goes where the context would; otherwise the conversation
// (plus system prompt) is returned unchanged.
//
// Errors: INVALID_ARGUMENT for an empty conversation, a kUser placement
// without a user message, invalid templates, or a budget without token_ends;
// token_ends errors pass through; INTERNAL when token_ends answers with lists
// of the wrong shape.
absl::StatusOr<BuiltPrompt> BuildPrompt(const std::vector<Message>& conversation,
                                        const std::string& system_prompt,
                                        const std::vector<RetrievedChunk>& chunks,
                                        const ContextTemplate& t, int token_budget,
                                        const TokenEndsFn& token_ends, bool context_missing);

// For each source, whether the answer cites it: "[citation_id]" appears, or the
// id is one of the numbers of a group marker such as "[1, 2]".
std::vector<bool> CitedSources(const std::string& answer, const std::vector<PromptSource>& sources);

// Removes citation markers "[n]", "[n, m]" (digits, commas and spaces after
// commas only) and one space before each, e.g. for answers exported from a
// conversation that has no sources. "See [1] and [2][3]." -> "See and."
std::string StripCitations(const std::string& text);

}  // namespace switchyard::router

#endif  // SWITCHYARD_SERVICES_ROUTER_CONTEXT_PROMPT_H_
