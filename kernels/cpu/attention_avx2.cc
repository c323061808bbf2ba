// AttentionRowsBlocks with AVX2: several query rows (a GQA group's heads, a run of tokens) share
// one pass over a head's K and V. K comes in tiles of 64 positions, converted to f32 and
// transposed (dims × positions) so that one broadcast q element times one K vector advances the
// dot products of eight positions, in the same order of additions as AttentionHeadBlocks; V tiles
// are converted once and multiplied by the probabilities of four rows at a time. Prefill at a few
// thousand tokens spent most of its time re-reading K and V row by row per query
// (AttentionHeadBlocks); this reads each row once per group of rows.

#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

constexpr int64_t kTile = 64;  // K/V positions per tile
constexpr int kGroups = 4;     // groups of 8 positions scored per pass over q

inline __m256 LoadHalf8(const fp16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// Transposes the 8×8 block r[0..7] (rows) in place into columns.
inline void Transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
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
};

// kt[d * kTile + i] = K[t0 + i][d] for i < n; columns n..kTile-1 are zero.
void LoadKTile(const Paged& k, int64_t t0, int64_t n, int64_t head_dim, float* kt) {
  const fp16_t* rows[8];
  __m256 r[8];
  for (int64_t i0 = 0; i0 < kTile; i0 += 8) {
    const int64_t m = std::min<int64_t>(8, n - i0);
    if (m <= 0) {
      for (int64_t d = 0; d < head_dim; ++d)
        _mm256_storeu_ps(kt + d * kTile + i0, _mm256_setzero_ps());
      continue;
    }
    for (int64_t i = 0; i < m; ++i) rows[i] = k.Row(t0 + i0 + i);
    for (int64_t d0 = 0; d0 < head_dim; d0 += 8) {
      for (int64_t i = 0; i < 8; ++i) r[i] = i < m ? LoadHalf8(rows[i] + d0) : _mm256_setzero_ps();
      Transpose8(r);
      for (int64_t j = 0; j < 8; ++j) _mm256_storeu_ps(kt + (d0 + j) * kTile + i0, r[j]);
    }
  }
}

// out rows[0..R) (NV vectors of 8 dims from d) += sum_i p_r[i] * vt[i][d..], i < n.
template <int R, int NV>
void AccumulatePV(float* const* out, const float* const* p, const float* vt, int64_t n,
                  int64_t head_dim, int64_t d) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_loadu_ps(out[r] + d + 8 * j);
  }
  for (int64_t i = 0; i < n; ++i) {
    __m256 v[NV];
    for (int j = 0; j < NV; ++j) v[j] = _mm256_loadu_ps(vt + i * head_dim + d + 8 * j);
    for (int r = 0; r < R; ++r) {
      const __m256 pb = _mm256_broadcast_ss(p[r] + i);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_fmadd_ps(pb, v[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(out[r] + d + 8 * j, acc[r][j]);
  }
}

template <int R>
void AccumulatePVRows(float* const* out, const float* const* p, const float* vt, int64_t n,
                      int64_t head_dim) {
  int64_t d = 0;
  for (; d + 16 <= head_dim; d += 16) AccumulatePV<R, 2>(out, p, vt, n, head_dim, d);
  for (; d < head_dim; d += 8) AccumulatePV<R, 1>(out, p, vt, n, head_dim, d);
}

}  // namespace

void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale) {
  if (n_rows <= 0) return;
  int64_t max_n = 0;
  for (int64_t r = 0; r < n_rows; ++r) max_n = std::max(max_n, n_kv[r]);
  // Few rows over a short cache (a decode step's GQA group) run faster one row at a time, and the
  // results are the same either way (bench/attention: 3 rows at 2K positions, 0.78x grouped).
  const bool per_row = n_rows < 8 && max_n < 3072;
  if (head_dim % 8 != 0 || max_n == 0 || per_row) {
    auto* scores = reinterpret_cast<float*>(
        Scratch(kScratchRowsS, static_cast<size_t>(std::max<int64_t>(max_n, 1)) * sizeof(float)));
    for (int64_t r = 0; r < n_rows; ++r) {
      AttentionHeadBlocks(q[r], k_blocks, v_blocks, head_offset, block_size, kv_stride, n_kv[r],
                          head_dim, scale, scores, out[r]);
    }
    return;
  }
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

  // Scores, eight positions per vector, summed exactly as AttentionHeadBlocks' dot product does
  // (four accumulators over 32-dim blocks, the 8-dim tail into the first, then its horizontal
  // sum), so every row's scores, and so its output, are bit-identical to one call per row.
  const Paged k{k_blocks, head_offset, block_size, kv_stride};
  const int64_t nb32 = head_dim / 32;
  const int64_t tail8 = (head_dim % 32) / 8;
  for (int64_t t0 = 0; t0 < max_n; t0 += kTile) {
    LoadKTile(k, t0, std::min(kTile, max_n - t0), head_dim, tile);
    for (int64_t r = 0; r < n_rows; ++r) {
      if (n_kv[r] <= t0) continue;
      const float* qr = q16 + r * head_dim;
      float* s = scores + r * stride + t0;
      const int64_t groups = std::min<int64_t>(kTile, n_kv[r] - t0 + 7) / 8;
      for (int64_t g = 0; g < groups; g += kGroups) {
        // lanes[l][x]: the dot's lane l for position group g + x; each lane's four accumulators
        // are summed pairwise as soon as two are done, to stay within the 16 registers.
        __m256 lanes[8][kGroups];
        for (int l = 0; l < 8; ++l) {
          __m256 sum[kGroups], a[kGroups];
          for (int j = 0; j < 4; ++j) {
            // a[x] += q[d] * K[positions of group g + x][d]
            auto add_dim = [&](int64_t d) {
              const __m256 qb = _mm256_broadcast_ss(qr + d);
              const float* kd = tile + d * kTile + 8 * g;
              for (int x = 0; x < kGroups; ++x) {
                a[x] = _mm256_fmadd_ps(qb, _mm256_loadu_ps(kd + 8 * x), a[x]);
              }
            };
            for (int x = 0; x < kGroups; ++x) a[x] = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb32; ++b) add_dim(32 * b + 8 * j + l);
            if (j == 0) {  // the 8-dim tail goes into the first accumulator
              for (int64_t t = 0; t < tail8; ++t) add_dim(32 * nb32 + 8 * t + l);
            }
            // (a0 + a1) + (a2 + a3): lanes holds a0, then a0 + a1; sum holds a2, then a2 + a3.
            for (int x = 0; x < kGroups; ++x) {
              switch (j) {
                case 0:
                  lanes[l][x] = a[x];
                  break;
                case 1:
                  lanes[l][x] = _mm256_add_ps(lanes[l][x], a[x]);
                  break;
                case 2:
                  sum[x] = a[x];
                  break;
                default:
                  lanes[l][x] = _mm256_add_ps(lanes[l][x], _mm256_add_ps(sum[x], a[x]));
              }
            }
          }
        }
        const __m256 vscale = _mm256_set1_ps(scale);
        for (int x = 0; x < kGroups; ++x) {
          // Hsum's order: (l, l + 4) pairs, then (0, 2) and (1, 3), then the two halves.
          const __m256 c0 = _mm256_add_ps(lanes[0][x], lanes[4][x]);
          const __m256 c1 = _mm256_add_ps(lanes[1][x], lanes[5][x]);
          const __m256 c2 = _mm256_add_ps(lanes[2][x], lanes[6][x]);
          const __m256 c3 = _mm256_add_ps(lanes[3][x], lanes[7][x]);
          const __m256 dot = _mm256_add_ps(_mm256_add_ps(c0, c2), _mm256_add_ps(c1, c3));
          _mm256_storeu_ps(s + 8 * (g + x), _mm256_mul_ps(dot, vscale));
        }
      }
    }
  }

  // Probabilities, rounded to fp16 as ggml multiplies V by them; zero past each row's end so the
  // P.V pass can run every row to the tile's end (adding exact zeros).
  for (int64_t r = 0; r < n_rows; ++r) {
    float* s = scores + r * stride;
    const int64_t n = n_kv[r];
    Softmax(s, n);
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) {
      const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + t), _MM_FROUND_TO_NEAREST_INT);
      _mm256_storeu_ps(s + t, _mm256_cvtph_ps(h));
    }
    for (; t < n; ++t) s[t] = HalfToFloat(FloatToHalf(s[t]));
    std::fill(s + n, s + stride, 0.0f);
    std::fill(out[r], out[r] + head_dim, 0.0f);
  }

  // out_r += P[r][tile] . V[tile], over the rows that see some of the tile, four at a time.
  const Paged v{v_blocks, head_offset, block_size, kv_stride};
  float* rows_out[4];
  const float* rows_p[4];
  for (int64_t t0 = 0; t0 < max_n; t0 += kTile) {
    const int64_t n = std::min(kTile, max_n - t0);
    for (int64_t i = 0; i < n; ++i) {
      const fp16_t* row = v.Row(t0 + i);
      for (int64_t d = 0; d < head_dim; d += 8) {
        _mm256_storeu_ps(tile + i * head_dim + d, LoadHalf8(row + d));
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
      if (++m == 4) flush();
    }
    flush();
  }
}

}  // namespace loom::kernels::cpu::avx2
