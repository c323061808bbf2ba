// AVX2 kernels for Q8_0 weights x Q8_0 activations: MatMulRows and VecDot.
//
// Products use ggml's sign trick (maddubs(|w|, sign(x, w)), exact for w = -128 too) and widen to
// eight int32 per block. m == 1: groups of 8 blocks fold with hadd into the 8 block sums, which
// take their 8 scales in one FMA. m > 1: tiles of 4 tokens fold into [t0..t3 | t0..t3] per block;
// |w| is computed once per block for the 4 tokens.

#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

constexpr int64_t kRowChunk = 16;

inline float Hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Per-token layout: nb aligned 32-byte qs, then d_x per block, then per group of 8 the 8 d_x.
struct Layout {
  int64_t nb = 0;
  int64_t ngroups = 0;
  size_t off_dx = 0;
  size_t bytes = 0;
};

Layout MakeLayout(int64_t k) {
  Layout l;
  l.nb = k / 32;
  l.ngroups = l.nb / 8;
  l.off_dx = static_cast<size_t>(l.nb) * 32;
  l.bytes = (l.off_dx + static_cast<size_t>(l.nb) * sizeof(float) + 63) / 64 * 64;
  return l;
}

void PackToken(const BlockQ8_0* x, const Layout& l, uint8_t* out) {
  auto* dx = reinterpret_cast<float*>(out + l.off_dx);
  for (int64_t b = 0; b < l.nb; ++b) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 32 * b),
                       _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs)));
    dx[b] = HalfToFloat(x[b].d);
  }
}

// Eight int32 partial sums of one block's products.
inline __m256i BlockProducts(__m256i w, __m256i xq) {
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

inline __m256i LoadW(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

float RowDot(const BlockQ8_0* bw, const uint8_t* px, const Layout& l) {
  const auto* dx = reinterpret_cast<const float*>(px + l.off_dx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t g = 0; g < l.ngroups; ++g) {
    const BlockQ8_0* b = bw + 8 * g;
    const uint8_t* xp = px + 256 * g;
    __m256i s[8];
    for (int i = 0; i < 8; ++i) {
      s[i] = BlockProducts(LoadW(b[i]),
                           _mm256_load_si256(reinterpret_cast<const __m256i*>(xp + 32 * i)));
    }
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]),
                                         _mm256_hadd_epi32(s[2], s[3]));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]),
                                         _mm256_hadd_epi32(s[6], s[7]));
    const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                          _mm256_permute2x128_si256(h0, h1, 0x31));  // b0..b7
    const auto* base = reinterpret_cast<const uint8_t*>(b);
    auto d16 = [&](int i) {
      uint16_t v;
      std::memcpy(&v, base + i * sizeof(BlockQ8_0), 2);
      return static_cast<int>(v);
    };
    __m128i dh = _mm_cvtsi32_si128(d16(0));
    dh = _mm_insert_epi16(dh, d16(1), 1);
    dh = _mm_insert_epi16(dh, d16(2), 2);
    dh = _mm_insert_epi16(dh, d16(3), 3);
    dh = _mm_insert_epi16(dh, d16(4), 4);
    dh = _mm_insert_epi16(dh, d16(5), 5);
    dh = _mm_insert_epi16(dh, d16(6), 6);
    dh = _mm_insert_epi16(dh, d16(7), 7);
    const __m256 scale = _mm256_mul_ps(_mm256_cvtph_ps(dh), _mm256_loadu_ps(dx + 8 * g));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
  }
  for (int64_t b = 8 * l.ngroups; b < l.nb; ++b) {
    const __m256i s =
        BlockProducts(LoadW(bw[b]), _mm256_load_si256(reinterpret_cast<const __m256i*>(px + 32 * b)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(HalfToFloat(bw[b].d) * dx[b]), acc);
  }
  return Hsum(acc);
}

// One row against 4 tokens; dw: the row's d per block as floats; tile: per block
// [dx t0..t3 | dx t0..t3].
void RowDot4(const BlockQ8_0* bw, const float* dw, const uint8_t* const px[4], const float* tile,
             const Layout& l, float out[4]) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < l.nb; ++b) {
    const __m256i w = LoadW(bw[b]);
    const __m256i aw = _mm256_sign_epi8(w, w);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256i s[4];
    for (int t = 0; t < 4; ++t) {
      const __m256i xq = _mm256_load_si256(reinterpret_cast<const __m256i*>(px[t] + 32 * b));
      s[t] = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xq, w)), ones16);
    }
    const __m256i h =
        _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
    const __m256 scale = _mm256_mul_ps(_mm256_broadcast_ss(dw + b), _mm256_load_ps(tile + 8 * b));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), scale, acc);
  }
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
}

}  // namespace

void MatMulQ8_0(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end) {
  const Layout l = MakeLayout(k);
  uint8_t* px = Scratch(kScratchMatX, static_cast<size_t>(m) * l.bytes);
  for (int64_t j = 0; j < m; ++j) {
    PackToken(reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(x) + j * x_row_bytes),
              l, px + j * l.bytes);
  }
  const auto* wb = static_cast<const uint8_t*>(w);
  if (m == 1) {
    for (int64_t i = row_begin; i < row_end; ++i) {
      y[i] = RowDot(reinterpret_cast<const BlockQ8_0*>(wb + i * w_row_bytes), px, l);
    }
    return;
  }

  const int64_t ntiles = (m + 3) / 4;
  auto* tiles = reinterpret_cast<float*>(
      Scratch(kScratchMatTile, static_cast<size_t>(ntiles * l.nb * 8) * sizeof(float)));
  for (int64_t tt = 0; tt < ntiles; ++tt) {
    for (int t = 0; t < 4; ++t) {
      const int64_t j = 4 * tt + t < m ? 4 * tt + t : m - 1;
      const auto* dx = reinterpret_cast<const float*>(px + j * l.bytes + l.off_dx);
      for (int64_t b = 0; b < l.nb; ++b) {
        float* tv = tiles + (tt * l.nb + b) * 8;
        tv[t] = dx[b];
        tv[4 + t] = dx[b];
      }
    }
  }
  auto* dw = reinterpret_cast<float*>(
      Scratch(kScratchMatW, static_cast<size_t>(kRowChunk * l.nb) * sizeof(float)));
  for (int64_t c0 = row_begin; c0 < row_end; c0 += kRowChunk) {
    const int64_t c1 = c0 + kRowChunk < row_end ? c0 + kRowChunk : row_end;
    for (int64_t i = c0; i < c1; ++i) {
      const auto* bw = reinterpret_cast<const BlockQ8_0*>(wb + i * w_row_bytes);
      for (int64_t b = 0; b < l.nb; ++b) dw[(i - c0) * l.nb + b] = HalfToFloat(bw[b].d);
    }
    for (int64_t tt = 0; tt < ntiles; ++tt) {
      const uint8_t* pt[4];
      for (int t = 0; t < 4; ++t) {
        const int64_t j = 4 * tt + t < m ? 4 * tt + t : m - 1;
        pt[t] = px + j * l.bytes;
      }
      const int nt = m - 4 * tt < 4 ? static_cast<int>(m - 4 * tt) : 4;
      for (int64_t i = c0; i < c1; ++i) {
        float out[4];
        RowDot4(reinterpret_cast<const BlockQ8_0*>(wb + i * w_row_bytes), dw + (i - c0) * l.nb,
                pt, tiles + tt * l.nb * 8, l, out);
        for (int t = 0; t < nt; ++t) y[(4 * tt + t) * ldy + i] = out[t];
      }
    }
  }
}

float DotQ8_0Q8_0(int64_t k, const void* w, const void* x) {
  const auto* bw = static_cast<const BlockQ8_0*>(w);
  const auto* bx = static_cast<const BlockQ8_0*>(x);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < k / 32; ++i) {
    const __m256i s =
        BlockProducts(LoadW(bw[i]), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bx[i].qs)));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),
                          _mm256_set1_ps(HalfToFloat(bw[i].d) * HalfToFloat(bx[i].d)), acc);
  }
  return Hsum(acc);
}

}  // namespace loom::kernels::cpu::avx2
