// OpenAI tool calling for any model, in llama.cpp's "generic" style: the tools are described in
// a system message, the model answers with one JSON object — {"tool_calls": [{"name": ...,
// "arguments": {...}}]} or, when it may choose (tool_choice "auto"), {"response": "..."} — and
// that object is generated under a JSON Schema built from the functions' parameter schemas, so
// it always parses and the arguments always validate. Earlier tool calls and `role: tool`
// results are rewritten into the same JSON shapes before the chat template renders them.
//
//   ToolSpec spec;                               // parsed from the request's tools / tool_choice
//   LOOM_RETURN_IF_ERROR(spec.Validate());
//   LOOM_RETURN_IF_ERROR(PrepareToolMessages(spec, &messages));   // before rendering
//   params.constraint = {OutputConstraint::Kind::kJsonSchema, ToolOutputSchema(spec), "tools"};
//   ...
//   LOOM_ASSIGN_OR_RETURN(ToolOutput out, ParseToolOutput(generated_text));
//   if (!out.calls.empty()) ...;                 // finish_reason "tool_calls"
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"

namespace loom::server::frontend {

struct ToolFunction {
  std::string name;  // [A-Za-z0-9_-]{1,64}
  std::string description;
  std::string parameters_json;  // a JSON Schema for the arguments object ("" = any object)
};

struct ToolSpec {
  enum class Choice { kAuto, kNone, kRequired, kFunction };
  std::vector<ToolFunction> functions;
  Choice choice = Choice::kAuto;
  std::string function;             // kFunction: the one to call
  bool parallel_tool_calls = true;  // more than one call per turn allowed

  // Tools are in play: there are functions and the choice is not "none".
  bool active() const { return !functions.empty() && choice != Choice::kNone; }
  // InvalidArgument (param "tools" / "tool_choice") for bad names, duplicates, a named function
  // that is not in the list, or "required" without tools.
  absl::Status Validate() const;
};

// Rewrites `messages` for a model without native tool support: adds (or extends) the system
// message with the tool list and the answer format, turns assistant tool calls into their JSON
// object and `tool` results into {"tool_response": {...}} messages. Only when spec.active().
absl::Status PrepareToolMessages(const ToolSpec& spec, std::vector<chat::ChatMessage>* messages);

// The JSON Schema of the model's whole answer under `spec` (spec.active() must hold): at most one
// call per offered function per turn (one without parallel_tool_calls).
std::string ToolOutputSchema(const ToolSpec& spec);

// A tool call as the API returns it.
struct ToolCall {
  std::string id;  // "call_" + 24 hex digits
  std::string name;
  std::string arguments;  // JSON text of the arguments object
};

struct ToolOutput {
  std::string content;          // {"response": ...}: the text answer
  std::vector<ToolCall> calls;  // {"tool_calls": [...]}
};

// Parses the model's answer. InvalidArgument when it is not one of the two shapes (possible
// only when generation stopped early, e.g. at max_tokens).
absl::StatusOr<ToolOutput> ParseToolOutput(const std::string& text);

}  // namespace loom::server::frontend
