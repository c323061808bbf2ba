// Rope against theta_i = pos * freq_scale * base^(-2i/rope_dim) evaluated directly in double.
// The kernel builds the angles as ggml does, by repeated float multiplication, so the angle of
// pair i carries up to ~(i + 2) float roundings: the tolerance scales with theta * (i + 3) * 2^-23.

#include <cmath>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

class RopeTest : public PathTest {};

TEST_P(RopeTest, MatchesDirectFormula) {
  const int64_t n_heads = 3;
  for (RopeStyle style : {RopeStyle::kNorm, RopeStyle::kNeox}) {
    for (int64_t head_dim : {64, 128}) {
      for (int64_t rope_dim : {head_dim, head_dim / 2}) {
        for (int64_t pos : {0, 1, 5, 100, 1000, 8191}) {
          for (float base : {10000.0f, 100000.0f}) {
            for (float fscale : {1.0f, 0.25f}) {
              std::mt19937 rng(static_cast<uint32_t>(pos + head_dim + rope_dim));
              const std::vector<float> x = RandomFloats(rng, n_heads * head_dim, -3.0f, 3.0f);
              std::vector<float> got = x, want = x;
              Rope(got.data(), n_heads, head_dim, rope_dim, pos, base, fscale, style);
              ref::Rope(want.data(), n_heads, head_dim, rope_dim, pos, base, fscale, style);
              for (int64_t h = 0; h < n_heads; ++h) {
                for (int64_t i = 0; 2 * i < rope_dim; ++i) {
                  const int64_t a = h * head_dim + (style == RopeStyle::kNorm ? 2 * i : i);
                  const int64_t b =
                      h * head_dim + (style == RopeStyle::kNorm ? 2 * i + 1 : i + rope_dim / 2);
                  const double theta = pos * fscale * std::pow(double{base}, -2.0 * i / rope_dim);
                  const double angle_err = theta * (i + 3) * std::ldexp(1.0, -23) + 2e-7;
                  const double tol = (std::fabs(x[a]) + std::fabs(x[b])) * angle_err + 1e-6;
                  ASSERT_NEAR(got[a], want[a], tol) << "pos " << pos << " pair " << i;
                  ASSERT_NEAR(got[b], want[b], tol) << "pos " << pos << " pair " << i;
                }
                for (int64_t d = rope_dim; d < head_dim; ++d) {
                  // Dimensions past rope_dim are left alone in both styles.
                  ASSERT_EQ(got[h * head_dim + d], x[h * head_dim + d]);
                }
              }
              if (pos == 0) {
                EXPECT_EQ(got, x);
              }
            }
          }
        }
      }
    }
  }
}

TEST_P(RopeTest, NormRotatesAdjacentPairsNeoxHalves) {
  // One head, rope_dim 4, pos 1, base 1: every angle is 1 radian.
  std::vector<float> x = {1, 0, 0, 0, 7};
  Rope(x.data(), 1, 5, 4, 1, 1.0f, 1.0f, RopeStyle::kNorm);
  EXPECT_NEAR(x[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(1.0), 1e-6);
  EXPECT_EQ(x[4], 7.0f);
  std::vector<float> y = {1, 0, 0, 0, 7};
  Rope(y.data(), 1, 5, 4, 1, 1.0f, 1.0f, RopeStyle::kNeox);
  EXPECT_NEAR(y[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(y[2], std::sin(1.0), 1e-6);
  EXPECT_EQ(y[1], 0.0f);
}

LOOM_INSTANTIATE_PATHS(RopeTest);

}  // namespace
}  // namespace loom::kernels::testing
