// The serving engine: the one narrow API the front ends (HTTP, gRPC, CLI, pipelines) use. One loop
// thread owns the scheduler (engine/scheduler: continuous batching, chunked prefill, preemption)
// and the paged KV cache with automatic prefix caching (engine/kv_cache, KvPool); Submit() queues
// a request and returns a stream the caller reads token events from; Cancel() (or dropping the
// stream) frees the sequence within one step.
//
//   LOOM_ASSIGN_OR_RETURN(auto engine, loom::engine::Engine::Create(config, std::move(model)));
//   loom::engine::Request req;
//   req.prompt = engine->tokenizer().Encode("Hello", true, false);
//   req.max_tokens = 16;
//   LOOM_ASSIGN_OR_RETURN(std::shared_ptr<loom::engine::RequestStream> s, engine->Submit(req));
//   loom::engine::StreamEvent ev;
//   while (s->Next(&ev)) { std::cout << ev.text; if (ev.finished) break; }
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "engine/grammar/grammar.h"
#include "engine/model/backend.h"
#include "engine/model/duo_layout.h"
#include "engine/model/kv_pool.h"
#include "engine/model/model.h"
#include "engine/sampler/sampler.h"
#include "engine/serving/streaming_snapshots.h"
#include "engine/tokenizer/tokenizer.h"

namespace loom::sched {
class Scheduler;
struct StepPlan;
}  // namespace loom::sched

namespace loom::engine {

struct EngineConfig {
  std::string backend = "cpu";
  int n_threads = 0;                   // 0: one per core
  int max_context = 4096;              // prompt + max_tokens per sequence (<= the model's)
  int max_num_seqs = 16;               // sequences in the running batch
  int max_batched_tokens = 256;        // tokens per step: decodes first, then prefill chunks
  int max_waiting = 256;               // admission queue bound: beyond it Submit -> 429
  int64_t kv_cache_bytes = 1ll << 30;  // KV memory (paged, shared by all sequences)
  int kv_block_size = 16;              // token positions per KV block, [1, 1024]
  int max_tokens_cap = 4096;           // upper bound on a request's max_tokens
  // DuoAttention (engine/model/duo_layout.h, docs/duo_attention.md); null: plain attention. The
  // paged blocks then hold the retrieval heads only; with streaming heads, kv_cache_bytes also
  // pays for max_num_seqs fixed streaming caches and the snapshots below.
  std::shared_ptr<const DuoLayout> duo = nullptr;
  // With streaming heads: copies of streaming caches kept for prefix caching (a hit resumes only
  // after a prefix whose copy is kept; streaming_snapshots.h), >= 0. 0 turns prefix caching off.
  int duo_prefix_snapshots = 16;
  absl::Status Validate() const;
};

struct Request {
  std::vector<int32_t> prompt;  // token ids (the front end renders and tokenizes)
  int max_tokens = 256;
  sampler::SamplingParams sampling;
  uint64_t default_seed = 0;      // used when sampling.seed is unset
  std::vector<std::string> stop;  // stop strings (not part of the returned text)
  bool stop_at_eog = true;        // end at the model's end-of-generation tokens
  int top_logprobs = -1;          // -1: no logprobs; 0..20: the chosen token's + top N
  std::optional<std::chrono::steady_clock::time_point> deadline;  // per-request timeout
  // Structured output (engine/grammar): tokens are sampled only where they keep the text a prefix
  // of the grammar, end-of-generation only once it is complete; the request finishes with "stop"
  // as soon as nothing else can follow. Logprobs still come from the unmasked logits.
  std::shared_ptr<const grammar::Grammar> grammar;
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_prompt_tokens = 0;
};

// One event per generated token; the last one has `finished` set.
struct StreamEvent {
  int32_t token = -1;  // -1 on a final event that carries no new token
  std::string text;    // UTF-8 released by this token (held back near stop strings)
  std::optional<sampler::TokenLogprobs> logprobs;
  bool finished = false;
  std::string finish_reason;  // "stop", "length", "cancelled", "timeout", "error"
  absl::Status status;        // not OK when finish_reason == "error"
  Usage usage;                // filled on the final event
};

// The reader's end of one request. Thread-safe; destroying it cancels the request.
class RequestStream {
 public:
  ~RequestStream();
  uint64_t id() const { return id_; }
  // Blocks until an event is ready; false once the final event has been read.
  bool Next(StreamEvent* ev);
  // As Next, but gives up after `timeout` (returns false with *timed_out = true).
  bool NextFor(StreamEvent* ev, std::chrono::milliseconds timeout, bool* timed_out);
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Engine;
  explicit RequestStream(uint64_t id) : id_(id) {}
  void Push(StreamEvent ev);

  const uint64_t id_;
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;     // final event pushed
  bool drained_ ABSL_GUARDED_BY(mu_) = false;  // final event read
};

struct EngineStats {
  int num_running = 0;
  int num_waiting = 0;
  // Fraction of the KV blocks referenced by live sequences (vLLM's kv_cache_usage_perc). Blocks
  // kept only for the prefix cache count as free (evictable), so this returns to 0 when idle.
  double kv_cache_usage = 0;
  int64_t prompt_tokens_total = 0;
  int64_t generation_tokens_total = 0;
  int64_t prefix_cache_queries = 0;  // prompt tokens looked up
  int64_t prefix_cache_hits = 0;     // prompt tokens found cached
  int64_t preemptions = 0;           // sequences sent back to be recomputed (KV ran out)
  int64_t steps = 0;
  // KV bytes (fp16 K and V) held for live sequences: paged blocks they reference (every head
  // without DuoAttention, the retrieval heads with it) and their streaming heads' fixed caches.
  int64_t kv_retrieval_bytes = 0;
  int64_t kv_streaming_bytes = 0;
  // The same at capacity: the whole block pool, and max_num_seqs streaming caches.
  int64_t kv_retrieval_capacity_bytes = 0;
  int64_t kv_streaming_capacity_bytes = 0;
  // DuoAttention's head pattern (EngineConfig::duo), fixed at Create().
  struct Duo {
    bool enabled = false;               // a layout was given (it may have no streaming heads)
    double sparsity = 0;                // streaming_kv_heads / total_kv_heads
    int sink = 0;                       // positions a streaming head keeps from the start...
    int recent = 0;                     // ...and from the end (0 and 0 when off)
    int streaming_kv_heads = 0;         // over all layers
    int total_kv_heads = 0;             // n_layers x n_kv_heads (whether on or off)
    bool prefix_caching = true;         // with streaming heads: on when prefix snapshots are kept
    int prefix_snapshots = 0;           // streaming-cache copies held for prefix caching...
    int prefix_snapshot_capacity = 0;   // ...at most (EngineConfig::duo_prefix_snapshots)
    int64_t prefix_snapshot_bytes = 0;  // their bytes now
  } duo;
};

// Per-request timings the engine reports when a request ends (for latency metrics).
struct RequestTimings {
  std::string finish_reason;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double queue_seconds = 0;  // arrival to first scheduled
  double ttft_seconds = 0;   // arrival to first token
  double e2e_seconds = 0;    // arrival to finish
  std::vector<double> inter_token_seconds;
};

class Engine {
 public:
  // Takes the model; loads the tokenizer from it and starts the loop thread.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const EngineConfig& config,
                                                        std::unique_ptr<Model> model);
  ~Engine();  // stops the loop; unfinished requests end with finish_reason "cancelled"

  // Queues a request. InvalidArgument for a bad request (empty prompt, token ids out of range,
  // prompt + max_tokens over max_context, max_tokens over the cap, bad sampling values);
  // ResourceExhausted when the admission queue is full; Unavailable once draining.
  absl::StatusOr<std::shared_ptr<RequestStream>> Submit(Request request);

  EngineStats Stats() const;
  // Stops accepting new requests; waits up to `timeout` for running and queued ones to finish,
  // then cancels the rest. Returns true when everything finished in time.
  bool Drain(std::chrono::milliseconds timeout);
  // Called (from the loop thread) as each request ends; set before submitting anything.
  void SetOnFinished(std::function<void(const RequestTimings&)> fn) {
    on_finished_ = std::move(fn);
  }

  const tokenizer::Tokenizer& tokenizer() const { return *tokenizer_; }
  const Model& model() const { return *model_; }
  const EngineConfig& config() const { return config_; }
  std::string model_name() const;

 private:
  struct Sequence;
  Engine(const EngineConfig& config, std::unique_ptr<Model> model);
  void Loop();
  bool StepOnce();  // one scheduling step; false when there was nothing to do
  // The sequence's next token from its logits row (masked by its grammar, if any).
  int32_t SampleToken(Sequence& s, std::span<const float> row);
  // Sends the final event and reports the sequence's timings (the caller ends it in the
  // scheduler, which frees its KV blocks).
  void Finish(Sequence& s, const std::string& reason, const absl::Status& status);
  // Ends an active sequence: in the scheduler, then Finish(), then forgets it.
  void End(uint64_t id, const std::string& reason, const absl::Status& status);
  // Publishes the scheduler's and the KV cache's state in stats_.
  void PublishStats(int64_t prompt_tokens, int64_t generated, bool stepped);
  // DuoAttention: a free streaming cache for the sequence (a running one always finds one), and
  // back to the free list when it ends or is preempted.
  StreamingKv* AcquireStreaming(Sequence& s);
  void ReleaseStreaming(Sequence& s);
  // Prefix caching with streaming heads: after a step, keeps a copy of the streaming cache of
  // every sequence whose prefill chunk ended where its indexed prefix ends.
  void SaveSnapshots(const sched::StepPlan& plan);

  const EngineConfig config_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer_;
  std::unique_ptr<Backend> backend_;
  std::shared_ptr<const grammar::TokenIndex> grammar_index_;  // the vocabulary's byte trie
  std::function<void(const RequestTimings&)> on_finished_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Sequence>> waiting_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int sched_waiting_ ABSL_GUARDED_BY(mu_) = 0;  // requests waiting inside the scheduler
  int64_t max_seq_tokens_ = 0;  // KV positions one sequence may hold: the whole cache

  std::atomic<bool> cancel_all_{false};  // set when Drain() runs out of time

  // Owned by the loop thread only.
  std::unique_ptr<sched::Scheduler> sched_;
  std::unique_ptr<KvPool> kv_pool_;
  std::vector<std::unique_ptr<StreamingKv>> streaming_;  // max_num_seqs, with streaming heads
  std::vector<int> free_streaming_;
  std::unique_ptr<StreamingSnapshots> snapshots_;         // with streaming heads and prefix caching
  std::map<uint64_t, std::unique_ptr<Sequence>> active_;  // handed to the scheduler, by id
  std::vector<float> logits_;
  std::vector<float> masked_;  // a grammar-masked copy of one logits row
  std::thread loop_;
};

}  // namespace loom::engine
