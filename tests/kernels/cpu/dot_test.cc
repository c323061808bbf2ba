// VecDot for every weight type against the reference (dequantize, multiply and sum in double).
// Tolerance: 1e-5 of the sum of |products| (float accumulation of up to a few hundred terms).

#include <cmath>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

std::vector<int64_t> SizesFor(DType t) {
  switch (BlockSize(t)) {
    case 1:
      return {1, 7, 8, 31, 32, 33, 64, 576, 1000};
    case 32:
      return {32, 64, 96, 160, 256, 544, 576, 1536, 2080};
    default:
      return {256, 512, 768, 1536};
  }
}

class DotTest : public PathTest {};

TEST_P(DotTest, MatchesReference) {
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K, DType::kF32,
                  DType::kF16, DType::kBF16}) {
    for (int64_t k : SizesFor(t)) {
      std::mt19937 rng(static_cast<uint32_t>(k * 31 + static_cast<int>(t)));
      for (int rep = 0; rep < 4; ++rep) {
        const std::vector<uint8_t> w = RandomRow(rng, t, k);
        const std::vector<uint8_t> x = RandomActRow(rng, t, k);
        const double want = ref::VecDot(t, k, w.data(), x.data());
        const double tol = 1e-5 * ref::VecDotAbs(t, k, w.data(), x.data()) + 1e-30;
        const float got = VecDot(t, k, w.data(), x.data());
        ASSERT_NEAR(got, want, tol) << DTypeName(t) << " k=" << k;
      }
    }
  }
}

TEST_P(DotTest, ZeroActivationsGiveZero) {
  std::mt19937 rng(1);
  for (DType t : {DType::kQ4_0, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K}) {
    const int64_t k = BlockSize(t) == 32 ? 96 : 512;
    const std::vector<uint8_t> w = RandomRow(rng, t, k);
    const std::vector<float> zeros(static_cast<size_t>(k), 0.0f);
    std::vector<uint8_t> x(RowBytes(VecDotType(t), k));
    QuantizeRow(VecDotType(t), zeros.data(), x.data(), k);
    EXPECT_EQ(VecDot(t, k, w.data(), x.data()), 0.0f) << DTypeName(t);
  }
}

LOOM_INSTANTIATE_PATHS(DotTest);

}  // namespace
}  // namespace loom::kernels::testing
