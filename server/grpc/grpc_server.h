// The gRPC front end: Loom's own API (loom.v1.Generation and loom.v1.Pipelines, proto/loom/v1/),
// the KServe v2 / Triton inference protocol (inference.GRPCInferenceService), the standard health
// service (grpc.health.v1.Health: NOT_SERVING while the model loads and while draining) and
// server reflection, all on one port over the same Frontend (API key, limits) and engine queue
// as the HTTP API.
//
//   frontend::Frontend fe({.api_key = "secret"});
//   LOOM_ASSIGN_OR_RETURN(auto grpc, GrpcServer::Start({.host = "127.0.0.1", .port = 50051}, &fe));
//   std::printf("gRPC on port %d\n", grpc->port());   // health: NOT_SERVING
//   LOOM_RETURN_IF_ERROR(fe.SetEngine(engine.get(), {"SmolLM2-135M-Instruct"}));
//   grpc->SetServing(true);                             // health: SERVING
//   ...
//   fe.StartDraining(); grpc->SetServing(false);
//   grpc->Shutdown(std::chrono::seconds(30));          // waits for in-flight calls
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "server/frontend/frontend.h"
#include "server/pipelines/mapreduce_api.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace loom::server::grpc_api {

struct GrpcServerOptions {
  std::string host = "127.0.0.1";
  int port = 50051;                     // 0: any free port (see port())
  int max_threads = 1024;               // RPCs served at once; beyond: RESOURCE_EXHAUSTED
  int64_t max_message_bytes = 8 << 20;  // largest request message (like the HTTP body limit)
  // Called as each RPC ends: the method's full name and the gRPC status code it ended with.
  std::function<void(std::string_view method, int code)> on_rpc_done;
  absl::Status Validate() const;
};

class GrpcServer {
 public:
  // Binds and starts serving (health NOT_SERVING until SetServing(true)). `frontend` and
  // `mapreduce` (loom.v1.Pipelines; may be null: not served) must outlive the server.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const GrpcServerOptions& options, frontend::Frontend* frontend,
      pipelines::MapReduceApi* mapreduce = nullptr);
  ~GrpcServer();  // Shutdown() with no grace period if not yet called

  int port() const { return port_; }
  // Sets every health service name ("", loom.v1.Generation, loom.v1.Pipelines,
  // inference.GRPCInferenceService).
  void SetServing(bool serving);
  // Stops accepting calls and waits up to `grace` for running ones, then cancels them.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  struct Services;
  GrpcServer() = default;

  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace loom::server::grpc_api
