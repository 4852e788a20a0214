// Chat template rendering: language features one by one, then parity with
// @huggingface/jinja on real and hand-written templates. The fixtures
// (tests/data/text/<name>.templates.jsonl) are made by
// tools/text/make_template_fixtures.mjs.
#include "shared/text/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace switchyard::text {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

std::string Render(absl::string_view source, const Json& context = Json::object()) {
  auto tmpl = ChatTemplate::Parse(source);
  if (!tmpl.ok()) return absl::StrCat("PARSE ERROR: ", tmpl.status().message());
  auto out = (*tmpl)->Render(context);
  if (!out.ok()) return absl::StrCat("RENDER ERROR: ", out.status().message());
  return *out;
}

TEST(ChatTemplateTest, TextAndExpressions) {
  EXPECT_EQ(Render("Hello {{ name }}!", {{"name", "world"}}), "Hello world!");
  EXPECT_EQ(Render("{# comment #}a{{ 1 + 2 * 3 }}b"), "a7b");
  EXPECT_EQ(Render("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 3 }}"),
            "3 -4 2 3.5 2.0 8");
  EXPECT_EQ(Render("{{ 'a' + 'b' ~ 1 ~ none }}"), "ab1None");
  EXPECT_EQ(Render("{{ 'it\\'s\\n' }}|{{ \"q\\\"\" }}"), "it's\n|q\"");
  EXPECT_EQ(Render("{{ true }} {{ False }} {{ none }} {{ 0.1 + 0.2 }} {{ 1e20 }}"),
            "True False None 0.30000000000000004 1e+20");
  EXPECT_EQ(Render("{{ [1, 'a', none, true] }} {{ {'k': 'v'} }}"),
            "[1, 'a', None, True] {'k': 'v'}");
  EXPECT_EQ(Render("{{ 'yes' if x else 'no' }} {{ 'only' if x }}.", {{"x", false}}), "no .");
}

TEST(ChatTemplateTest, UndefinedIsFalsyAndPrintsEmpty) {
  EXPECT_EQ(Render("[{{ missing }}][{{ missing.attr.deeper }}][{{ missing['k'] }}]"), "[][][]");
  EXPECT_EQ(Render("{% if missing %}t{% else %}f{% endif %}"), "f");
  EXPECT_EQ(Render("{{ missing is defined }} {{ missing is undefined }} {{ missing | length }}"),
            "False True 0");
  EXPECT_EQ(
      Render("{{ missing | default('dflt') }} {{ '' | default('x', true) }} {{ 0 | d('z') }}"),
      "dflt x 0");
  EXPECT_THAT(Render("{{ missing + 1 }}"), HasSubstr("RENDER ERROR"));
}

TEST(ChatTemplateTest, WhitespaceControlMatchesTrimAndLstripBlocks) {
  // trim_blocks removes the newline after a block tag; lstrip_blocks the indent before it.
  EXPECT_EQ(Render("{% if true %}\n  x\n  {% endif %}\ny"), "  x\ny");
  EXPECT_EQ(Render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(Render("a \n {{- 'b' -}} \n c"), "abc");
  EXPECT_EQ(Render("{{ 'a' }}\n{{ 'b' }}"), "a\nb");        // no trimming after }}
  EXPECT_EQ(Render("x {% if true %}y{% endif %}"), "x y");  // not at line start: kept
  EXPECT_EQ(Render("line\n"), "line");                      // one trailing newline dropped
  EXPECT_EQ(Render("{# c #}\nz"), "z");
}

TEST(ChatTemplateTest, ForLoopVariablesElseFilterAndControl) {
  Json ctx = {{"xs", {"a", "b", "c"}}};
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ x }}{{ loop.revindex }}"
                   "{{ 'F' if loop.first }}{{ 'L' if loop.last }}/{{ loop.length }} {% endfor %}",
                   ctx),
            "10a3F/3 21b2/3 32c1L/3 ");
  EXPECT_EQ(Render("{% for x in xs if x != 'b' %}{{ loop.index }}{{ x }}{% endfor %}", ctx),
            "1a2c");
  EXPECT_EQ(Render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}"),
            "a=1;b=2;");
  EXPECT_EQ(Render("{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}"
                   "{% if i > 5 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "024");
  // Assignments in a loop body stay in the loop; namespaces carry state out.
  EXPECT_EQ(
      Render("{% set n = 0 %}{% set ns = namespace(n=0) %}{% for x in xs %}{% set n = n + 1 %}"
             "{% set ns.n = ns.n + 1 %}{% endfor %}{{ n }} {{ ns.n }}",
             ctx),
      "0 3");
}

TEST(ChatTemplateTest, IfElifElseAndOperators) {
  const char* t =
      "{% if x == 1 %}one{% elif x in [2, 3] %}two-three{% elif x is not none and x > 9 %}big"
      "{% else %}other{% endif %}";
  EXPECT_EQ(Render(t, {{"x", 1}}), "one");
  EXPECT_EQ(Render(t, {{"x", 3}}), "two-three");
  EXPECT_EQ(Render(t, {{"x", 10}}), "big");
  EXPECT_EQ(Render(t, {{"x", nullptr}}), "other");
  EXPECT_EQ(Render("{{ 'b' in 'abc' }} {{ 'k' not in {'k': 1} }} {{ not 1 or 2 }} {{ 0 and 1 }}"),
            "True False 2 0");
}

TEST(ChatTemplateTest, SetMacroAndBlockSet) {
  EXPECT_EQ(Render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('A') }} {{ greet('B', punct='?') }} {{ greet(name='C') }}"),
            "Hi A! Hi B? Hi C!");
  EXPECT_EQ(Render("{% set a, b = [1, 2] %}{{ b }}{{ a }}"), "21");
  EXPECT_EQ(Render("{% set s %}x{{ 1 }}{% endset %}[{{ s }}]"), "[x1]");
  EXPECT_EQ(Render("{% set ns = namespace(items=[]) %}{% set ns.items = ns.items + [1] %}{{ "
                   "ns.items | tojson }}"),
            "[1]");
}

TEST(ChatTemplateTest, ItemAccessAndSlicing) {
  Json ctx = {{"m", {{"role", "user"}, {"content", "héllo"}}}, {"xs", {1, 2, 3, 4}}};
  EXPECT_EQ(Render("{{ m.role }} {{ m['role'] }} {{ m.content[1] }} {{ m.content[::-1] }} {{ "
                   "m.content[1:3] }}",
                   ctx),
            "user user é olléh él");
  EXPECT_EQ(Render("{{ xs[-1] }} {{ xs[1:] | tojson }} {{ xs[::-1] | tojson }} {{ xs[::2] | tojson "
                   "}} {{ xs.0 }}",
                   ctx),
            "4 [2, 3, 4] [4, 3, 2, 1] [1, 3] 1");
}

TEST(ChatTemplateTest, StringAndDictMethods) {
  EXPECT_EQ(Render("{{ ' a b '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\na'.lstrip() }}|{{ "
                   "'a\\n'.rstrip('\\n') }}"),
            "a b|a|a|a");
  EXPECT_EQ(Render("{{ 'a<t>b<t>c'.split('<t>') | tojson }} {{ ' a  b '.split() | tojson }} {{ "
                   "'a,b,c'.split(',', 1) | tojson }}"),
            "[\"a\", \"b\", \"c\"] [\"a\", \"b\"] [\"a\", \"b,c\"]");
  EXPECT_EQ(Render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ "
                   "'aaa'.replace('a', 'b', 2) }}"),
            "True True bba");
  EXPECT_EQ(Render("{{ 'hello world'.title() }} {{ 'ABC'.lower() }} {{ 'abc'.upper() }} {{ ', "
                   "'.join(['a', 'b']) }}"),
            "Hello World abc ABC a, b");
  Json ctx = {{"d", {{"b", 1}, {"a", 2}}}};
  EXPECT_EQ(Render("{{ d.keys() | tojson }} {{ d.values() | tojson }} {{ d.get('a') }} {{ "
                   "d.get('z', 'no') }} "
                   "{{ d.get('z') is none }}",
                   ctx),
            "[\"b\", \"a\"] [1, 2] 2 no True");
}

TEST(ChatTemplateTest, Filters) {
  Json ctx = {{"ms",
               {{{"role", "user"}, {"n", 1}},
                {{"role", "assistant"}, {"n", 2}},
                {{"role", "user"}, {"n", 3}}}}};
  EXPECT_EQ(Render("{{ ms | map(attribute='role') | join(',') }} {{ ms | selectattr('role', "
                   "'equalto', 'user') | list | length }} "
                   "{{ ms | rejectattr('role', '==', 'user') | map(attribute='n') | first }} "
                   "{{ ms | map(attribute='role') | unique | list | tojson }} {{ (ms | last).n }}",
                   ctx),
            "user,assistant,user 2 2 [\"user\", \"assistant\"] 3");
  EXPECT_EQ(Render("{{ ['a', 'b'] | map('upper') | join }} {{ '  x ' | trim }} {{ 'aBc' | "
                   "capitalize }} {{ 'a b' | title }}"),
            "AB x Abc A B");
  EXPECT_EQ(Render("{{ '42' | int + 1 }} {{ 'x' | int }} {{ 3.9 | int }} {{ 5 | string ~ '!' }} {{ "
                   "[1, 2] | reverse | list | tojson }}"),
            "43 0 3 5! [2, 1]");
  EXPECT_EQ(Render("{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'a\\nb' | indent(2, true) }}"),
            "a\n  b\n\n  c|  a\n  b");
  EXPECT_EQ(
      Render("{{ {'b': 1, 'a': 2} | items | list | tojson }} {{ 'x<y' | e }} {{ 'x' | safe }}"),
      "[[\"b\", 1], [\"a\", 2]] x<y x");
  EXPECT_EQ(Render("{{ 'abc' | length }} {{ 'héllo' | count }} {{ [1, 2] | length }}"), "3 5 2");
}

TEST(ChatTemplateTest, ToJsonPrintsLikePythonJsonDumps) {
  Json ctx =
      Json::parse(R"({"v": {"z": 1, "a": [1.5, true, null, "é\"\n\u0001"], "e": {}, "f": []}})");
  EXPECT_EQ(Render("{{ v | tojson }}", ctx),
            "{\"z\": 1, \"a\": [1.5, true, null, \"é\\\"\\n\\u0001\"], \"e\": {}, \"f\": []}");
  EXPECT_EQ(
      Render("{{ v | tojson(indent=2) }}", ctx),
      "{\n  \"z\": 1,\n  \"a\": [\n    1.5,\n    true,\n    null,\n    \"é\\\"\\n\\u0001\"\n  ],\n"
      "  \"e\": {},\n  \"f\": []\n}");
  EXPECT_THAT(Render("{{ missing | tojson }}"), HasSubstr("RENDER ERROR"));
}

TEST(ChatTemplateTest, Tests) {
  EXPECT_EQ(Render("{{ 1 is integer }}{{ 1.5 is number }}{{ 'a' is string }}{{ {} is mapping }}{{ "
                   "[] is sequence }}"
                   "{{ 'a' is iterable }}{{ true is boolean }}{{ none is none }}{{ 3 is odd }}{{ 3 "
                   "is even }}"
                   "{{ false is false }}{{ true is true }}{{ 1 is true }}{{ 2 is equalto 2 }}{{ 2 "
                   "is not eq(3) }}"),
            "TrueTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueTrueFalseTrueTrue");
}

TEST(ChatTemplateTest, RaiseExceptionReturnsTheMessage) {
  std::string out = Render(
      "{% if messages | length == 0 %}{{ raise_exception('No messages given!') }}{% endif %}",
      {{"messages", Json::array()}});
  EXPECT_EQ(out, "RENDER ERROR: No messages given!");
}

TEST(ChatTemplateTest, SyntaxErrorsNameTheLine) {
  EXPECT_THAT(Render("ok\n{% if x %}\nfine\n{% endfor %}"), HasSubstr("line 4"));
  EXPECT_THAT(Render("a\nb\n{{ 1 + }}"), HasSubstr("line 3"));
  EXPECT_THAT(Render("{% for x in xs %}"), HasSubstr("endfor"));
  EXPECT_THAT(Render("{% bogus %}"), HasSubstr("bogus"));
  EXPECT_THAT(Render("{{ 'open"), HasSubstr("PARSE ERROR"));
  EXPECT_THAT(Render("x\n{{ 1 | nosuchfilter }}"), HasSubstr("line 2"));
}

TEST(ChatTemplateTest, GenerationMarkersRenderTheirBody) {
  EXPECT_EQ(Render("a{% generation %}b{% endgeneration %}c"), "abc");
}

TEST(ChatTemplateTest, RenderAcceptsSortedJsonContext) {
  auto tmpl = ChatTemplate::Parse("{{ messages[0].content }}");
  ASSERT_TRUE(tmpl.ok());
  nlohmann::json ctx = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
  EXPECT_EQ(*(*tmpl)->Render(ctx), "hi");
}

TEST(ChatTemplateTest, HostileTemplatesFailCleanlyInsteadOfCrashing) {
  auto render = [](const std::string& source) -> absl::Status {
    auto t = ChatTemplate::Parse(source);
    if (!t.ok()) return t.status();
    return (*t)->Render(nlohmann::ordered_json::object()).status();
  };
  // Deep nesting, long chains, runaway recursion and sizes.
  EXPECT_FALSE(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}").ok());
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += "+1";
  EXPECT_FALSE(render(chain + " }}").ok());
  std::string attrs = "{{ a";
  for (int i = 0; i < 100000; ++i) attrs += ".b";
  EXPECT_FALSE(render(attrs + " }}").ok());
  EXPECT_FALSE(render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").ok());
  EXPECT_FALSE(render("{{ range(1000000000) | length }}").ok());
  {
    auto huge_step = ChatTemplate::Parse("{{ range(1, 2, 9223372036854775807) | length }}");
    ASSERT_TRUE(huge_step.ok());
    EXPECT_EQ(*(*huge_step)->Render(nlohmann::ordered_json::object()), "1");  // and it ends
  }
  EXPECT_FALSE(render("{{ 2 ** 9223372036854775807 }}").ok());
  EXPECT_FALSE(render("{{ (-9223372036854775807 - 1) // -1 }}").ok());
  EXPECT_FALSE(render("{{ 'a' * 100000000 }}").ok());
  EXPECT_FALSE(render("{{ '\\ud800' }}").ok());
  EXPECT_TRUE(render("{{ 'ab'[1::9223372036854775807] }}").ok());
  EXPECT_TRUE(render("{{ 'x' | indent(-1) }}").ok());
  // A context nested too deep is refused before rendering.
  nlohmann::ordered_json deep = nlohmann::ordered_json::array();
  nlohmann::ordered_json* at = &deep;
  for (int i = 0; i < 1000; ++i) {
    at->push_back(nlohmann::ordered_json::array());
    at = &(*at)[0];
  }
  auto t = ChatTemplate::Parse("{{ x | tojson }}");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->Render(nlohmann::ordered_json{{"x", deep}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateFromConfigTest, StringAndNamedListForms) {
  EXPECT_EQ(*ChatTemplateFromConfig({{"chat_template", "T"}}), "T");
  nlohmann::json list = {
      {"chat_template",
       {{{"name", "default"}, {"template", "D"}}, {{"name", "tool_use"}, {"template", "U"}}}}};
  EXPECT_EQ(*ChatTemplateFromConfig(list), "D");
  EXPECT_EQ(*ChatTemplateFromConfig(list, "tool_use"), "U");
  EXPECT_EQ(ChatTemplateFromConfig(list, "rag").status().code(), absl::StatusCode::kNotFound);
  auto missing = ChatTemplateFromConfig({{"bos_token", "<s>"}});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("chat_template"));
}

// ---------------------------------------------------------------------------
// Parity with @huggingface/jinja.

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct ParityCase {
  std::string name;
  std::string template_path;  // a .jinja file or a tokenizer_config.json
};

std::string DataDir() { return absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/text"); }

class ChatTemplateParityTest : public ::testing::TestWithParam<ParityCase> {};

TEST_P(ChatTemplateParityTest, RendersLikeHuggingFaceJinja) {
  const ParityCase& c = GetParam();
  std::string source = ReadFile(c.template_path);
  ASSERT_FALSE(source.empty()) << "no template at " << c.template_path;
  if (absl::EndsWith(c.template_path, ".json")) {
    auto from_config = ChatTemplateFromConfig(nlohmann::json::parse(source));
    ASSERT_TRUE(from_config.ok()) << from_config.status();
    source = *from_config;
  }
  auto tmpl = ChatTemplate::Parse(source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();

  std::ifstream fixtures(absl::StrCat(DataDir(), "/", c.name, ".templates.jsonl"));
  ASSERT_TRUE(fixtures.good()) << "missing fixtures for " << c.name;
  int total = 0, identical = 0;
  for (std::string line; std::getline(fixtures, line);) {
    if (line.empty()) continue;
    Json row = Json::parse(line);
    ++total;
    auto out = (*tmpl)->Render(row["context"]);
    const std::string label =
        absl::StrCat(c.name, " / ", row["case"].get<std::string>(),
                     " / add_generation_prompt=", row["context"]["add_generation_prompt"].dump());
    if (row.contains("error")) {
      const std::string want = row["error"].get<std::string>();
      if (!out.ok() && absl::StrContains(out.status().message(), want)) {
        ++identical;
      } else {
        ADD_FAILURE() << label << ": reference raised \"" << want << "\", got "
                      << (out.ok() ? *out : std::string(out.status().message()));
      }
      continue;
    }
    if (!out.ok()) {
      ADD_FAILURE() << label << ": " << out.status();
      continue;
    }
    if (*out == row["rendered"].get<std::string>()) {
      ++identical;
    } else {
      ADD_FAILURE() << label << "\n--- want ---\n"
                    << row["rendered"].get<std::string>() << "\n--- got ---\n"
                    << *out;
    }
  }
  EXPECT_GT(total, 0);
  std::cout << "[ parity   ] " << c.name << ": " << identical << "/" << total << " identical\n";
}

std::vector<ParityCase> ParityCases() {
  const std::string data = DataDir();
  const std::string lenml =
      absl::StrCat(SWITCHYARD_TEST_DATA_DIR, "/../../tools/text/node_modules/@lenml");
  std::vector<ParityCase> cases = {{"qwen3", data + "/qwen3/tokenizer_config.json"}};
  for (const char* name :
       {"chatml", "zephyr", "tool-use", "mistral-like", "phi3-like", "features"}) {
    cases.push_back({name, absl::StrCat(data, "/templates/", name, ".jinja")});
  }
  // Licensed templates: only their fixtures are committed. Registered only
  // where `npm ci` in tools/text has fetched them, so a clean checkout runs
  // (and reports) just the committed ones.
  for (const char* name : {"llama3", "gemma3"}) {
    const std::string path =
        absl::StrCat(lenml, "/tokenizer-", name, "/models/tokenizer_config.json");
    if (std::ifstream(path).good()) cases.push_back({name, path});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatTemplateParityTest, ::testing::ValuesIn(ParityCases()),
                         [](const ::testing::TestParamInfo<ParityCase>& info) {
                           std::string n = info.param.name;
                           for (char& ch : n)
                             ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

}  // namespace
}  // namespace switchyard::text
