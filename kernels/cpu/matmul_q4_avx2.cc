// AVX2 kernels for Q4_0 / Q4_1 weights (x Q8_0 / Q8_1 activations): MatMulRows and VecDot.
//
// The activations are first repacked per token so that one 32-byte load meets the nibbles of two
// weight blocks: for blocks A = 2p and B = 2p + 1,
//   xl[p] = A.qs[0..15] | B.qs[0..15]     (meets the low nibbles of A.qs and B.qs)
//   xh[p] = A.qs[16..31] | B.qs[16..31]   (meets the high nibbles)
// and the weight pair loads as one register, [A.qs | B.qs]. The int16 products of four rows
// (decode) or four tokens (prefill) then fold with hadd into one vector [A x4 | B x4] of exact
// block sums, converted and scaled with one FMA.
//
// Both kernels compute every output with the same arithmetic, so a token's result does not depend
// on the batch it came in (m) or its neighbours:
//   for each pair p:  sA = fma(isum_A, d_wA * d_xA, sA);  sB likewise
//                     (Q4_1) mA = fma(m_wA, s_xA, mA);    mB likewise
//   y = (sA + mA) + (sB + mB)
// with the integer block sums isum exact (the -8 of Q4_0 is applied in int16).
//
// int16 overflow: a maddubs lane is at most 2 * 15 * 128; the folds add 8 of them (30720 < 32767).

#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

constexpr int64_t kRowChunk = 16;        // prefill: rows whose scales are converted together
constexpr size_t kPrefetchBytes = 4096;  // decode: how far ahead of the current rows to prefetch

inline __m256i Load2x128(const void* lo, const void* hi) {
  return _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(lo))),
      _mm_loadu_si128(static_cast<const __m128i*>(hi)), 1);
}

// Per-token layout of the repacked activations.
struct Layout {
  int64_t nb = 0;         // blocks per row
  int64_t npairs = 0;     // (nb + 1) / 2; an odd last block pairs with a zero block
  size_t pair_bytes = 0;  // xl, xh (+ Q4_0: x8 = 8 * (pairwise sums of x) as int16)
  size_t off_dx = 0;      // float d_x per block (zero for the pad block)
  size_t off_sx = 0;      // Q4_1: float s_x per block
  size_t off_pv = 0;      // per pair [d_xA x4 | d_xB x4], [s_xA x4 | s_xB x4] (decode kernel)
  size_t bytes = 0;
};

inline size_t Align64(size_t n) { return (n + 63) / 64 * 64; }

Layout MakeLayout(int64_t k, bool q4_0) {
  Layout l;
  l.nb = k / 32;
  l.npairs = (l.nb + 1) / 2;
  l.pair_bytes = q4_0 ? 96 : 64;
  size_t off = static_cast<size_t>(l.npairs) * l.pair_bytes;
  l.off_dx = off;
  off += static_cast<size_t>(l.npairs) * 2 * sizeof(float);
  l.off_sx = off;
  off += static_cast<size_t>(l.npairs) * 2 * sizeof(float);
  l.off_pv = Align64(off);
  l.bytes = Align64(l.off_pv + static_cast<size_t>(l.npairs) * 64);
  return l;
}

// Repacks one activation row (Q8_1 for Q4_1 weights, Q8_0 for Q4_0) into `out`.
template <bool kQ4_0>
void PackToken(const uint8_t* xrow, const Layout& l, uint8_t* out) {
  constexpr size_t kBlockBytes = kQ4_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ8_1);
  constexpr size_t kQsOffset = kQ4_0 ? 2 : 4;
  alignas(32) static constexpr uint8_t kZeros[32] = {};
  auto* dx = reinterpret_cast<float*>(out + l.off_dx);
  auto* sx = reinterpret_cast<float*>(out + l.off_sx);
  auto* pv = reinterpret_cast<float*>(out + l.off_pv);
  const __m256i eights = _mm256_set1_epi8(8);
  for (int64_t p = 0; p < l.npairs; ++p) {
    const uint8_t* a = xrow + static_cast<size_t>(2 * p) * kBlockBytes;
    const bool has_b = 2 * p + 1 < l.nb;
    const uint8_t* b = has_b ? a + kBlockBytes : nullptr;
    const uint8_t* qa = a + kQsOffset;
    const uint8_t* qb = has_b ? b + kQsOffset : kZeros;
    const __m256i xl = Load2x128(qa, qb);
    const __m256i xh = Load2x128(qa + 16, qb + 16);
    uint8_t* o = out + static_cast<size_t>(p) * l.pair_bytes;
    _mm256_store_si256(reinterpret_cast<__m256i*>(o), xl);
    _mm256_store_si256(reinterpret_cast<__m256i*>(o + 32), xh);
    if constexpr (kQ4_0) {
      const __m256i x8 =
          _mm256_add_epi16(_mm256_maddubs_epi16(eights, xl), _mm256_maddubs_epi16(eights, xh));
      _mm256_store_si256(reinterpret_cast<__m256i*>(o + 64), x8);
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* blk = h == 0 ? a : b;
      const float d = blk != nullptr ? HalfToFloat(LoadU16(blk)) : 0.0f;
      const float s = blk != nullptr && !kQ4_0 ? HalfToFloat(LoadU16(blk + 2)) : 0.0f;
      dx[2 * p + h] = d;
      sx[2 * p + h] = s;
      for (int i = 0; i < 4; ++i) {
        pv[16 * p + 4 * h + i] = d;
        pv[16 * p + 8 + 4 * h + i] = s;
      }
    }
  }
}

template <bool kQ4_0>
constexpr size_t kWeightBlockBytes = kQ4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ4_1);

// int16 products of one weight pair [A.qs | B.qs] (from `qa`, `qb`) with one token's pair:
// [A 8 x i16 | B 8 x i16].
template <bool kQ4_0>
inline __m256i PairProducts(__m256i lo, __m256i hi, const uint8_t* xp) {
  const __m256i xl = _mm256_load_si256(reinterpret_cast<const __m256i*>(xp));
  const __m256i xh = _mm256_load_si256(reinterpret_cast<const __m256i*>(xp + 32));
  __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xl), _mm256_maddubs_epi16(hi, xh));
  if constexpr (kQ4_0) {
    p = _mm256_sub_epi16(p, _mm256_load_si256(reinterpret_cast<const __m256i*>(xp + 64)));
  }
  return p;
}

inline void Nibbles(const uint8_t* qa, const uint8_t* qb, __m256i* lo, __m256i* hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i q = Load2x128(qa, qb);
  *lo = _mm256_and_si256(q, m4);
  *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
}

// Folds four [A 8 x i16 | B 8 x i16] products into [A0 A1 A2 A3 | B0 B1 B2 B3] as floats.
inline __m256 Fold4(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
  const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(p0, p1), _mm256_hadd_epi16(p2, p3));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(h, _mm256_set1_epi16(1)));
}

// Decode: four weight rows (`rows`, possibly repeated) against one repacked token.
template <bool kQ4_0>
void Rows4(const uint8_t* const rows[4], const uint8_t* px, const Layout& l, float out[4]) {
  constexpr size_t kB = kWeightBlockBytes<kQ4_0>;
  constexpr size_t kQs = kQ4_0 ? 2 : 4;  // offset of qs in a block
  const auto* pv = reinterpret_cast<const float*>(px + l.off_pv);
  __m256 acc = _mm256_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  for (int64_t p = 0; p < l.npairs; ++p) {
    const size_t a = static_cast<size_t>(2 * p) * kB;
    const bool has_b = 2 * p + 1 < l.nb;
    const size_t b = has_b ? a + kB : a;
    const uint8_t* xp = px + static_cast<size_t>(p) * l.pair_bytes;
    __m256i prod[4];
    for (int r = 0; r < 4; ++r) {
      __m256i lo, hi;
      Nibbles(rows[r] + a + kQs, rows[r] + b + kQs, &lo, &hi);
      prod[r] = PairProducts<kQ4_0>(lo, hi, xp);
    }
    const __m256 f = Fold4(prod[0], prod[1], prod[2], prod[3]);  // [A r0..r3 | B r0..r3]

    // The rows' scales in the same lanes.
    __m256 dw, mw;
    if constexpr (kQ4_0) {
      __m128i dh;
      if (has_b) {
        // A 32-byte load at block A holds d_A in word 0 and d_B in word 9.
        __m256i l[4];
        for (int r = 0; r < 4; ++r) {
          l[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + a));
        }
        const __m256i u01 = _mm256_unpacklo_epi16(l[0], l[1]);  // dword 0: A r0 r1; 5: B r0 r1
        const __m256i u23 = _mm256_unpacklo_epi16(l[2], l[3]);
        const __m256i u = _mm256_unpacklo_epi32(u01, u23);  // q0: A r0..r3; q3: B r0..r3
        dh = _mm256_castsi256_si128(_mm256_permute4x64_epi64(u, 0x0C));
      } else {
        dh = _mm_setr_epi16(static_cast<int16_t>(LoadU16(rows[0] + a)),
                            static_cast<int16_t>(LoadU16(rows[1] + a)),
                            static_cast<int16_t>(LoadU16(rows[2] + a)),
                            static_cast<int16_t>(LoadU16(rows[3] + a)), 0, 0, 0, 0);
      }
      dw = _mm256_cvtph_ps(dh);
      mw = _mm256_setzero_ps();
    } else {
      __m256i g;  // dwords (d | m << 16): [A r0..r3 | B r0..r3]
      if (has_b) {
        // A 32-byte load at block A holds (d, m) of A in dword 0 and of B in dword 5.
        __m256i l[4];
        for (int r = 0; r < 4; ++r) {
          l[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + a));
        }
        const __m256i u01 = _mm256_unpacklo_epi32(l[0], l[1]);  // [A0 A1 . . | . . B0 B1]
        const __m256i u23 = _mm256_unpacklo_epi32(l[2], l[3]);  // [A2 A3 . . | . . B2 B3]
        g = _mm256_blend_epi32(_mm256_unpacklo_epi64(u01, u23), _mm256_unpackhi_epi64(u01, u23),
                               0xF0);
      } else {
        g = _mm256_setr_epi32(LoadI32(rows[0] + a), LoadI32(rows[1] + a), LoadI32(rows[2] + a),
                              LoadI32(rows[3] + a), 0, 0, 0, 0);
      }
      // Per lane: [d0 d1 d2 d3 m0 m1 m2 m3] as fp16; then d of A and B low, m of A and B high.
      const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                             0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
      const __m256i dm = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(g, split), 0xD8);
      dw = _mm256_cvtph_ps(_mm256_castsi256_si128(dm));
      mw = _mm256_cvtph_ps(_mm256_extracti128_si256(dm, 1));
    }
    acc = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_load_ps(pv + 16 * p)), acc);
    if constexpr (!kQ4_0) accm = _mm256_fmadd_ps(mw, _mm256_load_ps(pv + 16 * p + 8), accm);
  }
  acc = _mm256_add_ps(acc, accm);
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
}

// Prefill: one weight row against a tile of 4 repacked tokens. `dwm`: the row's (d, m) per block
// as floats, zero for the pad block; `tile`: per pair [d_xA t0..t3 | d_xB t0..t3] (and for Q4_1 the
// same for s_x).
template <bool kQ4_0>
void Tokens4(const uint8_t* row, const float* dwm, const uint8_t* const px[4], const float* tile,
             const Layout& l, float out[4]) {
  constexpr size_t kB = kWeightBlockBytes<kQ4_0>;
  constexpr size_t kQs = kQ4_0 ? 2 : 4;
  constexpr int kTileFloats = kQ4_0 ? 8 : 16;
  __m256 acc = _mm256_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  for (int64_t p = 0; p < l.npairs; ++p) {
    const size_t a = static_cast<size_t>(2 * p) * kB;
    const size_t b = 2 * p + 1 < l.nb ? a + kB : a;
    __m256i lo, hi;
    Nibbles(row + a + kQs, row + b + kQs, &lo, &hi);
    const size_t off = static_cast<size_t>(p) * l.pair_bytes;
    const __m256 f =
        Fold4(PairProducts<kQ4_0>(lo, hi, px[0] + off), PairProducts<kQ4_0>(lo, hi, px[1] + off),
              PairProducts<kQ4_0>(lo, hi, px[2] + off),
              PairProducts<kQ4_0>(lo, hi, px[3] + off));  // [A t0..t3 | B t0..t3]
    const float* tv = tile + p * kTileFloats;
    const float* s = dwm + 4 * p;  // d_A, m_A, d_B, m_B
    const __m256 dw = _mm256_setr_m128(_mm_broadcast_ss(s), _mm_broadcast_ss(s + 2));
    acc = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_load_ps(tv)), acc);
    if constexpr (!kQ4_0) {
      const __m256 mw = _mm256_setr_m128(_mm_broadcast_ss(s + 1), _mm_broadcast_ss(s + 3));
      accm = _mm256_fmadd_ps(mw, _mm256_load_ps(tv + 8), accm);
    }
  }
  acc = _mm256_add_ps(acc, accm);
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
}

template <bool kQ4_0>
void MatMulQ4(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
              int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  const Layout l = MakeLayout(k, kQ4_0);
  uint8_t* px = Scratch(kScratchMatX, static_cast<size_t>(m) * l.bytes);
  for (int64_t j = 0; j < m; ++j) {
    PackToken<kQ4_0>(static_cast<const uint8_t*>(x) + j * x_row_bytes, l, px + j * l.bytes);
  }
  const auto* wb = static_cast<const uint8_t*>(w);
  if (m == 1) {
    // Decode streams W once; prefetching a few rows ahead keeps enough misses in flight.
    const size_t ahead = kPrefetchBytes;
    for (int64_t i = row_begin; i < row_end; i += 4) {
      const uint8_t* rows[4];
      for (int r = 0; r < 4; ++r) rows[r] = wb + (i + r < row_end ? i + r : i) * w_row_bytes;
      for (size_t o = 0; o < 4 * w_row_bytes; o += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(rows[0] + ahead + o), _MM_HINT_T0);
      }
      float out[4];
      Rows4<kQ4_0>(rows, px, l, out);
      for (int r = 0; r < 4 && i + r < row_end; ++r) y[i + r] = out[r];
    }
    return;
  }

  // Scale vectors of each tile of 4 tokens (a short last tile repeats its last token).
  constexpr int kTileFloats = kQ4_0 ? 8 : 16;
  const int64_t ntiles = (m + 3) / 4;
  auto* tiles = reinterpret_cast<float*>(Scratch(
      kScratchMatTile, static_cast<size_t>(ntiles * l.npairs * kTileFloats) * sizeof(float)));
  for (int64_t tt = 0; tt < ntiles; ++tt) {
    for (int t = 0; t < 4; ++t) {
      const int64_t j = 4 * tt + t < m ? 4 * tt + t : m - 1;
      const auto* dx = reinterpret_cast<const float*>(px + j * l.bytes + l.off_dx);
      const auto* sx = reinterpret_cast<const float*>(px + j * l.bytes + l.off_sx);
      for (int64_t p = 0; p < l.npairs; ++p) {
        float* tv = tiles + (tt * l.npairs + p) * kTileFloats;
        tv[t] = dx[2 * p];
        tv[4 + t] = dx[2 * p + 1];
        if constexpr (!kQ4_0) {
          tv[8 + t] = sx[2 * p];
          tv[12 + t] = sx[2 * p + 1];
        }
      }
    }
  }

  constexpr size_t kB = kWeightBlockBytes<kQ4_0>;
  const int64_t nbp = 2 * l.npairs;  // blocks incl. the pad block
  auto* dwm = reinterpret_cast<float*>(
      Scratch(kScratchMatW, static_cast<size_t>(kRowChunk * nbp * 2) * sizeof(float)));
  for (int64_t c0 = row_begin; c0 < row_end; c0 += kRowChunk) {
    const int64_t c1 = c0 + kRowChunk < row_end ? c0 + kRowChunk : row_end;
    for (int64_t i = c0; i < c1; ++i) {
      const uint8_t* row = wb + i * w_row_bytes;
      float* s = dwm + (i - c0) * nbp * 2;
      for (int64_t b = 0; b < nbp; ++b) {
        const bool real = b < l.nb;
        s[2 * b] = real ? HalfToFloat(LoadU16(row + b * kB)) : 0.0f;
        s[2 * b + 1] = real && !kQ4_0 ? HalfToFloat(LoadU16(row + b * kB + 2)) : 0.0f;
      }
    }
    for (int64_t tt = 0; tt < ntiles; ++tt) {
      const uint8_t* pt[4];
      for (int t = 0; t < 4; ++t) {
        const int64_t j = 4 * tt + t < m ? 4 * tt + t : m - 1;
        pt[t] = px + j * l.bytes;
      }
      const float* tv = tiles + tt * l.npairs * kTileFloats;
      const int nt = m - 4 * tt < 4 ? static_cast<int>(m - 4 * tt) : 4;
      for (int64_t i = c0; i < c1; ++i) {
        float out[4];
        Tokens4<kQ4_0>(wb + i * w_row_bytes, dwm + (i - c0) * nbp * 2, pt, tv, l, out);
        for (int t = 0; t < nt; ++t) y[(4 * tt + t) * ldy + i] = out[t];
      }
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

// VecDot is the one-row MatMulRows, so that both give the same bits.
float DotQ4_0Q8_0(int64_t k, const void* w, const void* x) {
  float y;
  MatMulQ4<true>(w, RowBytes(DType::kQ4_0, k), k, x, RowBytes(DType::kQ8_0, k), 1, &y, 1, 0, 1);
  return y;
}

float DotQ4_1Q8_1(int64_t k, const void* w, const void* x) {
  float y;
  MatMulQ4<false>(w, RowBytes(DType::kQ4_1, k), k, x, RowBytes(DType::kQ8_1, k), 1, &y, 1, 0, 1);
  return y;
}

}  // namespace loom::kernels::cpu::avx2
