// The `loom serve` subcommand: the OpenAI-compatible HTTP server (server/http/) and the gRPC
// server (server/grpc/) on one serving engine. Listens first (GET /health answers 503 while the
// model loads), then serves until SIGTERM or SIGINT, which stop accepting, drain in-flight requests
// (--drain-timeout-s) and exit 0.
//
//   loom serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --port 8080 --api-key secret
//   loom serve --config config/serve.json --port 9000   # flags override the file
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/duo_options.h"

namespace loom::server {

// Everything `loom serve` is configured with, one struct per module.
struct ServeOptions {
  struct Http {
    std::string host = "127.0.0.1";
    int port = 8080;
    int threads = 1024;  // connections served at once (threads start on demand)
    int64_t max_body_bytes = 8 << 20;
    std::string api_key;                // empty: no authentication
    int max_concurrent_requests = 256;  // generation requests in flight; beyond: 429
    int max_prompt_tokens = 0;          // 0: the context length
    double request_timeout_s = 600;     // 0: none
    double drain_timeout_s = 30;
  } http;
  struct Grpc {
    int port = 50051;                     // 0: any free port; -1: no gRPC server
    int threads = 1024;                   // calls served at once
    int64_t max_message_bytes = 8 << 20;  // largest request message
  } grpc;
  struct Pipelines {
    int64_t mapreduce_max_document_bytes = 4 << 20;  // POST /v1/pipelines/mapreduce documents
    int mapreduce_max_parallel = 16;                 // concurrent map calls per request
  } pipelines;
  struct Engine {
    std::string model = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
    std::string served_model_name;  // empty: the file name without .gguf
    std::string backend = "cpu";
    int threads = 0;        // 0: one per core
    int max_model_len = 0;  // 0: the model's context length
    int max_num_seqs = 16;
    int max_batched_tokens = 256;
    int max_waiting = 256;
    int64_t kv_cache_mb = 1024;
    int max_tokens_cap = 4096;
    int load_delay_ms = 0;  // wait before loading (to test readiness probes)
    // DuoAttention (docs/duo_attention.md): --duo-pattern (off when empty), --duo-sparsity.
    DuoOptions duo;
  } engine;
};

// Parses `loom serve` flags (and the --config JSON file they name, which the flags override).
absl::StatusOr<ServeOptions> ParseServeArgs(const std::vector<std::string>& args);

// argv without the program name and subcommand. Returns the process exit code.
int RunServe(const std::vector<std::string>& args);

// The flags, for `loom --help`.
extern const char kServeUsage[];

}  // namespace loom::server
