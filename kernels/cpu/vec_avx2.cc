// AVX2 / FMA / F16C versions of the f32 row kernels (RmsNorm, SwiGlu, Add, Softmax), the F32 and
// F16 dot products, and AttentionHeadBlocks. Sums that ggml keeps in double stay in double here.

#include <immintrin.h>

#include <cmath>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline double Hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

// Adds the 8 floats of v to two double accumulators.
inline void AccumulateDouble(__m256 v, __m256d* lo, __m256d* hi) {
  *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

// e^x to about 1 ulp: x = n ln2 + r with |r| <= ln2 / 2, e^r by a degree-6 polynomial (Cephes
// expf), 2^n applied in two halves so results down to the subnormal range and overflow to inf
// come out right.
inline __m256 Exp(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(89.0f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-104.0f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i ni = _mm256_cvtps_epi32(n);     // in [-150, 129]
  const __m256i n1 = _mm256_srai_epi32(ni, 1);  // floor(n / 2)
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

}  // namespace

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    AccumulateDouble(_mm256_mul_ps(v, v), &lo, &hi);
  }
  double sum = Hsum(_mm256_add_pd(lo, hi));
  for (; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / sqrtf(mean + eps);
  const __m256 vs = _mm256_set1_ps(scale);
  for (i = 0; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs),
                                          _mm256_loadu_ps(weight + i)));
  }
  for (; i < n; ++i) y[i] = (x[i] * scale) * weight[i];
}

void SwiGlu(const float* gate, const float* up, float* y, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, Exp(_mm256_xor_ps(g, sign))));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) y[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void Add(const float* a, const float* b, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  int64_t i = 0;
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float max = _mm_cvtss_f32(m4);
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  const __m256 vm = _mm256_set1_ps(max);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
    _mm256_storeu_ps(x + i, e);
    AccumulateDouble(e, &lo, &hi);
  }
  double sum = Hsum(_mm256_add_pd(lo, hi));
  for (; i < n; ++i) {
    x[i] = expf(x[i] - max);
    sum += static_cast<double>(x[i]);
  }
  const float inv = static_cast<float>(1.0 / sum);
  const __m256 vi = _mm256_set1_ps(inv);
  for (i = 0; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi));
  for (; i < n; ++i) x[i] *= inv;
}

float DotF32(int64_t k, const void* w, const void* x) {
  const auto* a = static_cast<const float*>(w);
  const auto* b = static_cast<const float*>(x);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    for (int j = 0; j < 4; ++j) {
      acc[j] =
          _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * j), _mm256_loadu_ps(b + i + 8 * j), acc[j]);
    }
  }
  for (; i + 8 <= k; i += 8) {
    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc[0]);
  }
  double sum = Hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < k; ++i) sum += static_cast<double>(a[i] * b[i]);
  return static_cast<float>(sum);
}

namespace {

inline __m256 LoadHalf8(const fp16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// f32 q (already fp16-exact) . fp16 k over n elements.
inline float DotF32F16(const float* q, const fp16_t* k, int64_t n) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int j = 0; j < 4; ++j) {
      acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8 * j), LoadHalf8(k + i + 8 * j), acc[j]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), LoadHalf8(k + i), acc[0]);
  }
  double sum = Hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < n; ++i) sum += static_cast<double>(q[i] * HalfToFloat(k[i]));
  return static_cast<float>(sum);
}

}  // namespace

float DotF16(int64_t k, const void* w, const void* x) {
  const auto* a = static_cast<const fp16_t*>(w);
  const auto* b = static_cast<const fp16_t*>(x);
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    for (int j = 0; j < 4; ++j) {
      acc[j] = _mm256_fmadd_ps(LoadHalf8(a + i + 8 * j), LoadHalf8(b + i + 8 * j), acc[j]);
    }
  }
  for (; i + 8 <= k; i += 8) acc[0] = _mm256_fmadd_ps(LoadHalf8(a + i), LoadHalf8(b + i), acc[0]);
  double sum = Hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  for (; i < k; ++i) sum += static_cast<double>(HalfToFloat(a[i]) * HalfToFloat(b[i]));
  return static_cast<float>(sum);
}

void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out) {
  auto* q16 = reinterpret_cast<float*>(
      Scratch(kScratchAttnQ, static_cast<size_t>(head_dim + 8) * sizeof(float)));
  int64_t d = 0;
  for (; d + 8 <= head_dim; d += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(q + d), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(q16 + d, _mm256_cvtph_ps(h));
  }
  for (; d < head_dim; ++d) q16[d] = HalfToFloat(FloatToHalf(q[d]));

  // Rows t0 .. t0 + n - 1 of the cache live in block b; visits every row in order.
  auto for_each_block = [&](const fp16_t* const* blocks, auto&& fn) {
    for (int64_t t0 = 0, b = 0; t0 < n_kv; t0 += block_size, ++b) {
      fn(t0, blocks[b] + head_offset, n_kv - t0 < block_size ? n_kv - t0 : block_size);
    }
  };
  for_each_block(k_blocks, [&](int64_t t0, const fp16_t* kb, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
      scores[t0 + i] = DotF32F16(q16, kb + i * kv_stride, head_dim) * scale;
    }
  });
  Softmax(scores, n_kv);
  // ggml multiplies V by the probabilities rounded to fp16.
  int64_t t0 = 0;
  for (; t0 + 8 <= n_kv; t0 += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(scores + t0), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(scores + t0, _mm256_cvtph_ps(h));
  }
  for (; t0 < n_kv; ++t0) scores[t0] = HalfToFloat(FloatToHalf(scores[t0]));

  // out = sum_t fp16(p_t) v_t, 64 (then 8) output dims at a time in registers.
  d = 0;
  for (; d + 64 <= head_dim; d += 64) {
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
    for_each_block(v_blocks, [&](int64_t b0, const fp16_t* vb, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const __m256 p = _mm256_set1_ps(scores[b0 + i]);
        const fp16_t* vt = vb + i * kv_stride + d;
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(p, LoadHalf8(vt + 8 * j), acc[j]);
      }
    });
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(out + d + 8 * j, acc[j]);
  }
  for (; d + 8 <= head_dim; d += 8) {
    __m256 acc = _mm256_setzero_ps();
    for_each_block(v_blocks, [&](int64_t b0, const fp16_t* vb, int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        const __m256 p = _mm256_set1_ps(scores[b0 + i]);
        acc = _mm256_fmadd_ps(p, LoadHalf8(vb + i * kv_stride + d), acc);
      }
    });
    _mm256_storeu_ps(out + d, acc);
  }
  for (; d < head_dim; ++d) {
    float acc = 0.0f;
    for_each_block(v_blocks, [&](int64_t b0, const fp16_t* vb, int64_t n) {
      for (int64_t i = 0; i < n; ++i) acc += scores[b0 + i] * HalfToFloat(vb[i * kv_stride + d]);
    });
    out[d] = acc;
  }
}

}  // namespace loom::kernels::cpu::avx2
