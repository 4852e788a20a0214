#include "services/dataset/dataset_preparer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shared/core/file_util.h"

namespace switchyard::dataset {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

class DatasetPreparerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = absl::StrCat(::testing::TempDir(), "/dataset_preparer_test_", RandomHex(8));
    ASSERT_TRUE(MakeDirs(dir_).ok());
  }
  void TearDown() override { (void)RemoveAll(dir_); }

  std::string Write(const std::string& name, const std::string& contents) {
    std::string path = absl::StrCat(dir_, "/", name);
    EXPECT_TRUE(WriteFileAtomic(path, contents).ok());
    return path;
  }
  std::string Out(const std::string& name = "out.jsonl") { return absl::StrCat(dir_, "/", name); }

  // Parses every line of a JSONL output file.
  static std::vector<Json> ReadJsonl(const std::string& path) {
    auto contents = ReadFile(path);
    EXPECT_TRUE(contents.ok()) << contents.status();
    std::vector<Json> records;
    if (!contents.ok()) return records;
    EXPECT_TRUE(contents->empty() || contents->back() == '\n');
    for (absl::string_view line : absl::StrSplit(*contents, '\n', absl::SkipEmpty())) {
      records.push_back(Json::parse(line));
    }
    return records;
  }

  static absl::StatusOr<PrepareReport> Run(PrepareOptions options, const std::string& in,
                                           const std::string& out) {
    return DatasetPreparer(std::move(options)).Prepare(in, out);
  }

  static const PrepareFix* FindFix(const PrepareReport& report, const std::string& kind) {
    for (const PrepareFix& fix : report.fixes) {
      if (fix.kind == kind) return &fix;
    }
    return nullptr;
  }

  static Json Chat(const std::string& user, const std::string& assistant) {
    return Json{
        {"messages",
         {{{"role", "user"}, {"content", user}}, {{"role", "assistant"}, {"content", assistant}}}}};
  }

  // JSONL prompt/completion data, one line per pair.
  static std::string CompletionJsonl(
      const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::string out;
    for (const auto& [p, c] : pairs) {
      absl::StrAppend(&out, Json{{"prompt", p}, {"completion", c}}.dump(), "\n");
    }
    return out;
  }

  std::string dir_;
};

TEST_F(DatasetPreparerTest, CsvWithQuotedCommasNewlinesAndCrlfBecomesChat) {
  std::string in = Write("data.csv",
                         "question,answer\r\n"
                         "\"Hello, world?\",\"Hi, there\"\r\n"
                         "\"Two\nlines\",\"She said \"\"yes\"\"\"\r\n"
                         "plain,text\r\n");
  PrepareOptions options;
  options.system_message = "Be brief.";
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->input_kind, InputKind::kCsv);
  EXPECT_EQ(report->output_format, DatasetFormat::kChat);
  EXPECT_EQ(report->input_examples, 3);
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 3u);
  // Raw bytes: the key order (role before content) is part of the format.
  std::string raw = *ReadFile(Out());
  EXPECT_EQ(
      raw.substr(0, raw.find('\n')),
      R"({"messages":[{"role":"system","content":"Be brief."},)"
      R"({"role":"user","content":"Hello, world?"},{"role":"assistant","content":"Hi, there"}]})");
  EXPECT_EQ(records[1]["messages"][1]["content"], "Two\nlines");
  EXPECT_EQ(records[1]["messages"][2]["content"], "She said \"yes\"");
  EXPECT_EQ(records[2]["messages"][2]["content"], "text");
}

TEST_F(DatasetPreparerTest, OutputKeepsStableKeyOrderAndIsCompact) {
  std::string in = Write("data.csv", "prompt,completion\na,b\n");
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  ASSERT_TRUE(Run(options, in, Out()).ok());
  EXPECT_EQ(*ReadFile(Out()), "{\"prompt\":\"a\",\"completion\":\"b\"}\n");
}

TEST_F(DatasetPreparerTest, TsvBecomesCompletion) {
  std::string in = Write("data.tsv", "input\toutput\nHello, \"x\"\tWorld\r\nfoo\tbar\n\n");
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->input_kind, InputKind::kTsv);
  EXPECT_EQ(report->output_format, DatasetFormat::kCompletion);
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], (Json{{"prompt", "Hello, \"x\""}, {"completion", "World"}}));
  EXPECT_EQ(records[1], (Json{{"prompt", "foo"}, {"completion", "bar"}}));
}

TEST_F(DatasetPreparerTest, JsonArrayBecomesChat) {
  std::string in = Write("data.json", R"([{"text": "great film", "label": "positive"},
                                          {"text": "dull", "label": "negative"}])");
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->input_kind, InputKind::kJsonArray);
  EXPECT_EQ(report->output_format, DatasetFormat::kChat);
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], Chat("great film", "positive"));
  EXPECT_EQ(records[1], Chat("dull", "negative"));
}

TEST_F(DatasetPreparerTest, InputKindDetectedByContentWithoutExtension) {
  std::string in = Write("data.txt", "  [{\"prompt\": \"a\", \"completion\": \"b\"}]");
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->input_kind, InputKind::kJsonArray);
}

TEST_F(DatasetPreparerTest, ChatJsonlIsKeptAsIsInAutoFormat) {
  std::string line =
      R"({"messages":[{"role":"user","content":"q","weight":0},{"role":"assistant","content":"a"}]})";
  std::string in = Write("chat.jsonl", absl::StrCat(line, "\n"));
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->output_format, DatasetFormat::kChat);
  EXPECT_EQ(*ReadFile(Out()), absl::StrCat(line, "\n"));
}

TEST_F(DatasetPreparerTest, SingleTurnChatConvertsToCompletionWithSystemLeadingPrompt) {
  std::string in = Write(
      "chat.jsonl",
      R"({"messages":[{"role":"system","content":"S"},{"role":"user","content":"U"},{"role":"assistant","content":"A"}]})"
      "\n");
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  ASSERT_TRUE(Run(options, in, Out()).ok());
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0], (Json{{"prompt", "S\n\nU"}, {"completion", "A"}}));
}

TEST_F(DatasetPreparerTest, MultiTurnChatToCompletionIsRejectedNamingTheLine) {
  std::string in = Write(
      "chat.jsonl",
      absl::StrCat(
          Chat("a", "b").dump(), "\n",
          R"({"messages":[{"role":"user","content":"1"},{"role":"assistant","content":"2"},{"role":"user","content":"3"},{"role":"assistant","content":"4"}]})",
          "\n"));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  auto report = Run(options, in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 2:"));
  EXPECT_THAT(report.status().message(), HasSubstr("single-turn"));
}

TEST_F(DatasetPreparerTest, PreferenceJsonlIsKeptAndCannotBecomeChat) {
  std::string line = R"({"prompt":"p","chosen":"good","rejected":"bad"})";
  std::string in = Write("pref.jsonl", absl::StrCat(line, "\n"));
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->output_format, DatasetFormat::kPreference);
  EXPECT_EQ(*ReadFile(Out()), absl::StrCat(line, "\n"));

  PrepareOptions chat;
  chat.output_format = DatasetFormat::kChat;
  auto rejected = Run(chat, in, Out());
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(), HasSubstr("line 1:"));
}

// --- Fixes ------------------------------------------------------------------

TEST_F(DatasetPreparerTest, StripWhitespaceIsReportedButNotAppliedWithoutApplyFixes) {
  std::string in = Write("d.csv", "prompt,completion\n  hi  ,there\nok,fine\n\" pad\",x\n");
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "strip_whitespace");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 2);
  EXPECT_THAT(fix->example_lines, ElementsAre(2, 4));
  EXPECT_EQ(ReadJsonl(Out())[0], Chat("  hi  ", "there"));
}

TEST_F(DatasetPreparerTest, StripWhitespaceIsAppliedWithApplyFixes) {
  std::string in = Write("d.csv", "prompt,completion\n  hi  ,there\nok,fine\n\" pad\",x\n");
  PrepareOptions options;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_NE(FindFix(*report, "strip_whitespace"), nullptr);
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0], Chat("hi", "there"));
  EXPECT_EQ(records[2], Chat("pad", "x"));
}

TEST_F(DatasetPreparerTest, DropEmptyIsReportedButNotAppliedWithoutApplyFixes) {
  std::string in = Write("d.csv", "prompt,completion\na,b\n  ,b\nc,\nd,e\n");
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "drop_empty");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 2);
  EXPECT_THAT(fix->example_lines, ElementsAre(3, 4));
  EXPECT_EQ(ReadJsonl(Out()).size(), 4u);
  EXPECT_EQ(report->train_examples, 4);
}

TEST_F(DatasetPreparerTest, DropEmptyIsAppliedWithApplyFixes) {
  std::string in = Write("d.csv", "prompt,completion\na,b\n  ,b\nc,\nd,e\n");
  PrepareOptions options;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_NE(FindFix(*report, "drop_empty"), nullptr);
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], Chat("a", "b"));
  EXPECT_EQ(records[1], Chat("d", "e"));
  EXPECT_EQ(report->input_examples, 4);
  EXPECT_EQ(report->train_examples, 2);
}

TEST_F(DatasetPreparerTest, DropDuplicateIsReportedButNotAppliedWithoutApplyFixes) {
  std::string in =
      Write("d.jsonl", absl::StrCat(Chat("q", "a").dump(), "\n", Chat(" q ", "a").dump(), "\n",
                                    Chat("q", "other").dump(), "\n"));
  auto report = Run(PrepareOptions(), in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "drop_duplicate");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 1);
  EXPECT_THAT(fix->example_lines, ElementsAre(2));
  EXPECT_EQ(ReadJsonl(Out()).size(), 3u);
}

TEST_F(DatasetPreparerTest, DropDuplicateKeepsTheFirstWithApplyFixes) {
  std::string in =
      Write("d.jsonl", absl::StrCat(Chat("q", "a").dump(), "\n", Chat(" q ", "a").dump(), "\n",
                                    Chat("q", "other").dump(), "\n"));
  PrepareOptions options;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0], Chat("q", "a"));
  EXPECT_EQ(records[1], Chat("q", "other"));
}

TEST_F(DatasetPreparerTest, CompletionSeparatorIsReportedButNotAppliedWithoutApplyFixes) {
  std::string in =
      Write("d.jsonl",
            CompletionJsonl({{"a\n\n###\n\n", " x\n"}, {"b\n\n###\n\n", " y\n"}, {"c", " z\n"}}));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "completion_separator");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 1);
  EXPECT_THAT(fix->example_lines, ElementsAre(3));
  EXPECT_THAT(fix->message, HasSubstr("\\n\\n###\\n\\n"));   // most common ending
  EXPECT_EQ(FindFix(*report, "strip_whitespace"), nullptr);  // separators are not whitespace noise
  EXPECT_EQ(ReadJsonl(Out())[2]["prompt"], "c");
}

TEST_F(DatasetPreparerTest, CompletionSeparatorIsAppendedWithApplyFixes) {
  std::string in = Write("d.jsonl", CompletionJsonl({{"a\n\n###\n\n", " x\n"},
                                                     {"b\n\n###\n\n", " y\n"},
                                                     {"c ", " z\n"},
                                                     {"d\n\n", " w\n"},
                                                     {"e ###  ", " v\n"}}));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "completion_separator");
  ASSERT_NE(fix, nullptr);
  EXPECT_THAT(fix->example_lines, ElementsAre(3, 4, 5));
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 5u);
  EXPECT_EQ(records[0]["prompt"], "a\n\n###\n\n");
  EXPECT_EQ(records[2]["prompt"], "c\n\n###\n\n");
  // A whitespace ending or a sloppy separator is replaced, not doubled.
  EXPECT_EQ(records[3]["prompt"], "d\n\n###\n\n");
  EXPECT_EQ(records[4]["prompt"], "e\n\n###\n\n");
  EXPECT_EQ(records[2]["completion"], " z\n");
}

TEST_F(DatasetPreparerTest, CompletionStopIsReportedButNotAppliedWithoutApplyFixes) {
  std::string in =
      Write("d.jsonl", CompletionJsonl({{"a ->", " x\n"}, {"b ->", " y"}, {"c ->", " z\n"}}));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(FindFix(*report, "completion_separator"), nullptr);  // all end with " ->"
  const PrepareFix* fix = FindFix(*report, "completion_stop");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 1);
  EXPECT_THAT(fix->example_lines, ElementsAre(2));
  EXPECT_EQ(ReadJsonl(Out())[1]["completion"], " y");
}

TEST_F(DatasetPreparerTest, AStrayTrailingSpaceIsNotTakenForTheStopSequence) {
  // One completion of four ends in a space: no convention, so "\n" is added
  // (after stripping the space), never " ".
  std::string in =
      Write("d.jsonl",
            CompletionJsonl({{"a ->", " w"}, {"b ->", " x"}, {"c ->", " y "}, {"d ->", " z"}}));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 4u);
  for (const Json& r : records)
    EXPECT_TRUE(absl::EndsWith(r["completion"].get<std::string>(), "\n"));
  EXPECT_EQ(records[2]["completion"], " y\n");
}

TEST_F(DatasetPreparerTest, CompletionStopIsAppendedWithApplyFixes) {
  std::string in =
      Write("d.jsonl", CompletionJsonl({{"a ->", " x END"}, {"b ->", " y END"}, {"c ->", " z"}}));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_NE(FindFix(*report, "completion_stop"), nullptr);
  std::vector<Json> records = ReadJsonl(Out());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0]["completion"], " x END");
  EXPECT_EQ(records[2]["completion"], " z END");  // the common stop sequence

  // With no stop sequence at all, "\n" is the one added.
  std::string bare = Write("bare.jsonl", CompletionJsonl({{"a ->", " x"}, {"b ->", " y"}}));
  ASSERT_TRUE(Run(options, bare, Out("bare_out.jsonl")).ok());
  EXPECT_EQ(ReadJsonl(Out("bare_out.jsonl"))[1]["completion"], " y\n");
}

TEST_F(DatasetPreparerTest, CompletionLeadingSpaceIsReportedButNeverApplied) {
  std::string in = Write("d.jsonl", CompletionJsonl({{"a ->", "x\n"}, {"b ->", " y\n"}}));
  PrepareOptions options;
  options.output_format = DatasetFormat::kCompletion;
  options.apply_fixes = true;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "completion_leading_space");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 1);
  EXPECT_THAT(fix->example_lines, ElementsAre(1));
  EXPECT_THAT(fix->message, HasSubstr("never applied"));
  EXPECT_EQ(ReadJsonl(Out())[0]["completion"], "x\n");
}

TEST_F(DatasetPreparerTest, FixExampleLinesAreCappedAtFive) {
  std::string csv = "prompt,completion\n";
  for (int i = 0; i < 8; ++i) absl::StrAppend(&csv, " p", i, ",c\n");
  auto report = Run(PrepareOptions(), Write("d.csv", csv), Out());
  ASSERT_TRUE(report.ok()) << report.status();
  const PrepareFix* fix = FindFix(*report, "strip_whitespace");
  ASSERT_NE(fix, nullptr);
  EXPECT_EQ(fix->count, 8);
  EXPECT_THAT(fix->example_lines, ElementsAre(2, 3, 4, 5, 6));
}

// --- Split ------------------------------------------------------------------

// 100 free-text examples: not classification.
std::string FreeTextCsv() {
  std::string csv = "prompt,completion\n";
  for (int i = 0; i < 100; ++i) {
    absl::StrAppend(&csv, "question ", i, ",a long unique answer number ", i, " with words\n");
  }
  return csv;
}

TEST_F(DatasetPreparerTest, SeededSplitIsReproducibleAndSizedRight) {
  std::string in = Write("d.csv", FreeTextCsv());
  PrepareOptions options;
  options.validation_split = 0.2;
  options.seed = 7;
  auto first = Run(options, in, Out("a.jsonl"));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->stratified);
  EXPECT_EQ(first->train_examples, 80);
  EXPECT_EQ(first->validation_examples, 20);
  EXPECT_EQ(first->validation_path, Out("a_validation.jsonl"));
  EXPECT_EQ(ReadJsonl(Out("a.jsonl")).size(), 80u);
  EXPECT_EQ(ReadJsonl(Out("a_validation.jsonl")).size(), 20u);

  ASSERT_TRUE(Run(options, in, Out("b.jsonl")).ok());
  EXPECT_EQ(*ReadFile(Out("a.jsonl")), *ReadFile(Out("b.jsonl")));
  EXPECT_EQ(*ReadFile(Out("a_validation.jsonl")), *ReadFile(Out("b_validation.jsonl")));

  options.seed = 8;
  ASSERT_TRUE(Run(options, in, Out("c.jsonl")).ok());
  EXPECT_NE(*ReadFile(Out("a_validation.jsonl")), *ReadFile(Out("c_validation.jsonl")));
}

TEST_F(DatasetPreparerTest, SplitFilesKeepInputOrderAndPartitionTheExamples) {
  std::string in = Write("d.csv", FreeTextCsv());
  PrepareOptions options;
  options.validation_split = 0.3;
  ASSERT_TRUE(Run(options, in, Out()).ok());
  std::set<std::string> all;
  for (const std::string& path : {Out(), Out("out_validation.jsonl")}) {
    int previous = -1;
    for (const Json& record : ReadJsonl(path)) {
      std::string prompt = record["messages"][0]["content"];
      int index = std::stoi(prompt.substr(prompt.find(' ') + 1));
      EXPECT_GT(index, previous);
      previous = index;
      all.insert(prompt);
    }
  }
  EXPECT_EQ(all.size(), 100u);
}

TEST_F(DatasetPreparerTest, ValidationPathAppendsSuffixWhenOutputLacksJsonl) {
  std::string in = Write("d.csv", FreeTextCsv());
  PrepareOptions options;
  options.validation_split = 0.1;
  auto report = Run(options, in, Out("train.out"));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->validation_path, Out("train.out_validation.jsonl"));
  EXPECT_EQ(ReadJsonl(report->validation_path).size(), 10u);
}

TEST_F(DatasetPreparerTest, NoSplitWritesNoValidationFile) {
  auto report = Run(PrepareOptions(), Write("d.csv", FreeTextCsv()), Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->validation_path.empty());
  EXPECT_EQ(report->validation_examples, 0);
  EXPECT_FALSE(ReadFile(Out("out_validation.jsonl")).ok());
}

TEST_F(DatasetPreparerTest, StratifiedSplitSharesTheValidationSizeInProportionToLabels) {
  // 31 examples: 20 "spam", 8 "ham", 2 "unsure" and one "rare". A 10% split is
  // round(3.1) = 3 examples, shared by largest remainder: spam 2, ham 1.
  std::string csv = "text,label\n";
  for (int i = 0; i < 20; ++i) absl::StrAppend(&csv, "spam text ", i, ",spam\n");
  for (int i = 0; i < 8; ++i) absl::StrAppend(&csv, "ham text ", i, ",ham\n");
  for (int i = 0; i < 2; ++i) absl::StrAppend(&csv, "odd text ", i, ",unsure\n");
  absl::StrAppend(&csv, "lonely text,rare\n");
  std::string in = Write("d.csv", csv);
  PrepareOptions options;
  options.validation_split = 0.1;
  options.output_format = DatasetFormat::kCompletion;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->stratified);

  auto labels = [](const std::vector<Json>& records) {
    std::multiset<std::string> out;
    for (const Json& r : records) out.insert(r["completion"].get<std::string>());
    return out;
  };
  std::multiset<std::string> train = labels(ReadJsonl(Out()));
  std::multiset<std::string> validation = labels(ReadJsonl(Out("out_validation.jsonl")));
  EXPECT_EQ(validation.size(), 3u);
  EXPECT_EQ(validation.count("spam"), 2u);
  EXPECT_EQ(validation.count("ham"), 1u);
  for (const char* label : {"spam", "ham", "unsure", "rare"}) {
    EXPECT_GE(train.count(label), 1u) << label;  // every label keeps one in train
  }
  EXPECT_EQ(report->train_examples + report->validation_examples, 31);
}

TEST_F(DatasetPreparerTest, StratifiedSplitWithManySmallLabelsKeepsTheRequestedFraction) {
  // 12 labels x 4 examples at 10%: round(4.8) = 5 validation examples, not one
  // per label (which would be 25%).
  std::string csv = "text,label\n";
  for (int label = 0; label < 12; ++label) {
    for (int i = 0; i < 4; ++i)
      absl::StrAppend(&csv, "text ", label, " ", i, ",label", label, "\n");
  }
  std::string in = Write("d.csv", csv);
  PrepareOptions options;
  options.validation_split = 0.1;
  options.output_format = DatasetFormat::kCompletion;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->stratified);
  EXPECT_EQ(report->validation_examples, 5);
  EXPECT_EQ(report->train_examples, 43);
}

TEST_F(DatasetPreparerTest, SplitOutsideUnitIntervalIsRejectedNamingTheFlag) {
  std::string in = Write("d.csv", FreeTextCsv());
  for (double split : {-0.1, 1.0, 1.5}) {
    PrepareOptions options;
    options.validation_split = split;
    auto report = Run(options, in, Out());
    EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument) << split;
    EXPECT_THAT(report.status().message(), HasSubstr("--split"));
  }
}

// --- Errors -----------------------------------------------------------------

TEST_F(DatasetPreparerTest, CsvRowMissingAColumnNamesRowAndLine) {
  std::string in = Write("d.csv", "prompt,completion\na,b\n\"multi\nline\",c\nonly-one\n");
  auto report = Run(PrepareOptions(), in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("row 3 (line 5)"));
}

TEST_F(DatasetPreparerTest, UnknownColumnOptionIsRejectedNamingTheHeader) {
  PrepareOptions options;
  options.prompt_column = "nope";
  auto report = Run(options, Write("d.csv", "prompt,completion\na,b\n"), Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 1 (header)"));
  EXPECT_THAT(report.status().message(), HasSubstr("'nope'"));
}

TEST_F(DatasetPreparerTest, UnclosedCsvQuoteNamesItsLine) {
  auto report = Run(PrepareOptions(), Write("d.csv", "prompt,completion\na,b\n\"open,c\n"), Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 3"));
}

TEST_F(DatasetPreparerTest, JsonlMissingKeyNamesTheLine) {
  std::string in = Write("d.jsonl", CompletionJsonl({{"a", "b"}}) + "{\"prompt\": \"c\"}\n");
  auto report = Run(PrepareOptions(), in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 2: missing key 'completion'"));
}

TEST_F(DatasetPreparerTest, JsonlWrongTypeNamesTheLineAndKey) {
  std::string in = Write("d.jsonl", "{\"prompt\": \"a\", \"completion\": [1]}\n");
  auto report = Run(PrepareOptions(), in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 1: 'completion' must be a string"));
}

TEST_F(DatasetPreparerTest, BadJsonlNamesTheLine) {
  std::string in = Write("d.jsonl", CompletionJsonl({{"a", "b"}}) + "\n{\"prompt\": \"c\",}\n");
  auto report = Run(PrepareOptions(), in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 3: invalid JSON"));
}

TEST_F(DatasetPreparerTest, BadJsonArrayNamesTheLine) {
  std::string in =
      Write("d.json", "[\n{\"prompt\": \"a\", \"completion\": \"b\"},\n{\"prompt\" \"c\"}\n]\n");
  auto report = Run(PrepareOptions(), in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("line 3: invalid JSON"));
}

TEST_F(DatasetPreparerTest, JsonArrayRecordMissingKeyNamesTheRecord) {
  std::string in = Write("d.json", R"([{"prompt": "a", "completion": "b"}, {"prompt": "c"}])");
  auto report = Run(PrepareOptions(), in, Out());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("record 2: missing key 'completion'"));
}

// --- The input is never touched ---------------------------------------------

TEST_F(DatasetPreparerTest, InputFileIsUnchangedEvenWhenFixesAreApplied) {
  std::string csv = "prompt,completion\n  a ,b\n  a ,b\n,x\n" + FreeTextCsv().substr(18);
  std::string in = Write("d.csv", csv);
  PrepareOptions options;
  options.apply_fixes = true;
  options.validation_split = 0.25;
  auto report = Run(options, in, Out());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->fixes.empty());
  EXPECT_EQ(*ReadFile(in), csv);
}

TEST_F(DatasetPreparerTest, OutputOverTheInputIsRejectedAndTheInputKept) {
  std::string contents = CompletionJsonl({{"a", "b"}});
  std::string in = Write("d.jsonl", contents);
  auto same = Run(PrepareOptions(), in, in);
  EXPECT_EQ(same.status().code(), absl::StatusCode::kInvalidArgument);
  auto aliased = Run(PrepareOptions(), in, absl::StrCat(dir_, "/./d.jsonl"));
  EXPECT_EQ(aliased.status().code(), absl::StatusCode::kInvalidArgument);
  // The validation file would land on the input.
  PrepareOptions split;
  split.validation_split = 0.5;
  std::string victim = Write("x_validation.jsonl", contents);
  auto over_validation = Run(split, victim, Out("x.jsonl"));
  EXPECT_EQ(over_validation.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ReadFile(in), contents);
  EXPECT_EQ(*ReadFile(victim), contents);
}

}  // namespace
}  // namespace switchyard::dataset
