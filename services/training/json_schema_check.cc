#include "services/training/json_schema_check.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "services/training/grader_text.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

constexpr const char* kSchemaTypes[] = {"null",   "boolean", "object", "array",
                                        "number", "integer", "string"};
constexpr const char* kSchemaKeywords[] = {"type",
                                           "properties",
                                           "required",
                                           "additionalProperties",
                                           "items",
                                           "minItems",
                                           "maxItems",
                                           "enum",
                                           "const",
                                           "minimum",
                                           "maximum",
                                           "exclusiveMinimum",
                                           "exclusiveMaximum",
                                           "minLength",
                                           "maxLength",
                                           "pattern"};
constexpr const char* kSchemaAnnotations[] = {"title",   "description", "default", "examples",
                                              "$schema", "$id",         "$comment"};

template <size_t N>
bool OneOf(const std::string& s, const char* const (&names)[N]) {
  return std::any_of(std::begin(names), std::end(names), [&](const char* n) { return s == n; });
}

// JSON Schema's integer: a number with no fraction, 1.0 included.
bool IsInteger(const json& v) {
  if (v.is_number_integer()) return true;  // signed and unsigned
  if (!v.is_number_float()) return false;
  const double d = v.get<double>();
  return std::isfinite(d) && d == std::floor(d);
}

bool IsNonNegativeInteger(const json& v) { return IsInteger(v) && v.get<double>() >= 0; }

bool HasType(const json& v, const std::string& type) {
  if (type == "null") return v.is_null();
  if (type == "boolean") return v.is_boolean();
  if (type == "object") return v.is_object();
  if (type == "array") return v.is_array();
  if (type == "number") return v.is_number();
  if (type == "integer") return IsInteger(v);
  if (type == "string") return v.is_string();
  return false;
}

double NumberOr(const json& v, double fallback) {
  return v.is_number() ? v.get<double>() : fallback;
}

}  // namespace

absl::Status CheckSchema(const json& schema, const std::string& path, int depth) {
  if (schema.is_boolean()) return absl::OkStatus();
  if (!schema.is_object()) {
    return Invalid(path, absl::StrCat("must be an object or a boolean, got ", schema.type_name()));
  }
  if (depth >= kMaxSchemaDepth) {
    return Invalid(path, absl::StrCat("schemas nest deeper than ", kMaxSchemaDepth, " levels"));
  }
  for (auto it = schema.begin(); it != schema.end(); ++it) {
    const std::string& key = it.key();
    const json& v = it.value();
    const std::string at = absl::StrCat(path, ".", key);
    if (key == "type") {
      std::vector<const json*> names;
      if (v.is_array() && !v.empty()) {
        for (const json& n : v) names.push_back(&n);
      } else {
        names.push_back(&v);
      }
      for (const json* n : names) {
        if (!n->is_string()) {
          return Invalid(at, "must be a type name or a non-empty array of type names");
        }
        if (!OneOf(n->get<std::string>(), kSchemaTypes)) {
          return Invalid(at, absl::StrCat("unknown type \"", n->get<std::string>(),
                                          "\" (use null, boolean, object, array, number, "
                                          "integer, string)"));
        }
      }
    } else if (key == "properties") {
      if (!v.is_object()) return Invalid(at, "must be an object of schemas");
      for (auto p = v.begin(); p != v.end(); ++p) {
        SY_RETURN_IF_ERROR(CheckSchema(p.value(), absl::StrCat(at, ".", p.key()), depth + 1));
      }
    } else if (key == "required") {
      if (!v.is_array() ||
          !std::all_of(v.begin(), v.end(), [](const json& n) { return n.is_string(); })) {
        return Invalid(at, "must be an array of property names");
      }
    } else if (key == "additionalProperties") {
      SY_RETURN_IF_ERROR(CheckSchema(v, at, depth + 1));
    } else if (key == "items") {
      if (v.is_array()) {
        return Invalid(at, "must be a schema; the tuple form (prefixItems) is not supported");
      }
      SY_RETURN_IF_ERROR(CheckSchema(v, at, depth + 1));
    } else if (key == "enum") {
      if (!v.is_array() || v.empty()) return Invalid(at, "must be a non-empty array");
    } else if (key == "minimum" || key == "maximum" || key == "exclusiveMinimum" ||
               key == "exclusiveMaximum") {
      if (!v.is_number()) {
        return Invalid(at, absl::StrCat("must be a number, got ", v.type_name()));
      }
    } else if (key == "minLength" || key == "maxLength" || key == "minItems" || key == "maxItems") {
      if (!IsNonNegativeInteger(v)) return Invalid(at, "must be a non-negative integer");
    } else if (key == "pattern") {
      if (!v.is_string()) return Invalid(at, absl::StrCat("must be a string, got ", v.type_name()));
      SY_RETURN_IF_ERROR(Regex::Compile(v.get<std::string>(), false, at).status());
    } else if (!OneOf(key, kSchemaKeywords) && !OneOf(key, kSchemaAnnotations)) {
      return Invalid(at, absl::StrCat("unsupported keyword (supported: ",
                                      absl::StrJoin(kSchemaKeywords, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

bool SchemaAccepts(const json& schema, const json& v) {
  if (schema.is_boolean()) return schema.get<bool>();
  if (!schema.is_object()) return true;
  for (auto it = schema.begin(); it != schema.end(); ++it) {
    const std::string& key = it.key();
    const json& k = it.value();
    if (key == "type") {
      bool any = false;
      if (k.is_array()) {
        for (const json& n : k) any = any || (n.is_string() && HasType(v, n.get<std::string>()));
      } else {
        any = k.is_string() && HasType(v, k.get<std::string>());
      }
      if (!any) return false;
    } else if (key == "enum") {
      if (k.is_array() && std::none_of(k.begin(), k.end(), [&](const json& e) { return e == v; })) {
        return false;
      }
    } else if (key == "const") {
      if (!(k == v)) return false;
    } else if (v.is_number() && k.is_number()) {
      const double x = v.get<double>(), bound = k.get<double>();
      if ((key == "minimum" && !(x >= bound)) || (key == "maximum" && !(x <= bound)) ||
          (key == "exclusiveMinimum" && !(x > bound)) ||
          (key == "exclusiveMaximum" && !(x < bound))) {
        return false;
      }
    } else if (v.is_string() && (key == "minLength" || key == "maxLength")) {
      const double length = static_cast<double>(
          CodePoints(v.get_ref<const std::string&>(), std::string::npos).size());
      if (key == "minLength" ? length < NumberOr(k, 0) : length > NumberOr(k, length)) {
        return false;
      }
    } else if (v.is_string() && key == "pattern" && k.is_string()) {
      absl::StatusOr<Regex> re = Regex::Compile(k.get<std::string>(), false, "pattern");
      if (!re.ok() || !re->Search(v.get_ref<const std::string&>())) return false;
    } else if (v.is_object() && key == "required" && k.is_array()) {
      for (const json& name : k) {
        if (name.is_string() && !v.contains(name.get<std::string>())) return false;
      }
    } else if (v.is_object() && key == "properties" && k.is_object()) {
      for (auto p = k.begin(); p != k.end(); ++p) {
        auto field = v.find(p.key());
        if (field != v.end() && !SchemaAccepts(p.value(), *field)) return false;
      }
    } else if (v.is_object() && key == "additionalProperties") {
      const json* properties = schema.contains("properties") ? &schema["properties"] : nullptr;
      for (auto field = v.begin(); field != v.end(); ++field) {
        const bool declared =
            properties != nullptr && properties->is_object() && properties->contains(field.key());
        if (!declared && !SchemaAccepts(k, field.value())) return false;
      }
    } else if (v.is_array() && (key == "minItems" || key == "maxItems")) {
      const double n = static_cast<double>(v.size());
      if (key == "minItems" ? n < NumberOr(k, 0) : n > NumberOr(k, n)) return false;
    } else if (v.is_array() && key == "items") {
      for (const json& element : v) {
        if (!SchemaAccepts(k, element)) return false;
      }
    }
  }
  return true;
}

absl::string_view JsonPayload(absl::string_view text) {
  text = TrimAscii(text);
  size_t open = text.find("```");
  while (open != absl::string_view::npos && open > 0 && text[open - 1] != '\n') {
    open = text.find("```", open + 3);
  }
  if (open != absl::string_view::npos) {
    size_t start = open + 3;
    if (absl::StartsWithIgnoreCase(text.substr(start), "json")) start += 4;
    // The closing fence: the first one at the start of a line, else the last.
    size_t close = text.find("\n```", start);
    if (close != absl::string_view::npos) {
      ++close;
    } else {
      close = text.rfind("```");
      if (close < start) close = absl::string_view::npos;
    }
    if (close != absl::string_view::npos) text = text.substr(start, close - start);
  }
  return TrimAscii(text);
}

}  // namespace switchyard::training
