// AVX2 kernels for Q4_0 / Q4_1 weights (x Q8_0 / Q8_1 activations): MatMulRows and VecDot.
//
// The activations are first repacked per token so that one 32-byte load pairs with the nibbles of
// two weight blocks: for blocks A = 2p and B = 2p + 1,
//   xl[p] = A.qs[0..15] | B.qs[0..15]     (meets the low nibbles of A.qs and B.qs)
//   xh[p] = A.qs[16..31] | B.qs[16..31]   (meets the high nibbles)
// and the weight pair loads as one register, [A.qs | B.qs]. The int16 products of several pairs
// (or tokens) are then folded together with hadd before a single int->float conversion and FMA.
//
// m == 1 (decode): per row, groups of 8 blocks: four pairs fold into the 8 block sums
// [b0 b2 b4 b6 | b1 b3 b5 b7]; the 8 (d, m) fp16 pairs of the row convert with two vcvtph2ps; and
// sum_b d_w d_x isum_b + m_w s_x is two FMAs against [isum, 1] interleaved lanes.
// m > 1 (prefill): tiles of 16 rows x 4 tokens; per row and pair the four tokens' products fold into
// [A t0..t3 | B t0..t3], so each weight pair is unpacked once for 4 tokens and the row tile stays
// in L1 while the token tiles stream past.
//
// int16 overflow: a maddubs lane is at most 2 * 15 * 128; the folds add 8 of them (30720 < 32767).

#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

constexpr int64_t kRowChunk = 16;  // rows whose scales are converted together (prefill)

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i Load2x128(const void* lo, const void* hi) {
  return _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(lo))),
      _mm_loadu_si128(static_cast<const __m128i*>(hi)), 1);
}

// Per-token layout of the repacked activations.
struct Layout {
  int64_t nb = 0;       // blocks per row
  int64_t npairs = 0;   // (nb + 1) / 2; an odd last block pairs with a zero block
  int64_t ngroups = 0;  // nb / 8: groups of 8 blocks for the m == 1 kernel
  size_t pair_bytes = 0;  // xl, xh (+ Q4_0: x8 = 8 * (pairwise sums of x) as int16)
  size_t off_dx = 0;      // float d_x per block (zero for the pad block)
  size_t off_sx = 0;      // Q4_1: float s_x per block
  size_t off_grp = 0;     // per group: Q4_1 XS1, XS2 (16 floats); Q4_0 DX8 (8 floats)
  size_t bytes = 0;
};

inline size_t Align64(size_t n) { return (n + 63) / 64 * 64; }

Layout MakeLayout(int64_t k, bool q4_0) {
  Layout l;
  l.nb = k / 32;
  l.npairs = (l.nb + 1) / 2;
  l.ngroups = l.nb / 8;
  l.pair_bytes = q4_0 ? 96 : 64;
  size_t off = static_cast<size_t>(l.npairs) * l.pair_bytes;
  l.off_dx = off;
  off += static_cast<size_t>(l.npairs) * 2 * sizeof(float);
  l.off_sx = off;
  off += static_cast<size_t>(l.npairs) * 2 * sizeof(float);
  l.off_grp = Align64(off);
  l.bytes = Align64(l.off_grp + static_cast<size_t>(l.ngroups) * 64);
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
      const __m256i x8 = _mm256_add_epi16(_mm256_maddubs_epi16(eights, xl),
                                          _mm256_maddubs_epi16(eights, xh));
      _mm256_store_si256(reinterpret_cast<__m256i*>(o + 64), x8);
    }
    for (int h = 0; h < 2; ++h) {
      const uint8_t* blk = h == 0 ? a : b;
      float d = 0.0f, s = 0.0f;
      if (blk != nullptr) {
        uint16_t dh;
        std::memcpy(&dh, blk, 2);
        d = HalfToFloat(dh);
        if constexpr (!kQ4_0) {
          uint16_t sh;
          std::memcpy(&sh, blk + 2, 2);
          s = HalfToFloat(sh);
        }
      }
      dx[2 * p + h] = d;
      sx[2 * p + h] = s;
    }
  }
  auto* grp = reinterpret_cast<float*>(out + l.off_grp);
  for (int64_t g = 0; g < l.ngroups; ++g) {
    const float* gdx = dx + 8 * g;
    const float* gsx = sx + 8 * g;
    float* v = grp + 16 * g;
    if constexpr (kQ4_0) {
      // [b0 b2 b4 b6 | b1 b3 b5 b7], the order of the folded block sums.
      static constexpr int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
      for (int i = 0; i < 8; ++i) v[i] = gdx[kOrder[i]];
    } else {
      // XS1 = [dx0 sx0 dx2 sx2 | dx1 sx1 dx3 sx3], XS2 = the same for blocks 4..7.
      static constexpr int kOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};
      for (int i = 0; i < 8; ++i) {
        v[2 * i] = gdx[kOrder[i]];
        v[2 * i + 1] = gsx[kOrder[i]];
      }
    }
  }
}

// Low / high nibbles of a weight pair [A.qs | B.qs].
inline void Nibbles(__m256i q, __m256i* lo, __m256i* hi) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  *lo = _mm256_and_si256(q, m4);
  *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
}

// int16 products of one weight pair with one token's pair: [A 8 x i16 | B 8 x i16].
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

template <bool kQ4_0>
struct WeightBlock;
template <>
struct WeightBlock<true> {
  using Type = BlockQ4_0;
};
template <>
struct WeightBlock<false> {
  using Type = BlockQ4_1;
};

// One weight row against one repacked token (m == 1).
template <bool kQ4_0>
float RowDot(const typename WeightBlock<kQ4_0>::Type* bw, const uint8_t* px, const Layout& l) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256 one = _mm256_set1_ps(1.0f);
  const auto* grp = reinterpret_cast<const float*>(px + l.off_grp);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t g = 0; g < l.ngroups; ++g) {
    const auto* b = bw + 8 * g;
    const uint8_t* xp = px + static_cast<size_t>(4 * g) * l.pair_bytes;
    __m256i prod[4];
    for (int p = 0; p < 4; ++p) {
      __m256i lo, hi;
      Nibbles(Load2x128(b[2 * p].qs, b[2 * p + 1].qs), &lo, &hi);
      prod[p] = PairProducts<kQ4_0>(lo, hi, xp + p * l.pair_bytes);
    }
    const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(prod[0], prod[1]),
                                        _mm256_hadd_epi16(prod[2], prod[3]));
    const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(h, ones16));  // [b0 b2 b4 b6|b1 b3 b5 b7]
    if constexpr (kQ4_0) {
      // d of blocks in the order [b0 b2 b4 b6 b1 b3 b5 b7].
      const auto* base = reinterpret_cast<const uint8_t*>(b);
      auto d16 = [&](int i) {
        uint16_t v;
        std::memcpy(&v, base + i * sizeof(BlockQ4_0), 2);
        return static_cast<int>(v);
      };
      __m128i dh = _mm_cvtsi32_si128(d16(0));
      dh = _mm_insert_epi16(dh, d16(2), 1);
      dh = _mm_insert_epi16(dh, d16(4), 2);
      dh = _mm_insert_epi16(dh, d16(6), 3);
      dh = _mm_insert_epi16(dh, d16(1), 4);
      dh = _mm_insert_epi16(dh, d16(3), 5);
      dh = _mm_insert_epi16(dh, d16(5), 6);
      dh = _mm_insert_epi16(dh, d16(7), 7);
      const __m256 dw = _mm256_cvtph_ps(dh);
      acc = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_load_ps(grp + 16 * g)), acc);
    } else {
      // (d, m) fp16 pairs as dwords: G = [dm0 dm2 dm1 dm3 | dm4 dm6 dm5 dm7]. A 32-byte load at
      // block 2i holds dm(2i) in dword 0 and dm(2i + 1) in dword 5.
      const auto* base = reinterpret_cast<const uint8_t*>(b);
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 40));
      const __m256i l2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 80));
      const __m256i l3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + 120));
      const __m256i u01 = _mm256_unpacklo_epi32(l0, l1);  // [dm0 dm2 . . | . . dm1 dm3]
      const __m256i u23 = _mm256_unpacklo_epi32(l2, l3);  // [dm4 dm6 . . | . . dm5 dm7]
      const __m256i gdm = _mm256_blend_epi32(_mm256_permute4x64_epi64(u01, 0xCC),
                                             _mm256_permute4x64_epi64(u23, 0xCC), 0xF0);
      const __m256 dm1 = _mm256_cvtph_ps(_mm256_castsi256_si128(gdm));  // [d0 m0 d2 m2|d1 m1 d3 m3]
      const __m256 dm2 = _mm256_cvtph_ps(_mm256_extracti128_si256(gdm, 1));
      const __m256 j1 = _mm256_unpacklo_ps(f, one);  // [b0 1 b2 1 | b1 1 b3 1]
      const __m256 j2 = _mm256_unpackhi_ps(f, one);  // [b4 1 b6 1 | b5 1 b7 1]
      acc = _mm256_fmadd_ps(j1, _mm256_mul_ps(dm1, _mm256_load_ps(grp + 16 * g)), acc);
      acc = _mm256_fmadd_ps(j2, _mm256_mul_ps(dm2, _mm256_load_ps(grp + 16 * g + 8)), acc);
    }
  }
  // The remaining (fewer than 8) blocks, a pair at a time.
  const auto* dx = reinterpret_cast<const float*>(px + l.off_dx);
  const auto* sx = reinterpret_cast<const float*>(px + l.off_sx);
  float msum = 0.0f;
  for (int64_t p = 4 * l.ngroups; p < l.npairs; ++p) {
    const int64_t a = 2 * p;
    const bool has_b = a + 1 < l.nb;
    const auto& ba = bw[a];
    const auto& bb = bw[has_b ? a + 1 : a];
    __m256i lo, hi;
    Nibbles(Load2x128(ba.qs, bb.qs), &lo, &hi);
    const __m256i prod = PairProducts<kQ4_0>(lo, hi, px + static_cast<size_t>(p) * l.pair_bytes);
    const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones16));
    const float da = HalfToFloat(ba.d) * dx[a];
    const float db = has_b ? HalfToFloat(bb.d) * dx[a + 1] : 0.0f;
    acc = _mm256_fmadd_ps(f, _mm256_setr_m128(_mm_set1_ps(da), _mm_set1_ps(db)), acc);
    if constexpr (!kQ4_0) {
      msum += HalfToFloat(ba.m) * sx[a];
      if (has_b) msum += HalfToFloat(bb.m) * sx[a + 1];
    }
  }
  return Hsum(acc) + msum;
}

// One weight row against a tile of 4 repacked tokens. `dwm`: the row's (d, m) per block as floats,
// zero for the pad block; `tile`: per pair [dx_A t0..t3 | dx_B t0..t3] (and for Q4_1 the same for
// s_x). Writes the 4 dots to out.
template <bool kQ4_0>
void RowDot4(const typename WeightBlock<kQ4_0>::Type* bw, const float* dwm,
             const uint8_t* const px[4], const float* tile, const Layout& l, float out[4]) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  constexpr int kTileFloats = kQ4_0 ? 8 : 16;
  __m256 acc = _mm256_setzero_ps();
  __m256 accm = _mm256_setzero_ps();
  for (int64_t p = 0; p < l.npairs; ++p) {
    const int64_t a = 2 * p;
    const int64_t b = a + 1 < l.nb ? a + 1 : a;
    __m256i lo, hi;
    Nibbles(Load2x128(bw[a].qs, bw[b].qs), &lo, &hi);
    const size_t off = static_cast<size_t>(p) * l.pair_bytes;
    const __m256i p0 = PairProducts<kQ4_0>(lo, hi, px[0] + off);
    const __m256i p1 = PairProducts<kQ4_0>(lo, hi, px[1] + off);
    const __m256i p2 = PairProducts<kQ4_0>(lo, hi, px[2] + off);
    const __m256i p3 = PairProducts<kQ4_0>(lo, hi, px[3] + off);
    const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(p0, p1), _mm256_hadd_epi16(p2, p3));
    const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(h, ones16));  // [A t0..t3 | B t0..t3]
    const float* tv = tile + p * kTileFloats;
    const __m256 dw =
        _mm256_setr_m128(_mm_broadcast_ss(dwm + 2 * a), _mm_broadcast_ss(dwm + 2 * a + 2));
    acc = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_load_ps(tv)), acc);
    if constexpr (!kQ4_0) {
      const __m256 mw =
          _mm256_setr_m128(_mm_broadcast_ss(dwm + 2 * a + 1), _mm_broadcast_ss(dwm + 2 * a + 3));
      accm = _mm256_fmadd_ps(mw, _mm256_load_ps(tv + 8), accm);
    }
  }
  acc = _mm256_add_ps(acc, accm);
  const __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  _mm_storeu_ps(out, r);
}

template <bool kQ4_0>
void MatMulQ4(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
              int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  using Block = typename WeightBlock<kQ4_0>::Type;
  const Layout l = MakeLayout(k, kQ4_0);
  uint8_t* px = Scratch(kScratchMatX, static_cast<size_t>(m) * l.bytes);
  for (int64_t j = 0; j < m; ++j) {
    PackToken<kQ4_0>(static_cast<const uint8_t*>(x) + j * x_row_bytes, l, px + j * l.bytes);
  }
  const auto* wb = static_cast<const uint8_t*>(w);
  if (m == 1) {
    for (int64_t i = row_begin; i < row_end; ++i) {
      y[i] = RowDot<kQ4_0>(reinterpret_cast<const Block*>(wb + i * w_row_bytes), px, l);
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

  const int64_t nbp = 2 * l.npairs;  // blocks incl. the pad block
  auto* dwm = reinterpret_cast<float*>(
      Scratch(kScratchMatW, static_cast<size_t>(kRowChunk * nbp * 2) * sizeof(float)));
  for (int64_t c0 = row_begin; c0 < row_end; c0 += kRowChunk) {
    const int64_t c1 = c0 + kRowChunk < row_end ? c0 + kRowChunk : row_end;
    for (int64_t i = c0; i < c1; ++i) {
      const auto* bw = reinterpret_cast<const Block*>(wb + i * w_row_bytes);
      float* s = dwm + (i - c0) * nbp * 2;
      for (int64_t b = 0; b < nbp; ++b) {
        s[2 * b] = b < l.nb ? HalfToFloat(bw[b].d) : 0.0f;
        if constexpr (kQ4_0) {
          s[2 * b + 1] = 0.0f;
        } else {
          s[2 * b + 1] = b < l.nb ? HalfToFloat(bw[b].m) : 0.0f;
        }
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
        RowDot4<kQ4_0>(reinterpret_cast<const Block*>(wb + i * w_row_bytes),
                       dwm + (i - c0) * nbp * 2, pt, tv, l, out);
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

// VecDot: a block at a time, straight from the Q8_0 / Q8_1 layout (as ggml's AVX2 vec_dot).
float DotQ4_0Q8_0(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ4_0*>(w);
  const auto* bx = static_cast<const BlockQ8_0*>(x);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i eights = _mm256_set1_epi8(8);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < k / 32; ++i) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bw[i].qs));
    const __m256i nib = _mm256_and_si256(
        _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), m4);
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bx[i].qs));
    const __m256i prod =
        _mm256_sub_epi16(_mm256_maddubs_epi16(nib, xq), _mm256_maddubs_epi16(eights, xq));
    const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones16));
    acc = _mm256_fmadd_ps(f, _mm256_set1_ps(HalfToFloat(bw[i].d) * HalfToFloat(bx[i].d)), acc);
  }
  return Hsum(acc);
}

float DotQ4_1Q8_1(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ4_1*>(w);
  const auto* bx = static_cast<const BlockQ8_1*>(x);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256 acc = _mm256_setzero_ps();
  float summs = 0.0f;
  for (int64_t i = 0; i < k / 32; ++i) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bw[i].qs));
    const __m256i nib = _mm256_and_si256(
        _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), m4);
    const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bx[i].qs));
    const __m256 f = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(nib, xq), ones16));
    acc = _mm256_fmadd_ps(f, _mm256_set1_ps(HalfToFloat(bw[i].d) * HalfToFloat(bx[i].d)), acc);
    summs += HalfToFloat(bw[i].m) * HalfToFloat(bx[i].s);
  }
  return Hsum(acc) + summs;
}

}  // namespace loom::kernels::cpu::avx2
