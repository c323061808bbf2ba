// RmsNorm, SwiGlu, Add and Softmax against the double-precision references, with aliasing.

#include <cmath>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

const int64_t kSizes[] = {1, 3, 7, 8, 9, 17, 64, 576, 1000, 1536};

class NormTest : public PathTest {};

TEST_P(NormTest, RmsNormMatchesReference) {
  for (int64_t n : kSizes) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    const std::vector<float> x = RandomActivations(rng, n);
    const std::vector<float> w = RandomFloats(rng, n, -2.0f, 2.0f);
    std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    RmsNorm(x.data(), w.data(), got.data(), n, 1e-5f);
    ref::RmsNorm(x.data(), w.data(), want.data(), n, 1e-5f);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6f * std::fabs(want[i]) + 1e-30);
    std::vector<float> inplace = x;  // y aliases x
    RmsNorm(inplace.data(), w.data(), inplace.data(), n, 1e-5f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(inplace[i], got[i]);
  }
}

TEST_P(NormTest, SwiGluMatchesReference) {
  for (int64_t n : kSizes) {
    std::mt19937 rng(static_cast<uint32_t>(n) + 100);
    std::vector<float> g = RandomFloats(rng, n, -20.0f, 20.0f);
    const std::vector<float> u = RandomFloats(rng, n, -3.0f, 3.0f);
    // The exp overflow / underflow ranges.
    if (n >= 4) {
      g[0] = -200.0f;
      g[1] = 200.0f;
      g[2] = -88.0f;
      g[3] = 0.0f;
    }
    std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    SwiGlu(g.data(), u.data(), got.data(), n);
    ref::SwiGlu(g.data(), u.data(), want.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(got[i], want[i], 2e-6f * std::fabs(want[i]) + 1e-37) << "gate " << g[i];
    }
    std::vector<float> alias_gate = g, alias_up = u;
    SwiGlu(alias_gate.data(), u.data(), alias_gate.data(), n);
    SwiGlu(g.data(), alias_up.data(), alias_up.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(alias_gate[i], got[i]);
      ASSERT_EQ(alias_up[i], got[i]);
    }
  }
}

TEST_P(NormTest, AddIsExact) {
  for (int64_t n : kSizes) {
    std::mt19937 rng(static_cast<uint32_t>(n) + 200);
    std::vector<float> a = RandomActivations(rng, n), b = RandomActivations(rng, n);
    std::vector<float> want(static_cast<size_t>(n));
    ref::Add(a.data(), b.data(), want.data(), n);
    Add(a.data(), b.data(), a.data(), n);  // y aliases a
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], want[i]);
  }
}

TEST_P(NormTest, SoftmaxMatchesReference) {
  for (int64_t n : kSizes) {
    for (float range : {1.0f, 30.0f, 200.0f}) {
      std::mt19937 rng(static_cast<uint32_t>(n) + 300);
      std::vector<float> x = RandomFloats(rng, n, -range, range);
      std::vector<float> want = x;
      ref::Softmax(want.data(), n);
      Softmax(x.data(), n);
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_NEAR(x[i], want[i], 4e-6f * want[i] + 1e-37) << "n=" << n << " range=" << range;
        sum += x[i];
      }
      EXPECT_NEAR(sum, 1.0, 1e-5);
    }
  }
}

LOOM_INSTANTIATE_PATHS(NormTest);

}  // namespace
}  // namespace loom::kernels::testing
