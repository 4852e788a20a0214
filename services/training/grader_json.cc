// The two JSON forms of GraderSpec declared in graders.h: the proto JSON
// mapping (GraderFromJson, GraderToJson) and OpenAI's grader form (read only).
// Validation and grading are in graders.cc.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "services/training/graders.h"
#include "services/training/json_schema_check.h"
#include "services/training/weight_expression.h"
#include "shared/core/status_macros.h"

namespace switchyard::training {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// ---------------------------------------------------------------------------
// Enum names

struct EnumName {
  const char* short_name;  // as GraderToJson writes it
  const char* proto_name;
};

// Indexed by the enum's value; the proto's numbers are index + 1 (0 is
// UNSPECIFIED, the first entry).
constexpr EnumName kOperations[] = {
    {"eq", "STRING_CHECK_OPERATION_EQ"},
    {"ne", "STRING_CHECK_OPERATION_NE"},
    {"contains", "STRING_CHECK_OPERATION_CONTAINS"},
    {"not_contains", "STRING_CHECK_OPERATION_NOT_CONTAINS"},
    {"regex", "STRING_CHECK_OPERATION_REGEX"},
};
constexpr EnumName kMetrics[] = {
    {"token_f1", "TEXT_SIMILARITY_METRIC_TOKEN_F1"},
    {"rouge_l", "TEXT_SIMILARITY_METRIC_ROUGE_L"},
    {"bleu", "TEXT_SIMILARITY_METRIC_BLEU"},
    {"fuzzy", "TEXT_SIMILARITY_METRIC_FUZZY"},
};
constexpr const char* kKindNames[] = {"string_check", "text_similarity", "json_schema", "multi"};

template <size_t N>
std::string ShortNames(const EnumName (&table)[N]) {
  std::vector<std::string> names;
  for (const EnumName& e : table) names.push_back(e.short_name);
  return absl::StrJoin(names, ", ");
}

// The short name of `e`; "unknown" for a value outside the enum.
template <typename E, size_t N>
const char* ShortName(const EnumName (&table)[N], E e) {
  const size_t i = static_cast<size_t>(e);
  return i < N ? table[i].short_name : "unknown";
}

// Reads a proto enum given as the short name or the full name (any case), the
// number, or null (the default, index 0). `unspecified` is the full name of 0.
template <typename E, size_t N>
absl::Status ReadEnum(const json& v, const std::string& path, const EnumName (&table)[N],
                      absl::string_view unspecified, E* out) {
  if (v.is_null()) {
    *out = static_cast<E>(0);
    return absl::OkStatus();
  }
  if (v.is_number_integer()) {
    const int64_t n = v.get<int64_t>();
    if (n < 0 || n > static_cast<int64_t>(N)) {
      return Invalid(path, absl::StrCat("unknown value ", n, " (use 0 to ", N, ")"));
    }
    *out = static_cast<E>(n == 0 ? 0 : n - 1);
    return absl::OkStatus();
  }
  if (!v.is_string()) return Invalid(path, absl::StrCat("must be a string, got ", v.type_name()));
  const std::string& name = v.get_ref<const std::string&>();
  if (absl::EqualsIgnoreCase(name, unspecified)) {
    *out = static_cast<E>(0);
    return absl::OkStatus();
  }
  for (size_t i = 0; i < N; ++i) {
    if (absl::EqualsIgnoreCase(name, table[i].short_name) ||
        absl::EqualsIgnoreCase(name, table[i].proto_name)) {
      *out = static_cast<E>(i);
      return absl::OkStatus();
    }
  }
  return Invalid(path, absl::StrCat("unknown value \"", name, "\" (use ", ShortNames(table), ")"));
}

// ---------------------------------------------------------------------------
// Reading JSON objects

// A field known by its proto name and, optionally, its lowerCamelCase JSON name.
struct FieldName {
  const char* name;
  const char* camel = nullptr;
};

// The fields of one JSON object, checked against the known ones.
class Fields {
 public:
  // INVALID_ARGUMENT for a non-object, an unknown key, or a field given under
  // both of its names.
  static absl::StatusOr<Fields> Read(const json& j, const std::string& path,
                                     const std::vector<FieldName>& known) {
    if (!j.is_object()) {
      return Invalid(path, absl::StrCat("must be an object, got ", j.type_name()));
    }
    Fields f(path);
    for (auto it = j.begin(); it != j.end(); ++it) {
      const FieldName* match = nullptr;
      for (const FieldName& k : known) {
        if (it.key() == k.name || (k.camel != nullptr && it.key() == k.camel)) match = &k;
      }
      if (match == nullptr) {
        std::vector<std::string> names;
        for (const FieldName& k : known) names.push_back(k.name);
        return Invalid(absl::StrCat(path, ".", it.key()),
                       absl::StrCat("unknown field (known: ", absl::StrJoin(names, ", "), ")"));
      }
      auto [entry, inserted] = f.values_.emplace(match->name, Entry{it.key(), &it.value()});
      if (!inserted) {
        return Invalid(path, absl::StrCat("has both ", entry->second.key, " and ", it.key()));
      }
    }
    return f;
  }

  // The value of a field, or nullptr when it is absent or null.
  const json* Get(const char* name) const {
    auto it = values_.find(name);
    return it == values_.end() || it->second.value->is_null() ? nullptr : it->second.value;
  }
  bool Has(const char* name) const { return Get(name) != nullptr; }
  // The path of a field, spelled as the input spells it.
  std::string Path(const char* name) const {
    auto it = values_.find(name);
    return absl::StrCat(path_, ".", it == values_.end() ? name : it->second.key);
  }

  absl::Status String(const char* name, std::string* out) const {
    const json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_string()) return WrongType(name, "a string", *v);
    *out = v->get<std::string>();
    return absl::OkStatus();
  }
  absl::Status Bool(const char* name, bool* out) const {
    const json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_boolean()) return WrongType(name, "a boolean", *v);
    *out = v->get<bool>();
    return absl::OkStatus();
  }
  absl::Status Number(const char* name, double* out) const {
    const json* v = Get(name);
    if (v == nullptr) return absl::OkStatus();
    if (!v->is_number()) return WrongType(name, "a number", *v);
    *out = v->get<double>();
    return absl::OkStatus();
  }

 private:
  struct Entry {
    std::string key;  // as written
    const json* value;
  };
  explicit Fields(std::string path) : path_(std::move(path)) {}
  absl::Status WrongType(const char* name, const char* want, const json& v) const {
    return Invalid(Path(name), absl::StrCat("must be ", want, ", got ", v.type_name()));
  }

  std::string path_;
  std::map<std::string, Entry> values_;  // by proto name
};

// Whether `j` nests more than `limit` levels of arrays and objects; the
// recursion stops at the limit.
bool DeeperThan(const json& j, int limit) {
  if (!j.is_structured()) return false;
  if (limit == 0) return true;
  for (const json& v : j) {
    if (DeeperThan(v, limit - 1)) return true;
  }
  return false;
}

absl::Status DepthError(const std::string& multi_path) {
  return Invalid(multi_path,
                 absl::StrCat("sub-graders nest deeper than ", kMaxGraderDepth, " levels"));
}

absl::StatusOr<GraderSpec> ParseGrader(const json& j, const std::string& path, int level);

// ---------------------------------------------------------------------------
// The proto JSON mapping

absl::Status ParseStringCheck(const json& j, const std::string& path, StringCheckSpec* out) {
  SY_ASSIGN_OR_RETURN(
      Fields f,
      Fields::Read(
          j, path,
          {{"input"}, {"reference"}, {"operation"}, {"ignore_case", "ignoreCase"}, {"trim"}}));
  SY_RETURN_IF_ERROR(f.String("input", &out->input));
  SY_RETURN_IF_ERROR(f.String("reference", &out->reference));
  if (f.Has("operation")) {
    SY_RETURN_IF_ERROR(ReadEnum(*f.Get("operation"), f.Path("operation"), kOperations,
                                "STRING_CHECK_OPERATION_UNSPECIFIED", &out->operation));
  }
  SY_RETURN_IF_ERROR(f.Bool("ignore_case", &out->ignore_case));
  return f.Bool("trim", &out->trim);
}

absl::Status ParseTextSimilarity(const json& j, const std::string& path, TextSimilaritySpec* out) {
  SY_ASSIGN_OR_RETURN(Fields f, Fields::Read(j, path,
                                             {{"input"},
                                              {"reference"},
                                              {"metric"},
                                              {"ignore_case", "ignoreCase"},
                                              {"pass_threshold", "passThreshold"}}));
  SY_RETURN_IF_ERROR(f.String("input", &out->input));
  SY_RETURN_IF_ERROR(f.String("reference", &out->reference));
  if (f.Has("metric")) {
    SY_RETURN_IF_ERROR(ReadEnum(*f.Get("metric"), f.Path("metric"), kMetrics,
                                "TEXT_SIMILARITY_METRIC_UNSPECIFIED", &out->metric));
  }
  SY_RETURN_IF_ERROR(f.Bool("ignore_case", &out->ignore_case));
  return f.Number("pass_threshold", &out->pass_threshold);
}

absl::Status ParseJsonSchema(const json& j, const std::string& path, JsonSchemaSpec* out) {
  SY_ASSIGN_OR_RETURN(
      Fields f,
      Fields::Read(j, path, {{"input"}, {"schema"}, {"partial_credit", "partialCredit"}}));
  SY_RETURN_IF_ERROR(f.String("input", &out->input));
  if (const json* schema = f.Get("schema")) {
    if (!schema->is_object()) {
      return Invalid(f.Path("schema"),
                     absl::StrCat("must be an object, got ", schema->type_name()));
    }
    // Checked before copying: copying a JSON value recurses as deep as it nests.
    if (DeeperThan(*schema, kMaxSchemaDepth)) {
      return Invalid(f.Path("schema"), absl::StrCat("nests deeper than ", kMaxSchemaDepth));
    }
    out->schema = *schema;
  }
  return f.Bool("partial_credit", &out->partial_credit);
}

absl::Status ParseMulti(const json& j, const std::string& path, int level, MultiSpec* out) {
  SY_ASSIGN_OR_RETURN(Fields f, Fields::Read(j, path, {{"graders"}}));
  const json* graders = f.Get("graders");
  if (graders == nullptr) return absl::OkStatus();
  if (!graders->is_array()) {
    return Invalid(f.Path("graders"), absl::StrCat("must be an array, got ", graders->type_name()));
  }
  if (!graders->empty() && level >= kMaxGraderDepth) return DepthError(path);
  for (size_t i = 0; i < graders->size(); ++i) {
    const std::string item_path = absl::StrCat(f.Path("graders"), "[", i, "]");
    SY_ASSIGN_OR_RETURN(Fields wf,
                        Fields::Read((*graders)[i], item_path, {{"grader"}, {"weight"}}));
    WeightedGraderSpec w;
    if (!wf.Has("grader")) return Invalid(wf.Path("grader"), "required");
    SY_ASSIGN_OR_RETURN(w.grader, ParseGrader(*wf.Get("grader"), wf.Path("grader"), level + 1));
    SY_RETURN_IF_ERROR(wf.Number("weight", &w.weight));
    out->graders.push_back(std::move(w));
  }
  return absl::OkStatus();
}

absl::StatusOr<GraderSpec> ParseProtoForm(const json& j, const std::string& path, int level) {
  SY_ASSIGN_OR_RETURN(Fields f, Fields::Read(j, path,
                                             {{"name"},
                                              {"string_check", "stringCheck"},
                                              {"text_similarity", "textSimilarity"},
                                              {"json_schema", "jsonSchema"},
                                              {"multi"}}));
  GraderSpec g;
  SY_RETURN_IF_ERROR(f.String("name", &g.name));
  std::vector<std::string> kinds;
  for (int k = 0; k < 4; ++k) {
    if (f.Has(kKindNames[k])) {
      kinds.push_back(kKindNames[k]);
      g.kind = static_cast<GraderKind>(k);
    }
  }
  if (kinds.empty()) {
    return Invalid(path, "needs one of string_check, text_similarity, json_schema, multi");
  }
  if (kinds.size() > 1) {
    return Invalid(path, absl::StrCat("has ", absl::StrJoin(kinds, " and "),
                                      "; a grader has exactly one kind"));
  }
  const char* kind = kKindNames[static_cast<int>(g.kind)];
  const json& body = *f.Get(kind);
  const std::string body_path = f.Path(kind);
  switch (g.kind) {
    case GraderKind::kStringCheck:
      SY_RETURN_IF_ERROR(ParseStringCheck(body, body_path, &g.string_check));
      break;
    case GraderKind::kTextSimilarity:
      SY_RETURN_IF_ERROR(ParseTextSimilarity(body, body_path, &g.text_similarity));
      break;
    case GraderKind::kJsonSchema:
      SY_RETURN_IF_ERROR(ParseJsonSchema(body, body_path, &g.json_schema));
      break;
    case GraderKind::kMulti:
      SY_RETURN_IF_ERROR(ParseMulti(body, body_path, level, &g.multi));
      break;
  }
  return g;
}

// ---------------------------------------------------------------------------
// OpenAI's grader form

absl::StatusOr<GraderSpec> ParseOpenAiForm(const json& j, const std::string& path, int level) {
  const json& type_value = j["type"];
  if (!type_value.is_string()) {
    return Invalid(absl::StrCat(path, ".type"),
                   absl::StrCat("must be a string, got ", type_value.type_name()));
  }
  const std::string& type = type_value.get_ref<const std::string&>();
  GraderSpec g;
  if (type == "string_check") {
    SY_ASSIGN_OR_RETURN(
        Fields f,
        Fields::Read(j, path, {{"type"}, {"name"}, {"input"}, {"reference"}, {"operation"}}));
    g.kind = GraderKind::kStringCheck;
    SY_RETURN_IF_ERROR(f.String("name", &g.name));
    SY_RETURN_IF_ERROR(f.String("input", &g.string_check.input));
    SY_RETURN_IF_ERROR(f.String("reference", &g.string_check.reference));
    std::string op = "eq";
    SY_RETURN_IF_ERROR(f.String("operation", &op));
    if (op == "eq") {
      g.string_check.operation = StringCheckOperation::kEq;
    } else if (op == "ne") {
      g.string_check.operation = StringCheckOperation::kNe;
    } else if (op == "like" || op == "ilike") {
      g.string_check.operation = StringCheckOperation::kContains;
      g.string_check.ignore_case = op == "ilike";
    } else {
      return Invalid(f.Path("operation"),
                     absl::StrCat("unknown value \"", op, "\" (use eq, ne, like, ilike)"));
    }
    return g;
  }
  if (type == "text_similarity") {
    SY_ASSIGN_OR_RETURN(Fields f, Fields::Read(j, path,
                                               {{"type"},
                                                {"name"},
                                                {"input"},
                                                {"reference"},
                                                {"evaluation_metric"},
                                                {"pass_threshold"}}));
    g.kind = GraderKind::kTextSimilarity;
    SY_RETURN_IF_ERROR(f.String("name", &g.name));
    SY_RETURN_IF_ERROR(f.String("input", &g.text_similarity.input));
    SY_RETURN_IF_ERROR(f.String("reference", &g.text_similarity.reference));
    SY_RETURN_IF_ERROR(f.Number("pass_threshold", &g.text_similarity.pass_threshold));
    std::string metric = "token_f1";
    SY_RETURN_IF_ERROR(f.String("evaluation_metric", &metric));
    constexpr char kSupported[] = "(supported: fuzzy_match, bleu, rouge_l, token_f1)";
    if (metric == "fuzzy_match") {
      g.text_similarity.metric = TextSimilarityMetric::kFuzzy;
    } else if (metric == "bleu") {
      g.text_similarity.metric = TextSimilarityMetric::kBleu;
    } else if (metric == "rouge_l") {
      g.text_similarity.metric = TextSimilarityMetric::kRougeL;
    } else if (metric == "token_f1") {
      g.text_similarity.metric = TextSimilarityMetric::kTokenF1;
    } else if (metric == "gleu" || metric == "meteor" || metric == "cosine" ||
               (metric.size() == 7 && absl::StartsWith(metric, "rouge_") && metric[6] >= '1' &&
                metric[6] <= '5')) {
      return Invalid(f.Path("evaluation_metric"),
                     absl::StrCat("unsupported value \"", metric, "\" ", kSupported));
    } else {
      return Invalid(f.Path("evaluation_metric"),
                     absl::StrCat("unknown value \"", metric, "\" ", kSupported));
    }
    return g;
  }
  if (type == "multi") {
    SY_ASSIGN_OR_RETURN(
        Fields f, Fields::Read(j, path, {{"type"}, {"name"}, {"graders"}, {"calculate_output"}}));
    g.kind = GraderKind::kMulti;
    SY_RETURN_IF_ERROR(f.String("name", &g.name));
    const json* graders = f.Get("graders");
    if (graders == nullptr) return Invalid(f.Path("graders"), "required");
    if (!graders->is_object()) {
      return Invalid(f.Path("graders"), absl::StrCat("must be an object of named graders, got ",
                                                     graders->type_name()));
    }
    if (!graders->empty() && level >= kMaxGraderDepth) return DepthError(path);
    std::map<std::string, double> weights;
    for (auto it = graders->begin(); it != graders->end(); ++it) {
      WeightedGraderSpec w;
      SY_ASSIGN_OR_RETURN(
          w.grader,
          ParseGrader(it.value(), absl::StrCat(f.Path("graders"), ".", it.key()), level + 1));
      w.grader.name = it.key();  // calculate_output refers to it by its key
      g.multi.graders.push_back(std::move(w));
      weights[it.key()] = 0;
    }
    std::string expr;
    SY_RETURN_IF_ERROR(f.String("calculate_output", &expr));
    if (!f.Has("calculate_output")) return Invalid(f.Path("calculate_output"), "required");
    SY_RETURN_IF_ERROR(ParseWeightExpression(expr, f.Path("calculate_output"), &weights));
    for (WeightedGraderSpec& w : g.multi.graders) w.weight = weights[w.grader.name];
    return g;
  }
  if (type == "score_model" || type == "label_model" || type == "python" || type == "endpoint") {
    return Invalid(absl::StrCat(path, ".type"),
                   absl::StrCat("\"", type,
                                "\" graders are not supported (supported: string_check, "
                                "text_similarity, multi; json_schema in the proto form)"));
  }
  return Invalid(absl::StrCat(path, ".type"),
                 absl::StrCat("unknown value \"", type,
                              "\" (use string_check, text_similarity, multi; json_schema in "
                              "the proto form)"));
}

absl::StatusOr<GraderSpec> ParseGrader(const json& j, const std::string& path, int level) {
  if (!j.is_object()) return Invalid(path, absl::StrCat("must be an object, got ", j.type_name()));
  if (j.contains("type")) return ParseOpenAiForm(j, path, level);
  return ParseProtoForm(j, path, level);
}

}  // namespace

const char* GraderKindName(GraderKind kind) {
  const unsigned k = static_cast<unsigned>(kind);
  return k < 4 ? kKindNames[k] : "unknown";
}

absl::StatusOr<GraderSpec> GraderFromJson(const json& j, const std::string& field) {
  return ParseGrader(j, field, 1);
}

json GraderToJson(const GraderSpec& spec) {
  json j = json::object();
  if (!spec.name.empty()) j["name"] = spec.name;
  switch (spec.kind) {
    case GraderKind::kStringCheck: {
      const StringCheckSpec& s = spec.string_check;
      j["string_check"] = {{"input", s.input},
                           {"reference", s.reference},
                           {"operation", ShortName(kOperations, s.operation)},
                           {"ignore_case", s.ignore_case},
                           {"trim", s.trim}};
      break;
    }
    case GraderKind::kTextSimilarity: {
      const TextSimilaritySpec& t = spec.text_similarity;
      j["text_similarity"] = {{"input", t.input},
                              {"reference", t.reference},
                              {"metric", ShortName(kMetrics, t.metric)},
                              {"ignore_case", t.ignore_case},
                              {"pass_threshold", t.pass_threshold}};
      break;
    }
    case GraderKind::kJsonSchema:
      j["json_schema"] = {{"input", spec.json_schema.input},
                          {"schema", spec.json_schema.schema},
                          {"partial_credit", spec.json_schema.partial_credit}};
      break;
    case GraderKind::kMulti: {
      json graders = json::array();
      for (const WeightedGraderSpec& w : spec.multi.graders) {
        graders.push_back({{"grader", GraderToJson(w.grader)}, {"weight", w.weight}});
      }
      j["multi"] = {{"graders", std::move(graders)}};
      break;
    }
  }
  return j;
}

}  // namespace switchyard::training
