// One attention head over an fp16 KV cache, as ggml's non-flash path (mul_mat, soft_max_ext,
// mul_mat) computes it.

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace cpu::scalar {

void AttentionHead(const float* q, const fp16_t* k, const fp16_t* v, size_t kv_stride, int64_t n_kv,
                   int64_t head_dim, float scale, float* scores, float* out) {
  auto* q16 = reinterpret_cast<float*>(
      Scratch(kScratchAttnQ, static_cast<size_t>(head_dim) * sizeof(float)));
  auto* acc = reinterpret_cast<double*>(
      Scratch(kScratchAttnAcc, static_cast<size_t>(head_dim) * sizeof(double)));
  for (int64_t d = 0; d < head_dim; ++d) q16[d] = HalfToFloat(FloatToHalf(q[d]));
  for (int64_t t = 0; t < n_kv; ++t) {
    const fp16_t* kt = k + t * kv_stride;
    double s = 0.0;
    for (int64_t d = 0; d < head_dim; ++d) s += static_cast<double>(q16[d] * HalfToFloat(kt[d]));
    scores[t] = static_cast<float>(s) * scale;
  }
  Softmax(scores, n_kv);
  for (int64_t d = 0; d < head_dim; ++d) acc[d] = 0.0;
  for (int64_t t = 0; t < n_kv; ++t) {
    const float p = HalfToFloat(FloatToHalf(scores[t]));
    const fp16_t* vt = v + t * kv_stride;
    for (int64_t d = 0; d < head_dim; ++d) acc[d] += static_cast<double>(p * HalfToFloat(vt[d]));
  }
  for (int64_t d = 0; d < head_dim; ++d) out[d] = static_cast<float>(acc[d]);
}

}  // namespace cpu::scalar

void AttentionHead(const float* q, const fp16_t* k, const fp16_t* v, size_t kv_stride, int64_t n_kv,
                   int64_t head_dim, float scale, float* scores, float* out) {
  if (cpu::UseAvx2()) {
    return cpu::avx2::AttentionHead(q, k, v, kv_stride, n_kv, head_dim, scale, scores, out);
  }
  cpu::scalar::AttentionHead(q, k, v, kv_stride, n_kv, head_dim, scale, scores, out);
}

}  // namespace loom::kernels
