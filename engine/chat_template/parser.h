// Jinja2 parser for the chat template engine: turns a template source into a TemplateAst
// (ast.h), following Jinja2's grammar and operator precedence. Unknown tags are rejected here, and
// unknown filters and tests too unless they sit inside an `if` (where Jinja2 3.x, too, only fails
// when they are evaluated); every error names a line and column.
//
//   ParserOptions options;
//   absl::StatusOr<TemplateAst> ast = ParseTemplate("{% if x %}{{ x | upper }}{% endif %}",
//   options); ParseTemplate("{{ x | nosuch }}", options).status();
//   // InvalidArgument: "template syntax error at line 1, column 6: no filter named 'nosuch'"
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "engine/chat_template/ast.h"
#include "engine/chat_template/lexer.h"

namespace loom::chat {

struct ParserOptions {
  LexerOptions lexer;
  // Bound on nested blocks and expressions, so a hostile template cannot exhaust the stack.
  int max_nesting_depth = 256;
};

absl::StatusOr<TemplateAst> ParseTemplate(std::string_view source, const ParserOptions& options);

}  // namespace loom::chat
