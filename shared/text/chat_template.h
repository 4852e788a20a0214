// ChatTemplate: a model's `chat_template` (Jinja2 source from
// tokenizer_config.json) rendered the way Hugging Face transformers renders it:
// jinja2 with trim_blocks and lstrip_blocks, loop controls, `raise_exception`,
// and a `tojson` that prints like Python's json.dumps(ensure_ascii=False).
//
// The language is the subset chat templates use: text, {{ }}, {% %} and {# #}
// with `-` whitespace control; for (loop.*, tuple targets, `if` filter, else,
// break/continue), if/elif/else, set (also namespace() and `ns.attr`, and
// block set), macros with defaults and keyword arguments; literals, arithmetic,
// `~`, comparisons, `in`, `and/or/not`, conditional expressions, attribute and
// item access, slicing; common filters, tests, and str/dict methods. Undefined
// names behave as jinja2's default Undefined: falsy, print as empty, and
// attribute access on them yields undefined. Variables are JSON values
// (nlohmann::ordered_json, so objects keep their key order for `tojson` and
// `items()`).
//
// Thread-safe after Parse: Render may run concurrently.
#ifndef SWITCHYARD_SHARED_TEXT_CHAT_TEMPLATE_H_
#define SWITCHYARD_SHARED_TEXT_CHAT_TEMPLATE_H_

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::text {

class ChatTemplate {
 public:
  // Parses template source; a syntax error is InvalidArgument naming the line.
  static absl::StatusOr<std::unique_ptr<ChatTemplate>> Parse(absl::string_view source);
  ~ChatTemplate();

  // Renders with `context` (a JSON object: messages, add_generation_prompt,
  // bos_token, tools, ...) as the template's variables. `raise_exception(msg)`
  // gives InvalidArgument with msg; other evaluation errors are
  // InvalidArgument naming the line.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  // Same, for a context with sorted keys (object key order is then alphabetical).
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

  struct Program;

 private:
  explicit ChatTemplate(std::unique_ptr<Program> program);
  std::unique_ptr<Program> program_;
};

// The template source in a tokenizer_config.json: `chat_template` as a string,
// or the list form [{"name": ..., "template": ...}] from which `name` is taken.
// NotFound when there is no `chat_template` or no template called `name`.
absl::StatusOr<std::string> ChatTemplateFromConfig(const nlohmann::json& config,
                                                   const std::string& name = "default");

}  // namespace switchyard::text

#endif  // SWITCHYARD_SHARED_TEXT_CHAT_TEMPLATE_H_
