// Unit tests for ChatTemplate: the expression language, statements, error messages, limits and
// the ChatMessage API. Byte-exact agreement with Python's jinja2 on real model templates is
// checked separately by compare_jinja2.py (ctest chat_template_jinja2_compare).

#include "engine/chat_template/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace loom::chat {
namespace {

Value TestContext() {
  ValueDict d;
  d.Set("b", Value(1));
  d.Set("a", Value(ValueList{Value(1), Value(2)}));
  ValueDict ctx;
  ctx.Set("s", Value("Hello World"));
  ctx.Set("l", Value(ValueList{Value(3), Value(1), Value(2)}));
  ctx.Set("d", Value(std::move(d)));
  ctx.Set("n", Value::None());
  ctx.Set("messages", ToValue(std::vector<ChatMessage>{
                          {"system", "sys"}, {"user", "Hello"}, {"assistant", "Hi!"}}));
  return Value(std::move(ctx));
}

absl::StatusOr<std::string> Render(const std::string& source, ChatTemplate::Options options = {}) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source, options);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->RenderWithContext(TestContext());
}

std::string RenderOk(const std::string& source) {
  absl::StatusOr<std::string> out = Render(source);
  EXPECT_TRUE(out.ok()) << source << " -> " << out.status();
  return out.ok() ? *out : "<error>";
}

std::string ErrorOf(const std::string& source, ChatTemplate::Options options = {}) {
  absl::StatusOr<std::string> out = Render(source, options);
  EXPECT_FALSE(out.ok()) << source << " rendered " << *out;
  return out.ok() ? "" : std::string(out.status().message());
}

TEST(ExpressionTest, Literals) {
  EXPECT_EQ(RenderOk("{{ 1 }} {{ -2.5 }} {{ 'a' \"b\" }} {{ true }} {{ None }} {{ [1, 'x'] }}"),
            "1 -2.5 ab True None [1, 'x']");
  EXPECT_EQ(RenderOk("{{ {'k': [1, {'n': none}]} }}"), "{'k': [1, {'n': None}]}");
  EXPECT_EQ(RenderOk("{{ 'tab\\there\\u00e9' }}"), "tab\there\u00e9");
}

TEST(ExpressionTest, ArithmeticFollowsPython) {
  EXPECT_EQ(RenderOk("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }}"),
            "3 -4 2 3.5 1024");
  EXPECT_EQ(RenderOk("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 'ab' * 2 }} {{ [1] + [2] }}"),
            "7 9 abab [1, 2]");
  EXPECT_EQ(RenderOk("{{ 'a' ~ 1 ~ none }}"), "a1None");
}

TEST(ExpressionTest, ComparisonsAndLogic) {
  EXPECT_EQ(RenderOk("{{ 1 == 1.0 }} {{ 'a' < 'b' < 'c' }} {{ 1 != 1 }} {{ [1, 2] < [1, 3] }}"),
            "True True False True");
  EXPECT_EQ(RenderOk("{{ 'ell' in s }} {{ 3 in l }} {{ 'b' in d }} {{ 'z' not in d }}"),
            "True True True True");
  EXPECT_EQ(RenderOk("{{ 0 or 'x' }} {{ '' and 'y' }}|{{ not none }} {{ 'y' if l else 'n' }}"),
            "x |True y");
  EXPECT_EQ(RenderOk("[{{ 'x' if false }}]"), "[]");
}

TEST(ExpressionTest, AttributesSubscriptsAndSlices) {
  EXPECT_EQ(RenderOk("{{ messages[1].content }} {{ messages[-1]['role'] }} {{ d.a[1] }}"),
            "Hello assistant 2");
  EXPECT_EQ(RenderOk("{{ l[::-1] }} {{ l[1:] }} {{ s[:5] }} {{ s[::-1] }} {{ 'héllo'[1] }}"),
            "[2, 1, 3] [1, 2] Hello dlroW olleH é");
  // Missing keys and indexes are undefined: empty and falsy.
  EXPECT_EQ(RenderOk("[{{ d.missing }}][{{ l[10] }}]{{ d.missing is defined }}"), "[][]False");
}

TEST(ExpressionTest, MethodsAndFilters) {
  EXPECT_EQ(RenderOk("{{ '  x '.strip() }}|{{ s.split() }}|{{ s.startswith('He') }}|"
                     "{{ s.replace('l', 'L') }}|{{ d.get('zz', 0) }}|{{ d.items() | list }}"),
            "x|['Hello', 'World']|True|HeLLo WorLd|0|[('b', 1), ('a', [1, 2])]");
  EXPECT_EQ(RenderOk("{{ ' x '|trim }}|{{ s|upper }}|{{ s|length }}|{{ l|join(',') }}|"
                     "{{ l|first }}|{{ l|last }}|{{ nothing|default('dv') }}|{{ '7'|int + 1 }}"),
            "x|HELLO WORLD|11|3,1,2|3|2|dv|8");
  EXPECT_EQ(RenderOk("{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')"
                     "|list }}|{{ messages|rejectattr('role', 'eq', 'user')|list|length }}"),
            "['Hello']|2");
  EXPECT_EQ(RenderOk("{{ d|tojson }}|{{ d|tojson(indent=2) }}"),
            "{\"b\": 1, \"a\": [1, 2]}|{\n  \"b\": 1,\n  \"a\": [\n    1,\n    2\n  ]\n}");
}

TEST(ExpressionTest, Tests) {
  EXPECT_EQ(RenderOk("{{ n is none }} {{ x is defined }} {{ x is undefined }} {{ s is string }} "
                     "{{ d is mapping }} {{ l is iterable }} {{ 1 is number }} {{ 3 is odd }} "
                     "{{ 2 is equalto 2 }} {{ n is not none }} {{ true is true }} "
                     "{{ none is sameas none }}"),
            "True False True True True True True True True False True True");
}

TEST(StatementTest, ForLoopVariables) {
  EXPECT_EQ(RenderOk("{% for x in l %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
                     "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}"),
            "103TrueFalse3;212FalseFalse3;321FalseTrue3;");
  EXPECT_EQ(RenderOk("{% for x in l if x > 1 %}{{ x }}{{ loop.length }}{% else %}no{% endfor %}"),
            "3222");
  EXPECT_EQ(RenderOk("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(RenderOk("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"), "b=1;a=[1, 2];");
  EXPECT_EQ(RenderOk("{% for x in l %}{{ loop.previtem }}>{{ loop.nextitem }} {% endfor %}"),
            ">1 3>2 1> ");
  EXPECT_EQ(RenderOk("{% for x in l %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}"
                     "{% if x == 2 %}{% break %}{% endif %}{% endfor %}"),
            "32");
}

TEST(StatementTest, ScopingAndNamespaces) {
  // A loop iteration is a scope; `if` is not.
  EXPECT_EQ(RenderOk("{% set x = 1 %}{% for i in l %}{% set x = i %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(RenderOk("{% if true %}{% set y = 2 %}{% endif %}{{ y }}"), "2");
  EXPECT_EQ(RenderOk("{% set ns = namespace(total=0) %}{% for i in l %}"
                     "{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}"),
            "6");
  EXPECT_EQ(RenderOk("{% set a, b = 1, 2 %}{{ a + b }}"), "3");
  EXPECT_EQ(RenderOk("{% set block %}[{{ s }}]{% endset %}{{ block }}"), "[Hello World]");
}

TEST(StatementTest, Macros) {
  EXPECT_EQ(RenderOk("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                     "{{ greet('Bo') }} {{ greet('Al', punct='?') }}"),
            "Hi Bo! Hi Al?");
  EXPECT_EQ(RenderOk("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                     "{{ f(3) }}"),
            "321");
}

TEST(StatementTest, GenerationBlockRendersItsBody) {
  EXPECT_EQ(RenderOk("a{% generation %}b{% endgeneration %}c"), "abc");
}

TEST(WhitespaceTest, TransformersDefaults) {
  const std::string source = "<\n  {% for x in l %}\n  {{ x }}\n  {% endfor %}\n>";
  EXPECT_EQ(RenderOk(source), "<\n  3\n  1\n  2\n>");
  ChatTemplate::Options jinja_defaults;
  jinja_defaults.trim_blocks = false;
  jinja_defaults.lstrip_blocks = false;
  EXPECT_EQ(*Render(source, jinja_defaults), "<\n  \n  3\n  \n  1\n  \n  2\n  \n>");
  EXPECT_EQ(RenderOk("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
}

TEST(ErrorTest, ParseErrorsNameLineAndColumn) {
  std::string e = ErrorOf("Hello\n{% if x %}no end");
  EXPECT_NE(e.find("line 2, column 4"), std::string::npos) << e;
  EXPECT_NE(e.find("endif"), std::string::npos) << e;

  e = ErrorOf("ok\n\n  {{ x ");
  EXPECT_NE(e.find("line 3, column 3"), std::string::npos) << e;

  e = ErrorOf("{{ x | nosuchfilter }}");
  EXPECT_EQ(e, "template syntax error at line 1, column 8: no filter named 'nosuchfilter'");

  e = ErrorOf("{{ x is nosuchtest }}");
  EXPECT_NE(e.find("no test named 'nosuchtest'"), std::string::npos) << e;

  // As in Jinja2 3.x, inside an `if` an unknown filter only fails when it is evaluated.
  EXPECT_EQ(RenderOk("{% if false %}{{ x | nosuchfilter }}{% endif %}ok"), "ok");
  e = ErrorOf("{% if true %}{{ x | nosuchfilter }}{% endif %}");
  EXPECT_NE(e.find("no filter named 'nosuchfilter'"), std::string::npos) << e;

  e = ErrorOf("{% frobnicate %}");
  EXPECT_NE(e.find("unknown or unsupported tag 'frobnicate'"), std::string::npos) << e;

  e = ErrorOf("{% endfor %}");
  EXPECT_NE(e.find("unexpected 'endfor'"), std::string::npos) << e;

  e = ErrorOf("{{ 1 + }}");
  EXPECT_NE(e.find("expected an expression"), std::string::npos) << e;

  EXPECT_NE(ErrorOf("{% break %}").find("outside of a loop"), std::string::npos);
}

TEST(ErrorTest, RaiseExceptionCarriesTheMessage) {
  absl::StatusOr<std::string> out =
      Render("{% if l|length > 2 %}{{ raise_exception('Roles must alternate!') }}{% endif %}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Roles must alternate!");
}

TEST(ErrorTest, RuntimeErrorsNameLocation) {
  std::string e = ErrorOf("{{ s }}\n{{ 'a' + 1 }}");
  EXPECT_NE(e.find("line 2"), std::string::npos) << e;
  EXPECT_NE(e.find("can only concatenate str"), std::string::npos) << e;
  EXPECT_NE(ErrorOf("{{ undefined_thing.attr }}").find("'undefined_thing' is undefined"),
            std::string::npos);
  EXPECT_NE(ErrorOf("{{ 1 // 0 }}").find("division"), std::string::npos);
  EXPECT_NE(ErrorOf("{{ l.append(4) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(ErrorOf("{% set x = 1 %}{% set x.y = 2 %}").find("non-namespace"), std::string::npos);
}

TEST(LimitTest, LoopIterationsAreBounded) {
  ChatTemplate::Options options;
  options.max_loop_iterations = 10'000;
  absl::StatusOr<std::string> out = Render(
      "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}", options);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(out.status().message().find("loop iterations"), std::string::npos);
}

TEST(LimitTest, OutputSizeIsBounded) {
  ChatTemplate::Options options;
  options.max_output_bytes = 1 << 16;
  absl::StatusOr<std::string> out =
      Render("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", options);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  out = Render("{{ 'x' * 1000000000000 }}", options);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  out = Render(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
      "{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
      options);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(LimitTest, RecursionIsBounded) {
  absl::StatusOr<std::string> out = Render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);

  // Deeply nested expressions and blocks are parse errors, not stack overflows.
  EXPECT_NE(ErrorOf("{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}")
                .find("nested too deeply"),
            std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) chain += " + 1";
  EXPECT_NE(ErrorOf(chain + " }}").find("nested too deeply"), std::string::npos);
  std::string blocks;
  for (int i = 0; i < 10000; ++i) blocks += "{% if true %}";
  EXPECT_NE(ErrorOf(blocks).find("nested too deeply"), std::string::npos);
  EXPECT_NE(ErrorOf("{{ " + std::string(100000, '-') + "1 }}").find("nested too deeply"),
            std::string::npos);

  // Values built by the template cannot nest without bound either.
  out = Render(
      "{% set ns = namespace(x=[]) %}{% for i in range(5000) %}"
      "{% set ns.x = [ns.x] %}{% endfor %}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(ChatTemplateTest, RendersSmolLM2Template) {
  const std::string source = ReadFile("tests/data/chat_templates/smollm2.jinja");
  ASSERT_FALSE(source.empty());
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<std::string> out = tmpl->Render({{"user", "What is 2+2?"}}, true);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  out = tmpl->Render({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}}, false);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
}

TEST(ChatTemplateTest, RenderPassesTokensAndExtraVariables) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(
      "{{ bos_token }}{% for m in messages %}{{ m.role }}:{{ m.content }}|{% endfor %}"
      "{% if add_generation_prompt %}assistant:{% endif %}{{ eos_token }}{{ extra }}");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  RenderExtras extras;
  extras.bos_token = "<s>";
  extras.eos_token = "</s>";
  extras.variables.Set("extra", Value("!"));
  absl::StatusOr<std::string> out = tmpl->Render({{"user", "a"}, {"assistant", "b"}}, true, extras);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>user:a|assistant:b|assistant:</s>!");
}

TEST(ChatTemplateTest, ToolCallsConvertLikeTransformers) {
  ChatMessage call;
  call.role = "assistant";
  ValueDict args;
  args.Set("city", Value("Paris"));
  call.tool_calls.push_back({"call_1", "get_weather", Value(std::move(args))});
  ChatMessage result{"tool", "sunny"};
  result.tool_call_id = "call_1";
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(
      "{% for m in messages %}{% for c in m.tool_calls %}{{ c.id }} {{ c.function.name }} "
      "{{ c.function.arguments | tojson }}{% endfor %}{{ m.tool_call_id }}{% endfor %}");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<std::string> out = tmpl->Render({call, result}, false);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "call_1 get_weather {\"city\": \"Paris\"}call_1");
}

TEST(ChatTemplateTest, CopiesShareTheParsedTemplate) {
  absl::StatusOr<ChatTemplate> original = ChatTemplate::Parse("{{ messages | length }}");
  ASSERT_TRUE(original.ok());
  ChatTemplate copy = *original;
  original = absl::UnknownError("gone");
  absl::StatusOr<std::string> out = copy.Render({{"user", "x"}}, false);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, "1");
  EXPECT_EQ(copy.source(), "{{ messages | length }}");
}

TEST(ChatTemplateTest, ContextMustBeADict) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse("x");
  ASSERT_TRUE(tmpl.ok());
  EXPECT_FALSE(tmpl->RenderWithContext(Value(1)).ok());
  EXPECT_EQ(*tmpl->RenderWithContext(Value()), "x");
}

}  // namespace
}  // namespace loom::chat
