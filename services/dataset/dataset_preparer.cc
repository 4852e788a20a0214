#include "services/dataset/dataset_preparer.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "services/dataset/dataset_stats.h"
#include "services/dataset/table_reader.h"
#include "shared/core/file_util.h"
#include "shared/core/status_macros.h"

namespace switchyard::dataset {
namespace {

// ordered_json keeps keys in insertion order, so records we build come out as
// messages[role, content] / prompt, completion, and records we keep as they
// are keep the author's key order.
using Json = nlohmann::ordered_json;

constexpr char kDefaultSeparator[] = "\n\n###\n\n";
constexpr char kDefaultStop[] = "\n";
constexpr size_t kMaxExampleLines = 5;

// One input record, already in the output format.
struct Example {
  int64_t line = 0;   // input line (JSONL; CSV/TSV row start) or JSON array record
  std::string where;  // "line 7", "row 5 (line 6)" or "record 3", for messages
  Json record;
};

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// Picks the prompt and completion columns/keys: the options when set, else the
// first known pair present (case-insensitive), else the first two names.
absl::StatusOr<std::pair<std::string, std::string>> PickColumns(
    const std::vector<std::string>& names, const PrepareOptions& options, absl::string_view noun) {
  auto find = [&](absl::string_view want) -> const std::string* {
    for (const std::string& n : names) {
      if (absl::EqualsIgnoreCase(n, want)) return &n;
    }
    return nullptr;
  };
  std::pair<std::string, std::string> picked;
  static constexpr std::pair<const char*, const char*> kPairs[] = {
      {"prompt", "completion"}, {"question", "answer"}, {"input", "output"}, {"text", "label"}};
  bool found = false;
  for (const auto& [p, c] : kPairs) {
    if (find(p) != nullptr && find(c) != nullptr) {
      picked = {*find(p), *find(c)};
      found = true;
      break;
    }
  }
  if (!found && names.size() >= 2) picked = {names[0], names[1]};
  for (auto [option, slot] : {std::pair{&options.prompt_column, &picked.first},
                              std::pair{&options.completion_column, &picked.second}}) {
    if (option->empty()) continue;
    if (std::find(names.begin(), names.end(), *option) == names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("no ", noun, " '", *option, "' (found: ", absl::StrJoin(names, ", "), ")"));
    }
    *slot = *option;
  }
  if (picked.first.empty() || picked.second.empty() || picked.first == picked.second) {
    return absl::InvalidArgumentError(absl::StrCat("need a prompt and a completion ", noun,
                                                   " (found: ", absl::StrJoin(names, ", "),
                                                   "); name them with --prompt-column and "
                                                   "--completion-column"));
  }
  return picked;
}

// Builds the output record for one prompt/completion pair.
absl::StatusOr<Json> FromPromptCompletion(std::string prompt, std::string completion,
                                          DatasetFormat format, const PrepareOptions& options,
                                          absl::string_view where) {
  Json record = Json::object();
  if (format == DatasetFormat::kCompletion) {
    record["prompt"] = std::move(prompt);
    record["completion"] = std::move(completion);
  } else if (format == DatasetFormat::kChat) {
    Json messages = Json::array();
    if (!options.system_message.empty()) {
      messages.push_back(Json{{"role", "system"}, {"content", options.system_message}});
    }
    messages.push_back(Json{{"role", "user"}, {"content", std::move(prompt)}});
    messages.push_back(Json{{"role", "assistant"}, {"content", std::move(completion)}});
    record["messages"] = std::move(messages);
  } else {
    return Invalid(where,
                   "a prompt/completion example can't become preference data (it has "
                   "no rejected output)");
  }
  // Building a record does not check UTF-8; serializing does, and throws.
  try {
    (void)record.dump();
  } catch (const Json::exception&) {
    return Invalid(where, "text is not valid UTF-8");
  }
  return record;
}

absl::StatusOr<std::vector<Example>> TableToExamples(const Table& table, DatasetFormat format,
                                                     const PrepareOptions& options) {
  auto picked = PickColumns(table.header, options, "column");
  if (!picked.ok()) {
    return Invalid(absl::StrCat("line ", table.header_line, " (header)"),
                   picked.status().message());
  }
  const std::pair<std::string, std::string>& columns = *picked;
  const size_t p =
      std::find(table.header.begin(), table.header.end(), columns.first) - table.header.begin();
  const size_t c =
      std::find(table.header.begin(), table.header.end(), columns.second) - table.header.begin();
  std::vector<Example> examples;
  for (size_t i = 0; i < table.rows.size(); ++i) {
    const Table::Row& row = table.rows[i];
    Example ex;
    ex.line = row.line;
    ex.where = absl::StrCat("row ", i + 1, " (line ", row.line, ")");
    SY_ASSIGN_OR_RETURN(
        ex.record, FromPromptCompletion(row.fields[p], row.fields[c], format, options, ex.where));
    examples.push_back(std::move(ex));
  }
  return examples;
}

// ---------------------------------------------------------------------------
// JSON input (an array of objects, or JSONL).

enum class RecordForm { kChat, kPreference, kPromptCompletion };

RecordForm FormOf(const Json& object) {
  if (object.contains("messages")) return RecordForm::kChat;
  if ((object.contains("chosen") && object.contains("rejected")) ||
      object.contains("preferred_output") || object.contains("non_preferred_output")) {
    return RecordForm::kPreference;
  }
  return RecordForm::kPromptCompletion;
}

// "parse error at line 1, column 6: syntax error ..." -> "syntax error ...".
std::string JsonErrorText(const Json::exception& e) {
  absl::string_view text = e.what();
  size_t column = text.find("column ");
  size_t colon = text.find(": ", column == absl::string_view::npos ? 0 : column);
  if (colon != absl::string_view::npos) text.remove_prefix(colon + 2);
  return std::string(text);
}

// A scalar value as text; labels are often numbers or booleans in JSON.
absl::StatusOr<std::string> TextOf(const Json& object, const std::string& key,
                                   absl::string_view where) {
  auto it = object.find(key);
  if (it == object.end()) return Invalid(where, absl::StrCat("missing key '", key, "'"));
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number() || it->is_boolean()) return it->dump();
  return Invalid(where, absl::StrCat("'", key, "' must be a string, found ", it->type_name()));
}

// Single-turn chat (optional system, user, assistant) as prompt/completion; the
// system text leads the prompt so no instruction is lost.
absl::StatusOr<Json> ChatToCompletion(const Json& messages, absl::string_view where) {
  std::vector<std::string> texts;
  std::vector<std::string> roles;
  for (const Json& m : messages) {
    auto role = m.find("role");
    auto content = m.find("content");
    if (!m.is_object() || role == m.end() || !role->is_string() || content == m.end() ||
        !content->is_string()) {
      return Invalid(where,
                     "every message needs a string 'role' and 'content' to convert "
                     "to completion");
    }
    roles.push_back(role->get<std::string>());
    texts.push_back(content->get<std::string>());
  }
  size_t first = !roles.empty() && roles[0] == "system" ? 1 : 0;
  if (roles.size() != first + 2 || roles[first] != "user" || roles[first + 1] != "assistant") {
    return Invalid(where, absl::StrCat("only single-turn chat (optional system, one user, one "
                                       "assistant message) converts to completion; this one "
                                       "has roles [",
                                       absl::StrJoin(roles, ", "), "]"));
  }
  std::string prompt = first == 1 ? absl::StrCat(texts[0], "\n\n", texts[1]) : texts[1];
  return Json{{"prompt", std::move(prompt)}, {"completion", texts[first + 1]}};
}

// Converts parsed JSON objects (with their line/record numbers) to examples;
// `format` is resolved from the first object when auto.
absl::StatusOr<std::vector<Example>> ObjectsToExamples(std::vector<Example> objects,
                                                       DatasetFormat* format,
                                                       const PrepareOptions& options) {
  if (objects.empty()) return objects;
  if (*format == DatasetFormat::kAuto) {
    RecordForm first = FormOf(objects[0].record);
    *format = first == RecordForm::kPreference ? DatasetFormat::kPreference : DatasetFormat::kChat;
  }
  std::pair<std::string, std::string> columns;  // from the first prompt/completion object
  for (Example& ex : objects) {
    const RecordForm form = FormOf(ex.record);
    if (form == RecordForm::kChat) {
      const Json& messages = ex.record["messages"];
      if (!messages.is_array()) return Invalid(ex.where, "'messages' must be an array");
      if (*format == DatasetFormat::kCompletion) {
        SY_ASSIGN_OR_RETURN(ex.record, ChatToCompletion(messages, ex.where));
      } else if (*format != DatasetFormat::kChat) {
        return Invalid(ex.where,
                       absl::StrCat("a chat example can't be converted to ", FormatName(*format)));
      }
    } else if (form == RecordForm::kPreference) {
      if (*format != DatasetFormat::kPreference) {
        return Invalid(ex.where, absl::StrCat("a preference example can't be converted to ",
                                              FormatName(*format)));
      }
    } else {
      if (columns.first.empty()) {
        std::vector<std::string> keys;
        for (const auto& item : ex.record.items()) keys.push_back(item.key());
        auto picked = PickColumns(keys, options, "key");
        if (!picked.ok()) return Invalid(ex.where, picked.status().message());
        columns = *picked;
      }
      SY_ASSIGN_OR_RETURN(std::string prompt, TextOf(ex.record, columns.first, ex.where));
      SY_ASSIGN_OR_RETURN(std::string completion, TextOf(ex.record, columns.second, ex.where));
      SY_ASSIGN_OR_RETURN(ex.record, FromPromptCompletion(std::move(prompt), std::move(completion),
                                                          *format, options, ex.where));
    }
  }
  return objects;
}

absl::StatusOr<std::vector<Example>> ParseJsonl(absl::string_view text) {
  std::vector<Example> objects;
  int64_t line = 0;
  for (absl::string_view l : absl::StrSplit(text, '\n')) {
    ++line;
    if (absl::StripAsciiWhitespace(l).empty()) continue;
    Example ex;
    ex.line = line;
    ex.where = absl::StrCat("line ", line);
    try {
      ex.record = Json::parse(l);
    } catch (const Json::exception& e) {
      return Invalid(ex.where, absl::StrCat("invalid JSON: ", JsonErrorText(e)));
    }
    if (!ex.record.is_object()) {
      return Invalid(ex.where,
                     absl::StrCat("expected a JSON object, found ", ex.record.type_name()));
    }
    objects.push_back(std::move(ex));
  }
  return objects;
}

absl::StatusOr<std::vector<Example>> ParseJsonArray(absl::string_view text) {
  Json array;
  try {
    array = Json::parse(text);
  } catch (const Json::parse_error& e) {
    const size_t byte = std::min<size_t>(e.byte, text.size());
    const int64_t line = std::count(text.begin(), text.begin() + byte, '\n') +
                         (byte > 0 && text[byte - 1] == '\n' ? 0 : 1);
    return Invalid(absl::StrCat("line ", line), absl::StrCat("invalid JSON: ", JsonErrorText(e)));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", JsonErrorText(e)));
  }
  if (!array.is_array()) return absl::InvalidArgumentError("expected a JSON array of objects");
  std::vector<Example> objects;
  for (size_t i = 0; i < array.size(); ++i) {
    Example ex;
    ex.line = static_cast<int64_t>(i) + 1;
    ex.where = absl::StrCat("record ", i + 1);
    if (!array[i].is_object()) {
      return Invalid(ex.where, absl::StrCat("expected an object, found ", array[i].type_name()));
    }
    ex.record = std::move(array[i]);
    objects.push_back(std::move(ex));
  }
  return objects;
}

InputKind DetectKind(const std::string& path, absl::string_view text) {
  absl::string_view stripped = absl::StripLeadingAsciiWhitespace(text);
  const char first = stripped.empty() ? '\0' : stripped[0];
  std::string lower = absl::AsciiStrToLower(path);
  if (absl::EndsWith(lower, ".csv")) return InputKind::kCsv;
  if (absl::EndsWith(lower, ".tsv")) return InputKind::kTsv;
  if (absl::EndsWith(lower, ".jsonl")) return InputKind::kJsonl;
  // JSONL is often saved as .json; its first byte tells.
  if (absl::EndsWith(lower, ".json"))
    return first == '{' ? InputKind::kJsonl : InputKind::kJsonArray;
  if (first == '[') return InputKind::kJsonArray;
  if (first == '{') return InputKind::kJsonl;
  absl::string_view header = text.substr(0, text.find('\n'));
  return absl::StrContains(header, '\t') ? InputKind::kTsv : InputKind::kCsv;
}

// ---------------------------------------------------------------------------
// Fixes.

// Calls `fn(text, required)` for every human-written text of a chat or
// preference record: message contents and prompt/chosen/rejected strings.
// `required` is false for system messages, which may be empty.
template <typename Fn>
void VisitTexts(Json& j, Fn& fn) {
  if (j.is_array()) {
    for (Json& item : j) VisitTexts(item, fn);
    return;
  }
  if (!j.is_object()) return;
  auto role = j.find("role");
  const bool system = role != j.end() && role->is_string() && *role == "system";
  for (auto& item : j.items()) {
    Json& value = item.value();
    const std::string& key = item.key();
    if (value.is_string() && (key == "content" || key == "prompt" || key == "completion" ||
                              key == "chosen" || key == "rejected")) {
      fn(value.get_ref<std::string&>(), !(key == "content" && system));
    } else if (value.is_structured()) {
      VisitTexts(value, fn);
    }
  }
}

bool IsSeparatorChar(char c) {
  return absl::ascii_isspace(static_cast<unsigned char>(c)) ||
         absl::string_view("#-=>|:*~").find(c) != absl::string_view::npos;
}

// The trailing separator or stop sequence of `text`, e.g. "\n\n###\n\n", " ->",
// " END" or "\n"; empty when none. Sentence punctuation is not a separator.
absl::string_view Ending(absl::string_view text) {
  size_t i = text.size();
  while (i > 0 && IsSeparatorChar(text[i - 1])) --i;
  if (absl::EndsWith(text.substr(0, i), "END") &&
      (i == 3 || absl::ascii_isspace(static_cast<unsigned char>(text[i - 4])))) {
    i -= 3;
    while (i > 0 && IsSeparatorChar(text[i - 1])) --i;
  }
  return text.substr(i);
}

bool HasVisibleChar(absl::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return !absl::ascii_isspace(static_cast<unsigned char>(c)); });
}

// True when every text ends with the same non-empty separator/stop.
bool ShareEnding(const std::vector<std::string*>& texts) {
  absl::string_view first = texts.empty() ? "" : Ending(*texts[0]);
  return !first.empty() &&
         std::all_of(texts.begin(), texts.end(), [&](auto* t) { return Ending(*t) == first; });
}

// The ending at least half of the texts share (the data's convention) and how
// many have it; empty when there is no such majority, so a stray trailing
// space on one example is never taken for a separator or stop sequence.
std::pair<std::string, int64_t> MostCommonEnding(const std::vector<std::string*>& texts) {
  std::map<std::string, int64_t> counts;
  for (const std::string* t : texts) {
    absl::string_view e = Ending(*t);
    if (!e.empty()) ++counts[std::string(e)];
  }
  std::pair<std::string, int64_t> best;
  for (const auto& [ending, count] : counts) {
    if (count > best.second) best = {ending, count};
  }
  if (best.second * 2 < static_cast<int64_t>(texts.size())) return {};
  return best;
}

// Strips whitespace from completion-data text without destroying its separator
// or stop sequence, which are whitespace-significant ("\n\n###\n\n", "\n"): a
// visible ending, or else the field's most common ending, is kept as is. A
// leading space on a completion is the legacy convention and survives as one.
std::string StripKeepingEnding(const std::string& text, absl::string_view common,
                               bool keep_leading_space) {
  absl::string_view ending = Ending(text);
  if (!HasVisibleChar(ending)) ending = absl::EndsWith(text, common) ? common : "";
  absl::string_view body = absl::string_view(text).substr(0, text.size() - ending.size());
  const bool leading = keep_leading_space && !body.empty() &&
                       absl::ascii_isspace(static_cast<unsigned char>(body[0]));
  return absl::StrCat(leading ? " " : "", absl::StripAsciiWhitespace(body), ending);
}

// Text without its separator/stop and surrounding whitespace is empty.
bool IsBlank(absl::string_view text, bool completion_data) {
  if (completion_data) text.remove_suffix(Ending(text).size());
  return absl::StripAsciiWhitespace(text).empty();
}

// Counts one fix over examples and adds it to the report when it found any.
class FixTally {
 public:
  explicit FixTally(std::string kind) { fix_.kind = std::move(kind); }
  void Add(int64_t line) {
    ++fix_.count;
    if (fix_.example_lines.size() < kMaxExampleLines) fix_.example_lines.push_back(line);
  }
  int64_t count() const { return fix_.count; }
  void Report(std::string message, PrepareReport* report) {
    if (fix_.count == 0) return;
    fix_.message = std::move(message);
    report->fixes.push_back(std::move(fix_));
  }

 private:
  PrepareFix fix_;
};

std::vector<std::string*> Field(std::vector<Example>& examples, const char* key) {
  std::vector<std::string*> texts;
  for (Example& ex : examples) texts.push_back(&ex.record[key].get_ref<std::string&>());
  return texts;
}

// Runs every fix on `examples` (a copy, so the caller decides whether to keep
// the result), recording in `report` what each one found.
std::vector<Example> RunFixes(std::vector<Example> examples, DatasetFormat format, bool apply,
                              PrepareReport* report) {
  const bool completion = format == DatasetFormat::kCompletion;
  const absl::string_view verb = apply ? "were " : "would be ";

  FixTally strip("strip_whitespace");
  const std::string prompt_common =
      completion ? MostCommonEnding(Field(examples, "prompt")).first : "";
  const std::string stop_common =
      completion ? MostCommonEnding(Field(examples, "completion")).first : "";
  for (Example& ex : examples) {
    bool changed = false;
    auto fix = [&](std::string& text, bool /*required*/) {
      std::string stripped(absl::StripAsciiWhitespace(text));
      if (stripped == text) return;
      changed = true;
      text = std::move(stripped);
    };
    if (completion) {
      std::string& p = ex.record["prompt"].get_ref<std::string&>();
      std::string& c = ex.record["completion"].get_ref<std::string&>();
      std::string p2 = StripKeepingEnding(p, prompt_common, false);
      std::string c2 = StripKeepingEnding(c, stop_common, true);
      changed = p2 != p || c2 != c;
      p = std::move(p2);
      c = std::move(c2);
    } else {
      VisitTexts(ex.record, fix);
    }
    if (changed) strip.Add(ex.line);
  }
  strip.Report(absl::StrCat(strip.count(), " examples have leading or trailing whitespace that ",
                            verb, "stripped"),
               report);

  FixTally empty("drop_empty");
  FixTally duplicate("drop_duplicate");
  std::set<std::string> seen;
  std::vector<Example> kept;
  for (Example& ex : examples) {
    bool blank = false;
    auto check = [&](std::string& text, bool required) {
      if (required && IsBlank(text, completion)) blank = true;
    };
    VisitTexts(ex.record, check);
    if (blank) {
      empty.Add(ex.line);
      continue;
    }
    if (!seen.insert(ex.record.dump(-1, ' ', false, Json::error_handler_t::replace)).second) {
      duplicate.Add(ex.line);
      continue;
    }
    kept.push_back(std::move(ex));
  }
  examples = std::move(kept);
  empty.Report(
      absl::StrCat(empty.count(), " examples have an empty prompt or answer and ", verb, "dropped"),
      report);
  duplicate.Report(absl::StrCat(duplicate.count(), " examples repeat an earlier one and ", verb,
                                "dropped (the first is kept)"),
                   report);
  if (!completion) return examples;

  // Legacy completion models learn where the prompt ends and when to stop from
  // one fixed separator and one fixed stop sequence.
  struct Convention {
    const char* kind;
    const char* key;
    const char* what;
  };
  for (const Convention& conv : {Convention{"completion_separator", "prompt", "prompts"},
                                 Convention{"completion_stop", "completion", "completions"}}) {
    std::vector<std::string*> texts = Field(examples, conv.key);
    if (ShareEnding(texts)) continue;
    const bool is_stop = std::string(conv.key) == "completion";
    auto [common, common_count] = MostCommonEnding(texts);
    std::string suffix = kDefaultSeparator;
    if (is_stop) suffix = common.empty() ? kDefaultStop : common;
    FixTally tally(conv.kind);
    for (size_t i = 0; i < texts.size(); ++i) {
      if (absl::EndsWith(*texts[i], suffix)) continue;
      tally.Add(examples[i].line);
      // A whitespace-only ending or a sloppy copy of the suffix ("###  ") is
      // replaced, not doubled.
      const absl::string_view ending = Ending(*texts[i]);
      if (!HasVisibleChar(ending) ||
          absl::StripAsciiWhitespace(ending) == absl::StripAsciiWhitespace(suffix)) {
        texts[i]->resize(texts[i]->size() - ending.size());
      }
      texts[i]->append(suffix);
    }
    std::string seen_ending = common.empty()
                                  ? "no ending is shared by most of them"
                                  : absl::StrCat("most common: \"", absl::CEscape(common), "\" in ",
                                                 common_count, " of ", texts.size());
    tally.Report(
        absl::StrCat(conv.what, " do not all end with the same ",
                     is_stop ? "stop sequence" : "separator", " (", seen_ending, "); ",
                     tally.count(), " of them ", verb, "given \"", absl::CEscape(suffix), "\""),
        report);
  }
  FixTally leading("completion_leading_space");
  for (Example& ex : examples) {
    const std::string& c = ex.record["completion"].get_ref<const std::string&>();
    if (c.empty() || !absl::ascii_isspace(static_cast<unsigned char>(c[0]))) leading.Add(ex.line);
  }
  // A note, not a fix: only legacy base models care, and a space would change the text.
  leading.Report(absl::StrCat(leading.count(),
                              " completions do not start with a space, which "
                              "legacy base models tokenize better; advice only, never applied"),
                 report);
  if (!report->fixes.empty() && report->fixes.back().kind == "completion_leading_space") {
    report->fixes.back().advice_only = true;
  }
  return examples;
}

// ---------------------------------------------------------------------------
// Split.

// The answer a classifier would predict: the completion, or the last
// assistant message. None for preference data.
bool FinalAnswer(const Json& record, std::string* answer) {
  if (auto c = record.find("completion"); c != record.end() && c->is_string()) {
    *answer = std::string(absl::StripAsciiWhitespace(c->get<std::string>()));
    return true;
  }
  auto messages = record.find("messages");
  if (messages == record.end() || !messages->is_array()) return false;
  for (auto m = messages->rbegin(); m != messages->rend(); ++m) {
    auto role = m->find("role");
    auto content = m->find("content");
    if (role != m->end() && *role == "assistant" && content != m->end() && content->is_string()) {
      *answer = std::string(absl::StripAsciiWhitespace(content->get<std::string>()));
      return true;
    }
  }
  return false;
}

// Final answers of every example when they look like class labels, by the same
// rule as the validator's statistics (DatasetStatsAccumulator).
bool ClassificationLabels(const std::vector<Example>& examples, std::vector<std::string>* labels) {
  DatasetStatsAccumulator stats;
  for (const Example& ex : examples) {
    std::string answer;
    if (!FinalAnswer(ex.record, &answer)) return false;
    ExampleFacts facts;
    facts.has_label = true;
    facts.label = answer;
    stats.AddExample(facts);
    labels->push_back(std::move(answer));
  }
  return stats.LooksLikeClassification();
}

// Fisher-Yates with the raw engine: unlike std::shuffle (whose use of
// uniform_int_distribution differs between standard libraries) the same seed
// gives the same split everywhere. The modulo bias is irrelevant here.
void Shuffle(std::vector<size_t>* v, std::mt19937_64* rng) {
  for (size_t i = v->size(); i > 1; --i) std::swap((*v)[i - 1], (*v)[(*rng)() % i]);
}

// How many of `n` examples go to validation: at least one and never all.
size_t ValidationCount(size_t n, double split) {
  if (split <= 0 || n < 2) return 0;
  const auto count = static_cast<size_t>(std::llround(static_cast<double>(n) * split));
  return std::clamp<size_t>(count, 1, n - 1);
}

std::string ValidationPathFor(const std::string& output) {
  if (absl::EndsWith(output, ".jsonl")) {
    return absl::StrCat(output.substr(0, output.size() - 6), "_validation.jsonl");
  }
  return absl::StrCat(output, "_validation.jsonl");
}

bool SameFile(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::equivalent(a, b, ec) && !ec) return true;
  fs::path pa = fs::absolute(a, ec).lexically_normal();
  fs::path pb = fs::absolute(b, ec).lexically_normal();
  return pa == pb;
}

std::string Serialize(const std::vector<const Example*>& examples) {
  std::string out;
  for (const Example* ex : examples) {
    absl::StrAppend(&out, ex->record.dump(-1, ' ', false, Json::error_handler_t::replace), "\n");
  }
  return out;
}

}  // namespace

DatasetPreparer::DatasetPreparer(PrepareOptions options) : options_(std::move(options)) {}

absl::StatusOr<PrepareReport> DatasetPreparer::Prepare(const std::string& input_path,
                                                       const std::string& output_path) {
  const double split = options_.validation_split;
  if (!(split >= 0.0 && split < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--split must be at least 0 and below 1, got ", split));
  }
  PrepareReport report;
  report.train_path = output_path;
  if (split > 0) report.validation_path = ValidationPathFor(output_path);
  for (const std::string* out : {&report.train_path, &report.validation_path}) {
    if (!out->empty() && SameFile(input_path, *out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", *out, " is the input file; prepare never changes its input"));
    }
  }

  SY_ASSIGN_OR_RETURN(const std::string content, ReadFile(input_path));
  absl::string_view text = content;
  if (absl::StartsWith(text, "\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 BOM
  const InputKind kind =
      options_.input_kind == InputKind::kAuto ? DetectKind(input_path, text) : options_.input_kind;
  report.input_kind = kind;
  DatasetFormat format = options_.output_format;
  std::vector<Example> examples;
  if (kind == InputKind::kCsv || kind == InputKind::kTsv) {
    std::vector<Table::Row> rows;
    if (kind == InputKind::kCsv) {
      SY_ASSIGN_OR_RETURN(rows, ParseCsvRows(text));
    } else {
      rows = ParseTsvRows(text);
    }
    SY_ASSIGN_OR_RETURN(Table table, ToTable(std::move(rows)));
    if (format == DatasetFormat::kAuto) format = DatasetFormat::kChat;
    SY_ASSIGN_OR_RETURN(examples, TableToExamples(table, format, options_));
  } else {
    std::vector<Example> objects;
    if (kind == InputKind::kJsonArray) {
      SY_ASSIGN_OR_RETURN(objects, ParseJsonArray(text));
    } else {
      SY_ASSIGN_OR_RETURN(objects, ParseJsonl(text));
    }
    SY_ASSIGN_OR_RETURN(examples, ObjectsToExamples(std::move(objects), &format, options_));
  }
  if (examples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(input_path, " has no examples"));
  }
  report.output_format = format;
  report.input_examples = static_cast<int64_t>(examples.size());
  if (format != DatasetFormat::kChat && !options_.system_message.empty()) {
    report.notes.push_back("the system message applies only to chat output and was not used");
  }

  std::vector<Example> fixed = RunFixes(examples, format, options_.apply_fixes, &report);
  if (options_.apply_fixes) examples = std::move(fixed);
  if (!options_.apply_fixes && !report.fixes.empty()) {
    report.notes.push_back("fixes were reported but not applied (use --apply-fixes)");
  }

  std::vector<bool> in_validation(examples.size(), false);
  std::mt19937_64 rng(options_.seed);
  std::vector<std::string> labels;
  if (split > 0 && ClassificationLabels(examples, &labels)) {
    report.stratified = true;
    std::map<std::string, std::vector<size_t>> by_label;  // ordered: deterministic
    for (size_t i = 0; i < labels.size(); ++i) by_label[labels[i]].push_back(i);
    // The validation size is fixed for the whole set (as without labels) and
    // shared out in proportion to the labels' sizes, largest remainder first;
    // every label keeps at least one example in train.
    const size_t total_val = ValidationCount(examples.size(), split);
    struct Share {
      std::vector<size_t>* indices;
      size_t quota;
      double remainder;
    };
    std::vector<Share> shares;
    size_t assigned = 0;
    int64_t singletons = 0;
    for (auto& [label, indices] : by_label) {
      Shuffle(&indices, &rng);
      const double exact = static_cast<double>(indices.size()) * static_cast<double>(total_val) /
                           static_cast<double>(examples.size());
      const size_t quota = std::min(static_cast<size_t>(exact), indices.size() - 1);
      shares.push_back(Share{&indices, quota, exact - static_cast<double>(quota)});
      assigned += quota;
      if (indices.size() == 1) ++singletons;
    }
    std::vector<size_t> order(shares.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return shares[a].remainder > shares[b].remainder; });
    for (size_t k = 0; assigned < total_val && k < order.size(); ++k) {
      Share& share = shares[order[k]];
      if (share.quota + 1 < share.indices->size()) {
        ++share.quota;
        ++assigned;
      }
    }
    for (const Share& share : shares) {
      for (size_t k = 0; k < share.quota; ++k) in_validation[(*share.indices)[k]] = true;
    }
    report.notes.push_back(absl::StrCat("looks like classification with ", by_label.size(),
                                        " labels; the split is stratified by label"));
    if (singletons > 0) {
      report.notes.push_back(
          absl::StrCat(singletons, " labels have a single example, kept in train only"));
    }
  } else {
    std::vector<size_t> order(examples.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    Shuffle(&order, &rng);
    const size_t n_val = ValidationCount(examples.size(), split);
    for (size_t k = 0; k < n_val; ++k) in_validation[order[k]] = true;
  }

  // Each file keeps input order, so the output depends only on input and seed.
  std::vector<const Example*> train;
  std::vector<const Example*> validation;
  for (size_t i = 0; i < examples.size(); ++i) {
    (in_validation[i] ? validation : train).push_back(&examples[i]);
  }
  SY_RETURN_IF_ERROR(WriteFileAtomic(output_path, Serialize(train)));
  if (split > 0) {
    SY_RETURN_IF_ERROR(WriteFileAtomic(report.validation_path, Serialize(validation)));
  }
  report.train_examples = static_cast<int64_t>(train.size());
  report.validation_examples = static_cast<int64_t>(validation.size());
  return report;
}

}  // namespace switchyard::dataset
