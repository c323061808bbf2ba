// Matcher: masks, Accept, CanEnd/IsDone on small vocabularies, and the key check: on random
// grammars, random vocabularies (tokens that split UTF-8 sequences included) and random walks,
// every mask equals what a slow reference recogniser says token by token.
#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_impl.h"
#include "gtest/gtest.h"
#include "tests/engine/grammar/reference_recognizer.h"

namespace loom::grammar {
namespace {

using internal::GrammarImpl;
using internal::ReferenceRecognizer;

std::shared_ptr<const Grammar> MustParse(std::string_view text) {
  auto g = Grammar::Parse(text);
  EXPECT_TRUE(g.ok()) << g.status() << "\n" << text;
  return g.ok() ? *g : nullptr;
}

// The allowed token ids after MaskLogits on zeros.
std::vector<int32_t> Allowed(Matcher& m, int32_t vocab) {
  std::vector<float> logits(vocab, 0.0f);
  m.MaskLogits(logits);
  std::vector<int32_t> out;
  for (int32_t i = 0; i < vocab; ++i) {
    if (!std::isinf(logits[i])) out.push_back(i);
  }
  return out;
}

// Tokens by text: index = id. The last one is the end-of-generation token (no bytes).
struct Vocab {
  std::vector<std::string> tokens;
  std::shared_ptr<const TokenIndex> index;
  int32_t eog = -1;
  explicit Vocab(std::vector<std::string> t) : tokens(std::move(t)) {
    eog = static_cast<int32_t>(tokens.size());
    tokens.push_back("");
    index = TokenIndex::FromStrings(tokens, {eog});
  }
  int32_t Id(std::string_view s) const {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] == s && static_cast<int32_t>(i) != eog) return static_cast<int32_t>(i);
    }
    ADD_FAILURE() << "no token " << s;
    return -1;
  }
  int32_t size() const { return static_cast<int32_t>(tokens.size()); }
  std::vector<std::string> Texts(const std::vector<int32_t>& ids) const {
    std::vector<std::string> out;
    for (const int32_t i : ids) out.push_back(i == eog ? "<eog>" : tokens[i]);
    return out;
  }
};

TEST(MatcherTest, YesNo) {
  Vocab v({"y", "yes", "es", "no", "n", "o", "x", "yesno"});
  auto g = MustParse(R"(root ::= "yes" | "no")");
  Matcher m(g, v.index);
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"y", "yes", "no", "n"}));
  EXPECT_FALSE(m.CanEnd());
  EXPECT_FALSE(m.Accept(v.Id("x")).ok());
  EXPECT_FALSE(m.Accept(v.eog).ok());  // not complete yet
  ASSERT_TRUE(m.Accept(v.Id("y")).ok());
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"es"}));
  ASSERT_TRUE(m.Accept(v.Id("es")).ok());
  EXPECT_TRUE(m.CanEnd());
  EXPECT_TRUE(m.IsDone());
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"<eog>"}));
  ASSERT_TRUE(m.Accept(v.eog).ok());
  EXPECT_TRUE(m.IsDone());
  EXPECT_FALSE(m.Accept(v.Id("y")).ok());
}

TEST(MatcherTest, EndOfGenerationOnlyWhenComplete) {
  Vocab v({"a", "b", "ab"});
  auto g = MustParse(R"(root ::= "a"+ "b"?)");
  Matcher m(g, v.index);
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"a", "ab"}));
  ASSERT_TRUE(m.Accept(v.Id("a")).ok());
  EXPECT_TRUE(m.CanEnd());
  EXPECT_FALSE(m.IsDone());
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"a", "b", "ab", "<eog>"}));
  ASSERT_TRUE(m.Accept(v.Id("b")).ok());
  EXPECT_TRUE(m.IsDone());
}

TEST(MatcherTest, RepetitionBounds) {
  Vocab v({"a", "aa", "aaa", "b"});
  auto g = MustParse(R"(root ::= "a"{2,4} "b" | "b"{3})");
  Matcher m(g, v.index);
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"a", "aa", "aaa", "b"}));
  ASSERT_TRUE(m.Accept(v.Id("aaa")).ok());
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(m.Accept(v.Id("a")).ok());
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"b"}));
  ASSERT_TRUE(m.Accept(v.Id("b")).ok());
  EXPECT_TRUE(m.IsDone());

  Matcher b(g, v.index);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(b.CanEnd());
    ASSERT_TRUE(b.Accept(v.Id("b")).ok());
  }
  EXPECT_TRUE(b.IsDone());
}

TEST(MatcherTest, UnicodeClassesAcrossTokens) {
  // é = C3 A9, € = E2 82 AC, 😀 = F0 9F 98 80. Tokens split them anywhere.
  Vocab v({"\xC3", "\xA9", "\xC3\xA9", "\xE2", "\x82", "\xAC", "\xE2\x82", "\x82\xAC", "\xF0\x9F",
           "\x98\x80", "\xF0\x9F\x98\x80", "a", "!", "\xC3\xA9!", "\xC2", "\xB0", "\xED\xA0",
           "\x80"});
  auto g = MustParse(R"(root ::= [é-€]+ "!")");  // U+00E9..U+20AC
  Matcher m(g, v.index);
  // Lead bytes C3 (é..ÿ) and E2 (€ range) can start; C2 (U+0080..U+00BF) cannot; ED A0 is a
  // surrogate.
  EXPECT_EQ(v.Texts(Allowed(m, v.size())),
            (std::vector<std::string>{"\xC3", "\xC3\xA9", "\xE2", "\xE2\x82", "\xC3\xA9!"}));
  ASSERT_TRUE(m.Accept(v.Id("\xE2")).ok());
  EXPECT_EQ(v.Texts(Allowed(m, v.size())), (std::vector<std::string>{"\x82", "\x82\xAC", "\x80"}));
  EXPECT_FALSE(m.CanEnd());
  ASSERT_TRUE(m.Accept(v.Id("\x82")).ok());
  // E2 82 xx is U+2080..U+20BF: up to AC (€) is in the class, B0 is past it.
  EXPECT_EQ(v.Texts(Allowed(m, v.size())),
            (std::vector<std::string>{"\xA9", "\x82", "\xAC", "\x80"}));
  ASSERT_TRUE(m.Accept(v.Id("\xAC")).ok());
  EXPECT_FALSE(m.CanEnd());
  ASSERT_TRUE(m.Accept(v.Id("!")).ok());
  EXPECT_TRUE(m.IsDone());

  // '.' takes any code point, so a 4-byte emoji split in two.
  auto any = MustParse(R"(root ::= . "!")");
  Matcher e(any, v.index);
  ASSERT_TRUE(e.Accept(v.Id("\xF0\x9F")).ok());
  const std::vector<int32_t> cont = Allowed(e, v.size());
  EXPECT_NE(std::find(cont.begin(), cont.end(), v.Id("\x98\x80")), cont.end());
  EXPECT_EQ(std::find(cont.begin(), cont.end(), v.Id("a")), cont.end());
  EXPECT_EQ(std::find(cont.begin(), cont.end(), v.Id("\xC3")), cont.end());
  ASSERT_TRUE(e.Accept(v.Id("\x98\x80")).ok());
  EXPECT_EQ(v.Texts(Allowed(e, v.size())), (std::vector<std::string>{"!"}));
}

TEST(MatcherTest, JsonArraysEmptyAndDeep) {
  Vocab v({"[", "]", "[]", "[[", "]]", ",", "1", " ", "[1", "1]"});
  auto g = MustParse(R"(
root  ::= value
value ::= "[" ( value ( "," value )* )? "]" | "1"
)");
  Matcher m(g, v.index);
  ASSERT_TRUE(m.Accept(v.Id("[]")).ok());
  EXPECT_TRUE(m.IsDone());

  Matcher deep(g, v.index);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(deep.Accept(v.Id("[[")).ok());
  ASSERT_TRUE(deep.Accept(v.Id("1")).ok());
  ASSERT_TRUE(deep.Accept(v.Id(",")).ok());
  ASSERT_TRUE(deep.Accept(v.Id("[]")).ok());
  for (int i = 0; i < 200; ++i) {
    ASSERT_FALSE(deep.CanEnd());
    ASSERT_TRUE(deep.Accept(v.Id("]]")).ok());
  }
  EXPECT_TRUE(deep.IsDone());
}

TEST(MatcherTest, SpecialTokensNeverAllowed) {
  // Id 1 is "special": no bytes, not end-of-generation.
  auto index = TokenIndex::FromStrings({"a", "", "b"}, {});
  auto g = MustParse(R"(root ::= [a-z]*)");
  Matcher m(g, index);
  std::vector<float> logits(3, 1.0f);
  m.MaskLogits(logits);
  EXPECT_EQ(logits[0], 1.0f);
  EXPECT_TRUE(std::isinf(logits[1]));
  EXPECT_EQ(logits[2], 1.0f);
  EXPECT_FALSE(m.Accept(1).ok());
  EXPECT_FALSE(m.Accept(3).ok());
}

TEST(MatcherTest, LogitsPastTheVocabularyAreMasked) {
  Vocab v({"a"});
  auto g = MustParse(R"(root ::= "a")");
  Matcher m(g, v.index);
  std::vector<float> logits(v.size() + 3, 0.0f);
  m.MaskLogits(logits);
  EXPECT_EQ(logits[0], 0.0f);
  for (int i = v.size(); i < v.size() + 3; ++i) EXPECT_TRUE(std::isinf(logits[i]));
}

TEST(MatcherTest, ExplodingAmbiguityIsCappedNotHung) {
  // Each "a" doubles the ways to close: 2^n stacks without the cap.
  Vocab v({"a", "b", "bb"});
  auto g = MustParse(R"(
root ::= x
x ::= "a" x "b" | "a" x "bb" | ""
)");
  Matcher m(g, v.index);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 40; ++i) {
    Allowed(m, v.size());
    ASSERT_TRUE(m.Accept(v.Id("a")).ok());
  }
  for (int i = 0; i < 200 && !m.IsDone(); ++i) {
    const std::vector<int32_t> allowed = Allowed(m, v.size());
    ASSERT_FALSE(allowed.empty());
    if (allowed.back() == v.eog) break;
    ASSERT_TRUE(m.Accept(allowed.front()).ok());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
}

TEST(MatcherTest, MovedMatcherKeepsItsState) {
  Vocab v({"a", "b"});
  auto g = MustParse(R"(root ::= "ab")");
  Matcher m(g, v.index);
  ASSERT_TRUE(m.Accept(v.Id("a")).ok());
  Matcher moved = std::move(m);
  EXPECT_EQ(v.Texts(Allowed(moved, v.size())), (std::vector<std::string>{"b"}));
}

// ---- Random grammars against the reference recogniser -----------------------------------------

// Code points the random grammars and vocabularies draw from: ASCII, 2-, 3- and 4-byte UTF-8.
const char* const kAlphabet[] = {
    "a", "b", "c", "{", "}", "\"", ",", " ", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};

class RandomGrammar {
 public:
  explicit RandomGrammar(std::mt19937& rng) : rng_(rng) {}

  std::string Make() {
    const int n_rules = 2 + Rand(4);
    std::string out;
    for (int r = 0; r < n_rules; ++r) {
      absl::StrAppend(&out, "r", r, " ::= ", Alternates(r, n_rules, 0), "\n");
    }
    absl::StrAppend(&out, "root ::= r0\n");
    return out;
  }

 private:
  int Rand(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  std::string Char() { return kAlphabet[Rand(std::size(kAlphabet))]; }
  std::string Escaped(const std::string& c) { return c == "\"" ? "\\\"" : c; }

  std::string Alternates(int rule, int n_rules, int depth) {
    // The first alternative is only literals, so every rule can finish.
    std::string out = absl::StrCat("\"", Escaped(Char()), "\"");
    for (int n = Rand(3); n > 0; --n) out += " | " + Sequence(rule, n_rules, depth);
    return out;
  }

  std::string Sequence(int rule, int n_rules, int depth) {
    std::string out;
    const int n = Rand(4);
    bool consumed = false;  // a literal came first: references back are not left-recursive
    for (int i = 0; i < n; ++i) {
      std::string item;
      const char* reps[] = {"", "", "", "*", "+", "?", "{0,2}", "{1,3}", "{2}"};
      const std::string rep = reps[Rand(std::size(reps))];
      switch (Rand(6)) {
        case 0:
        case 1: {
          item = "\"";
          for (int k = 1 + Rand(3); k > 0; --k) item += Escaped(Char());
          item += "\"";
          consumed = consumed || (i == 0 && (rep.empty() || rep == "+" || rep == "{2}"));
          break;
        }
        case 2: {
          const char* classes[] = {"[ab]", "[^a\"]", "[a-c]", "[é-€]", "[^\\x00-\\x7F]", "."};
          item = classes[Rand(std::size(classes))];
          break;
        }
        case 3:
          if (rule + 1 < n_rules) {
            item = absl::StrCat("r", rule + 1 + Rand(n_rules - rule - 1));
          } else if (consumed) {
            item = absl::StrCat("r", Rand(n_rules));
          } else {
            item = "\"c\"";
          }
          break;
        default:
          item = depth < 2 ? absl::StrCat("(", Alternates(rule, n_rules, depth + 1), ")") : "\"b\"";
          break;
      }
      out += item + rep + " ";
    }
    return out;
  }

  std::mt19937& rng_;
};

std::vector<std::string> RandomVocab(std::mt19937& rng) {
  std::vector<std::string> v;
  // Every single byte of the alphabet, so any string is spellable.
  for (const char* c : kAlphabet) {
    for (const char b : std::string(c)) v.push_back(std::string(1, b));
  }
  auto rand = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); };
  for (int i = 0; i < 60; ++i) {
    std::string s;
    for (int k = 1 + rand(4); k > 0; --k) s += kAlphabet[rand(std::size(kAlphabet))];
    if (rand(3) == 0 && s.size() > 1) {  // a byte slice: may cut code points at both ends
      const size_t a = rand(static_cast<int>(s.size()));
      s = s.substr(a, 1 + rand(static_cast<int>(s.size() - a)));
    }
    v.push_back(s);
  }
  v.push_back("\xC3");  // invalid as a continuation of anything but 2-byte sequences
  v.push_back("\x80");
  return v;
}

int64_t masks_compared = 0;

// Walks `grammar` randomly over `vocab`, checking every mask against the reference.
void CheckRandomWalks(const std::string& text, const std::vector<std::string>& tokens,
                      std::mt19937& rng, int walks) {
  auto g = Grammar::Parse(text);
  ASSERT_TRUE(g.ok()) << g.status();
  const ReferenceRecognizer ref(GrammarImpl::Of(**g).ir());
  Vocab v(tokens);
  for (int walk = 0; walk < walks; ++walk) {
    Matcher m(*g, v.index);
    std::string prefix;
    for (int step = 0; step < 25; ++step) {
      const ReferenceRecognizer::Chart chart = ref.Parse(prefix);
      std::vector<int32_t> expected;
      for (int32_t t = 0; t < v.eog; ++t) {
        if (ref.Extend(chart, v.tokens[t]).prefix) expected.push_back(t);
      }
      const ReferenceRecognizer::Result here = ref.Extend(chart, "");
      const bool sentence = here.sentence;
      if (sentence) expected.push_back(v.eog);
      const std::vector<int32_t> got = Allowed(m, v.size());
      ++masks_compared;
      const bool done = here.final;
      ASSERT_EQ(m.IsDone(), done) << text << "prefix: " << prefix;
      if (!done) {
        ASSERT_EQ(v.Texts(got), v.Texts(expected)) << text << "prefix: '" << prefix << "'";
      }
      ASSERT_EQ(m.CanEnd(), sentence) << text << "prefix: " << prefix;
      if (got.empty() || done) break;
      const int32_t pick = got[std::uniform_int_distribution<size_t>(0, got.size() - 1)(rng)];
      ASSERT_TRUE(m.Accept(pick).ok());
      if (pick == v.eog) {
        EXPECT_TRUE(m.IsDone());
        break;
      }
      prefix += v.tokens[pick];
    }
  }
}

TEST(MatcherRandomTest, MasksEqualTheReference) {
  std::mt19937 rng(12345);
  int checked = 0;
  for (int i = 0; i < 1000 && checked < 300; ++i) {
    RandomGrammar gen(rng);
    const std::string text = gen.Make();
    if (!Grammar::Parse(text).ok()) continue;  // left-recursive or never-ending draws
    ++checked;
    CheckRandomWalks(text, RandomVocab(rng), rng, 8);
    if (HasFatalFailure()) return;
  }
  EXPECT_GE(checked, 250);
  std::printf("%d grammars, %lld masks compared\n", checked,
              static_cast<long long>(masks_compared));
}

// The same with keys of one frame and almost no uncertain tokens allowed, so masks are built
// from short keys and deeper keys and rechecks are exercised on small vocabularies.
TEST(MatcherRandomTest, MasksEqualTheReferenceWithTinyKeys) {
  internal::SetMaskCacheTuningForTest(1, 2);
  std::mt19937 rng(777);
  int checked = 0;
  for (int i = 0; i < 400 && checked < 100; ++i) {
    RandomGrammar gen(rng);
    const std::string text = gen.Make() + "\n# tiny keys\n";  // not shared with the other test
    if (!Grammar::Parse(text).ok()) continue;
    ++checked;
    CheckRandomWalks(text, RandomVocab(rng), rng, 8);
    if (HasFatalFailure()) break;
  }
  internal::SetMaskCacheTuningForTest(3, 512);
}

TEST(MatcherRandomTest, JsonGrammarEqualsTheReference) {
  const std::string json = R"(
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array  ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
string ::= "\"" ( [^"\\\x00-\x1F] | "\\" ["\\/bfnrt] )* "\""
number ::= "-"? [0-9]+ ("." [0-9]+)?
ws     ::= | " " | "\n" [ ]{0,3}
)";
  std::vector<std::string> tokens = {
      "{",    "}",  "[",  "]",  "\"",   ":",     ",",   " ",   "\n",   "\n ", "a",  "é",   "\xC3",
      "\xA9", "1",  "-",  ".",  "true", "null",  "{\"", "\":", "\",",  "\"}", "},", " \"", "\\",
      "\\n",  "[]", "{}", ": ", ", \"", "\"a\"", "12",  "1.",  "\x80", "tr",  "ue"};
  std::mt19937 rng(99);
  for (int i = 0; i < 3; ++i) {
    CheckRandomWalks(absl::StrCat(json, "# run ", i, "\n"), tokens, rng, 30);
    internal::SetMaskCacheTuningForTest(1, 1);  // then again with tiny keys
  }
  internal::SetMaskCacheTuningForTest(3, 512);
}

}  // namespace
}  // namespace loom::grammar
