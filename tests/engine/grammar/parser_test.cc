// GBNF parsing: the llama.cpp dialect's syntax, escapes, errors with line:column, the checks
// (undefined rules, left recursion, rules that never finish) and ToString().
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_impl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/grammar/reference_recognizer.h"

namespace loom::grammar {
namespace {

using ::testing::HasSubstr;

std::string ParseError(std::string_view text) {
  auto g = Grammar::Parse(text);
  EXPECT_FALSE(g.ok()) << "parsed: " << text;
  if (g.ok()) return "";
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(g.status().message());
}

// Whether `text` is a sentence of `gbnf` (the reference recogniser on the compiled grammar).
bool Matches(std::string_view gbnf, std::string_view text) {
  auto g = Grammar::Parse(gbnf);
  EXPECT_TRUE(g.ok()) << g.status();
  if (!g.ok()) return false;
  return internal::ReferenceRecognizer(internal::GrammarImpl::Of(**g).ir()).IsSentence(text);
}

TEST(GrammarParseTest, Errors) {
  EXPECT_THAT(ParseError("root ::= \"a\"\nfoo ::= [a-"), HasSubstr("2:9: unterminated character"));
  EXPECT_THAT(ParseError("root = \"a\""), HasSubstr("1:6: expected '::='"));
  EXPECT_THAT(ParseError("root ::= \"a\" foo\n"), HasSubstr("1:14: undefined rule 'foo'"));
  EXPECT_THAT(ParseError("start ::= \"a\""), HasSubstr("no rule named 'root'"));
  EXPECT_THAT(ParseError("root ::= \"abc"), HasSubstr("1:10: unterminated string literal"));
  EXPECT_THAT(ParseError("root ::= \"\\q\""), HasSubstr("1:11: unknown escape"));
  EXPECT_THAT(ParseError("root ::= \"\\x4\""), HasSubstr("expected 2 hex digits"));
  EXPECT_THAT(ParseError("root ::= \"\\uD800\""), HasSubstr("not a Unicode scalar value"));
  EXPECT_THAT(ParseError("root ::= [z-a]"), HasSubstr("1:11: character range is out of order"));
  EXPECT_THAT(ParseError("root ::= * \"a\""), HasSubstr("1:10: '*' follows nothing"));
  EXPECT_THAT(ParseError("root ::= \"a\"{3,2}"), HasSubstr("below its minimum"));
  EXPECT_THAT(ParseError("root ::= \"a\"{x}"), HasSubstr("expected a number"));
  EXPECT_THAT(ParseError("root ::= \"a\"{20000}"), HasSubstr("repetition bound over 10000"));
  EXPECT_THAT(ParseError("root ::= (\"a\" \"b\""), HasSubstr("expected ')'"));
  EXPECT_THAT(ParseError("root ::= \"a\" )"), HasSubstr("1:14: unexpected ')'"));
  EXPECT_THAT(ParseError("root ::= \"a\"\nroot ::= \"b\""),
              HasSubstr("2:1: rule 'root' is defined twice"));
  EXPECT_THAT(ParseError("root ::= \"\xC3\""), HasSubstr("invalid UTF-8"));
  EXPECT_THAT(ParseError("root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\""),
              HasSubstr("2:1: rule 'expr' is left-recursive"));
  EXPECT_THAT(ParseError("root ::= a\na ::= b? a \"x\" | \"y\"\nb ::= \"b\""),
              HasSubstr("rule 'a' is left-recursive"));
  EXPECT_THAT(ParseError("root ::= (\"a\"?)*"), HasSubstr("empty string"));
  EXPECT_THAT(ParseError("root ::= \"a\" root"), HasSubstr("rule 'root' can never finish"));
}

TEST(GrammarParseTest, LiteralsAndEscapes) {
  EXPECT_TRUE(Matches(R"(root ::= "\x41\u00e9\U0001F600\n\t\r\\\"")",
                      "A\xC3\xA9\xF0\x9F\x98\x80\n\t\r\\\""));
  EXPECT_TRUE(Matches(R"(root ::= "é€")", "é€"));
  EXPECT_TRUE(Matches(R"(root ::= [\[\]\-\^] [\x41-\x43])", "]B"));
  EXPECT_TRUE(Matches(R"(root ::= [\[\]\-\^] [\x41-\x43])", "-A"));
  EXPECT_FALSE(Matches(R"(root ::= [\[\]\-\^] [\x41-\x43])", "-D"));
  EXPECT_TRUE(Matches(R"(root ::= "" | "a")", ""));
}

TEST(GrammarParseTest, ClassesAreOverCodePoints) {
  const char* g = R"(root ::= [^a-z"] [α-ω]+ .)";
  EXPECT_TRUE(Matches(g, "Zαβγ😀"));
  EXPECT_TRUE(Matches(g, "éω\n"));
  EXPECT_FALSE(Matches(g, "aαx"));
  EXPECT_FALSE(Matches(g, "\"αx"));
  EXPECT_FALSE(Matches(g, "Zα"));  // '.' needs one more code point
}

TEST(GrammarParseTest, RepetitionsAndGroups) {
  const char* g = R"(root ::= ("ab" | [0-9]){2,3} "x"? "y"* "z"+ "w"{2,} "v"{0,1} "u"{2})";
  EXPECT_TRUE(Matches(g, "ab1zwwuu"));
  EXPECT_TRUE(Matches(g, "ab12xyyyzzwwwwvuu"));
  EXPECT_FALSE(Matches(g, "abzwwuu"));    // {2,3}: one is too few
  EXPECT_FALSE(Matches(g, "1234zwwuu"));  // four is too many
  EXPECT_FALSE(Matches(g, "12zwuu"));     // {2,}: one w
  EXPECT_FALSE(Matches(g, "12zwwvvuu"));  // {0,1}: two v
  EXPECT_FALSE(Matches(g, "12zwwuuu"));   // {2}: three u
}

TEST(GrammarParseTest, CommentsNewlinesAndNames) {
  const char* g = R"(
# a comment
root ::= item-list   # trailing comment
item-list ::= item_1 ("," item_1)*
item_1 ::=
    "a"
  | "b" (
      "c"
      | "d"
    )
)";
  EXPECT_TRUE(Matches(g, "a,bc,bd"));
  EXPECT_FALSE(Matches(g, "a,b"));
}

TEST(GrammarParseTest, ToStringRoundTrips) {
  const char* g = R"(root ::= ("ab" | [^0-9\]\-]){2,3} "x"? . obj
obj ::= "{" "\"" [\x00-\x1F] "\n" "}")";
  auto a = Grammar::Parse(g);
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string text = (*a)->ToString();
  auto b = Grammar::Parse(text);
  ASSERT_TRUE(b.ok()) << b.status() << "\n" << text;
  EXPECT_EQ((*b)->ToString(), text);
  EXPECT_THAT(text, HasSubstr("root ::= root-1 root-1 root-2 root-3 . obj\n"));
  EXPECT_THAT(text, HasSubstr("root-3 ::= \"x\" | \"\"\n"));
  EXPECT_THAT(text, HasSubstr(R"(obj ::= "{\"" [\x00-\x1F] "\n}")"));
}

TEST(GrammarParseTest, IdenticalTextSharesTheCompiledGrammar) {
  auto a = Grammar::Parse("root ::= \"same\"");
  auto b = Grammar::Parse("root ::= \"same\"");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());
  auto c = Grammar::Parse("start ::= \"same\"\nroot ::= start", "start");
  ASSERT_TRUE(c.ok()) << c.status();
}

}  // namespace
}  // namespace loom::grammar
