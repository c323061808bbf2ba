// Prometheus metrics for the server, with vLLM's metric names and meanings under a `loom_` prefix
// (vLLM writes `vllm:`; promtool rejects ':' in exported names, which Prometheus reserves for
// recording rules, so Loom uses '_'). Gauges and token counters come from Engine::Stats() at scrape
// time; latency histograms and finish reasons from Engine::SetOnFinished.
//
//   loom::server::ServerMetrics metrics(engine->model_name());
//   engine->SetOnFinished([&](const loom::engine::RequestTimings& t) { metrics.OnFinished(t); });
//   std::string body = metrics.Render(engine->Stats());  // text exposition format 0.0.4
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "engine/serving/engine.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace loom::server {

class ServerMetrics {
 public:
  explicit ServerMetrics(const std::string& model_name);

  // Records one finished request (any thread).
  void OnFinished(const engine::RequestTimings& t);
  // Records one finished gRPC call: its full method name and status code (any thread).
  void OnGrpcCall(std::string_view method, int code);
  // Brings gauges and counters up to `stats` and serializes every metric.
  std::string Render(const engine::EngineStats& stats);

 private:
  prometheus::Counter& SuccessCounter(const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::mutex mu_;
  const std::string model_name_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_usage_;
  prometheus::Gauge* kv_retrieval_bytes_;
  prometheus::Gauge* kv_streaming_bytes_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Counter* prefix_queries_;
  prometheus::Counter* prefix_hits_;
  prometheus::Counter* preemptions_;
  prometheus::Family<prometheus::Counter>* success_;
  prometheus::Family<prometheus::Counter>* grpc_calls_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Histogram* queue_;
  prometheus::Histogram* prompt_hist_;
  prometheus::Histogram* generation_hist_;
  engine::EngineStats last_ ABSL_GUARDED_BY(mu_);  // totals already added to the counters
};

}  // namespace loom::server
