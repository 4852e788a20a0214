#include "services/training/graders.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "services/training/grader_text.h"
#include "services/training/json_schema_check.h"
#include "shared/core/status_macros.h"
#include "shared/text/answer_metrics.h"
#include "shared/text/unicode.h"

namespace switchyard::training {
namespace {

using json = nlohmann::json;

absl::Status Invalid(absl::string_view path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

absl::Status DepthError(const std::string& multi_path) {
  return Invalid(multi_path,
                 absl::StrCat("sub-graders nest deeper than ", kMaxGraderDepth, " levels"));
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
