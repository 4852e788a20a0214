// Graders for reinforcement fine-tuning: the plain C++ form of the `Grader`
// message in protos/switchyard/v1/training.proto, its two JSON forms, its
// validation, and Grade(), which maps one generated sample and its dataset
// example to a reward in [0, 1].
//
// Kinds: string_check (0 or 1), text_similarity (token F1, ROUGE-L, BLEU,
// fuzzy), json_schema (0, 0.5 or 1) and multi (the weighted mean of up to 4
// levels of sub-graders).
//
// Templates. The input and reference fields are templates: `{{sample.output_text}}`
// is the generated completion, `{{item.FIELD}}` a field of the dataset example,
// with a dotted path for nesting (`{{item.meta.answer}}`) and numeric segments
// indexing arrays (`{{item.choices.0}}`). Spaces inside the braces are allowed.
// Substitution is a single pass: text substituted into a template is never
// expanded again. String values are substituted as they are; other values as
// their compact JSON text, an integral number without a fraction (`42`, not
// `42.0`: protobuf's Struct carries every number as a double).
//
// Names. Every grader in a tree has a name, used as the key of
// GradeResult::grader_rewards and GradeResult::rendered. An empty name becomes
// the kind's name ("string_check", "text_similarity", "json_schema", "multi");
// when that is already taken, in pre-order (a grader before its sub-graders,
// sub-graders in order), by an explicit name or an earlier grader, it gets
// "_2", "_3", ... appended ("string_check_2"). Explicit names must be unique.
//
// Every function here is pure and thread-safe. Inputs are untrusted: any JSON
// value and any byte string is accepted, nothing throws, and bad input is an
// INVALID_ARGUMENT status naming the field.
#ifndef SWITCHYARD_SERVICES_TRAINING_GRADERS_H_
#define SWITCHYARD_SERVICES_TRAINING_GRADERS_H_

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace switchyard::training {

enum class GraderKind { kStringCheck, kTextSimilarity, kJsonSchema, kMulti };

enum class StringCheckOperation {
  kEq,           // input equals reference
  kNe,           // input differs from reference
  kContains,     // input contains reference
  kNotContains,  // input does not contain reference
  // The reference, a regular expression in ECMAScript syntax, matches
  // somewhere in the input. PCRE2 runs it, with the options that make its
  // syntax ECMAScript's where the two differ, matching by code point.
  kRegex,
};

enum class TextSimilarityMetric { kTokenF1, kRougeL, kBleu, kFuzzy };

// Inputs longer than this many bytes are cut (at a character boundary) before
// a regular expression searches them, bounding the cost of backtracking.
inline constexpr size_t kRegexMaxInputBytes = 20000;

// Texts longer than this many code points are cut before the O(n m)
// Levenshtein distance of the fuzzy metric (~1.7e7 steps at most).
inline constexpr size_t kFuzzyMaxCodePoints = 4096;

// A template may render to at most this many bytes; more is an error (a
// template repeating {{sample.output_text}} could otherwise multiply a large
// output into gigabytes).
inline constexpr size_t kMaxRenderedBytes = size_t{1} << 20;

// Sub-graders of a multi grader may nest this deep; the root is level 1.
inline constexpr int kMaxGraderDepth = 4;

// Scores 1 when the check passes, else 0.
struct StringCheckSpec {
  std::string input;      // template; empty = "{{sample.output_text}}"
  std::string reference;  // template, e.g. "{{item.answer}}"
  StringCheckOperation operation = StringCheckOperation::kEq;
  // Compare after Unicode simple case folding. For kRegex the pattern matches
  // case-insensitively instead.
  bool ignore_case = false;
  // Trim leading and trailing ASCII whitespace of both sides first; for
  // kRegex only of the input (a pattern is used as written).
  bool trim = false;
};

// Scores the similarity of input and reference, 0 to 1.
struct TextSimilaritySpec {
  std::string input;      // template; empty = "{{sample.output_text}}"
  std::string reference;  // template
  TextSimilarityMetric metric = TextSimilarityMetric::kTokenF1;
  // Case-fold both sides first (Unicode simple case folding). token_f1,
  // rouge_l and bleu compare SQuAD-normalised tokens, which lower ASCII
  // letters either way.
  bool ignore_case = false;
  // When > 0 the score becomes 1 at or above this similarity, else 0. In [0, 1].
  double pass_threshold = 0;
};

// Scores 1 when the input parses as JSON and matches the schema, 0 when it
// does not parse, and 0 (0.5 with partial_credit) when it parses but does not
// match. The input is trimmed, and the content of its first ``` fenced block
// (an optional "json" tag after the opening fence) is taken when it has one.
struct JsonSchemaSpec {
  std::string input;  // template; empty = "{{sample.output_text}}"
  // A JSON Schema (draft 2020-12) using only these keywords: type (a name or
  // an array of names: null, boolean, object, array, number, integer,
  // string), properties, required, additionalProperties (boolean or schema),
  // items (a schema), minItems, maxItems, enum, const, minimum, maximum,
  // exclusiveMinimum, exclusiveMaximum (numbers), minLength, maxLength (code
  // points), pattern (searched, like string_check's regex); and the
  // annotations title, description, default, examples, $schema, $id and
  // $comment, which do not affect the result. `true` and `false` are schemas
  // too. Any other keyword is an error, not silently ignored.
  nlohmann::json schema = nlohmann::json::object();
  bool partial_credit = false;
};

struct WeightedGraderSpec;

// Weighted mean of the sub-graders' scores: sum(w_i * s_i) / sum(w_i).
struct MultiSpec {
  std::vector<WeightedGraderSpec> graders;  // at least one
};

// A grader; the fields of `kind` are used, the others ignored.
struct GraderSpec {
  std::string name;  // see "Names" above
  GraderKind kind = GraderKind::kStringCheck;
  StringCheckSpec string_check;
  TextSimilaritySpec text_similarity;
  JsonSchemaSpec json_schema;
  MultiSpec multi;
};

struct WeightedGraderSpec {
  GraderSpec grader;
  // Non-negative; weights need not sum to 1. A JSON entry without "weight"
  // gets 1 (the proto's plain double cannot tell absent from 0).
  double weight = 1;
};

bool operator==(const GraderSpec& a, const GraderSpec& b);
bool operator!=(const GraderSpec& a, const GraderSpec& b);
bool operator==(const WeightedGraderSpec& a, const WeightedGraderSpec& b);
bool operator!=(const WeightedGraderSpec& a, const WeightedGraderSpec& b);

// "string_check", "text_similarity", "json_schema", "multi".
const char* GraderKindName(GraderKind kind);

// Parses either JSON form of a grader:
//   * the proto JSON mapping: {"name": "x", "string_check": {"input": "...",
//     "reference": "{{item.answer}}", "operation": "eq", "ignore_case": true,
//     "trim": true}}, likewise "text_similarity" (metric, pass_threshold),
//     "json_schema" (schema, partial_credit) and "multi" ({"graders":
//     [{"grader": {...}, "weight": 2}]}). Field names may also be written in
//     lowerCamelCase (ignoreCase), enum values as the short name ("eq",
//     "rouge_l", any case), the full proto name ("STRING_CHECK_OPERATION_EQ")
//     or the number, and null means the default, as protobuf's JSON parser
//     accepts them.
//   * OpenAI's fine-tuning grader form, recognised by its "type" key:
//     {"type": "string_check", "name", "input", "reference", "operation":
//     eq | ne | like (contains) | ilike (contains, ignoring case)};
//     {"type": "text_similarity", "name", "input", "reference",
//     "evaluation_metric": fuzzy_match | bleu | rouge_l | token_f1,
//     "pass_threshold"} (other metrics are named as unsupported); and
//     {"type": "multi", "name", "graders": {"key": {...}, ...},
//     "calculate_output": "..."}, where each sub-grader is named by its key
//     (its own "name", if any, is ignored) and calculate_output must be a
//     weighted sum of keys, "a + b", "0.3 * a + 0.7 * b" (a coefficient may
//     also follow the key, as "a * 0.3" or "a / 2"), optionally in
//     parentheses divided by a constant, "(a + b) / 2". Keys it does not
//     name get weight 0. The reward is the weighted mean, so only the
//     relative weights matter: "a + b" scores (a + b) / 2, not a + b.
// Sub-graders may use either form. Returns INVALID_ARGUMENT naming the full
// path below `field` for an unknown key, a wrong type, an unknown enum value
// ("grader.multi.graders[1].grader.string_check.operation: unknown value
// \"equals\" (use eq, ne, contains, not_contains, regex)") or nesting deeper
// than kMaxGraderDepth. Checks only the form; see ValidateGrader.
absl::StatusOr<GraderSpec> GraderFromJson(const nlohmann::json& j,
                                          const std::string& field = "grader");

// The proto JSON mapping of `spec`, snake_case keys and short lower-case enum
// names, every field written; GraderFromJson reads it back equal to `spec`.
nlohmann::json GraderToJson(const GraderSpec& spec);

// OK when `spec` can grade: every template well formed (only
// {{sample.output_text}} and {{item.PATH}}, every "{{" closed), a regex
// reference without templates compiles, pass_threshold in [0, 1], a multi
// grader has at least one sub-grader and weights >= 0 with a positive sum,
// nesting at most kMaxGraderDepth levels, the schema uses only the
// supported keywords with values of the right types, explicit names unique.
// Otherwise INVALID_ARGUMENT naming the field below `field`
// ("grader.multi.graders[0].grader.string_check.reference: unclosed \"{{\"").
absl::Status ValidateGrader(const GraderSpec& spec, const std::string& field = "grader");

// OK when every {{item.PATH}} in the templates of `spec` resolves in `item`
// (one dataset example), so a job can reject bad data while validating, line
// by line. Otherwise INVALID_ARGUMENT naming the template field and the path
// ("grader.string_check.reference: {{item.answer}}: the example has no field
// \"answer\""). Also returns ValidateGrader's template errors.
absl::Status CheckGraderItem(const GraderSpec& spec, const nlohmann::json& item);

struct GradeResult {
  double reward = 0;  // of the root grader, 0 to 1
  // Reward of every grader in the tree, the root included, by name.
  std::map<std::string, double> grader_rewards;
  // Templates after substitution, keyed "{name}.input" and
  // "{name}.reference" (json_schema graders have no reference). For display:
  // invalid UTF-8 is replaced by U+FFFD, while grading sees the bytes.
  std::map<std::string, std::string> rendered;
};

// Grades `output_text` (the generated completion, any bytes) for the dataset
// example `item`. INVALID_ARGUMENT when ValidateGrader fails, when an
// {{item.PATH}} does not resolve in `item` (as CheckGraderItem), when a
// template renders to more than kMaxRenderedBytes, or when a regex rendered
// from a template does not compile. A regex search that
// exceeds PCRE2's match limit (a pathological pattern) counts as no match.
absl::StatusOr<GradeResult> Grade(const GraderSpec& spec, const std::string& output_text,
                                  const nlohmann::json& item);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_GRADERS_H_
