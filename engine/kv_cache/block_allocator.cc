#include "engine/kv_cache/block_allocator.h"

#include <algorithm>
#include <cassert>

#include "absl/strings/str_format.h"

namespace loom::kv {
namespace {

// splitmix64's finalizer.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t DefaultBlockHash(uint64_t parent_hash, std::span<const int32_t> tokens) {
  uint64_t h = Mix(parent_hash ^ Mix(tokens.size()));
  for (int32_t t : tokens) h = Mix(h ^ static_cast<uint32_t>(t));
  return h;
}

BlockAllocator::BlockAllocator(int64_t num_blocks, int block_size, BlockHashFn hash)
    : block_size_(block_size), hash_fn_(hash), blocks_(num_blocks) {
  free_.reserve(num_blocks);
  // Popped from the back, so block 0 is handed out first.
  for (int64_t i = num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<BlockId>(i));
}

BlockId BlockAllocator::Allocate() {
  BlockId id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else if (lru_head_ != kNoBlock) {
    id = lru_head_;
    RemoveEvictable(id);
    Uncache(id);
  } else {
    return kNoBlock;
  }
  assert(blocks_[id].ref == 0);
  blocks_[id].ref = 1;
  return id;
}

void BlockAllocator::Ref(BlockId id) {
  Block& b = blocks_[id];
  assert(b.ref > 0 || b.evictable);
  if (b.ref == 0) RemoveEvictable(id);
  ++b.ref;
}

void BlockAllocator::Unref(BlockId id) {
  Block& b = blocks_[id];
  assert(b.ref > 0);
  if (--b.ref > 0) return;
  if (b.stamp != 0) {
    PushEvictable(id);
  } else {
    free_.push_back(id);
  }
}

int BlockAllocator::ref_count(BlockId id) const { return blocks_[id].ref; }

bool BlockAllocator::Matches(const Block& b, CachedBlock parent,
                             std::span<const int32_t> tokens) const {
  return b.stamp != 0 && b.parent.id == parent.id && b.parent.stamp == parent.stamp &&
         std::equal(b.tokens.begin(), b.tokens.end(), tokens.begin(), tokens.end());
}

CachedBlock BlockAllocator::Find(CachedBlock parent, std::span<const int32_t> tokens) const {
  if (static_cast<int>(tokens.size()) != block_size_ || !Live(parent)) return {};
  auto it = index_.find(hash_fn_(ParentHash(parent), tokens));
  if (it == index_.end()) return {};
  const Block& b = blocks_[it->second];
  if (!Matches(b, parent, tokens)) return {};  // a hash collision
  return {it->second, b.stamp};
}

CachedBlock BlockAllocator::Insert(BlockId id, CachedBlock parent,
                                   std::span<const int32_t> tokens) {
  Block& b = blocks_[id];
  assert(b.ref > 0 && b.stamp == 0);
  if (static_cast<int>(tokens.size()) != block_size_ || !Live(parent)) return {};
  const uint64_t h = hash_fn_(ParentHash(parent), tokens);
  auto [it, inserted] = index_.try_emplace(h, id);
  if (!inserted) {
    const Block& existing = blocks_[it->second];
    if (Matches(existing, parent, tokens)) return {it->second, existing.stamp};
    return {};  // a different prefix with the same hash holds the slot
  }
  b.stamp = next_stamp_++;
  b.hash = h;
  b.parent = parent;
  b.tokens.assign(tokens.begin(), tokens.end());
  return {id, b.stamp};
}

void BlockAllocator::PushEvictable(BlockId id) {
  Block& b = blocks_[id];
  b.evictable = true;
  b.prev = lru_tail_;
  b.next = kNoBlock;
  if (lru_tail_ != kNoBlock) {
    blocks_[lru_tail_].next = id;
  } else {
    lru_head_ = id;
  }
  lru_tail_ = id;
  ++num_evictable_;
}

void BlockAllocator::RemoveEvictable(BlockId id) {
  Block& b = blocks_[id];
  assert(b.evictable);
  if (b.prev != kNoBlock) {
    blocks_[b.prev].next = b.next;
  } else {
    lru_head_ = b.next;
  }
  if (b.next != kNoBlock) {
    blocks_[b.next].prev = b.prev;
  } else {
    lru_tail_ = b.prev;
  }
  b.prev = b.next = kNoBlock;
  b.evictable = false;
  --num_evictable_;
}

void BlockAllocator::Uncache(BlockId id) {
  Block& b = blocks_[id];
  if (b.stamp == 0) return;
  auto it = index_.find(b.hash);
  if (it != index_.end() && it->second == id) index_.erase(it);
  b.stamp = 0;
  b.hash = 0;
  b.parent = {};
  b.tokens.clear();
}

std::vector<BlockId> BlockAllocator::EvictionOrder() const {
  std::vector<BlockId> order;
  order.reserve(num_evictable_);
  for (BlockId id = lru_head_; id != kNoBlock; id = blocks_[id].next) order.push_back(id);
  return order;
}

absl::Status BlockAllocator::CheckConsistency() const {
  const int64_t n = num_blocks();
  auto fail = [](auto&&... args) { return absl::InternalError(absl::StrFormat(args...)); };
  std::vector<int> seen(n, 0);  // bit 0: in free_, bit 1: in the evictable list
  for (BlockId id : free_) {
    if (id < 0 || id >= n) return fail("free list holds block %d out of range", id);
    if (seen[id] & 1) return fail("block %d is twice in the free list", id);
    seen[id] |= 1;
    const Block& b = blocks_[id];
    if (b.ref != 0 || b.stamp != 0 || b.evictable) {
      return fail("free block %d has ref %d, stamp %d, evictable %d", id, b.ref, b.stamp,
                  b.evictable);
    }
  }
  int64_t listed = 0;
  BlockId prev = kNoBlock;
  for (BlockId id = lru_head_; id != kNoBlock; id = blocks_[id].next) {
    if (id < 0 || id >= n) return fail("evictable list holds block %d out of range", id);
    if (seen[id] & 2) return fail("evictable list has a cycle at block %d", id);
    seen[id] |= 2;
    const Block& b = blocks_[id];
    if (b.prev != prev) return fail("evictable block %d has a wrong back link", id);
    if (b.ref != 0 || b.stamp == 0 || !b.evictable) {
      return fail("evictable block %d has ref %d, stamp %d", id, b.ref, b.stamp);
    }
    if (seen[id] & 1) return fail("block %d is both free and evictable", id);
    prev = id;
    ++listed;
  }
  if (prev != lru_tail_) return fail("evictable list tail is %d, expected %d", lru_tail_, prev);
  if (listed != num_evictable_) {
    return fail("evictable count %d, list holds %d", num_evictable_, listed);
  }
  int64_t cached = 0;
  for (int64_t id = 0; id < n; ++id) {
    const Block& b = blocks_[id];
    if (b.ref < 0) return fail("block %d has ref %d", id, b.ref);
    if (b.ref == 0 && seen[id] == 0) return fail("unreferenced block %d is in no pool", id);
    if (b.ref > 0 && seen[id] != 0) return fail("referenced block %d is in a free pool", id);
    if (b.stamp == 0) continue;
    ++cached;
    if (b.stamp >= next_stamp_) return fail("block %d has a future stamp", id);
    if (static_cast<int>(b.tokens.size()) != block_size_) {
      return fail("cached block %d holds %d tokens", id, b.tokens.size());
    }
    auto it = index_.find(b.hash);
    if (it == index_.end() || it->second != id) return fail("cached block %d is not indexed", id);
  }
  if (cached != static_cast<int64_t>(index_.size())) {
    return fail("%d cached blocks, index holds %d", cached, index_.size());
  }
  return absl::OkStatus();
}

}  // namespace loom::kv
