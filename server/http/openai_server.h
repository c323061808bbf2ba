// The OpenAI-compatible API on top of engine::Engine: /v1/chat/completions, /v1/completions
// (streamed as server-sent events or whole), /v1/models, /tokenize, /detokenize, health routes
// and /v1/engine/stats. Handlers render and tokenize prompts, submit engine::Requests and format
// the token events as OpenAI's JSON; the HTTP transport is whatever HttpServer wraps.
//
//   OpenAiServer api({.api_key = "secret", .max_concurrent_requests = 64});
//   auto http = HttpServer::Create({.error_formatter = OpenAiServer::FormatError});
//   api.RegisterRoutes(*http);          // /health answers 503 until the engine is set
//   LOOM_ASSIGN_OR_RETURN(int port, http->Bind("127.0.0.1", 8080));
//   std::thread t([&] { http->Serve(); });
//   LOOM_RETURN_IF_ERROR(api.SetEngine(engine.get(), {"SmolLM2-135M-Instruct"}));
//   ...
//   api.StartDraining();                // new requests get 503; in-flight ones finish
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/chat_template/chat_template.h"
#include "engine/serving/engine.h"
#include "server/http/http_server.h"
#include "server/http/openai_protocol.h"

namespace loom::server::http {

struct OpenAiServerOptions {
  std::string api_key;               // empty: no authentication
  int max_prompt_tokens = 0;         // 0: up to the context length
  int max_concurrent_requests = 64;  // generation requests in flight; beyond: 429
  double request_timeout_s = 0;      // 0: none; else requests end with 408 after this long
};

class OpenAiServer {
 public:
  explicit OpenAiServer(OpenAiServerOptions options);
  ~OpenAiServer();

  // Adds every route. Safe to serve before SetEngine(): generation routes answer 503 until then.
  void RegisterRoutes(HttpServer& http);

  // The model is ready. `engine` must outlive every request (stop the HttpServer first).
  // `model_names`: the served id first, then aliases clients may use; "default" is always accepted.
  absl::Status SetEngine(engine::Engine* engine, std::vector<std::string> model_names);

  // Shutting down: health turns 503 and new API requests are refused with 503.
  void StartDraining();

  // OpenAI's error body for the transport's own errors (404, 405, 413, ...).
  static void FormatError(int status, std::string_view message, HttpResponse* res);

  int in_flight() const { return in_flight_.load(); }

 private:
  struct Job;
  struct Prompt;
  class Slot;

  void HandleChat(const HttpRequest& req, HttpResponse* res);
  void HandleCompletions(const HttpRequest& req, HttpResponse* res);
  void HandleModels(const HttpRequest& req, HttpResponse* res);
  void HandleTokenize(const HttpRequest& req, HttpResponse* res);
  void HandleDetokenize(const HttpRequest& req, HttpResponse* res);
  void HandleStats(const HttpRequest& req, HttpResponse* res);
  void HandleHealth(const HttpRequest& req, HttpResponse* res, bool readiness);

  // Auth and lifecycle checks shared by API routes; false after filling an error response.
  bool Admit(const HttpRequest& req, HttpResponse* res);
  std::optional<ApiError> CheckModel(const std::string& model) const;
  absl::StatusOr<std::string> RenderChat(const std::vector<chat::ChatMessage>& messages,
                                         bool add_generation_prompt) const;
  // Submits every choice and answers (whole or as a stream).
  void Generate(const HttpRequest& req, HttpResponse* res, bool chat,
                const GenerationParams& params, std::vector<Prompt> prompts);
  void Collect(const HttpRequest& req, Job& job, HttpResponse* res);
  void Stream(Job& job, StreamWriter& w);
  int ContextLength() const;

  const OpenAiServerOptions options_;
  std::atomic<engine::Engine*> engine_{nullptr};
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
  // Set once by SetEngine() before engine_ is published.
  std::optional<chat::ChatTemplate> chat_template_;
  std::vector<std::string> model_names_;
  int64_t created_ = 0;
};

}  // namespace loom::server::http
