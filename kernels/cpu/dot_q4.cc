// Scalar dot products of Q4_0 / Q4_1 weight rows with Q8_0 / Q8_1 activations, in the order of
// ggml's generic ggml_vec_dot_q4_0_q8_0 / ggml_vec_dot_q4_1_q8_1.

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::scalar {

float DotQ4_0Q8_0(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ4_0*>(w);
  const auto* bx = static_cast<const BlockQ8_0*>(x);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / kQK4_0; ++i) {
    int sumi0 = 0;
    int sumi1 = 0;
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      const int v0 = (bw[i].qs[j] & 0x0F) - 8;
      const int v1 = (bw[i].qs[j] >> 4) - 8;
      sumi0 += v0 * bx[i].qs[j];
      sumi1 += v1 * bx[i].qs[j + kQK4_0 / 2];
    }
    const int sumi = sumi0 + sumi1;
    sumf += sumi * HalfToFloat(bw[i].d) * HalfToFloat(bx[i].d);
  }
  return sumf;
}

float DotQ4_1Q8_1(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ4_1*>(w);
  const auto* bx = static_cast<const BlockQ8_1*>(x);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / kQK4_1; ++i) {
    int sumi0 = 0;
    int sumi1 = 0;
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      const int v0 = bw[i].qs[j] & 0x0F;
      const int v1 = bw[i].qs[j] >> 4;
      sumi0 += v0 * bx[i].qs[j];
      sumi1 += v1 * bx[i].qs[j + kQK4_1 / 2];
    }
    const int sumi = sumi0 + sumi1;
    sumf += (HalfToFloat(bw[i].d) * HalfToFloat(bx[i].d)) * sumi +
            HalfToFloat(bw[i].m) * HalfToFloat(bx[i].s);
  }
  return sumf;
}

}  // namespace loom::kernels::cpu::scalar
