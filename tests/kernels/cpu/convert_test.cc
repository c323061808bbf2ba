// F16 / BF16 conversions: exhaustive over all 65536 halves, and over every float exponent and
// mantissa rounding pattern the other way; against the reference, and against F16C itself when the
// CPU has it.

#include <immintrin.h>

#include <cmath>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

__attribute__((target("f16c"))) uint16_t HardwareFp32ToFp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float HardwareFp16ToFp32(uint16_t h) { return _cvtsh_ss(h); }

bool HasF16c() { return __builtin_cpu_supports("f16c"); }

// Floats that exercise every exponent and every rounding case of the low 13 mantissa bits.
std::vector<float> InterestingFloats() {
  std::vector<float> v;
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> low13(0, 0x1FFF);
  const uint32_t lows[] = {0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF};
  for (uint32_t hi = 0; hi < (1u << 19); ++hi) {
    for (uint32_t lo : lows) v.push_back(FromBits((hi << 13) | lo));
    v.push_back(FromBits((hi << 13) | low13(rng)));
  }
  return v;
}

bool SameFloat(float a, float b) {
  return Bits(a) == Bits(b);  // NaNs included: the payload must match too
}

class ConvertTest : public PathTest {};

TEST_P(ConvertTest, Fp16ToFp32ExhaustiveMatchesReference) {
  std::vector<fp16_t> all(65536);
  for (uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<fp16_t>(h);
  std::vector<float> row(65536);
  Fp16ToFp32Row(all.data(), row.data(), 65536);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = ref::Fp16ToFp32(static_cast<fp16_t>(h));
    ASSERT_TRUE(SameFloat(Fp16ToFp32(static_cast<fp16_t>(h)), want)) << std::hex << h;
    ASSERT_TRUE(SameFloat(row[h], want)) << std::hex << h;
    if (HasF16c()) {
      ASSERT_TRUE(SameFloat(HardwareFp16ToFp32(static_cast<uint16_t>(h)), want)) << std::hex << h;
    }
  }
}

TEST_P(ConvertTest, Fp16RoundTripExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Fp16ToFp32(static_cast<fp16_t>(h));
    const fp16_t back = Fp32ToFp16(f);
    if (std::isnan(f)) {
      EXPECT_EQ(back, h | 0x0200) << std::hex << h;  // quiet NaN, same payload
    } else {
      EXPECT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST_P(ConvertTest, Fp32ToFp16MatchesReferenceAndF16c) {
  const std::vector<float> v = InterestingFloats();
  std::vector<fp16_t> row(v.size());
  Fp32ToFp16Row(v.data(), row.data(), static_cast<int64_t>(v.size()));
  const bool f16c = HasF16c();
  for (size_t i = 0; i < v.size(); ++i) {
    const fp16_t want = ref::Fp32ToFp16(v[i]);
    ASSERT_EQ(Fp32ToFp16(v[i]), want) << std::hex << Bits(v[i]);
    ASSERT_EQ(row[i], want) << std::hex << Bits(v[i]);
    if (f16c) {
      ASSERT_EQ(HardwareFp32ToFp16(v[i]), want) << std::hex << Bits(v[i]);
    }
  }
}

TEST_P(ConvertTest, Fp32ToFp16RowTails) {
  for (int64_t n : {0, 1, 7, 8, 9, 15, 17}) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    const std::vector<float> v = RandomFloats(rng, n, -70000.0f, 70000.0f);
    std::vector<fp16_t> row(static_cast<size_t>(n) + 1, 0xABCD);
    Fp32ToFp16Row(v.data(), row.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(row[i], ref::Fp32ToFp16(v[i]));
    EXPECT_EQ(row[static_cast<size_t>(n)], 0xABCD);  // nothing written past the end
  }
}

TEST_P(ConvertTest, Bf16MatchesReference) {
  for (uint32_t h = 0; h < 65536; ++h) {
    ASSERT_TRUE(
        SameFloat(Bf16ToFp32(static_cast<bf16_t>(h)), ref::Bf16ToFp32(static_cast<bf16_t>(h))));
  }
  for (float f : InterestingFloats()) {
    ASSERT_EQ(Fp32ToBf16(f), ref::Fp32ToBf16(f)) << std::hex << Bits(f);
  }
}

TEST_P(ConvertTest, SpecialValues) {
  EXPECT_EQ(Fp32ToFp16(65504.0f), 0x7BFF);
  EXPECT_EQ(Fp32ToFp16(65519.99f), 0x7BFF);
  EXPECT_EQ(Fp32ToFp16(65520.0f), 0x7C00);  // tie rounds to even: infinity
  EXPECT_EQ(Fp32ToFp16(-INFINITY), 0xFC00);
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(Fp32ToFp16(std::ldexp(1.5f, -25)), 0x0001);  // above the tie
  EXPECT_EQ(Fp32ToFp16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp: to even
  EXPECT_EQ(Fp32ToFp16(-0.0f), 0x8000);
  EXPECT_EQ(Fp32ToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie: down to even
  EXPECT_EQ(Fp32ToFp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie: up to even
  EXPECT_EQ(Fp32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(Fp32ToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
}

LOOM_INSTANTIATE_PATHS(ConvertTest);

TEST(CpuPathTest, ReportsThePathInUse) {
  const Path saved = cpu::ActivePath();
  ASSERT_TRUE(cpu::SetPathForTesting(Path::kScalar));
  EXPECT_EQ(CpuPath(), "scalar");
  if (cpu::SetPathForTesting(Path::kAvx2)) {
    EXPECT_EQ(CpuPath(), "avx2");
  }
  if (cpu::SetPathForTesting(Path::kAvx512)) {
    EXPECT_EQ(CpuPath(), "avx512");
  }
  cpu::SetPathForTesting(saved);
}

}  // namespace
}  // namespace loom::kernels::testing
