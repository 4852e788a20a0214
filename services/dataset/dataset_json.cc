#include "services/dataset/dataset_json.h"

namespace switchyard::dataset {
namespace {

nlohmann::json SummaryToJson(const Summary& s) {
  return {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"min", s.min}, {"max", s.max}};
}

Summary SummaryFromJson(const nlohmann::json& j) {
  Summary s;
  s.mean = j.value("mean", 0.0);
  s.p50 = j.value("p50", 0.0);
  s.p90 = j.value("p90", 0.0);
  s.min = j.value("min", 0.0);
  s.max = j.value("max", 0.0);
  return s;
}

}  // namespace

nlohmann::json StatsToJson(const DatasetStats& s) {
  nlohmann::json labels = nlohmann::json::array();
  for (const auto& [label, count] : s.labels)
    labels.push_back({{"label", label}, {"count", count}});
  return {{"examples", s.examples},
          {"bytes", s.bytes},
          {"messagesPerExample", SummaryToJson(s.messages_per_example)},
          {"charactersPerExample", SummaryToJson(s.characters_per_example)},
          {"wordsPerExample", SummaryToJson(s.words_per_example)},
          {"roleCounts", s.role_counts},
          {"exactDuplicates", s.exact_duplicates},
          {"normalizedDuplicates", s.normalized_duplicates},
          {"examplesWithoutSystemMessage", s.examples_without_system_message},
          {"trainedAssistantMessages", s.trained_assistant_messages},
          {"looksLikeClassification", s.looks_like_classification},
          {"labels", labels},
          {"hasTokens", s.has_tokens},
          {"tokensPerExample", SummaryToJson(s.tokens_per_example)},
          {"totalTokens", s.total_tokens}};
}

DatasetStats StatsFromJson(const nlohmann::json& j) {
  DatasetStats s;
  s.examples = j.value("examples", int64_t{0});
  s.bytes = j.value("bytes", int64_t{0});
  s.messages_per_example = SummaryFromJson(j.value("messagesPerExample", nlohmann::json::object()));
  s.characters_per_example =
      SummaryFromJson(j.value("charactersPerExample", nlohmann::json::object()));
  s.words_per_example = SummaryFromJson(j.value("wordsPerExample", nlohmann::json::object()));
  s.role_counts = j.value("roleCounts", std::map<std::string, int64_t>{});
  s.exact_duplicates = j.value("exactDuplicates", int64_t{0});
  s.normalized_duplicates = j.value("normalizedDuplicates", int64_t{0});
  s.examples_without_system_message = j.value("examplesWithoutSystemMessage", int64_t{0});
  s.trained_assistant_messages = j.value("trainedAssistantMessages", int64_t{0});
  s.looks_like_classification = j.value("looksLikeClassification", false);
  s.has_tokens = j.value("hasTokens", false);
  s.tokens_per_example = SummaryFromJson(j.value("tokensPerExample", nlohmann::json::object()));
  s.total_tokens = j.value("totalTokens", int64_t{0});
  for (const auto& l : j.value("labels", nlohmann::json::array())) {
    s.labels.emplace_back(l.value("label", ""), l.value("count", int64_t{0}));
  }
  return s;
}

nlohmann::json IssueToJson(const ValidationIssue& i) {
  return {{"severity", std::string(SeverityName(i.severity))},
          {"kind", i.kind},
          {"line", i.line},
          {"field", i.field},
          {"message", i.message},
          {"file", i.file}};
}

ValidationIssue IssueFromJson(const nlohmann::json& j) {
  ValidationIssue i;
  i.severity = j.value("severity", "error") == "warning" ? Severity::kWarning : Severity::kError;
  i.kind = j.value("kind", "");
  i.line = j.value("line", int64_t{0});
  i.field = j.value("field", "");
  i.message = j.value("message", "");
  i.file = j.value("file", "");
  return i;
}

}  // namespace switchyard::dataset
