// Quantization and dequantization of rows, as ggml defines them (ggml-quants.c).

#include <cmath>
#include <cstring>

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace cpu {
namespace {

// ggml's nearest_int: round half to even through the float adder (|f| < 2^22).
inline int NearestInt(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  std::memcpy(&i, &v, sizeof(i));
  return (i & 0x007FFFFF) - 0x00400000;
}

// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j of a Q4_K block.
inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

void DequantizeQ4_0(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK4_0; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQK4_0 / 2; ++j) {
      y[i * kQK4_0 + j] = ((x[i].qs[j] & 0x0F) - 8) * d;
      y[i * kQK4_0 + j + kQK4_0 / 2] = ((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void DequantizeQ4_1(const BlockQ4_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK4_1; ++i) {
    const float d = HalfToFloat(x[i].d);
    const float m = HalfToFloat(x[i].m);
    for (int j = 0; j < kQK4_1 / 2; ++j) {
      y[i * kQK4_1 + j] = (x[i].qs[j] & 0x0F) * d + m;
      y[i * kQK4_1 + j + kQK4_1 / 2] = (x[i].qs[j] >> 4) * d + m;
    }
  }
}

void DequantizeQ8_0(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQK8_0; ++j) y[i * kQK8_0 + j] = x[i].qs[j] * d;
  }
}

void DequantizeQ8_1(const BlockQ8_1* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK8_1; ++i) {
    const float d = HalfToFloat(x[i].d);
    for (int j = 0; j < kQK8_1; ++j) y[i * kQK8_1 + j] = x[i].qs[j] * d;
  }
}

void DequantizeQ4_K(const BlockQ4_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = HalfToFloat(x[i].d);
    const float min = HalfToFloat(x[i].dmin);
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < kQK_K; j += 64) {
      ScaleMinK4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc;
      const float m1 = min * m;
      ScaleMinK4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc;
      const float m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void DequantizeQ6_K(const BlockQ6_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const float d = HalfToFloat(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n128 = 0; n128 < kQK_K; n128 += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = static_cast<int8_t>((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int8_t q2 = static_cast<int8_t>((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int8_t q3 = static_cast<int8_t>((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int8_t q4 = static_cast<int8_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

void DequantizeQ8_K(const BlockQ8_K* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    for (int j = 0; j < kQK_K; ++j) y[i * kQK_K + j] = x[i].d * x[i].qs[j];
  }
}

}  // namespace

namespace scalar {

namespace {

// One block of 32 as ggml's x86 quantize_row_q8_0/q8_1: d = amax / 127, q = nearbyint(x * 127 /
// amax) (round half to even). Returns d; *sum gets the sum of the quants.
float QuantizeBlock8(const float* x, int8_t* qs, int* sum) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) {
    const float v = std::fabs(x[j]);
    amax = amax > v ? amax : v;
  }
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  *sum = 0;
  for (int j = 0; j < 32; ++j) {
    qs[j] = static_cast<int8_t>(std::nearbyintf(x[j] * id));
    *sum += qs[j];
  }
  return amax / ((1 << 7) - 1);
}

}  // namespace

void QuantizeRowQ8_0(const float* x, BlockQ8_0* y, int64_t n) {
  int sum = 0;
  for (int64_t i = 0; i < n / kQK8_0; ++i) {
    y[i].d = FloatToHalf(QuantizeBlock8(x + i * kQK8_0, y[i].qs, &sum));
  }
}

void QuantizeRowQ8_1(const float* x, BlockQ8_1* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK8_1; ++i) {
    int sum = 0;
    const float d = QuantizeBlock8(x + i * kQK8_1, y[i].qs, &sum);
    y[i].d = FloatToHalf(d);
    y[i].s = FloatToHalf(static_cast<float>(sum) * d);
  }
}

void QuantizeRowQ8_K(const float* x, BlockQ8_K* y, int64_t n) {
  for (int64_t i = 0; i < n / kQK_K; ++i, x += kQK_K) {
    float max = 0.0f;
    float amax = 0.0f;
    for (int j = 0; j < kQK_K; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    if (amax == 0.0f) {
      y[i].d = 0.0f;
      std::memset(y[i].qs, 0, sizeof(y[i].qs));
      std::memset(y[i].bsums, 0, sizeof(y[i].bsums));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kQK_K; ++j) {
      const int v = NearestInt(iscale * x[j]);
      y[i].qs[j] = static_cast<int8_t>(v < 127 ? v : 127);
    }
    for (int j = 0; j < kQK_K / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[j * 16 + l];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    y[i].d = 1 / iscale;
  }
}

}  // namespace scalar
}  // namespace cpu

DType VecDotType(DType weight) {
  switch (weight) {
    case DType::kQ4_0:
    case DType::kQ8_0:
      return DType::kQ8_0;
    case DType::kQ4_1:
      return DType::kQ8_1;
    case DType::kQ4_K:
    case DType::kQ6_K:
      return DType::kQ8_K;
    case DType::kF16:
      return DType::kF16;
    case DType::kBF16:
      return DType::kBF16;
    case DType::kF32:
      return DType::kF32;
    default:
      cpu::UnsupportedType("VecDotType", weight);
  }
}

void DequantizeRow(DType t, const void* x, float* y, int64_t n) {
  switch (t) {
    case DType::kF32:
      std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      return Fp16ToFp32Row(static_cast<const fp16_t*>(x), y, n);
    case DType::kBF16: {
      const auto* h = static_cast<const bf16_t*>(x);
      for (int64_t i = 0; i < n; ++i) y[i] = cpu::BF16ToFloat(h[i]);
      return;
    }
    case DType::kQ4_0:
      return cpu::DequantizeQ4_0(static_cast<const BlockQ4_0*>(x), y, n);
    case DType::kQ4_1:
      return cpu::DequantizeQ4_1(static_cast<const BlockQ4_1*>(x), y, n);
    case DType::kQ8_0:
      return cpu::DequantizeQ8_0(static_cast<const BlockQ8_0*>(x), y, n);
    case DType::kQ8_1:
      return cpu::DequantizeQ8_1(static_cast<const BlockQ8_1*>(x), y, n);
    case DType::kQ4_K:
      return cpu::DequantizeQ4_K(static_cast<const BlockQ4_K*>(x), y, n);
    case DType::kQ6_K:
      return cpu::DequantizeQ6_K(static_cast<const BlockQ6_K*>(x), y, n);
    case DType::kQ8_K:
      return cpu::DequantizeQ8_K(static_cast<const BlockQ8_K*>(x), y, n);
    default:
      cpu::UnsupportedType("DequantizeRow", t);
  }
}

void QuantizeRow(DType t, const float* x, void* y, int64_t n) {
  const bool avx2 = cpu::UseAvx2();
  switch (t) {
    case DType::kF32:
      std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      return Fp32ToFp16Row(x, static_cast<fp16_t*>(y), n);
    case DType::kBF16: {
      auto* h = static_cast<bf16_t*>(y);
      for (int64_t i = 0; i < n; ++i) h[i] = cpu::FloatToBF16(x[i]);
      return;
    }
    case DType::kQ8_0:
      if (avx2) return cpu::avx2::QuantizeRowQ8_0(x, static_cast<BlockQ8_0*>(y), n);
      return cpu::scalar::QuantizeRowQ8_0(x, static_cast<BlockQ8_0*>(y), n);
    case DType::kQ8_1:
      if (avx2) return cpu::avx2::QuantizeRowQ8_1(x, static_cast<BlockQ8_1*>(y), n);
      return cpu::scalar::QuantizeRowQ8_1(x, static_cast<BlockQ8_1*>(y), n);
    case DType::kQ8_K:
      return cpu::scalar::QuantizeRowQ8_K(x, static_cast<BlockQ8_K*>(y), n);
    default:
      cpu::UnsupportedType("QuantizeRow", t);
  }
}

void QuantizeRows(DType t, const float* x, void* y, int64_t k, int64_t m) {
  const size_t row_bytes = RowBytes(t, k);
  for (int64_t j = 0; j < m; ++j) {
    QuantizeRow(t, x + j * k, static_cast<uint8_t*>(y) + j * row_bytes, k);
  }
}

}  // namespace loom::kernels
