// The OpenAI-compatible API on top of engine::Engine: /v1/chat/completions, /v1/completions
// (streamed as server-sent events or whole), /v1/models, /tokenize, /detokenize, health routes
// and /v1/engine/stats. Handlers render and tokenize prompts, submit engine::Requests and format
// the token events as OpenAI's JSON; the HTTP transport is whatever HttpServer wraps.
//
//   frontend::Frontend fe({.api_key = "secret", .max_concurrent_requests = 64});
//   OpenAiServer api(&fe);              // the checks and limits live in the shared Frontend
//   auto http = HttpServer::Create({.error_formatter = OpenAiServer::FormatError});
//   api.RegisterRoutes(*http);          // /health answers 503 until the engine is set
//   LOOM_ASSIGN_OR_RETURN(int port, http->Bind("127.0.0.1", 8080));
//   std::thread t([&] { http->Serve(); });
//   LOOM_RETURN_IF_ERROR(fe.SetEngine(engine.get(), {"SmolLM2-135M-Instruct"}));
//   ...
//   fe.StartDraining();                 // new requests get 503; in-flight ones finish
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
#include "server/frontend/frontend.h"
#include "server/http/http_server.h"
#include "server/http/openai_protocol.h"

namespace loom::server::http {

class OpenAiServer {
 public:
  // `frontend` must outlive this object (stop the HttpServer first).
  explicit OpenAiServer(frontend::Frontend* frontend);
  ~OpenAiServer();

  // Adds every route. Safe to serve before the frontend has an engine: generation routes answer
  // 503 until then, and again once it is draining.
  void RegisterRoutes(HttpServer& http);

  // OpenAI's error body for the transport's own errors (404, 405, 413, ...).
  static void FormatError(int status, std::string_view message, HttpResponse* res);
  // A frontend status as OpenAI's error (InvalidArgument -> 400, Unauthenticated -> 401, ...).
  static ApiError FromStatus(const absl::Status& status);

 private:
  struct Job;

  void HandleChat(const HttpRequest& req, HttpResponse* res);
  void HandleCompletions(const HttpRequest& req, HttpResponse* res);
  void HandleModels(const HttpRequest& req, HttpResponse* res);
  void HandleTokenize(const HttpRequest& req, HttpResponse* res);
  void HandleDetokenize(const HttpRequest& req, HttpResponse* res);
  void HandleStats(const HttpRequest& req, HttpResponse* res);
  void HandleHealth(const HttpRequest& req, HttpResponse* res, bool readiness);

  // Auth and lifecycle checks shared by API routes; false after filling an error response.
  bool Admit(const HttpRequest& req, HttpResponse* res);
  // Submits every choice and answers (whole or as a stream).
  // `tools`: a tool-calling chat (the answers are parsed into tool_calls).
  void Generate(const HttpRequest& req, HttpResponse* res, bool chat,
                const GenerationParams& params, std::vector<std::vector<int32_t>> prompts,
                bool tools);
  void Collect(const HttpRequest& req, Job& job, HttpResponse* res);
  void Stream(Job& job, StreamWriter& w);

  frontend::Frontend* const fe_;
};

}  // namespace loom::server::http
