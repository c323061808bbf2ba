// Chat templates: turns a conversation into the prompt text a model expects, by rendering the
// model's Jinja2 chat template (GGUF key `tokenizer.chat_template`) the way Hugging Face
// transformers does (sandboxed Jinja2, trim_blocks and lstrip_blocks on, `raise_exception`,
// `strftime_now` and a `tojson` that keeps non-ASCII text and key order).
//
//   LOOM_ASSIGN_OR_RETURN(ChatTemplate tmpl, ChatTemplate::Parse(gguf_chat_template));
//   RenderExtras extras;
//   extras.bos_token = "<|im_start|>";
//   LOOM_ASSIGN_OR_RETURN(std::string prompt,
//                         tmpl.Render({{"system", "Be brief."}, {"user", "Hi!"}},
//                                     /*add_generation_prompt=*/true, extras));
//
// A template that calls `raise_exception("msg")` fails with InvalidArgument and message "msg";
// parse errors name the line and column; output size, loop iterations and macro recursion are
// bounded (ChatTemplateOptions) so a hostile template cannot hang or exhaust memory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template/value.h"

namespace loom::chat {

struct TemplateAst;

// A tool call made by an assistant message; rendered as transformers' format
// {"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}.
struct ChatToolCall {
  std::string id;  // omitted when empty
  std::string name;
  Value arguments;  // usually a dict; a string is passed through as a string
};

struct ChatMessage {
  std::string role;
  std::string content;
  // Default member initializers keep `ChatMessage{"user", "Hi"}` free of -Wextra warnings.
  std::vector<ChatToolCall> tool_calls = {};  // omitted when empty
  std::string tool_call_id = {};              // for role "tool"; omitted when empty
};

// Converters from the plain structs to template values (dicts with the fields above).
Value ToValue(const ChatToolCall& call);
Value ToValue(const ChatMessage& message);
Value ToValue(const std::vector<ChatMessage>& messages);

struct RenderExtras {
  std::string bos_token;
  std::string eos_token;
  // More template variables (`tools`, `date_string`, ...); they override the ones above.
  ValueDict variables;
};

struct ChatTemplateOptions {
  // Jinja whitespace options; the defaults are transformers' settings.
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
  // Limits against hostile templates.
  size_t max_output_bytes = 16 << 20;
  int64_t max_loop_iterations = 1'000'000;
  int max_call_depth = 64;
  int max_nesting_depth = 256;
};

class ChatTemplate {
 public:
  using Options = ChatTemplateOptions;

  // Fails with InvalidArgument ("template syntax error at line L, column C: ...").
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source, Options options = {});

  // Renders with the variables transformers passes: messages, add_generation_prompt,
  // bos_token, eos_token, plus extras.variables.
  absl::StatusOr<std::string> Render(const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt,
                                     const RenderExtras& extras = {}) const;

  // Renders with an explicit context, which must be a dict of template variables.
  absl::StatusOr<std::string> RenderWithContext(const Value& context) const;

  const std::string& source() const { return *source_; }
  const Options& options() const { return options_; }

 private:
  ChatTemplate(std::shared_ptr<const TemplateAst> ast, std::shared_ptr<const std::string> source,
               Options options)
      : ast_(std::move(ast)), source_(std::move(source)), options_(options) {}

  std::shared_ptr<const TemplateAst> ast_;
  std::shared_ptr<const std::string> source_;
  Options options_;
};

}  // namespace loom::chat
