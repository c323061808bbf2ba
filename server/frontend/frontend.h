// The protocol-neutral half of Loom's API servers: what the OpenAI HTTP API (server/http) and the
// gRPC APIs (server/grpc) share, so both give the same answers from the same engine queue. It
// checks the API key, the lifecycle (loading / draining), the model name, prompt and max_tokens
// limits and the concurrent-request limit; renders chat prompts with the model's template; and
// submits one engine request per choice. Front ends parse their wire format into the plain
// structs here and format the engine's token events back; errors come out as absl::Status whose
// code the front end maps (InvalidArgument -> 400 / INVALID_ARGUMENT, ...), with OpenAI's `param`
// and `code` attached as payloads (StatusParam / StatusErrorCode).
//
//   Frontend fe({.api_key = "secret", .max_concurrent_requests = 64});
//   LOOM_RETURN_IF_ERROR(fe.SetEngine(engine.get(), {"SmolLM2-135M-Instruct"}));
//   LOOM_RETURN_IF_ERROR(fe.Authenticate(authorization_header));
//   LOOM_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, fe.ChatPrompt(messages));
//   LOOM_ASSIGN_OR_RETURN(Submission sub, fe.Submit({prompt}, params, "messages"));
//   for (auto& stream : sub.streams) { ... stream->Next(&ev) ... }
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/chat_template/chat_template.h"
#include "engine/grammar/grammar.h"
#include "engine/sampler/sampler.h"
#include "engine/serving/engine.h"

namespace loom::server::frontend {

// A status carrying OpenAI's error `param` and `code` (either may be empty).
absl::Status ApiStatus(absl::StatusCode code, std::string_view message, std::string_view param = "",
                       std::string_view error_code = "");
std::string StatusParam(const absl::Status& status);
std::string StatusErrorCode(const absl::Status& status);

// Limits the protocol parsers enforce.
inline constexpr int kMaxChoices = 32;      // n
inline constexpr int kMaxTopLogprobs = 20;  // top_logprobs / logprobs
inline constexpr int kMaxStopStrings = 16;

// Structured output: what the generated text must match. The Frontend compiles it to a grammar
// (engine/grammar) that masks the logits at every step.
struct OutputConstraint {
  enum class Kind { kNone, kJsonObject, kJsonSchema, kGrammar };
  Kind kind = Kind::kNone;
  std::string text;   // kJsonSchema: the schema as JSON text; kGrammar: GBNF (root rule `root`)
  std::string param;  // the request field it came from, named in errors
};

// The generation settings every API shares (OpenAI's names and defaults).
struct GenerationParams {
  std::string model;                  // empty: not given
  std::optional<int64_t> max_tokens;  // unset: up to the context
  sampler::SamplingParams sampling;   // OpenAI defaults: temperature 1, top_p 1
  std::vector<std::string> stop;
  int n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int logprobs = -1;           // -1: none; else the number of alternatives per token
  bool ignore_eos = false;     // vLLM's extension
  OutputConstraint constraint;
};

struct FrontendOptions {
  std::string api_key;               // empty: no authentication
  int max_prompt_tokens = 0;         // 0: up to the context length
  int max_concurrent_requests = 64;  // generation requests in flight (all front ends); beyond: 429
  double request_timeout_s = 0;      // 0: none; else requests end with finish_reason "timeout"
};

// One accepted generation request: a stream per choice, prompt-major (prompt p, choice j is
// streams[p * n + j]). Holds a concurrency slot until destroyed; destroying it cancels whatever
// is still running.
struct Submission {
  Submission() = default;
  Submission(Submission&&) = default;
  Submission& operator=(Submission&&) = default;
  ~Submission();
  void CancelAll();

  std::vector<std::shared_ptr<engine::RequestStream>> streams;
  int prompt_tokens = 0;  // summed over the prompts, each counted once
  std::shared_ptr<void> slot;
};

class Frontend {
 public:
  explicit Frontend(FrontendOptions options);

  // The model is ready. `engine` must outlive every request. `model_names`: the served id first,
  // then aliases clients may use; "default" and "" are always accepted.
  absl::Status SetEngine(engine::Engine* engine, std::vector<std::string> model_names);
  // Shutting down: new requests are refused with Unavailable.
  void StartDraining() { draining_.store(true); }

  bool ready() const { return engine_.load() != nullptr && !draining_.load(); }
  bool draining() const { return draining_.load(); }
  engine::Engine* engine() const { return engine_.load(); }
  // Valid once SetEngine() succeeded.
  const std::vector<std::string>& model_names() const { return model_names_; }
  int64_t created() const { return created_; }
  int ContextLength() const;
  int in_flight() const { return in_flight_->load(); }
  const FrontendOptions& options() const { return options_; }

  // `authorization` is the Authorization header / metadata value ("Bearer <key>").
  // Unauthenticated when a key is configured and this one is missing or wrong.
  absl::Status Authenticate(std::string_view authorization) const;
  // Unavailable while loading or draining.
  absl::Status CheckServing() const;
  // NotFound (param "model", code "model_not_found") for a name this server does not serve.
  absl::Status CheckModel(std::string_view model) const;
  // The chat rendered with the model's template (InvalidArgument when it cannot be).
  absl::StatusOr<std::string> RenderChat(const std::vector<chat::ChatMessage>& messages,
                                         bool add_generation_prompt) const;
  // Rendered and tokenized, ready to submit.
  absl::StatusOr<std::vector<int32_t>> ChatPrompt(
      const std::vector<chat::ChatMessage>& messages) const;
  // InvalidArgument naming `param` when a token id is outside the vocabulary.
  absl::Status CheckTokenIds(std::span<const int32_t> tokens, std::string_view param) const;

  // The constraint compiled (Grammar::Parse returns recently compiled texts from its cache).
  // InvalidArgument naming constraint.param for a schema or grammar that does not compile.
  absl::StatusOr<std::shared_ptr<const grammar::Grammar>> CompileConstraint(
      const OutputConstraint& constraint);

  // Checks every prompt against the limits (max_prompt_tokens, the context, max_tokens cap),
  // takes a concurrency slot (ResourceExhausted beyond the limit) and submits params.n engine
  // requests per prompt. `prompt_param` names the field errors point at. `deadline`, when set,
  // tightens the configured request timeout (e.g. a gRPC deadline).
  absl::StatusOr<Submission> Submit(
      const std::vector<std::vector<int32_t>>& prompts, const GenerationParams& params,
      std::string_view prompt_param,
      std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

 private:
  const FrontendOptions options_;
  std::atomic<engine::Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  // Shared with the slots of live submissions, which may outlive this object.
  std::shared_ptr<std::atomic<int>> in_flight_ = std::make_shared<std::atomic<int>>(0);
  // Set once by SetEngine() before engine_ is published.
  std::optional<chat::ChatTemplate> chat_template_;
  std::vector<std::string> model_names_;
  int64_t created_ = 0;
};

}  // namespace loom::server::frontend
