// The physical blocks of the paged KV cache (vLLM's BlockPool): reference counts, the pool of free
// blocks, and the prefix-cache index that finds a full block by the tokens it holds and the prefix
// before them. Pure bookkeeping: the K/V memory itself belongs to the backend, which addresses it
// by block id. Most code uses KvBlockManager (kv_block_manager.h), which builds on this.
//
//   loom::kv::BlockAllocator pool(/*num_blocks=*/1024, /*block_size=*/16);
//   loom::kv::BlockId b = pool.Allocate();                 // ref count 1, or kNoBlock when full
//   ... the backend writes 16 tokens' K/V into block b ...
//   loom::kv::CachedBlock c = pool.Insert(b, /*parent=*/{}, tokens);  // now findable
//   pool.Unref(b);                                         // free, but kept (evictable) while
//   cached loom::kv::CachedBlock hit = pool.Find(/*parent=*/{}, tokens);     // hit.id == b
//   pool.Ref(hit.id);                                      // reused without recomputing
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"

namespace loom::kv {

using BlockId = int32_t;
inline constexpr BlockId kNoBlock = -1;

// A cached block as seen at one moment. The block still holds the same prefix iff its stamp is
// unchanged (every insertion into the index gets a new stamp; eviction clears it). {kNoBlock, 0}
// stands for the empty prefix, the parent of a sequence's first block.
struct CachedBlock {
  BlockId id = kNoBlock;
  uint64_t stamp = 0;
};

// Chained block hash: hash of (the parent block's hash, this block's tokens).
using BlockHashFn = uint64_t (*)(uint64_t parent_hash, std::span<const int32_t> tokens);
uint64_t DefaultBlockHash(uint64_t parent_hash, std::span<const int32_t> tokens);
// The parent hash of a sequence's first block.
inline constexpr uint64_t kRootBlockHash = 0x6c6f6f6d2d6b7621ULL;

// Not thread-safe. Methods taking a BlockId require 0 <= id < num_blocks(); preconditions are
// checked by assert().
class BlockAllocator {
 public:
  // `hash` is replaceable so that tests can force collisions.
  BlockAllocator(int64_t num_blocks, int block_size, BlockHashFn hash = DefaultBlockHash);

  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int block_size() const { return block_size_; }
  // Blocks with ref count 0: never-cached ones plus evictable cached ones.
  int64_t num_free() const { return static_cast<int64_t>(free_.size()) + num_evictable_; }
  int64_t num_evictable() const { return num_evictable_; }
  // Blocks findable in the prefix index, referenced or not.
  int64_t num_cached() const { return static_cast<int64_t>(index_.size()); }

  // Returns an unreferenced block with ref count 1: one holding no cached prefix when there is
  // one, else the least recently used evictable block, whose prefix leaves the index. kNoBlock
  // when every block is referenced.
  BlockId Allocate();
  // Adds a reference. The block must be referenced already or cached (a Find() result); a cached
  // block with ref count 0 leaves the evictable pool.
  void Ref(BlockId id);
  // Drops a reference. At 0 a cached block becomes the most recently used evictable block; any
  // other block returns to the free pool.
  void Unref(BlockId id);
  int ref_count(BlockId id) const;

  // The cached block holding `tokens` (block_size of them) right after the prefix `parent`
  // (a CachedBlock from Find()/Insert(), or {} for the start of a sequence); {} on a miss. A hit
  // is exact: the hash only selects the candidate, whose tokens and parent are then compared.
  CachedBlock Find(CachedBlock parent, std::span<const int32_t> tokens) const;
  // Makes referenced block `id`, whose K/V for `tokens` after `parent` is written, findable.
  // Returns the block now findable under that key: `id`, or an existing block that already holds
  // the same prefix (`id` then stays uncached), or {} when it cannot be indexed (`parent` has
  // been evicted since, or another prefix with the same hash holds the slot).
  CachedBlock Insert(BlockId id, CachedBlock parent, std::span<const int32_t> tokens);
  bool IsCached(BlockId id) const { return blocks_[id].stamp != 0; }
  // The chained hash of a cached block.
  uint64_t hash(BlockId id) const { return blocks_[id].hash; }

  // Evictable blocks, the next one to be evicted first.
  std::vector<BlockId> EvictionOrder() const;
  // Checks every internal invariant (pools partition the blocks, index and blocks agree, ...).
  absl::Status CheckConsistency() const;

 private:
  struct Block {
    int32_t ref = 0;
    uint64_t stamp = 0;  // nonzero iff cached
    uint64_t hash = 0;
    CachedBlock parent;
    std::vector<int32_t> tokens;  // while cached
    BlockId prev = kNoBlock;      // evictable list links
    BlockId next = kNoBlock;
    bool evictable = false;
  };

  bool Live(CachedBlock c) const {
    return c.id == kNoBlock || (c.stamp != 0 && blocks_[c.id].stamp == c.stamp);
  }
  uint64_t ParentHash(CachedBlock parent) const {
    return parent.id == kNoBlock ? kRootBlockHash : blocks_[parent.id].hash;
  }
  bool Matches(const Block& b, CachedBlock parent, std::span<const int32_t> tokens) const;
  void PushEvictable(BlockId id);
  void RemoveEvictable(BlockId id);
  void Uncache(BlockId id);

  int block_size_;
  BlockHashFn hash_fn_;
  std::vector<Block> blocks_;
  std::vector<BlockId> free_;    // unreferenced and uncached; popped from the back
  BlockId lru_head_ = kNoBlock;  // evictable list, least recently used first
  BlockId lru_tail_ = kNoBlock;
  int64_t num_evictable_ = 0;
  uint64_t next_stamp_ = 1;
  absl::flat_hash_map<uint64_t, BlockId> index_;  // chained hash -> cached block
};

}  // namespace loom::kv
