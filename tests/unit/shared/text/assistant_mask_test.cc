#include "shared/text/assistant_mask.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace switchyard::text {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<Tokenizer> Qwen3() {
  auto t = Tokenizer::FromFile(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/qwen3"));
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

// The text of each run of masked tokens.
std::vector<std::string> MaskedSpans(const Tokenizer& tokenizer, const MaskedConversation& c) {
  std::vector<std::string> spans;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= c.ids.size(); ++i) {
    if (i < c.ids.size() && c.assistant_mask[i]) {
      run.push_back(c.ids[i]);
    } else if (!run.empty()) {
      spans.push_back(*tokenizer.Decode(run));
      run.clear();
    }
  }
  return spans;
}

nlohmann::ordered_json Conversation() {
  return nlohmann::ordered_json::parse(R"({"messages":[
    {"role":"system","content":"Be brief."},
    {"role":"user","content":"Capital of France?"},
    {"role":"assistant","content":"Paris."},
    {"role":"user","content":"And of Japan?"},
    {"role":"assistant","content":"Tokyo, 東京.","weight":0},
    {"role":"user","content":"Thanks!"},
    {"role":"assistant","content":"You're welcome."}]})");
}

TEST(AssistantMaskTest, MasksTrainedAssistantTurnsWithTheirEndOfTurnTokens) {
  auto tokenizer = Qwen3();
  auto chatml = ChatTemplate::Parse(
      ReadAll(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/templates/chatml.jinja")));
  ASSERT_TRUE(chatml.ok()) << chatml.status();
  auto c = RenderForTraining(**chatml, *tokenizer, Conversation());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->ids.size(), c->assistant_mask.size());
  // The weight-0 turn is not trained; each span is the content and the token
  // that ends the turn (the newline after it belongs to the template).
  EXPECT_THAT(MaskedSpans(*tokenizer, *c),
              ElementsAre("Paris.<|im_end|>", "You're welcome.<|im_end|>"));
  // The ids are the template's rendering, tokenized.
  auto rendered = (*chatml)->Render(Conversation());
  ASSERT_TRUE(rendered.ok());
  EXPECT_EQ(c->ids, *tokenizer->Encode(*rendered, false));
}

TEST(AssistantMaskTest, WorksWithQwen3sOwnTemplate) {
  auto tokenizer = Qwen3();
  nlohmann::json config = nlohmann::json::parse(
      ReadAll(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/qwen3/tokenizer_config.json")));
  auto source = ChatTemplateFromConfig(config);
  ASSERT_TRUE(source.ok()) << source.status();
  auto qwen = ChatTemplate::Parse(*source);
  ASSERT_TRUE(qwen.ok()) << qwen.status();
  auto c = RenderForTraining(**qwen, *tokenizer, Conversation());
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<std::string> spans = MaskedSpans(*tokenizer, *c);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_THAT(spans[0], HasSubstr("Paris.<|im_end|>"));
  EXPECT_THAT(spans[1], HasSubstr("You're welcome.<|im_end|>"));
  for (const std::string& s : spans) EXPECT_THAT(s, ::testing::Not(HasSubstr("<|im_start|>")));
}

TEST(AssistantMaskTest, AShortReplyIsNotMatchedInsideARoleHeader) {
  auto tokenizer = Qwen3();
  auto chatml = ChatTemplate::Parse(
      ReadAll(absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text/templates/chatml.jinja")));
  ASSERT_TRUE(chatml.ok()) << chatml.status();
  // "a" occurs in "<|im_start|>assistant" before the reply itself.
  auto c = RenderForTraining(**chatml, *tokenizer, nlohmann::ordered_json::parse(R"({"messages":[
      {"role":"user","content":"Pick a letter."},{"role":"assistant","content":"a"}]})"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(MaskedSpans(*tokenizer, *c), ElementsAre("a<|im_end|>"));
}

TEST(AssistantMaskTest, TemplateThatRewritesContentIsRefusedNamingTheMessage) {
  auto tokenizer = Qwen3();
  auto shouting = ChatTemplate::Parse(
      "{% for m in messages %}{% if m.role == 'assistant' %}{{ m.content | upper }}"
      "{% else %}{{ m.content }}{% endif %}\n{% endfor %}");
  ASSERT_TRUE(shouting.ok()) << shouting.status();
  auto c = RenderForTraining(**shouting, *tokenizer, Conversation());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(c.status().message(), HasSubstr("messages[2]"));
}

}  // namespace
}  // namespace switchyard::text
