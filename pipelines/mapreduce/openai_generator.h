// A Generator over any OpenAI-compatible server (another Loom replica, vLLM): POST
// {base_url}/chat/completions for Generate, POST {server}/tokenize (vLLM's and Loom's shape:
// {"model", "prompt", "add_special_tokens": false} -> {"count"}) for CountTokens, and the context
// length from GET {base_url}/models (`max_model_len`). The server root is base_url without a
// trailing /v1. A grammar goes in the request fields named by `grammar_fields` (vLLM's
// `guided_grammar` by default, which Loom accepts too). HTTP failures become absl statuses that
// carry the server's error message (400 -> InvalidArgument, 401 -> Unauthenticated, 404 ->
// NotFound, 408 -> DeadlineExceeded, 413/429 -> ResourceExhausted, 5xx/no connection ->
// Unavailable). Thread-safe: each call opens its own connection.
//
//   OpenAiGeneratorOptions o;
//   o.base_url = "http://127.0.0.1:8000/v1";
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<OpenAiGenerator> gen, OpenAiGenerator::Create(o));
//   LOOM_ASSIGN_OR_RETURN(GenerateResult r, gen->Generate(call));
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "pipelines/mapreduce/generator.h"

namespace loom::pipelines::mapreduce {

struct OpenAiGeneratorOptions {
  std::string base_url = "http://127.0.0.1:8080/v1";  // http:// or https://
  std::string api_key;     // sent as "Authorization: Bearer <key>" when set
  std::string model;       // empty: the first model GET /models lists
  double timeout_s = 600;  // read and write timeout per request
  double connect_timeout_s = 10;
  int context_length = 0;  // 0: max_model_len from GET /models (or from /tokenize)
  // Request fields that carry call.grammar. vLLM reads `guided_grammar`; Loom reads either
  // `guided_grammar` or `grammar` but rejects a request that sets both.
  std::vector<std::string> grammar_fields = {"guided_grammar"};
};

class OpenAiGenerator : public Generator {
 public:
  // Asks the server for its model and context length. InvalidArgument for a malformed base_url;
  // Unavailable when the server cannot be reached; FailedPrecondition when it reports no context
  // length and options.context_length is 0.
  static absl::StatusOr<std::unique_ptr<OpenAiGenerator>> Create(OpenAiGeneratorOptions options);

  // call.is_cancelled is polled every 50 ms; true closes the connection (Cancelled).
  absl::StatusOr<GenerateResult> Generate(const GenerateCall& call) override;
  absl::StatusOr<int> CountTokens(std::string_view text) override;
  absl::StatusOr<int> CountPromptTokens(const std::vector<chat::ChatMessage>& messages) override;
  int context_length() const override { return context_length_; }
  std::string name() const override { return options_.model; }

 private:
  explicit OpenAiGenerator(OpenAiGeneratorOptions options) : options_(std::move(options)) {}
  // Sends one request ("GET" or "POST" with a JSON body) to `path` under scheme_host_port_ and
  // returns the body of a 2xx answer; other answers and transport failures become statuses.
  absl::StatusOr<std::string> Send(const std::string& method, const std::string& path,
                                   const std::string& body,
                                   const std::function<bool()>& is_cancelled) const;

  OpenAiGeneratorOptions options_;
  std::string scheme_host_port_;  // "http://host:port"
  std::string api_prefix_;        // "/v1"
  std::string root_prefix_;       // api_prefix_ without a trailing "/v1"
  int context_length_ = 0;
};

}  // namespace loom::pipelines::mapreduce
