#include "services/training/graders.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "shared/text/answer_metrics.h"

namespace switchyard::training {
namespace {

using json = nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Key;
using ::testing::Pair;

constexpr double kEps = 1e-12;

GraderSpec Parse(const std::string& text) {
  absl::StatusOr<GraderSpec> g = GraderFromJson(json::parse(text));
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : GraderSpec();
}

absl::Status ParseError(const std::string& text) {
  return GraderFromJson(json::parse(text)).status();
}

absl::Status ValidateError(const std::string& text) { return ValidateGrader(Parse(text)); }

// The reward of `grader` (JSON text) for `output` and `item`; NaN on error.
double Reward(const std::string& grader, const std::string& output, const json& item = {}) {
  absl::StatusOr<GradeResult> r =
      Grade(Parse(grader), output, item.is_null() ? json::object() : item);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->reward : std::nan("");
}

GraderSpec StringCheck(StringCheckOperation op, const std::string& reference) {
  GraderSpec g;
  g.kind = GraderKind::kStringCheck;
  g.string_check.operation = op;
  g.string_check.reference = reference;
  return g;
}

GraderSpec Similarity(TextSimilarityMetric metric, const std::string& reference) {
  GraderSpec g;
  g.kind = GraderKind::kTextSimilarity;
  g.text_similarity.metric = metric;
  g.text_similarity.reference = reference;
  return g;
}

GraderSpec Schema(const json& schema, bool partial_credit = false) {
  GraderSpec g;
  g.kind = GraderKind::kJsonSchema;
  g.json_schema.schema = schema;
  g.json_schema.partial_credit = partial_credit;
  return g;
}

GraderSpec Multi(std::vector<std::pair<GraderSpec, double>> subs) {
  GraderSpec g;
  g.kind = GraderKind::kMulti;
  for (auto& [sub, weight] : subs) g.multi.graders.push_back({std::move(sub), weight});
  return g;
}

double Score(const GraderSpec& g, const std::string& output, const json& item = json::object()) {
  absl::StatusOr<GradeResult> r = Grade(g, output, item);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->reward : std::nan("");
}

// ---------------------------------------------------------------------------
// GraderFromJson: the proto JSON mapping

TEST(GraderFromJsonTest, ReadsProtoFormStringCheck) {
  const GraderSpec g =
      Parse(R"({"name": "exact", "string_check": {"input": "{{sample.output_text}}",
      "reference": "{{item.answer}}", "operation": "eq", "ignore_case": true, "trim": true}})");
  EXPECT_EQ(g.name, "exact");
  EXPECT_EQ(g.kind, GraderKind::kStringCheck);
  EXPECT_EQ(g.string_check.input, "{{sample.output_text}}");
  EXPECT_EQ(g.string_check.reference, "{{item.answer}}");
  EXPECT_EQ(g.string_check.operation, StringCheckOperation::kEq);
  EXPECT_TRUE(g.string_check.ignore_case);
  EXPECT_TRUE(g.string_check.trim);
}

TEST(GraderFromJsonTest, AcceptsFullEnumNamesNumbersCamelCaseAndNull) {
  GraderSpec g = Parse(R"({"stringCheck": {"operation": "STRING_CHECK_OPERATION_REGEX",
      "ignoreCase": true}})");
  EXPECT_EQ(g.string_check.operation, StringCheckOperation::kRegex);
  EXPECT_TRUE(g.string_check.ignore_case);
  g = Parse(R"({"textSimilarity": {"metric": "TEXT_SIMILARITY_METRIC_ROUGE_L",
      "passThreshold": 0.5}})");
  EXPECT_EQ(g.kind, GraderKind::kTextSimilarity);
  EXPECT_EQ(g.text_similarity.metric, TextSimilarityMetric::kRougeL);
  EXPECT_EQ(g.text_similarity.pass_threshold, 0.5);
  EXPECT_EQ(Parse(R"({"text_similarity": {"metric": 3}})").text_similarity.metric,
            TextSimilarityMetric::kBleu);
  EXPECT_EQ(Parse(R"({"text_similarity": {"metric": "FUZZY"}})").text_similarity.metric,
            TextSimilarityMetric::kFuzzy);
  EXPECT_EQ(Parse(R"({"string_check": {"operation": "STRING_CHECK_OPERATION_UNSPECIFIED"}})")
                .string_check.operation,
            StringCheckOperation::kEq);
  EXPECT_EQ(Parse(R"({"string_check": {"operation": 0}})").string_check.operation,
            StringCheckOperation::kEq);
  g = Parse(R"({"string_check": {"operation": null, "trim": null, "input": null}})");
  EXPECT_EQ(g.string_check.operation, StringCheckOperation::kEq);
  EXPECT_FALSE(g.string_check.trim);
  g = Parse(R"({"jsonSchema": {"schema": {"type": "object"}, "partialCredit": true}})");
  EXPECT_EQ(g.kind, GraderKind::kJsonSchema);
  EXPECT_EQ(g.json_schema.schema, json({{"type", "object"}}));
  EXPECT_TRUE(g.json_schema.partial_credit);
}

TEST(GraderFromJsonTest, ReadsMultiWithWeightsDefaultingToOne) {
  const GraderSpec g = Parse(R"({"multi": {"graders": [
      {"grader": {"string_check": {"reference": "a"}}, "weight": 2},
      {"grader": {"text_similarity": {"reference": "b"}}}]}})");
  ASSERT_EQ(g.kind, GraderKind::kMulti);
  ASSERT_EQ(g.multi.graders.size(), 2u);
  EXPECT_EQ(g.multi.graders[0].weight, 2);
  EXPECT_EQ(g.multi.graders[0].grader.string_check.reference, "a");
  EXPECT_EQ(g.multi.graders[1].weight, 1);
  EXPECT_EQ(g.multi.graders[1].grader.kind, GraderKind::kTextSimilarity);
}

TEST(GraderFromJsonTest, UnknownEnumValueNamesTheFullPath) {
  const absl::Status s = ParseError(R"({"multi": {"graders": [
      {"grader": {"string_check": {"reference": "a"}}},
      {"grader": {"string_check": {"operation": "equals"}}}]}})");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            "grader.multi.graders[1].grader.string_check.operation: unknown value \"equals\" "
            "(use eq, ne, contains, not_contains, regex)");
  EXPECT_EQ(ParseError(R"({"text_similarity": {"metric": "rouge_1"}})").message(),
            "grader.text_similarity.metric: unknown value \"rouge_1\" "
            "(use token_f1, rouge_l, bleu, fuzzy)");
  EXPECT_THAT(ParseError(R"({"string_check": {"operation": 9}})").message(),
              HasSubstr("grader.string_check.operation: unknown value 9"));
}

TEST(GraderFromJsonTest, UnknownKeysAndWrongTypesNameThePath) {
  EXPECT_EQ(ParseError(R"({"string_check": {"refrence": "a"}})").message(),
            "grader.string_check.refrence: unknown field (known: input, reference, operation, "
            "ignore_case, trim)");
  EXPECT_EQ(ParseError(R"({"string_check": {"trim": "yes"}})").message(),
            "grader.string_check.trim: must be a boolean, got string");
  EXPECT_EQ(ParseError(R"({"string_check": {"ignoreCase": 1}})").message(),
            "grader.string_check.ignoreCase: must be a boolean, got number");
  EXPECT_EQ(ParseError(R"({"text_similarity": {"pass_threshold": "0.5"}})").message(),
            "grader.text_similarity.pass_threshold: must be a number, got string");
  EXPECT_EQ(ParseError(R"({"json_schema": {"schema": [1]}})").message(),
            "grader.json_schema.schema: must be an object, got array");
  EXPECT_EQ(ParseError(R"({"multi": {"graders": {"a": {}}}})").message(),
            "grader.multi.graders: must be an array, got object");
  EXPECT_EQ(ParseError(R"({"multi": {"graders": [{"weight": 1}]}})").message(),
            "grader.multi.graders[0].grader: required");
  EXPECT_EQ(ParseError(R"({"multi": {"graders": [{"grader": {}, "wieght": 1}]}})").message(),
            "grader.multi.graders[0].wieght: unknown field (known: grader, weight)");
  EXPECT_EQ(ParseError(R"({"string_check": {}, "nmae": "x"})").message(),
            "grader.nmae: unknown field (known: name, string_check, text_similarity, "
            "json_schema, multi)");
  EXPECT_EQ(ParseError(R"([1, 2])").message(), "grader: must be an object, got array");
  EXPECT_EQ(ParseError(R"({"string_check": "eq"})").message(),
            "grader.string_check: must be an object, got string");
  EXPECT_EQ(ParseError(R"({"string_check": {"ignore_case": true, "ignoreCase": true}})").message(),
            "grader.string_check: has both ignoreCase and ignore_case");
}

TEST(GraderFromJsonTest, NeedsExactlyOneKind) {
  EXPECT_EQ(ParseError(R"({"name": "x"})").message(),
            "grader: needs one of string_check, text_similarity, json_schema, multi");
  EXPECT_EQ(ParseError(R"({"string_check": {}, "multi": {}})").message(),
            "grader: has string_check and multi; a grader has exactly one kind");
}

TEST(GraderFromJsonTest, ErrorsStartWithTheGivenField) {
  const absl::Status s =
      GraderFromJson(json::parse(R"({"string_check": {"x": 1}})"), "reinforcement.grader").status();
  EXPECT_THAT(s.message(), HasSubstr("reinforcement.grader.string_check.x: unknown field"));
}

TEST(GraderFromJsonTest, RejectsNestingDeeperThanFourLevels) {
  json leaf = {{"string_check", json::object()}};
  json four = leaf;
  for (int i = 0; i < 3; ++i) four = {{"multi", {{"graders", {{{"grader", four}}}}}}};
  EXPECT_TRUE(GraderFromJson(four).ok());
  const json five = {{"multi", {{"graders", {{{"grader", four}}}}}}};
  EXPECT_EQ(GraderFromJson(five).status().message(),
            "grader.multi.graders[0].grader.multi.graders[0].grader.multi.graders[0].grader."
            "multi: sub-graders nest deeper than 4 levels");
}

TEST(GraderFromJsonTest, RejectsAbsurdlyDeepSchemaWithoutRecursingThroughIt) {
  std::string deep = R"({"json_schema": {"schema": )";
  for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
  deep += "1";
  for (int i = 0; i < 100000; ++i) deep += "}";
  deep += "}}";
  EXPECT_THAT(ParseError(deep).message(), HasSubstr("grader.json_schema.schema: nests deeper"));
}

// ---------------------------------------------------------------------------
// GraderFromJson: OpenAI's grader form

TEST(GraderFromJsonTest, ReadsOpenAiStringCheckOperations) {
  GraderSpec g = Parse(R"({"type": "string_check", "name": "match",
      "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq"})");
  EXPECT_EQ(g.name, "match");
  EXPECT_EQ(g.kind, GraderKind::kStringCheck);
  EXPECT_EQ(g.string_check.reference, "{{item.answer}}");
  EXPECT_EQ(g.string_check.operation, StringCheckOperation::kEq);
  EXPECT_EQ(Parse(R"({"type": "string_check", "operation": "ne"})").string_check.operation,
            StringCheckOperation::kNe);
  g = Parse(R"({"type": "string_check", "operation": "like"})");
  EXPECT_EQ(g.string_check.operation, StringCheckOperation::kContains);
  EXPECT_FALSE(g.string_check.ignore_case);
  g = Parse(R"({"type": "string_check", "operation": "ilike"})");
  EXPECT_EQ(g.string_check.operation, StringCheckOperation::kContains);
  EXPECT_TRUE(g.string_check.ignore_case);
  EXPECT_EQ(ParseError(R"({"type": "string_check", "operation": "regex"})").message(),
            "grader.operation: unknown value \"regex\" (use eq, ne, like, ilike)");
  EXPECT_EQ(ParseError(R"({"type": "string_check", "trim": true})").message(),
            "grader.trim: unknown field (known: type, name, input, reference, operation)");
}

TEST(GraderFromJsonTest, ReadsOpenAiTextSimilarityAndNamesUnsupportedMetrics) {
  const GraderSpec g =
      Parse(R"({"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
      "reference": "{{item.ref}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.8})");
  EXPECT_EQ(g.kind, GraderKind::kTextSimilarity);
  EXPECT_EQ(g.text_similarity.metric, TextSimilarityMetric::kFuzzy);
  EXPECT_EQ(g.text_similarity.pass_threshold, 0.8);
  EXPECT_EQ(
      Parse(R"({"type": "text_similarity", "evaluation_metric": "bleu"})").text_similarity.metric,
      TextSimilarityMetric::kBleu);
  EXPECT_EQ(Parse(R"({"type": "text_similarity", "evaluation_metric": "rouge_l"})")
                .text_similarity.metric,
            TextSimilarityMetric::kRougeL);
  EXPECT_EQ(Parse(R"({"type": "text_similarity", "evaluation_metric": "token_f1"})")
                .text_similarity.metric,
            TextSimilarityMetric::kTokenF1);
  for (const char* metric : {"rouge_1", "rouge_5", "gleu", "meteor", "cosine"}) {
    EXPECT_EQ(ParseError(absl::StrCat(R"({"type": "text_similarity", "evaluation_metric": ")",
                                      metric, "\"}"))
                  .message(),
              absl::StrCat("grader.evaluation_metric: unsupported value \"", metric,
                           "\" (supported: fuzzy_match, bleu, rouge_l, token_f1)"));
  }
  EXPECT_THAT(
      ParseError(R"({"type": "text_similarity", "evaluation_metric": "rouge_9"})").message(),
      HasSubstr("unknown value \"rouge_9\""));
}

TEST(GraderFromJsonTest, TurnsOpenAiCalculateOutputIntoWeights) {
  auto weights = [](const std::string& expr) {
    const GraderSpec g = Parse(absl::StrCat(R"({"type": "multi", "graders": {
        "a": {"type": "string_check", "name": "ignored", "reference": "x"},
        "b": {"type": "text_similarity", "reference": "y"},
        "c": {"json_schema": {}}}, "calculate_output": ")",
                                            expr, "\"}"));
    std::vector<std::pair<std::string, double>> out;
    for (const WeightedGraderSpec& w : g.multi.graders) out.emplace_back(w.grader.name, w.weight);
    return out;
  };
  using W = std::vector<std::pair<std::string, double>>;
  EXPECT_EQ(weights("a + b + c"), (W{{"a", 1}, {"b", 1}, {"c", 1}}));
  EXPECT_EQ(weights("0.25 * a + 0.75 * c"), (W{{"a", 0.25}, {"b", 0}, {"c", 0.75}}));
  EXPECT_EQ(weights("(a + 2*b) / 3"), (W{{"a", 1}, {"b", 2}, {"c", 0}}));
  EXPECT_EQ(weights("a * 3 + b / 2 + .5e1 * c"), (W{{"a", 3}, {"b", 0.5}, {"c", 5}}));
  EXPECT_EQ(weights("b"), (W{{"a", 0}, {"b", 1}, {"c", 0}}));
}

TEST(GraderFromJsonTest, RejectsOtherCalculateOutputExpressions) {
  auto error = [](const std::string& expr) -> std::string {
    return std::string(ParseError(absl::StrCat(R"({"type": "multi", "graders": {
        "a": {"type": "string_check"}, "b": {"type": "string_check"}},
        "calculate_output": ")",
                                               expr, "\"}"))
                           .message());
  };
  const std::string forms =
      "; use a weighted sum of grader keys: \"a + b\", \"0.3 * a + 0.7 * b\" or \"(a + b) / 2\"";
  EXPECT_EQ(error("min(a, b)"),
            "grader.calculate_output: unsupported expression \"min(a, b)\"" + forms);
  EXPECT_EQ(error("a - b"), "grader.calculate_output: unsupported expression \"a - b\"" + forms);
  EXPECT_EQ(error("a * b"), "grader.calculate_output: unsupported expression \"a * b\"" + forms);
  EXPECT_EQ(error("a + b / 2 ("),
            "grader.calculate_output: unsupported expression \"a + b / 2 (\"" + forms);
  EXPECT_EQ(error("-1 * a"), "grader.calculate_output: unsupported expression \"-1 * a\"" + forms);
  EXPECT_EQ(error(""), "grader.calculate_output: unsupported expression \"\"" + forms);
  EXPECT_EQ(error("a + c"), "grader.calculate_output: \"c\" is not a key of graders (keys: a, b)");
  EXPECT_EQ(error("a + a"), "grader.calculate_output: names \"a\" more than once");
  EXPECT_EQ(error("(a + b) / 0"), "grader.calculate_output: the divisor must be a positive number");
  EXPECT_EQ(error("a / 0"), "grader.calculate_output: divides by zero");
  EXPECT_EQ(
      ParseError(R"({"type": "multi", "graders": {"a": {"type": "string_check"}}})").message(),
      "grader.calculate_output: required");
}

TEST(GraderFromJsonTest, OpenAiFormNamesUnsupportedTypesAndNestedPaths) {
  EXPECT_EQ(ParseError(R"({"type": "python", "source": "def grade(): ..."})").message(),
            "grader.type: \"python\" graders are not supported (supported: string_check, "
            "text_similarity, multi; json_schema in the proto form)");
  EXPECT_THAT(ParseError(R"({"type": "score_model"})").message(), HasSubstr("not supported"));
  EXPECT_THAT(ParseError(R"({"type": "exact"})").message(),
              HasSubstr("grader.type: unknown value \"exact\""));
  EXPECT_EQ(ParseError(R"({"type": 3})").message(), "grader.type: must be a string, got number");
  EXPECT_EQ(ParseError(R"({"type": "multi", "calculate_output": "a", "graders": {
      "a": {"type": "string_check", "operation": "equals"}}})")
                .message(),
            "grader.graders.a.operation: unknown value \"equals\" (use eq, ne, like, ilike)");
}

TEST(GraderFromJsonTest, MixesFormsInsideMulti) {
  const GraderSpec g =
      Parse(R"({"type": "multi", "calculate_output": "(fmt + ans) / 2", "graders": {
      "fmt": {"json_schema": {"schema": {"type": "object"}}},
      "ans": {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{}", "operation": "like"}}})");
  ASSERT_EQ(g.multi.graders.size(), 2u);
  EXPECT_EQ(g.multi.graders[0].grader.name, "ans");  // keys in sorted order
  EXPECT_EQ(g.multi.graders[1].grader.kind, GraderKind::kJsonSchema);
  EXPECT_EQ(Score(g, "{}"), 1.0);
}

// ---------------------------------------------------------------------------
// GraderToJson

TEST(GraderToJsonTest, WritesProtoFormThatReadsBackEqual) {
  const GraderSpec g = Parse(R"({"name": "root", "multi": {"graders": [
      {"grader": {"name": "exact", "string_check": {"reference": "{{item.a}}", "operation": "regex",
                  "ignore_case": true, "trim": true}}, "weight": 2},
      {"grader": {"text_similarity": {"input": "x {{sample.output_text}}", "reference": "r",
                  "metric": "bleu", "ignore_case": true, "pass_threshold": 0.25}}, "weight": 0.5},
      {"grader": {"multi": {"graders": [{"grader": {"json_schema": {"schema":
                  {"type": "object", "required": ["a"]}, "partial_credit": true}}}]}}}]}})");
  const json j = GraderToJson(g);
  EXPECT_EQ(j["name"], "root");
  EXPECT_EQ(j["multi"]["graders"][0]["weight"], 2.0);
  EXPECT_EQ(j["multi"]["graders"][0]["grader"]["string_check"]["operation"], "regex");
  EXPECT_EQ(j["multi"]["graders"][1]["grader"]["text_similarity"]["metric"], "bleu");
  EXPECT_FALSE(j["multi"]["graders"][1]["grader"].contains("name"));
  absl::StatusOr<GraderSpec> back = GraderFromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, g);
  EXPECT_EQ(GraderToJson(*back), j);
  // And through text, as a stored job spec would go.
  EXPECT_EQ(GraderFromJson(json::parse(j.dump())).value(), g);
}

TEST(GraderToJsonTest, RoundTripsOpenAiFormAsWeights) {
  const GraderSpec g = Parse(R"({"type": "multi", "name": "m", "calculate_output": "0.5 * a + b",
      "graders": {"a": {"type": "string_check", "reference": "x", "operation": "ilike"},
                  "b": {"type": "text_similarity", "evaluation_metric": "fuzzy_match"}}})");
  const json j = GraderToJson(g);
  EXPECT_EQ(j["multi"]["graders"][0]["grader"]["name"], "a");
  EXPECT_EQ(j["multi"]["graders"][0]["weight"], 0.5);
  EXPECT_EQ(j["multi"]["graders"][0]["grader"]["string_check"]["operation"], "contains");
  EXPECT_EQ(j["multi"]["graders"][0]["grader"]["string_check"]["ignore_case"], true);
  EXPECT_EQ(GraderFromJson(j).value(), g);
}

// ---------------------------------------------------------------------------
// ValidateGrader

TEST(ValidateGraderTest, AcceptsWellFormedTemplates) {
  EXPECT_TRUE(ValidateGrader(Parse(R"({"string_check": {"input": "{{ sample.output_text }}",
      "reference": "A: {{item.a.b}} and {{  item.c  }} {{item.list.0}}"}})"))
                  .ok());
  EXPECT_TRUE(
      ValidateGrader(Parse(R"({"string_check": {"reference": "plain } { text }}"}})")).ok());
}

TEST(ValidateGraderTest, NamesTheFieldOfABadTemplate) {
  EXPECT_EQ(ValidateError(R"({"string_check": {"input": "{{sample.output}}"}})").message(),
            "grader.string_check.input: unknown template variable \"{{sample.output}}\" (use "
            "{{sample.output_text}} or {{item.FIELD}})");
  EXPECT_EQ(
      ValidateError(R"({"text_similarity": {"reference": "ok {{item.a}} {{item.b"}})").message(),
      "grader.text_similarity.reference: unclosed \"{{\" at byte 14");
  EXPECT_THAT(ValidateError(R"({"json_schema": {"input": "{{item.}}"}})").message(),
              HasSubstr("grader.json_schema.input: unknown template variable \"{{item.}}\""));
  EXPECT_THAT(ValidateError(R"({"string_check": {"reference": "{{item..a}}"}})").message(),
              HasSubstr("unknown template variable"));
  EXPECT_THAT(ValidateError(R"({"string_check": {"reference": "{{item}}"}})").message(),
              HasSubstr("unknown template variable"));
  EXPECT_THAT(ValidateError(R"({"string_check": {"reference": "{{item.a b}}"}})").message(),
              HasSubstr("unknown template variable"));
  EXPECT_THAT(ValidateError(R"({"multi": {"graders": [{"grader": {"string_check": {}}},
      {"grader": {"string_check": {"reference": "{{sample.text}}"}}}]}})")
                  .message(),
              HasSubstr("grader.multi.graders[1].grader.string_check.reference: unknown template"));
}

TEST(ValidateGraderTest, CompilesALiteralRegexOnly) {
  EXPECT_THAT(
      ValidateError(R"({"string_check": {"operation": "regex", "reference": "a(b"}})").message(),
      HasSubstr("grader.string_check.reference: regular expression does not compile: "));
  // With a template the pattern is only known when grading.
  EXPECT_TRUE(ValidateGrader(Parse(R"({"string_check": {"operation": "regex",
      "reference": "a({{item.x}}"}})"))
                  .ok());
  EXPECT_TRUE(ValidateGrader(Parse(R"({"string_check": {"operation": "regex",
      "reference": "^\\d+(\\.\\d+)?$"}})"))
                  .ok());
}

TEST(ValidateGraderTest, ChecksPassThresholdWeightsAndStructure) {
  EXPECT_EQ(ValidateError(R"({"text_similarity": {"pass_threshold": 1.5}})").message(),
            "grader.text_similarity.pass_threshold: must be in [0, 1], got 1.5");
  GraderSpec nan = Similarity(TextSimilarityMetric::kFuzzy, "x");
  nan.text_similarity.pass_threshold = std::nan("");
  EXPECT_THAT(ValidateGrader(nan).message(), HasSubstr("pass_threshold: must be in [0, 1]"));
  EXPECT_EQ(ValidateError(R"({"multi": {}})").message(),
            "grader.multi.graders: needs at least one sub-grader");
  EXPECT_EQ(ValidateError(R"({"multi": {"graders": [{"grader": {"string_check": {}},
      "weight": -1}]}})")
                .message(),
            "grader.multi.graders[0].weight: must be a finite number >= 0, got -1");
  EXPECT_EQ(ValidateError(R"({"multi": {"graders": [{"grader": {"string_check": {}},
      "weight": 0}]}})")
                .message(),
            "grader.multi.graders: weights must have a positive, finite sum");
  EXPECT_TRUE(ValidateGrader(Parse(R"({"multi": {"graders": [
      {"grader": {"string_check": {}}, "weight": 0}, {"grader": {"string_check": {}}}]}})"))
                  .ok());
}

TEST(ValidateGraderTest, RejectsNestingDeeperThanFourLevels) {
  GraderSpec g = StringCheck(StringCheckOperation::kEq, "x");
  for (int i = 0; i < 3; ++i) g = Multi({{g, 1}});
  EXPECT_TRUE(ValidateGrader(g).ok());
  g = Multi({{g, 1}});
  EXPECT_EQ(ValidateGrader(g).message(),
            "grader.multi.graders[0].grader.multi.graders[0].grader.multi.graders[0].grader."
            "multi: sub-graders nest deeper than 4 levels");
}

TEST(ValidateGraderTest, RejectsDuplicateExplicitNames) {
  EXPECT_EQ(ValidateError(R"({"name": "a", "multi": {"graders": [
      {"grader": {"name": "b", "string_check": {}}},
      {"grader": {"name": "a", "string_check": {}}}]}})")
                .message(),
            "grader.multi.graders[1].grader.name: \"a\" names another grader too");
}

TEST(ValidateGraderTest, AcceptsTheSupportedSchemaKeywords) {
  EXPECT_TRUE(ValidateGrader(Schema(json::parse(R"({
      "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "t", "description": "d",
      "type": "object", "required": ["a"], "additionalProperties": {"type": "string"},
      "properties": {
        "a": {"type": ["integer", "null"], "minimum": 0, "maximum": 9, "exclusiveMinimum": -1,
              "exclusiveMaximum": 10, "enum": [1, 2, null], "default": 1},
        "b": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]+$",
              "const": "ab"},
        "c": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 2},
        "d": true, "e": false}})")))
                  .ok());
}

TEST(ValidateGraderTest, NamesUnsupportedAndMalformedSchemaKeywords) {
  auto error = [](const char* schema) {
    return std::string(ValidateGrader(Schema(json::parse(schema))).message());
  };
  EXPECT_THAT(error(R"({"properties": {"a": {"anyOf": [{"type": "string"}]}}})"),
              HasSubstr("grader.json_schema.schema.properties.a.anyOf: unsupported keyword "
                        "(supported: type, properties, required"));
  EXPECT_THAT(error(R"({"$ref": "#/$defs/x"})"),
              HasSubstr("grader.json_schema.schema.$ref: unsupported keyword"));
  EXPECT_EQ(error(R"({"type": "str"})"),
            "grader.json_schema.schema.type: unknown type \"str\" (use null, boolean, object, "
            "array, number, integer, string)");
  EXPECT_THAT(error(R"({"type": []})"), HasSubstr("schema.type: must be a type name"));
  EXPECT_THAT(error(R"({"items": [{"type": "string"}]})"),
              HasSubstr("schema.items: must be a schema; the tuple form"));
  EXPECT_THAT(error(R"({"items": {"minLength": -1}})"),
              HasSubstr("schema.items.minLength: must be a non-negative integer"));
  EXPECT_THAT(error(R"({"maxItems": 1.5})"), HasSubstr("schema.maxItems: must be a non-negative"));
  EXPECT_THAT(error(R"({"minimum": "3"})"),
              HasSubstr("schema.minimum: must be a number, got string"));
  EXPECT_THAT(error(R"({"exclusiveMinimum": true})"),
              HasSubstr("schema.exclusiveMinimum: must be a number, got boolean"));
  EXPECT_THAT(error(R"({"pattern": "(("})"),
              HasSubstr("schema.pattern: regular expression does not compile"));
  EXPECT_THAT(error(R"({"required": "a"})"), HasSubstr("schema.required: must be an array"));
  EXPECT_THAT(error(R"({"enum": []})"), HasSubstr("schema.enum: must be a non-empty array"));
  EXPECT_THAT(error(R"({"properties": {"a": 3}})"),
              HasSubstr("schema.properties.a: must be an object or a boolean, got number"));
  EXPECT_THAT(error(R"({"additionalProperties": "no"})"),
              HasSubstr("schema.additionalProperties: must be an object or a boolean"));
}

TEST(ValidateGraderTest, ErrorsStartWithTheGivenField) {
  EXPECT_EQ(
      ValidateGrader(Similarity(TextSimilarityMetric::kBleu, "{{x}}"), "spec.grader").message(),
      "spec.grader.text_similarity.reference: unknown template variable \"{{x}}\" (use "
      "{{sample.output_text}} or {{item.FIELD}})");
}

// ---------------------------------------------------------------------------
// CheckGraderItem

TEST(CheckGraderItemTest, AcceptsAnItemWithEveryField) {
  const GraderSpec g = Parse(R"({"multi": {"graders": [
      {"grader": {"string_check": {"reference": "{{item.answer}}"}}},
      {"grader": {"text_similarity": {"input": "{{item.meta.lang}}: {{sample.output_text}}",
                                      "reference": "{{item.refs.1}}"}}}]}})");
  EXPECT_TRUE(CheckGraderItem(
                  g, json::parse(R"({"answer": 4, "meta": {"lang": null}, "refs": ["a", "b"]})"))
                  .ok());
}

TEST(CheckGraderItemTest, NamesTheTemplateAndThePath) {
  const GraderSpec g = Parse(R"({"multi": {"graders": [
      {"grader": {"string_check": {"reference": "{{item.answer}}"}}},
      {"grader": {"text_similarity": {"reference": "{{ item.meta.lang }}"}}}]}})");
  EXPECT_EQ(CheckGraderItem(g, json::parse(R"({"meta": {"lang": "en"}})")).message(),
            "grader.multi.graders[0].grader.string_check.reference: {{item.answer}}: the "
            "example has no field \"answer\"");
  EXPECT_EQ(CheckGraderItem(g, json::parse(R"({"answer": 1, "meta": {}})")).message(),
            "grader.multi.graders[1].grader.text_similarity.reference: {{ item.meta.lang }}: "
            "item.meta has no field \"lang\"");
  EXPECT_EQ(CheckGraderItem(g, json::parse(R"({"answer": 1, "meta": "en"})")).message(),
            "grader.multi.graders[1].grader.text_similarity.reference: {{ item.meta.lang }}: "
            "item.meta is string, not an object");
  EXPECT_EQ(CheckGraderItem(g, json::parse("[1]")).message(),
            "grader.multi.graders[0].grader.string_check.reference: {{item.answer}}: the "
            "example is array, not an object");
}

TEST(CheckGraderItemTest, IndexesArraysByNumber) {
  const GraderSpec g = StringCheck(StringCheckOperation::kEq, "{{item.refs.2}}");
  EXPECT_EQ(CheckGraderItem(g, json::parse(R"({"refs": ["a", "b"]})")).message(),
            "grader.string_check.reference: {{item.refs.2}}: item.refs has 2 elements, no index 2");
  EXPECT_EQ(CheckGraderItem(StringCheck(StringCheckOperation::kEq, "{{item.refs.x}}"),
                            json::parse(R"({"refs": ["a"]})"))
                .message(),
            "grader.string_check.reference: {{item.refs.x}}: item.refs is an array; \"x\" is not "
            "an index");
}

TEST(CheckGraderItemTest, ReportsMalformedTemplates) {
  EXPECT_THAT(
      CheckGraderItem(StringCheck(StringCheckOperation::kEq, "{{item.a"), json::object()).message(),
      HasSubstr("grader.string_check.reference: unclosed"));
}

// ---------------------------------------------------------------------------
// Grade: string_check

TEST(GradeStringCheckTest, AppliesEachOperation) {
  const json item = {{"answer", "Paris"}};
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kEq, "{{item.answer}}"), "Paris", item), 1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kEq, "{{item.answer}}"), "paris", item), 0.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kNe, "{{item.answer}}"), "Lyon", item), 1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kNe, "{{item.answer}}"), "Paris", item), 0.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kContains, "Paris"), "It is Paris.", item),
            1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kContains, "Paris"), "It is Lyon.", item), 0.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kNotContains, "sorry"), "Paris", item), 1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kNotContains, "sorry"), "sorry, no", item),
            0.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^\\d{4}-\\d{2}$"), "2024-05", item),
            1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^\\d{4}-\\d{2}$"), "2024-5", item),
            0.0);
  // Regex searches rather than matching the whole input.
  EXPECT_EQ(
      Score(StringCheck(StringCheckOperation::kRegex, "answer: [A-D]"), "so answer: C.", item),
      1.0);
}

TEST(GradeStringCheckTest, TrimsBothSides) {
  GraderSpec g = StringCheck(StringCheckOperation::kEq, " {{item.answer}}\n");
  const json item = {{"answer", "42"}};
  EXPECT_EQ(Score(g, "\t42  ", item), 0.0);
  g.string_check.trim = true;
  EXPECT_EQ(Score(g, "\t42  ", item), 1.0);
  // For regex only the input is trimmed: the pattern is used as written.
  GraderSpec re = StringCheck(StringCheckOperation::kRegex, "^42$");
  re.string_check.trim = true;
  EXPECT_EQ(Score(re, "  42\n"), 1.0);
}

TEST(GradeStringCheckTest, IgnoresCaseBeyondAscii) {
  GraderSpec g = StringCheck(StringCheckOperation::kEq, "{{item.answer}}");
  g.string_check.ignore_case = true;
  const std::pair<const char*, const char*> cases[] = {
      {"PARIS", "paris"},    // ASCII
      {"CAFÉ", "café"},      // Latin-1
      {"ΑΘΗΝΑ", "αθηνα"},    // Greek
      {"МОСКВА", "москва"},  // Cyrillic
      {"ŁÓDŹ", "łódź"},      // Latin Extended-A
  };
  for (const auto& [output, answer] : cases) {
    EXPECT_EQ(Score(g, output, {{"answer", answer}}), 1.0) << output;
  }
  EXPECT_EQ(Score(g, "CAFE", {{"answer", "café"}}), 0.0);
  g.string_check.ignore_case = false;
  EXPECT_EQ(Score(g, "CAFÉ", {{"answer", "café"}}), 0.0);

  GraderSpec contains = StringCheck(StringCheckOperation::kContains, "ÉTÉ");
  contains.string_check.ignore_case = true;
  EXPECT_EQ(Score(contains, "un été chaud"), 1.0);
  GraderSpec re = StringCheck(StringCheckOperation::kRegex, "ÉTÉ\\s+CHAUD");
  re.string_check.ignore_case = true;
  EXPECT_EQ(Score(re, "un été  chaud"), 1.0);
  re.string_check.ignore_case = false;
  EXPECT_EQ(Score(re, "un été  chaud"), 0.0);
}

TEST(GradeStringCheckTest, RegexUsesEcmaScriptSyntaxByCodePoint) {
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^\\u00e9t\\u00E9$"), "été"), 1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^.{3}$"), "été"), 1.0);  // 3 chars
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "a$"), "a\n"), 0.0);  // $ = end only
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "(?=.*x)(?=.*y)"), "y..x"), 1.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "(ab)\\1"), "xabab"), 1.0);
}

TEST(GradeStringCheckTest, RegexFromATemplateIsCheckedWhenGrading) {
  const GraderSpec g = StringCheck(StringCheckOperation::kRegex, "^{{item.pattern}}$");
  EXPECT_EQ(Score(g, "abc", {{"pattern", "[a-c]+"}}), 1.0);
  const absl::StatusOr<GradeResult> r = Grade(g, "abc", {{"pattern", "[a-"}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(),
              HasSubstr("grader.string_check.reference: regular expression does not compile"));
}

TEST(GradeStringCheckTest, RegexSearchesOnlyTheFirst20000Bytes) {
  const GraderSpec x = StringCheck(StringCheckOperation::kRegex, "x");
  EXPECT_EQ(Score(x, std::string(kRegexMaxInputBytes - 1, 'a') + "x"), 1.0);
  EXPECT_EQ(Score(x, std::string(kRegexMaxInputBytes, 'a') + "x"), 0.0);
  // The cut does not split a character: "é" straddling the limit is dropped whole.
  const GraderSpec e = StringCheck(StringCheckOperation::kRegex, "é");
  EXPECT_EQ(Score(e, std::string(kRegexMaxInputBytes - 1, 'a') + "é"), 0.0);
  EXPECT_EQ(Score(e, std::string(kRegexMaxInputBytes - 2, 'a') + "é"), 1.0);
}

TEST(GradeStringCheckTest, PathologicalRegexEndsWithoutCrashing) {
  // std::regex overflows the stack on the first; the second backtracks
  // exponentially. Both hit the limits and count as no match.
  const std::string many_a(kRegexMaxInputBytes, 'a');
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^(a|b)*c"), many_a), 0.0);
  const std::string almost(kRegexMaxInputBytes - 1, 'a');
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^(a+)+$"), almost + "!"), 0.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "(a|aa)+$"), almost + "!"), 0.0);
  EXPECT_EQ(Score(StringCheck(StringCheckOperation::kRegex, "^(a|b)*$"), many_a), 1.0);
}

// ---------------------------------------------------------------------------
// Grade: text_similarity

TEST(GradeTextSimilarityTest, TokenF1AndRougeLAreTheSharedMetrics) {
  const std::string out = "The cat sat on the mat", ref = "a cat was on the mat";
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kTokenF1, ref), out), text::TokenF1(out, ref),
              kEps);
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kRougeL, ref), out), text::RougeL(out, ref),
              kEps);
  // cat sat on mat vs cat was on mat: 3 common of 4 and 4 -> F1 = 0.75; LCS 3 -> 0.75.
  EXPECT_NEAR(text::TokenF1(out, ref), 0.75, kEps);
  EXPECT_NEAR(text::RougeL(out, ref), 0.75, kEps);
}

TEST(GradeTextSimilarityTest, BleuMatchesAWorkedExample) {
  // Candidate tokens (AnswerTokens): cat sat on mat today (c = 5)
  // Reference tokens:                cat sat on red mat   (r = 5)
  //   1-grams: cat sat on mat match, today does not      p1 = 4/5
  //   2-grams: "cat sat", "sat on" of 4                  p2 = (2+1)/(4+1) = 3/5
  //   3-grams: "cat sat on" of 3                          p3 = (1+1)/(3+1) = 1/2
  //   4-grams: none of 2                                  p4 = (0+1)/(2+1) = 1/3
  //   c = r, so the brevity penalty is exp(1 - 5/5) = 1.
  //   BLEU = (4/5 * 3/5 * 1/2 * 1/3)^(1/4) = 0.08^(1/4) = 0.531829...
  const GraderSpec g = Similarity(TextSimilarityMetric::kBleu, "Cat sat on red mat.");
  EXPECT_NEAR(Score(g, "cat sat on the mat today"), std::pow(0.08, 0.25), kEps);
  EXPECT_NEAR(Score(g, "cat sat on the mat today"), 0.5318295896944989, 1e-12);
}

TEST(GradeTextSimilarityTest, BleuAppliesTheBrevityPenalty) {
  // cat sat vs cat sat on mat: p1 = 2/2, p2 = (1+1)/(1+1), p3 = p4 = (0+1)/(0+1), all 1;
  // c = 2 < r = 4, so BLEU = exp(1 - 4/2) = e^-1.
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kBleu, "cat sat on mat"), "cat sat"),
              std::exp(-1.0), kEps);
  // A longer candidate has no penalty; identical texts score 1.
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kBleu, "cat sat on mat"), "cat sat on mat"),
              1.0, kEps);
  EXPECT_EQ(Score(Similarity(TextSimilarityMetric::kBleu, "cat"), "dog"), 0.0);
  EXPECT_EQ(Score(Similarity(TextSimilarityMetric::kBleu, ""), "the"), 1.0);  // both empty
  EXPECT_EQ(Score(Similarity(TextSimilarityMetric::kBleu, "cat"), ""), 0.0);
}

TEST(GradeTextSimilarityTest, FuzzyIsLevenshteinOverCodePoints) {
  // kitten -> sitting: 3 edits, longer length 7.
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kFuzzy, "sitting"), "kitten"), 1 - 3.0 / 7,
              kEps);
  // One substituted character of 4, though "é" is 2 bytes.
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kFuzzy, "cafe"), "café"), 0.75, kEps);
  EXPECT_NEAR(Score(Similarity(TextSimilarityMetric::kFuzzy, "日本語"), "日本"), 2.0 / 3, kEps);
  EXPECT_EQ(Score(Similarity(TextSimilarityMetric::kFuzzy, ""), ""), 1.0);
  EXPECT_EQ(Score(Similarity(TextSimilarityMetric::kFuzzy, "abc"), ""), 0.0);
  // Case matters unless ignore_case.
  GraderSpec g = Similarity(TextSimilarityMetric::kFuzzy, "ΑΒΓΔ");
  EXPECT_EQ(Score(g, "αβγδ"), 0.0);
  g.text_similarity.ignore_case = true;
  EXPECT_EQ(Score(g, "αβγδ"), 1.0);
}

TEST(GradeTextSimilarityTest, PassThresholdMakesTheScoreBinary) {
  GraderSpec g = Similarity(TextSimilarityMetric::kFuzzy, "sitting");
  g.text_similarity.pass_threshold = 0.5;  // 4/7 = 0.571 passes
  EXPECT_EQ(Score(g, "kitten"), 1.0);
  g.text_similarity.pass_threshold = 0.6;
  EXPECT_EQ(Score(g, "kitten"), 0.0);
  g.text_similarity.pass_threshold = 1;
  EXPECT_EQ(Score(g, "sitting"), 1.0);
}

TEST(GradeTextSimilarityTest, IgnoreCaseFoldsNonAsciiForTokenMetrics) {
  GraderSpec g = Similarity(TextSimilarityMetric::kTokenF1, "ÉCOLE");
  EXPECT_EQ(Score(g, "école"), 0.0);  // SQuAD normalisation lowers ASCII only
  g.text_similarity.ignore_case = true;
  EXPECT_EQ(Score(g, "école"), 1.0);
}

// ---------------------------------------------------------------------------
// Grade: json_schema

const json kAnswerSchema = json::parse(R"({
    "type": "object", "required": ["answer", "confidence"], "additionalProperties": false,
    "properties": {"answer": {"type": "string", "minLength": 1},
                   "confidence": {"type": "number", "minimum": 0, "maximum": 1}}})");

TEST(GradeJsonSchemaTest, ScoresMatchMismatchAndPartialCredit) {
  EXPECT_EQ(Score(Schema(kAnswerSchema), R"({"answer": "Paris", "confidence": 0.9})"), 1.0);
  EXPECT_EQ(Score(Schema(kAnswerSchema), R"({"answer": "Paris"})"), 0.0);
  EXPECT_EQ(Score(Schema(kAnswerSchema, true), R"({"answer": "Paris"})"), 0.5);
  EXPECT_EQ(Score(Schema(kAnswerSchema, true), R"({"answer": "Paris", "confidence": 2})"), 0.5);
  EXPECT_EQ(Score(Schema(kAnswerSchema, true), R"({"answer": "Paris", "confidence": 1, "x": 1})"),
            0.5);
  EXPECT_EQ(Score(Schema(kAnswerSchema, true), "not json"), 0.0);
  EXPECT_EQ(Score(Schema(kAnswerSchema, true), R"({"answer": "Paris",)"), 0.0);
  EXPECT_EQ(Score(Schema(json::object()), "[1, 2]"), 1.0);  // {} accepts any JSON
  EXPECT_EQ(Score(Schema(json::object()), ""), 0.0);
}

TEST(GradeJsonSchemaTest, UnwrapsAFencedBlock) {
  const GraderSpec g = Schema(kAnswerSchema);
  EXPECT_EQ(Score(g, "```json\n{\"answer\": \"a\", \"confidence\": 1}\n```"), 1.0);
  EXPECT_EQ(Score(g, "  ```\n{\"answer\": \"a\", \"confidence\": 1}\n```  \n"), 1.0);
  EXPECT_EQ(Score(g, "Here it is:\n```JSON\n{\"answer\": \"a\", \"confidence\": 1}\n```\nDone."),
            1.0);
  EXPECT_EQ(Score(g, "```json {\"answer\": \"a\", \"confidence\": 1}```"), 1.0);
  // ``` inside a JSON string is not a fence.
  EXPECT_EQ(Score(g, "{\"answer\": \"```json x```\", \"confidence\": 1}"), 1.0);
  EXPECT_EQ(Score(g, "```json\n{\"answer\": \"a\", \"confidence\": 1}"), 0.0);  // unclosed
}

TEST(GradeJsonSchemaTest, ChecksEachKeyword) {
  auto accepts = [](const char* schema, const char* value) {
    return Score(Schema(json::parse(schema)), value) == 1.0;
  };
  EXPECT_TRUE(accepts(R"({"type": "integer"})", "3"));
  EXPECT_TRUE(accepts(R"({"type": "integer"})", "3.0"));
  EXPECT_FALSE(accepts(R"({"type": "integer"})", "3.5"));
  EXPECT_TRUE(accepts(R"({"type": "number"})", "3.5"));
  EXPECT_FALSE(accepts(R"({"type": "number"})", "\"3\""));
  EXPECT_TRUE(accepts(R"({"type": ["string", "null"]})", "null"));
  EXPECT_FALSE(accepts(R"({"type": ["string", "null"]})", "false"));
  EXPECT_TRUE(accepts(R"({"type": "boolean"})", "false"));
  EXPECT_TRUE(accepts(R"({"type": "array"})", "[]"));
  EXPECT_TRUE(accepts(R"({"enum": ["a", 1, null]})", "1.0"));
  EXPECT_FALSE(accepts(R"({"enum": ["a", 1, null]})", "\"b\""));
  EXPECT_TRUE(accepts(R"({"const": {"a": [1]}})", R"({"a": [1]})"));
  EXPECT_FALSE(accepts(R"({"const": {"a": [1]}})", R"({"a": [2]})"));
  EXPECT_TRUE(accepts(R"({"minimum": 1, "maximum": 2})", "2"));
  EXPECT_FALSE(accepts(R"({"minimum": 1, "maximum": 2})", "2.01"));
  EXPECT_FALSE(accepts(R"({"exclusiveMaximum": 2})", "2"));
  EXPECT_FALSE(accepts(R"({"exclusiveMinimum": 2})", "2"));
  EXPECT_TRUE(accepts(R"({"exclusiveMinimum": 2})", "2.5"));
  EXPECT_TRUE(accepts(R"({"minimum": 5})", "\"not a number\""));  // applies to numbers only
  EXPECT_TRUE(accepts(R"({"minLength": 2, "maxLength": 2})", "\"日本\""));  // code points
  EXPECT_FALSE(accepts(R"({"maxLength": 2})", "\"日本語\""));
  EXPECT_FALSE(accepts(R"({"minLength": 1})", "\"\""));
  EXPECT_TRUE(accepts(R"({"pattern": "^[A-Z]{2}\\d$"})", "\"AB1\""));
  EXPECT_FALSE(accepts(R"({"pattern": "^[A-Z]{2}\\d$"})", "\"ab1\""));
  EXPECT_TRUE(accepts(R"({"pattern": "\\d"})", "\"x1x\""));  // searched, not anchored
  EXPECT_TRUE(accepts(R"({"items": {"type": "string"}, "minItems": 1, "maxItems": 2})", "[\"a\"]"));
  EXPECT_FALSE(accepts(R"({"items": {"type": "string"}})", "[\"a\", 1]"));
  EXPECT_FALSE(accepts(R"({"minItems": 1})", "[]"));
  EXPECT_FALSE(accepts(R"({"maxItems": 1})", "[1, 2]"));
  EXPECT_TRUE(accepts(R"({"additionalProperties": {"type": "integer"}})", R"({"a": 1, "b": 2})"));
  EXPECT_FALSE(accepts(R"({"additionalProperties": {"type": "integer"}})", R"({"a": "x"})"));
  EXPECT_TRUE(accepts(R"({"properties": {"a": false}})", R"({"b": 1})"));
  EXPECT_FALSE(accepts(R"({"properties": {"a": false}})", R"({"a": 1})"));
  EXPECT_TRUE(accepts(R"({"properties": {"a": {"properties": {"b": {"type": "string"}}}}})",
                      R"({"a": {"b": "x"}})"));
  EXPECT_FALSE(accepts(R"({"properties": {"a": {"properties": {"b": {"type": "string"}}}}})",
                       R"({"a": {"b": 1}})"));
}

TEST(GradeJsonSchemaTest, ParsesDeeplyNestedOutputWithoutTrouble) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_EQ(Score(Schema(json::parse(R"({"type": "array"})")), deep), 1.0);
  EXPECT_EQ(Score(Schema(json::parse(R"({"items": {"items": {"type": "number"}}})"), true), deep),
            0.5);
}

// ---------------------------------------------------------------------------
// Grade: multi, names, rendering

TEST(GradeMultiTest, TakesTheWeightedMean) {
  const GraderSpec g = Multi({{StringCheck(StringCheckOperation::kEq, "yes"), 3},
                              {StringCheck(StringCheckOperation::kContains, "no"), 1}});
  EXPECT_NEAR(Score(g, "yes"), 0.75, kEps);
  EXPECT_NEAR(Score(g, "no"), 0.25, kEps);
  EXPECT_NEAR(Score(g, "yes no"), 0.25, kEps);
}

TEST(GradeMultiTest, NamesEveryGraderAndReportsEachReward) {
  GraderSpec inner = Multi({{StringCheck(StringCheckOperation::kContains, "a"), 1},
                            {Similarity(TextSimilarityMetric::kFuzzy, "{{item.ref}}"), 1}});
  GraderSpec named = StringCheck(StringCheckOperation::kEq, "{{item.ref}}");
  named.name = "exact";
  GraderSpec taken = StringCheck(StringCheckOperation::kNe, "zzz");
  taken.name = "string_check";  // the auto names go around it
  const GraderSpec g = Multi(
      {{StringCheck(StringCheckOperation::kContains, "b"), 1}, {inner, 2}, {named, 1}, {taken, 0}});
  const absl::StatusOr<GradeResult> r = Grade(g, "abcd", {{"ref", "abcd"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->grader_rewards,
              ElementsAre(Pair("exact", 1.0), Pair("multi", 1.0), Pair("multi_2", 1.0),
                          Pair("string_check", 1.0), Pair("string_check_2", 1.0),
                          Pair("string_check_3", 1.0), Pair("text_similarity", 1.0)));
  EXPECT_THAT(r->rendered,
              ElementsAre(Key("exact.input"), Key("exact.reference"), Key("string_check.input"),
                          Key("string_check.reference"), Key("string_check_2.input"),
                          Key("string_check_2.reference"), Key("string_check_3.input"),
                          Key("string_check_3.reference"), Key("text_similarity.input"),
                          Key("text_similarity.reference")));
  EXPECT_EQ(r->rendered.at("string_check_2.reference"), "b");  // the first, in pre-order
  EXPECT_EQ(r->rendered.at("string_check_3.reference"), "a");  // inside the nested multi
  EXPECT_EQ(r->rendered.at("text_similarity.reference"), "abcd");
  EXPECT_EQ(r->rendered.at("exact.input"), "abcd");

  const absl::StatusOr<GradeResult> part = Grade(g, "bbcd", {{"ref", "abcd"}});
  ASSERT_TRUE(part.ok());
  // Inner multi: contains "a" 0, fuzzy(bbcd, abcd) = 1 - 1/4, mean 0.375. Root:
  // contains "b" 1 (weight 1), inner 0.375 (2), exact 0 (1), the other 1 (0).
  EXPECT_NEAR(part->grader_rewards.at("multi_2"), 0.375, kEps);
  EXPECT_NEAR(part->reward, (1 + 2 * 0.375) / 4, kEps);
  EXPECT_EQ(part->grader_rewards.at("multi"), part->reward);
}

TEST(GradeMultiTest, ScoresTheOpenAiFormAsItsWeights) {
  const char* grader =
      R"({"type": "multi", "calculate_output": "(3 * exact + fmt) / 4", "graders": {
      "exact": {"type": "string_check", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"},
      "fmt": {"type": "string_check", "input": "{{sample.output_text}}", "reference": "4",
              "operation": "like"}}})";
  EXPECT_NEAR(Reward(grader, "4", {{"answer", 4}}), 1.0, kEps);
  EXPECT_NEAR(Reward(grader, "44", {{"answer", 4}}), 0.25, kEps);
}

TEST(GradeTest, RendersItemValuesAsText) {
  const GraderSpec g = StringCheck(
      StringCheckOperation::kEq,
      "{{item.n}}|{{item.f}}|{{item.i}}|{{item.b}}|{{item.z}}|{{item.o}}|{{item.a.1}}|{{item.s}}");
  const json item = json::parse(
      R"({"n": 42.0, "f": 2.5, "i": -7, "b": true, "z": null, "o": {"k": [1, "x"]},
          "a": ["p", "q"], "s": "text"})");
  const absl::StatusOr<GradeResult> r = Grade(g, "", item);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rendered.at("string_check.reference"),
            R"(42|2.5|-7|true|null|{"k":[1,"x"]}|q|text)");
}

TEST(GradeTest, DoesNotExpandTemplatesInsideSubstitutedText) {
  const GraderSpec g = StringCheck(StringCheckOperation::kEq, "{{item.answer}}");
  const absl::StatusOr<GradeResult> r =
      Grade(g, "{{item.answer}}", {{"answer", "{{sample.output_text}}"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rendered.at("string_check.input"), "{{item.answer}}");
  EXPECT_EQ(r->rendered.at("string_check.reference"), "{{sample.output_text}}");
  EXPECT_EQ(r->reward, 0.0);
}

TEST(GradeTest, FailsOnAnInvalidSpecOrAMissingField) {
  const absl::StatusOr<GradeResult> missing =
      Grade(StringCheck(StringCheckOperation::kEq, "{{item.answer}}"), "x", {{"other", 1}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(),
            "grader.string_check.reference: {{item.answer}}: the example has no field \"answer\"");
  EXPECT_EQ(Grade(Multi({}), "x", json::object()).status().message(),
            "grader.multi.graders: needs at least one sub-grader");
}

TEST(GradeTest, RefusesATemplateThatRendersPastTheLimit) {
  std::string repeated;
  for (int i = 0; i < 20; ++i) repeated += "{{sample.output_text}}";
  const GraderSpec g = StringCheck(StringCheckOperation::kEq, repeated);
  const std::string output(kMaxRenderedBytes / 16, 'x');
  const absl::StatusOr<GradeResult> r = Grade(g, output, json::object());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("grader.string_check.reference: renders to more"));
  // The output alone, at the limit, is fine.
  EXPECT_TRUE(Grade(StringCheck(StringCheckOperation::kEq, "a"),
                    std::string(kMaxRenderedBytes, 'x'), json::object())
                  .ok());
}

TEST(GradeTest, NeverFailsOnGarbageOutput) {
  GraderSpec schema = Schema(kAnswerSchema, true);
  schema.json_schema.input = "```json\n{{sample.output_text}}";
  GraderSpec ci = StringCheck(StringCheckOperation::kContains, "\xC3");
  ci.string_check.ignore_case = true;
  GraderSpec re = StringCheck(StringCheckOperation::kRegex, "(\\w+\\s?)*$");
  re.string_check.ignore_case = true;
  GraderSpec fold_similarity = Similarity(TextSimilarityMetric::kBleu, "{{item.r}}");
  fold_similarity.text_similarity.ignore_case = true;
  const GraderSpec all = Multi({{StringCheck(StringCheckOperation::kEq, "{{item.r}}"), 1},
                                {ci, 1},
                                {re, 1},
                                {Similarity(TextSimilarityMetric::kTokenF1, "{{item.r}}"), 1},
                                {Similarity(TextSimilarityMetric::kRougeL, "{{item.r}}"), 1},
                                {fold_similarity, 1},
                                {Similarity(TextSimilarityMetric::kFuzzy, "{{item.r}}"), 1},
                                {schema, 1}});
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string output(rng() % 300, '\0');
    for (char& c : output) c = static_cast<char>(rng());
    std::string ref(rng() % 50, '\0');
    for (char& c : ref) c = static_cast<char>(rng());
    const absl::StatusOr<GradeResult> r = Grade(all, output, {{"r", ref}});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_GE(r->reward, 0.0);
    EXPECT_LE(r->reward, 1.0);
    for (const auto& [name, reward] : r->grader_rewards) {
      EXPECT_GE(reward, 0.0) << name;
      EXPECT_LE(reward, 1.0) << name;
    }
  }
}

TEST(GradeTest, RenderedTextIsValidUtf8ButGradingSeesTheBytes) {
  const GraderSpec g = StringCheck(StringCheckOperation::kEq, "a\xFF");
  const absl::StatusOr<GradeResult> r = Grade(g, "a\xFF", json::object());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->reward, 1.0);
  EXPECT_EQ(r->rendered.at("string_check.input"), "a\xEF\xBF\xBD");
  // Invalid bytes equal no character in the fuzzy metric: 0xE9 is not "é" (U+00E9).
  EXPECT_EQ(Score(Similarity(TextSimilarityMetric::kFuzzy, "\xE9"), "é"), 0.0);
}

}  // namespace
}  // namespace switchyard::training
