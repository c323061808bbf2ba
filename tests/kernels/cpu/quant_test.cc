// Quantization: bit-exact against ggml's reference quantizers on both paths (hence scalar == AVX2),
// round-trip error bounds, and dequantization of every type against the reference.

#include <cmath>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

// Rows that stress the quantizers: random, all zero, exact rounding ties, huge and tiny scales.
std::vector<std::vector<float>> TestRows(int64_t n) {
  std::vector<std::vector<float>> rows;
  std::mt19937 rng(static_cast<uint32_t>(n));
  rows.push_back(RandomActivations(rng, n));
  rows.push_back(RandomFloats(rng, n, -1e-3f, 1e-3f));
  rows.push_back(RandomFloats(rng, n, -3e4f, 3e4f));
  rows.push_back(std::vector<float>(static_cast<size_t>(n), 0.0f));
  // amax = 127 gives d = 1, id = 1: every x.5 is an exact tie, which must round away from zero.
  std::vector<float> ties(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    ties[static_cast<size_t>(i)] =
        (i % 32 == 0) ? 127.0f : static_cast<float>((i % 64) - 32) + 0.5f;
  }
  rows.push_back(ties);
  std::vector<float> neg = RandomActivations(rng, n);
  for (float& f : neg) f = -std::fabs(f);
  rows.push_back(neg);
  return rows;
}

class QuantTest : public PathTest {};

TEST_P(QuantTest, Q8MatchesGgmlReferenceBitExactly) {
  for (DType t : {DType::kQ8_0, DType::kQ8_1, DType::kQ8_K}) {
    const std::vector<int64_t> sizes = t == DType::kQ8_K
                                           ? std::vector<int64_t>{256, 512, 768, 1536}
                                           : std::vector<int64_t>{32, 64, 96, 576, 1536};
    for (int64_t n : sizes) {
      for (const std::vector<float>& x : TestRows(n)) {
        std::vector<uint8_t> got(RowBytes(t, n), 0xEE), want(RowBytes(t, n), 0xEE);
        QuantizeRow(t, x.data(), got.data(), n);
        ref::QuantizeRow(t, x.data(), want.data(), n);
        ASSERT_EQ(got, want) << DTypeName(t) << " n=" << n;
      }
    }
  }
}

TEST(QuantPathsTest, ScalarAndAvx2QuantizeIdentically) {
  const Path saved = cpu::ActivePath();
  for (DType t : {DType::kQ8_0, DType::kQ8_1}) {
    for (const std::vector<float>& x : TestRows(4096)) {
      std::vector<uint8_t> scalar(RowBytes(t, 4096)), avx2(RowBytes(t, 4096));
      ASSERT_TRUE(cpu::SetPathForTesting(Path::kScalar));
      QuantizeRows(t, x.data(), scalar.data(), 512, 8);
      if (!cpu::SetPathForTesting(Path::kAvx2)) GTEST_SKIP() << "no AVX2";
      QuantizeRows(t, x.data(), avx2.data(), 512, 8);
      EXPECT_EQ(scalar, avx2) << DTypeName(t);
    }
  }
  cpu::SetPathForTesting(saved);
}

TEST_P(QuantTest, Q8RoundTripWithinHalfAStep) {
  std::mt19937 rng(3);
  const int64_t n = 1024;
  for (DType t : {DType::kQ8_0, DType::kQ8_1, DType::kQ8_K}) {
    const std::vector<float> x = RandomActivations(rng, n);
    std::vector<uint8_t> q(RowBytes(t, n));
    QuantizeRow(t, x.data(), q.data(), n);
    std::vector<float> y(static_cast<size_t>(n));
    DequantizeRow(t, q.data(), y.data(), n);
    const int bs = BlockSize(t);
    for (int64_t b = 0; b < n / bs; ++b) {
      float amax = 0.0f;
      for (int j = 0; j < bs; ++j) amax = std::fmax(amax, std::fabs(x[b * bs + j]));
      // Q8_0/Q8_1 store d = amax / 127 as fp16 (relative error 2^-11, times up to 127 steps).
      const float step = amax / 127.0f;
      const float bound =
          t == DType::kQ8_K ? 0.5f * step * 1.0001f : step * (0.5f + 127.0f / 2048.0f) * 1.0001f;
      for (int j = 0; j < bs; ++j) {
        ASSERT_LE(std::fabs(y[b * bs + j] - x[b * bs + j]), bound) << DTypeName(t);
      }
    }
    if (t == DType::kQ8_K) {
      const auto* blk = reinterpret_cast<const BlockQ8_K*>(q.data());
      for (int64_t b = 0; b < n / 256; ++b) {
        for (int g = 0; g < 16; ++g) {
          int sum = 0;
          for (int j = 0; j < 16; ++j) sum += blk[b].qs[16 * g + j];
          EXPECT_EQ(blk[b].bsums[g], sum);
        }
      }
    }
  }
}

TEST_P(QuantTest, Q8_1StoresScaledSum) {
  // s = fp16(d * sum(qs)), with d the unrounded float scale (as ggml).
  std::mt19937 rng(11);
  const std::vector<float> x = RandomActivations(rng, 64);
  std::vector<BlockQ8_1> q(2);
  QuantizeRow(DType::kQ8_1, x.data(), q.data(), 64);
  for (int b = 0; b < 2; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[32 * b + j]));
    const float d = amax / 127;
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += q[b].qs[j];
    EXPECT_EQ(q[b].d, ref::Fp32ToFp16(d));
    EXPECT_EQ(q[b].s, ref::Fp32ToFp16(static_cast<float>(sum) * d));
  }
}

TEST_P(QuantTest, DequantizeMatchesReference) {
  std::mt19937 rng(5);
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ4_0, DType::kQ4_1, DType::kQ8_0,
                  DType::kQ8_1, DType::kQ4_K, DType::kQ6_K, DType::kQ8_K}) {
    const int64_t n = BlockSize(t) == 1 ? 77 : 4 * 256;
    std::vector<uint8_t> row;
    if (t == DType::kQ8_1 || t == DType::kQ8_K) {
      const std::vector<float> x = RandomActivations(rng, n);
      row.resize(RowBytes(t, n));
      ref::QuantizeRow(t, x.data(), row.data(), n);
    } else {
      row = RandomRow(rng, t, n);
    }
    std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    DequantizeRow(t, row.data(), got.data(), n);
    ref::DequantizeRow(t, row.data(), want.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(Bits(got[i]), Bits(want[i])) << DTypeName(t) << " element " << i;
    }
  }
}

TEST(QuantRefTest, Q4RoundTripWithinHalfAStep) {
  // The reference Q4 quantizers (used to make test weights) behave as ggml's.
  std::mt19937 rng(9);
  const int64_t n = 512;
  const std::vector<float> x = RandomActivations(rng, n);
  for (DType t : {DType::kQ4_0, DType::kQ4_1}) {
    std::vector<uint8_t> q(RowBytes(t, n));
    ref::QuantizeRow(t, x.data(), q.data(), n);
    std::vector<float> y(static_cast<size_t>(n));
    ref::DequantizeRow(t, q.data(), y.data(), n);
    for (int64_t b = 0; b < n / 32; ++b) {
      float lo = x[b * 32], hi = x[b * 32];
      for (int j = 0; j < 32; ++j) {
        lo = std::fmin(lo, x[b * 32 + j]);
        hi = std::fmax(hi, x[b * 32 + j]);
      }
      const float amax = std::fmax(std::fabs(lo), std::fabs(hi));
      const float step = t == DType::kQ4_0 ? amax / 8 : (hi - lo) / 15;
      // Q4_0 clamps the far end of the range to 15 (one extra step); fp16 d and m add 2^-11.
      const float bound = (t == DType::kQ4_0 ? 1.0f : 0.5f) * step + amax * (17.0f / 2048.0f);
      for (int j = 0; j < 32; ++j) ASSERT_LE(std::fabs(y[b * 32 + j] - x[b * 32 + j]), bound);
    }
  }
}

TEST(VecDotTypeTest, FollowsGgml) {
  EXPECT_EQ(VecDotType(DType::kQ4_0), DType::kQ8_0);
  EXPECT_EQ(VecDotType(DType::kQ8_0), DType::kQ8_0);
  EXPECT_EQ(VecDotType(DType::kQ4_1), DType::kQ8_1);
  EXPECT_EQ(VecDotType(DType::kQ4_K), DType::kQ8_K);
  EXPECT_EQ(VecDotType(DType::kQ6_K), DType::kQ8_K);
  EXPECT_EQ(VecDotType(DType::kF16), DType::kF16);
  EXPECT_EQ(VecDotType(DType::kBF16), DType::kBF16);
  EXPECT_EQ(VecDotType(DType::kF32), DType::kF32);
}

LOOM_INSTANTIATE_PATHS(QuantTest);

}  // namespace
}  // namespace loom::kernels::testing
