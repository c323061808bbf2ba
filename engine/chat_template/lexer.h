// Jinja2 lexer for the chat template engine: splits a template into text and tag tokens, applying
// Jinja's whitespace control (`{%-`, `-%}`, trim_blocks, lstrip_blocks) so that the parser only
// sees what will be output.
//
//   LexerOptions options;  // transformers' settings: trim_blocks and lstrip_blocks on
//   absl::StatusOr<std::vector<Token>> tokens = Tokenize("Hi {{ name }}!", options);
//   // kText "Hi ", kVariableBegin, kName "name", kVariableEnd, kText "!", kEof
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::chat {

enum class TokenType {
  kText,           // literal template text (whitespace control already applied)
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,    // value holds the decoded string
  kInteger,   // int_value
  kFloat,     // float_value
  kOperator,  // value holds the operator: "+", "//", "==", "(", ...
  kEof,
};

struct Token {
  TokenType type = TokenType::kEof;
  std::string value;
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;    // 1-based
  int column = 1;  // 1-based, in bytes
};

struct LexerOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

// Fails with InvalidArgument naming line and column for unterminated tags, comments and strings,
// unbalanced brackets and unexpected characters.
absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, const LexerOptions& options);

// A human readable token description for error messages: "end of statement block", "'foo'".
std::string DescribeToken(const Token& token);

}  // namespace loom::chat
