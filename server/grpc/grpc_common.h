// Pieces every gRPC service of the front end shares: the call's admission (API key from the
// `authorization` metadata, lifecycle), absl -> gRPC status mapping, the call deadline as the
// engine's, and the loop that reads a submission's token events while watching for the client
// cancelling.
//
//   if (grpc::Status s = Admit(*fe, ctx); !s.ok()) return s;
//   absl::StatusOr<frontend::Submission> sub = fe->Submit(prompts, params, "messages",
//   Deadline(ctx)); if (!sub.ok()) return ToGrpc(sub.status()); return Finish(Pump(*sub, ctx,
//   [&](size_t i, const engine::StreamEvent& ev) { ...; return true; }));
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "engine/serving/engine.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"
#include "server/frontend/frontend.h"

namespace loom::server::grpc_api {

// The absl status as gRPC's (same code numbers; the message is kept).
grpc::Status ToGrpc(const absl::Status& status);
// The call's `authorization` metadata ("" when absent).
std::string_view Authorization(const grpc::ServerContext* ctx);
// Authentication (metadata `authorization: Bearer <key>`), then CheckServing().
grpc::Status Admit(const frontend::Frontend& fe, const grpc::ServerContext* ctx);
// The call's deadline on the steady clock; nullopt when it has none.
std::optional<std::chrono::steady_clock::time_point> Deadline(const grpc::ServerContext* ctx);

// How the choices of a submission ended.
struct PumpResult {
  absl::Status status;  // OK when every choice ended with "stop" or "length"
  std::vector<std::string> finish_reasons;
  int completion_tokens = 0;  // summed over choices
  int cached_tokens = 0;      // largest over choices
};

// Reads every choice's events in arrival order and hands each to `on_event(choice, event)`
// until all have finished. Cancels the rest and returns Cancelled when the client cancels (or
// its deadline passes) or when `on_event` returns false (the write failed). A choice that ended
// with "timeout" gives DeadlineExceeded; "cancelled" (server draining) Unavailable; "error" its
// status.
PumpResult Pump(frontend::Submission& sub, grpc::ServerContext* ctx,
                const std::function<bool(size_t, const engine::StreamEvent&)>& on_event);

}  // namespace loom::server::grpc_api
