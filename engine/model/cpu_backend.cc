#include "engine/model/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/model/duo_layout.h"
#include "engine/util/thread_pool.h"
#include "kernels/kernels.h"

namespace loom::engine {
namespace {

using kernels::DType;

// Activations of T tokens quantized for one weight type, reused across layers.
struct QuantizedActs {
  DType type = DType::kF32;
  size_t row_bytes = 0;
  std::vector<uint8_t> data;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(const Model& model, int n_threads)
      : model_(model), cfg_(model.config()), pool_(n_threads) {}

  std::string_view name() const override { return "cpu"; }
  absl::Status Forward(std::span<const SeqBatch> batch, std::vector<float>* logits) override;

 private:
  // Quantizes T rows of k floats for dot products with weights of type `w`.
  void Quantize(DType w, const float* x, int64_t k, int64_t T, QuantizedActs* q);
  // y[t][i] = W_i . x_t for several matrices sharing one input, in one parallel loop.
  struct Proj {
    const WeightTensor* w;
    float* y;
    int64_t ldy;
  };
  void MatMul(std::initializer_list<Proj> projs, const QuantizedActs& xq, int64_t T);
  void EnsureScratch(int64_t T, int max_ctx, int max_window);
  // DuoAttention: the chunk's new streaming-head rows that stay (the first sink positions and the
  // last `recent`) go into each sequence's StreamingKv, after the layer's attention read them.
  void StoreStreaming(std::span<const SeqBatch> batch, int layer);
  // DuoAttention: query head h of token t through its streaming KV head (sink + recent only).
  void StreamingHead(std::span<const SeqBatch> batch, int layer, int64_t t, int h, int thread,
                     float scale, float* scores);

  // Attention work item: KV head `kv_head` of entry `seq` for its tokens [begin, end).
  struct AttnTask {
    int seq, kv_head, begin, end;
  };
  // Query rows per retrieval-head work item (a GQA group times a tile of tokens): enough to reuse
  // each K/V tile many times, few enough that the rows' scores stay in L2.
  static constexpr int kAttnRowsPerTask = 48;
  static constexpr int kMaxAttnRows = 256;
  std::vector<AttnTask> attn_tasks_;

  const Model& model_;
  const ModelConfig& cfg_;
  util::ThreadPool pool_;

  // Scratch, grown on demand and reused.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, tmp_, gate_, up_;
  std::vector<float> scores_;  // per thread: max_ctx floats
  int64_t scratch_T_ = 0;
  int scratch_ctx_ = 0;
  // This layer's new K and V rows (all heads) in fp16, as the cache stores them.
  std::vector<kernels::fp16_t> k16_, v16_;
  // Per thread: row pointers of the positions a streaming head sees (max_window each for K, V).
  std::vector<const kernels::fp16_t*> stream_rows_;
  int scratch_window_ = 0;
  QuantizedActs xq_;
  // Per token: which sequence entry and which position.
  std::vector<int> tok_seq_;
  std::vector<int> tok_pos_;
  // Per layer: each entry's K and V block pointers, entry i's from blk_begin_[i].
  std::vector<const kernels::fp16_t*> k_blocks_, v_blocks_;
  std::vector<size_t> blk_begin_;
  std::vector<int64_t> tok_begin_;  // per entry: its first token's row
};

void CpuBackend::EnsureScratch(int64_t T, int max_ctx, int max_window) {
  if (T > scratch_T_) {
    k16_.resize(T * cfg_.kv_dim());
    v16_.resize(T * cfg_.kv_dim());
    const int64_t d = cfg_.d_model;
    x_.resize(T * d);
    xn_.resize(T * d);
    q_.resize(T * cfg_.q_dim());
    k_.resize(T * cfg_.kv_dim());
    v_.resize(T * cfg_.kv_dim());
    attn_.resize(T * cfg_.q_dim());
    tmp_.resize(T * d);
    gate_.resize(T * cfg_.ffn_dim);
    up_.resize(T * cfg_.ffn_dim);
    tok_seq_.resize(T);
    tok_pos_.resize(T);
    scratch_T_ = T;
  }
  if (max_ctx > scratch_ctx_) {
    scores_.assign(static_cast<size_t>(pool_.size()) * max_ctx, 0.0f);
    scratch_ctx_ = max_ctx;
  }
  if (max_window > scratch_window_) {
    stream_rows_.assign(static_cast<size_t>(pool_.size()) * 2 * max_window, nullptr);
    scratch_window_ = max_window;
  }
}

void CpuBackend::StoreStreaming(std::span<const SeqBatch> batch, int li) {
  const int64_t kvd = cfg_.kv_dim();
  const int hd = cfg_.head_dim;
  for (size_t si = 0; si < batch.size(); ++si) {
    const SeqBatch& s = batch[si];
    const DuoLayout* duo = s.kv->duo();
    if (duo == nullptr || duo->NumStreaming(li) == 0) continue;
    StreamingKv* sk = s.kv->streaming();
    const int start = s.kv->size();
    const int end = start + static_cast<int>(s.tokens.size());
    for (int pos = start; pos < end; ++pos) {
      if (!sk->Holds(pos, end)) continue;  // overwritten within this chunk anyway
      const int64_t t = tok_begin_[si] + (pos - start);
      kernels::fp16_t* krow = sk->K(li, pos);
      kernels::fp16_t* vrow = sk->V(li, pos);
      for (int h = 0; h < cfg_.n_kv_heads; ++h) {
        if (!duo->IsStreaming(li, h)) continue;
        const size_t dst = static_cast<size_t>(duo->Slot(li, h)) * hd;
        std::copy_n(&k16_[t * kvd + h * hd], hd, krow + dst);
        std::copy_n(&v16_[t * kvd + h * hd], hd, vrow + dst);
      }
    }
  }
}

void CpuBackend::StreamingHead(std::span<const SeqBatch> batch, int li, int64_t t, int h,
                               int thread, float scale, float* scores) {
  const int64_t qd = cfg_.q_dim();
  const int64_t kvd = cfg_.kv_dim();
  const int hd = cfg_.head_dim;
  const int kvh = h / (cfg_.n_heads / cfg_.n_kv_heads);
  const int si = tok_seq_[t];
  KvView* kv = batch[si].kv;
  const DuoLayout* duo = kv->duo();
  const int pos = tok_pos_[t];
  // The sink positions and the `recent` up to this token's own, read from the ring (earlier
  // chunks) or this chunk's rows, in position order.
  const kernels::fp16_t** krows = &stream_rows_[static_cast<size_t>(thread) * 2 * scratch_window_];
  const kernels::fp16_t** vrows = krows + scratch_window_;
  StreamingKv* sk = kv->streaming();
  const int start = kv->size();
  const size_t ring_off = static_cast<size_t>(duo->Slot(li, kvh)) * hd;
  const int sink_end = std::min(duo->sink(), pos + 1);
  const int recent_begin = std::max(duo->sink(), pos + 1 - duo->recent());
  int n = 0;
  auto add = [&](int p) {
    if (p < start) {
      krows[n] = sk->K(li, p) + ring_off;
      vrows[n] = sk->V(li, p) + ring_off;
    } else {
      const int64_t row = (tok_begin_[si] + (p - start)) * kvd + kvh * hd;
      krows[n] = &k16_[row];
      vrows[n] = &v16_[row];
    }
    ++n;
  };
  for (int p = 0; p < sink_end; ++p) add(p);
  for (int p = recent_begin; p <= pos; ++p) add(p);
  kernels::AttentionHeadBlocks(&q_[t * qd + h * hd], krows, vrows, 0, 1, 0, n, hd, scale, scores,
                               &attn_[t * qd + h * hd]);
}

void CpuBackend::Quantize(DType w, const float* x, int64_t k, int64_t T, QuantizedActs* q) {
  q->type = kernels::VecDotType(w);
  q->row_bytes = kernels::RowBytes(q->type, k);
  if (q->data.size() < q->row_bytes * T) q->data.resize(q->row_bytes * T);
  if (T == 1) {
    kernels::QuantizeRow(q->type, x, q->data.data(), k);
    return;
  }
  pool_.ParallelFor(T, [&](int64_t b, int64_t e, int) {
    kernels::QuantizeRows(q->type, x + b * k, q->data.data() + b * q->row_bytes, k, e - b);
  });
}

void CpuBackend::MatMul(std::initializer_list<Proj> projs, const QuantizedActs& xq, int64_t T) {
  int64_t total = 0;
  for (const Proj& p : projs) total += p.w->ne1;
  // Chunks of 16 rows keep the kernel's row tiles whole.
  pool_.ParallelFor(
      total,
      [&](int64_t begin, int64_t end, int) {
        int64_t base = 0;
        for (const Proj& p : projs) {
          const int64_t rows = p.w->ne1;
          const int64_t b = std::max<int64_t>(begin - base, 0);
          const int64_t e = std::min<int64_t>(end - base, rows);
          if (b < e) {
            kernels::MatMulRows(p.w->type, p.w->data, p.w->row_bytes, p.w->ne0, xq.data.data(),
                                xq.row_bytes, T, p.y, p.ldy, b, e);
          }
          base += rows;
        }
      },
      16);
}

absl::Status CpuBackend::Forward(std::span<const SeqBatch> batch, std::vector<float>* logits) {
  const ModelConfig& c = cfg_;
  const ModelWeights& w = model_.weights();
  int64_t T = 0;
  int64_t n_out = 0;
  int max_ctx = 0;
  int max_window = 0;
  for (const SeqBatch& s : batch) {
    if (s.kv == nullptr || s.tokens.empty()) {
      return absl::InvalidArgumentError("every batch entry needs a cache and at least one token");
    }
    if (s.kv->kv_dim() != c.kv_dim() || s.kv->block_size() < 1) {
      return absl::InvalidArgumentError("a batch entry's cache does not fit this model");
    }
    if (const DuoLayout* duo = s.kv->duo()) {
      if (duo->n_layers() != c.n_layers || duo->n_kv_heads() != c.n_kv_heads ||
          duo->head_dim() != c.head_dim) {
        return absl::InvalidArgumentError("a batch entry's DuoAttention layout does not fit");
      }
      if (duo->HasStreaming()) {
        if (s.kv->streaming() == nullptr || &s.kv->streaming()->layout() != duo) {
          return absl::InvalidArgumentError(
              "a batch entry with DuoAttention streaming heads needs their StreamingKv");
        }
        max_window = std::max(max_window, duo->window());
      }
    }
    const int64_t end = s.kv->size() + static_cast<int64_t>(s.tokens.size());
    if (end > s.kv->capacity()) {
      return absl::OutOfRangeError(absl::StrCat(
          "sequence of ", end, " tokens exceeds its cache capacity of ", s.kv->capacity()));
    }
    for (int32_t tok : s.tokens) {
      if (tok < 0 || tok >= c.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", tok, " is out of range"));
      }
    }
    T += static_cast<int64_t>(s.tokens.size());
    n_out += s.all_logits ? static_cast<int64_t>(s.tokens.size()) : 1;
    max_ctx = std::max<int>(max_ctx, static_cast<int>(end));
  }
  if (T == 0) return absl::InvalidArgumentError("empty batch");
  EnsureScratch(T, max_ctx, max_window);

  const int64_t d = c.d_model;
  const int64_t qd = c.q_dim();
  const int64_t kvd = c.kv_dim();
  const int64_t hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  if (group > kMaxAttnRows) {
    return absl::UnimplementedError(
        absl::StrCat("more than ", kMaxAttnRows, " query heads per KV head"));
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // Embeddings and the token -> (sequence, position) map.
  {
    int64_t t = 0;
    tok_begin_.clear();
    for (size_t si = 0; si < batch.size(); ++si) {
      const SeqBatch& s = batch[si];
      tok_begin_.push_back(t);
      for (size_t i = 0; i < s.tokens.size(); ++i, ++t) {
        tok_seq_[t] = static_cast<int>(si);
        tok_pos_[t] = s.kv->size() + static_cast<int>(i);
        kernels::DequantizeRow(w.tok_embd.type, w.tok_embd.Row(s.tokens[i]), &x_[t * d], d);
      }
    }
  }

  // Work items: one KV head of one entry over a tile of its tokens; a retrieval head serves its
  // query heads and tokens with one pass over K and V. Tiles go in zig-zag order (first, last,
  // second, ...) so the contiguous halves the pool hands out carry similar causal lengths.
  // The list is the same for every layer.
  attn_tasks_.clear();
  const int tile = std::max(1, kAttnRowsPerTask / group);
  for (size_t si = 0; si < batch.size(); ++si) {
    const int n = static_cast<int>(batch[si].tokens.size());
    const int n_tiles = (n + tile - 1) / tile;
    for (int lo = 0, hi = n_tiles - 1; lo <= hi; ++lo, --hi) {
      for (int i : {lo, hi}) {
        for (int kvh = 0; kvh < c.n_kv_heads; ++kvh) {
          attn_tasks_.push_back({static_cast<int>(si), kvh, i * tile, std::min(n, (i + 1) * tile)});
        }
        if (lo == hi) break;
      }
    }
  }

  for (int li = 0; li < c.n_layers; ++li) {
    const LayerWeights& L = w.layers[li];
    // Attention block.
    for (int64_t t = 0; t < T; ++t) {
      kernels::RmsNorm(&x_[t * d], L.attn_norm.F32(), &xn_[t * d], d, c.rms_eps);
    }
    Quantize(L.wq.type, xn_.data(), d, T, &xq_);
    if (L.wk.type == L.wq.type && L.wv.type == L.wq.type) {
      MatMul({{&L.wq, q_.data(), qd}, {&L.wk, k_.data(), kvd}, {&L.wv, v_.data(), kvd}}, xq_, T);
    } else {
      MatMul({{&L.wq, q_.data(), qd}}, xq_, T);
      Quantize(L.wk.type, xn_.data(), d, T, &xq_);
      MatMul({{&L.wk, k_.data(), kvd}}, xq_, T);
      Quantize(L.wv.type, xn_.data(), d, T, &xq_);
      MatMul({{&L.wv, v_.data(), kvd}}, xq_, T);
    }
    for (int64_t t = 0; t < T; ++t) {
      const int pos = tok_pos_[t];
      kernels::Rope(&q_[t * qd], c.n_heads, hd, c.rope_dim, pos, c.rope_freq_base,
                    c.rope_freq_scale, c.rope_style);
      kernels::Rope(&k_[t * kvd], c.n_kv_heads, hd, c.rope_dim, pos, c.rope_freq_base,
                    c.rope_freq_scale, c.rope_style);
      kernels::fp16_t* k16 = &k16_[t * kvd];
      kernels::fp16_t* v16 = &v16_[t * kvd];
      kernels::Fp32ToFp16Row(&k_[t * kvd], k16, kvd);
      kernels::Fp32ToFp16Row(&v_[t * kvd], v16, kvd);
      KvView* kv = batch[tok_seq_[t]].kv;
      const int bs = kv->block_size();
      const DuoLayout* duo = kv->duo();
      const int row_elems = kv->RowElems(li);
      const size_t row = static_cast<size_t>(pos % bs) * row_elems;
      kernels::fp16_t* kdst = kv->KBlock(li, pos / bs) + row;
      kernels::fp16_t* vdst = kv->VBlock(li, pos / bs) + row;
      if (duo == nullptr) {
        std::copy_n(k16, kvd, kdst);
        std::copy_n(v16, kvd, vdst);
        continue;
      }
      // Retrieval heads only, at their slots; streaming heads go to the ring after attention.
      for (int h = 0; h < c.n_kv_heads; ++h) {
        if (duo->IsStreaming(li, h)) continue;
        const size_t dst = static_cast<size_t>(duo->Slot(li, h)) * hd;
        std::copy_n(k16 + h * hd, hd, kdst + dst);
        std::copy_n(v16 + h * hd, hd, vdst + dst);
      }
    }
    // Block pointers of every entry for this layer, shared by its tokens and heads.
    k_blocks_.clear();
    v_blocks_.clear();
    blk_begin_.clear();
    for (const SeqBatch& s : batch) {
      const int bs = s.kv->block_size();
      const int n_blocks = (s.kv->size() + static_cast<int>(s.tokens.size()) + bs - 1) / bs;
      blk_begin_.push_back(k_blocks_.size());
      for (int b = 0; b < n_blocks; ++b) {
        k_blocks_.push_back(s.kv->KBlock(li, b));
        v_blocks_.push_back(s.kv->VBlock(li, b));
      }
    }
    pool_.ParallelFor(
        static_cast<int64_t>(attn_tasks_.size()), [&](int64_t b, int64_t e, int thread) {
          float* scores = &scores_[static_cast<size_t>(thread) * scratch_ctx_];
          for (int64_t task = b; task < e; ++task) {
            const AttnTask& at = attn_tasks_[task];
            const int si = at.seq;
            const int kvh = at.kv_head;
            KvView* kv = batch[si].kv;
            const DuoLayout* duo = kv->duo();
            if (duo != nullptr && duo->IsStreaming(li, kvh)) {
              for (int64_t t = tok_begin_[si] + at.begin; t < tok_begin_[si] + at.end; ++t) {
                for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
                  StreamingHead(batch, li, t, h, thread, scale, scores);
                }
              }
              continue;
            }
            // Retrieval (or plain) head: its query heads × the tile's tokens, causal per token.
            const float* qs[kMaxAttnRows];
            float* outs[kMaxAttnRows];
            int64_t n_kv[kMaxAttnRows];
            int rows = 0;
            for (int64_t t = tok_begin_[si] + at.begin; t < tok_begin_[si] + at.end; ++t) {
              for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
                qs[rows] = &q_[t * qd + h * hd];
                outs[rows] = &attn_[t * qd + h * hd];
                n_kv[rows] = tok_pos_[t] + 1;
                ++rows;
              }
            }
            const size_t head_offset =
                static_cast<size_t>(duo != nullptr ? duo->Slot(li, kvh) : kvh) * hd;
            kernels::AttentionRowsBlocks(qs, outs, n_kv, rows, &k_blocks_[blk_begin_[si]],
                                         &v_blocks_[blk_begin_[si]], head_offset, kv->block_size(),
                                         kv->RowElems(li), hd, scale);
          }
        });
    StoreStreaming(batch, li);
    Quantize(L.wo.type, attn_.data(), qd, T, &xq_);
    MatMul({{&L.wo, tmp_.data(), d}}, xq_, T);
    kernels::Add(x_.data(), tmp_.data(), x_.data(), T * d);

    // Feed-forward block.
    for (int64_t t = 0; t < T; ++t) {
      kernels::RmsNorm(&x_[t * d], L.ffn_norm.F32(), &xn_[t * d], d, c.rms_eps);
    }
    Quantize(L.w_gate.type, xn_.data(), d, T, &xq_);
    if (L.w_up.type == L.w_gate.type) {
      MatMul({{&L.w_gate, gate_.data(), c.ffn_dim}, {&L.w_up, up_.data(), c.ffn_dim}}, xq_, T);
    } else {
      MatMul({{&L.w_gate, gate_.data(), c.ffn_dim}}, xq_, T);
      Quantize(L.w_up.type, xn_.data(), d, T, &xq_);
      MatMul({{&L.w_up, up_.data(), c.ffn_dim}}, xq_, T);
    }
    kernels::SwiGlu(gate_.data(), up_.data(), gate_.data(), T * c.ffn_dim);
    Quantize(L.w_down.type, gate_.data(), c.ffn_dim, T, &xq_);
    MatMul({{&L.w_down, tmp_.data(), d}}, xq_, T);
    kernels::Add(x_.data(), tmp_.data(), x_.data(), T * d);
  }

  // Final norm and logits for the requested rows only.
  {
    int64_t t = 0;
    int64_t r = 0;
    for (const SeqBatch& s : batch) {
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      const int64_t first = s.all_logits ? t : t + n - 1;
      for (int64_t i = first; i < t + n; ++i, ++r) {
        kernels::RmsNorm(&x_[i * d], w.output_norm.F32(), &xn_[r * d], d, c.rms_eps);
      }
      t += n;
    }
  }
  logits->resize(static_cast<size_t>(n_out) * c.vocab_size);
  Quantize(w.output.type, xn_.data(), d, n_out, &xq_);
  MatMul({{&w.output, logits->data(), c.vocab_size}}, xq_, n_out);
  for (const SeqBatch& s : batch) s.kv->Advance(static_cast<int>(s.tokens.size()));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(const Model& model,
                                                          const BackendOptions& options) {
  int n = options.n_threads;
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (n > 256) return absl::InvalidArgumentError("n_threads must be at most 256");
  return std::unique_ptr<Backend>(new CpuBackend(model, n));
}

}  // namespace loom::engine
