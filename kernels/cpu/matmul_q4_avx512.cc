// AVX-512 VNNI prefill kernel for Q4_0 / Q4_1 weights (x Q8_0 / Q8_1 activations): MatMulRows for
// batches of tokens. Decode (one token) stays on the AVX2 kernel (matmul_q4_avx2.cc).
//
// One zmm lane per weight row: each group of 16 rows is first repacked so that one 64-byte load
// holds 4 unpacked weights (bytes 0..15) of each of the 16 rows, for one block b and one step s:
//   wq[b][s] = [row 0: w[4s..4s+3] | row 1: w[4s..4s+3] | ... | row 15]
// (Q4 keeps elements 4s..4s+3 of steps 0..3 in the low nibbles of qs[4s..4s+3] and those of steps
// 4..7 in the high nibbles of qs[4(s-4)..], so a 4x4 dword transpose of the rows' qs and a mask or
// shift give them). The 4 activations of step s are then one dword of the Q8 row as stored,
// broadcast, and vpdpbusd (u8 weights x s8 activations) adds the 4 products into each row's lane:
// 8 steps give the exact block sums of 16 rows for one token, with no horizontal reduction. A tile
// is 2 groups (32 rows) x up to 4 tokens, so each broadcast serves two vpdpbusd and each weight
// load four.
//
// The floating-point arithmetic is the AVX2 kernel's, operation for operation, so both give the
// same bits for every output (and a token's result still does not depend on its batch):
//   for each pair of blocks (A, B):  sA = fma(isum_A, d_wA * d_xA, sA);  sB likewise
//                                    (Q4_1) mA = fma(m_wA, s_xA, mA);    mB likewise
//   y = (sA + mA) + (sB + mB)        (Q4_0: mA = mB = 0; an odd last block has no B)
// (the m sums are taken in a loop of their own, before the s sums, to spare registers). The
// integer block sums are exact here as there (|isum| <= 32 * 15 * 128); Q4_0's -8 enters as
// -8 * sum(x) of the block, the accumulator's start value.

#include <cstring>

#include "kernels/cpu/avx512_intrin.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx512 {
namespace {

constexpr int64_t kRows = 16;         // rows per group: one per zmm lane
constexpr int kMaxGroups = 2;         // groups per tile
constexpr int kMaxTokens = 4;         // tokens per tile
constexpr size_t kPackedBlock = 512;  // repacked weight bytes per block of a group: 8 steps x 64

template <bool kQ4_0>
constexpr size_t kWeightBlockBytes = kQ4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ4_1);
template <bool kQ4_0>
constexpr size_t kWeightQs = kQ4_0 ? 2 : 4;  // offset of qs in a weight block
template <bool kQ4_0>
constexpr size_t kActBlockBytes = kQ4_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ8_1);
template <bool kQ4_0>
constexpr size_t kActQs = kQ4_0 ? 2 : 4;  // offset of qs in an activation block

inline float Fp16(uint16_t h) { return _cvtsh_ss(h); }

// Per token and block: d_x as float, and for Q4_1 s_x as float, for Q4_0 -8 * sum(x) as int32
// (`aux`, read as the accumulators' start value).
template <bool kQ4_0>
void PrepareTokens(const uint8_t* x, size_t x_row_bytes, int64_t m, int64_t nb, float* dx,
                   int32_t* aux) {
  constexpr size_t kB = kActBlockBytes<kQ4_0>;
  for (int64_t j = 0; j < m; ++j) {
    const uint8_t* row = x + j * x_row_bytes;
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * kB;
      dx[j * nb + b] = Fp16(LoadU16(blk));
      if constexpr (kQ4_0) {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kActQs<kQ4_0>));
        const __m256i s8 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(8), q);
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
        aux[j * nb + b] = -_mm_cvtsi128_si32(s);
      } else {
        const float s = Fp16(LoadU16(blk + 2));
        std::memcpy(aux + j * nb + b, &s, sizeof(s));
      }
    }
  }
}

// Repacks a group: rows [0, n_rows) of `w` (n_rows <= 16; missing rows repeat the last) into `wq`
// (see the header) and their scales into dw / mw: 16 floats per block, row r in lane r.
template <bool kQ4_0>
void PackRows(const uint8_t* w, size_t w_row_bytes, int64_t n_rows, int64_t nb, uint8_t* wq,
              float* dw, float* mw) {
  constexpr size_t kB = kWeightBlockBytes<kQ4_0>;
  const uint8_t* rows[kRows];
  for (int64_t r = 0; r < kRows; ++r) rows[r] = w + (r < n_rows ? r : n_rows - 1) * w_row_bytes;
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * kB;
    // z[i]: the qs of rows i, i + 4, i + 8, i + 12, one per 128-bit lane.
    __m512i z[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      const size_t o = off + kWeightQs<kQ4_0>;
      z[i] = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i] + o)));
#pragma GCC unroll 3
      for (int l = 1; l < 4; ++l) {
        z[i] = _mm512_inserti32x4(
            z[i], _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i + 4 * l] + o)), l);
      }
    }
    // Transpose the dwords within each lane: t[j] = dword j (qs[4j..4j+3]) of rows 0..15.
    const __m512i u0 = _mm512_unpacklo_epi32(z[0], z[1]);
    const __m512i u1 = _mm512_unpackhi_epi32(z[0], z[1]);
    const __m512i u2 = _mm512_unpacklo_epi32(z[2], z[3]);
    const __m512i u3 = _mm512_unpackhi_epi32(z[2], z[3]);
    const __m512i t[4] = {_mm512_unpacklo_epi64(u0, u2), _mm512_unpackhi_epi64(u0, u2),
                          _mm512_unpacklo_epi64(u1, u3), _mm512_unpackhi_epi64(u1, u3)};
    uint8_t* out = wq + static_cast<size_t>(b) * kPackedBlock;
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
      _mm512_store_si512(out + 64 * j, _mm512_and_si512(t[j], m4));
      _mm512_store_si512(out + 64 * (j + 4), _mm512_and_si512(_mm512_srli_epi16(t[j], 4), m4));
    }
    alignas(32) uint16_t d16[kRows];
    alignas(32) uint16_t m16[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      d16[r] = LoadU16(rows[r] + off);
      m16[r] = kQ4_0 ? 0 : LoadU16(rows[r] + off + 2);
    }
    _mm512_store_ps(dw + kRows * b,
                    _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(d16))));
    if constexpr (!kQ4_0) {
      _mm512_store_ps(mw + kRows * b,
                      _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(m16))));
    }
  }
}

// Up to kMaxGroups repacked groups (group g at wq + g * wq_stride, dw + g * d_stride, mw + ...).
struct Packed {
  const uint8_t* wq;
  const float* dw;
  const float* mw;
  size_t wq_stride, d_stride;
  int64_t nb;
};

// The activations: the m Q8 rows, and their PrepareTokens values (nb per token).
struct Acts {
  const uint8_t* x;
  size_t x_row_bytes;
  const float* dx;
  const int32_t* aux;
};

// Where a tile's results go: rows row0.. of y (ldy apart per token); the last group stores only
// the rows of mask_last.
struct Out {
  float* y;
  int64_t ldy, row0;
  __mmask16 mask_last;
};

// The kNt tokens of a tile: their Q8 rows (at qs of block 0) and PrepareTokens values.
template <int kNt>
struct TileTokens {
  const uint8_t* x[kNt];
  const float* dx[kNt];
  const int32_t* aux[kNt];
};

// The unroll pragmas below keep the arrays of accumulators in registers at -O2 too.

// Q4_1: m[g][t] = fma(m_w, s_x, m[g][t]) for block b.
template <int kG, int kNt>
inline void AddMins(const Packed& pk, const TileTokens<kNt>& tok, int64_t b, __m512 (&m)[kG][kNt]) {
#pragma GCC unroll 2
  for (int g = 0; g < kG; ++g) {
    const __m512 mv = _mm512_load_ps(pk.mw + g * pk.d_stride + kRows * b);
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      float sx;
      std::memcpy(&sx, tok.aux[t] + b, sizeof(sx));
      m[g][t] = _mm512_fmadd_ps(mv, _mm512_set1_ps(sx), m[g][t]);
    }
  }
}

// s[g][t] = fma(isum, d_w * d_x, s[g][t]) for block b, the exact isum from 8 vpdpbusd steps.
template <bool kQ4_0, int kG, int kNt>
inline void AddBlock(const Packed& pk, const TileTokens<kNt>& tok, int64_t b,
                     __m512 (&s)[kG][kNt]) {
  __m512i acc[kG][kNt];
#pragma GCC unroll 2
  for (int g = 0; g < kG; ++g) {
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      acc[g][t] = kQ4_0 ? _mm512_set1_epi32(tok.aux[t][b]) : _mm512_setzero_si512();
    }
  }
  const uint8_t* wb = pk.wq + static_cast<size_t>(b) * kPackedBlock;
  const size_t xo = static_cast<size_t>(b) * kActBlockBytes<kQ4_0>;
#pragma GCC unroll 8
  for (int st = 0; st < 8; ++st) {
    __m512i wv[kG];
#pragma GCC unroll 2
    for (int g = 0; g < kG; ++g) wv[g] = _mm512_load_si512(wb + g * pk.wq_stride + 64 * st);
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      const __m512i xv = _mm512_set1_epi32(LoadI32(tok.x[t] + xo + 4 * st));
#pragma GCC unroll 2
      for (int g = 0; g < kG; ++g) acc[g][t] = _mm512_dpbusd_epi32(acc[g][t], wv[g], xv);
    }
  }
#pragma GCC unroll 2
  for (int g = 0; g < kG; ++g) {
    const __m512 dv = _mm512_load_ps(pk.dw + g * pk.d_stride + kRows * b);
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      const __m512 scale = _mm512_mul_ps(dv, _mm512_set1_ps(tok.dx[t][b]));
      s[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[g][t]), scale, s[g][t]);
    }
  }
}

// One tile: kG groups of rows against tokens [j0, j0 + kNt).
template <bool kQ4_0, int kG, int kNt>
void Tile(const Packed& pk, const Acts& acts, int64_t j0, const Out& out) {
  const int64_t nb = pk.nb;
  TileTokens<kNt> tok;
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) {
    tok.x[t] = acts.x + (j0 + t) * acts.x_row_bytes + kActQs<kQ4_0>;
    tok.dx[t] = acts.dx + (j0 + t) * nb;
    tok.aux[t] = acts.aux + (j0 + t) * nb;
  }
  // [0]: the sums over blocks A (even), [1]: over blocks B (odd).
  __m512 m[2][kG][kNt];
  __m512 s[2][kG][kNt];
#pragma GCC unroll 2
  for (int h = 0; h < 2; ++h) {
#pragma GCC unroll 2
    for (int g = 0; g < kG; ++g) {
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) m[h][g][t] = s[h][g][t] = _mm512_setzero_ps();
    }
  }
  if constexpr (!kQ4_0) {
    for (int64_t b = 0; b < nb; b += 2) {
      AddMins<kG, kNt>(pk, tok, b, m[0]);
      if (b + 1 < nb) AddMins<kG, kNt>(pk, tok, b + 1, m[1]);
    }
  }
  for (int64_t b = 0; b < nb; b += 2) {
    AddBlock<kQ4_0, kG, kNt>(pk, tok, b, s[0]);
    if (b + 1 < nb) AddBlock<kQ4_0, kG, kNt>(pk, tok, b + 1, s[1]);
  }
#pragma GCC unroll 2
  for (int g = 0; g < kG; ++g) {
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      const __m512 y = _mm512_add_ps(_mm512_add_ps(s[0][g][t], m[0][g][t]),
                                     _mm512_add_ps(s[1][g][t], m[1][g][t]));
      float* dst = out.y + (j0 + t) * out.ldy + out.row0 + kRows * g;
      if (g == kG - 1) {
        _mm512_mask_storeu_ps(dst, out.mask_last, y);
      } else {
        _mm512_storeu_ps(dst, y);
      }
    }
  }
}

// All m tokens against kG repacked groups: tiles of kMaxTokens, then the rest.
template <bool kQ4_0, int kG>
void Tiles(const Packed& pk, const Acts& acts, int64_t m, const Out& out) {
  int64_t j = 0;
  for (; j + kMaxTokens <= m; j += kMaxTokens) Tile<kQ4_0, kG, kMaxTokens>(pk, acts, j, out);
  switch (m - j) {
    case 3:
      return Tile<kQ4_0, kG, 3>(pk, acts, j, out);
    case 2:
      return Tile<kQ4_0, kG, 2>(pk, acts, j, out);
    case 1:
      return Tile<kQ4_0, kG, 1>(pk, acts, j, out);
    default:
      return;
  }
}

template <bool kQ4_0>
void MatMulQ4(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
              int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  const int64_t nb = k / 32;
  const auto* xb = static_cast<const uint8_t*>(x);
  // Per-token scales: dx then aux, m * nb each.
  auto* dx = reinterpret_cast<float*>(
      Scratch(kScratchMatX, static_cast<size_t>(2 * m * nb) * sizeof(float)));
  auto* aux = reinterpret_cast<int32_t*>(dx + m * nb);
  PrepareTokens<kQ4_0>(xb, x_row_bytes, m, nb, dx, aux);
  const Acts acts{xb, x_row_bytes, dx, aux};

  // The repacked groups of one tile: all wq, then all dw, then all mw.
  const size_t wq_stride = static_cast<size_t>(nb) * kPackedBlock;
  const size_t d_stride = static_cast<size_t>(kRows * nb);
  uint8_t* wq = Scratch(kScratchMatW, kMaxGroups * (wq_stride + 2 * d_stride * sizeof(float)));
  auto* dw = reinterpret_cast<float*>(wq + kMaxGroups * wq_stride);
  float* mw = dw + kMaxGroups * d_stride;
  const Packed pk{wq, dw, mw, wq_stride, d_stride, nb};

  const auto* wb = static_cast<const uint8_t*>(w);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kMaxGroups * kRows) {
    const int64_t n_rows = row_end - r0 < kMaxGroups * kRows ? row_end - r0 : kMaxGroups * kRows;
    const int64_t groups = (n_rows + kRows - 1) / kRows;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t rows = n_rows - g * kRows < kRows ? n_rows - g * kRows : kRows;
      PackRows<kQ4_0>(wb + (r0 + g * kRows) * w_row_bytes, w_row_bytes, rows, nb,
                      wq + g * wq_stride, dw + g * d_stride, mw + g * d_stride);
    }
    const int64_t last_rows = n_rows - (groups - 1) * kRows;
    const Out out{y, ldy, r0, static_cast<__mmask16>((1u << last_rows) - 1)};
    if (groups == 2) {
      Tiles<kQ4_0, 2>(pk, acts, m, out);
    } else {
      Tiles<kQ4_0, 1>(pk, acts, m, out);
    }
  }
}

}  // namespace

void MatMulQ4_0(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  MatMulQ4<true>(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin, row_end);
}

void MatMulQ4_1(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  MatMulQ4<false>(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin, row_end);
}

}  // namespace loom::kernels::cpu::avx512
