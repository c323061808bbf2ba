// Naive reference kernels (see reference.h). Deliberately independent of the optimised code: no
// shared helpers, no SIMD, double arithmetic wherever the format allows it.

#include "kernels/cpu/reference.h"

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace loom::kernels::ref {
namespace {

uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// A row of n elements of type t, dequantized in double.
std::vector<double> DequantizeDouble(DType t, const void* x, int64_t n) {
  std::vector<double> y(static_cast<size_t>(n));
  const auto* bytes = static_cast<const uint8_t*>(x);
  const int bs = BlockSize(t);
  const size_t ts = TypeSize(t);
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* b = bytes + static_cast<size_t>(i / bs) * ts;
    const int j = static_cast<int>(i % bs);
    double v = 0.0;
    switch (t) {
      case DType::kF32: {
        float f;
        std::memcpy(&f, b, 4);
        v = f;
        break;
      }
      case DType::kF16: {
        fp16_t h;
        std::memcpy(&h, b, 2);
        v = Fp16ToFp32(h);
        break;
      }
      case DType::kBF16: {
        bf16_t h;
        std::memcpy(&h, b, 2);
        v = Bf16ToFp32(h);
        break;
      }
      case DType::kQ4_0: {
        const auto* blk = reinterpret_cast<const BlockQ4_0*>(b);
        const int q = j < 16 ? (blk->qs[j] & 0xF) : (blk->qs[j - 16] >> 4);
        v = static_cast<double>(Fp16ToFp32(blk->d)) * (q - 8);
        break;
      }
      case DType::kQ4_1: {
        const auto* blk = reinterpret_cast<const BlockQ4_1*>(b);
        const int q = j < 16 ? (blk->qs[j] & 0xF) : (blk->qs[j - 16] >> 4);
        v = static_cast<double>(Fp16ToFp32(blk->d)) * q + Fp16ToFp32(blk->m);
        break;
      }
      case DType::kQ8_0: {
        const auto* blk = reinterpret_cast<const BlockQ8_0*>(b);
        v = static_cast<double>(Fp16ToFp32(blk->d)) * blk->qs[j];
        break;
      }
      case DType::kQ8_1: {
        const auto* blk = reinterpret_cast<const BlockQ8_1*>(b);
        v = static_cast<double>(Fp16ToFp32(blk->d)) * blk->qs[j];
        break;
      }
      case DType::kQ8_K: {
        const auto* blk = reinterpret_cast<const BlockQ8_K*>(b);
        v = static_cast<double>(blk->d) * blk->qs[j];
        break;
      }
      case DType::kQ4_K: {
        // 8 sub-blocks of 32; sub-block s has a 6-bit scale and min packed in `scales`.
        const auto* blk = reinterpret_cast<const BlockQ4_K*>(b);
        const int s = j / 32;
        const uint8_t* sc = blk->scales;
        int scale, min;
        if (s < 4) {
          scale = sc[s] & 63;
          min = sc[s + 4] & 63;
        } else {
          scale = (sc[s + 4] & 0xF) | ((sc[s - 4] >> 6) << 4);
          min = (sc[s + 4] >> 4) | ((sc[s] >> 6) << 4);
        }
        const int byte = (j / 64) * 32 + j % 32;
        const int q = (s % 2 == 0) ? (blk->qs[byte] & 0xF) : (blk->qs[byte] >> 4);
        v = static_cast<double>(Fp16ToFp32(blk->d)) * scale * q -
            static_cast<double>(Fp16ToFp32(blk->dmin)) * min;
        break;
      }
      case DType::kQ6_K: {
        // Halves of 128: element l + 32 * quarter takes low/high nibbles of ql and 2 bits of qh.
        const auto* blk = reinterpret_cast<const BlockQ6_K*>(b);
        const int half = j / 128;
        const int r = j % 128;
        const int quarter = r / 32;
        const int l = r % 32;
        const uint8_t lo_byte = blk->ql[64 * half + (quarter % 2) * 32 + l];
        const int lo = quarter < 2 ? (lo_byte & 0xF) : (lo_byte >> 4);
        const int hi = (blk->qh[32 * half + l] >> (2 * quarter)) & 3;
        const int q = (lo | (hi << 4)) - 32;
        const int scale = blk->scales[8 * half + 2 * quarter + l / 16];
        v = static_cast<double>(Fp16ToFp32(blk->d)) * scale * q;
        break;
      }
      default:
        std::abort();
    }
    y[static_cast<size_t>(i)] = v;
  }
  return y;
}

double Dot(DType w_type, int64_t k, const void* w_row, const void* x_row, bool abs) {
  const DType xt = VecDotType(w_type);
  if (w_type == DType::kQ4_1) {
    const auto* w = static_cast<const BlockQ4_1*>(w_row);
    const auto* x = static_cast<const BlockQ8_1*>(x_row);
    double sum = 0.0;
    for (int64_t b = 0; b < k / 32; ++b) {
      const double dw = Fp16ToFp32(w[b].d);
      const double dx = Fp16ToFp32(x[b].d);
      for (int j = 0; j < 32; ++j) {
        const int q = j < 16 ? (w[b].qs[j] & 0xF) : (w[b].qs[j - 16] >> 4);
        const double p = (dw * q) * (dx * x[b].qs[j]);
        sum += abs ? std::fabs(p) : p;
      }
      const double ms = static_cast<double>(Fp16ToFp32(w[b].m)) * Fp16ToFp32(x[b].s);
      sum += abs ? std::fabs(ms) : ms;
    }
    return sum;
  }
  const std::vector<double> w = DequantizeDouble(w_type, w_row, k);
  const std::vector<double> x = DequantizeDouble(xt, x_row, k);
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    const double p = w[static_cast<size_t>(i)] * x[static_cast<size_t>(i)];
    sum += abs ? std::fabs(p) : p;
  }
  return sum;
}

}  // namespace

float Fp16ToFp32(fp16_t h) {
  const bool neg = (h & 0x8000) != 0;
  const int e = (h >> 10) & 0x1F;
  const int m = h & 0x3FF;
  if (e == 31) {
    if (m == 0) return neg ? -INFINITY : INFINITY;
    return BitsFloat((neg ? 0x80000000u : 0u) | 0x7FC00000u | (static_cast<uint32_t>(m) << 13));
  }
  const double mag = e == 0 ? std::ldexp(static_cast<double>(m), -24)
                            : std::ldexp(static_cast<double>(1024 + m), e - 25);
  return static_cast<float>(neg ? -mag : mag);
}

fp16_t Fp32ToFp16(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = (u >> 31) ? 0x8000 : 0;
  if (std::isnan(f)) return sign | 0x7E00 | ((u >> 13) & 0x3FF);
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return sign | 0x7C00;  // at or beyond the half-way point above 65504
  if (a < std::ldexp(1.0, -14)) {
    // Subnormal (or zero): a multiple of 2^-24; nearbyint rounds half to even.
    return sign | static_cast<uint16_t>(std::nearbyint(a * std::ldexp(1.0, 24)));
  }
  int e2;
  std::frexp(a, &e2);                                // a = frac * 2^e2, frac in [0.5, 1)
  int e = e2 - 1;                                    // a in [2^e, 2^(e+1))
  double q = std::nearbyint(std::ldexp(a, 10 - e));  // in [1024, 2048]
  if (q == 2048.0) {
    q = 1024.0;
    ++e;
  }
  if (e > 15) return sign | 0x7C00;
  return sign | static_cast<uint16_t>(((e + 15) << 10) | (static_cast<int>(q) - 1024));
}

float Bf16ToFp32(bf16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

bf16_t Fp32ToBf16(float f) {
  const uint32_t u = FloatBits(f);
  if (std::isnan(f)) return static_cast<bf16_t>((u >> 16) | 0x40);
  // Round to nearest even on the discarded 16 bits.
  const uint32_t hi = u >> 16;
  const uint32_t lo = u & 0xFFFF;
  uint32_t r = hi;
  if (lo > 0x8000 || (lo == 0x8000 && (hi & 1))) ++r;
  return static_cast<bf16_t>(r);
}

void DequantizeRow(DType t, const void* x, float* y, int64_t n) {
  const std::vector<double> d = DequantizeDouble(t, x, n);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(d[static_cast<size_t>(i)]);
}

void QuantizeRow(DType t, const float* x, void* y, int64_t n) {
  switch (t) {
    case DType::kF32:
      std::memcpy(y, x, static_cast<size_t>(n) * 4);
      return;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i) static_cast<fp16_t*>(y)[i] = Fp32ToFp16(x[i]);
      return;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i) static_cast<bf16_t*>(y)[i] = Fp32ToBf16(x[i]);
      return;
    case DType::kQ4_0: {
      auto* b = static_cast<BlockQ4_0*>(y);
      for (int64_t i = 0; i < n / 32; ++i, x += 32) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; ++j) {
          if (amax < std::fabs(x[j])) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        }
        const float d = max / -8;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = Fp32ToFp16(d);
        for (int j = 0; j < 16; ++j) {
          const int q0 = static_cast<int8_t>(x[j] * id + 8.5f);
          const int q1 = static_cast<int8_t>(x[j + 16] * id + 8.5f);
          b[i].qs[j] = static_cast<uint8_t>((q0 < 15 ? q0 : 15) | ((q1 < 15 ? q1 : 15) << 4));
        }
      }
      return;
    }
    case DType::kQ4_1: {
      auto* b = static_cast<BlockQ4_1*>(y);
      for (int64_t i = 0; i < n / 32; ++i, x += 32) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; ++j) {
          if (x[j] < min) min = x[j];
          if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 15;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = Fp32ToFp16(d);
        b[i].m = Fp32ToFp16(min);
        for (int j = 0; j < 16; ++j) {
          const int q0 = static_cast<int8_t>((x[j] - min) * id + 0.5f);
          const int q1 = static_cast<int8_t>((x[j + 16] - min) * id + 0.5f);
          b[i].qs[j] = static_cast<uint8_t>((q0 < 15 ? q0 : 15) | ((q1 < 15 ? q1 : 15) << 4));
        }
      }
      return;
    }
    case DType::kQ8_0:
    case DType::kQ8_1: {
      const bool q8_1 = t == DType::kQ8_1;
      const size_t ts = TypeSize(t);
      for (int64_t i = 0; i < n / 32; ++i, x += 32) {
        uint8_t* b = static_cast<uint8_t*>(y) + static_cast<size_t>(i) * ts;
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j) amax = std::fabs(x[j]) > amax ? std::fabs(x[j]) : amax;
        // ggml's x86 quantize_row_q8_0/q8_1 (what llama.cpp runs here): id = 127 / amax, round half
        // to even. (ggml's portable *_ref uses 1 / d and roundf; the two differ by one in rare
        // elements, enough to move a small model's logits.)
        const float d = amax / 127;
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        const fp16_t dh = Fp32ToFp16(d);
        std::memcpy(b, &dh, 2);
        auto* qs = reinterpret_cast<int8_t*>(b + (q8_1 ? 4 : 2));
        int sum = 0;
        for (int j = 0; j < 32; ++j) {
          qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));  // half to even
          sum += qs[j];
        }
        if (q8_1) {
          const fp16_t s = Fp32ToFp16(static_cast<float>(sum) * d);
          std::memcpy(b + 2, &s, 2);
        }
      }
      return;
    }
    case DType::kQ8_K: {
      auto* b = static_cast<BlockQ8_K*>(y);
      for (int64_t i = 0; i < n / 256; ++i, x += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; ++j) {
          if (std::fabs(x[j]) > amax) {
            amax = std::fabs(x[j]);
            max = x[j];
          }
        }
        std::memset(&b[i], 0, sizeof(b[i]));
        if (amax == 0.0f) continue;
        const float iscale = -127.f / max;
        for (int j = 0; j < 256; ++j) {
          const int v = static_cast<int>(std::nearbyint(iscale * x[j]));  // half to even
          b[i].qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
        }
        for (int j = 0; j < 256; ++j) b[i].bsums[j / 16] += b[i].qs[j];
        b[i].d = 1 / iscale;
      }
      return;
    }
    default:
      std::abort();
  }
}

double VecDot(DType w_type, int64_t k, const void* w_row, const void* x_row) {
  return Dot(w_type, k, w_row, x_row, /*abs=*/false);
}

double VecDotAbs(DType w_type, int64_t k, const void* w_row, const void* x_row) {
  return Dot(w_type, k, w_row, x_row, /*abs=*/true);
}

void MatMulRows(DType w_type, const void* w, size_t w_row_bytes, int64_t k, const void* x,
                size_t x_row_bytes, int64_t m, float* y, int64_t ldy, int64_t row_begin,
                int64_t row_end) {
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t i = row_begin; i < row_end; ++i) {
      y[j * ldy + i] = static_cast<float>(
          ref::VecDot(w_type, k, static_cast<const uint8_t*>(w) + i * w_row_bytes,
                      static_cast<const uint8_t*>(x) + j * x_row_bytes));
    }
  }
}

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double scale = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] * scale * weight[i]);
}

void SwiGlu(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    y[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

void Add(const float* a, const float* b, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void Softmax(float* x, int64_t n) {
  double max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  std::vector<double> e(static_cast<size_t>(n));
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    e[static_cast<size_t>(i)] = std::exp(x[i] - max);
    sum += e[static_cast<size_t>(i)];
  }
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(e[static_cast<size_t>(i)] / sum);
}

void Rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t pos,
          float freq_base, float freq_scale, RopeStyle style) {
  for (int64_t h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int64_t i = 0; 2 * i < rope_dim; ++i) {
      const double theta = static_cast<double>(pos) * freq_scale *
                           std::pow(static_cast<double>(freq_base), -2.0 * i / rope_dim);
      const int64_t a = style == RopeStyle::kNorm ? 2 * i : i;
      const int64_t b = style == RopeStyle::kNorm ? 2 * i + 1 : i + rope_dim / 2;
      const double x0 = v[a], x1 = v[b];
      v[a] = static_cast<float>(x0 * std::cos(theta) - x1 * std::sin(theta));
      v[b] = static_cast<float>(x0 * std::sin(theta) + x1 * std::cos(theta));
    }
  }
}

void AttentionHead(const float* q, const fp16_t* k, const fp16_t* v, size_t kv_stride, int64_t n_kv,
                   int64_t head_dim, float scale, float* out) {
  std::vector<double> s(static_cast<size_t>(n_kv));
  double max = -INFINITY;
  for (int64_t t = 0; t < n_kv; ++t) {
    double dot = 0.0;
    for (int64_t d = 0; d < head_dim; ++d) {
      dot += static_cast<double>(Fp16ToFp32(Fp32ToFp16(q[d]))) * Fp16ToFp32(k[t * kv_stride + d]);
    }
    s[static_cast<size_t>(t)] = dot * scale;
    max = s[static_cast<size_t>(t)] > max ? s[static_cast<size_t>(t)] : max;
  }
  double sum = 0.0;
  for (double& e : s) {
    e = std::exp(e - max);
    sum += e;
  }
  for (int64_t d = 0; d < head_dim; ++d) {
    double acc = 0.0;
    for (int64_t t = 0; t < n_kv; ++t) {
      const double p = Fp16ToFp32(Fp32ToFp16(static_cast<float>(s[static_cast<size_t>(t)] / sum)));
      acc += p * Fp16ToFp32(v[t * kv_stride + d]);
    }
    out[d] = static_cast<float>(acc);
  }
}

void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* out) {
  std::vector<fp16_t> k(static_cast<size_t>(n_kv * head_dim)), v(k.size());
  for (int64_t t = 0; t < n_kv; ++t) {
    const size_t row = head_offset + static_cast<size_t>(t % block_size) * kv_stride;
    for (int64_t d = 0; d < head_dim; ++d) {
      k[static_cast<size_t>(t * head_dim + d)] = k_blocks[t / block_size][row + d];
      v[static_cast<size_t>(t * head_dim + d)] = v_blocks[t / block_size][row + d];
    }
  }
  AttentionHead(q, k.data(), v.data(), static_cast<size_t>(head_dim), n_kv, head_dim, scale, out);
}

}  // namespace loom::kernels::ref
