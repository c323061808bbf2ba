// OpenAI API request bodies as plain structs: parses and validates the JSON of
// /v1/chat/completions, /v1/completions, /tokenize and /detokenize (types and ranges, with the
// offending field named as OpenAI does), and formats OpenAI's error body. JSON stops here: what
// comes out feeds engine::Request directly. Unknown fields are ignored; null counts as absent.
//
//   ChatCompletionRequest req;
//   if (std::optional<ApiError> err = ParseChatCompletionRequest(body, &req)) {
//     res->status = err->status;
//     res->body = ErrorBody(*err);  // {"error":{"message":...,"type":...,"param":...,"code":...}}
//   }
//   for (const chat::ChatMessage& m : req.messages) ...;  // render with the chat template
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/chat_template/chat_template.h"
#include "engine/sampler/sampler.h"
#include "server/frontend/frontend.h"
#include "server/frontend/tools.h"

namespace loom::server::http {

// An error the client gets, with OpenAI's body fields. Empty param / code become JSON null.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;
  std::string code;
};

ApiError InvalidRequest(std::string message, std::string param = "", std::string code = "");
// {"error":{"message":...,"type":...,"param":...|null,"code":...|null}}
std::string ErrorBody(const ApiError& error);

// Limits the parser enforces (everything else the front end checks against the model).
using frontend::kMaxChoices;
using frontend::kMaxStopStrings;
using frontend::kMaxTopLogprobs;

// The fields both endpoints share.
using GenerationParams = frontend::GenerationParams;

struct ChatCompletionRequest {
  GenerationParams params;
  // Roles system/user/assistant/tool; text content only; assistant tool_calls kept.
  std::vector<chat::ChatMessage> messages;
  frontend::ToolSpec tools;  // tools, tool_choice, parallel_tool_calls
};

// One completion prompt: text, or token ids.
struct PromptInput {
  std::string text;
  std::vector<int32_t> tokens;
  bool is_tokens = false;
};

struct CompletionRequest {
  GenerationParams params;
  std::vector<PromptInput> prompts;  // each gets its own n choices
};

// POST /tokenize: either a prompt or chat messages.
struct TokenizeRequest {
  std::string model;
  std::optional<std::string> prompt;
  std::vector<chat::ChatMessage> messages;
  bool add_special_tokens = true;
  bool add_generation_prompt = true;
};

struct DetokenizeRequest {
  std::string model;
  std::vector<int32_t> tokens;
};

std::optional<ApiError> ParseChatCompletionRequest(std::string_view body,
                                                   ChatCompletionRequest* out);
std::optional<ApiError> ParseCompletionRequest(std::string_view body, CompletionRequest* out);
std::optional<ApiError> ParseTokenizeRequest(std::string_view body, TokenizeRequest* out);
std::optional<ApiError> ParseDetokenizeRequest(std::string_view body, DetokenizeRequest* out);

}  // namespace loom::server::http
