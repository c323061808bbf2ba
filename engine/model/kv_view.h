// What a backend needs from a sequence's KV cache: how many positions are filled, how many fit, and
// where the fp16 K and V rows of each layer live. Rows come in blocks of block_size() positions;
// inside a block, position i of a layer is at KBlock(layer, block) + i * kv_dim (same for V).
// KvSequence is the one-block form (a contiguous cache per sequence, for the CLI, bench and tests);
// PagedKvView (kv_pool.h) reads a block table into a shared KvPool (the serving engine).
// With DuoAttention (duo_layout.h) the blocks hold the retrieval heads only, RowElems(layer) wide
// (head h at its Slot() * head_dim), and streaming() is the sequence's fixed streaming-head cache.
//
//   const int bs = view.block_size();
//   kernels::fp16_t* k_row = view.KBlock(layer, pos / bs) + (pos % bs) * view.kv_dim();
#pragma once

#include "engine/model/duo_layout.h"
#include "kernels/dtype.h"

namespace loom::engine {

class KvView {
 public:
  virtual ~KvView() = default;
  // Positions whose K/V is written; a forward pass appends at size().
  virtual int size() const = 0;
  // Positions the view can hold.
  virtual int capacity() const = 0;
  // Marks `n` more positions as filled; the backend writes them first.
  virtual void Advance(int n) = 0;
  // Positions per block, >= 1.
  virtual int block_size() const = 0;
  // Elements per K (and V) row: n_kv_heads * head_dim.
  virtual int kv_dim() const = 0;
  // The first row of block `block` (covering positions [block * block_size(), ...)) of `layer`.
  virtual kernels::fp16_t* KBlock(int layer, int block) = 0;
  virtual kernels::fp16_t* VBlock(int layer, int block) = 0;
  // DuoAttention's layout, or null for plain attention (every head paged, rows of kv_dim).
  virtual const DuoLayout* duo() const { return nullptr; }
  // The streaming heads' cache; non-null whenever duo() has streaming heads.
  virtual StreamingKv* streaming() { return nullptr; }
  // Elements per K (and V) row of `layer` in the blocks: kv_dim(), or the retrieval heads' width.
  int RowElems(int layer) const {
    const DuoLayout* d = duo();
    return d == nullptr ? kv_dim() : d->RetrievalRowElems(layer);
  }
};

}  // namespace loom::engine
