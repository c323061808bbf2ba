// AVX2 kernels for Q8_0 weights x Q8_0 activations: MatMulRows and VecDot.
//
// Products use ggml's sign trick (maddubs(|w|, sign(x, w)), exact for w = -128 too) and widen to
// eight int32 per block; four rows (decode) or four tokens (prefill) then fold with hadd into
// [low-16 sums x4 | high-16 sums x4], scaled with one FMA. Both kernels do the same arithmetic per
// output, so results do not depend on the batch size; in prefill |w| is shared by 4 tokens.

#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"

namespace loom::kernels::cpu::avx2 {
namespace {

constexpr int64_t kRowChunk = 16;        // rows whose scales are converted together (prefill)
constexpr size_t kPrefetchBytes = 4096;  // decode: how far ahead of the current row to prefetch

// Per-token layout: nb aligned 32-byte qs, then d_x per block.
struct Layout {
  int64_t nb = 0;
  size_t off_dx = 0;
  size_t bytes = 0;
};

Layout MakeLayout(int64_t k) {
  Layout l;
  l.nb = k / 32;
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

inline int Load16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline __m256i LoadW(const BlockQ8_0& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// Folds four blocks' 8 x int32 partial sums into [low 16 products x4 | high 16 products x4].
inline __m256 Fold4(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
  return _mm256_cvtepi32_ps(
      _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3)));
}

// Decode: four weight rows (possibly repeated) against one repacked token. Per row the arithmetic
// is that of Tokens4 for a token: lo = sum_b fma(isum_lo_b, d_w d_x, lo), the same for hi, y = lo +
// hi; so results do not depend on m.
void Rows4(const uint8_t* const rows[4], const uint8_t* px, const Layout& l, float out[4]) {
  const auto* dx = reinterpret_cast<const float*>(px + l.off_dx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < l.nb; ++b) {
    const size_t off = static_cast<size_t>(b) * sizeof(BlockQ8_0);
    const __m256i xq = _mm256_load_si256(reinterpret_cast<const __m256i*>(px + 32 * b));
    __m256i s[4];
    for (int r = 0; r < 4; ++r) {
      s[r] = BlockProducts(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + off + 2)),
                           xq);
    }
    // The rows' d as [r0..r3 | r0..r3].
    const __m128i dh = _mm_setr_epi16(static_cast<int16_t>(Load16(rows[0] + off)),
                                      static_cast<int16_t>(Load16(rows[1] + off)),
                                      static_cast<int16_t>(Load16(rows[2] + off)),
                                      static_cast<int16_t>(Load16(rows[3] + off)), 0, 0, 0, 0);
    const __m256 dw = _mm256_cvtph_ps(_mm_unpacklo_epi64(dh, dh));
    acc = _mm256_fmadd_ps(Fold4(s[0], s[1], s[2], s[3]), _mm256_mul_ps(dw, _mm256_set1_ps(dx[b])),
                          acc);
  }
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1)));
}

// Prefill: one row against 4 tokens; dw: the row's d per block as floats; tile: per block
// [dx t0..t3 | dx t0..t3].
void Tokens4(const BlockQ8_0* bw, const float* dw, const uint8_t* const px[4], const float* tile,
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
    const __m256 scale = _mm256_mul_ps(_mm256_broadcast_ss(dw + b), _mm256_load_ps(tile + 8 * b));
    acc = _mm256_fmadd_ps(Fold4(s[0], s[1], s[2], s[3]), scale, acc);
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
    // Decode streams W once; prefetching a few rows ahead keeps enough misses in flight.
    for (int64_t i = row_begin; i < row_end; i += 4) {
      const uint8_t* rows[4];
      for (int r = 0; r < 4; ++r) rows[r] = wb + (i + r < row_end ? i + r : i) * w_row_bytes;
      for (size_t o = 0; o < 4 * w_row_bytes; o += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(rows[0] + kPrefetchBytes + o), _MM_HINT_T0);
      }
      float out[4];
      Rows4(rows, px, l, out);
      for (int r = 0; r < 4 && i + r < row_end; ++r) y[i + r] = out[r];
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
        Tokens4(reinterpret_cast<const BlockQ8_0*>(wb + i * w_row_bytes), dw + (i - c0) * l.nb, pt,
                tiles + tt * l.nb * 8, l, out);
        for (int t = 0; t < nt; ++t) y[(4 * tt + t) * ldy + i] = out[t];
      }
    }
  }
}

// VecDot is the one-row MatMulRows, so that both give the same bits.
float DotQ8_0Q8_0(int64_t k, const void* w, const void* x) {
  float y;
  MatMulQ8_0(w, RowBytes(DType::kQ8_0, k), k, x, RowBytes(DType::kQ8_0, k), 1, &y, 1, 0, 1);
  return y;
}

}  // namespace loom::kernels::cpu::avx2
