// The continuous-batching scheduler (vLLM's scheduler, TensorRT-LLM's capacity scheduler): before
// every forward pass it picks which sequences run and how many tokens each feeds, within a token
// budget, and keeps the paged KV cache (kv_block_manager.h) in step. Pure code, no model, no
// threads: the engine loop calls Step(), runs Backend::Forward on the plan, samples, then calls
// OnStepDone().
//
// Policy, every step:
//   1. Decodes first: every running sequence whose prompt is done feeds its last sampled token.
//      When no KV block is free for one, the most recently arrived running sequence is preempted:
//      its blocks are freed and it goes back to the front of the waiting queue, to be recomputed
//      (prompt and generated tokens, mostly from the prefix cache when it is still there).
//   2. Then chunked prefill within the remaining budget, first-come first-served: sequences
//      already part-way through their prompt, then waiting ones in arrival order (a waiting
//      sequence gets blocks for all its tokens when admitted; none is admitted in a step that
//      preempted, and admission stops at the first one that does not fit).
// A request fails for lack of KV memory only if it could never fit alone (Add() says so).
//
//   LOOM_ASSIGN_OR_RETURN(auto sched, loom::sched::Scheduler::Create({}, {.num_blocks = 4096}));
//   // ResourceExhausted (HTTP 429) when the admission queue is full:
//   LOOM_RETURN_IF_ERROR(sched->Add({.id = 7, .tokens = prompt, .max_tokens = 64}));
//   while (sched->HasWork()) {
//     loom::sched::StepPlan plan = sched->Step();
//     // For each plan.seqs[i]: feed .tokens at positions .start.., K/V into
//     // sched->kv().BlockTable(.id); sample a token when .samples.
//     LOOM_ASSIGN_OR_RETURN(std::vector<loom::kv::SeqId> done, sched->OnStepDone(plan, sampled));
//     // `done` reached max_tokens; on a stop token or string call sched->Finish(id).
//   }
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache/kv_block_manager.h"

namespace loom::sched {

using SeqId = kv::SeqId;

struct SchedulerConfig {
  int max_num_seqs = 64;         // running sequences (decoding or mid-prefill) at most, >= 1
  int max_batched_tokens = 512;  // tokens per step (chunked prefill budget), >= max_num_seqs
  int max_waiting = 256;         // admission queue bound, >= 1; Add() beyond it: 429
  // A prefill chunk that would run past the last full block before the sequence's last token
  // stops there (one more chunk finishes the prompt), so that the caller sees the state at the
  // point where a later prefix-cache hit on this prompt resumes (DuoAttention's streaming heads).
  bool stop_prefill_at_last_block = false;

  // InvalidArgument naming the first bad field.
  absl::Status Validate() const;
};

// One request's progress. The caller fills the first three fields for Add(); the scheduler owns
// the rest.
struct SequenceState {
  SeqId id = 0;
  std::vector<int32_t> tokens;  // the prompt; OnStepDone() appends each sampled token
  int max_tokens = 16;          // tokens to generate at most, >= 1

  int prompt_len = 0;      // tokens.size() at Add()
  int num_computed = 0;    // leading tokens whose K/V is in the cache
  int64_t arrival = 0;     // Add() order; FCFS
  bool cancelled = false;  // Cancel()ed while its step was in flight; released at OnStepDone()
  bool preempted = false;  // waiting again after a preemption
  int num_preemptions = 0;

  int num_generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
};

// One sequence's part of a step: feed tokens[start, start + num_tokens) at those positions.
struct ScheduledSeq {
  SeqId id = 0;
  int start = 0;
  int num_tokens = 0;
  // The chunk ends at the sequence's last token: sample the next one from its logits. False for
  // a prefill chunk that leaves part of the prompt for later steps.
  bool samples = false;
  // The tokens to feed; valid until OnStepDone() or the next Step().
  std::span<const int32_t> tokens;
};

struct StepPlan {
  uint64_t step = 0;
  std::vector<ScheduledSeq> seqs;  // decodes first, then prefill chunks; each id at most once
  int num_tokens = 0;              // sum of seqs[i].num_tokens, <= max_batched_tokens
  std::vector<SeqId> preempted;    // sent back to waiting by this step (their blocks are freed)

  bool empty() const { return seqs.empty(); }
};

struct SchedulerStats {
  int num_running = 0;          // holding KV blocks (decoding or mid-prefill)
  int num_waiting = 0;          // queued, including preempted ones
  int num_preempted = 0;        // of num_waiting, waiting to be recomputed
  int64_t num_preemptions = 0;  // since start
  int64_t num_cancelled = 0;    // since start
};

// Not thread-safe: the engine thread owns it; front ends hand it requests and cancellations.
class Scheduler {
 public:
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerConfig& config,
                                                           const kv::KvCacheConfig& kv_config);
  // Both configs must be valid.
  Scheduler(const SchedulerConfig& config, std::unique_ptr<kv::KvBlockManager> kv);

  // Queues a request (FCFS). InvalidArgument for no tokens, max_tokens < 1, or a sequence that
  // could never fit in the whole cache (prompt + max_tokens - 1 > max_sequence_tokens());
  // AlreadyExists for a known id; ResourceExhausted when max_waiting requests are waiting.
  absl::Status Add(SequenceState seq);
  // Plans the next forward pass (see the policy above). An empty plan when there is nothing to
  // run. Calling Step() again without OnStepDone() abandons the previous plan (nothing of it
  // counts as computed), e.g. after a failed forward pass.
  StepPlan Step();
  // Advances the plan's sequences: `sampled` holds one token per entry with `samples`, in plan
  // order. Returns the sequences that reached max_tokens, now finished and released.
  // FailedPrecondition for a plan other than the last Step()'s; InvalidArgument (nothing
  // changed) for the wrong number of tokens.
  absl::StatusOr<std::vector<SeqId>> OnStepDone(const StepPlan& plan,
                                                std::span<const int32_t> sampled);
  // Ends a sequence (e.g. on a stop token) and frees its blocks: now, or when its in-flight step
  // completes. NotFound for an unknown (or already finished) id.
  absl::Status Finish(SeqId id);
  // As Finish(), for a client that went away; counted in stats().num_cancelled.
  absl::Status Cancel(SeqId id);

  bool HasWork() const { return !running_.empty() || !waiting_.empty(); }
  // The sequence's state, or nullptr when unknown. Valid until the next non-const call.
  const SequenceState* Find(SeqId id) const;
  SchedulerStats stats() const;
  // Tokens one sequence may hold at most: the whole cache.
  int64_t max_sequence_tokens() const { return kv_->num_blocks() * kv_->block_size(); }
  const SchedulerConfig& config() const { return config_; }
  // Block tables, usage and prefix-cache counters.
  const kv::KvBlockManager& kv() const { return *kv_; }
  // kv::KvBlockManager::SetPrefixHitFilter: later admissions hit only prefixes `filter` accepts.
  void SetPrefixHitFilter(kv::PrefixHitFilter filter) {
    kv_->SetPrefixHitFilter(std::move(filter));
  }

 private:
  struct Entry {
    SequenceState state;
    bool running = false;
    bool ended = false;           // Finish()ed or Cancel()ed, release pending
    uint64_t scheduled_step = 0;  // the last step that scheduled it
  };

  bool InFlight(const Entry& e) const { return step_in_flight_ && e.scheduled_step == step_; }

  int Remaining(const Entry& e) const {
    return static_cast<int>(e.state.tokens.size()) - e.state.num_computed;
  }
  absl::Status End(SeqId id, bool cancelled);
  void Release(Entry* e);
  void PreemptLast(StepPlan* plan);
  void Schedule(Entry* e, int num_tokens, StepPlan* plan);
  // Tokens of e's prompt (or recompute) to feed next within `budget` (> 0).
  int PrefillChunk(const Entry& e, int budget) const;

  SchedulerConfig config_;
  std::unique_ptr<kv::KvBlockManager> kv_;
  int64_t watermark_blocks_;  // kept free when admitting beside running sequences
  absl::flat_hash_map<SeqId, std::unique_ptr<Entry>> seqs_;
  // Every running sequence arrived before every waiting one (admission is strictly FCFS and
  // preemption takes the latest arrival), so both stay sorted by arrival with cheap updates.
  std::vector<Entry*> running_;
  std::deque<Entry*> waiting_;
  std::vector<SeqId> pending_release_;  // ended while in flight
  int64_t next_arrival_ = 0;
  uint64_t step_ = 0;
  bool step_in_flight_ = false;
  int64_t num_preemptions_ = 0;
  int64_t num_cancelled_ = 0;
};

}  // namespace loom::sched
