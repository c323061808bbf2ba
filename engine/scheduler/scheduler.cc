#include "engine/scheduler/scheduler.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_format.h"

namespace loom::sched {

absl::Status SchedulerConfig::Validate() const {
  if (max_num_seqs < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scheduler max_num_seqs must be >= 1, got %d", max_num_seqs));
  }
  if (max_batched_tokens < max_num_seqs) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "scheduler max_batched_tokens (%d) must be >= max_num_seqs (%d) so that every running "
        "sequence can decode each step",
        max_batched_tokens, max_num_seqs));
  }
  if (max_waiting < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("scheduler max_waiting must be >= 1, got %d", max_waiting));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerConfig& config,
                                                             const kv::KvCacheConfig& kv_config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  absl::StatusOr<std::unique_ptr<kv::KvBlockManager>> kv = kv::KvBlockManager::Create(kv_config);
  if (!kv.ok()) return kv.status();
  return std::make_unique<Scheduler>(config, std::move(kv).value());
}

Scheduler::Scheduler(const SchedulerConfig& config, std::unique_ptr<kv::KvBlockManager> kv)
    : config_(config),
      kv_(std::move(kv)),
      // vLLM's default watermark: 1% of the blocks, so that admitting a sequence does not
      // immediately force a preemption when the running ones grow.
      watermark_blocks_(kv_->num_blocks() / 100) {}

absl::Status Scheduler::Add(SequenceState seq) {
  if (seq.tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat("sequence %d has an empty prompt", seq.id));
  }
  if (seq.max_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("sequence %d: max_tokens must be >= 1, got %d", seq.id, seq.max_tokens));
  }
  // The last generated token's K/V is never written.
  const int64_t needed = static_cast<int64_t>(seq.tokens.size()) + seq.max_tokens - 1;
  if (needed > max_sequence_tokens() || needed > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "sequence %d needs %d tokens of KV cache (%d prompt + %d max_tokens - 1); the cache holds "
        "%d",
        seq.id, needed, seq.tokens.size(), seq.max_tokens, max_sequence_tokens()));
  }
  if (seqs_.contains(seq.id)) {
    return absl::AlreadyExistsError(absl::StrFormat("sequence %d is already queued", seq.id));
  }
  if (static_cast<int64_t>(waiting_.size()) >= config_.max_waiting) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("admission queue is full (%d waiting)", waiting_.size()));
  }
  auto entry = std::make_unique<Entry>();
  entry->state = std::move(seq);
  SequenceState& s = entry->state;
  s.prompt_len = static_cast<int>(s.tokens.size());
  s.num_computed = 0;
  s.arrival = next_arrival_++;
  s.cancelled = false;
  s.preempted = false;
  s.num_preemptions = 0;
  waiting_.push_back(entry.get());
  seqs_.emplace(s.id, std::move(entry));
  return absl::OkStatus();
}

void Scheduler::Release(Entry* e) {
  const SeqId id = e->state.id;
  if (e->running) {
    kv_->Free(id).IgnoreError();  // a running sequence always has blocks
    running_.erase(std::find(running_.begin(), running_.end(), e));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), e));
  }
  seqs_.erase(id);
}

void Scheduler::PreemptLast(StepPlan* plan) {
  Entry* v = running_.back();
  running_.pop_back();
  kv_->Free(v->state.id).IgnoreError();
  v->running = false;
  v->state.num_computed = 0;
  v->state.preempted = true;
  ++v->state.num_preemptions;
  ++num_preemptions_;
  waiting_.push_front(v);  // it arrived before every waiting sequence
  plan->preempted.push_back(v->state.id);
}

void Scheduler::Schedule(Entry* e, int num_tokens, StepPlan* plan) {
  const SequenceState& s = e->state;
  ScheduledSeq out;
  out.id = s.id;
  out.start = s.num_computed;
  out.num_tokens = num_tokens;
  out.samples = s.num_computed + num_tokens == static_cast<int>(s.tokens.size());
  out.tokens = std::span<const int32_t>(s.tokens).subspan(out.start, num_tokens);
  plan->seqs.push_back(out);
  plan->num_tokens += num_tokens;
  e->scheduled_step = step_;
}

int Scheduler::PrefillChunk(const Entry& e, int budget) const {
  const int n = std::min(Remaining(e), budget);
  if (!config_.stop_prefill_at_last_block) return n;
  const int bs = kv_->block_size();
  const int last_block_end = (static_cast<int>(e.state.tokens.size()) - 1) / bs * bs;
  const int start = e.state.num_computed;
  return start < last_block_end && last_block_end < start + n ? last_block_end - start : n;
}

StepPlan Scheduler::Step() {
  StepPlan plan;
  plan.step = ++step_;
  step_in_flight_ = true;
  for (SeqId id : pending_release_) {
    auto it = seqs_.find(id);
    if (it != seqs_.end() && it->second->ended) Release(it->second.get());
  }
  pending_release_.clear();

  int budget = config_.max_batched_tokens;
  // 1. Decodes: each running sequence whose prompt is done feeds its last token. Validate()
  // guarantees the budget covers them all.
  for (size_t i = 0; i < running_.size(); ++i) {
    Entry* e = running_[i];
    if (Remaining(*e) != 1) continue;
    const std::vector<int32_t>& tokens = e->state.tokens;
    bool self_preempted = false;
    while (kv_->NumTokens(e->state.id) < static_cast<int>(tokens.size())) {
      if (kv_->AppendSlot(e->state.id, tokens.back()).ok()) break;
      // Out of blocks. The latest arrival sits at or after position i, so it is not yet
      // scheduled in this step.
      self_preempted = running_.back() == e;
      PreemptLast(&plan);
      if (self_preempted) break;
    }
    if (self_preempted) break;  // e was the last running sequence
    Schedule(e, 1, &plan);
    --budget;
  }
  // 2. Prefill chunks for sequences part-way through their prompt (or a recompute), FCFS.
  for (Entry* e : running_) {
    if (budget == 0) break;
    const int remaining = Remaining(*e);
    if (remaining <= 1) continue;  // a decode, scheduled above
    const int n = PrefillChunk(*e, budget);
    Schedule(e, n, &plan);
    budget -= n;
  }
  // 3. Admit waiting sequences in arrival order while budget, sequence slots and blocks last.
  if (plan.preempted.empty()) {
    while (budget > 0 && static_cast<int>(running_.size()) < config_.max_num_seqs &&
           !waiting_.empty()) {
      Entry* e = waiting_.front();
      const int64_t reserve = running_.empty() ? 0 : watermark_blocks_;
      if (kv_->FreeBlocksNeeded(e->state.tokens) + reserve > kv_->num_free_blocks()) break;
      absl::StatusOr<int> cached = kv_->Allocate(e->state.id, e->state.tokens);
      if (!cached.ok()) break;
      e->state.num_computed = *cached;
      e->state.preempted = false;
      e->running = true;
      waiting_.pop_front();
      running_.push_back(e);
      const int n = PrefillChunk(*e, budget);
      Schedule(e, n, &plan);
      budget -= n;
    }
  }
  return plan;
}

absl::StatusOr<std::vector<SeqId>> Scheduler::OnStepDone(const StepPlan& plan,
                                                         std::span<const int32_t> sampled) {
  if (!step_in_flight_ || plan.step != step_) {
    return absl::FailedPreconditionError(
        absl::StrFormat("OnStepDone for step %d, but the step in flight is %d", plan.step,
                        step_in_flight_ ? static_cast<int64_t>(step_) : int64_t{-1}));
  }
  const size_t num_samples = static_cast<size_t>(std::count_if(
      plan.seqs.begin(), plan.seqs.end(), [](const ScheduledSeq& s) { return s.samples; }));
  if (sampled.size() != num_samples) {
    return absl::InvalidArgumentError(absl::StrFormat("step %d samples %d sequences, got %d tokens",
                                                      plan.step, num_samples, sampled.size()));
  }
  step_in_flight_ = false;
  std::vector<SeqId> finished;
  size_t k = 0;
  for (const ScheduledSeq& s : plan.seqs) {
    const int32_t token = s.samples ? sampled[k++] : 0;
    auto it = seqs_.find(s.id);
    if (it == seqs_.end()) continue;
    Entry* e = it->second.get();
    if (e->ended) {
      Release(e);
      continue;
    }
    SequenceState& state = e->state;
    state.num_computed = s.start + s.num_tokens;
    if (absl::Status st = kv_->MarkComputed(s.id, state.num_computed); !st.ok()) {
      return absl::InternalError(absl::StrFormat("sequence %d: %s", s.id, st.message()));
    }
    if (!s.samples) continue;
    state.tokens.push_back(token);
    if (state.num_generated() >= state.max_tokens) {
      Release(e);
      finished.push_back(s.id);
    }
  }
  pending_release_.clear();  // all of them were in this plan
  return finished;
}

absl::Status Scheduler::End(SeqId id, bool cancelled) {
  auto it = seqs_.find(id);
  if (it == seqs_.end() || it->second->ended) {
    return absl::NotFoundError(absl::StrFormat("no active sequence %d", id));
  }
  Entry* e = it->second.get();
  if (cancelled) {
    e->state.cancelled = true;
    ++num_cancelled_;
  }
  if (InFlight(*e)) {
    e->ended = true;
    pending_release_.push_back(id);
  } else {
    Release(e);
  }
  return absl::OkStatus();
}

absl::Status Scheduler::Finish(SeqId id) { return End(id, /*cancelled=*/false); }

absl::Status Scheduler::Cancel(SeqId id) { return End(id, /*cancelled=*/true); }

const SequenceState* Scheduler::Find(SeqId id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? nullptr : &it->second->state;
}

SchedulerStats Scheduler::stats() const {
  SchedulerStats s;
  s.num_running = static_cast<int>(running_.size());
  s.num_waiting = static_cast<int>(waiting_.size());
  s.num_preempted = static_cast<int>(std::count_if(
      waiting_.begin(), waiting_.end(), [](const Entry* e) { return e->state.preempted; }));
  s.num_preemptions = num_preemptions_;
  s.num_cancelled = num_cancelled_;
  return s;
}

}  // namespace loom::sched
