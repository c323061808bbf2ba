#include "engine/serving/streaming_snapshots.h"

#include <utility>

namespace loom::engine {

StreamingSnapshots::StreamingSnapshots(std::shared_ptr<const DuoLayout> layout, int capacity)
    : layout_(std::move(layout)),
      capacity_(capacity < 0 ? 0 : capacity),
      bytes_per_snapshot_(layout_->StreamingBytesPerSequence()) {}

void StreamingSnapshots::Save(kv::CachedBlock key, const StreamingKv& ring) {
  if (capacity_ == 0) return;
  const Key k = KeyOf(key);
  size_t at;
  if (auto it = index_.find(k); it != index_.end()) {
    at = it->second;
  } else if (static_cast<int>(slots_.size()) < capacity_) {
    at = slots_.size();
    slots_.push_back({std::make_unique<StreamingKv>(layout_), k, 0});
    index_[k] = at;
  } else {
    at = 0;
    for (size_t i = 1; i < slots_.size(); ++i) {
      if (slots_[i].last_used < slots_[at].last_used) at = i;
    }
    index_.erase(slots_[at].key);
    slots_[at].key = k;
    index_[k] = at;
  }
  slots_[at].ring->CopyFrom(ring);
  slots_[at].last_used = ++clock_;
}

bool StreamingSnapshots::Restore(kv::CachedBlock key, StreamingKv* ring) {
  auto it = index_.find(KeyOf(key));
  if (it == index_.end()) return false;
  Slot& slot = slots_[it->second];
  ring->CopyFrom(*slot.ring);
  slot.last_used = ++clock_;
  return true;
}

}  // namespace loom::engine
