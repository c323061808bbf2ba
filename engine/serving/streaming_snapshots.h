// Prefix caching for DuoAttention's streaming heads. A prefix-cache hit restores the paged
// (retrieval-head) K/V of the cached blocks, but a streaming head's cache is a per-sequence ring of
// the first `sink` and last `recent` positions, which cannot be rebuilt from the blocks. So the
// engine keeps copies of a sequence's ring taken right after a prefill chunk that ends on a block
// boundary, keyed by the cached block that ends that prefix (kv::CachedBlock: id and stamp, so a
// block evicted and reused for another prefix never matches), and the scheduler only lets a
// sequence resume after a prefix that has one. At most `capacity` copies live at a time; the
// least recently saved or restored one goes first.
//
//   StreamingSnapshots snaps(layout, /*capacity=*/16);
//   sched->SetPrefixHitFilter([&](kv::CachedBlock b, int) { return snaps.Contains(b); });
//   // after a prefill chunk ending at a block boundary (kv().Indexed(id).num_tokens == end):
//   snaps.Save(kv().Indexed(id).last, ring);
//   // when a sequence is admitted with a prefix hit, before its first chunk:
//   if (!snaps.Restore(kv().Indexed(id).last, &ring)) { /* cannot happen after the filter */ }
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/kv_cache/block_allocator.h"
#include "engine/model/duo_layout.h"

namespace loom::engine {

// Not thread-safe: the engine thread owns it.
class StreamingSnapshots {
 public:
  // `capacity` >= 0 copies of `layout`'s streaming cache; memory is taken as copies are saved.
  StreamingSnapshots(std::shared_ptr<const DuoLayout> layout, int capacity);

  int capacity() const { return capacity_; }
  int size() const { return static_cast<int>(index_.size()); }
  // Bytes of one copy, and of those held now.
  int64_t bytes_per_snapshot() const { return bytes_per_snapshot_; }
  int64_t bytes() const { return static_cast<int64_t>(slots_.size()) * bytes_per_snapshot_; }

  bool Contains(kv::CachedBlock key) const { return index_.contains(KeyOf(key)); }
  // Keeps a copy of `ring` under `key` (replacing one held there), evicting the least recently
  // used copy when full. A no-op with capacity 0.
  void Save(kv::CachedBlock key, const StreamingKv& ring);
  // Copies the snapshot under `key` into `ring`; false (ring untouched) when there is none.
  bool Restore(kv::CachedBlock key, StreamingKv* ring);

 private:
  using Key = std::pair<int64_t, uint64_t>;  // CachedBlock id, stamp
  struct Slot {
    std::unique_ptr<StreamingKv> ring;
    Key key;
    uint64_t last_used = 0;
  };
  static Key KeyOf(kv::CachedBlock b) { return {b.id, b.stamp}; }

  std::shared_ptr<const DuoLayout> layout_;
  int capacity_;
  int64_t bytes_per_snapshot_;
  uint64_t clock_ = 0;
  std::vector<Slot> slots_;
  absl::flat_hash_map<Key, size_t> index_;  // key -> index into slots_
};

}  // namespace loom::engine
