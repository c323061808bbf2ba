// AVX2 / F16C quantization of activations to Q8_0 / Q8_1 and fp16 row conversions. Bit-identical
// to the scalar code and to ggml's x86 quantize_row_q8_0/q8_1, which llama.cpp runs on this kind of
// CPU: d = amax / 127, id = 127 / amax, one IEEE multiply per element, round half to even.

#include <immintrin.h>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

// Quantizes 32 floats; stores the int8 values to qs, returns d, and the sum of the values in *sum.
inline float QuantizeBlock(const float* x, int8_t* qs, int* sum) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 v[4];
  for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
  __m256 amax =
      _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                    _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float max_scalar = _mm_cvtss_f32(m4);
  const float d = max_scalar / ((1 << 7) - 1);
  const float id = max_scalar != 0.0f ? 127.0f / max_scalar : 0.0f;
  const __m256 mul = _mm256_set1_ps(id);
  __m256i q[4];
  for (int i = 0; i < 4; ++i)
    q[i] = _mm256_cvtps_epi32(
        _mm256_round_ps(_mm256_mul_ps(v[i], mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (sum != nullptr) {
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 1));
    *sum = _mm_cvtsi128_si32(s4);
  }
  // int32 -> int8 with the packs' lane interleaving undone by a final permute.
  const __m256i p16a = _mm256_packs_epi32(q[0], q[1]);
  const __m256i p16b = _mm256_packs_epi32(q[2], q[3]);
  const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), _mm256_permutevar8x32_epi32(p8, perm));
  return d;
}

}  // namespace

void QuantizeRowQ8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float d = QuantizeBlock(x + i * kQK8_0, y[i].qs, nullptr);
    y[i].d = FloatToHalf(d);
  }
}

void QuantizeRowQ8_1(const float* x, BlockQ8_1* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK8_1; ++i) {
    int sum = 0;
    const float d = QuantizeBlock(x + i * kQK8_1, y[i].qs, &sum);
    y[i].d = FloatToHalf(d);
    y[i].s = FloatToHalf(static_cast<float>(sum) * d);
  }
}

void Fp32ToFp16Row(const float* x, fp16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) y[i] = FloatToHalf(x[i]);
}

void Fp16ToFp32Row(const fp16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  }
  for (; i < n; ++i) y[i] = HalfToFloat(x[i]);
}

}  // namespace loom::kernels::cpu::avx2
