// The key/value cache of one sequence: fp16 K and V rows for every layer and position, contiguous
// per layer. As a KvView it is a single block of `capacity` positions. The serving engine uses the
// paged form instead (kv_pool.h); this is the simple form a single generation uses. With a
// DuoLayout it stores the retrieval heads' rows only and owns the streaming heads' StreamingKv.
//
//   loom::engine::KvSequence kv(model.config(), /*capacity=*/2048);
//   backend->Forward({{&kv, prompt_tokens, false}}, &logits);  // appends prompt K/V, kv.size()
//   grows
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/model/kv_view.h"
#include "engine/model/model_config.h"
#include "kernels/dtype.h"

namespace loom::engine {

class KvSequence final : public KvView {
 public:
  KvSequence(const ModelConfig& config, int capacity,
             std::shared_ptr<const DuoLayout> duo = nullptr)
      : n_layers_(config.n_layers),
        kv_dim_(config.kv_dim()),
        capacity_(capacity),
        duo_(std::move(duo)),
        k_(static_cast<size_t>(capacity) * ElemsPerToken()),
        v_(static_cast<size_t>(capacity) * ElemsPerToken()) {
    if (duo_ != nullptr && duo_->HasStreaming()) streaming_ = std::make_unique<StreamingKv>(duo_);
  }

  int size() const override { return size_; }
  int capacity() const override { return capacity_; }
  int kv_dim() const override { return kv_dim_; }
  int block_size() const override { return capacity_ > 0 ? capacity_ : 1; }
  // Forgets positions >= n (e.g. to reuse a shared prefix).
  void Truncate(int n) { size_ = n < size_ ? n : size_; }
  void Clear() { size_ = 0; }
  // Marks `n` more positions as filled; the backend writes them first.
  void Advance(int n) override { size_ += n; }
  kernels::fp16_t* KBlock(int layer, int /*block*/) override { return K(layer, 0); }
  kernels::fp16_t* VBlock(int layer, int /*block*/) override { return V(layer, 0); }

  const DuoLayout* duo() const override { return duo_.get(); }
  StreamingKv* streaming() override { return streaming_.get(); }
  // Bytes of K and V held: the paged rows for `capacity` positions plus the streaming cache.
  int64_t bytes() const {
    return 2 * static_cast<int64_t>(k_.size()) * sizeof(kernels::fp16_t) +
           (streaming_ ? streaming_->bytes() : 0);
  }

  // Row of `pos` in `layer`: RowElems(layer) elements (retrieval heads only with a DuoLayout).
  kernels::fp16_t* K(int layer, int pos) { return k_.data() + Index(layer, pos); }
  kernels::fp16_t* V(int layer, int pos) { return v_.data() + Index(layer, pos); }
  const kernels::fp16_t* K(int layer, int pos) const { return k_.data() + Index(layer, pos); }
  const kernels::fp16_t* V(int layer, int pos) const { return v_.data() + Index(layer, pos); }

 private:
  size_t ElemsPerToken() const {
    return duo_ ? duo_->RetrievalElemsPerToken() : static_cast<size_t>(n_layers_) * kv_dim_;
  }
  size_t Index(int layer, int pos) const {
    if (duo_ == nullptr) return (static_cast<size_t>(layer) * capacity_ + pos) * kv_dim_;
    return duo_->RetrievalLayerOffset(layer) * capacity_ +
           static_cast<size_t>(pos) * duo_->RetrievalRowElems(layer);
  }
  int n_layers_;
  int kv_dim_;
  int capacity_;
  int size_ = 0;
  std::shared_ptr<const DuoLayout> duo_;
  std::unique_ptr<StreamingKv> streaming_;
  std::vector<kernels::fp16_t> k_;
  std::vector<kernels::fp16_t> v_;
};

}  // namespace loom::engine
