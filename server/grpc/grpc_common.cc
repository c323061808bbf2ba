#include "server/grpc/grpc_common.h"

#include <algorithm>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace loom::server::grpc_api {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kPoll{20};  // how often a waiting call checks for cancellation

}  // namespace

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

std::string_view Authorization(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? std::string_view()
                        : std::string_view(it->second.data(), it->second.size());
}

grpc::Status Admit(const frontend::Frontend& fe, const grpc::ServerContext* ctx) {
  if (absl::Status s = fe.Authenticate(Authorization(ctx)); !s.ok()) return ToGrpc(s);
  return ToGrpc(fe.CheckServing());
}

std::optional<std::chrono::steady_clock::time_point> Deadline(const grpc::ServerContext* ctx) {
  const auto deadline = ctx->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return std::nullopt;
  const auto left = deadline - std::chrono::system_clock::now();
  if (left > std::chrono::hours(24 * 365)) return std::nullopt;  // effectively none
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(left);
}

PumpResult Pump(frontend::Submission& sub, grpc::ServerContext* ctx,
                const std::function<bool(size_t, const engine::StreamEvent&)>& on_event) {
  PumpResult r;
  const size_t n = sub.streams.size();
  r.finish_reasons.assign(n, "");
  std::vector<bool> done(n, false);
  size_t left = n, next = 0;
  engine::StreamEvent ev;
  auto handle = [&](size_t i) -> bool {
    if (ev.finished) {
      done[i] = true;
      --left;
      r.finish_reasons[i] = ev.finish_reason;
      r.completion_tokens += ev.usage.completion_tokens;
      r.cached_tokens = std::max(r.cached_tokens, ev.usage.cached_prompt_tokens);
      if (r.status.ok()) {
        if (ev.finish_reason == "timeout") {
          r.status = absl::DeadlineExceededError("the request's deadline passed");
        } else if (ev.finish_reason == "cancelled") {
          r.status = absl::UnavailableError("the request was cancelled (server shutting down)");
        } else if (ev.finish_reason == "error") {
          r.status = ev.status.ok() ? absl::InternalError("generation failed") : ev.status;
        }
      }
    }
    return on_event(i, ev);
  };
  auto cancelled = [&](const char* why) {
    sub.CancelAll();
    r.status = absl::CancelledError(why);
    return r;
  };
  while (left > 0) {
    bool got = false, timed_out = false;
    // One pass without waiting, round robin, so no choice starves.
    for (size_t k = 0; k < n && !got; ++k) {
      const size_t i = (next + k) % n;
      if (done[i]) continue;
      if (sub.streams[i]->NextFor(&ev, milliseconds(0), &timed_out)) {
        next = i + 1;
        got = true;
        if (!handle(i)) return cancelled("the client went away");
      } else if (!timed_out) {
        done[i] = true;  // ended without a final event: should not happen
        --left;
        r.finish_reasons[i] = "error";
        if (r.status.ok()) r.status = absl::InternalError("the engine stream ended early");
      }
    }
    if (got || left == 0) continue;
    if (ctx->IsCancelled()) return cancelled("the call was cancelled or its deadline passed");
    for (size_t i = 0; i < n; ++i) {  // wait on the first unfinished choice
      if (done[i]) continue;
      if (sub.streams[i]->NextFor(&ev, kPoll, &timed_out)) {
        if (!handle(i)) return cancelled("the client went away");
      }
      break;
    }
  }
  if (!r.status.ok()) sub.CancelAll();
  return r;
}

}  // namespace loom::server::grpc_api
