// AVX-512 versions of the attention kernels (AttentionHeadBlocks, AttentionRowsBlocks) and of
// Softmax that give the AVX2 kernels' bits (attention_avx2.cc, vec_avx2.cc): every zmm lane does
// the float operations one ymm lane does there, in the same order.
//
// Scores. The AVX2 kernels score a position as DotF32F16 does: accumulators a0..a3, a_j summing
// q[d] * k[d] over the dims d = 32b + 8j + l (l = 0..7, the lane) in order of b, the 8-dim tail
// into a0, then v = (a0 + a1) + (a2 + a3) and Hsum(v) = ((v0 + v4) + (v2 + v6)) + ((v1 + v5) +
// (v3 + v7)), times scale. Two routes here reproduce it:
//  * Direct (up to 48 rows: a single head, a decode step's GQA group, a prefill task; head_dim up
//    to 128): K is read as stored, two positions per zmm (dims 8m..8m+7 of each in a 256-bit
//    half), so the accumulators hold a_j of two positions; the v of 16 positions (8 zmm) are then
//    summed by three rounds of shuffles and adds in Hsum's order, with no horizontal sum per
//    position. Each K vector serves every row.
//  * Tiled (more rows, or wider heads): K tiles of 64 positions are transposed (dims x positions)
//    as in the AVX2 kernel and scored 16 positions per zmm, one lane per position.
// P.V: 16 output dims per zmm, positions in order (the direct route straight from the fp16 cache,
// each row over exactly its own positions; the tiled one from a converted V tile, adding exact
// zeros past a row's end, as in AVX2). Softmax: Exp on 16 elements at a time (the same operations
// per element), the max, the double sums and the scalar tail in AVX2's order.

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/cpu/avx512_intrin.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx512 {
namespace {

constexpr int64_t kTile = 64;        // tiled route: K/V positions per tile
constexpr int kDirectMaxDims8 = 16;  // direct route: head_dim / 8 up to this (K of a pair in zmm)
constexpr int64_t kDirectMaxRows = 48;  // direct route: rows per call (see AttentionRowsBlocks)
constexpr int kDirectPvRows = 6;        // direct route's P.V: rows accumulated together
constexpr int kPvRows = 4;              // tiled route's P.V: rows accumulated together

inline __m128i Load128(const fp16_t* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}

inline __m512 LoadHalf16(const fp16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Lanes 0..7: p[0..8) as f32; lanes 8..15: zero.
inline __m512 LoadHalf8(const fp16_t* p) {
  return _mm512_cvtph_ps(_mm256_zextsi128_si256(Load128(p)));
}

// [a[0..8) | b[0..8)] as f32.
inline __m512 LoadHalf8x2(const fp16_t* a, const fp16_t* b) {
  return _mm512_cvtph_ps(
      _mm256_inserti128_si256(_mm256_castsi128_si256(Load128(a)), Load128(b), 1));
}

// x rounded to fp16 and back (vcvtps2ph, round to nearest even, as AVX2 and FloatToHalf do).
inline __m512 RoundHalf(__m512 x) {
  return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

// The first n (<= 16) lanes.
inline __mmask16 FirstLanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// vec_avx2.cc's Exp, operation for operation.
inline __m512 Exp(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i ni = _mm512_cvtps_epi32(n);     // in [-150, 129]
  const __m512i n1 = _mm512_srai_epi32(ni, 1);  // floor(n / 2)
  const __m512i n2 = _mm512_sub_epi32(ni, n1);
  const __m512i bias = _mm512_set1_epi32(127);
  const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
  const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
  return _mm512_mul_ps(_mm512_mul_ps(p, s1), s2);
}

// avx2::Softmax; with kRoundHalf, each result then rounded to fp16 and back (the probabilities
// that the attention kernels multiply V by), in the same pass.
template <bool kRoundHalf>
void SoftmaxImpl(float* x, int64_t n) {
  if (n <= 0) return;
  // The max exactly as AVX2 takes it (8 lanes, then the tail), so that even NaNs propagate alike.
  int64_t i = 0;
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float max = _mm_cvtss_f32(m4);
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  // e^(x - max) for the first n / 8 * 8 elements, summed in double: lane k of acc adds the elements
  // 8m + k in order, as AVX2's lo (k < 4) and hi (k >= 4) accumulators do.
  const __m512 vm = _mm512_set1_ps(max);
  const int64_t n8 = n / 8 * 8;
  __m512d acc = _mm512_setzero_pd();
  for (i = 0; i + 16 <= n8; i += 16) {
    const __m512 e = Exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    acc = _mm512_add_pd(
        acc, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  if (i < n8) {
    const __m512 e = Exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(0x00FF, x + i), vm));
    _mm512_mask_storeu_ps(x + i, 0x00FF, e);
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    i += 8;
  }
  // AVX2's Hsum of lo + hi.
  const __m256d lh = _mm256_add_pd(_mm512_castpd512_pd256(acc), _mm512_extractf64x4_pd(acc, 1));
  __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(lh), _mm256_extractf128_pd(lh, 1));
  s2 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
  double sum = _mm_cvtsd_f64(s2);
  for (; i < n; ++i) {
    x[i] = expf(x[i] - max);
    sum += static_cast<double>(x[i]);
  }
  const __m512 vi = _mm512_set1_ps(static_cast<float>(1.0 / sum));
  auto normalize = [&](__m512 e) {
    const __m512 p = _mm512_mul_ps(e, vi);
    return kRoundHalf ? RoundHalf(p) : p;
  };
  for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, normalize(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = FirstLanes(n - i);
    _mm512_mask_storeu_ps(x + i, m, normalize(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

// Row t of a paged head: block t / block_size, row t % block_size.
struct Paged {
  const fp16_t* const* blocks;
  size_t head_offset;
  int64_t block_size;
  size_t stride;
  const fp16_t* Row(int64_t t) const {
    return blocks[t / block_size] + head_offset + static_cast<size_t>(t % block_size) * stride;
  }
  // fn(t, row) for t in [t0, t1), in order, one division per call.
  template <typename Fn>
  void ForEach(int64_t t0, int64_t t1, Fn&& fn) const {
    int64_t b = t0 / block_size, i = t0 % block_size;
    for (int64_t t = t0; t < t1; ++b, i = 0) {
      const fp16_t* base = blocks[b] + head_offset;
      for (; i < block_size && t < t1; ++i, ++t) fn(t, base + static_cast<size_t>(i) * stride);
    }
  }
};

// ---- Direct route ------------------------------------------------------------------------------

// v = (a0 + a1) + (a2 + a3) of two positions (one per 256-bit half): k[m] holds dims 8m..8m+7 of
// both, qd + 16 m those dims of q twice.
template <int ND>
inline __m512 PairDot(const float* qd, const __m512* k) {
  constexpr int kFull = ND / 4 * 4;
  __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                 _mm512_setzero_ps()};
#pragma GCC unroll 16
  for (int m = 0; m < kFull; ++m) {
    a[m % 4] = _mm512_fmadd_ps(_mm512_load_ps(qd + 16 * m), k[m], a[m % 4]);
  }
#pragma GCC unroll 3
  for (int m = kFull; m < ND; ++m) a[0] = _mm512_fmadd_ps(_mm512_load_ps(qd + 16 * m), k[m], a[0]);
  return _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
}

// The Hsum of 16 positions' v, v[i] = [v of position 2i | of position 2i + 1], in position order:
// first c_l = v_l + v_{l+4}, then e0 = c0 + c2 and e1 = c1 + c3, then e0 + e1.
inline __m512 ReduceDots(const __m512* v) {
  __m512 c[4];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    // 128-bit chunk j of c[i]: position 4i + j, its c0..c3.
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  __m512 e[2];
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    // Chunk j of e[i]: e0, e1 of position 8i + j, then of position 8i + 4 + j.
    e[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  }
  // Lane 4j + x: the dot of position j + 4x.
  const __m512 dot = _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, dot);
}

// out[r][d .. d + 16 NV) (the last vector 8 dims when kHalf) += sum_t p[r][t] v_t[d ..] over
// t in [t0, t1), straight from the fp16 cache, for R rows.
template <int R, int NV, bool kHalf>
void AccumulatePVDirect(float* const* out, const float* const* p, const Paged& v, int64_t t0,
                        int64_t t1, int64_t d) {
  const __mmask16 last = kHalf ? 0x00FF : 0xFFFF;
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NV; ++j) {
      acc[r][j] = _mm512_maskz_loadu_ps(j == NV - 1 ? last : 0xFFFF, out[r] + d + 16 * j);
    }
  }
  v.ForEach(t0, t1, [&](int64_t t, const fp16_t* row) {
    __m512 x[NV];
    for (int j = 0; j < NV; ++j) {
      x[j] = kHalf && j == NV - 1 ? LoadHalf8(row + d + 16 * j) : LoadHalf16(row + d + 16 * j);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r][t]);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(pb, x[j], acc[r][j]);
    }
  });
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NV; ++j) {
      _mm512_mask_storeu_ps(out[r] + d + 16 * j, j == NV - 1 ? last : 0xFFFF, acc[r][j]);
    }
  }
}

template <int R>
void AccumulatePVDirectRows(float* const* out, const float* const* p, const Paged& v, int64_t t0,
                            int64_t t1, int64_t head_dim) {
  int64_t d = 0;
  for (; d + 64 <= head_dim; d += 64) AccumulatePVDirect<R, 4, false>(out, p, v, t0, t1, d);
  for (; d + 16 <= head_dim; d += 16) AccumulatePVDirect<R, 1, false>(out, p, v, t0, t1, d);
  if (d < head_dim) AccumulatePVDirect<R, 1, true>(out, p, v, t0, t1, d);
}

// Rows [0, n_rows) (n_rows <= kDirectMaxRows), head_dim = 8 ND: scores into scores + r * stride
// (only positions below n_kv[r] are written), softmax, then P.V, each row over its own positions.
// qd: scratch of n_rows * 16 ND floats, 64-byte aligned.
template <int ND>
void DirectRows(const float* const* q, float* const* out, const int64_t* n_kv, int64_t n_rows,
                const Paged& k, const Paged& v, float scale, float* qd, float* scores,
                int64_t stride) {
  constexpr int64_t kHd = 8 * ND;
  int64_t max_n = 0;
  for (int64_t r = 0; r < n_rows; ++r) {
    max_n = std::max(max_n, n_kv[r]);
    // q rounded to fp16, each 8 dims twice.
    for (int m = 0; m < ND; ++m) {
      const __m256 h = _mm256_cvtph_ps(
          _mm256_cvtps_ph(_mm256_loadu_ps(q[r] + 8 * m), _MM_FROUND_TO_NEAREST_INT));
      _mm256_store_ps(qd + (r * ND + m) * 16, h);
      _mm256_store_ps(qd + (r * ND + m) * 16 + 8, h);
    }
  }

  // Scores, 16 positions (8 pairs) at a time.
  alignas(64) float vbuf[kDirectMaxRows][8][16];
  const __m512 vscale = _mm512_set1_ps(scale);
  const fp16_t* rows[16];
  for (int64_t c0 = 0; c0 < max_n; c0 += 16) {
    const int64_t c1 = std::min(c0 + 16, max_n);
    k.ForEach(c0, c1, [&](int64_t t, const fp16_t* row) { rows[t - c0] = row; });
    for (int64_t i = c1 - c0; i < 16; ++i) rows[i] = rows[c1 - c0 - 1];  // past max_n: ignored
    for (int i = 0; i < 8; ++i) {
      __m512 kp[ND];
#pragma GCC unroll 16
      for (int m = 0; m < ND; ++m)
        kp[m] = LoadHalf8x2(rows[2 * i] + 8 * m, rows[2 * i + 1] + 8 * m);
      for (int64_t r = 0; r < n_rows; ++r) {
        if (n_kv[r] > c0) _mm512_store_ps(vbuf[r][i], PairDot<ND>(qd + r * ND * 16, kp));
      }
    }
    for (int64_t r = 0; r < n_rows; ++r) {
      if (n_kv[r] <= c0) continue;
      __m512 vv[8];
      for (int i = 0; i < 8; ++i) vv[i] = _mm512_load_ps(vbuf[r][i]);
      const __m512 s = _mm512_mul_ps(ReduceDots(vv), vscale);
      _mm512_mask_storeu_ps(scores + r * stride + c0,
                            FirstLanes(std::min<int64_t>(16, n_kv[r] - c0)), s);
    }
  }

  // Probabilities, rounded to fp16 as ggml multiplies V by them.
  for (int64_t r = 0; r < n_rows; ++r) {
    SoftmaxImpl<true>(scores + r * stride, n_kv[r]);
    std::fill(out[r], out[r] + kHd, 0.0f);
  }

  // out_r = sum_t p_r[t] v_t, kDirectPvRows rows at a time (each V vector converted once for
  // them); positions [s0, s1) are seen by the rows whose n_kv is above s0, so every row adds
  // exactly its own positions, in order.
  float* rows_out[kDirectPvRows];
  const float* rows_p[kDirectPvRows];
  for (int64_t g = 0; g < n_rows; g += kDirectPvRows) {
    const int64_t g1 = std::min(n_rows, g + kDirectPvRows);
    for (int64_t s0 = 0;;) {
      int64_t s1 = INT64_MAX;
      int m = 0;
      for (int64_t r = g; r < g1; ++r) {
        if (n_kv[r] <= s0) continue;
        s1 = std::min(s1, n_kv[r]);
        rows_out[m] = out[r];
        rows_p[m] = scores + r * stride;
        ++m;
      }
      switch (m) {
        case 1:
          AccumulatePVDirectRows<1>(rows_out, rows_p, v, s0, s1, kHd);
          break;
        case 2:
          AccumulatePVDirectRows<2>(rows_out, rows_p, v, s0, s1, kHd);
          break;
        case 3:
          AccumulatePVDirectRows<3>(rows_out, rows_p, v, s0, s1, kHd);
          break;
        case 4:
          AccumulatePVDirectRows<4>(rows_out, rows_p, v, s0, s1, kHd);
          break;
        case 5:
          AccumulatePVDirectRows<5>(rows_out, rows_p, v, s0, s1, kHd);
          break;
        case 6:
          AccumulatePVDirectRows<6>(rows_out, rows_p, v, s0, s1, kHd);
          break;
        default:
          break;
      }
      if (m == 0) break;
      s0 = s1;
    }
  }
}

// DirectRows for head_dim = 8 ND, ND in [1, kDirectMaxDims8].
template <int ND = 1>
void DirectRowsFor(int64_t nd, const float* const* q, float* const* out, const int64_t* n_kv,
                   int64_t n_rows, const Paged& k, const Paged& v, float scale, float* qd,
                   float* scores, int64_t stride) {
  if constexpr (ND <= kDirectMaxDims8) {
    if (nd == ND) return DirectRows<ND>(q, out, n_kv, n_rows, k, v, scale, qd, scores, stride);
    return DirectRowsFor<ND + 1>(nd, q, out, n_kv, n_rows, k, v, scale, qd, scores, stride);
  }
}

bool DirectSupported(int64_t head_dim) {
  return head_dim % 8 == 0 && head_dim > 0 && head_dim / 8 <= kDirectMaxDims8;
}

// ---- Tiled route -------------------------------------------------------------------------------

// Transposes, in each 256-bit half, the 8x8 block r[0..7] (rows) into columns.
inline void Transpose8x2(__m512 r[8]) {
  const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
  const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
  const __m512 t4 = _mm512_unpacklo_ps(r[4], r[5]), t5 = _mm512_unpackhi_ps(r[4], r[5]);
  const __m512 t6 = _mm512_unpacklo_ps(r[6], r[7]), t7 = _mm512_unpackhi_ps(r[6], r[7]);
  const __m512 u0 = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 u1 = _mm512_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512 u2 = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 u3 = _mm512_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512 u4 = _mm512_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 u5 = _mm512_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m512 u6 = _mm512_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m512 u7 = _mm512_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  // Per half: the low 128 bits of a and b (permute2f128 0x20), or the high ones (0x31).
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  r[0] = _mm512_permutex2var_ps(u0, lo, u4);
  r[1] = _mm512_permutex2var_ps(u1, lo, u5);
  r[2] = _mm512_permutex2var_ps(u2, lo, u6);
  r[3] = _mm512_permutex2var_ps(u3, lo, u7);
  r[4] = _mm512_permutex2var_ps(u0, hi, u4);
  r[5] = _mm512_permutex2var_ps(u1, hi, u5);
  r[6] = _mm512_permutex2var_ps(u2, hi, u6);
  r[7] = _mm512_permutex2var_ps(u3, hi, u7);
}

// kt[d * kTile + i] = K[t0 + i][d] for i < n; columns n..kTile-1 are zero.
void LoadKTile(const Paged& k, int64_t t0, int64_t n, int64_t head_dim, float* kt) {
  const fp16_t* rows[16];
  __m512 r[8];
  for (int64_t i0 = 0; i0 < kTile; i0 += 16) {
    const int64_t m = std::min<int64_t>(16, n - i0);
    if (m <= 0) {
      for (int64_t d = 0; d < head_dim; ++d)
        _mm512_storeu_ps(kt + d * kTile + i0, _mm512_setzero_ps());
      continue;
    }
    for (int64_t i = 0; i < m; ++i) rows[i] = k.Row(t0 + i0 + i);
    for (int64_t d0 = 0; d0 < head_dim; d0 += 8) {
      // r[i]: dims d0.. of positions i (low half) and i + 8 (high half).
      for (int64_t i = 0; i < 8; ++i) {
        const __m128i a = i < m ? Load128(rows[i] + d0) : _mm_setzero_si128();
        const __m128i b = i + 8 < m ? Load128(rows[i + 8] + d0) : _mm_setzero_si128();
        r[i] = _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
      }
      Transpose8x2(r);
      for (int64_t j = 0; j < 8; ++j) _mm512_storeu_ps(kt + (d0 + j) * kTile + i0, r[j]);
    }
  }
}

// s[0 .. 16 X) = scale * (q . K) for the positions of X zmm groups of a transposed K tile (kt
// points at the first group's column), each lane summed as DotF32F16 sums one position.
template <int X>
inline void TileScores(const float* qr, const float* kt, int64_t nb32, int64_t tail8, float scale,
                       float* s) {
  // v_l, lane l of the dot, for all X groups: (a0 + a1) + (a2 + a3).
  auto lane = [&](int l, __m512* v) {
    __m512 a[4][X];
    for (int j = 0; j < 4; ++j) {
      for (int x = 0; x < X; ++x) a[j][x] = _mm512_setzero_ps();
    }
    auto add_dim = [&](int j, int64_t d) {
      const __m512 qb = _mm512_set1_ps(qr[d]);
      const float* kd = kt + d * kTile;
      for (int x = 0; x < X; ++x)
        a[j][x] = _mm512_fmadd_ps(qb, _mm512_loadu_ps(kd + 16 * x), a[j][x]);
    };
    for (int64_t b = 0; b < nb32; ++b) {
      for (int j = 0; j < 4; ++j) add_dim(j, 32 * b + 8 * j + l);
    }
    for (int64_t t = 0; t < tail8; ++t) add_dim(0, 32 * nb32 + 8 * t + l);
    for (int x = 0; x < X; ++x) {
      v[x] = _mm512_add_ps(_mm512_add_ps(a[0][x], a[1][x]), _mm512_add_ps(a[2][x], a[3][x]));
    }
  };
  // Hsum's order: ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)).
  __m512 e0[X], c[X], v[X];
  auto pair = [&](int l, __m512* out) {  // out = v_l + v_{l+4}
    lane(l, c);
    lane(l + 4, v);
    for (int x = 0; x < X; ++x) out[x] = _mm512_add_ps(c[x], v[x]);
  };
  __m512 c2[X];
  pair(0, e0);
  pair(2, c2);
  for (int x = 0; x < X; ++x) e0[x] = _mm512_add_ps(e0[x], c2[x]);
  __m512 c1[X];
  pair(1, c1);
  pair(3, c2);
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int x = 0; x < X; ++x) {
    const __m512 dot = _mm512_add_ps(e0[x], _mm512_add_ps(c1[x], c2[x]));
    _mm512_storeu_ps(s + 16 * x, _mm512_mul_ps(dot, vscale));
  }
}

// out rows[0..R) (dims d .. d + 16 NV, the last vector 8 dims when kHalf) += sum_i p_r[i] *
// vt[i][d..], i < n.
template <int R, int NV, bool kHalf>
void AccumulatePV(float* const* out, const float* const* p, const float* vt, int64_t n,
                  int64_t head_dim, int64_t d) {
  const __mmask16 last = kHalf ? 0x00FF : 0xFFFF;
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NV; ++j) {
      acc[r][j] = _mm512_maskz_loadu_ps(j == NV - 1 ? last : 0xFFFF, out[r] + d + 16 * j);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    __m512 v[NV];
    for (int j = 0; j < NV; ++j) {
      v[j] = _mm512_maskz_loadu_ps(j == NV - 1 ? last : 0xFFFF, vt + i * head_dim + d + 16 * j);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[r][i]);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(pb, v[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NV; ++j) {
      _mm512_mask_storeu_ps(out[r] + d + 16 * j, j == NV - 1 ? last : 0xFFFF, acc[r][j]);
    }
  }
}

template <int R>
void AccumulatePVRows(float* const* out, const float* const* p, const float* vt, int64_t n,
                      int64_t head_dim) {
  int64_t d = 0;
  for (; d + 64 <= head_dim; d += 64) AccumulatePV<R, 4, false>(out, p, vt, n, head_dim, d);
  for (; d + 16 <= head_dim; d += 16) AccumulatePV<R, 1, false>(out, p, vt, n, head_dim, d);
  if (d < head_dim) AccumulatePV<R, 1, true>(out, p, vt, n, head_dim, d);
}

// The AVX2 grouped kernel's algorithm (attention_avx2.cc) with 16 positions or dims per vector;
// head_dim % 8 == 0, max_n > 0.
void TiledRows(const float* const* q, float* const* out, const int64_t* n_kv, int64_t n_rows,
               const Paged& k, const Paged& v, int64_t max_n, int64_t head_dim, float scale) {
  const int64_t stride = (max_n + kTile - 1) / kTile * kTile;
  auto* q16 = reinterpret_cast<float*>(
      Scratch(kScratchRowsQ, static_cast<size_t>(n_rows * head_dim) * sizeof(float)));
  auto* scores = reinterpret_cast<float*>(
      Scratch(kScratchRowsS, static_cast<size_t>(n_rows * stride) * sizeof(float)));
  auto* tile = reinterpret_cast<float*>(
      Scratch(kScratchRowsKv, static_cast<size_t>(kTile * head_dim) * sizeof(float)));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t d = 0; d < head_dim; d += 8) {
      const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(q[r] + d), _MM_FROUND_TO_NEAREST_INT);
      _mm256_storeu_ps(q16 + r * head_dim + d, _mm256_cvtph_ps(h));
    }
  }

  const int64_t nb32 = head_dim / 32;
  const int64_t tail8 = (head_dim % 32) / 8;
  for (int64_t t0 = 0; t0 < max_n; t0 += kTile) {
    LoadKTile(k, t0, std::min(kTile, max_n - t0), head_dim, tile);
    for (int64_t r = 0; r < n_rows; ++r) {
      if (n_kv[r] <= t0) continue;
      const float* qr = q16 + r * head_dim;
      float* s = scores + r * stride + t0;
      switch ((std::min(kTile, n_kv[r] - t0) + 15) / 16) {
        case 1:
          TileScores<1>(qr, tile, nb32, tail8, scale, s);
          break;
        case 2:
          TileScores<2>(qr, tile, nb32, tail8, scale, s);
          break;
        case 3:
          TileScores<3>(qr, tile, nb32, tail8, scale, s);
          break;
        default:
          TileScores<4>(qr, tile, nb32, tail8, scale, s);
          break;
      }
    }
  }

  // Probabilities, rounded to fp16; zero past each row's end so the P.V pass can run every row to
  // the tile's end (adding exact zeros), as the AVX2 kernel does.
  for (int64_t r = 0; r < n_rows; ++r) {
    float* s = scores + r * stride;
    SoftmaxImpl<true>(s, n_kv[r]);
    std::fill(s + n_kv[r], s + stride, 0.0f);
    std::fill(out[r], out[r] + head_dim, 0.0f);
  }

  float* rows_out[kPvRows];
  const float* rows_p[kPvRows];
  for (int64_t t0 = 0; t0 < max_n; t0 += kTile) {
    const int64_t n = std::min(kTile, max_n - t0);
    for (int64_t i = 0; i < n; ++i) {
      const fp16_t* row = v.Row(t0 + i);
      int64_t d = 0;
      for (; d + 16 <= head_dim; d += 16)
        _mm512_storeu_ps(tile + i * head_dim + d, LoadHalf16(row + d));
      if (d < head_dim) {
        _mm256_storeu_ps(tile + i * head_dim + d, _mm512_castps512_ps256(LoadHalf8(row + d)));
      }
    }
    int m = 0;
    auto flush = [&]() {
      switch (m) {
        case 1:
          AccumulatePVRows<1>(rows_out, rows_p, tile, n, head_dim);
          break;
        case 2:
          AccumulatePVRows<2>(rows_out, rows_p, tile, n, head_dim);
          break;
        case 3:
          AccumulatePVRows<3>(rows_out, rows_p, tile, n, head_dim);
          break;
        case 4:
          AccumulatePVRows<4>(rows_out, rows_p, tile, n, head_dim);
          break;
        default:
          break;
      }
      m = 0;
    };
    for (int64_t r = 0; r < n_rows; ++r) {
      if (n_kv[r] <= t0) continue;
      rows_out[m] = out[r];
      rows_p[m] = scores + r * stride + t0;
      if (++m == kPvRows) flush();
    }
    flush();
  }
}

}  // namespace

void Softmax(float* x, int64_t n) { SoftmaxImpl<false>(x, n); }

void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out) {
  if (!DirectSupported(head_dim)) {
    return avx2::AttentionHeadBlocks(q, k_blocks, v_blocks, head_offset, block_size, kv_stride,
                                     n_kv, head_dim, scale, scores, out);
  }
  auto* qd = reinterpret_cast<float*>(
      Scratch(kScratchAttnQ, static_cast<size_t>(2 * head_dim) * sizeof(float)));
  const Paged k{k_blocks, head_offset, block_size, kv_stride};
  const Paged v{v_blocks, head_offset, block_size, kv_stride};
  DirectRowsFor(head_dim / 8, &q, &out, &n_kv, 1, k, v, scale, qd, scores, 0);
}

void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale) {
  if (n_rows <= 0) return;
  if (head_dim % 8 != 0) {
    return avx2::AttentionRowsBlocks(q, out, n_kv, n_rows, k_blocks, v_blocks, head_offset,
                                     block_size, kv_stride, head_dim, scale);
  }
  int64_t max_n = 0;
  for (int64_t r = 0; r < n_rows; ++r) max_n = std::max(max_n, n_kv[r]);
  const Paged k{k_blocks, head_offset, block_size, kv_stride};
  const Paged v{v_blocks, head_offset, block_size, kv_stride};
  // Every route gives every row the bits of AttentionHeadBlocks on it, so the choice never changes
  // a result. The direct route beats the tiled one up to 48 rows (the engine's tasks) of SmolLM2's
  // shape (3 heads x tokens, one thread: 1.4-1.9x at 3 rows, 1.1-1.2x at 48 rows over 256 to 4096
  // positions, about even at 8192). Over 128 dims (no direct route) a few rows over a short cache
  // go to the AVX2 per-row kernel, as they do on the AVX2 path.
  if (n_rows <= kDirectMaxRows && DirectSupported(head_dim)) {
    const int64_t stride = std::max<int64_t>(max_n, 1);
    auto* qd = reinterpret_cast<float*>(
        Scratch(kScratchRowsQ, static_cast<size_t>(n_rows * 2 * head_dim) * sizeof(float)));
    auto* scores = reinterpret_cast<float*>(
        Scratch(kScratchRowsS, static_cast<size_t>(n_rows * stride) * sizeof(float)));
    return DirectRowsFor(head_dim / 8, q, out, n_kv, n_rows, k, v, scale, qd, scores, stride);
  }
  if (max_n == 0 || (n_rows < 8 && max_n < 3072)) {
    return avx2::AttentionRowsBlocks(q, out, n_kv, n_rows, k_blocks, v_blocks, head_offset,
                                     block_size, kv_stride, head_dim, scale);
  }
  TiledRows(q, out, n_kv, n_rows, k, v, max_n, head_dim, scale);
}

}  // namespace loom::kernels::cpu::avx512
