// The JSON Schema subset of json_schema graders (internal to
// services/training; graders.h is the public surface and documents the
// subset): CheckSchema checks a schema's keywords when a grader is validated,
// SchemaAccepts matches a value against a checked schema when it is graded,
// and JsonPayload unwraps a ```json fence around the text to parse.
//
// Every function here is pure and thread-safe; nothing throws.
#ifndef SWITCHYARD_SERVICES_TRAINING_JSON_SCHEMA_CHECK_H_
#define SWITCHYARD_SERVICES_TRAINING_JSON_SCHEMA_CHECK_H_

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace switchyard::training {

// Schemas may nest this deep; bounds every recursion over a schema.
inline constexpr int kMaxSchemaDepth = 32;

// OK when `schema` (at nesting `depth`, 0 for the top) is a boolean or an
// object using only the supported keywords and annotations, each well formed,
// nesting at most kMaxSchemaDepth levels; otherwise INVALID_ARGUMENT naming
// `path` and the keyword.
absl::Status CheckSchema(const nlohmann::json& schema, const std::string& path, int depth);

// Whether `v` matches `schema` (checked by CheckSchema; anything unexpected
// is skipped rather than trusted). Recurses as deep as the schema nests.
bool SchemaAccepts(const nlohmann::json& schema, const nlohmann::json& v);

// The text a json_schema grader parses: the content of the first ``` fenced
// block (its opening fence at the start of a line, an optional "json" tag
// after it) when there is one, trimmed. A fence at the start of a line
// cannot be part of valid JSON, so JSON that merely contains ``` in a string
// is left alone.
absl::string_view JsonPayload(absl::string_view text);

}  // namespace switchyard::training

#endif  // SWITCHYARD_SERVICES_TRAINING_JSON_SCHEMA_CHECK_H_
