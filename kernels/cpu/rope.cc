// Rotary position embedding, as ggml_rope (no YaRN extrapolation: ext_factor 0, attn_factor 1).

#include <cmath>

#include "kernels/kernels.h"

namespace loom::kernels {

void Rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t pos,
          float freq_base, float freq_scale, RopeStyle style) {
  // ggml builds the angles by repeated multiplication in float (ggml_rope_cache_init); doing the
  // same keeps the rounding, and so the logits, identical.
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(rope_dim));
  float theta_base = static_cast<float>(pos);
  const int64_t half = rope_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float theta = freq_scale * theta_base;
    const float c = std::cos(theta);
    const float s = std::sin(theta);
    theta_base *= theta_scale;
    const int64_t a = style == RopeStyle::kNorm ? 2 * i : i;
    const int64_t b = style == RopeStyle::kNorm ? 2 * i + 1 : i + half;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      const float x0 = v[a];
      const float x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x0 * s + x1 * c;
    }
  }
}

}  // namespace loom::kernels
