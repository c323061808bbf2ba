// JSON Schema -> GBNF, for structured output (OpenAI's response_format json_schema / json_object):
// the grammar's sentences are JSON texts that the schema accepts, so a Matcher built on it makes
// the model emit only such JSON. The one place in engine/ that parses JSON (nlohmann, privately).
//
//   LOOM_ASSIGN_OR_RETURN(std::string gbnf, loom::grammar::JsonSchemaToGbnf(R"({
//       "type": "object",
//       "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
//       "required": ["name", "age"]})"));
//   LOOM_ASSIGN_OR_RETURN(auto grammar, loom::grammar::Grammar::Parse(gbnf));
//   auto any_object = loom::grammar::Grammar::Parse(loom::grammar::AnyJsonObjectGbnf());
//
// The supported subset (anything else is InvalidArgument naming the keyword and where it is, e.g.
// "unsupported JSON Schema keyword 'patternProperties' at /properties/tags"):
//
//  - type: "object", "array", "string", "number", "integer", "boolean", "null", or a list of them.
//    Without type, it is inferred from the keywords present (properties -> object, items ->
//    array, ...); with no keyword at all (or the schema `true`), any JSON value.
//  - Objects: properties (generated in the order written), required, additionalProperties.
//    Properties not in `required` may be left out. Unlike plain JSON Schema, and like OpenAI's
//    strict mode, an object with `properties` gets no other keys unless additionalProperties is
//    true or a schema (then any further keys, which may repeat a declared name). An object with
//    neither properties nor additionalProperties is any JSON object.
//  - Arrays: items (a schema; false to forbid items past prefixItems), prefixItems, minItems,
//    maxItems (at most 1000).
//  - Strings: minLength, maxLength (at most 10000, counted in code points), pattern, format. A
//    pattern must match the whole string (implicitly anchored, as OpenAI and llama.cpp treat it);
//    supported regex: literals, escapes (\d \w \s \D \W \S, \n \t \r, \uXXXX, escaped
//    punctuation), classes [...] and [^...], ., groups (...) and (?:...), |, * + ? {m} {m,}
//    {m,n}, and ^ $ at the ends; not with minLength/maxLength. A negated class or \D \W \S never
//    generates '"', '\' or control characters. Formats: date, time, date-time (RFC 3339), uuid;
//    others are rejected.
//  - Integers: minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers, draft 6+), exact,
//    bounds within +-10^15. Numbers: only `minimum: 0` (no sign); other bounds are rejected.
//    Unbounded integers have at most 16 digits, fractions 16 digits, exponents 3 digits.
//  - enum and const (any JSON values, emitted as compact JSON), anyOf and oneOf (alternatives;
//    oneOf's exclusivity is not enforced), allOf with a single schema, $ref to #, #/$defs/... and
//    #/definitions/... (recursion allowed).
//  - Ignored annotations: title, description, $schema, $id, $comment, default, examples,
//    deprecated, readOnly, writeOnly.
//
// Whitespace: none before the value or after it (the grammar is done at the final '}' so a
// sequence ends there); between tokens at most one space, or one newline followed by up to 20
// spaces or tabs (pretty-printing), so a small model cannot spin on whitespace.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loom::grammar {

absl::StatusOr<std::string> JsonSchemaToGbnf(std::string_view schema_json);

// Any JSON object, with the same whitespace rules.
const std::string& AnyJsonObjectGbnf();

}  // namespace loom::grammar
