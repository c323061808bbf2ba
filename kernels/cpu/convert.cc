// F16 / BF16 <-> F32 conversions.

#include "kernels/cpu/fp16.h"
#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {

float Fp16ToFp32(fp16_t h) { return cpu::HalfToFloat(h); }
fp16_t Fp32ToFp16(float f) { return cpu::FloatToHalf(f); }
float Bf16ToFp32(bf16_t h) { return cpu::BF16ToFloat(h); }
bf16_t Fp32ToBf16(float f) { return cpu::FloatToBF16(f); }

void Fp32ToFp16Row(const float* x, fp16_t* y, int64_t n) {
  if (cpu::UseAvx2()) return cpu::avx2::Fp32ToFp16Row(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = cpu::FloatToHalf(x[i]);
}

void Fp16ToFp32Row(const fp16_t* x, float* y, int64_t n) {
  if (cpu::UseAvx2()) return cpu::avx2::Fp16ToFp32Row(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = cpu::HalfToFloat(x[i]);
}

}  // namespace loom::kernels
