#include "engine/scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

namespace loom::sched {
namespace {

// A stand-in for Backend::Forward plus sampling. A position's K/V "row" is a fingerprint of the
// row before it and its own token, read back through the block table as attention would, so a
// row that is missing, stale or someone else's changes every later token.
constexpr uint64_t kSeedRow = 0x5eed;
constexpr int kVocab = 97;

uint64_t Row(uint64_t prev, int32_t token) {
  uint64_t x = prev * 0x9e3779b97f4a7c15ULL + static_cast<uint32_t>(token) + 1;
  x = (x ^ (x >> 31)) * 0xbf58476d1ce4e5b9ULL;
  return x ^ (x >> 29);
}
int32_t NextToken(uint64_t row) { return static_cast<int32_t>(row % kVocab); }

// What a sequence generates alone, with nothing cached: up to `n` tokens, stopping after
// `eos` when it is >= 0.
std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int n, int32_t eos = -1) {
  uint64_t row = kSeedRow;
  for (int32_t t : prompt) row = Row(row, t);
  std::vector<int32_t> out;
  while (static_cast<int>(out.size()) < n) {
    const int32_t t = NextToken(row);
    out.push_back(t);
    if (t == eos) break;
    row = Row(row, t);
  }
  return out;
}

std::vector<int32_t> Prompt(int32_t first, int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (first + i) % kVocab;
  return t;
}

SequenceState Seq(SeqId id, std::vector<int32_t> prompt, int max_tokens) {
  SequenceState s;
  s.id = id;
  s.tokens = std::move(prompt);
  s.max_tokens = max_tokens;
  return s;
}

SchedulerConfig Config(int max_num_seqs, int max_batched_tokens, int max_waiting = 256) {
  SchedulerConfig c;
  c.max_num_seqs = max_num_seqs;
  c.max_batched_tokens = max_batched_tokens;
  c.max_waiting = max_waiting;
  return c;
}

std::unique_ptr<Scheduler> Make(const SchedulerConfig& config, int block_size, int64_t num_blocks,
                                bool prefix_caching = true) {
  kv::KvCacheConfig kv;
  kv.block_size = block_size;
  kv.num_blocks = num_blocks;
  kv.enable_prefix_caching = prefix_caching;
  absl::StatusOr<std::unique_ptr<Scheduler>> s = Scheduler::Create(config, kv);
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(s).value();
}

// Runs steps against the fake model and records every sequence's sampled tokens.
class Driver {
 public:
  explicit Driver(Scheduler* s) : s_(s), rows_(s->kv().num_blocks() * s->kv().block_size(), 0) {}

  // Runs the plan's forward pass: checks that every position before each chunk holds the right
  // row and that rows are only written into unshared, unindexed blocks.
  void Forward(const StepPlan& plan, std::vector<int32_t>* sampled) {
    const kv::KvBlockManager& kv = s_->kv();
    const int bs = kv.block_size();
    for (const ScheduledSeq& e : plan.seqs) {
      const SequenceState* st = s_->Find(e.id);
      ASSERT_NE(st, nullptr) << e.id;
      ASSERT_EQ(e.start, st->num_computed);
      ASSERT_GT(e.num_tokens, 0);
      ASSERT_LE(e.start + e.num_tokens, static_cast<int>(st->tokens.size()));
      ASSERT_EQ(e.samples, e.start + e.num_tokens == static_cast<int>(st->tokens.size()));
      ASSERT_TRUE(std::equal(e.tokens.begin(), e.tokens.end(), st->tokens.begin() + e.start,
                             st->tokens.begin() + e.start + e.num_tokens));
      const std::span<const kv::BlockId> table = kv.BlockTable(e.id);
      ASSERT_GE(static_cast<int>(table.size()) * bs, e.start + e.num_tokens);
      auto slot = [&](int p) { return static_cast<size_t>(table[p / bs]) * bs + p % bs; };
      uint64_t want = kSeedRow;
      for (int p = 0; p < e.start; ++p) {
        want = Row(want, st->tokens[p]);
        ASSERT_EQ(rows_[slot(p)], want) << "sequence " << e.id << " position " << p;
      }
      for (int p = e.start; p < e.start + e.num_tokens; ++p) {
        const kv::BlockId b = table[p / bs];
        ASSERT_EQ(kv.allocator().ref_count(b), 1) << "write into a shared block";
        ASSERT_FALSE(kv.allocator().IsCached(b)) << "write into an indexed block";
        const uint64_t prev = p == 0 ? kSeedRow : rows_[slot(p - 1)];
        rows_[slot(p)] = Row(prev, st->tokens[p]);
      }
      if (e.samples) {
        const int32_t t = NextToken(rows_[slot(e.start + e.num_tokens - 1)]);
        sampled->push_back(t);
        outputs_[e.id].push_back(t);
      }
    }
  }

  // Step(), Forward(), OnStepDone(); returns the plan and the sequences finished by length.
  StepPlan Run(std::vector<SeqId>* finished = nullptr) {
    StepPlan plan = s_->Step();
    std::vector<int32_t> sampled;
    Forward(plan, &sampled);
    absl::StatusOr<std::vector<SeqId>> done = s_->OnStepDone(plan, sampled);
    EXPECT_TRUE(done.ok()) << done.status();
    if (finished != nullptr && done.ok()) *finished = *done;
    EXPECT_TRUE(s_->kv().CheckConsistency().ok()) << s_->kv().CheckConsistency();
    return plan;
  }

  const std::vector<int32_t>& output(SeqId id) { return outputs_[id]; }

 private:
  Scheduler* s_;
  std::vector<uint64_t> rows_;
  std::map<SeqId, std::vector<int32_t>> outputs_;
};

const ScheduledSeq* Entry(const StepPlan& plan, SeqId id) {
  for (const ScheduledSeq& e : plan.seqs) {
    if (e.id == id) return &e;
  }
  return nullptr;
}

TEST(SchedulerConfigTest, Validate) {
  EXPECT_TRUE(SchedulerConfig{}.Validate().ok());
  EXPECT_FALSE(Config(0, 512).Validate().ok());
  EXPECT_FALSE(Config(64, 63).Validate().ok());  // decodes alone could exceed the budget
  EXPECT_FALSE(Config(4, 8, 0).Validate().ok());
  kv::KvCacheConfig kv;  // num_blocks unset
  EXPECT_EQ(Scheduler::Create({}, kv).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Scheduler::Create(Config(0, 8), {.num_blocks = 4}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, AddRejectsBadAndOversizedRequests) {
  auto s = Make(Config(4, 64, /*max_waiting=*/2), /*block_size=*/4, /*num_blocks=*/4);
  EXPECT_EQ(s->max_sequence_tokens(), 16);
  EXPECT_EQ(s->Add(Seq(1, {}, 4)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Add(Seq(1, Prompt(0, 4), 0)).code(), absl::StatusCode::kInvalidArgument);
  // 10 prompt + 7 generated needs 16 slots (the last token's K/V is never written): fits.
  EXPECT_TRUE(s->Add(Seq(1, Prompt(0, 10), 7)).ok());
  EXPECT_EQ(s->Add(Seq(2, Prompt(0, 10), 8)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->Add(Seq(1, Prompt(0, 3), 1)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(s->Add(Seq(2, Prompt(0, 3), 1)).ok());
  // The admission queue holds two.
  EXPECT_EQ(s->Add(Seq(3, Prompt(0, 3), 1)).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(s->stats().num_waiting, 2);
  Driver d(s.get());
  d.Run();  // admits both
  EXPECT_EQ(s->stats().num_waiting, 0);
  EXPECT_TRUE(s->Add(Seq(3, Prompt(0, 3), 1)).ok());
}

TEST(SchedulerTest, OneSequencePrefillsThenDecodesToMaxTokens) {
  auto s = Make(Config(4, 64), 4, 16);
  const std::vector<int32_t> prompt = Prompt(10, 10);
  ASSERT_TRUE(s->Add(Seq(7, prompt, 5)).ok());
  EXPECT_TRUE(s->HasWork());
  Driver d(s.get());
  std::vector<SeqId> finished;
  StepPlan p = d.Run(&finished);
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.seqs[0].start, 0);
  EXPECT_EQ(p.seqs[0].num_tokens, 10);
  EXPECT_TRUE(p.seqs[0].samples);
  EXPECT_EQ(s->Find(7)->num_generated(), 1);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(finished.empty());
    p = d.Run(&finished);
    ASSERT_EQ(p.seqs.size(), 1u);
    EXPECT_EQ(p.seqs[0].start, 10 + i);
    EXPECT_EQ(p.seqs[0].num_tokens, 1);
  }
  EXPECT_EQ(finished, std::vector<SeqId>{7});
  EXPECT_EQ(s->Find(7), nullptr);
  EXPECT_FALSE(s->HasWork());
  EXPECT_EQ(d.output(7), Reference(prompt, 5));
  EXPECT_DOUBLE_EQ(s->kv().Usage(), 0.0);
  EXPECT_TRUE(s->Step().empty());
}

TEST(SchedulerTest, ChunkedPrefillOfALongPromptKeepsDecodesFlowing) {
  auto s = Make(Config(8, /*max_batched_tokens=*/64), 16, 256);
  Driver d(s.get());
  for (SeqId id = 1; id <= 3; ++id) ASSERT_TRUE(s->Add(Seq(id, Prompt(id, 5), 100)).ok());
  StepPlan p = d.Run();
  EXPECT_EQ(p.num_tokens, 15);
  const std::vector<int32_t> long_prompt = Prompt(50, 1000);
  ASSERT_TRUE(s->Add(Seq(9, long_prompt, 3)).ok());
  int prefilled = 0;
  int steps = 0;
  while (prefilled < 1000) {
    p = d.Run();
    ++steps;
    ASSERT_LE(p.num_tokens, 64);
    ASSERT_EQ(p.seqs.size(), 4u);
    for (SeqId id = 1; id <= 3; ++id) {  // every running decode gets its token, first
      EXPECT_EQ(p.seqs[id - 1].id, id);
      EXPECT_EQ(p.seqs[id - 1].num_tokens, 1);
      EXPECT_TRUE(p.seqs[id - 1].samples);
    }
    const ScheduledSeq& chunk = p.seqs[3];
    EXPECT_EQ(chunk.id, 9);
    EXPECT_EQ(chunk.start, prefilled);
    EXPECT_EQ(chunk.num_tokens, std::min(61, 1000 - prefilled));
    EXPECT_EQ(chunk.samples, prefilled + chunk.num_tokens == 1000);
    prefilled += chunk.num_tokens;
  }
  EXPECT_EQ(steps, (1000 + 60) / 61);
  p = d.Run();
  EXPECT_EQ(p.num_tokens, 4);  // four decodes
  EXPECT_EQ(d.output(9), Reference(long_prompt, 2));
  EXPECT_EQ(d.output(1), Reference(Prompt(1, 5), 2 + steps));
}

TEST(SchedulerTest, PreemptsTheLatestArrivalAndRecomputesItLater) {
  // 4 blocks of 4 tokens: two sequences of 6 + 10 tokens cannot both finish.
  auto s = Make(Config(4, 64), 4, 4);
  Driver d(s.get());
  const std::vector<int32_t> pa = Prompt(1, 6), pb = Prompt(40, 6);
  ASSERT_TRUE(s->Add(Seq(1, pa, 10)).ok());
  ASSERT_TRUE(s->Add(Seq(2, pb, 10)).ok());
  StepPlan p = d.Run();
  ASSERT_EQ(p.seqs.size(), 2u);  // both admitted: 2 blocks each
  EXPECT_DOUBLE_EQ(s->kv().Usage(), 1.0);
  d.Run();
  d.Run();  // both now hold 8 slots, 9 tokens
  p = d.Run();
  // Sequence 1 needs a third block: sequence 2, the later arrival, is preempted.
  EXPECT_EQ(p.preempted, std::vector<SeqId>{2});
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.seqs[0].id, 1);
  EXPECT_FALSE(s->kv().Contains(2));
  const SequenceState* b = s->Find(2);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(b->preempted);
  EXPECT_EQ(b->num_computed, 0);
  EXPECT_EQ(b->num_generated(), 3);  // kept: only the K/V is recomputed
  SchedulerStats st = s->stats();
  EXPECT_EQ(st.num_running, 1);
  EXPECT_EQ(st.num_waiting, 1);
  EXPECT_EQ(st.num_preempted, 1);
  EXPECT_EQ(st.num_preemptions, 1);

  // Sequence 1 runs to completion alone; then 2 recomputes its 9 tokens in one chunk.
  std::vector<SeqId> finished;
  int guard = 0;
  while (finished.empty() && ++guard < 50) {
    p = d.Run(&finished);
    EXPECT_EQ(Entry(p, 2), nullptr);
  }
  EXPECT_EQ(finished, std::vector<SeqId>{1});
  p = d.Run();
  const ScheduledSeq* re = Entry(p, 2);
  ASSERT_NE(re, nullptr);
  EXPECT_EQ(re->start, 0);  // its cached blocks were evicted meanwhile
  EXPECT_EQ(re->num_tokens, 9);
  EXPECT_TRUE(re->samples);
  EXPECT_FALSE(s->Find(2)->preempted);
  while (s->HasWork() && ++guard < 100) d.Run();
  EXPECT_FALSE(s->HasWork());
  EXPECT_EQ(d.output(1), Reference(pa, 10));
  EXPECT_EQ(d.output(2), Reference(pb, 10));
  EXPECT_EQ(s->stats().num_preemptions, 1);
  EXPECT_DOUBLE_EQ(s->kv().Usage(), 0.0);
}

TEST(SchedulerTest, PreemptedSequenceResumesFromThePrefixCache) {
  // Room for both prompts and one spare block, so 2's cached blocks survive its preemption.
  auto s = Make(Config(4, 64), 4, 5);
  Driver d(s.get());
  ASSERT_TRUE(s->Add(Seq(1, Prompt(1, 8), 4)).ok());  // never needs more than 3 blocks
  ASSERT_TRUE(s->Add(Seq(2, Prompt(60, 8), 4)).ok());
  d.Run();               // 1 and 2 take 2 blocks each
  StepPlan p = d.Run();  // 1 takes the spare block for its first decode; 2 finds none
  EXPECT_EQ(p.preempted, std::vector<SeqId>{2});
  // 1 finishes after a few steps; meanwhile 2's full blocks sit in the evictable pool.
  int guard = 0;
  const ScheduledSeq* re = nullptr;
  while (re == nullptr && ++guard < 50) {
    p = d.Run();
    re = Entry(p, 2);
    if (re != nullptr) {
      EXPECT_EQ(re->start, 8);  // both prompt blocks hit
      EXPECT_EQ(re->num_tokens, 1);
    }
  }
  ASSERT_NE(re, nullptr);
  while (s->HasWork() && ++guard < 100) d.Run();
  EXPECT_EQ(d.output(2), Reference(Prompt(60, 8), 4));
  EXPECT_GE(s->kv().prefix_cache_stats().hits, 8);
}

TEST(SchedulerTest, SharedPromptIsServedFromThePrefixCache) {
  auto s = Make(Config(4, 64), 4, 32);
  Driver d(s.get());
  const std::vector<int32_t> prompt = Prompt(3, 30);
  ASSERT_TRUE(s->Add(Seq(1, prompt, 2)).ok());
  d.Run();
  ASSERT_TRUE(s->Add(Seq(2, prompt, 2)).ok());
  StepPlan p = d.Run();
  const ScheduledSeq* e = Entry(p, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->start, 28);
  EXPECT_EQ(e->num_tokens, 2);
  while (s->HasWork()) d.Run();
  EXPECT_EQ(d.output(2), d.output(1));
  EXPECT_EQ(s->kv().prefix_cache_stats().hits, 28);
  EXPECT_EQ(s->kv().prefix_cache_stats().queries, 60);
}

TEST(SchedulerTest, PrefillStopsAtTheLastFullBlockWhenAsked) {
  SchedulerConfig c = Config(4, 64);
  c.stop_prefill_at_last_block = true;
  auto s = Make(c, 4, 32);
  Driver d(s.get());
  const std::vector<int32_t> prompt = Prompt(3, 30);  // last full block before token 29 ends at 28
  ASSERT_TRUE(s->Add(Seq(1, prompt, 3)).ok());
  StepPlan p = d.Run();
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.seqs[0].num_tokens, 28);
  EXPECT_FALSE(p.seqs[0].samples);
  p = d.Run();
  EXPECT_EQ(p.seqs[0].start, 28);
  EXPECT_EQ(p.seqs[0].num_tokens, 2);
  EXPECT_TRUE(p.seqs[0].samples);
  while (s->HasWork()) d.Run();
  EXPECT_EQ(d.output(1), Reference(prompt, 3));
  // A prompt whose chunks already end before the boundary, and one that ends on it + 1.
  ASSERT_TRUE(s->Add(Seq(2, Prompt(50, 100), 1)).ok());
  std::vector<int> chunks;
  while (s->HasWork()) chunks.push_back(d.Run().num_tokens);
  EXPECT_EQ(chunks, (std::vector<int>{64, 32, 4}));
  ASSERT_TRUE(s->Add(Seq(3, Prompt(7, 9), 1)).ok());
  EXPECT_EQ(d.Run().num_tokens, 8);
  EXPECT_EQ(d.Run().num_tokens, 1);
  EXPECT_EQ(d.output(3), Reference(Prompt(7, 9), 1));
}

TEST(SchedulerTest, CancellationFreesBlocks) {
  auto s = Make(Config(4, 64), 4, 16);
  Driver d(s.get());
  for (SeqId id = 1; id <= 4; ++id) ASSERT_TRUE(s->Add(Seq(id, Prompt(10 * id, 6), 20)).ok());
  d.Run();
  EXPECT_EQ(s->kv().num_free_blocks(), 16 - 4 * 2);

  // Between steps: freed at once.
  ASSERT_TRUE(s->Cancel(1).ok());
  EXPECT_FALSE(s->kv().Contains(1));
  EXPECT_EQ(s->Find(1), nullptr);
  EXPECT_EQ(s->kv().num_free_blocks(), 16 - 3 * 2);
  EXPECT_EQ(s->Cancel(1).code(), absl::StatusCode::kNotFound);

  // While its step is in flight: freed when the step completes; its token is dropped.
  StepPlan p = s->Step();
  ASSERT_NE(Entry(p, 2), nullptr);
  ASSERT_TRUE(s->Cancel(2).ok());
  EXPECT_TRUE(s->Find(2)->cancelled);
  EXPECT_TRUE(s->kv().Contains(2));  // the forward pass may still be writing its K/V
  std::vector<int32_t> sampled;
  d.Forward(p, &sampled);
  absl::StatusOr<std::vector<SeqId>> done = s->OnStepDone(p, sampled);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->empty());
  EXPECT_FALSE(s->kv().Contains(2));
  EXPECT_EQ(s->Find(2), nullptr);

  // A step abandoned (failed forward pass): released by the next Step().
  p = s->Step();
  ASSERT_TRUE(s->Finish(3).ok());
  EXPECT_TRUE(s->kv().Contains(3));
  p = s->Step();
  EXPECT_FALSE(s->kv().Contains(3));
  EXPECT_EQ(Entry(p, 3), nullptr);
  sampled.clear();
  d.Forward(p, &sampled);
  ASSERT_TRUE(s->OnStepDone(p, sampled).ok());

  // A waiting sequence.
  ASSERT_TRUE(s->Add(Seq(5, Prompt(0, 4), 2)).ok());
  EXPECT_EQ(s->stats().num_waiting, 1);
  ASSERT_TRUE(s->Cancel(5).ok());
  EXPECT_EQ(s->stats().num_waiting, 0);

  ASSERT_TRUE(s->Cancel(4).ok());
  EXPECT_EQ(s->stats().num_cancelled, 4);  // 1, 2, 4, 5 (3 was finished)
  EXPECT_FALSE(s->HasWork());
  EXPECT_DOUBLE_EQ(s->kv().Usage(), 0.0);
  EXPECT_EQ(s->kv().num_free_blocks(), 16);
}

TEST(SchedulerTest, OnStepDoneChecksItsArguments) {
  auto s = Make(Config(4, 64), 4, 16);
  ASSERT_TRUE(s->Add(Seq(1, Prompt(0, 4), 4)).ok());
  StepPlan p = s->Step();
  EXPECT_EQ(s->OnStepDone(p, {}).status().code(), absl::StatusCode::kInvalidArgument);
  StepPlan stale = p;
  stale.step = 999;
  const int32_t token = 5;
  EXPECT_EQ(s->OnStepDone(stale, {&token, 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(s->OnStepDone(p, {&token, 1}).ok());
  EXPECT_EQ(s->OnStepDone(p, {&token, 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);  // twice
  EXPECT_EQ(s->Find(1)->tokens.back(), 5);
  EXPECT_EQ(s->Finish(1).code(), absl::StatusCode::kOk);
  EXPECT_EQ(s->Finish(1).code(), absl::StatusCode::kNotFound);
}

TEST(SchedulerTest, AdmitsFirstComeFirstServed) {
  // Two sequence slots, five requests: admitted and finished strictly in arrival order.
  auto s = Make(Config(2, 64), 4, 64);
  Driver d(s.get());
  for (SeqId id = 1; id <= 5; ++id) ASSERT_TRUE(s->Add(Seq(id, Prompt(id, 3 + id), 3)).ok());
  std::vector<SeqId> admitted, finished_order;
  while (s->HasWork()) {
    std::vector<SeqId> finished;
    StepPlan p = d.Run(&finished);
    EXPECT_LE(s->stats().num_running, 2);
    for (const ScheduledSeq& e : p.seqs) {
      if (e.start == 0) admitted.push_back(e.id);
    }
    finished_order.insert(finished_order.end(), finished.begin(), finished.end());
  }
  EXPECT_EQ(admitted, (std::vector<SeqId>{1, 2, 3, 4, 5}));
  EXPECT_EQ(finished_order, (std::vector<SeqId>{1, 2, 3, 4, 5}));
}

TEST(SchedulerTest, ALargeRequestIsNotOvertakenBySmallerOnes) {
  auto s = Make(Config(4, 64), 4, 8);
  Driver d(s.get());
  ASSERT_TRUE(s->Add(Seq(1, Prompt(0, 12), 4)).ok());  // 3 blocks, growing to 4
  d.Run();
  ASSERT_TRUE(s->Add(Seq(2, Prompt(20, 24), 2)).ok());  // 6 blocks: must wait for 1
  ASSERT_TRUE(s->Add(Seq(3, Prompt(50, 2), 2)).ok());   // would fit, but arrived later
  std::vector<SeqId> finished;
  while (finished.empty()) {
    StepPlan p = d.Run(&finished);
    EXPECT_EQ(Entry(p, 2), nullptr);
    EXPECT_EQ(Entry(p, 3), nullptr);
  }
  EXPECT_EQ(finished, std::vector<SeqId>{1});
  StepPlan p = d.Run();
  EXPECT_NE(Entry(p, 2), nullptr);
  EXPECT_NE(Entry(p, 3), nullptr);  // 2 took 6 of 8 blocks; 3 fits beside it
}

// Many sequences with shared prefixes arrive over time into a cache far too small for all of
// them; some stop early, some are cancelled (some mid-step). Every step is checked against the
// policy and the fake model, and every sequence's output must equal what it generates alone.
struct SimCase {
  int block_size;
  int64_t num_blocks;
  int max_num_seqs;
  int max_batched_tokens;
  int max_waiting;
  bool prefix_caching;
};

class SchedulerSimulationTest : public testing::TestWithParam<SimCase> {};

TEST_P(SchedulerSimulationTest, AlwaysTerminatesWithEveryBlockFree) {
  const SimCase c = GetParam();
  auto s = Make(Config(c.max_num_seqs, c.max_batched_tokens, c.max_waiting), c.block_size,
                c.num_blocks, c.prefix_caching);
  Driver d(s.get());
  std::mt19937 rng(c.block_size * 1000 + c.num_blocks);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  constexpr int32_t kEos = 0;
  const std::vector<std::vector<int32_t>> prefixes = {{}, Prompt(5, 9), Prompt(40, 17)};

  struct Req {
    std::vector<int32_t> prompt;
    int max_tokens;
    bool cancelled = false;
    bool done = false;
  };
  std::map<SeqId, Req> reqs;
  const int kTotal = 300;
  SeqId next_id = 0;
  std::set<SeqId> decoding;  // sampled last step and still running: must decode next step
  int64_t preemptions_seen = 0;
  int steps = 0;

  while ((next_id < kTotal || s->HasWork()) && steps < 100000) {
    // Arrivals.
    for (int n = uniform(0, 2); n > 0 && next_id < kTotal; --n) {
      Req r;
      r.prompt = prefixes[uniform(0, 2)];
      for (int k = uniform(r.prompt.empty() ? 1 : 0, 12); k > 0; --k) {
        r.prompt.push_back(uniform(1, kVocab - 1));
      }
      r.max_tokens = uniform(1, 24);
      const int64_t need = static_cast<int64_t>(r.prompt.size()) + r.max_tokens - 1;
      const bool full = s->stats().num_waiting >= c.max_waiting;
      absl::Status st = s->Add(Seq(next_id, r.prompt, r.max_tokens));
      if (need > s->max_sequence_tokens()) {
        ASSERT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
        ++next_id;
      } else if (full) {
        ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted);  // retried later
      } else {
        ASSERT_TRUE(st.ok()) << st;
        reqs[next_id++] = r;
      }
    }
    // Cancellations between steps.
    if (!reqs.empty() && uniform(0, 99) < 3) {
      auto it = reqs.begin();
      std::advance(it, uniform(0, static_cast<int>(reqs.size()) - 1));
      if (!it->second.done && s->Cancel(it->first).ok()) {
        it->second.cancelled = it->second.done = true;
        decoding.erase(it->first);
      }
    }

    StepPlan plan = s->Step();
    ++steps;
    ASSERT_LE(plan.num_tokens, c.max_batched_tokens);
    ASSERT_LE(static_cast<int>(plan.seqs.size()), c.max_num_seqs);
    int sum = 0;
    std::set<SeqId> ids;
    bool seen_prefill = false;
    for (const ScheduledSeq& e : plan.seqs) {
      sum += e.num_tokens;
      ASSERT_TRUE(ids.insert(e.id).second) << "sequence " << e.id << " twice in a step";
      const bool decode = e.num_tokens == 1 && e.samples && decoding.contains(e.id);
      if (!decode) seen_prefill = true;
      ASSERT_FALSE(decode && seen_prefill) << "decode after a prefill chunk";
    }
    ASSERT_EQ(sum, plan.num_tokens);
    preemptions_seen += static_cast<int64_t>(plan.preempted.size());
    for (SeqId id : decoding) {
      const bool preempted =
          std::find(plan.preempted.begin(), plan.preempted.end(), id) != plan.preempted.end();
      ASSERT_TRUE(ids.contains(id) != preempted) << "decode of " << id << " skipped";
    }
    ASSERT_TRUE(s->kv().CheckConsistency().ok()) << s->kv().CheckConsistency();

    std::vector<int32_t> sampled;
    d.Forward(plan, &sampled);
    if (HasFatalFailure()) return;
    // Now and then a client goes away while its step is in flight.
    SeqId cancelled_in_flight = -1;
    if (!plan.seqs.empty() && uniform(0, 99) < 3) {
      cancelled_in_flight = plan.seqs[uniform(0, static_cast<int>(plan.seqs.size()) - 1)].id;
      ASSERT_TRUE(s->Cancel(cancelled_in_flight).ok());
      reqs[cancelled_in_flight].cancelled = reqs[cancelled_in_flight].done = true;
    }
    absl::StatusOr<std::vector<SeqId>> finished = s->OnStepDone(plan, sampled);
    ASSERT_TRUE(finished.ok()) << finished.status();
    for (SeqId id : *finished) {
      ASSERT_EQ(static_cast<int>(d.output(id).size()), reqs[id].max_tokens);
      reqs[id].done = true;
    }
    decoding.clear();
    for (const ScheduledSeq& e : plan.seqs) {
      if (!e.samples || reqs[e.id].done) continue;
      if (d.output(e.id).back() == kEos) {  // the engine's stop check
        ASSERT_TRUE(s->Finish(e.id).ok());
        reqs[e.id].done = true;
      } else {
        decoding.insert(e.id);
      }
    }
    if (cancelled_in_flight >= 0) {
      ASSERT_FALSE(s->kv().Contains(cancelled_in_flight));
    }
    ASSERT_TRUE(s->kv().CheckConsistency().ok()) << s->kv().CheckConsistency();
  }

  ASSERT_FALSE(s->HasWork()) << "did not terminate in " << steps << " steps";
  EXPECT_EQ(next_id, kTotal);
  EXPECT_DOUBLE_EQ(s->kv().Usage(), 0.0);
  EXPECT_EQ(s->kv().num_free_blocks(), c.num_blocks);
  for (kv::BlockId b = 0; b < c.num_blocks; ++b) EXPECT_EQ(s->kv().allocator().ref_count(b), 0);
  EXPECT_EQ(s->stats().num_preemptions, preemptions_seen);
  int completed = 0;
  for (auto& [id, r] : reqs) {
    ASSERT_TRUE(r.done) << id;
    const std::vector<int32_t> want = Reference(r.prompt, r.max_tokens, kEos);
    const std::vector<int32_t>& got = d.output(id);
    if (r.cancelled) {
      ASSERT_LE(got.size(), want.size());
      EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin())) << id;
    } else {
      EXPECT_EQ(got, want) << "sequence " << id;
      ++completed;
    }
  }
  EXPECT_GT(completed, kTotal / 2);
  if (c.num_blocks * c.block_size < 200) {
    EXPECT_GT(preemptions_seen, 0) << "the cache was meant to be too small";
  }
  if (c.prefix_caching) {
    EXPECT_GT(s->kv().prefix_cache_stats().hits, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, SchedulerSimulationTest,
                         testing::Values(SimCase{4, 24, 6, 16, 20, true},
                                         SimCase{4, 24, 6, 16, 20, false},
                                         SimCase{1, 48, 4, 8, 10, true},
                                         SimCase{16, 6, 8, 32, 50, true},
                                         SimCase{2, 400, 16, 64, 30, true}));

}  // namespace
}  // namespace loom::sched
