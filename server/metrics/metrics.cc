#include "server/metrics/metrics.h"

#include <sstream>

#include "prometheus/text_serializer.h"

namespace loom::server {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// vLLM's bucket boundaries for the same histograms.
const Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25,  0.5,   0.75,
    1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const Histogram::BucketBoundaries kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                 0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                                 7.5,  10.0,  20.0, 40.0,  80.0};
const Histogram::BucketBoundaries kLatencyBuckets = {
    0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,   10.0,   15.0,  20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
const Histogram::BucketBoundaries kTokenBuckets = {1,   2,   5,    10,   20,   50,   100,
                                                   200, 500, 1000, 2000, 5000, 10000};

}  // namespace

ServerMetrics::ServerMetrics(const std::string& model_name)
    : model_name_(model_name), registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels labels = {{"model_name", model_name_}};
  auto& r = *registry_;
  running_ = &BuildGauge()
                  .Name("loom_num_requests_running")
                  .Help("Number of requests in model execution batches.")
                  .Register(r)
                  .Add(labels);
  waiting_ = &BuildGauge()
                  .Name("loom_num_requests_waiting")
                  .Help("Number of requests waiting to be processed.")
                  .Register(r)
                  .Add(labels);
  kv_usage_ = &BuildGauge()
                   .Name("loom_kv_cache_usage_perc")
                   .Help("KV-cache usage. 1 means 100 percent usage.")
                   .Register(r)
                   .Add(labels);
  kv_retrieval_bytes_ = &BuildGauge()
                             .Name("loom_kv_cache_retrieval_bytes")
                             .Help(
                                 "KV-cache bytes of live sequences in paged blocks (every head, "
                                 "or DuoAttention's retrieval heads).")
                             .Register(r)
                             .Add(labels);
  kv_streaming_bytes_ = &BuildGauge()
                             .Name("loom_kv_cache_streaming_bytes")
                             .Help(
                                 "KV-cache bytes of live sequences' DuoAttention streaming heads "
                                 "(fixed sink + recent caches).")
                             .Register(r)
                             .Add(labels);
  prompt_tokens_ = &BuildCounter()
                        .Name("loom_prompt_tokens_total")
                        .Help("Number of prefill tokens processed.")
                        .Register(r)
                        .Add(labels);
  generation_tokens_ = &BuildCounter()
                            .Name("loom_generation_tokens_total")
                            .Help("Number of generation tokens processed.")
                            .Register(r)
                            .Add(labels);
  prefix_queries_ = &BuildCounter()
                         .Name("loom_prefix_cache_queries_total")
                         .Help("Prefix cache queries, in terms of number of queried tokens.")
                         .Register(r)
                         .Add(labels);
  prefix_hits_ = &BuildCounter()
                      .Name("loom_prefix_cache_hits_total")
                      .Help("Prefix cache hits, in terms of number of cached tokens.")
                      .Register(r)
                      .Add(labels);
  preemptions_ = &BuildCounter()
                      .Name("loom_num_preemptions_total")
                      .Help("Cumulative number of preemptions from the engine.")
                      .Register(r)
                      .Add(labels);
  success_ = &BuildCounter()
                  .Name("loom_request_success_total")
                  .Help("Count of successfully processed requests.")
                  .Register(r);
  grpc_calls_ = &BuildCounter()
                     .Name("loom_grpc_requests_total")
                     .Help("gRPC calls finished, by method and status code.")
                     .Register(r);
  ttft_ = &BuildHistogram()
               .Name("loom_time_to_first_token_seconds")
               .Help("Histogram of time to first token in seconds.")
               .Register(r)
               .Add(labels, kTtftBuckets);
  itl_ = &BuildHistogram()
              .Name("loom_inter_token_latency_seconds")
              .Help("Histogram of inter-token latency in seconds.")
              .Register(r)
              .Add(labels, kItlBuckets);
  e2e_ = &BuildHistogram()
              .Name("loom_e2e_request_latency_seconds")
              .Help("Histogram of e2e request latency in seconds.")
              .Register(r)
              .Add(labels, kLatencyBuckets);
  queue_ = &BuildHistogram()
                .Name("loom_request_queue_time_seconds")
                .Help("Histogram of time spent in WAITING phase for request.")
                .Register(r)
                .Add(labels, kLatencyBuckets);
  prompt_hist_ = &BuildHistogram()
                      .Name("loom_request_prompt_tokens")
                      .Help("Number of prefill tokens processed.")
                      .Register(r)
                      .Add(labels, kTokenBuckets);
  generation_hist_ = &BuildHistogram()
                          .Name("loom_request_generation_tokens")
                          .Help("Number of generation tokens processed.")
                          .Register(r)
                          .Add(labels, kTokenBuckets);
  std::lock_guard<std::mutex> lock(mu_);
  for (const char* reason : {"stop", "length"}) SuccessCounter(reason);  // visible from the start
}

prometheus::Counter& ServerMetrics::SuccessCounter(const std::string& reason) {
  return success_->Add({{"model_name", model_name_}, {"finished_reason", reason}});
}

void ServerMetrics::OnFinished(const engine::RequestTimings& t) {
  std::lock_guard<std::mutex> lock(mu_);
  SuccessCounter(t.finish_reason).Increment();
  e2e_->Observe(t.e2e_seconds);
  queue_->Observe(t.queue_seconds);
  prompt_hist_->Observe(t.prompt_tokens);
  generation_hist_->Observe(t.completion_tokens);
  if (t.completion_tokens > 0) ttft_->Observe(t.ttft_seconds);
  for (double s : t.inter_token_seconds) itl_->Observe(s);
}

void ServerMetrics::OnGrpcCall(std::string_view method, int code) {
  static constexpr const char* kCodes[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const std::string name = code >= 0 && code <= 16 ? kCodes[code] : std::to_string(code);
  std::lock_guard<std::mutex> lock(mu_);
  grpc_calls_->Add({{"model_name", model_name_}, {"method", std::string(method)}, {"code", name}})
      .Increment();
}

std::string ServerMetrics::Render(const engine::EngineStats& s) {
  std::lock_guard<std::mutex> lock(mu_);
  running_->Set(s.num_running);
  waiting_->Set(s.num_waiting);
  kv_usage_->Set(s.kv_cache_usage);
  kv_retrieval_bytes_->Set(static_cast<double>(s.kv_retrieval_bytes));
  kv_streaming_bytes_->Set(static_cast<double>(s.kv_streaming_bytes));
  // Engine totals only grow; add what is new since the last scrape.
  prompt_tokens_->Increment(static_cast<double>(s.prompt_tokens_total - last_.prompt_tokens_total));
  generation_tokens_->Increment(
      static_cast<double>(s.generation_tokens_total - last_.generation_tokens_total));
  prefix_queries_->Increment(
      static_cast<double>(s.prefix_cache_queries - last_.prefix_cache_queries));
  prefix_hits_->Increment(static_cast<double>(s.prefix_cache_hits - last_.prefix_cache_hits));
  preemptions_->Increment(static_cast<double>(s.preemptions - last_.preemptions));
  last_ = s;
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace loom::server
