// The LLM×MapReduce pipeline (pipelines/mapreduce) as the server exposes it: one MapReduceApi
// shared by the HTTP route POST /v1/pipelines/mapreduce (JSON or a multipart file upload; whole
// answer or server-sent progress events) and the gRPC method loom.v1.Pipelines/MapReduce, both
// over the server's engine (all map calls join its continuous batch) and its Frontend (API key,
// lifecycle, model name).
//
//   MapReduceApi mr(&frontend, {.max_document_bytes = 4 << 20});
//   mr.RegisterRoutes(*http);                      // POST /v1/pipelines/mapreduce
//   PipelinesService grpc_service(&mr);            // server/grpc/pipelines_service.h
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "pipelines/mapreduce/engine_generator.h"
#include "pipelines/mapreduce/mapreduce.h"
#include "server/frontend/frontend.h"
#include "server/http/http_server.h"

namespace loom::server::pipelines {

struct MapReduceApiOptions {
  int64_t max_document_bytes = 4 << 20;  // larger documents: InvalidArgument (HTTP 413)
  int max_parallel = 16;                 // concurrent map / collapse calls per request
  std::string prompts_dir = "config/mapreduce";
  absl::Status Validate() const;
};

// One request, protocol-neutral.
struct MapReduceCall {
  std::string model;  // empty or "default"
  std::string document;
  std::string question;
  std::string task = "qa";
  int context_window = 4096;
  int max_tokens = 300;
  int max_collapse_rounds = 5;  // more rounds needed: FailedPrecondition (HTTP 422)
  float temperature = 0;
  std::string evidence = "answered";  // MapReduceOptions::evidence
  std::string values = "auto";        // MapReduceOptions::values
};

class MapReduceApi {
 public:
  MapReduceApi(frontend::Frontend* fe, MapReduceApiOptions options)
      : fe_(fe), options_(std::move(options)) {}

  // Runs the pipeline (blocking). Errors: the Frontend's (model), InvalidArgument for bad input
  // (empty, binary or oversized document, unknown task, ...), FailedPrecondition when the
  // results cannot be collapsed, Cancelled when `cancelled` turns true.
  absl::StatusOr<loom::pipelines::mapreduce::MapReduceResult> Run(
      const MapReduceCall& call,
      const std::function<void(const loom::pipelines::mapreduce::ProgressEvent&)>& on_progress,
      const std::atomic<bool>* cancelled);

  // POST /v1/pipelines/mapreduce.
  void RegisterRoutes(http::HttpServer& http);

  const MapReduceApiOptions& options() const { return options_; }
  frontend::Frontend& frontend() const { return *fe_; }

 private:
  void Handle(const http::HttpRequest& req, http::HttpResponse* res);
  absl::StatusOr<loom::pipelines::mapreduce::Generator*> GetGenerator();

  frontend::Frontend* const fe_;
  const MapReduceApiOptions options_;
  std::mutex mu_;
  std::unique_ptr<loom::pipelines::mapreduce::EngineGenerator> generator_ ABSL_GUARDED_BY(mu_);
};

}  // namespace loom::server::pipelines
