// The narrow model interface the LLM×MapReduce pipeline (pipelines/mapreduce) calls: one chat
// completion, a token count, and the context length. Implementations: EngineGenerator (a local
// engine::Engine, engine_generator.h) and OpenAiGenerator (any OpenAI-compatible server: another
// Loom, vLLM; openai_generator.h). Every method is thread-safe: the pipeline calls Generate from
// several threads at once so that the server's continuous batching runs the calls together.
//
//   GenerateCall call;
//   call.messages = {{"user", "Name a colour."}};
//   call.max_tokens = 16;
//   call.grammar = R"(root ::= "red" | "green" | "blue")";
//   LOOM_ASSIGN_OR_RETURN(GenerateResult r, generator.Generate(call));
//   LOOM_ASSIGN_OR_RETURN(int n, generator.CountTokens(r.text));
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"

namespace loom::pipelines::mapreduce {

struct GenerateCall {
  std::vector<chat::ChatMessage> messages;
  int max_tokens = 300;
  float temperature = 0;  // 0: greedy
  uint64_t seed = 0;
  std::string grammar;  // GBNF (engine/grammar's dialect); empty: unconstrained
  // Polled while the call runs (every ~50 ms where the implementation can stop early); true
  // ends the call with Cancelled. Empty: never.
  std::function<bool()> is_cancelled;
};

struct GenerateResult {
  std::string text;
  int prompt_tokens = 0;
  int cached_prompt_tokens = 0;  // of prompt_tokens, read from a prefix cache
  int completion_tokens = 0;
  std::string finish_reason;  // "stop" or "length"
};

class Generator {
 public:
  virtual ~Generator();

  virtual absl::StatusOr<GenerateResult> Generate(const GenerateCall& call) = 0;
  // Tokens in `text` alone, without special tokens (BOS) and without the chat template.
  virtual absl::StatusOr<int> CountTokens(std::string_view text) = 0;
  // Tokens of the whole prompt Generate would send for `messages` (chat template, special tokens,
  // generation prompt). The default adds a rough per-message allowance to CountTokens of each
  // content; both implementations here count exactly.
  virtual absl::StatusOr<int> CountPromptTokens(const std::vector<chat::ChatMessage>& messages);
  // Prompt + completion tokens one call may use.
  virtual int context_length() const = 0;
  virtual std::string name() const = 0;
};

}  // namespace loom::pipelines::mapreduce
