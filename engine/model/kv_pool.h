// The serving engine's KV memory: one fp16 K and one fp16 V array of `num_blocks` blocks, laid out
// [block][layer][block_size][kv_dim], and the view a backend reads one sequence through: its block
// table (block ids from kv::KvBlockManager, in position order) into the pool. With a DuoLayout
// (DuoAttention) a block holds the retrieval heads only, each layer RetrievalRowElems(layer) wide,
// and the view also carries the sequence's StreamingKv for the streaming heads.
//
//   KvPool pool(model.config(), /*block_size=*/16, /*num_blocks=*/n);
//   PagedKvView view(&pool, kv_manager.BlockTable(id), /*size=*/num_computed);
//   backend->Forward({{&view, new_tokens, false}}, &logits);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

#include "engine/model/kv_view.h"
#include "engine/model/model_config.h"
#include "kernels/dtype.h"

namespace loom::engine {

class KvPool {
 public:
  // The memory is allocated but not touched: pages become resident as blocks are first written.
  KvPool(const ModelConfig& config, int block_size, int64_t num_blocks,
         std::shared_ptr<const DuoLayout> duo = nullptr)
      : n_layers_(config.n_layers),
        kv_dim_(config.kv_dim()),
        block_size_(block_size),
        num_blocks_(num_blocks),
        duo_(std::move(duo)),
        k_(new kernels::fp16_t[Elements() > 0 ? Elements() : 1]),
        v_(new kernels::fp16_t[Elements() > 0 ? Elements() : 1]) {}

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int kv_dim() const { return kv_dim_; }
  const DuoLayout* duo() const { return duo_.get(); }
  int64_t bytes() const { return 2 * static_cast<int64_t>(Elements()) * sizeof(kernels::fp16_t); }
  int64_t bytes_per_block() const {
    return 2 * static_cast<int64_t>(BlockElems()) * sizeof(kernels::fp16_t);
  }

  kernels::fp16_t* KBlock(int32_t block, int layer) { return k_.get() + Index(block, layer); }
  kernels::fp16_t* VBlock(int32_t block, int layer) { return v_.get() + Index(block, layer); }

 private:
  // Elements of one K (or V) row over all layers: n_layers * kv_dim, or the retrieval heads'.
  size_t ElemsPerToken() const {
    return duo_ ? duo_->RetrievalElemsPerToken() : static_cast<size_t>(n_layers_) * kv_dim_;
  }
  size_t BlockElems() const { return static_cast<size_t>(block_size_) * ElemsPerToken(); }
  size_t Elements() const { return static_cast<size_t>(num_blocks_) * BlockElems(); }
  size_t Index(int32_t block, int layer) const {
    const size_t layer_offset =
        duo_ ? duo_->RetrievalLayerOffset(layer) : static_cast<size_t>(layer) * kv_dim_;
    return static_cast<size_t>(block) * BlockElems() + layer_offset * block_size_;
  }

  int n_layers_;
  int kv_dim_;
  int block_size_;
  int64_t num_blocks_;
  std::shared_ptr<const DuoLayout> duo_;
  std::unique_ptr<kernels::fp16_t[]> k_;
  std::unique_ptr<kernels::fp16_t[]> v_;
};

// One sequence's cache in a KvPool: `blocks` (not owned; must outlive the view) hold its positions
// in order, block_size each; the first `size` positions are written. Capacity: all the blocks.
class PagedKvView final : public KvView {
 public:
  // `streaming` (not owned) is required when the pool's layout has streaming heads.
  PagedKvView(KvPool* pool, std::span<const int32_t> blocks, int size,
              StreamingKv* streaming = nullptr)
      : pool_(pool), blocks_(blocks), size_(size), streaming_(streaming) {}

  int size() const override { return size_; }
  int capacity() const override { return static_cast<int>(blocks_.size()) * pool_->block_size(); }
  void Advance(int n) override { size_ += n; }
  int block_size() const override { return pool_->block_size(); }
  int kv_dim() const override { return pool_->kv_dim(); }
  kernels::fp16_t* KBlock(int layer, int block) override {
    return pool_->KBlock(blocks_[static_cast<size_t>(block)], layer);
  }
  kernels::fp16_t* VBlock(int layer, int block) override {
    return pool_->VBlock(blocks_[static_cast<size_t>(block)], layer);
  }
  const DuoLayout* duo() const override { return pool_->duo(); }
  StreamingKv* streaming() override { return streaming_; }

 private:
  KvPool* pool_;
  std::span<const int32_t> blocks_;
  int size_;
  StreamingKv* streaming_;
};

}  // namespace loom::engine
