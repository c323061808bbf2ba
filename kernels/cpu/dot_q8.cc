// Scalar dot product of Q8_0 weight rows with Q8_0 activations (ggml_vec_dot_q8_0_q8_0, generic).

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::scalar {

float DotQ8_0Q8_0(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ8_0*>(w);
  const auto* bx = static_cast<const BlockQ8_0*>(x);
  float sumf = 0.0f;
  for (int64_t i = 0; i < k / kQK8_0; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK8_0; ++j) sumi += bw[i].qs[j] * bx[i].qs[j];
    sumf += sumi * (HalfToFloat(bw[i].d) * HalfToFloat(bx[i].d));
  }
  return sumf;
}

}  // namespace loom::kernels::cpu::scalar
