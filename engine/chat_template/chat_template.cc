#include "engine/chat_template/chat_template.h"

#include <utility>

#include "common/status_macros.h"
#include "engine/chat_template/ast.h"
#include "engine/chat_template/evaluator.h"
#include "engine/chat_template/parser.h"

namespace loom::chat {

Value ToValue(const ChatToolCall& call) {
  ValueDict function;
  function.Set("name", Value(call.name));
  function.Set("arguments", call.arguments);
  ValueDict dict;
  if (!call.id.empty()) dict.Set("id", Value(call.id));
  dict.Set("type", Value("function"));
  dict.Set("function", Value(std::move(function)));
  return Value(std::move(dict));
}

Value ToValue(const ChatMessage& message) {
  ValueDict dict;
  dict.Set("role", Value(message.role));
  dict.Set("content", Value(message.content));
  if (!message.tool_calls.empty()) {
    ValueList calls;
    for (const ChatToolCall& call : message.tool_calls) calls.push_back(ToValue(call));
    dict.Set("tool_calls", Value(std::move(calls)));
  }
  if (!message.tool_call_id.empty()) dict.Set("tool_call_id", Value(message.tool_call_id));
  return Value(std::move(dict));
}

Value ToValue(const std::vector<ChatMessage>& messages) {
  ValueList list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) list.push_back(ToValue(m));
  return Value(std::move(list));
}

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source, Options options) {
  ParserOptions parser_options;
  parser_options.lexer.trim_blocks = options.trim_blocks;
  parser_options.lexer.lstrip_blocks = options.lstrip_blocks;
  parser_options.lexer.keep_trailing_newline = options.keep_trailing_newline;
  parser_options.max_nesting_depth = options.max_nesting_depth;
  LOOM_ASSIGN_OR_RETURN(TemplateAst ast, ParseTemplate(source, parser_options));
  return ChatTemplate(std::make_shared<const TemplateAst>(std::move(ast)),
                      std::make_shared<const std::string>(source), options);
}

absl::StatusOr<std::string> ChatTemplate::Render(const std::vector<ChatMessage>& messages,
                                                 bool add_generation_prompt,
                                                 const RenderExtras& extras) const {
  ValueDict context;
  context.Set("messages", ToValue(messages));
  context.Set("add_generation_prompt", Value(add_generation_prompt));
  context.Set("bos_token", Value(extras.bos_token));
  context.Set("eos_token", Value(extras.eos_token));
  for (const auto& [key, value] : extras.variables) context.Set(key, value);
  return RenderWithContext(Value(std::move(context)));
}

absl::StatusOr<std::string> ChatTemplate::RenderWithContext(const Value& context) const {
  RenderLimits limits;
  limits.max_output_bytes = options_.max_output_bytes;
  limits.max_loop_iterations = options_.max_loop_iterations;
  limits.max_call_depth = options_.max_call_depth;
  return RenderTemplate(*ast_, context, limits);
}

}  // namespace loom::chat
