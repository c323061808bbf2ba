// DuoAttention's memory layout (arXiv 2410.10819): which KV heads of each layer are retrieval heads
// (full, paged KV cache) and which are streaming heads (a fixed cache of the first `sink` and the
// last `recent` positions per sequence), and where each head's rows live. A KvPool or KvSequence
// built with a layout stores rows of the retrieval heads only (per-layer widths, per-layer
// offsets); StreamingKv is one sequence's fixed-size cache for the streaming heads. Heads come from
// a DuoPattern (duo_pattern.h) and a sparsity.
//
//   LOOM_ASSIGN_OR_RETURN(std::shared_ptr<const DuoLayout> duo,
//                         DuoLayout::Create(model.config(), streaming_flags, /*sink=*/64,
//                                           /*recent=*/256));
//   KvSequence kv(model.config(), /*capacity=*/2048, duo);  // pages retrieval heads, owns a ring
//   backend->Forward({{&kv, prompt, false}}, &logits);
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model_config.h"
#include "kernels/dtype.h"

namespace loom::engine {

class DuoLayout {
 public:
  // `streaming` holds n_layers * n_kv_heads flags, layer-major (true: a streaming head).
  // InvalidArgument for a wrong count, sink < 0, recent < 1.
  static absl::StatusOr<std::shared_ptr<const DuoLayout>> Create(const ModelConfig& config,
                                                                 std::vector<bool> streaming,
                                                                 int sink, int recent);

  int n_layers() const { return n_layers_; }
  int n_kv_heads() const { return n_kv_heads_; }
  int head_dim() const { return head_dim_; }
  int sink() const { return sink_; }
  int recent() const { return recent_; }
  // Positions a streaming head keeps: sink + recent.
  int window() const { return sink_ + recent_; }

  bool IsStreaming(int layer, int kv_head) const {
    return streaming_[static_cast<size_t>(layer) * n_kv_heads_ + kv_head];
  }
  // The head's index among its layer's retrieval heads (or among its streaming heads).
  int Slot(int layer, int kv_head) const {
    return slot_[static_cast<size_t>(layer) * n_kv_heads_ + kv_head];
  }
  int NumRetrieval(int layer) const { return n_retrieval_[layer]; }
  int NumStreaming(int layer) const { return n_kv_heads_ - n_retrieval_[layer]; }
  int TotalStreaming() const { return total_streaming_; }
  bool HasStreaming() const { return total_streaming_ > 0; }

  // Paged rows: elements of one position's K (or V) row in `layer` (retrieval heads only), and
  // the elements of the layers before it.
  int RetrievalRowElems(int layer) const { return n_retrieval_[layer] * head_dim_; }
  size_t RetrievalLayerOffset(int layer) const { return ret_offset_[layer]; }
  size_t RetrievalElemsPerToken() const { return ret_offset_[n_layers_]; }
  // Streaming rows: the same for the streaming heads.
  int StreamingRowElems(int layer) const { return NumStreaming(layer) * head_dim_; }
  size_t StreamingLayerOffset(int layer) const { return stream_offset_[layer]; }
  size_t StreamingElemsPerToken() const { return stream_offset_[n_layers_]; }

  // fp16 K and V bytes: per paged token (retrieval heads), and per sequence (streaming heads).
  int64_t RetrievalBytesPerToken() const {
    return 2 * static_cast<int64_t>(RetrievalElemsPerToken()) * sizeof(kernels::fp16_t);
  }
  int64_t StreamingBytesPerSequence() const {
    return 2 * static_cast<int64_t>(StreamingElemsPerToken()) * window() * sizeof(kernels::fp16_t);
  }
  // "layer: streaming heads" per layer, e.g. "2 1 0 3 ...".
  std::string StreamingPerLayer() const;

 private:
  DuoLayout() = default;
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, sink_ = 0, recent_ = 1;
  int total_streaming_ = 0;
  std::vector<bool> streaming_;
  std::vector<int> slot_;
  std::vector<int> n_retrieval_;
  std::vector<size_t> ret_offset_;     // n_layers + 1 prefix sums
  std::vector<size_t> stream_offset_;  // n_layers + 1 prefix sums
};

// One sequence's streaming-head cache: for every layer, `window()` fp16 K and V rows of that
// layer's streaming heads. Position p < sink lives in slot p; later positions in a ring of
// `recent` slots (sink + (p - sink) % recent), keys stored after RoPE at their original positions.
// The memory is allocated untouched (pages become resident when written).
class StreamingKv {
 public:
  explicit StreamingKv(std::shared_ptr<const DuoLayout> layout)
      : layout_(std::move(layout)),
        elems_(layout_->StreamingElemsPerToken() * layout_->window()),
        k_(new kernels::fp16_t[elems_ > 0 ? elems_ : 1]),
        v_(new kernels::fp16_t[elems_ > 0 ? elems_ : 1]) {}

  const DuoLayout& layout() const { return *layout_; }
  int64_t bytes() const { return 2 * static_cast<int64_t>(elems_) * sizeof(kernels::fp16_t); }
  int SlotOf(int pos) const {
    const int sink = layout_->sink();
    return pos < sink ? pos : sink + (pos - sink) % layout_->recent();
  }
  // Whether position p is still held once `size` positions are written.
  bool Holds(int pos, int size) const {
    return pos >= 0 && pos < size && (pos < layout_->sink() || pos >= size - layout_->recent());
  }
  // Becomes a copy of `other`, which has the same layout (a snapshot, or its restore).
  void CopyFrom(const StreamingKv& other) {
    std::copy_n(other.k_.get(), elems_, k_.get());
    std::copy_n(other.v_.get(), elems_, v_.get());
  }
  // The row of position `pos` in `layer`: StreamingRowElems(layer) elements, streaming head s
  // (its Slot) at s * head_dim.
  kernels::fp16_t* K(int layer, int pos) { return k_.get() + Index(layer, pos); }
  kernels::fp16_t* V(int layer, int pos) { return v_.get() + Index(layer, pos); }

 private:
  size_t Index(int layer, int pos) const {
    return layout_->StreamingLayerOffset(layer) * layout_->window() +
           static_cast<size_t>(SlotOf(pos)) * layout_->StreamingRowElems(layer);
  }
  std::shared_ptr<const DuoLayout> layout_;
  size_t elems_;
  std::unique_ptr<kernels::fp16_t[]> k_;
  std::unique_ptr<kernels::fp16_t[]> v_;
};

}  // namespace loom::engine
