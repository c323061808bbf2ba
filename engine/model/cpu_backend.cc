#include "engine/model/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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
  void EnsureScratch(int64_t T, int max_ctx);

  const Model& model_;
  const ModelConfig& cfg_;
  util::ThreadPool pool_;

  // Scratch, grown on demand and reused.
  std::vector<float> x_, xn_, q_, k_, v_, attn_, tmp_, gate_, up_;
  std::vector<float> scores_;  // per thread: max_ctx floats
  int64_t scratch_T_ = 0;
  int scratch_ctx_ = 0;
  QuantizedActs xq_;
  // Per token: which sequence entry and which position.
  std::vector<int> tok_seq_;
  std::vector<int> tok_pos_;
  // Per layer: each entry's K and V block pointers, entry i's from blk_begin_[i].
  std::vector<const kernels::fp16_t*> k_blocks_, v_blocks_;
  std::vector<size_t> blk_begin_;
};

void CpuBackend::EnsureScratch(int64_t T, int max_ctx) {
  if (T > scratch_T_) {
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
  for (const SeqBatch& s : batch) {
    if (s.kv == nullptr || s.tokens.empty()) {
      return absl::InvalidArgumentError("every batch entry needs a cache and at least one token");
    }
    if (s.kv->kv_dim() != c.kv_dim() || s.kv->block_size() < 1) {
      return absl::InvalidArgumentError("a batch entry's cache does not fit this model");
    }
    const int64_t end = s.kv->size() + static_cast<int64_t>(s.tokens.size());
    if (end > s.kv->capacity()) {
      return absl::OutOfRangeError(absl::StrCat("sequence of ", end,
                                                " tokens exceeds its cache capacity of ",
                                                s.kv->capacity()));
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
  EnsureScratch(T, max_ctx);

  const int64_t d = c.d_model;
  const int64_t qd = c.q_dim();
  const int64_t kvd = c.kv_dim();
  const int64_t hd = c.head_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));

  // Embeddings and the token -> (sequence, position) map.
  {
    int64_t t = 0;
    for (size_t si = 0; si < batch.size(); ++si) {
      const SeqBatch& s = batch[si];
      for (size_t i = 0; i < s.tokens.size(); ++i, ++t) {
        tok_seq_[t] = static_cast<int>(si);
        tok_pos_[t] = s.kv->size() + static_cast<int>(i);
        kernels::DequantizeRow(w.tok_embd.type, w.tok_embd.Row(s.tokens[i]), &x_[t * d], d);
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
      KvView* kv = batch[tok_seq_[t]].kv;
      const int bs = kv->block_size();
      const size_t row = static_cast<size_t>(pos % bs) * kvd;
      kernels::Fp32ToFp16Row(&k_[t * kvd], kv->KBlock(li, pos / bs) + row, kvd);
      kernels::Fp32ToFp16Row(&v_[t * kvd], kv->VBlock(li, pos / bs) + row, kvd);
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
    pool_.ParallelFor(T * c.n_heads, [&](int64_t b, int64_t e, int thread) {
      float* scores = &scores_[static_cast<size_t>(thread) * scratch_ctx_];
      for (int64_t task = b; task < e; ++task) {
        const int64_t t = task / c.n_heads;
        const int h = static_cast<int>(task % c.n_heads);
        const int kvh = h / group;
        const int si = tok_seq_[t];
        const int n_kv = tok_pos_[t] + 1;  // causal: positions up to this token's own
        kernels::AttentionHeadBlocks(&q_[t * qd + h * hd], &k_blocks_[blk_begin_[si]],
                                     &v_blocks_[blk_begin_[si]], static_cast<size_t>(kvh * hd),
                                     batch[si].kv->block_size(), kvd, n_kv, hd, scale, scores,
                                     &attn_[t * qd + h * hd]);
      }
    });
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
