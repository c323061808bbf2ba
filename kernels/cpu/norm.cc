// RMS norm, SwiGLU, Add and Softmax over f32 rows, as ggml computes them.

#include <cmath>

#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace cpu::scalar {

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] * scale) * weight[i];
}

void SwiGlu(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    y[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float max = x[0];
  for (int64_t i = 1; i < n; ++i) max = x[i] > max ? x[i] : max;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += static_cast<double>(x[i]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace cpu::scalar

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  if (cpu::UseAvx2()) return cpu::avx2::RmsNorm(x, weight, y, n, eps);
  cpu::scalar::RmsNorm(x, weight, y, n, eps);
}

void SwiGlu(const float* gate, const float* up, float* y, int64_t n) {
  if (cpu::UseAvx2()) return cpu::avx2::SwiGlu(gate, up, y, n);
  cpu::scalar::SwiGlu(gate, up, y, n);
}

void Add(const float* a, const float* b, float* y, int64_t n) {
  if (cpu::UseAvx2()) return cpu::avx2::Add(a, b, y, n);
  cpu::scalar::Add(a, b, y, n);
}

void Softmax(float* x, int64_t n) {
  if (cpu::UseAvx512()) return cpu::avx512::Softmax(x, n);
  if (cpu::UseAvx2()) return cpu::avx2::Softmax(x, n);
  cpu::scalar::Softmax(x, n);
}

}  // namespace loom::kernels
