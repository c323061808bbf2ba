// Shared helpers of the CPU kernel tests: a fixture parameterised by code path, and random inputs.
//
//   class MyTest : public PathTest {};
//   TEST_P(MyTest, Works) { ... kernels run on GetParam()'s path ... }
//   LOOM_INSTANTIATE_PATHS(MyTest);
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/internal.h"
#include "kernels/cpu/reference.h"
#include "kernels/kernels.h"

namespace loom::kernels::testing {

using cpu::Path;

class PathTest : public ::testing::TestWithParam<Path> {
 protected:
  void SetUp() override {
    saved_ = cpu::ActivePath();
    if (!cpu::SetPathForTesting(GetParam())) GTEST_SKIP() << "CPU lacks " << PathFeatures();
  }
  void TearDown() override { cpu::SetPathForTesting(saved_); }

 private:
  const char* PathFeatures() const {
    return GetParam() == Path::kAvx512 ? "AVX-512 F/BW/VL/VNNI" : "AVX2/FMA/F16C";
  }

  Path saved_ = Path::kScalar;
};

inline std::string PathName(const ::testing::TestParamInfo<Path>& info) {
  switch (info.param) {
    case Path::kAvx512:
      return "Avx512";
    case Path::kAvx2:
      return "Avx2";
    default:
      return "Scalar";
  }
}

#define LOOM_INSTANTIATE_PATHS(suite)                                                           \
  INSTANTIATE_TEST_SUITE_P(                                                                     \
      Paths, suite,                                                                             \
      ::testing::Values(::loom::kernels::cpu::Path::kScalar, ::loom::kernels::cpu::Path::kAvx2, \
                        ::loom::kernels::cpu::Path::kAvx512),                                   \
      ::loom::kernels::testing::PathName)

inline std::vector<float> RandomFloats(std::mt19937& rng, int64_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = dist(rng);
  return v;
}

// Activation-like values: normal, with a per-32 scale that varies and an occasional outlier.
inline std::vector<float> RandomActivations(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> scale(0.05f, 4.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 32) {
    const float s = scale(rng);
    for (int64_t j = i; j < n && j < i + 32; ++j) v[static_cast<size_t>(j)] = s * normal(rng);
  }
  if (n > 5) v[static_cast<size_t>(n / 3)] *= 20.0f;
  return v;
}

// A valid row of n elements of type t (weights): quantized from random values, or, for the
// k-quants, random bits with sane scales.
inline std::vector<uint8_t> RandomRow(std::mt19937& rng, DType t, int64_t n) {
  std::vector<uint8_t> row(RowBytes(t, n));
  if (t == DType::kQ4_K || t == DType::kQ6_K) {
    std::uniform_int_distribution<int> byte(0, 255);
    for (uint8_t& b : row) b = static_cast<uint8_t>(byte(rng));
    std::uniform_real_distribution<float> d(1e-4f, 2e-2f);
    for (int64_t b = 0; b < n / kQK_K; ++b) {
      if (t == DType::kQ4_K) {
        auto* blk = reinterpret_cast<BlockQ4_K*>(row.data()) + b;
        blk->d = ref::Fp32ToFp16(d(rng));
        blk->dmin = ref::Fp32ToFp16(d(rng));
      } else {
        auto* blk = reinterpret_cast<BlockQ6_K*>(row.data()) + b;
        blk->d = ref::Fp32ToFp16(d(rng));
      }
    }
    return row;
  }
  std::vector<float> x = RandomActivations(rng, n);
  if (t == DType::kQ4_1) {
    // Weights with a mean offset, so that the min term matters.
    for (float& f : x) f = 0.02f * f + 0.01f;
  }
  ref::QuantizeRow(t, x.data(), row.data(), n);
  return row;
}

// The activation row for weights of type w: random values quantized to VecDotType(w).
inline std::vector<uint8_t> RandomActRow(std::mt19937& rng, DType w, int64_t n) {
  const DType t = VecDotType(w);
  std::vector<uint8_t> row(RowBytes(t, n));
  const std::vector<float> x = RandomActivations(rng, n);
  ref::QuantizeRow(t, x.data(), row.data(), n);
  return row;
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace loom::kernels::testing
