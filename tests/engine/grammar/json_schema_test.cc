// JSON Schema -> GBNF: for schemas of varied shape, JSON texts known valid are accepted by the
// compiled grammar (through a Matcher fed one byte at a time, cross-checked with the reference
// recogniser) and invalid ones rejected; unsupported keywords are errors that name them.
#include "engine/grammar/json_schema.h"

#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_impl.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/grammar/reference_recognizer.h"

namespace loom::grammar {
namespace {

using ::testing::HasSubstr;

// A vocabulary of the 256 single bytes plus end-of-generation (id 256).
std::shared_ptr<const TokenIndex> ByteIndex() {
  static const auto index = [] {
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, static_cast<char>(b)));
    tokens.push_back("");
    return TokenIndex::FromStrings(tokens, {256});
  }();
  return index;
}

class Schema {
 public:
  explicit Schema(std::string_view schema) {
    auto gbnf = JsonSchemaToGbnf(schema);
    EXPECT_TRUE(gbnf.ok()) << gbnf.status() << "\n" << schema;
    if (!gbnf.ok()) return;
    gbnf_ = *gbnf;
    auto g = Grammar::Parse(gbnf_);
    EXPECT_TRUE(g.ok()) << g.status() << "\n" << gbnf_;
    if (g.ok()) grammar_ = *g;
  }
  static Schema FromGbnf(const std::string& gbnf) {
    Schema s("{}");
    s.gbnf_ = gbnf;
    auto g = Grammar::Parse(gbnf);
    EXPECT_TRUE(g.ok()) << g.status();
    s.grammar_ = *g;
    return s;
  }

  // Whether `json` is a complete sentence; the matcher and the reference must agree.
  bool Accepts(std::string_view json) const {
    if (grammar_ == nullptr) return false;
    Matcher m(grammar_, ByteIndex());
    bool ok = true;
    for (const char c : json) {
      if (!m.Accept(static_cast<uint8_t>(c)).ok()) {
        ok = false;
        break;
      }
    }
    ok = ok && m.CanEnd();
    const bool ref =
        internal::ReferenceRecognizer(internal::GrammarImpl::Of(*grammar_).ir()).IsSentence(json);
    EXPECT_EQ(ok, ref) << "matcher and reference disagree on " << json << "\n" << gbnf_;
    return ok;
  }
  // Accepted and nothing may follow.
  bool Done(std::string_view json) const {
    Matcher m(grammar_, ByteIndex());
    for (const char c : json) {
      if (!m.Accept(static_cast<uint8_t>(c)).ok()) return false;
    }
    return m.IsDone();
  }
  const std::string& gbnf() const { return gbnf_; }

 private:
  std::string gbnf_;
  std::shared_ptr<const Grammar> grammar_;
};

std::string Error(std::string_view schema) {
  auto g = JsonSchemaToGbnf(schema);
  EXPECT_FALSE(g.ok()) << *g;
  if (g.ok()) return "";
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(g.status().message());
}

TEST(JsonSchemaTest, ObjectWithRequiredAndOptionalProperties) {
  const Schema s(R"({
    "type": "object",
    "title": "Person",
    "properties": {
      "name": {"type": "string", "description": "full name"},
      "age": {"type": "integer", "minimum": 0, "maximum": 150},
      "nickname": {"type": "string"}
    },
    "required": ["name", "age"],
    "additionalProperties": false
  })");
  EXPECT_TRUE(s.Accepts(R"({"name":"Ada","age":36})"));
  EXPECT_TRUE(s.Accepts(R"({"name": "Ada", "age": 36, "nickname": "A"})"));
  EXPECT_TRUE(s.Accepts("{\n  \"name\": \"Ada\",\n  \"age\": 0\n}"));
  EXPECT_TRUE(s.Accepts(R"({ "name" : "\"Q\" \\ \u00e9 é😀" , "age" : 150 })"));
  EXPECT_TRUE(s.Done(R"({"name":"Ada","age":36})"));
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada"})"));                 // age is required
  EXPECT_FALSE(s.Accepts(R"({"age":36,"name":"Ada"})"));        // written order
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada","age":36,"x":1})"));  // no other keys
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada","age":151})"));
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada","age":-1})"));
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada","age":"36"})"));
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada","age":36,})"));
  EXPECT_FALSE(s.Accepts(R"({"name":"A\qa","age":36})"));      // bad escape
  EXPECT_FALSE(s.Accepts("{\"name\":\"A\nB\",\"age\":36}"));   // raw control character
  EXPECT_FALSE(s.Accepts(R"( {"name":"Ada","age":36})"));      // no leading whitespace
  EXPECT_FALSE(s.Accepts(R"({"name":"Ada","age":36} )"));      // nor trailing
  EXPECT_FALSE(s.Accepts("{  \"name\":\"Ada\",\"age\":36}"));  // at most one space
  EXPECT_FALSE(s.Accepts("{\n" + std::string(21, ' ') + "\"name\":\"Ada\",\"age\":36}"));
  EXPECT_TRUE(s.Accepts("{\n" + std::string(20, ' ') + "\"name\":\"Ada\",\"age\":36}"));
}

TEST(JsonSchemaTest, OptionalPropertiesInEveryCombination) {
  const Schema s(R"({"properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                     "c": {"type": "integer"}}, "required": ["b"]})");
  EXPECT_TRUE(s.Accepts(R"({"b":1})"));
  EXPECT_TRUE(s.Accepts(R"({"a":1,"b":2})"));
  EXPECT_TRUE(s.Accepts(R"({"b":2,"c":3})"));
  EXPECT_TRUE(s.Accepts(R"({"a":1,"b":2,"c":3})"));
  EXPECT_FALSE(s.Accepts(R"({})"));
  EXPECT_FALSE(s.Accepts(R"({"a":1})"));
  EXPECT_FALSE(s.Accepts(R"({"a":1,,"b":2})"));
  EXPECT_FALSE(s.Accepts(R"({,"b":2})"));

  const Schema none(R"({"type": "object", "properties": {"x": {"type": "boolean"}}})");
  EXPECT_TRUE(none.Accepts("{}"));
  EXPECT_TRUE(none.Accepts("{ }"));
  EXPECT_TRUE(none.Accepts(R"({"x":true})"));
  EXPECT_FALSE(none.Accepts(R"({"x":1})"));
}

TEST(JsonSchemaTest, EnumAndConst) {
  const Schema s(R"({"type": "object",
      "properties": {"color": {"enum": ["red", "green", null, 1, {"a": [1]}]},
                     "kind": {"const": "fixed"}},
      "required": ["color", "kind"]})");
  EXPECT_TRUE(s.Accepts(R"({"color":"red","kind":"fixed"})"));
  EXPECT_TRUE(s.Accepts(R"({"color": null, "kind": "fixed"})"));
  EXPECT_TRUE(s.Accepts(R"({"color": {"a":[1]}, "kind": "fixed"})"));
  EXPECT_FALSE(s.Accepts(R"({"color":"blue","kind":"fixed"})"));
  EXPECT_FALSE(s.Accepts(R"({"color":"red","kind":"other"})"));
}

TEST(JsonSchemaTest, ArraysWithBounds) {
  const Schema s(R"({"type": "array", "items": {"type": "integer"}, "minItems": 1,
                     "maxItems": 3})");
  EXPECT_TRUE(s.Accepts("[1]"));
  EXPECT_TRUE(s.Accepts("[1, 2, 3]"));
  EXPECT_TRUE(s.Accepts("[ 1 ,2 ]"));
  EXPECT_FALSE(s.Accepts("[]"));
  EXPECT_FALSE(s.Accepts("[1,2,3,4]"));
  EXPECT_FALSE(s.Accepts("[1,]"));

  const Schema any(R"({"type": "array", "items": {"type": "string"}})");
  EXPECT_TRUE(any.Accepts("[]"));
  EXPECT_TRUE(any.Accepts("[ ]"));
  EXPECT_TRUE(any.Accepts(R"(["a","b","c","d","e","f"])"));
  EXPECT_FALSE(any.Accepts("[1]"));

  const Schema big(R"({"type": "array", "items": {"const": 0}, "minItems": 3})");
  EXPECT_FALSE(big.Accepts("[0,0]"));
  EXPECT_TRUE(big.Accepts("[0,0,0]"));
  EXPECT_TRUE(big.Accepts("[0,0,0,0,0]"));

  const Schema tuple(R"({"type": "array", "prefixItems": [{"type": "string"},
                         {"type": "integer"}], "items": false})");
  EXPECT_TRUE(tuple.Accepts(R"(["a", 1])"));
  EXPECT_TRUE(tuple.Accepts(R"(["a"])"));
  EXPECT_TRUE(tuple.Accepts("[]"));
  EXPECT_FALSE(tuple.Accepts(R"(["a", 1, 2])"));
  EXPECT_FALSE(tuple.Accepts(R"([1])"));

  const Schema tail(R"({"type": "array", "prefixItems": [{"const": "x"}],
                        "items": {"type": "boolean"}, "minItems": 2, "maxItems": 3})");
  EXPECT_TRUE(tail.Accepts(R"(["x", true])"));
  EXPECT_TRUE(tail.Accepts(R"(["x", true, false])"));
  EXPECT_FALSE(tail.Accepts(R"(["x"])"));
  EXPECT_FALSE(tail.Accepts(R"(["x", true, false, true])"));
}

TEST(JsonSchemaTest, StringLengthsCountCodePoints) {
  const Schema s(R"({"type": "string", "minLength": 2, "maxLength": 4})");
  EXPECT_TRUE(s.Accepts(R"("ab")"));
  EXPECT_TRUE(s.Accepts(R"("abcd")"));
  EXPECT_TRUE(s.Accepts(R"("é€😀")"));
  EXPECT_TRUE(s.Accepts(R"("\n\u00e9")"));  // two characters once decoded
  EXPECT_FALSE(s.Accepts(R"("a")"));
  EXPECT_FALSE(s.Accepts(R"("abcde")"));
  EXPECT_TRUE(s.Done(R"("abcd")"));
}

TEST(JsonSchemaTest, Patterns) {
  const Schema code(R"({"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"})");
  EXPECT_TRUE(code.Accepts(R"("AB-123")"));
  EXPECT_FALSE(code.Accepts(R"("ab-123")"));
  EXPECT_FALSE(code.Accepts(R"("AB-12")"));
  EXPECT_FALSE(code.Accepts(R"("xAB-123")"));  // implicitly anchored

  const Schema alt(R"({"pattern": "(foo|bar)+x?\\.(?:[^a-z]|\\s)*"})");
  EXPECT_TRUE(alt.Accepts(R"("foobarfoo.")"));
  EXPECT_TRUE(alt.Accepts(R"("barx.A1 ")"));
  EXPECT_TRUE(alt.Accepts(R"("foo.\n\t")"));
  EXPECT_FALSE(alt.Accepts(R"("foo.a")"));
  EXPECT_FALSE(alt.Accepts(R"("x.")"));

  const Schema quote(R"({"pattern": "^say \"[a-z\"\\\\]+\"$"})");
  EXPECT_TRUE(quote.Accepts(R"("say \"hi\\\"\"")"));  // value: say "hi\""
  EXPECT_FALSE(quote.Accepts(R"("say "hi"")"));       // unescaped quotes are not JSON

  const Schema dot(R"({"pattern": "^.{3}$"})");
  EXPECT_TRUE(dot.Accepts(R"("a\"é")"));
  EXPECT_FALSE(dot.Accepts(R"("ab")"));
}

TEST(JsonSchemaTest, Formats) {
  const Schema date(R"({"type": "string", "format": "date"})");
  EXPECT_TRUE(date.Accepts(R"("2024-02-29")"));
  EXPECT_FALSE(date.Accepts(R"("2024-13-01")"));
  EXPECT_FALSE(date.Accepts(R"("2024-1-01")"));
  const Schema dt(R"({"type": "string", "format": "date-time"})");
  EXPECT_FALSE(dt.Accepts(R"("2024-02-29T23:59:60Z")"));
  EXPECT_TRUE(dt.Accepts(R"("2024-02-29T23:59:59.123+01:00")"));
  EXPECT_TRUE(dt.Accepts(R"("1999-12-31t00:00:00z")"));
  const Schema time(R"({"format": "time"})");
  EXPECT_TRUE(time.Accepts(R"("12:30:00Z")"));
  EXPECT_FALSE(time.Accepts(R"("24:00:00Z")"));
  const Schema uuid(R"({"type": "string", "format": "uuid"})");
  EXPECT_TRUE(uuid.Accepts(R"("123e4567-e89b-12d3-a456-426614174000")"));
  EXPECT_FALSE(uuid.Accepts(R"("123e4567e89b12d3a456426614174000")"));
}

TEST(JsonSchemaTest, Numbers) {
  const Schema n(R"({"type": "number"})");
  for (const char* ok : {"0", "-0.25", "1.5e10", "12E-3", "3.0", "-7"}) {
    EXPECT_TRUE(n.Accepts(ok)) << ok;
  }
  for (const char* bad : {"01", "1.", ".5", "+1", "1e", "--1", "1e1234"}) {
    EXPECT_FALSE(n.Accepts(bad)) << bad;
  }
  const Schema pos(R"({"type": "number", "minimum": 0})");
  EXPECT_TRUE(pos.Accepts("0.5"));
  EXPECT_FALSE(pos.Accepts("-0.5"));
  const Schema i(R"({"type": "integer"})");
  EXPECT_TRUE(i.Accepts("-1234567890123456"));
  EXPECT_FALSE(i.Accepts("12345678901234567"));  // 17 digits
  EXPECT_FALSE(i.Accepts("1.0"));
}

TEST(JsonSchemaTest, IntegerRangesAreExact) {
  const struct {
    const char* schema;
    int64_t lo, hi;
  } cases[] = {
      {R"({"type": "integer", "minimum": -15, "maximum": 237})", -15, 237},
      {R"({"type": "integer", "exclusiveMinimum": 9, "exclusiveMaximum": 1000})", 10, 999},
      {R"({"type": "integer", "minimum": 5})", 5, INT64_MAX},
      {R"({"type": "integer", "maximum": -20})", INT64_MIN, -20},
      {R"({"type": "integer", "minimum": 0, "maximum": 0})", 0, 0},
      {R"({"type": "integer", "minimum": 99, "maximum": 1001})", 99, 1001},
      {R"({"type": "integer", "minimum": 1.5, "maximum": 7.5})", 2, 7},
  };
  for (const auto& c : cases) {
    const Schema s(c.schema);
    for (int64_t v = -1100; v <= 1100; ++v) {
      ASSERT_EQ(s.Accepts(std::to_string(v)), v >= c.lo && v <= c.hi) << c.schema << " " << v;
    }
    EXPECT_FALSE(s.Accepts("-0"));
    EXPECT_FALSE(s.Accepts("007"));
  }
}

TEST(JsonSchemaTest, AnyOfTypeListsAndAllOf) {
  const Schema any(R"({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 10}]})");
  EXPECT_TRUE(any.Accepts(R"("x")"));
  EXPECT_TRUE(any.Accepts("10"));
  EXPECT_FALSE(any.Accepts("9"));
  const Schema types(R"({"type": ["string", "null"], "maxLength": 1})");
  EXPECT_TRUE(types.Accepts("null"));
  EXPECT_TRUE(types.Accepts(R"("a")"));
  EXPECT_FALSE(types.Accepts(R"("ab")"));
  const Schema all(R"({"allOf": [{"type": "boolean"}], "description": "x"})");
  EXPECT_TRUE(all.Accepts("false"));
  EXPECT_FALSE(all.Accepts("0"));
}

TEST(JsonSchemaTest, RecursiveReferences) {
  const Schema tree(R"({
    "$defs": {"node": {"type": "object",
      "properties": {"value": {"type": "integer"},
                     "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
      "required": ["value", "children"]}},
    "$ref": "#/$defs/node"})");
  EXPECT_TRUE(tree.Accepts(R"({"value":1,"children":[]})"));
  EXPECT_TRUE(
      tree.Accepts(R"({"value":1,"children":[{"value":2,"children":[{"value":3,"children":[]}]},)"
                   R"({"value":4,"children":[]}]})"));
  EXPECT_FALSE(tree.Accepts(R"({"value":1,"children":[{"value":2}]})"));

  const Schema self(R"({"definitions": {"x": {"type": "integer"}},
      "type": "object", "properties": {"n": {"$ref": "#/definitions/x"}, "next": {"$ref": "#"}}})");
  EXPECT_TRUE(self.Accepts(R"({"n":1,"next":{"next":{"n":3}}})"));
  EXPECT_FALSE(self.Accepts(R"({"next":{"n":"a"}})"));
}

TEST(JsonSchemaTest, AdditionalPropertiesAndFreeFormObjects) {
  const Schema extra(R"({"type": "object", "properties": {"a": {"type": "integer"}},
                         "required": ["a"], "additionalProperties": {"type": "string"}})");
  EXPECT_TRUE(extra.Accepts(R"({"a":1})"));
  EXPECT_TRUE(extra.Accepts(R"({"a":1,"b":"x","c":"y"})"));
  EXPECT_FALSE(extra.Accepts(R"({"a":1,"b":2})"));

  const Schema free(R"({"type": "object"})");
  const Schema any_object = Schema::FromGbnf(AnyJsonObjectGbnf());
  for (const Schema* s : {&free, &any_object}) {
    EXPECT_TRUE(s->Accepts("{}"));
    EXPECT_TRUE(s->Accepts(R"({"a": [1, {"b": null}, "c", true, -2.5e3], "d": {}})"));
    EXPECT_FALSE(s->Accepts("[]"));
    EXPECT_FALSE(s->Accepts(R"({"a"})"));
    EXPECT_FALSE(s->Accepts(R"({"a": 1,})"));
    EXPECT_TRUE(s->Done(R"({"a": 1})"));
  }
  const Schema anything("{}");
  EXPECT_TRUE(anything.Accepts("[1, \"x\"]"));
  EXPECT_TRUE(anything.Accepts("null"));
}

TEST(JsonSchemaTest, UnsupportedKeywordsAreNamed) {
  EXPECT_THAT(Error(R"({"type": "object", "properties": {"tags": {"type": "object",
                       "patternProperties": {"^x": {}}}}})"),
              HasSubstr("unsupported JSON Schema keyword 'patternProperties' at /properties/tags"));
  EXPECT_THAT(Error(R"({"type": "array", "uniqueItems": true})"),
              HasSubstr("unsupported JSON Schema keyword 'uniqueItems' at /"));
  EXPECT_THAT(Error(R"({"not": {}})"), HasSubstr("'not'"));
  EXPECT_THAT(Error(R"({"items": {"if": {}}})"), HasSubstr("'if' at /items"));
  EXPECT_THAT(Error(R"({"type": "string", "format": "email"})"), HasSubstr("format 'email'"));
  EXPECT_THAT(Error(R"j({"type": "string", "pattern": "a(?=b)"})j"), HasSubstr("(?="));
  EXPECT_THAT(Error(R"({"type": "string", "pattern": "\\bword"})"), HasSubstr("'\\b'"));
  EXPECT_THAT(Error(R"({"type": "string", "pattern": "a*?"})"), HasSubstr("'*?'"));
  EXPECT_THAT(Error(R"({"allOf": [{}, {}]})"), HasSubstr("exactly one"));
  EXPECT_THAT(Error(R"({"type": "number", "maximum": 3})"), HasSubstr("'maximum' on a number"));
  EXPECT_THAT(Error(R"({"$ref": "https://example.com/s.json"})"), HasSubstr("only local"));
  EXPECT_THAT(Error(R"({"$ref": "#/$defs/missing"})"), HasSubstr("not found"));
  EXPECT_THAT(Error(R"({"type": "object", "required": ["x"], "properties": {}})"),
              HasSubstr("required property 'x'"));
  EXPECT_THAT(Error(R"({"type": "strin"})"), HasSubstr("unknown type 'strin'"));
  EXPECT_THAT(Error(R"({"type": "integer", "minimum": 5, "maximum": 4})"), HasSubstr("no integer"));
  EXPECT_THAT(Error(R"({"type": "string", "maxLength": 20000})"), HasSubstr("over 10000"));
  EXPECT_THAT(Error("{not json"), HasSubstr("not valid JSON"));
  EXPECT_THAT(Error("false"), HasSubstr("matches nothing"));
}

TEST(JsonSchemaTest, GrammarReadsWell) {
  auto gbnf = JsonSchemaToGbnf(R"({"type": "object", "properties": {"name": {"type": "string"},
      "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "tags"]})");
  ASSERT_TRUE(gbnf.ok());
  EXPECT_THAT(*gbnf, HasSubstr(R"(root ::= "{" ws root-name-kv "," ws root-tags-kv "}")"));
  EXPECT_THAT(*gbnf, HasSubstr(R"(root-name-kv ::= "\"name\"" ws ":" ws string ws)"));
}

}  // namespace
}  // namespace loom::grammar
