#include "services/dataset/dataset_validator.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "services/dataset/token_counter.h"
#include "shared/core/file_util.h"
#include "shared/text/model_text.h"
#include "shared/text/tokenizer.h"
#include "tests/testing/dataset_fixtures.h"

namespace switchyard::dataset {

// Readable failure output for issue matchers.
void PrintTo(const ValidationIssue& i, std::ostream* os) {
  *os << "{" << SeverityName(i.severity) << " " << i.kind << " file=" << i.file
      << " line=" << i.line << " field=\"" << i.field << "\" \"" << i.message << "\"}";
}

namespace {

using ::switchyard::testing::ChatLine;
using ::switchyard::testing::ChatLines;
using ::switchyard::testing::Sha256Of;

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::Each;
using ::testing::Field;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// ---- Helpers ---------------------------------------------------------------

// Options for tests about one problem: no example-count findings.
ValidatorOptions Lenient() {
  ValidatorOptions o;
  o.min_examples = 1;
  o.recommended_examples = 1;
  return o;
}

// One valid chat example (with a system message), distinct per `i`.
std::string CompletionLine(int i) {
  return absl::StrCat(R"({"prompt":"What is )", i, R"( plus one?","completion":" )", i + 1,
                      R"("})");
}

std::string PreferenceLine(int i) {
  return absl::StrCat(
      R"({"input":{"messages":[{"role":"user","content":"Write a haiku about )", i, R"("}]},)",
      R"("preferred_output":[{"role":"assistant","content":"Quiet rails at dawn )", i, R"("}],)",
      R"("non_preferred_output":[{"role":"assistant","content":"no )", i, R"("}]})");
}

// A chat line with the given messages JSON array (without brackets).
std::string Chat(const std::string& messages) {
  return absl::StrCat(R"({"messages":[)", messages, "]}");
}

ValidationReport Validate(absl::string_view train, const ValidatorOptions& options = Lenient()) {
  DatasetValidator v(options);
  v.Feed(Split::kTrain, train);
  return v.Finish();
}

ValidationReport ValidateInChunks(absl::string_view train, size_t chunk,
                                  const ValidatorOptions& options = Lenient()) {
  DatasetValidator v(options);
  for (size_t pos = 0; pos < train.size(); pos += chunk) {
    v.Feed(Split::kTrain, train.substr(pos, chunk));
  }
  return v.Finish();
}

ValidationReport ValidateBoth(absl::string_view train, absl::string_view validation,
                              const ValidatorOptions& options = Lenient()) {
  DatasetValidator v(options);
  v.Feed(Split::kTrain, train);
  v.Feed(Split::kValidation, validation);
  return v.Finish();
}

// Matches an issue by severity, kind, line and field.
auto IssueIs(Severity severity, const std::string& kind, int64_t line, const std::string& field) {
  return AllOf(Field(&ValidationIssue::severity, severity), Field(&ValidationIssue::kind, kind),
               Field(&ValidationIssue::line, line), Field(&ValidationIssue::field, field));
}
auto ErrorIs(const std::string& kind, int64_t line, const std::string& field) {
  return IssueIs(Severity::kError, kind, line, field);
}
auto WarningIs(const std::string& kind, int64_t line, const std::string& field) {
  return IssueIs(Severity::kWarning, kind, line, field);
}

// The first listed issue of `kind`, or null.
const ValidationIssue* Find(const ValidationReport& r, const std::string& kind) {
  for (const ValidationIssue& i : r.issues) {
    if (i.kind == kind) return &i;
  }
  return nullptr;
}

// Everything a report says, as text, to compare reports.
std::string Describe(const ValidationReport& r) {
  std::string out =
      absl::StrCat("format=", FormatName(r.format), " valid=", r.valid, " errors=", r.error_count,
                   " warnings=", r.warning_count, " truncated=", r.truncated, "\n");
  for (const ValidationIssue& i : r.issues) {
    absl::StrAppend(&out, SeverityName(i.severity), " ", i.kind, " ", i.file, ":", i.line, " ",
                    i.field, " ", i.message, "\n");
  }
  for (const auto& [kind, c] : r.counts) absl::StrAppend(&out, kind, "=", c.count, "\n");
  auto stats = [&](const DatasetStats& s) {
    absl::StrAppend(&out, "examples=", s.examples, " bytes=", s.bytes);
    for (const Summary* m :
         {&s.messages_per_example, &s.characters_per_example, &s.words_per_example}) {
      absl::StrAppend(&out, " [", m->mean, " ", m->p50, " ", m->p90, " ", m->min, " ", m->max, "]");
    }
    for (const auto& [role, n] : s.role_counts) absl::StrAppend(&out, " ", role, "=", n);
    absl::StrAppend(&out, " dup=", s.exact_duplicates, "/", s.normalized_duplicates,
                    " nosys=", s.examples_without_system_message,
                    " trained=", s.trained_assistant_messages,
                    " cls=", s.looks_like_classification);
    for (const auto& [label, n] : s.labels) absl::StrAppend(&out, " ", label, ":", n);
    absl::StrAppend(&out, "\n");
  };
  stats(r.train_stats);
  if (r.validation_stats) stats(*r.validation_stats);
  return out;
}

// Asserts a report has no issues at all, printing them when it has.
void ExpectClean(const ValidationReport& r) {
  EXPECT_TRUE(r.valid) << Describe(r);
  EXPECT_EQ(r.error_count, 0) << Describe(r);
  EXPECT_EQ(r.warning_count, 0) << Describe(r);
  EXPECT_THAT(r.issues, IsEmpty());
}

// ---- Valid files and format detection ---------------------------------------

TEST(DatasetValidatorTest, ValidChatFilePassesWithStats) {
  ValidationReport r = Validate(ChatLines(5));
  ExpectClean(r);
  EXPECT_EQ(r.format, DatasetFormat::kChat);
  EXPECT_EQ(r.train_stats.examples, 5);
  EXPECT_EQ(r.train_stats.bytes, static_cast<int64_t>(ChatLines(5).size()));
  EXPECT_EQ(r.train_stats.messages_per_example.p50, 3);
  EXPECT_EQ(r.train_stats.role_counts.at("system"), 5);
  EXPECT_EQ(r.train_stats.role_counts.at("user"), 5);
  EXPECT_EQ(r.train_stats.role_counts.at("assistant"), 5);
  EXPECT_EQ(r.train_stats.trained_assistant_messages, 5);
  EXPECT_FALSE(r.validation_stats.has_value());
}

TEST(DatasetValidatorTest, ValidChatWithToolCallsWeightsAndContentPartsPasses) {
  std::string line =
      Chat(R"({"role":"system","content":"You book trains."},)"
           R"({"role":"user","content":[{"type":"text","text":"Book the 9:15"},)"
           R"({"type":"image_url","image_url":{"url":"https://example.com/t.png"}}]},)"
           R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",)"
           R"("function":{"name":"book","arguments":"{}"}}],"weight":0},)"
           R"({"role":"tool","tool_call_id":"c1","content":"booked"},)"
           R"({"role":"assistant","content":"Done: seat 12A.","weight":1})");
  std::string file = absl::StrCat(line, "\n", ChatLine(2), "\n");
  ValidationReport r = Validate(file);
  ExpectClean(r);
  EXPECT_EQ(r.train_stats.role_counts.at("tool"), 1);
  // weight 0 turn is not trained; weight 1 and the second example's are.
  EXPECT_EQ(r.train_stats.trained_assistant_messages, 2);
}

TEST(DatasetValidatorTest, ValidCompletionFilePasses) {
  std::string file;
  for (int i = 1; i <= 4; ++i) absl::StrAppend(&file, CompletionLine(i), "\n");
  ValidationReport r = Validate(file);
  ExpectClean(r);
  EXPECT_EQ(r.format, DatasetFormat::kCompletion);
  EXPECT_EQ(r.train_stats.examples, 4);
  EXPECT_EQ(r.train_stats.role_counts.at("user"), 4);
  EXPECT_EQ(r.train_stats.role_counts.at("assistant"), 4);
}

TEST(DatasetValidatorTest, ValidOpenAiPreferenceFilePasses) {
  std::string file;
  for (int i = 1; i <= 4; ++i) absl::StrAppend(&file, PreferenceLine(i), "\n");
  ValidationReport r = Validate(file);
  ExpectClean(r);
  EXPECT_EQ(r.format, DatasetFormat::kPreference);
  EXPECT_EQ(r.train_stats.examples, 4);
}

TEST(DatasetValidatorTest, ValidTrlPreferenceFilePassesInTextAndConversationalForms) {
  std::string file = absl::StrCat(
      R"({"prompt":"Capital of France?","chosen":"Paris.","rejected":"Lyon."})", "\n",
      R"({"chosen":"Implicit prompt, good.","rejected":"Implicit prompt, bad."})", "\n",
      R"({"prompt":[{"role":"user","content":"Hi"}],)"
      R"("chosen":[{"role":"assistant","content":"Hello!"}],)"
      R"("rejected":[{"role":"assistant","content":"Go away."}]})",
      "\n");
  ValidationReport r = Validate(file);
  ExpectClean(r);
  EXPECT_EQ(r.format, DatasetFormat::kPreference);
  EXPECT_EQ(r.train_stats.examples, 3);
}

struct DetectCase {
  std::string line;
  DatasetFormat format;
};

class FormatDetectionTest : public ::testing::TestWithParam<DetectCase> {};

TEST_P(FormatDetectionTest, FirstLineDecidesTheFormat) {
  ValidationReport r = Validate(GetParam().line + "\n");
  EXPECT_EQ(r.format, GetParam().format) << Describe(r);
  EXPECT_TRUE(r.valid) << Describe(r);
}

INSTANTIATE_TEST_SUITE_P(
    Formats, FormatDetectionTest,
    ::testing::Values(
        DetectCase{ChatLine(1), DatasetFormat::kChat},
        DetectCase{CompletionLine(1), DatasetFormat::kCompletion},
        DetectCase{PreferenceLine(1), DatasetFormat::kPreference},
        DetectCase{R"({"prompt":"p","chosen":"a","rejected":"b"})", DatasetFormat::kPreference},
        // Key order does not matter.
        DetectCase{R"({"completion":"c","prompt":"p"})", DatasetFormat::kCompletion}));

TEST(DatasetValidatorTest, NamedFormatIsReportedEvenWhenNothingMatches) {
  ValidatorOptions o = Lenient();
  o.format = DatasetFormat::kCompletion;
  ValidationReport r = Validate(ChatLines(2), o);
  EXPECT_EQ(r.format, DatasetFormat::kCompletion);
  EXPECT_FALSE(r.valid);
}

TEST(DatasetValidatorTest, CrlfLineEndingsAreAccepted) {
  std::string file = absl::StrReplaceAll(ChatLines(4), {{"\n", "\r\n"}});
  ValidationReport r = Validate(file);
  ExpectClean(r);
  EXPECT_EQ(r.train_stats.examples, 4);
}

TEST(DatasetValidatorTest, LastLineWithoutNewlineIsValidated) {
  std::string file = ChatLines(2) + ChatLine(3);
  ValidationReport r = Validate(file);
  ExpectClean(r);
  EXPECT_EQ(r.train_stats.examples, 3);
  ValidationReport bad = Validate(ChatLines(2) + "{oops");
  EXPECT_THAT(bad.issues, Contains(ErrorIs("invalid_json", 3, "")));
}

// ---- One test per error kind --------------------------------------------------

TEST(DatasetValidatorTest, RejectsInvalidJsonNamingLine) {
  ValidationReport r =
      Validate(absl::StrCat(ChatLine(1), "\n", R"({"messages": [)", "\n", ChatLine(3), "\n"));
  EXPECT_FALSE(r.valid);
  EXPECT_EQ(r.error_count, 1) << Describe(r);
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_json", 2, "")));
  EXPECT_EQ(Find(r, "invalid_json")->file, "train");
}

TEST(DatasetValidatorTest, RejectsInvalidUtf8NamingLineAndByte) {
  std::string bad = Chat(R"({"role":"user","content":"caf)"
                         "\xe9"
                         R"("},{"role":"assistant","content":"yes"})");
  ValidationReport r = Validate(absl::StrCat(ChatLine(1), "\n", bad, "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_utf8", 2, "")));
  const ValidationIssue* issue = Find(r, "invalid_utf8");
  ASSERT_NE(issue, nullptr);
  EXPECT_THAT(issue->message, HasSubstr(absl::StrCat("byte ", bad.find('\xe9') + 1)));
  EXPECT_THAT(issue->message, HasSubstr("UTF-8"));
}

TEST(DatasetValidatorTest, InvalidUtf8MessageNamesTheFirstBadByteOfEveryKind) {
  const std::vector<std::string> bad_sequences = {
      "\x80",              // lone continuation byte
      "\xc3",              // truncated two-byte sequence
      "\xc0\x80",          // overlong encoding of NUL
      "\xe0\x80\x80",      // overlong three-byte sequence
      "\xed\xa0\x80",      // UTF-16 surrogate
      "\xf0\x80\x80\x80",  // overlong four-byte sequence
      "\xf4\x90\x80\x80",  // beyond U+10FFFF
      "\xff",              // never valid
  };
  for (const std::string& seq : bad_sequences) {
    const std::string prefix = R"({"prompt":"ok \u00e9 )";
    const std::string line = absl::StrCat(prefix, seq, R"( tail","completion":"c"})");
    ValidationReport r = Validate(line + "\n");
    const ValidationIssue* issue = Find(r, "invalid_utf8");
    ASSERT_NE(issue, nullptr) << Describe(r);
    EXPECT_EQ(issue->line, 1);
    EXPECT_THAT(issue->message, HasSubstr(absl::StrCat("(byte ", prefix.size() + 1, ")")))
        << "sequence " << absl::CHexEscape(seq);
  }
}

TEST(DatasetValidatorTest, RejectsLineThatIsNotAnObjectAsInvalidType) {
  ValidationReport r = Validate(absl::StrCat(ChatLine(1), "\n[1, 2, 3]\n\"text\"\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 2, "")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 3, "")));
  EXPECT_THAT(Find(r, "invalid_type")->message, HasSubstr("an array"));
}

TEST(DatasetValidatorTest, RejectsWrongFieldTypesNamingFieldPath) {
  std::string file = absl::StrCat(
      ChatLine(1), "\n",                                                                 // 1
      R"({"messages":"hello"})", "\n",                                                   // 2
      Chat(R"({"role":"user","content":42},{"role":"assistant","content":"x"})"), "\n",  // 3
      Chat(R"({"role":7,"content":"x"},{"role":"assistant","content":"x"})"), "\n",      // 4
      Chat(R"("just text",{"role":"assistant","content":"x"})"), "\n",                   // 5
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],)"
      R"("tools":{}})",
      "\n");  // 6
  ValidationReport r = Validate(file);
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 2, "messages")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 3, "messages[0].content")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 4, "messages[0].role")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 5, "messages[0]")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 6, "tools")));
  EXPECT_EQ(r.error_count, 5) << Describe(r);
}

TEST(DatasetValidatorTest, RejectsNonStringCompletionFieldsNamingField) {
  std::string file = absl::StrCat(CompletionLine(1), "\n", R"({"prompt":["a"],"completion":"b"})",
                                  "\n", R"({"prompt":"a","completion":null})", "\n");
  ValidationReport r = Validate(file);
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 2, "prompt")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_type", 3, "completion")));
}

TEST(DatasetValidatorTest, RejectsLineWithoutKnownKeysAsUnknownFormat) {
  ValidationReport r =
      Validate(absl::StrCat(ChatLine(1), "\n", R"({"text":"hello","label":"x"})", "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("unknown_format", 2, "")));
  EXPECT_EQ(r.error_count, 1);
}

TEST(DatasetValidatorTest, RejectsLinesOfAnotherFormatThanTheNamedOneAsWrongFormat) {
  ValidatorOptions o = Lenient();
  o.format = DatasetFormat::kChat;
  ValidationReport r =
      Validate(absl::StrCat(ChatLine(1), "\n", CompletionLine(2), "\n", ChatLine(3), "\n"), o);
  EXPECT_THAT(r.issues, Contains(ErrorIs("wrong_format", 2, "")));
  EXPECT_THAT(Find(r, "wrong_format")->message, HasSubstr("completion"));
  EXPECT_EQ(r.error_count, 1) << Describe(r);
  EXPECT_EQ(Find(r, "mixed_formats"), nullptr);
}

TEST(DatasetValidatorTest, RejectsMixedFormatsNamingTheLineThatDecided) {
  ValidationReport r = Validate(absl::StrCat(ChatLine(1), "\n", ChatLine(2), "\n",
                                             CompletionLine(3), "\n", PreferenceLine(4), "\n"));
  EXPECT_EQ(r.format, DatasetFormat::kChat);
  EXPECT_THAT(r.issues, Contains(ErrorIs("mixed_formats", 3, "")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("mixed_formats", 4, "")));
  EXPECT_THAT(Find(r, "mixed_formats")->message, HasSubstr("line 1"));
}

TEST(DatasetValidatorTest, RejectsUnknownKeysNamingTheirPath) {
  std::string file = absl::StrCat(
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],)"
      R"("extra":1})",
      "\n", Chat(R"({"role":"user","content":"q"},{"role":"assistant","content":"a","mood":"x"})"),
      "\n");
  ValidationReport r = Validate(file);
  EXPECT_THAT(r.issues, Contains(ErrorIs("unknown_key", 1, "extra")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("unknown_key", 2, "messages[1].mood")));
  EXPECT_THAT(Find(r, "unknown_key")->message, HasSubstr("\"extra\""));
}

TEST(DatasetValidatorTest, RejectsUnknownKeysInCompletionAndPreferenceData) {
  ValidationReport completion = Validate(R"({"prompt":"p","completion":"c","answer":"x"})"
                                         "\n");
  EXPECT_THAT(completion.issues, Contains(ErrorIs("unknown_key", 1, "answer")));
  ValidationReport preference =
      Validate(R"({"input":{"messages":[{"role":"user","content":"q"}],"temperature":1},)"
               R"("preferred_output":[{"role":"assistant","content":"a"}],)"
               R"("non_preferred_output":[{"role":"assistant","content":"b"}]})"
               "\n");
  EXPECT_THAT(preference.issues, Contains(ErrorIs("unknown_key", 1, "input.temperature")));
}

TEST(DatasetValidatorTest, RejectsMissingKeysNamingTheirPath) {
  std::string file =
      absl::StrCat(Chat(R"({"role":"user","content":"q"},{"content":"a"})"), "\n",       // 1
                   Chat(R"({"role":"user","content":"q"},{"role":"assistant"})"), "\n",  // 2
                   Chat(R"({"role":"user","content":[{"type":"text"}]},)"
                        R"({"role":"assistant","content":"a"})"),
                   "\n");  // 3
  ValidationReport r = Validate(file);
  EXPECT_THAT(r.issues, Contains(ErrorIs("missing_key", 1, "messages[1].role")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("missing_key", 2, "messages[1].content")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("missing_key", 3, "messages[0].content[0].text")));
}

TEST(DatasetValidatorTest, RejectsMissingCompletionAndPreferenceKeys) {
  EXPECT_THAT(Validate(R"({"prompt":"p"})"
                       "\n")
                  .issues,
              Contains(ErrorIs("missing_key", 1, "completion")));
  EXPECT_THAT(Validate(R"({"completion":"c"})"
                       "\n")
                  .issues,
              Contains(ErrorIs("missing_key", 1, "prompt")));
  EXPECT_THAT(Validate(R"({"input":{"messages":[{"role":"user","content":"q"}]},)"
                       R"("preferred_output":[{"role":"assistant","content":"a"}]})"
                       "\n")
                  .issues,
              Contains(ErrorIs("missing_key", 1, "non_preferred_output")));
  EXPECT_THAT(Validate(R"({"input":{},"preferred_output":[{"role":"assistant","content":"a"}],)"
                       R"("non_preferred_output":[{"role":"assistant","content":"b"}]})"
                       "\n")
                  .issues,
              Contains(ErrorIs("missing_key", 1, "input.messages")));
  EXPECT_THAT(Validate(R"({"prompt":"p","chosen":"a"})"
                       "\n")
                  .issues,
              Contains(ErrorIs("missing_key", 1, "rejected")));
  EXPECT_THAT(Validate(R"({"prompt":"p","rejected":"a"})"
                       "\n")
                  .issues,
              Contains(ErrorIs("missing_key", 1, "chosen")));
}

TEST(DatasetValidatorTest, RejectsUnknownRoleNamingLineAndField) {
  ValidationReport r = Validate(
      absl::StrCat(ChatLine(1), "\n",
                   Chat(R"({"role":"user","content":"q"},{"role":"bot","content":"a"})"), "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("unknown_role", 2, "messages[1].role")));
  EXPECT_THAT(Find(r, "unknown_role")->message, HasSubstr("\"bot\""));
  EXPECT_EQ(r.error_count, 1) << Describe(r);
}

TEST(DatasetValidatorTest, RejectsNonAssistantRoleInPreferenceOutputAsInvalidRole) {
  ValidationReport r = Validate(R"({"input":{"messages":[{"role":"user","content":"q"}]},)"
                                R"("preferred_output":[{"role":"user","content":"a"}],)"
                                R"("non_preferred_output":[{"role":"assistant","content":"b"}]})"
                                "\n");
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_role", 1, "preferred_output[0].role")));
  EXPECT_EQ(r.error_count, 1) << Describe(r);
}

TEST(DatasetValidatorTest, RejectsEmptyContentNamingField) {
  std::string file = absl::StrCat(
      Chat(R"({"role":"user","content":"  \n "},{"role":"assistant","content":"a"})"), "\n",
      Chat(R"({"role":"user","content":"q"},{"role":"assistant","content":null})"), "\n",
      Chat(R"({"role":"user","content":[{"type":"text","text":" "}]},)"
           R"({"role":"assistant","content":"a"})"),
      "\n");
  ValidationReport r = Validate(file);
  EXPECT_THAT(r.issues, Contains(ErrorIs("empty_content", 1, "messages[0].content")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("empty_content", 2, "messages[1].content")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("empty_content", 3, "messages[0].content")));
  ValidationReport completion = Validate(R"({"prompt":"p","completion":""})"
                                         "\n");
  EXPECT_THAT(completion.issues, Contains(ErrorIs("empty_content", 1, "completion")));
}

TEST(DatasetValidatorTest, RejectsEmptyMessagesArray) {
  ValidationReport r = Validate(absl::StrCat(ChatLine(1), "\n", R"({"messages":[]})", "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("empty_messages", 2, "messages")));
  ValidationReport preference = Validate(
      R"({"input":{"messages":[]},"preferred_output":[{"role":"assistant","content":"a"}],)"
      R"("non_preferred_output":[{"role":"assistant","content":"b"}]})"
      "\n");
  EXPECT_THAT(preference.issues, Contains(ErrorIs("empty_messages", 1, "input.messages")));
}

TEST(DatasetValidatorTest, RejectsChatWithoutAssistantMessageAsMissingAssistant) {
  ValidationReport r = Validate(
      absl::StrCat(ChatLine(1), "\n",
                   Chat(R"({"role":"system","content":"s"},{"role":"user","content":"q"})"), "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("missing_assistant", 2, "messages")));
  EXPECT_EQ(r.error_count, 1) << Describe(r);
}

TEST(DatasetValidatorTest, RejectsChatEndingWithUserAsLastNotAssistant) {
  ValidationReport r = Validate(
      absl::StrCat(Chat(R"({"role":"user","content":"q"},{"role":"assistant","content":"a"},)"
                        R"({"role":"user","content":"thanks"})"),
                   "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("last_not_assistant", 1, "messages[2].role")));
  EXPECT_EQ(r.error_count, 1) << Describe(r);
}

TEST(DatasetValidatorTest, RejectsBadWeightsNamingField) {
  std::string file = absl::StrCat(
      Chat(R"({"role":"user","content":"q"},{"role":"assistant","content":"a","weight":2})"), "\n",
      Chat(R"({"role":"user","content":"q","weight":1},{"role":"assistant","content":"a"})"), "\n",
      Chat(R"({"role":"user","content":"q"},{"role":"assistant","content":"a","weight":"1"})"),
      "\n",
      R"({"input":{"messages":[{"role":"user","content":"q"}]},)"
      R"("preferred_output":[{"role":"assistant","content":"a","weight":1}],)"
      R"("non_preferred_output":[{"role":"assistant","content":"b"}]})",
      "\n");
  ValidationReport r = Validate(file);
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_weight", 1, "messages[1].weight")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_weight", 2, "messages[0].weight")));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_weight", 3, "messages[1].weight")));
  EXPECT_THAT(Find(r, "invalid_weight")->message, HasSubstr("0 or 1"));
  // Line 4 is preference data in a chat file: mixed formats, not checked further.
  EXPECT_THAT(r.issues, Contains(ErrorIs("mixed_formats", 4, "")));

  ValidationReport preference =
      Validate(R"({"input":{"messages":[{"role":"user","content":"q"}]},)"
               R"("preferred_output":[{"role":"assistant","content":"a","weight":1}],)"
               R"("non_preferred_output":[{"role":"assistant","content":"b"}]})"
               "\n");
  EXPECT_THAT(preference.issues,
              Contains(ErrorIs("invalid_weight", 1, "preferred_output[0].weight")));
}

TEST(DatasetValidatorTest, RejectsToolCallsOnNonAssistantMessageAsInvalidKey) {
  ValidationReport r = Validate(absl::StrCat(
      Chat(R"({"role":"system","content":"s"},)"
           R"({"role":"user","content":"q","tool_calls":[]},{"role":"assistant","content":"a"})"),
      "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_key", 1, "messages[1].tool_calls")));
  EXPECT_EQ(r.error_count, 1) << Describe(r);
}

TEST(DatasetValidatorTest, RejectsUnknownContentPartTypeAsInvalidValue) {
  ValidationReport r = Validate(absl::StrCat(
      ChatLine(1), "\n",
      Chat(R"({"role":"user","content":[{"type":"text","text":"q"},{"type":"audio"}]},)"
           R"({"role":"assistant","content":"a"})"),
      "\n"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_value", 2, "messages[0].content[1].type")));
  EXPECT_THAT(Find(r, "invalid_value")->message, HasSubstr("\"audio\""));
}

TEST(DatasetValidatorTest, RejectsOverLongLineAndKeepsCountingLines) {
  ValidatorOptions o = Lenient();
  o.max_line_bytes = 200;
  std::string long_line = Chat(absl::StrCat(R"({"role":"user","content":")", std::string(300, 'x'),
                                            R"("},{"role":"assistant","content":"a"})"));
  ValidationReport r =
      Validate(absl::StrCat(ChatLine(1), "\n", long_line, "\n", ChatLine(3), "\n", "{bad\n"), o);
  EXPECT_THAT(r.issues, Contains(ErrorIs("line_too_long", 2, "")));
  EXPECT_THAT(Find(r, "line_too_long")->message,
              HasSubstr(absl::StrCat("line is ", long_line.size(), " bytes")));
  EXPECT_THAT(Find(r, "line_too_long")->message, HasSubstr("limit of 200 bytes"));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_json", 4, "")));
  EXPECT_EQ(r.error_count, 2) << Describe(r);
  EXPECT_EQ(r.train_stats.examples, 2);
}

TEST(DatasetValidatorTest, OverLongLineSpanningManySmallChunksIsReportedOnce) {
  ValidatorOptions o = Lenient();
  o.max_line_bytes = 200;
  std::string long_line = Chat(absl::StrCat(R"({"role":"user","content":")", std::string(1000, 'x'),
                                            R"("},{"role":"assistant","content":"a"})"));
  std::string file = absl::StrCat(ChatLine(1), "\n", long_line, "\n", ChatLine(3), "\n", "{bad\n");
  for (size_t chunk : {1, 7, 64, 199, 200, 201, 4096}) {
    ValidationReport r = ValidateInChunks(file, chunk, o);
    EXPECT_THAT(r.issues, Contains(ErrorIs("line_too_long", 2, ""))) << "chunk " << chunk;
    EXPECT_THAT(Find(r, "line_too_long")->message,
                HasSubstr(absl::StrCat("line is ", long_line.size(), " bytes")))
        << "chunk " << chunk;
    EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_json", 4, ""))) << "chunk " << chunk;
    EXPECT_EQ(r.error_count, 2) << "chunk " << chunk << "\n" << Describe(r);
    EXPECT_EQ(r.train_stats.examples, 2) << "chunk " << chunk;
  }
}

TEST(DatasetValidatorTest, OverLongFinalLineWithoutNewlineIsReported) {
  ValidatorOptions o = Lenient();
  o.max_line_bytes = 300;
  std::string file = absl::StrCat(ChatLine(1), "\n", std::string(500, 'x'));
  for (size_t chunk : {size_t{16}, size_t{301}, file.size()}) {
    ValidationReport r = ValidateInChunks(file, chunk, o);
    EXPECT_THAT(r.issues, Contains(ErrorIs("line_too_long", 2, ""))) << "chunk " << chunk;
    EXPECT_THAT(Find(r, "line_too_long")->message, HasSubstr("line is 500 bytes"));
    EXPECT_EQ(r.error_count, 1) << Describe(r);
  }
}

// Peak resident set size of this process, in bytes.
int64_t PeakRssBytes() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

TEST(DatasetValidatorTest, FiftyMegabyteLineInSmallChunksIsSkippedWithoutBufferingIt) {
  ValidatorOptions o = Lenient();
  o.max_line_bytes = 1 << 20;
  const size_t kChunk = 64 << 10;
  const size_t kLineBytes = 50 << 20;
  const int64_t rss_before = PeakRssBytes();
  DatasetValidator v(o);
  v.Feed(Split::kTrain, ChatLine(1) + "\n");
  std::string chunk(kChunk, 'x');
  for (size_t sent = 0; sent < kLineBytes; sent += kChunk) v.Feed(Split::kTrain, chunk);
  v.Feed(Split::kTrain, absl::StrCat("\n", ChatLine(3), "\n{bad\n"));
  ValidationReport r = v.Finish();
  const int64_t growth = PeakRssBytes() - rss_before;

  EXPECT_THAT(r.issues, Contains(ErrorIs("line_too_long", 2, "")));
  EXPECT_THAT(Find(r, "line_too_long")->message, HasSubstr(absl::StrCat("line is ", kLineBytes)));
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_json", 4, "")));
  EXPECT_EQ(r.error_count, 2) << Describe(r);
  EXPECT_EQ(r.train_stats.examples, 2);
  EXPECT_EQ(r.train_stats.bytes,
            static_cast<int64_t>(ChatLine(1).size() + 1 + kLineBytes + ChatLine(3).size() + 7));
  // Buffering the line would need 50 MB; the limit is 1 MiB plus a chunk.
  EXPECT_LT(growth, int64_t{20} << 20) << "peak RSS grew by " << growth << " bytes";
}

TEST(DatasetValidatorTest, EmptyFileIsAnError) {
  ValidationReport r = Validate("");
  EXPECT_FALSE(r.valid);
  EXPECT_THAT(r.issues, Contains(ErrorIs("empty_file", 0, "")));
  EXPECT_EQ(r.train_stats.examples, 0);
}

TEST(DatasetValidatorTest, FileOfBlankLinesIsEmpty) {
  ValidationReport r = Validate("\n  \n\r\n");
  EXPECT_THAT(r.issues, Contains(ErrorIs("empty_file", 0, "")));
  EXPECT_THAT(r.issues, Contains(WarningIs("blank_line", 2, "")));
}

TEST(DatasetValidatorTest, FewerThanMinExamplesIsAnError) {
  ValidatorOptions o;  // min_examples 10, recommended 100
  ValidationReport r = Validate(ChatLines(9), o);
  EXPECT_FALSE(r.valid);
  EXPECT_THAT(r.issues, Contains(ErrorIs("too_few_examples", 0, "")));
  EXPECT_THAT(Find(r, "too_few_examples")->message, HasSubstr("9 examples"));
  EXPECT_THAT(Find(r, "too_few_examples")->message, HasSubstr("10"));
  EXPECT_EQ(Find(r, "few_examples"), nullptr);
}

TEST(DatasetValidatorTest, CountsTokensPerExampleAndPerEpochWithATokenizer) {
  auto tokenizer = text::Tokenizer::FromFile(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/gpt2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  TokenizerTokenCounter counter(tokenizer->get());
  ValidatorOptions o = Lenient();
  o.token_counter = &counter;
  ValidationReport r = Validate(ChatLines(20), o);
  EXPECT_TRUE(r.valid) << Describe(r);
  ASSERT_TRUE(r.train_stats.has_tokens);
  // Each line's tokens are its three contents' tokens.
  int64_t expected = 0;
  for (int i = 1; i <= 20; ++i) {
    nlohmann::json line = nlohmann::json::parse(ChatLine(i));
    for (const auto& m : line["messages"]) {
      expected += static_cast<int64_t>(
          (*tokenizer)->Encode(m["content"].get<std::string>(), false)->size());
    }
  }
  EXPECT_EQ(r.train_stats.total_tokens, expected);
  EXPECT_GT(r.train_stats.tokens_per_example.max, 0);
  EXPECT_FALSE(Validate(ChatLines(20), Lenient()).train_stats.has_tokens);
}

TEST(DatasetValidatorTest, ChatExamplesCountTheTokensOfTheModelsChatTemplateRendering) {
  auto model = text::LoadModelText(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/qwen3"));
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_NE(model->chat_template, nullptr);
  TokenizerTokenCounter counter(model->tokenizer.get(), model->chat_template.get(),
                                model->template_variables);
  ValidatorOptions o = Lenient();
  o.token_counter = &counter;
  ValidationReport r = Validate(ChatLines(5), o);
  ASSERT_TRUE(r.train_stats.has_tokens) << Describe(r);
  int64_t expected = 0;
  for (int i = 1; i <= 5; ++i) {
    nlohmann::ordered_json context = nlohmann::ordered_json::parse(ChatLine(i));
    context["add_generation_prompt"] = false;
    auto rendered = model->chat_template->Render(context);
    ASSERT_TRUE(rendered.ok()) << rendered.status();
    expected += static_cast<int64_t>(model->tokenizer->Encode(*rendered, false)->size());
  }
  EXPECT_EQ(r.train_stats.total_tokens, expected);
}

TEST(DatasetValidatorTest, ExamplesOverMaxSeqLenAreErrorsNamingTheLine) {
  auto tokenizer = text::Tokenizer::FromFile(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/gpt2"));
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  TokenizerTokenCounter counter(tokenizer->get());
  ValidatorOptions o = Lenient();
  o.token_counter = &counter;
  o.max_seq_len = 20;
  std::string file = ChatLines(2) +
                     Chat(R"({"role":"user","content":"q"},)"
                          R"({"role":"assistant","content":")" +
                          std::string(400, 'x') + R"( y z"})") +
                     "\n";
  ValidationReport r = Validate(file, o);
  EXPECT_FALSE(r.valid);
  EXPECT_THAT(r.issues, Contains(ErrorIs("too_many_tokens", 3, "")));
  EXPECT_THAT(Find(r, "too_many_tokens")->message, HasSubstr("--max-seq-len=20"));
}

TEST(DatasetValidatorTest, ExampleCountRulesApplyToTheTrainFileOnly) {
  ValidatorOptions o;  // min_examples 10, recommended 100
  ValidationReport r = ValidateBoth(ChatLines(100), ChatLines(6, 101), o);
  EXPECT_TRUE(r.valid) << Describe(r);
  EXPECT_EQ(Find(r, "too_few_examples"), nullptr);
  EXPECT_EQ(Find(r, "few_examples"), nullptr);
  ASSERT_TRUE(r.validation_stats.has_value());
  EXPECT_EQ(r.validation_stats->examples, 6);
}

TEST(DatasetValidatorTest, FewerThanRecommendedExamplesIsAWarning) {
  ValidatorOptions o;
  ValidationReport r = Validate(ChatLines(10), o);
  EXPECT_TRUE(r.valid) << Describe(r);
  EXPECT_THAT(r.issues, Contains(WarningIs("few_examples", 0, "")));
  EXPECT_EQ(Find(r, "too_few_examples"), nullptr);
  ValidationReport enough = Validate(ChatLines(100), o);
  ExpectClean(enough);
}

// ---- One test per warning kind --------------------------------------------------

TEST(DatasetValidatorTest, WarnsAboutChatExamplesWithoutSystemMessage) {
  std::string file = absl::StrCat(
      ChatLine(1), "\n",
      Chat(R"({"role":"user","content":"q2"},{"role":"assistant","content":"a2"})"), "\n",
      Chat(R"({"role":"user","content":"q3"},{"role":"assistant","content":"a3"})"), "\n");
  ValidationReport r = Validate(file);
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("no_system_message", 0, "messages")));
  EXPECT_THAT(Find(r, "no_system_message")->message, HasSubstr("2 of 3"));
  EXPECT_EQ(r.train_stats.examples_without_system_message, 2);
}

TEST(DatasetValidatorTest, WarnsAboutExactDuplicateNamingTheFirstLine) {
  ValidationReport r = Validate(absl::StrCat(ChatLines(2), ChatLine(1), "\n"));
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("duplicate_example", 3, "")));
  EXPECT_THAT(Find(r, "duplicate_example")->message, HasSubstr("line 1"));
  EXPECT_EQ(Find(r, "near_duplicate"), nullptr);
  EXPECT_EQ(r.train_stats.exact_duplicates, 1);
  EXPECT_EQ(r.train_stats.normalized_duplicates, 1);
}

TEST(DatasetValidatorTest, WarnsAboutNearDuplicateDifferingInCaseAndWhitespace) {
  std::string first = Chat(R"({"role":"user","content":"Where is the station?"},)"
                           R"({"role":"assistant","content":"Two blocks north."})");
  std::string second = Chat(R"({"role":"user","content":"  where IS the\tstation?"},)"
                            R"({"role":"assistant","content":"two  blocks\nNorth. "})");
  ValidationReport r = Validate(absl::StrCat(first, "\n", ChatLine(2), "\n", second, "\n"));
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("near_duplicate", 3, "")));
  EXPECT_THAT(Find(r, "near_duplicate")->message, HasSubstr("line 1"));
  EXPECT_EQ(Find(r, "duplicate_example"), nullptr);
  EXPECT_EQ(r.train_stats.exact_duplicates, 0);
  EXPECT_EQ(r.train_stats.normalized_duplicates, 1);
}

TEST(DatasetValidatorTest, SameTextUnderDifferentRolesIsNotADuplicate) {
  std::string a = Chat(R"({"role":"user","content":"x"},{"role":"assistant","content":"y"})");
  std::string b = Chat(R"({"role":"system","content":"x"},{"role":"assistant","content":"y"})");
  ValidationReport r = Validate(absl::StrCat(a, "\n", b, "\n"));
  EXPECT_EQ(Find(r, "near_duplicate"), nullptr) << Describe(r);
}

TEST(DatasetValidatorTest, WarnsAboutLongExample) {
  ValidatorOptions o = Lenient();
  o.long_example_chars = 100;
  std::string long_line = Chat(absl::StrCat(R"({"role":"user","content":")", std::string(150, 'y'),
                                            R"("},{"role":"assistant","content":"a"})"));
  ValidationReport r = Validate(absl::StrCat(ChatLine(1), "\n", long_line, "\n"), o);
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("long_example", 2, "")));
  EXPECT_THAT(Find(r, "long_example")->message, HasSubstr("151 characters"));
}

// `counts` examples per label, as single-turn chat classification data.
std::string Classification(const std::vector<std::pair<std::string, int>>& counts) {
  std::string out;
  int n = 0;
  for (const auto& [label, count] : counts) {
    for (int i = 0; i < count; ++i) {
      absl::StrAppend(&out,
                      Chat(absl::StrCat(R"({"role":"system","content":"Classify sentiment."},)",
                                        R"({"role":"user","content":"Review number )", ++n,
                                        R"("},{"role":"assistant","content":")", label, R"("})")),
                      "\n");
    }
  }
  return out;
}

TEST(DatasetValidatorTest, WarnsAboutImbalancedLabelsInClassificationData) {
  ValidationReport r = Validate(Classification({{"positive", 20}, {"negative", 2}}));
  EXPECT_TRUE(r.valid);
  EXPECT_TRUE(r.train_stats.looks_like_classification);
  EXPECT_THAT(r.issues, Contains(WarningIs("imbalanced_labels", 0, "")));
  EXPECT_THAT(Find(r, "imbalanced_labels")->message, HasSubstr("\"positive\" has 20"));
  EXPECT_THAT(Find(r, "imbalanced_labels")->message, HasSubstr("\"negative\" only 2"));

  ValidationReport balanced = Validate(Classification({{"positive", 11}, {"negative", 11}}));
  EXPECT_TRUE(balanced.train_stats.looks_like_classification);
  EXPECT_EQ(Find(balanced, "imbalanced_labels"), nullptr) << Describe(balanced);
}

TEST(DatasetValidatorTest, WarnsAboutBlankLineAndSkipsIt) {
  ValidationReport r = Validate(absl::StrCat(ChatLine(1), "\n   \n", ChatLine(3), "\n"));
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("blank_line", 2, "")));
  EXPECT_EQ(r.train_stats.examples, 2);
}

TEST(DatasetValidatorTest, WarnsAboutIdenticalPreferenceOutputs) {
  ValidationReport openai =
      Validate(R"({"input":{"messages":[{"role":"user","content":"q"}]},)"
               R"("preferred_output":[{"role":"assistant","content":"same"}],)"
               R"("non_preferred_output":[{"role":"assistant","content":"same"}]})"
               "\n");
  EXPECT_TRUE(openai.valid);
  EXPECT_THAT(openai.issues, Contains(WarningIs("identical_outputs", 1, "non_preferred_output")));

  ValidationReport trl =
      Validate(absl::StrCat(R"({"prompt":"p1","chosen":"a","rejected":"b"})", "\n",
                            R"({"prompt":"p2","chosen":"same","rejected":"same"})", "\n"));
  EXPECT_TRUE(trl.valid);
  EXPECT_THAT(trl.issues, Contains(WarningIs("identical_outputs", 2, "rejected")));
}

TEST(DatasetValidatorTest, WarnsWhenEveryAssistantTurnHasWeightZero) {
  ValidationReport r =
      Validate(absl::StrCat(ChatLine(1), "\n",
                            Chat(R"({"role":"system","content":"s"},{"role":"user","content":"q"},)"
                                 R"({"role":"assistant","content":"a","weight":0})"),
                            "\n"));
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("no_trained_message", 2, "messages")));
  EXPECT_EQ(r.train_stats.trained_assistant_messages, 1);
}

TEST(DatasetValidatorTest, WarnsAboutValidationExamplesThatAlsoAppearInTrain) {
  std::string validation = absl::StrCat(ChatLine(100), "\n", ChatLine(2), "\n");
  ValidationReport r = ValidateBoth(ChatLines(3), validation);
  EXPECT_TRUE(r.valid);
  EXPECT_THAT(r.issues, Contains(WarningIs("train_validation_overlap", 2, "")));
  const ValidationIssue* overlap = Find(r, "train_validation_overlap");
  EXPECT_EQ(overlap->file, "validation");
  EXPECT_THAT(overlap->message, HasSubstr("train line 2"));
  ASSERT_TRUE(r.validation_stats.has_value());
  EXPECT_EQ(r.validation_stats->examples, 2);
  EXPECT_EQ(r.counts.at("train_validation_overlap").count, 1);
}

TEST(DatasetValidatorTest, ValidationFileErrorsNameTheValidationFile) {
  ValidationReport r = ValidateBoth(ChatLines(3), absl::StrCat(ChatLine(10), "\n{bad\n"));
  EXPECT_FALSE(r.valid);
  const ValidationIssue* bad = Find(r, "invalid_json");
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(bad->file, "validation");
  EXPECT_EQ(bad->line, 2);
}

TEST(DatasetValidatorTest, ValidationFileMustUseTheTrainFormat) {
  ValidationReport r = ValidateBoth(ChatLines(2), CompletionLine(1) + "\n");
  EXPECT_THAT(r.issues, Contains(ErrorIs("mixed_formats", 1, "")));
  EXPECT_THAT(Find(r, "mixed_formats")->message, HasSubstr("train line 1"));
}

// ---- Report behaviour ------------------------------------------------------------

TEST(DatasetValidatorTest, StrictModeMakesWarningsInvalid) {
  std::string file = absl::StrCat(ChatLines(2), ChatLine(1), "\n");  // a duplicate
  ValidatorOptions o = Lenient();
  ValidationReport lenient = Validate(file, o);
  EXPECT_TRUE(lenient.valid);
  EXPECT_EQ(lenient.warning_count, 1);
  o.strict = true;
  ValidationReport strict = Validate(file, o);
  EXPECT_FALSE(strict.valid);
  EXPECT_EQ(strict.error_count, 0);
  EXPECT_EQ(strict.warning_count, 1);
  ExpectClean(Validate(ChatLines(3), o));  // strict and clean is still valid
}

TEST(DatasetValidatorTest, MaxListedIssuesTruncatesTheListButKeepsFullCounts) {
  ValidatorOptions o = Lenient();
  o.max_listed_issues = 5;
  std::string file = ChatLine(1) + "\n";
  for (int i = 0; i < 30; ++i) absl::StrAppend(&file, "{bad json\n");
  for (int i = 0; i < 4; ++i) absl::StrAppend(&file, "\n");
  ValidationReport r = Validate(file, o);
  EXPECT_THAT(r.issues, SizeIs(5 + 4));  // the first 5 errors and all 4 warnings
  EXPECT_TRUE(r.truncated);
  EXPECT_EQ(r.error_count, 30);
  EXPECT_EQ(r.warning_count, 4);
  EXPECT_EQ(r.counts.at("invalid_json").count, 30);
  EXPECT_EQ(r.counts.at("invalid_json").severity, Severity::kError);
  EXPECT_EQ(r.counts.at("blank_line").count, 4);
  EXPECT_EQ(r.counts.at("blank_line").severity, Severity::kWarning);
  // The listed ones are the first in file order.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(r.issues[i].line, i + 2);
  EXPECT_FALSE(Validate(ChatLines(3), o).truncated);
}

TEST(DatasetValidatorTest, AFloodOfWarningsNeverHidesTheErrors) {
  ValidatorOptions o = Lenient();
  o.max_listed_issues = 5;
  std::string file;
  for (int i = 0; i < 20; ++i) absl::StrAppend(&file, ChatLine(1), "\n");  // 19 duplicates
  absl::StrAppend(&file, "{bad json\n");                                   // line 21
  ValidationReport r = Validate(file, o);
  EXPECT_FALSE(r.valid);
  EXPECT_EQ(r.warning_count, 19);
  EXPECT_THAT(r.issues, Contains(ErrorIs("invalid_json", 21, "")));
  EXPECT_THAT(r.issues, SizeIs(6));  // 5 warnings + the error
}

// A file with a bit of everything: valid lines, CRLF, unicode, errors,
// warnings, an over-long line and no final newline.
std::string MixedFile() {
  return absl::StrCat(ChatLine(1), "\n",  // 1
                      Chat(R"({"role":"user","content":"Grüße aus Zürich — 東京"},)"
                           R"({"role":"assistant","content":"Ça va? 👍"})"),
                      "\r\n",             // 2
                      "{not json\n",      // 3
                      "\n",               // 4
                      ChatLine(1), "\n",  // 5
                      Chat(R"({"role":"user","content":"Q"},{"role":"bot","content":"A"})"),
                      "\n",  // 6
                      Chat(absl::StrCat(R"({"role":"user","content":")", std::string(400, 'z'),
                                        R"("},{"role":"assistant","content":"a"})")),
                      "\n",  // 7
                      Chat(R"({"role":"user","content":"QUESTION  NUMBER 1"},)"
                           R"({"role":"assistant","content":"answer number 1"})"),
                      "\n",               // 8
                      ChatLine(9), "\n",  // 9
                      ChatLine(10));      // 10
}

TEST(DatasetValidatorTest, LinesSplitAcrossChunksAtEveryByteBoundaryGiveTheSameReport) {
  ValidatorOptions o = Lenient();
  o.max_line_bytes = 300;
  const std::string file = MixedFile();
  const std::string expected = Describe(Validate(file, o));
  // Sanity: the file does exercise errors and warnings.
  ASSERT_THAT(expected, HasSubstr("line_too_long"));
  ASSERT_THAT(expected, HasSubstr("unknown_role"));
  ASSERT_THAT(expected, HasSubstr("blank_line"));
  for (size_t k = 0; k <= file.size(); ++k) {
    DatasetValidator v(o);
    v.Feed(Split::kTrain, absl::string_view(file).substr(0, k));
    v.Feed(Split::kTrain, absl::string_view(file).substr(k));
    ASSERT_EQ(Describe(v.Finish()), expected) << "split at byte " << k;
  }
}

TEST(DatasetValidatorTest, ByteAtATimeAndOddChunkSizesGiveTheSameReport) {
  ValidatorOptions o = Lenient();
  o.max_line_bytes = 300;
  const std::string file = MixedFile();
  const std::string expected = Describe(Validate(file, o));
  for (size_t chunk : {1, 2, 3, 13, 63, 64, 65, 255, 1000}) {
    EXPECT_EQ(Describe(ValidateInChunks(file, chunk, o)), expected) << "chunk " << chunk;
  }
}

TEST(DatasetValidatorTest, EmptyChunksAreHarmless) {
  DatasetValidator v(Lenient());
  v.Feed(Split::kTrain, "");
  v.Feed(Split::kTrain, ChatLine(1));
  v.Feed(Split::kTrain, "");
  v.Feed(Split::kTrain, "\n");
  v.Feed(Split::kTrain, "");
  ValidationReport r = v.Finish();
  ExpectClean(r);
  EXPECT_EQ(r.train_stats.examples, 1);
}

TEST(DatasetValidatorTest, ErrorsSoFarCountsWhileFeeding) {
  DatasetValidator v(Lenient());
  v.Feed(Split::kTrain, ChatLines(2));
  EXPECT_EQ(v.errors_so_far(), 0);
  v.Feed(Split::kTrain, "{bad\n[]\n");
  EXPECT_EQ(v.errors_so_far(), 2);
}

TEST(DatasetValidatorTest, StatsCountCharactersAndWordsOfAllContents) {
  std::string line =
      Chat(R"({"role":"user","content":"héllo there"},{"role":"assistant","content":"ok"})");
  ValidationReport r = Validate(line + "\n");
  EXPECT_TRUE(r.valid) << Describe(r);
  EXPECT_EQ(r.train_stats.characters_per_example.max, 13);  // 11 + 2 code points
  EXPECT_EQ(r.train_stats.words_per_example.max, 3);
  EXPECT_EQ(r.train_stats.messages_per_example.max, 2);
}

class ValidateFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/dataset_validator_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  void TearDown() override { (void)RemoveAll(dir_); }
  std::string dir_;
};

TEST_F(ValidateFilesTest, ValidatesTrainAndValidationFilesOnDisk) {
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/train.jsonl", ChatLines(3)).ok());
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/val.jsonl", ChatLines(2, 50)).ok());
  auto r = DatasetValidator::ValidateFiles(Lenient(), dir_ + "/train.jsonl", dir_ + "/val.jsonl");
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectClean(*r);
  EXPECT_EQ(r->train_stats.examples, 3);
  ASSERT_TRUE(r->validation_stats.has_value());
  EXPECT_EQ(r->validation_stats->examples, 2);
}

TEST_F(ValidateFilesTest, MissingFileIsNotFoundNamingIt) {
  auto r = DatasetValidator::ValidateFiles(Lenient(), dir_ + "/nope.jsonl", "");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("nope.jsonl"));
}

TEST_F(ValidateFilesTest, ShippedSampleFilesValidateAsExpected) {
  const std::string data = SWITCHYARD_TEST_DATA_DIR;
  ValidatorOptions o;
  auto valid = DatasetValidator::ValidateFiles(o, data + "/chat_valid.jsonl", "");
  ASSERT_TRUE(valid.ok()) << valid.status();
  EXPECT_TRUE(valid->valid) << Describe(*valid);
  EXPECT_EQ(valid->error_count, 0);
  auto invalid = DatasetValidator::ValidateFiles(o, data + "/chat_invalid.jsonl", "");
  ASSERT_TRUE(invalid.ok()) << invalid.status();
  EXPECT_FALSE(invalid->valid);
  EXPECT_THAT(invalid->issues, Contains(ErrorIs("unknown_role", 3, "messages[1].role")));
  EXPECT_THAT(invalid->issues, Contains(ErrorIs("invalid_json", 5, "")));
}

}  // namespace
}  // namespace switchyard::dataset
