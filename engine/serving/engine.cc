#include "engine/serving/engine.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/generate/stop_strings.h"
#include "engine/kv_cache/kv_block_manager.h"
#include "engine/scheduler/scheduler.h"

namespace loom::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

absl::Status EngineConfig::Validate() const {
  if (max_context <= 0) return absl::InvalidArgumentError("max_context must be positive");
  if (max_num_seqs <= 0) return absl::InvalidArgumentError("max_num_seqs must be positive");
  if (max_batched_tokens < max_num_seqs) {
    return absl::InvalidArgumentError("max_batched_tokens must be at least max_num_seqs");
  }
  if (max_waiting < 0) return absl::InvalidArgumentError("max_waiting must be >= 0");
  if (kv_cache_bytes <= 0) return absl::InvalidArgumentError("kv_cache_bytes must be positive");
  if (kv_block_size < 1 || kv_block_size > kv::KvCacheConfig::kMaxBlockSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_block_size must be in [1, ", kv::KvCacheConfig::kMaxBlockSize, "]"));
  }
  if (max_tokens_cap <= 0) return absl::InvalidArgumentError("max_tokens_cap must be positive");
  if (n_threads < 0) return absl::InvalidArgumentError("n_threads must be >= 0");
  if (duo_prefix_snapshots < 0) {
    return absl::InvalidArgumentError("duo_prefix_snapshots must be >= 0");
  }
  if (duo != nullptr && duo->HasStreaming() &&
      static_cast<int64_t>(max_num_seqs + duo_prefix_snapshots) *
              duo->StreamingBytesPerSequence() >=
          kv_cache_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kv_cache_bytes (", kv_cache_bytes, ") must exceed the DuoAttention streaming caches of ",
        max_num_seqs, " sequences and ", duo_prefix_snapshots, " prefix snapshots (",
        duo->StreamingBytesPerSequence(), " bytes each)"));
  }
  return absl::OkStatus();
}

// ---- RequestStream ------------------------------------------------------------------------------

RequestStream::~RequestStream() = default;

void RequestStream::Push(StreamEvent ev) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ev.finished) done_ = true;
    events_.push_back(std::move(ev));
  }
  cv_.notify_all();
}

bool RequestStream::Next(StreamEvent* ev) {
  bool timed_out = false;
  return NextFor(ev, std::chrono::milliseconds::max(), &timed_out);
}

bool RequestStream::NextFor(StreamEvent* ev, std::chrono::milliseconds timeout, bool* timed_out) {
  std::unique_lock<std::mutex> lock(mu_);
  *timed_out = false;
  auto ready = [&] { return !events_.empty() || drained_; };
  if (timeout == std::chrono::milliseconds::max()) {
    cv_.wait(lock, ready);
  } else if (!cv_.wait_for(lock, timeout, ready)) {
    *timed_out = true;
    return false;
  }
  if (events_.empty()) return false;  // the final event was already read
  *ev = std::move(events_.front());
  events_.pop_front();
  if (ev->finished) drained_ = true;
  return true;
}

// ---- Engine -------------------------------------------------------------------------------------

struct Engine::Sequence {
  uint64_t id = 0;
  Request req;
  std::shared_ptr<RequestStream> stream;
  std::vector<int32_t> tokens;  // prompt, then generated (the sampler's history)
  int n_prompt = 0;
  bool started = false;     // scheduled at least once
  int cached_prompt = 0;    // prompt tokens the prefix cache held at first scheduling
  int streaming_slot = -1;  // DuoAttention: index into Engine::streaming_ while running
  std::unique_ptr<sampler::Sampler> sampler;
  std::unique_ptr<grammar::Matcher> matcher;  // with a grammar
  std::unique_ptr<tokenizer::StreamDecoder> decoder;
  std::string text;     // generated text so far (cut at a stop string)
  size_t released = 0;  // bytes of `text` already sent
  int n_generated = 0;
  Clock::time_point arrival, scheduled, first_token, last_token;
  std::vector<double> itl;
};

Engine::Engine(const EngineConfig& config, std::unique_ptr<Model> model)
    : config_(config), model_(std::move(model)) {}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const EngineConfig& config,
                                                       std::unique_ptr<Model> model) {
  LOOM_RETURN_IF_ERROR(config.Validate());
  if (model == nullptr) return absl::InvalidArgumentError("no model");
  std::unique_ptr<Engine> e(new Engine(config, std::move(model)));
  LOOM_ASSIGN_OR_RETURN(e->tokenizer_, tokenizer::Tokenizer::FromGguf(e->model_->file()));
  e->grammar_index_ = grammar::TokenIndex::Build(*e->tokenizer_);
  LOOM_ASSIGN_OR_RETURN(e->backend_,
                        CreateBackend(config.backend, *e->model_, {.n_threads = config.n_threads}));
  // The paged KV cache: as many blocks as the budget holds, shared by all sequences. With
  // DuoAttention a block holds the retrieval heads only, and the streaming heads' fixed caches
  // (one per running sequence) come out of the same budget first.
  const ModelConfig& mc = e->model_->config();
  int64_t bytes_per_token = kv::KvBytesPerToken(mc.n_layers, mc.kv_dim());
  int64_t paged_budget = config.kv_cache_bytes;
  const bool streaming = config.duo != nullptr && config.duo->HasStreaming();
  if (config.duo != nullptr) {
    const DuoLayout& d = *config.duo;
    if (d.n_layers() != mc.n_layers || d.n_kv_heads() != mc.n_kv_heads ||
        d.head_dim() != mc.head_dim) {
      return absl::InvalidArgumentError(
          absl::StrCat("the DuoAttention layout is for ", d.n_layers(), " layers x ",
                       d.n_kv_heads(), " KV heads of ", d.head_dim(), "; the model has ",
                       mc.n_layers, " x ", mc.n_kv_heads, " of ", mc.head_dim));
    }
    bytes_per_token = d.RetrievalBytesPerToken();
    if (streaming) {
      paged_budget -= int64_t{config.max_num_seqs + config.duo_prefix_snapshots} *
                      d.StreamingBytesPerSequence();
    }
  }
  const bool snapshots = streaming && config.duo_prefix_snapshots > 0;
  int64_t num_blocks = 0;
  if (bytes_per_token == 0) {
    // Every head streams: blocks only count positions (they hold no bytes).
    const int64_t per_seq = (config.max_context + config.kv_block_size - 1) / config.kv_block_size;
    num_blocks = per_seq * config.max_num_seqs;
  } else {
    LOOM_ASSIGN_OR_RETURN(
        num_blocks, kv::NumBlocksForBudget(paged_budget, bytes_per_token, config.kv_block_size));
  }
  num_blocks = std::min(num_blocks, kv::KvCacheConfig::kMaxNumBlocks);
  const sched::SchedulerConfig sc{
      .max_num_seqs = config.max_num_seqs,
      .max_batched_tokens = config.max_batched_tokens,
      // Submit() bounds the queue; preempted sequences go back to waiting on top of that.
      .max_waiting = std::max(config.max_waiting, 1) + config.max_num_seqs,
      // With streaming heads a prefix-cache hit restores the paged (retrieval) heads only; the
      // streaming caches come from snapshots taken where prompts' last full blocks end
      // (docs/duo_attention.md). Without snapshots every prompt is computed in full.
      .stop_prefill_at_last_block = snapshots,
  };
  LOOM_ASSIGN_OR_RETURN(
      e->sched_, sched::Scheduler::Create(sc, {.block_size = config.kv_block_size,
                                               .num_blocks = num_blocks,
                                               .enable_prefix_caching = !streaming || snapshots}));
  e->kv_pool_ = std::make_unique<KvPool>(mc, config.kv_block_size, num_blocks, config.duo);
  if (streaming) {
    for (int i = 0; i < config.max_num_seqs; ++i) {
      e->streaming_.push_back(std::make_unique<StreamingKv>(config.duo));
      e->free_streaming_.push_back(config.max_num_seqs - 1 - i);
    }
  }
  if (snapshots) {
    e->snapshots_ = std::make_unique<StreamingSnapshots>(config.duo, config.duo_prefix_snapshots);
    e->sched_->SetPrefixHitFilter(
        [snaps = e->snapshots_.get()](kv::CachedBlock last, int) { return snaps->Contains(last); });
  }
  e->max_seq_tokens_ = e->sched_->max_sequence_tokens();
  {
    std::lock_guard<std::mutex> lock(e->mu_);
    e->stats_.kv_retrieval_capacity_bytes = e->kv_pool_->bytes();
    e->stats_.kv_streaming_capacity_bytes =
        e->streaming_.empty() ? 0 : config.max_num_seqs * e->streaming_[0]->bytes();
    EngineStats::Duo& duo = e->stats_.duo;
    duo.total_kv_heads = mc.n_layers * mc.n_kv_heads;
    duo.prefix_caching = !streaming || snapshots;
    duo.prefix_snapshot_capacity = snapshots ? config.duo_prefix_snapshots : 0;
    if (config.duo != nullptr) {
      duo.enabled = true;
      duo.sink = config.duo->sink();
      duo.recent = config.duo->recent();
      duo.streaming_kv_heads = config.duo->TotalStreaming();
      duo.sparsity = duo.total_kv_heads > 0
                         ? static_cast<double>(duo.streaming_kv_heads) / duo.total_kv_heads
                         : 0;
    }
  }
  e->loop_ = std::thread([raw = e.get()] { raw->Loop(); });
  return e;
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (loop_.joinable()) loop_.join();
}

std::string Engine::model_name() const {
  return model_->config().name.empty() ? "loom" : model_->config().name;
}

absl::StatusOr<std::shared_ptr<RequestStream>> Engine::Submit(Request request) {
  const int vocab = model_->config().vocab_size;
  const int context = std::min(config_.max_context, model_->config().context_length);
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", t, " is out of range [0, ", vocab, ")"));
    }
  }
  if (request.max_tokens < 1) return absl::InvalidArgumentError("max_tokens must be at least 1");
  if (request.max_tokens > config_.max_tokens_cap) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_tokens ", request.max_tokens, " exceeds the limit of ", config_.max_tokens_cap));
  }
  const int64_t need = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (need > context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "this model's maximum context length is ", context, " tokens; the request has ",
        request.prompt.size(), " prompt tokens and max_tokens ", request.max_tokens));
  }
  LOOM_RETURN_IF_ERROR(request.sampling.Validate());
  if (request.top_logprobs > 20) return absl::InvalidArgumentError("top_logprobs must be <= 20");
  // The last generated token's K/V is never written.
  if (need - 1 > max_seq_tokens_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request needs more KV cache than the server has (", need - 1, " of ",
                     max_seq_tokens_, " token positions)"));
  }

  auto seq = std::make_unique<Sequence>();
  seq->req = std::move(request);
  seq->arrival = Clock::now();
  std::shared_ptr<RequestStream> stream;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_ || stopping_) return absl::UnavailableError("the server is shutting down");
    // Waiting here or inside the scheduler (not yet given KV blocks).
    if (static_cast<int>(waiting_.size()) + sched_waiting_ >= config_.max_waiting) {
      return absl::ResourceExhaustedError("the request queue is full; retry later");
    }
    seq->id = next_id_++;
    stream.reset(new RequestStream(seq->id));
    seq->stream = stream;
    waiting_.push_back(std::move(seq));
    stats_.num_waiting = static_cast<int>(waiting_.size()) + sched_waiting_;
  }
  cv_.notify_all();
  return stream;
}

EngineStats Engine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

bool Engine::Drain(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  const bool done = cv_.wait_for(lock, timeout, [&] {
    return waiting_.empty() && sched_waiting_ == 0 && stats_.num_running == 0;
  });
  if (!done) {
    for (auto& s : waiting_) s->stream->Cancel();
    cancel_all_ = true;
  }
  cv_.notify_all();
  return done;
}

void Engine::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !waiting_.empty() || !active_.empty(); });
      if (stopping_) break;
    }
    if (!StepOnce()) {
      // Nothing could run (e.g. only dropped requests arrived): do not spin.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(1), [&] { return stopping_; });
    }
  }
  // Shutting down: everything still here ends as cancelled.
  std::deque<std::unique_ptr<Sequence>> waiting;
  {
    std::lock_guard<std::mutex> lock(mu_);
    waiting.swap(waiting_);
  }
  for (auto& s : waiting) {
    s->stream->Cancel();
    Finish(*s, "cancelled", absl::OkStatus());
  }
  while (!active_.empty()) {
    active_.begin()->second->stream->Cancel();
    End(active_.begin()->first, "cancelled", absl::OkStatus());
  }
  PublishStats(0, 0, false);
}

int32_t Engine::SampleToken(Sequence& s, std::span<const float> row) {
  if (s.matcher == nullptr) return s.sampler->Sample(row, s.tokens);
  masked_.assign(row.begin(), row.end());
  s.matcher->MaskLogits(masked_);
  return s.sampler->Sample(masked_, s.tokens);
}

void Engine::Finish(Sequence& s, const std::string& reason, const absl::Status& status) {
  if (reason == "length" || reason == "stop") s.text += s.decoder ? s.decoder->Flush() : "";
  StreamEvent ev;
  ev.finished = true;
  ev.finish_reason = reason;
  ev.status = status;
  if (s.text.size() > s.released && (reason == "length" || reason == "stop")) {
    ev.text = s.text.substr(s.released);
    s.released = s.text.size();
  }
  ev.usage.prompt_tokens = s.n_prompt > 0 ? s.n_prompt : static_cast<int>(s.req.prompt.size());
  ev.usage.completion_tokens = s.n_generated;
  ev.usage.cached_prompt_tokens = s.cached_prompt;
  s.stream->Push(std::move(ev));
  if (on_finished_) {
    const auto now = Clock::now();
    RequestTimings t;
    t.finish_reason = reason;
    t.prompt_tokens = static_cast<int>(s.req.prompt.size());
    t.completion_tokens = s.n_generated;
    t.queue_seconds = s.scheduled == Clock::time_point() ? Seconds(s.arrival, now)
                                                         : Seconds(s.arrival, s.scheduled);
    t.ttft_seconds = s.n_generated > 0 ? Seconds(s.arrival, s.first_token) : 0;
    t.e2e_seconds = Seconds(s.arrival, now);
    t.inter_token_seconds = std::move(s.itl);
    on_finished_(t);
  }
}

StreamingKv* Engine::AcquireStreaming(Sequence& s) {
  if (streaming_.empty()) return nullptr;
  if (s.streaming_slot < 0) {
    // The scheduler runs at most max_num_seqs sequences, one cache each; were none free, the
    // backend would reject the entry (no StreamingKv) and the step's sequences end in error.
    if (free_streaming_.empty()) return nullptr;
    s.streaming_slot = free_streaming_.back();
    free_streaming_.pop_back();
  }
  return streaming_[static_cast<size_t>(s.streaming_slot)].get();
}

void Engine::SaveSnapshots(const sched::StepPlan& plan) {
  if (snapshots_ == nullptr) return;
  for (const sched::ScheduledSeq& ps : plan.seqs) {
    if (ps.samples) continue;  // decodes and prompt ends: not where a later prompt resumes
    auto it = active_.find(static_cast<uint64_t>(ps.id));
    if (it == active_.end() || it->second->streaming_slot < 0) continue;
    const kv::IndexedPrefix p = sched_->kv().Indexed(ps.id);
    // Holds when the chunk ends on a block boundary and every block before it is indexed.
    if (p.num_tokens != ps.start + ps.num_tokens) continue;
    snapshots_->Save(p.last, *streaming_[static_cast<size_t>(it->second->streaming_slot)]);
  }
}

void Engine::ReleaseStreaming(Sequence& s) {
  if (s.streaming_slot < 0) return;
  free_streaming_.push_back(s.streaming_slot);
  s.streaming_slot = -1;
}

void Engine::End(uint64_t id, const std::string& reason, const absl::Status& status) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  ReleaseStreaming(*it->second);
  const auto sid = static_cast<sched::SeqId>(id);
  // NotFound when the scheduler already released it (it reached max_tokens).
  if (reason == "cancelled") {
    sched_->Cancel(sid).IgnoreError();
  } else {
    sched_->Finish(sid).IgnoreError();
  }
  Finish(*it->second, reason, status);
  active_.erase(it);
}

void Engine::PublishStats(int64_t prompt_tokens, int64_t generated, bool stepped) {
  const sched::SchedulerStats ss = sched_->stats();
  const kv::KvBlockManager& kv = sched_->kv();
  const kv::PrefixCacheStats pc = kv.prefix_cache_stats();
  {
    std::lock_guard<std::mutex> lock(mu_);
    sched_waiting_ = ss.num_waiting;
    stats_.num_running = ss.num_running;
    stats_.num_waiting = static_cast<int>(waiting_.size()) + sched_waiting_;
    stats_.prompt_tokens_total += prompt_tokens;
    stats_.generation_tokens_total += generated;
    stats_.kv_cache_usage = kv.Usage();
    stats_.prefix_cache_queries = pc.queries;
    stats_.prefix_cache_hits = pc.hits;
    stats_.preemptions = ss.num_preemptions;
    stats_.kv_retrieval_bytes =
        (kv.num_blocks() - kv.num_free_blocks()) * kv_pool_->bytes_per_block();
    stats_.kv_retrieval_capacity_bytes = kv_pool_->bytes();
    const int64_t per_seq = streaming_.empty() ? 0 : streaming_[0]->bytes();
    stats_.kv_streaming_bytes =
        static_cast<int64_t>(streaming_.size() - free_streaming_.size()) * per_seq;
    stats_.kv_streaming_capacity_bytes = static_cast<int64_t>(streaming_.size()) * per_seq;
    if (snapshots_ != nullptr) {
      stats_.duo.prefix_snapshots = snapshots_->size();
      stats_.duo.prefix_snapshot_bytes = snapshots_->bytes();
    }
    if (stepped) ++stats_.steps;
  }
  cv_.notify_all();  // Drain() waits on this
}

bool Engine::StepOnce() {
  const ModelConfig& mc = model_->config();
  const auto now = Clock::now();
  // 1. Hand new requests to the scheduler (FCFS); it admits them when KV blocks allow.
  std::vector<std::pair<std::unique_ptr<Sequence>, absl::Status>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    while (!waiting_.empty()) {
      Sequence& s = *waiting_.front();
      if (s.stream->cancelled() || s.stream.use_count() == 1) {
        dropped.emplace_back(std::move(waiting_.front()), absl::OkStatus());
        waiting_.pop_front();
        continue;
      }
      sched::SequenceState state;
      state.id = static_cast<sched::SeqId>(s.id);
      state.tokens = s.req.prompt;
      state.max_tokens = s.req.max_tokens;
      absl::Status added = sched_->Add(std::move(state));
      if (absl::IsResourceExhausted(added)) break;  // stays queued here
      std::unique_ptr<Sequence> seq = std::move(waiting_.front());
      waiting_.pop_front();
      if (!added.ok()) {
        dropped.emplace_back(std::move(seq), added);
        continue;
      }
      seq->n_prompt = static_cast<int>(seq->req.prompt.size());
      seq->tokens = seq->req.prompt;
      seq->sampler = std::make_unique<sampler::Sampler>(seq->req.sampling, seq->req.default_seed);
      if (seq->req.grammar != nullptr) {
        seq->matcher = std::make_unique<grammar::Matcher>(seq->req.grammar, grammar_index_);
      }
      seq->decoder = std::make_unique<tokenizer::StreamDecoder>(*tokenizer_, false);
      ++sched_waiting_;
      active_.emplace(seq->id, std::move(seq));
    }
    stats_.num_waiting = static_cast<int>(waiting_.size()) + sched_waiting_;
  }
  for (auto& [s, st] : dropped) {  // outside the lock
    Finish(*s, st.ok() ? "cancelled" : "error", st);
  }

  // 2. Cancellations, dropped streams and deadlines end sequences before they cost a step.
  const bool cancel_all = cancel_all_.load();
  std::vector<std::pair<uint64_t, bool>> ending;  // id, timed out
  for (auto& [id, s] : active_) {
    if (cancel_all || s->stream->cancelled() || s->stream.use_count() == 1) {
      ending.emplace_back(id, false);
    } else if (s->req.deadline && now > *s->req.deadline) {
      ending.emplace_back(id, true);
    }
  }
  for (const auto& [id, timed_out] : ending) {
    if (timed_out) {
      End(id, "timeout", absl::DeadlineExceededError("the request timed out"));
    } else {
      End(id, "cancelled", absl::OkStatus());
    }
  }

  // 3. Plan: decodes first, then prefill chunks; preempted sequences wait to be recomputed.
  const sched::StepPlan plan = sched_->Step();
  if (plan.empty()) {
    sched_->OnStepDone(plan, {}).IgnoreError();
    PublishStats(0, 0, false);
    return false;
  }
  // Preempted sequences recompute from position 0: their streaming caches are free again.
  for (sched::SeqId id : plan.preempted) {
    auto it = active_.find(static_cast<uint64_t>(id));
    if (it != active_.end()) ReleaseStreaming(*it->second);
  }
  std::vector<PagedKvView> views;
  std::vector<SeqBatch> batch;
  std::vector<Sequence*> owners;
  views.reserve(plan.seqs.size());
  batch.reserve(plan.seqs.size());
  int64_t prompt_tokens = 0;
  for (const sched::ScheduledSeq& ps : plan.seqs) {
    Sequence* s = active_.at(static_cast<uint64_t>(ps.id)).get();
    if (!s->started) {
      s->started = true;
      s->scheduled = now;
      s->cached_prompt = ps.start;  // the prefix cache's hit, when first admitted
      prompt_tokens += s->n_prompt;
    }
    const bool new_ring = s->streaming_slot < 0;
    StreamingKv* ring = AcquireStreaming(*s);
    if (new_ring && ring != nullptr && ps.start > 0) {
      // Admitted after a prefix-cache hit: the scheduler's filter only allows prefixes whose
      // streaming caches are kept, and nothing evicts them between Step() and here.
      const kv::IndexedPrefix hit = sched_->kv().Indexed(ps.id);
      if (snapshots_ == nullptr || hit.num_tokens != ps.start ||
          !snapshots_->Restore(hit.last, ring)) {
        std::fprintf(stderr, "loom: invariant: no streaming snapshot for a %d-token prefix hit\n",
                     ps.start);
        std::abort();
      }
    }
    views.emplace_back(kv_pool_.get(), sched_->kv().BlockTable(ps.id), ps.start, ring);
    batch.push_back({&views.back(), ps.tokens, false});
    owners.push_back(s);
  }

  // 4. One forward pass for the whole batch.
  absl::Status st = backend_->Forward(batch, &logits_);
  const auto after = Clock::now();
  if (!st.ok()) {
    for (Sequence* s : owners) End(s->id, "error", st);
    if (active_.empty()) {
      // Nothing else runs: let the scheduler release the failed step's sequences now.
      const sched::StepPlan flush = sched_->Step();
      sched_->OnStepDone(flush, {}).IgnoreError();
    }
    PublishStats(prompt_tokens, 0, true);
    return true;
  }

  // 5. Sample where the plan says so; stream the token; end on stop, EOG or length.
  std::vector<int32_t> sampled;
  struct Ending {
    uint64_t id;
    std::string reason;
    absl::Status status;
  };
  std::vector<Ending> ending_now;  // ended after OnStepDone()
  int64_t generated = 0;
  for (size_t i = 0; i < plan.seqs.size(); ++i) {
    if (!plan.seqs[i].samples) continue;  // mid-prompt chunk: nothing to sample yet
    Sequence& s = *owners[i];
    std::span<const float> row(logits_.data() + i * mc.vocab_size, mc.vocab_size);
    const int32_t tok = SampleToken(s, row);
    sampled.push_back(tok);
    StreamEvent ev;
    ev.token = tok;
    if (s.req.top_logprobs >= 0) ev.logprobs = sampler::Logprobs(row, tok, s.req.top_logprobs);
    if (s.n_generated == 0) {
      s.first_token = after;
    } else {
      s.itl.push_back(Seconds(s.last_token, after));
    }
    s.last_token = after;
    ++generated;
    std::string reason;
    // The grammar allowed `tok`, so this fails only on a bug; the sequence then ends in error.
    absl::Status grammar_status = s.matcher ? s.matcher->Accept(tok) : absl::OkStatus();
    if (!grammar_status.ok()) {
      reason = "error";
    } else if (s.req.stop_at_eog && tokenizer_->IsEog(tok)) {
      reason = "stop";
    } else {
      s.tokens.push_back(tok);
      ++s.n_generated;
      s.text += s.decoder->Feed(tok);
      size_t release = s.text.size();
      bool stop_string = false;
      if (!s.req.stop.empty()) {
        const size_t at = FindStop(s.text, s.req.stop, s.released);
        if (at != std::string::npos) {
          s.text.resize(at);
          release = at;
          reason = "stop";
          stop_string = true;
        } else {
          release -= HeldBack(s.text, s.req.stop);
        }
      }
      // Complete, and nothing but the end can follow: the grammar ends the request.
      if (reason.empty() && s.matcher != nullptr && s.matcher->IsDone()) reason = "stop";
      if (reason.empty() && s.n_generated >= s.req.max_tokens) reason = "length";
      if (release > s.released && reason.empty()) {
        ev.text = s.text.substr(s.released, release - s.released);
        s.released = release;
      }
      if (reason.empty()) {
        s.stream->Push(std::move(ev));
        continue;
      }
      // The final event carries this token's text and logprobs too.
      StreamEvent last = std::move(ev);
      if (stop_string) s.decoder->Reset();  // bytes past the cut are not part of the text
      if (s.text.size() > s.released) {
        last.text += s.text.substr(s.released);
        s.released = s.text.size();
      }
      s.stream->Push(std::move(last));
    }
    ending_now.push_back({s.id, reason, std::move(grammar_status)});
  }
  // Ended only after OnStepDone(), so that the prompt computed in this step still enters the
  // prefix cache (a sequence ended in flight is released without its K/V counting as computed).
  absl::StatusOr<std::vector<sched::SeqId>> done = sched_->OnStepDone(plan, sampled);
  if (done.ok()) SaveSnapshots(plan);
  for (const Ending& e : ending_now) End(e.id, e.reason, e.status);
  if (!done.ok()) {
    for (const sched::ScheduledSeq& ps : plan.seqs) {
      End(static_cast<uint64_t>(ps.id), "error", done.status());
    }
  } else {
    // The engine ends every sequence at max_tokens itself; this is only a safety net.
    for (sched::SeqId id : *done) End(static_cast<uint64_t>(id), "length", absl::OkStatus());
  }
  PublishStats(prompt_tokens, generated, true);
  return true;
}

}  // namespace loom::engine
