// Renders a parsed chat template (ast.h) against a context of Values, with Jinja2's scoping
// rules (a `for` iteration is a scope, `if` is not, macros see only top-level variables) and
// bounds on output size, loop iterations and macro recursion.
//
//   RenderLimits limits;
//   ValueDict context;
//   context.Set("name", Value("Loom"));
//   absl::StatusOr<std::string> out = RenderTemplate(ast, Value(std::move(context)), limits);
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/chat_template/ast.h"
#include "engine/chat_template/value.h"

namespace loom::chat {

struct RenderLimits {
  // Output (and any intermediate string) larger than this fails with ResourceExhausted.
  size_t max_output_bytes = 16 << 20;
  // Loop iterations over the whole render (and the longest list `range` may build).
  int64_t max_loop_iterations = 1'000'000;
  // Nested macro calls.
  int max_call_depth = 64;
  // Nesting of lists and dicts a template builds (deeper values make recursion unsafe).
  int max_value_depth = 512;
};

// `context` must be a dict (or undefined for none). Errors name the template line and column,
// except `raise_exception(msg)`, whose status message is exactly `msg`.
absl::StatusOr<std::string> RenderTemplate(const TemplateAst& ast, const Value& context,
                                           const RenderLimits& limits);

}  // namespace loom::chat
