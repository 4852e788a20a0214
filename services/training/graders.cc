#include "services/training/graders.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/uchar.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "shared/core/status_macros.h"
#include "shared/text/answer_metrics.h"
#include "shared/text/unicode.h"

namespace switchyard::training {
namespace {

using json = nlohmann::json;

// Schemas may nest this deep; bounds every recursion over a schema.
constexpr int kMaxSchemaDepth = 32;

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

constexpr char kExpressionForms[] =
    "use a weighted sum of grader keys: \"a + b\", \"0.3 * a + 0.7 * b\" or \"(a + b) / 2\"";

// Reads calculate_output, a weighted sum of the keys in `weights` (all 0 on
// entry), into the weights.
class WeightExpression {
 public:
  static absl::Status Parse(const std::string& expr, const std::string& path,
                            std::map<std::string, double>* weights) {
    WeightExpression p(expr, path, weights);
    return p.Top();
  }

 private:
  WeightExpression(const std::string& expr, const std::string& path,
                   std::map<std::string, double>* weights)
      : expr_(expr), path_(path), weights_(weights) {}

  // expr := sum | "(" sum ")" ["/" number]
  absl::Status Top() {
    if (Peek() == '(') {
      ++pos_;
      SY_RETURN_IF_ERROR(Sum());
      if (!Take(')')) return Unsupported();
      if (Take('/')) {
        double divisor = 0;
        if (!Number(&divisor)) return Unsupported();
        if (!(divisor > 0) || !std::isfinite(divisor)) {
          return Invalid(path_, "the divisor must be a positive number");
        }
      }
    } else {
      SY_RETURN_IF_ERROR(Sum());
    }
    return Peek() == '\0' ? absl::OkStatus() : Unsupported();
  }

  // sum := term ("+" term)*
  absl::Status Sum() {
    SY_RETURN_IF_ERROR(Term());
    while (Take('+')) SY_RETURN_IF_ERROR(Term());
    return absl::OkStatus();
  }

  // term := [number "*"] key (("*" | "/") number)*
  absl::Status Term() {
    double weight = 1;
    if (Number(&weight) && !Take('*')) return Unsupported();
    std::string key;
    if (!Identifier(&key) || Peek() == '(') return Unsupported();  // not a function call
    for (char op = Peek(); op == '*' || op == '/'; op = Peek()) {
      ++pos_;
      double factor = 0;
      if (!Number(&factor)) return Unsupported();
      if (op == '/' && factor == 0) return Invalid(path_, "divides by zero");
      weight = op == '*' ? weight * factor : weight / factor;
    }
    auto it = weights_->find(key);
    if (it == weights_->end()) {
      std::vector<std::string> keys;
      for (const auto& [k, w] : *weights_) keys.push_back(k);
      return Invalid(path_, absl::StrCat("\"", key, "\" is not a key of graders (keys: ",
                                         absl::StrJoin(keys, ", "), ")"));
    }
    if (!seen_.insert(key).second) {
      return Invalid(path_, absl::StrCat("names \"", key, "\" more than once"));
    }
    if (!std::isfinite(weight)) return Invalid(path_, "a weight is not finite");
    it->second = weight;
    return absl::OkStatus();
  }

  // The next non-space character, '\0' at the end.
  char Peek() {
    while (pos_ < expr_.size() && absl::ascii_isspace(static_cast<unsigned char>(expr_[pos_]))) {
      ++pos_;
    }
    return pos_ < expr_.size() ? expr_[pos_] : '\0';
  }
  bool Take(char c) {
    if (Peek() != c) return false;
    ++pos_;
    return true;
  }
  // An unsigned decimal number ("2", "0.25", ".5", "1e-2").
  bool Number(double* out) {
    const char c = Peek();
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.') return false;
    size_t end = pos_;
    while (end < expr_.size() &&
           (absl::ascii_isdigit(static_cast<unsigned char>(expr_[end])) || expr_[end] == '.')) {
      ++end;
    }
    if (end < expr_.size() && (expr_[end] == 'e' || expr_[end] == 'E')) {
      size_t exp = end + 1;
      if (exp < expr_.size() && (expr_[exp] == '+' || expr_[exp] == '-')) ++exp;
      if (exp < expr_.size() && absl::ascii_isdigit(static_cast<unsigned char>(expr_[exp]))) {
        end = exp;
        while (end < expr_.size() && absl::ascii_isdigit(static_cast<unsigned char>(expr_[end]))) {
          ++end;
        }
      }
    }
    if (!absl::SimpleAtod(absl::string_view(expr_).substr(pos_, end - pos_), out)) return false;
    pos_ = end;
    return true;
  }
  bool Identifier(std::string* out) {
    const char c = Peek();
    if (!absl::ascii_isalpha(static_cast<unsigned char>(c)) && c != '_') return false;
    size_t end = pos_;
    while (end < expr_.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(expr_[end])) || expr_[end] == '_')) {
      ++end;
    }
    *out = expr_.substr(pos_, end - pos_);
    pos_ = end;
    return true;
  }
  absl::Status Unsupported() const {
    return Invalid(path_,
                   absl::StrCat("unsupported expression \"", expr_, "\"; ", kExpressionForms));
  }

  const std::string& expr_;
  const std::string& path_;
  std::map<std::string, double>* weights_;
  std::set<std::string> seen_;
  size_t pos_ = 0;
};

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
    SY_RETURN_IF_ERROR(WeightExpression::Parse(expr, f.Path("calculate_output"), &weights));
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

// ---------------------------------------------------------------------------
// Templates

// A piece of a template: literal text, or a variable to substitute.
struct Piece {
  enum Kind { kText, kOutput, kItem } kind = kText;
  std::string text;               // kText: the text; otherwise the variable as written
  std::vector<std::string> path;  // kItem: the field path below the example
};

absl::StatusOr<std::vector<Piece>> ParseTemplate(absl::string_view tmpl, const std::string& path) {
  std::vector<Piece> pieces;
  size_t pos = 0;
  while (pos < tmpl.size()) {
    const size_t open = tmpl.find("{{", pos);
    if (open == absl::string_view::npos) {
      pieces.push_back({Piece::kText, std::string(tmpl.substr(pos)), {}});
      break;
    }
    if (open > pos) pieces.push_back({Piece::kText, std::string(tmpl.substr(pos, open - pos)), {}});
    const size_t close = tmpl.find("}}", open + 2);
    if (close == absl::string_view::npos) {
      return Invalid(path, absl::StrCat("unclosed \"{{\" at byte ", open));
    }
    Piece var;
    var.text = std::string(tmpl.substr(open, close + 2 - open));
    const absl::string_view name =
        absl::StripAsciiWhitespace(tmpl.substr(open + 2, close - open - 2));
    bool ok = false;
    if (name == "sample.output_text") {
      var.kind = Piece::kOutput;
      ok = true;
    } else if (absl::StartsWith(name, "item.")) {
      var.kind = Piece::kItem;
      var.path = absl::StrSplit(name.substr(5), '.');
      ok = std::all_of(var.path.begin(), var.path.end(), [](const std::string& s) {
        return !s.empty() && std::none_of(s.begin(), s.end(), [](char c) {
          return absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '{' || c == '}';
        });
      });
    }
    if (!ok) {
      return Invalid(path, absl::StrCat("unknown template variable \"", var.text,
                                        "\" (use {{sample.output_text}} or {{item.FIELD}})"));
    }
    pieces.push_back(std::move(var));
    pos = close + 2;
  }
  return pieces;
}

bool HasVariables(const std::vector<Piece>& pieces) {
  return std::any_of(pieces.begin(), pieces.end(),
                     [](const Piece& p) { return p.kind != Piece::kText; });
}

// The value at `path` below `item`, or nullptr with *why saying where the path stops.
const json* Resolve(const json& item, const std::vector<std::string>& path, std::string* why) {
  const json* node = &item;
  if (!item.is_object()) {
    *why = absl::StrCat("the example is ", item.type_name(), ", not an object");
    return nullptr;
  }
  for (size_t i = 0; i < path.size(); ++i) {
    const std::string& key = path[i];
    auto where = [&] {
      return absl::StrCat("item.", absl::StrJoin(path.begin(), path.begin() + i, "."));
    };
    if (node->is_object()) {
      auto it = node->find(key);
      if (it == node->end()) {
        *why = i == 0 ? absl::StrCat("the example has no field \"", key, "\"")
                      : absl::StrCat(where(), " has no field \"", key, "\"");
        return nullptr;
      }
      node = &*it;
    } else if (node->is_array()) {
      size_t index = 0;
      if (key.size() > 9 || !absl::SimpleAtoi(key, &index) ||
          !std::all_of(key.begin(), key.end(),
                       [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
        *why = absl::StrCat(where(), " is an array; \"", key, "\" is not an index");
        return nullptr;
      }
      if (index >= node->size()) {
        *why = absl::StrCat(where(), " has ", node->size(), " elements, no index ", index);
        return nullptr;
      }
      node = &(*node)[index];
    } else {
      *why = absl::StrCat(where(), " is ", node->type_name(), ", not an object");
      return nullptr;
    }
  }
  return node;
}

// A substituted value: strings as they are, integral numbers without a
// fraction, anything else as compact JSON (invalid UTF-8 replaced).
std::string RenderValue(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9007199254740992.0) {
      return absl::StrCat(static_cast<int64_t>(d));
    }
  }
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// Substitutes `pieces`; INVALID_ARGUMENT naming `path` and the variable when an
// item field does not resolve, or naming `path` when the text grows past
// kMaxRenderedBytes.
absl::StatusOr<std::string> Render(const std::vector<Piece>& pieces, const std::string& output,
                                   const json& item, const std::string& path) {
  std::string out;
  for (const Piece& p : pieces) {
    switch (p.kind) {
      case Piece::kText:
        out += p.text;
        break;
      case Piece::kOutput:
        out += output;
        break;
      case Piece::kItem: {
        std::string why;
        const json* v = Resolve(item, p.path, &why);
        if (v == nullptr) return Invalid(path, absl::StrCat(p.text, ": ", why));
        out += RenderValue(*v);
        break;
      }
    }
    if (out.size() > kMaxRenderedBytes) {
      return Invalid(path, absl::StrCat("renders to more than ", kMaxRenderedBytes, " bytes"));
    }
  }
  return out;
}

// An input template; empty means the output.
absl::string_view InputTemplate(const std::string& input) {
  return input.empty() ? "{{sample.output_text}}" : absl::string_view(input);
}

// ---------------------------------------------------------------------------
// Text

absl::string_view TrimAscii(absl::string_view s) { return absl::StripAsciiWhitespace(s); }

// Unicode simple case folding; bytes that are not valid UTF-8 are kept.
std::string FoldCase(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    int len = 1;
    const uint32_t cp = text::DecodeUtf8(s.substr(i), &len);
    if (len == 1 && static_cast<unsigned char>(s[i]) >= 0x80) {
      out.push_back(s[i]);
    } else {
      text::AppendUtf8(
          static_cast<uint32_t>(u_foldCase(static_cast<UChar32>(cp), U_FOLD_CASE_DEFAULT)), &out);
    }
    i += static_cast<size_t>(len);
  }
  return out;
}

// The first `limit` code points of `s`; a byte that is not valid UTF-8 counts
// as one, outside the code point range so it equals no character.
std::vector<uint32_t> CodePoints(absl::string_view s, size_t limit) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < s.size() && out.size() < limit) {
    int len = 1;
    uint32_t cp = text::DecodeUtf8(s.substr(i), &len);
    if (len == 1 && static_cast<unsigned char>(s[i]) >= 0x80) cp = 0x110000 + cp;
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

// At most `limit` bytes of `s`, not splitting a UTF-8 sequence.
absl::string_view CutAtCharBoundary(absl::string_view s, size_t limit) {
  if (s.size() <= limit) return s;
  size_t end = limit;
  for (int k = 0; k < 3 && end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80; ++k) {
    --end;
  }
  return s.substr(0, end);
}

// ---------------------------------------------------------------------------
// Regular expressions

// A pattern compiled by PCRE2 with the options that give ECMAScript's syntax
// and meaning where the two differ (\uXXXX escapes, "$" only at the end, "[]"
// and "[^]"), matching UTF-8 by code point and any byte string as subject.
// PCRE2 rather than std::regex: libstdc++'s regex recurses once per input
// character and overflows the stack on 20,000 bytes of "(a|b)*c"; PCRE2
// backtracks on the heap under a match limit.
class Regex {
 public:
  // INVALID_ARGUMENT naming `path` when the pattern does not compile.
  static absl::StatusOr<Regex> Compile(absl::string_view pattern, bool ignore_case,
                                       const std::string& path) {
    std::unique_ptr<pcre2_compile_context, decltype(&pcre2_compile_context_free)> context(
        pcre2_compile_context_create(nullptr), &pcre2_compile_context_free);
    pcre2_set_compile_extra_options(context.get(), PCRE2_EXTRA_ALT_BSUX);
    const uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ALT_BSUX |
                             PCRE2_DOLLAR_ENDONLY | PCRE2_ALLOW_EMPTY_CLASS |
                             PCRE2_NEVER_BACKSLASH_C | (ignore_case ? PCRE2_CASELESS : 0);
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error, &offset, context.get());
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return Invalid(path,
                     absl::StrCat("regular expression does not compile: ",
                                  reinterpret_cast<const char*>(message), " at offset ", offset));
    }
    return Regex(code);
  }

  // Whether the pattern matches somewhere in the first kRegexMaxInputBytes
  // of `text`. A search that hits the match limit counts as no match.
  bool Search(absl::string_view text) const {
    text = CutAtCharBoundary(text, kRegexMaxInputBytes);
    std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> context(
        pcre2_match_context_create(nullptr), &pcre2_match_context_free);
    pcre2_set_match_limit(context.get(), 1000000);
    pcre2_set_heap_limit(context.get(), 64 * 1024);  // KiB
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create(1, nullptr), &pcre2_match_data_free);
    const int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                               0, 0, data.get(), context.get());
    return rc >= 0;
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code, &pcre2_code_free) {}
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> code_;
};

// ---------------------------------------------------------------------------
// Similarity metrics

// Sentence BLEU-4 of `candidate` against one `reference` on AnswerTokens
// (Papineni et al. 2002) with Lin & Och's (2004) add-one smoothing: the
// clipped n-gram precision is m1 / c1 for unigrams and (m_n + 1) / (c_n + 1)
// for n = 2..4, the score their geometric mean times the brevity penalty
// exp(1 - r / c) when the candidate (c tokens) is not longer than the
// reference (r tokens). Both empty gives 1, exactly one empty 0.
double Bleu(const std::string& candidate, const std::string& reference) {
  const std::vector<std::string> cand = text::AnswerTokens(candidate);
  const std::vector<std::string> ref = text::AnswerTokens(reference);
  if (cand.empty() || ref.empty()) return cand.empty() && ref.empty() ? 1.0 : 0.0;
  // Tokens hold no whitespace, so a space-joined n-gram is unambiguous.
  auto ngram_counts = [](const std::vector<std::string>& tokens, size_t n) {
    std::unordered_map<std::string, int64_t> counts;
    for (size_t i = 0; i + n <= tokens.size(); ++i) {
      ++counts[absl::StrJoin(tokens.begin() + static_cast<ptrdiff_t>(i),
                             tokens.begin() + static_cast<ptrdiff_t>(i + n), " ")];
    }
    return counts;
  };
  double log_precision_sum = 0;
  for (size_t n = 1; n <= 4; ++n) {
    const auto cand_counts = ngram_counts(cand, n);
    const auto ref_counts = ngram_counts(ref, n);
    int64_t matches = 0;
    for (const auto& [gram, count] : cand_counts) {
      auto it = ref_counts.find(gram);
      if (it != ref_counts.end()) matches += std::min(count, it->second);
    }
    const int64_t total = cand.size() >= n ? static_cast<int64_t>(cand.size() - n + 1) : 0;
    const double precision =
        n == 1 ? static_cast<double>(matches) / static_cast<double>(total)
               : static_cast<double>(matches + 1) / static_cast<double>(total + 1);
    if (precision == 0) return 0.0;
    log_precision_sum += std::log(precision);
  }
  const double c = static_cast<double>(cand.size()), r = static_cast<double>(ref.size());
  const double brevity_penalty = c > r ? 1.0 : std::exp(1 - r / c);
  return brevity_penalty * std::exp(log_precision_sum / 4);
}

// 1 - Levenshtein distance / the longer length, over code points (the first
// kFuzzyMaxCodePoints of each). Both empty gives 1.
double Fuzzy(absl::string_view a, absl::string_view b) {
  const std::vector<uint32_t> x = CodePoints(a, kFuzzyMaxCodePoints);
  const std::vector<uint32_t> y = CodePoints(b, kFuzzyMaxCodePoints);
  if (x.empty() && y.empty()) return 1.0;
  std::vector<size_t> prev(y.size() + 1), cur(y.size() + 1);
  for (size_t j = 0; j <= y.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= x.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= y.size(); ++j) {
      cur[j] =
          std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return 1.0 -
         static_cast<double>(prev[y.size()]) / static_cast<double>(std::max(x.size(), y.size()));
}

// ---------------------------------------------------------------------------
// JSON Schema subset

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

// Whether `v` matches `schema` (checked by CheckSchema; anything unexpected
// is skipped rather than trusted). Recurses as deep as the schema nests.
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

// The text a json_schema grader parses: the content of the first ``` fenced
// block (its opening fence at the start of a line, an optional "json" tag
// after it) when there is one, trimmed. A fence at the start of a line
// cannot be part of valid JSON, so JSON that merely contains ``` in a string
// is left alone.
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

// ---------------------------------------------------------------------------
// Validation and names

// The template fields of a leaf grader, with their path suffixes.
std::vector<std::pair<std::string, std::string>> Templates(const GraderSpec& g,
                                                           const std::string& path) {
  switch (g.kind) {
    case GraderKind::kStringCheck:
      return {{std::string(InputTemplate(g.string_check.input)), path + ".string_check.input"},
              {g.string_check.reference, path + ".string_check.reference"}};
    case GraderKind::kTextSimilarity:
      return {
          {std::string(InputTemplate(g.text_similarity.input)), path + ".text_similarity.input"},
          {g.text_similarity.reference, path + ".text_similarity.reference"}};
    case GraderKind::kJsonSchema:
      return {{std::string(InputTemplate(g.json_schema.input)), path + ".json_schema.input"}};
    case GraderKind::kMulti:
      break;
  }
  return {};
}

absl::Status ValidateAt(const GraderSpec& g, const std::string& path, int level,
                        std::set<std::string>* names) {
  if (!g.name.empty() && !names->insert(g.name).second) {
    return Invalid(path + ".name", absl::StrCat("\"", g.name, "\" names another grader too"));
  }
  for (const auto& [tmpl, at] : Templates(g, path)) {
    SY_RETURN_IF_ERROR(ParseTemplate(tmpl, at).status());
  }
  switch (g.kind) {
    case GraderKind::kStringCheck: {
      const StringCheckSpec& s = g.string_check;
      const std::string at = path + ".string_check";
      if (static_cast<unsigned>(s.operation) >
          static_cast<unsigned>(StringCheckOperation::kRegex)) {
        return Invalid(at + ".operation", "unknown value");
      }
      if (s.operation == StringCheckOperation::kRegex) {
        SY_ASSIGN_OR_RETURN(std::vector<Piece> pieces,
                            ParseTemplate(s.reference, at + ".reference"));
        if (!HasVariables(pieces)) {
          SY_RETURN_IF_ERROR(
              Regex::Compile(s.reference, s.ignore_case, at + ".reference").status());
        }
      }
      return absl::OkStatus();
    }
    case GraderKind::kTextSimilarity: {
      const TextSimilaritySpec& t = g.text_similarity;
      const std::string at = path + ".text_similarity";
      if (static_cast<unsigned>(t.metric) > static_cast<unsigned>(TextSimilarityMetric::kFuzzy)) {
        return Invalid(at + ".metric", "unknown value");
      }
      if (!(t.pass_threshold >= 0 && t.pass_threshold <= 1)) {
        return Invalid(at + ".pass_threshold",
                       absl::StrCat("must be in [0, 1], got ", t.pass_threshold));
      }
      return absl::OkStatus();
    }
    case GraderKind::kJsonSchema:
      return CheckSchema(g.json_schema.schema, path + ".json_schema.schema", 0);
    case GraderKind::kMulti: {
      const std::string at = path + ".multi";
      const std::vector<WeightedGraderSpec>& subs = g.multi.graders;
      if (subs.empty()) return Invalid(at + ".graders", "needs at least one sub-grader");
      if (level >= kMaxGraderDepth) return DepthError(at);
      double sum = 0;
      for (size_t i = 0; i < subs.size(); ++i) {
        const std::string sub = absl::StrCat(at, ".graders[", i, "]");
        const double w = subs[i].weight;
        if (!(w >= 0) || !std::isfinite(w)) {
          return Invalid(sub + ".weight", absl::StrCat("must be a finite number >= 0, got ", w));
        }
        sum += w;
        SY_RETURN_IF_ERROR(ValidateAt(subs[i].grader, sub + ".grader", level + 1, names));
      }
      if (!(sum > 0) || !std::isfinite(sum)) {
        return Invalid(at + ".graders", "weights must have a positive, finite sum");
      }
      return absl::OkStatus();
    }
  }
  return Invalid(path, "unknown kind");
}

void CollectNames(const GraderSpec& g, std::set<std::string>* names) {
  if (!g.name.empty()) names->insert(g.name);
  if (g.kind != GraderKind::kMulti) return;
  for (const WeightedGraderSpec& w : g.multi.graders) CollectNames(w.grader, names);
}

// The names of the graders of the tree in pre-order (see "Names" in the header).
void AssignNames(const GraderSpec& g, std::set<std::string>* taken, std::vector<std::string>* out) {
  std::string name = g.name;
  if (name.empty()) {
    const std::string base = GraderKindName(g.kind);
    name = base;
    for (int n = 2; taken->count(name) > 0; ++n) name = absl::StrCat(base, "_", n);
    taken->insert(name);
  }
  out->push_back(name);
  if (g.kind != GraderKind::kMulti) return;
  for (const WeightedGraderSpec& w : g.multi.graders) AssignNames(w.grader, taken, out);
}

// ---------------------------------------------------------------------------
// Grading

struct GradeContext {
  const std::string& output;
  const json& item;
  std::vector<std::string> names;  // pre-order
  size_t next_name = 0;
  GradeResult* result;
};

absl::StatusOr<double> GradeStringCheck(const StringCheckSpec& s, std::string input,
                                        std::string reference, const std::string& path) {
  if (s.trim) input = std::string(TrimAscii(input));
  if (s.operation == StringCheckOperation::kRegex) {
    SY_ASSIGN_OR_RETURN(Regex re, Regex::Compile(reference, s.ignore_case, path + ".reference"));
    return re.Search(input) ? 1.0 : 0.0;
  }
  if (s.trim) reference = std::string(TrimAscii(reference));
  if (s.ignore_case) {
    input = FoldCase(input);
    reference = FoldCase(reference);
  }
  switch (s.operation) {
    case StringCheckOperation::kEq:
      return input == reference ? 1.0 : 0.0;
    case StringCheckOperation::kNe:
      return input != reference ? 1.0 : 0.0;
    case StringCheckOperation::kContains:
      return input.find(reference) != std::string::npos ? 1.0 : 0.0;
    case StringCheckOperation::kNotContains:
      return input.find(reference) == std::string::npos ? 1.0 : 0.0;
    case StringCheckOperation::kRegex:
      break;
  }
  return 0.0;
}

double GradeTextSimilarity(const TextSimilaritySpec& t, std::string input, std::string reference) {
  if (t.ignore_case) {
    input = FoldCase(input);
    reference = FoldCase(reference);
  }
  double score = 0;
  switch (t.metric) {
    case TextSimilarityMetric::kTokenF1:
      score = text::TokenF1(input, reference);
      break;
    case TextSimilarityMetric::kRougeL:
      score = text::RougeL(input, reference);
      break;
    case TextSimilarityMetric::kBleu:
      score = Bleu(input, reference);
      break;
    case TextSimilarityMetric::kFuzzy:
      score = Fuzzy(input, reference);
      break;
  }
  if (t.pass_threshold > 0) return score >= t.pass_threshold ? 1.0 : 0.0;
  return score;
}

double GradeJsonSchema(const JsonSchemaSpec& s, const std::string& input) {
  const absl::string_view payload = JsonPayload(input);
  json parsed;
  try {
    parsed = json::parse(payload.begin(), payload.end(), nullptr, /*allow_exceptions=*/false);
  } catch (const std::exception&) {
    return 0.0;
  }
  if (parsed.is_discarded()) return 0.0;
  if (SchemaAccepts(s.schema, parsed)) return 1.0;
  return s.partial_credit ? 0.5 : 0.0;
}

absl::StatusOr<double> GradeAt(const GraderSpec& g, const std::string& path, GradeContext* ctx) {
  const std::string name = ctx->names[ctx->next_name++];
  double score = 0;
  if (g.kind == GraderKind::kMulti) {
    double weighted = 0, total = 0;
    for (size_t i = 0; i < g.multi.graders.size(); ++i) {
      const WeightedGraderSpec& w = g.multi.graders[i];
      SY_ASSIGN_OR_RETURN(
          double s, GradeAt(w.grader, absl::StrCat(path, ".multi.graders[", i, "].grader"), ctx));
      weighted += w.weight * s;
      total += w.weight;
    }
    score = weighted / total;  // ValidateGrader made total positive
  } else {
    std::vector<std::string> rendered;
    for (const auto& [tmpl, at] : Templates(g, path)) {
      SY_ASSIGN_OR_RETURN(std::vector<Piece> pieces, ParseTemplate(tmpl, at));
      SY_ASSIGN_OR_RETURN(std::string text, Render(pieces, ctx->output, ctx->item, at));
      rendered.push_back(std::move(text));
    }
    ctx->result->rendered[name + ".input"] = text::Utf8Lossy(rendered[0]);
    if (rendered.size() > 1)
      ctx->result->rendered[name + ".reference"] = text::Utf8Lossy(rendered[1]);
    switch (g.kind) {
      case GraderKind::kStringCheck: {
        SY_ASSIGN_OR_RETURN(score, GradeStringCheck(g.string_check, rendered[0], rendered[1],
                                                    path + ".string_check"));
        break;
      }
      case GraderKind::kTextSimilarity:
        score = GradeTextSimilarity(g.text_similarity, rendered[0], rendered[1]);
        break;
      case GraderKind::kJsonSchema:
        score = GradeJsonSchema(g.json_schema, rendered[0]);
        break;
      case GraderKind::kMulti:
        break;
    }
  }
  ctx->result->grader_rewards[name] = score;
  return score;
}

absl::Status CheckItemAt(const GraderSpec& g, const std::string& path, int level,
                         const json& item) {
  for (const auto& [tmpl, at] : Templates(g, path)) {
    SY_ASSIGN_OR_RETURN(std::vector<Piece> pieces, ParseTemplate(tmpl, at));
    for (const Piece& p : pieces) {
      if (p.kind != Piece::kItem) continue;
      std::string why;
      if (Resolve(item, p.path, &why) == nullptr)
        return Invalid(at, absl::StrCat(p.text, ": ", why));
    }
  }
  if (g.kind != GraderKind::kMulti) return absl::OkStatus();
  if (level >= kMaxGraderDepth && !g.multi.graders.empty()) return DepthError(path + ".multi");
  for (size_t i = 0; i < g.multi.graders.size(); ++i) {
    SY_RETURN_IF_ERROR(CheckItemAt(g.multi.graders[i].grader,
                                   absl::StrCat(path, ".multi.graders[", i, "].grader"), level + 1,
                                   item));
  }
  return absl::OkStatus();
}

}  // namespace

const char* GraderKindName(GraderKind kind) {
  const unsigned k = static_cast<unsigned>(kind);
  return k < 4 ? kKindNames[k] : "unknown";
}

bool operator==(const GraderSpec& a, const GraderSpec& b) {
  if (a.name != b.name || a.kind != b.kind) return false;
  const StringCheckSpec &s = a.string_check, &t = b.string_check;
  const TextSimilaritySpec &u = a.text_similarity, &v = b.text_similarity;
  return s.input == t.input && s.reference == t.reference && s.operation == t.operation &&
         s.ignore_case == t.ignore_case && s.trim == t.trim && u.input == v.input &&
         u.reference == v.reference && u.metric == v.metric && u.ignore_case == v.ignore_case &&
         u.pass_threshold == v.pass_threshold && a.json_schema.input == b.json_schema.input &&
         a.json_schema.schema == b.json_schema.schema &&
         a.json_schema.partial_credit == b.json_schema.partial_credit &&
         a.multi.graders == b.multi.graders;
}
bool operator!=(const GraderSpec& a, const GraderSpec& b) { return !(a == b); }
bool operator==(const WeightedGraderSpec& a, const WeightedGraderSpec& b) {
  return a.weight == b.weight && a.grader == b.grader;
}
bool operator!=(const WeightedGraderSpec& a, const WeightedGraderSpec& b) { return !(a == b); }

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

absl::Status ValidateGrader(const GraderSpec& spec, const std::string& field) {
  std::set<std::string> names;
  return ValidateAt(spec, field, 1, &names);
}

absl::Status CheckGraderItem(const GraderSpec& spec, const json& item) {
  return CheckItemAt(spec, "grader", 1, item);
}

absl::StatusOr<GradeResult> Grade(const GraderSpec& spec, const std::string& output_text,
                                  const json& item) {
  SY_RETURN_IF_ERROR(ValidateGrader(spec));
  GradeResult result;
  GradeContext ctx{output_text, item, {}, 0, &result};
  std::set<std::string> taken;
  CollectNames(spec, &taken);
  AssignNames(spec, &taken, &ctx.names);
  SY_ASSIGN_OR_RETURN(result.reward, GradeAt(spec, "grader", &ctx));
  return result;
}

}  // namespace switchyard::training
