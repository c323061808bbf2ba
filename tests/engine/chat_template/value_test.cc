// Unit tests for the chat template Value type, the UTF-8 / Python string helpers and the lexer.

#include "engine/chat_template/value.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "engine/chat_template/lexer.h"
#include "engine/chat_template/utf8.h"

namespace loom::chat {
namespace {

TEST(ValueTest, DefaultIsUndefinedAndFalsy) {
  Value v;
  EXPECT_TRUE(v.IsUndefined());
  EXPECT_FALSE(v.Truthy());
  EXPECT_EQ(v.Str(), "");
  EXPECT_TRUE(v.Equals(Value()));
  EXPECT_FALSE(v.Equals(Value::None()));
}

TEST(ValueTest, PythonStr) {
  EXPECT_EQ(Value::None().Str(), "None");
  EXPECT_EQ(Value(true).Str(), "True");
  EXPECT_EQ(Value(false).Str(), "False");
  EXPECT_EQ(Value(42).Str(), "42");
  EXPECT_EQ(Value(2.0).Str(), "2.0");
  EXPECT_EQ(Value("plain").Str(), "plain");
  ValueDict dict;
  dict.Set("k", Value("it's"));
  dict.Set("n", Value::None());
  Value list(ValueList{Value(1), Value("a"), Value(std::move(dict)), Value(1.5)});
  EXPECT_EQ(list.Str(), "[1, 'a', {'k': \"it's\", 'n': None}, 1.5]");
  EXPECT_EQ(Value::Tuple({Value(1)}).Str(), "(1,)");
  EXPECT_EQ(Value::Tuple({Value(1), Value(2)}).Str(), "(1, 2)");
  EXPECT_EQ(Value("a\nb'\"").Repr(), "'a\\nb\\'\"'");
}

TEST(ValueTest, FloatFormattingMatchesPythonRepr) {
  EXPECT_EQ(FormatPythonFloat(0.1), "0.1");
  EXPECT_EQ(FormatPythonFloat(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(FormatPythonFloat(1e16), "1e+16");
  EXPECT_EQ(FormatPythonFloat(1e15), "1000000000000000.0");
  EXPECT_EQ(FormatPythonFloat(1.5e-5), "1.5e-05");
  EXPECT_EQ(FormatPythonFloat(0.0001), "0.0001");
  EXPECT_EQ(FormatPythonFloat(-2.5), "-2.5");
  EXPECT_EQ(FormatPythonFloat(-0.0), "-0.0");
  EXPECT_EQ(FormatPythonFloat(1e300), "1e+300");
  EXPECT_EQ(FormatPythonFloat(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(FormatPythonFloat(std::nan("")), "nan");
}

TEST(ValueTest, EqualityFollowsPython) {
  EXPECT_TRUE(Value(1).Equals(Value(1.0)));
  EXPECT_TRUE(Value(true).Equals(Value(1)));
  EXPECT_FALSE(Value("1").Equals(Value(1)));
  ValueDict a;
  a.Set("x", Value(1));
  a.Set("y", Value(2));
  ValueDict b;
  b.Set("y", Value(2));
  b.Set("x", Value(1));
  EXPECT_TRUE(Value(a).Equals(Value(b)));  // dict equality ignores order
  EXPECT_FALSE(Value::Tuple({Value(1)}).Equals(Value(ValueList{Value(1)})));
}

TEST(ValueTest, DictKeepsInsertionOrderAndReplacesInPlace) {
  ValueDict d;
  d.Set("b", Value(1));
  d.Set("a", Value(2));
  d.Set("b", Value(3));
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.entries()[0].first, "b");
  EXPECT_EQ(d.entries()[0].second.AsInt(), 3);
  EXPECT_EQ(Value(d).Get("a").AsInt(), 2);
  EXPECT_TRUE(Value(d).Get("zz").IsUndefined());
}

TEST(ValueTest, ToJsonMatchesJsonDumps) {
  ValueDict d;
  d.Set("name", Value("Zürich \"quoted\"\n"));
  d.Set("list", Value(ValueList{Value(1), Value(2.5), Value::None(), Value(true)}));
  d.Set("empty", Value(ValueList{}));
  Value v(std::move(d));
  EXPECT_EQ(*v.ToJson(),
            "{\"name\": \"Zürich \\\"quoted\\\"\\n\", \"list\": [1, 2.5, null, true], "
            "\"empty\": []}");
  JsonOptions ascii;
  ascii.ensure_ascii = true;
  EXPECT_EQ(*Value("é😀").ToJson(ascii), "\"\\u00e9\\ud83d\\ude00\"");
  JsonOptions indented;
  indented.has_indent = true;
  indented.indent = "  ";
  indented.item_separator = ",";
  EXPECT_EQ(*Value(ValueList{Value(1), Value(ValueDict{})}).ToJson(indented), "[\n  1,\n  {}\n]");
  EXPECT_FALSE(Value().ToJson().ok());
}

TEST(ValueTest, DepthTracksNesting) {
  EXPECT_EQ(Value(1).depth(), 0);
  Value inner(ValueList{Value(1)});
  EXPECT_EQ(inner.depth(), 1);
  EXPECT_EQ(Value(ValueList{inner, Value(2)}).depth(), 2);
}

TEST(Utf8Test, DecodeEncodeRoundTripsIncludingInvalidBytes) {
  const std::string s =
      "a\xC3\xA9\xF0\x9F\x98\x80\xFF"
      "b";
  const std::u32string cps = DecodeUtf8(s);
  ASSERT_EQ(cps.size(), 5u);
  EXPECT_EQ(cps[1], U'é');
  EXPECT_EQ(cps[2], U'\U0001F600');
  EXPECT_EQ(EncodeUtf8(cps), s);
  EXPECT_EQ(CountCodePoints("héllo"), 5u);
}

TEST(Utf8Test, PythonStringHelpers) {
  EXPECT_EQ(PythonStrip("\u00a0\u3000 hi \n"), "hi");
  const std::string x = "x";
  EXPECT_EQ(PythonStrip("xxhixx", &x), "hi");
  EXPECT_EQ(PythonStrip("  hi  ", nullptr, true, false), "hi  ");
  EXPECT_EQ(PythonUpper("straße é"), "STRASSE É");
  EXPECT_EQ(PythonLower("ÉCOLE Ω"), "école ω");
  EXPECT_EQ(PythonTitle("hello wORLD foo1bar"), "Hello World Foo1Bar");
  EXPECT_EQ(PythonCapitalize("hELLO"), "Hello");
  EXPECT_EQ(PythonReplace("aaa", "a", "b", 2), "bba");
  EXPECT_EQ(PythonReplace("ab", "", "-", -1), "-a-b-");
}

std::vector<Token> Lex(const std::string& source, LexerOptions options = {}) {
  absl::StatusOr<std::vector<Token>> tokens = Tokenize(source, options);
  EXPECT_TRUE(tokens.ok()) << tokens.status();
  return tokens.ok() ? *tokens : std::vector<Token>{};
}

TEST(LexerTest, SplitsTextAndTags) {
  const std::vector<Token> t = Lex("Hi {{ name | upper }}!");
  ASSERT_EQ(t.size(), 8u);
  EXPECT_EQ(t[0].type, TokenType::kText);
  EXPECT_EQ(t[0].value, "Hi ");
  EXPECT_EQ(t[1].type, TokenType::kVariableBegin);
  EXPECT_EQ(t[2].value, "name");
  EXPECT_EQ(t[3].value, "|");
  EXPECT_EQ(t[5].type, TokenType::kVariableEnd);
  EXPECT_EQ(t[6].value, "!");
  EXPECT_EQ(t[7].type, TokenType::kEof);
}

TEST(LexerTest, WhitespaceControl) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(Lex("a\n  {% if x %}\nb")[0].value, "a\n");
  EXPECT_EQ(Lex("{% if x %}\nb")[4].value, "b");
  // `-` strips all whitespace on that side, newlines included.
  EXPECT_EQ(Lex("a \n {{- x }}")[0].value, "a");
  EXPECT_EQ(Lex("{{ x -}} \n b").back().type, TokenType::kEof);
  EXPECT_EQ(Lex("{{ x -}} \n b")[3].value, "b");
  // Jinja's defaults: nothing trimmed.
  LexerOptions plain;
  plain.trim_blocks = false;
  plain.lstrip_blocks = false;
  EXPECT_EQ(Lex("a\n  {% if x %}\nb", plain)[0].value, "a\n  ");
  // A single trailing newline is dropped unless keep_trailing_newline.
  EXPECT_EQ(Lex("x\n")[0].value, "x");
  plain.keep_trailing_newline = true;
  EXPECT_EQ(Lex("x\n", plain)[0].value, "x\n");
}

TEST(LexerTest, StringEscapesAndNumbers) {
  const std::vector<Token> t = Lex(R"({{ 'a\n\t\x41\u00e9\'' "b" 12 1_000 2.5 1e3 0x1F }})");
  EXPECT_EQ(t[1].value, "a\n\tAé'");
  EXPECT_EQ(t[2].value, "b");
  EXPECT_EQ(t[3].int_value, 12);
  EXPECT_EQ(t[4].int_value, 1000);
  EXPECT_EQ(t[5].type, TokenType::kFloat);
  EXPECT_DOUBLE_EQ(t[5].float_value, 2.5);
  EXPECT_DOUBLE_EQ(t[6].float_value, 1000.0);
  EXPECT_EQ(t[7].int_value, 31);
}

TEST(LexerTest, CommentsAndRawBlocks) {
  const std::vector<Token> t = Lex("a{# note #}b{% raw %}{{ x }}{% endraw %}");
  ASSERT_GE(t.size(), 3u);
  EXPECT_EQ(t[0].value, "a");
  EXPECT_EQ(t[1].value, "b");
  EXPECT_EQ(t[2].value, "{{ x }}");
}

TEST(LexerTest, ErrorsNameLineAndColumn) {
  absl::StatusOr<std::vector<Token>> t = Tokenize("line one\n  {{ x ", {});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("line 2, column 3"), std::string::npos) << t.status();
  EXPECT_NE(t.status().message().find("expected '}}'"), std::string::npos) << t.status();
  EXPECT_FALSE(Tokenize("{{ 'open }}", {}).ok());
  EXPECT_FALSE(Tokenize("{# open", {}).ok());
  EXPECT_FALSE(Tokenize("{{ ) }}", {}).ok());
  EXPECT_FALSE(Tokenize("{{ 99999999999999999999 }}", {}).ok());
}

}  // namespace
}  // namespace loom::chat
