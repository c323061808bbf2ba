// Scalar dot products of F32 / F16 / BF16 rows: float products summed in double, as ggml's
// generic ggml_vec_dot_f32 / _f16 / _bf16 do.

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::scalar {

float DotF32(int64_t k, const void* w, const void* x) {
  const auto* a = static_cast<const float*>(w);
  const auto* b = static_cast<const float*>(x);
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += static_cast<double>(a[i] * b[i]);
  return static_cast<float>(sum);
}

float DotF16(int64_t k, const void* w, const void* x) {
  const auto* a = static_cast<const fp16_t*>(w);
  const auto* b = static_cast<const fp16_t*>(x);
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += static_cast<double>(HalfToFloat(a[i]) * HalfToFloat(b[i]));
  return static_cast<float>(sum);
}

float DotBF16(int64_t k, const void* w, const void* x) {
  const auto* a = static_cast<const bf16_t*>(w);
  const auto* b = static_cast<const bf16_t*>(x);
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) sum += static_cast<double>(BF16ToFloat(a[i]) * BF16ToFloat(b[i]));
  return static_cast<float>(sum);
}

}  // namespace loom::kernels::cpu::scalar
