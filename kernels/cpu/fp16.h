// Portable half-precision conversions, inline for the kernels' inner loops. They give exactly what
// F16C's vcvtph2ps / vcvtps2ph (round to nearest even) give, NaN payloads included.
//
//   float f = loom::kernels::cpu::HalfToFloat(block.d);
//   block.d = loom::kernels::cpu::FloatToHalf(amax / 127.0f);
#pragma once

#include <bit>
#include <cstdint>

// The AVX2 files include this too: the inline namespace gives their copies other names, so the
// linker never hands the scalar path a copy compiled for AVX2.
#if defined(__AVX2__)
#define LOOM_KERNELS_ISA_NS isa_avx2
#else
#define LOOM_KERNELS_ISA_NS isa_base
#endif

namespace loom::kernels::cpu {
inline namespace LOOM_KERNELS_ISA_NS {

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    const float f = static_cast<float>(mant) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(f) | sign);
  }
  if (exp == 31) {
    // Inf, or NaN made quiet with its payload kept (as vcvtph2ps does).
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u));
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t FloatToHalf(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7FFFFFFFu;
  if (u > 0x7F800000u) {  // NaN: quiet, top payload bits kept
    return static_cast<uint16_t>(sign | 0x7E00u | ((u >> 13) & 0x3FFu));
  }
  if (u >= 0x47800000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65536 (or inf): inf
  if (u < 0x38800000u) {
    // Result is subnormal or zero: adding 0.5 puts the half's mantissa in the float's low bits
    // and lets the FPU round to nearest even.
    const float t = std::bit_cast<float>(u) + 0.5f;
    return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(t) - 0x3F000000u));
  }
  const uint32_t mant_odd = (u >> 13) & 1u;
  u += 0xC8000FFFu + mant_odd;  // rebias the exponent (-112 << 23) and round half to even
  return static_cast<uint16_t>(sign | (u >> 13));
}

inline float BF16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline uint16_t FloatToBF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 64u);  // quiet NaN
  return static_cast<uint16_t>((u + (0x7FFFu + ((u >> 16) & 1u))) >> 16);
}

}  // namespace LOOM_KERNELS_ISA_NS
}  // namespace loom::kernels::cpu
