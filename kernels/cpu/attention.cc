// One attention head over an fp16 KV cache, as ggml's non-flash path (mul_mat, soft_max_ext,
// mul_mat) computes it. The cache may be paged: rows come in blocks of block_size, each block's
// rows kv_stride apart; AttentionHead is the one-block case.

#include <algorithm>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace cpu::scalar {

void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out) {
  auto* q16 = reinterpret_cast<float*>(
      Scratch(kScratchAttnQ, static_cast<size_t>(head_dim) * sizeof(float)));
  auto* acc = reinterpret_cast<double*>(
      Scratch(kScratchAttnAcc, static_cast<size_t>(head_dim) * sizeof(double)));
  for (int64_t d = 0; d < head_dim; ++d) q16[d] = HalfToFloat(FloatToHalf(q[d]));
  for (int64_t t0 = 0, b = 0; t0 < n_kv; t0 += block_size, ++b) {
    const fp16_t* kb = k_blocks[b] + head_offset;
    const int64_t n = std::min(block_size, n_kv - t0);
    for (int64_t i = 0; i < n; ++i) {
      const fp16_t* kt = kb + i * kv_stride;
      double s = 0.0;
      for (int64_t d = 0; d < head_dim; ++d) s += static_cast<double>(q16[d] * HalfToFloat(kt[d]));
      scores[t0 + i] = static_cast<float>(s) * scale;
    }
  }
  Softmax(scores, n_kv);
  for (int64_t d = 0; d < head_dim; ++d) acc[d] = 0.0;
  for (int64_t t0 = 0, b = 0; t0 < n_kv; t0 += block_size, ++b) {
    const fp16_t* vb = v_blocks[b] + head_offset;
    const int64_t n = std::min(block_size, n_kv - t0);
    for (int64_t i = 0; i < n; ++i) {
      const float p = HalfToFloat(FloatToHalf(scores[t0 + i]));
      const fp16_t* vt = vb + i * kv_stride;
      for (int64_t d = 0; d < head_dim; ++d) acc[d] += static_cast<double>(p * HalfToFloat(vt[d]));
    }
  }
  for (int64_t d = 0; d < head_dim; ++d) out[d] = static_cast<float>(acc[d]);
}

void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale) {
  int64_t max_n = 0;
  for (int64_t r = 0; r < n_rows; ++r) max_n = std::max(max_n, n_kv[r]);
  auto* scores = reinterpret_cast<float*>(
      Scratch(kScratchRowsS, static_cast<size_t>(std::max<int64_t>(max_n, 1)) * sizeof(float)));
  for (int64_t r = 0; r < n_rows; ++r) {
    AttentionHeadBlocks(q[r], k_blocks, v_blocks, head_offset, block_size, kv_stride, n_kv[r],
                        head_dim, scale, scores, out[r]);
  }
}

}  // namespace cpu::scalar

void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out) {
  if (cpu::UseAvx512()) {
    return cpu::avx512::AttentionHeadBlocks(q, k_blocks, v_blocks, head_offset, block_size,
                                            kv_stride, n_kv, head_dim, scale, scores, out);
  }
  if (cpu::UseAvx2()) {
    return cpu::avx2::AttentionHeadBlocks(q, k_blocks, v_blocks, head_offset, block_size, kv_stride,
                                          n_kv, head_dim, scale, scores, out);
  }
  cpu::scalar::AttentionHeadBlocks(q, k_blocks, v_blocks, head_offset, block_size, kv_stride, n_kv,
                                   head_dim, scale, scores, out);
}

void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale) {
  if (cpu::UseAvx512()) {
    return cpu::avx512::AttentionRowsBlocks(q, out, n_kv, n_rows, k_blocks, v_blocks, head_offset,
                                            block_size, kv_stride, head_dim, scale);
  }
  if (cpu::UseAvx2()) {
    return cpu::avx2::AttentionRowsBlocks(q, out, n_kv, n_rows, k_blocks, v_blocks, head_offset,
                                          block_size, kv_stride, head_dim, scale);
  }
  cpu::scalar::AttentionRowsBlocks(q, out, n_kv, n_rows, k_blocks, v_blocks, head_offset,
                                   block_size, kv_stride, head_dim, scale);
}

void AttentionHead(const float* q, const fp16_t* k, const fp16_t* v, size_t kv_stride, int64_t n_kv,
                   int64_t head_dim, float scale, float* scores, float* out) {
  AttentionHeadBlocks(q, &k, &v, 0, std::max<int64_t>(n_kv, 1), kv_stride, n_kv, head_dim, scale,
                      scores, out);
}

}  // namespace loom::kernels
