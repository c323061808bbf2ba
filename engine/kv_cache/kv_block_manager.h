// The paged KV cache's bookkeeping, as vLLM's block manager: a fixed number of blocks of
// `block_size` token slots, a block table per sequence, and automatic prefix caching (full blocks
// whose K/V is written are indexed by a hash chained over the token prefix, shared by reference
// count, kept after their sequences end and evicted least recently used first). Pure code: the
// backend owns the K/V memory and reads the block tables; the scheduler calls this between steps.
//
//   LOOM_ASSIGN_OR_RETURN(int64_t n, loom::kv::NumBlocksForBudget(
//       /*budget_bytes=*/1 << 30, loom::kv::KvBytesPerToken(/*n_layers=*/32, /*kv_dim=*/320),
//       /*block_size=*/16));
//   LOOM_ASSIGN_OR_RETURN(auto kv, loom::kv::KvBlockManager::Create({.num_blocks = n}));
//   LOOM_ASSIGN_OR_RETURN(int cached, kv->Allocate(/*seq_id=*/1, prompt));  // slots for the prompt
//   // ... compute prompt[cached..] into kv->BlockTable(1), then:
//   LOOM_RETURN_IF_ERROR(kv->MarkComputed(1, prompt.size()));  // its full blocks become shareable
//   LOOM_RETURN_IF_ERROR(kv->AppendSlot(1, next_token));        // one more slot for a decode
//   LOOM_RETURN_IF_ERROR(kv->Free(1));
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/kv_cache/block_allocator.h"

namespace loom::kv {

using SeqId = int64_t;

struct KvCacheConfig {
  int block_size = 16;     // token slots per block, [1, 1024]
  int64_t num_blocks = 0;  // [1, kMaxNumBlocks]; see NumBlocksForBudget()
  bool enable_prefix_caching = true;

  static constexpr int kMaxBlockSize = 1024;
  static constexpr int64_t kMaxNumBlocks = int64_t{1} << 24;

  // InvalidArgument naming the first out-of-range field.
  absl::Status Validate() const;
};

// Bytes of K and V that one token takes over all layers: 2 * n_layers * kv_dim * bytes_per_element
// (fp16: 2 bytes).
int64_t KvBytesPerToken(int n_layers, int kv_dim, int bytes_per_element = 2);

// How many whole blocks of `block_size` tokens a budget of `budget_bytes` holds. InvalidArgument
// for non-positive inputs or a budget smaller than one block.
absl::StatusOr<int64_t> NumBlocksForBudget(int64_t budget_bytes, int64_t kv_bytes_per_token,
                                           int block_size);

// Prefix-cache counters in tokens, with vLLM's meaning: `queries` sums the tokens of every
// successful Allocate(), `hits` the leading tokens found cached. Zero when caching is off.
struct PrefixCacheStats {
  int64_t queries = 0;
  int64_t hits = 0;
};

// Says whether a sequence may resume after the cached prefix of `num_tokens` tokens (a multiple of
// the block size) whose last block is `last`. A hit is cut back to the longest prefix it accepts
// (the empty prefix needs no approval); DuoAttention uses it for prefixes whose streaming-head
// state is kept.
using PrefixHitFilter = std::function<bool(CachedBlock last, int num_tokens)>;

// The prefix of a sequence that the index holds: its last cached block and its length in tokens
// ({} and 0 when none).
struct IndexedPrefix {
  CachedBlock last;
  int num_tokens = 0;
};

// Not thread-safe: one engine thread owns it. Block tables returned by BlockTable() stay valid
// until the next non-const call.
class KvBlockManager {
 public:
  static absl::StatusOr<std::unique_ptr<KvBlockManager>> Create(const KvCacheConfig& config);
  // `config` must be valid. `hash` is replaceable so that tests can force collisions.
  explicit KvBlockManager(const KvCacheConfig& config, BlockHashFn hash = DefaultBlockHash);

  const KvCacheConfig& config() const { return config_; }
  int block_size() const { return config_.block_size; }
  int64_t num_blocks() const { return config_.num_blocks; }
  // Blocks no sequence references (including cached ones kept for reuse).
  int64_t num_free_blocks() const { return pool_.num_free(); }
  // Fraction of blocks referenced by some sequence, in [0, 1] (vLLM's kv_cache_usage_perc).
  double Usage() const;
  int64_t BlocksForTokens(int64_t n_tokens) const;

  // Whether `n_tokens` slots fit in the free blocks now, not counting prefix-cache hits.
  bool CanAllocate(int64_t n_tokens) const;
  // The free blocks Allocate(seq, tokens) would take now: new blocks plus cached blocks that
  // are hit but currently unreferenced (hits on blocks in use cost nothing).
  int64_t FreeBlocksNeeded(std::span<const int32_t> tokens) const;

  // Creates the block table of `seq_id` with slots for all of `tokens`, sharing the cached full
  // blocks that hold its longest cached prefix. Returns how many leading tokens are cached (a
  // multiple of block_size, below tokens.size() so that at least the last token gets computed);
  // the caller computes the rest. InvalidArgument for no tokens, AlreadyExists for a known
  // sequence, ResourceExhausted (nothing changed) when the free blocks do not suffice.
  absl::StatusOr<int> Allocate(SeqId seq_id, std::span<const int32_t> tokens);
  // Adds one slot, for `token`, taking a new block when the last one is full. NotFound;
  // ResourceExhausted (nothing changed) when a block is needed and none is free.
  absl::Status AppendSlot(SeqId seq_id, int32_t token);
  // Records that the K/V of the first `num_tokens` tokens is written; the full blocks among them
  // enter the prefix-cache index. `num_tokens` never decreases and is at most NumTokens(seq_id).
  absl::Status MarkComputed(SeqId seq_id, int num_tokens);
  // Drops the sequence and its references; cached blocks stay findable until evicted, the
  // sequence's last block first. NotFound for an unknown sequence.
  absl::Status Free(SeqId seq_id);

  bool Contains(SeqId seq_id) const { return seqs_.contains(seq_id); }
  // Slots the sequence holds (0 when unknown).
  int NumTokens(SeqId seq_id) const;
  // Block of each block_size slots of the sequence, in order (empty when unknown).
  std::span<const BlockId> BlockTable(SeqId seq_id) const;

  // Restricts later prefix hits (Allocate, FreeBlocksNeeded) to prefixes `filter` accepts; an
  // empty function lifts the restriction.
  void SetPrefixHitFilter(PrefixHitFilter filter) { hit_filter_ = std::move(filter); }
  // The sequence's leading blocks that are in the prefix index: after Allocate() its hits, then
  // extended by MarkComputed(). {} for an unknown sequence or with caching off.
  IndexedPrefix Indexed(SeqId seq_id) const;

  PrefixCacheStats prefix_cache_stats() const { return stats_; }
  const BlockAllocator& allocator() const { return pool_; }
  // Checks the allocator's invariants and that every block's ref count equals the number of
  // block tables holding it, with no block twice in one table.
  absl::Status CheckConsistency() const;

 private:
  struct Seq {
    std::vector<BlockId> blocks;
    std::vector<int32_t> tokens;  // one per slot
    int num_computed = 0;
    int num_indexed = 0;  // leading blocks handled by the prefix index
    CachedBlock last;     // the cached block holding the first num_indexed blocks' prefix
    bool chain_broken = false;
  };

  // The cached blocks holding the longest cached prefix of `tokens` (below its full length).
  std::vector<CachedBlock> FindCachedPrefix(std::span<const int32_t> tokens) const;

  KvCacheConfig config_;
  BlockAllocator pool_;
  absl::flat_hash_map<SeqId, Seq> seqs_;
  PrefixCacheStats stats_;
  PrefixHitFilter hit_filter_;
};

}  // namespace loom::kv
