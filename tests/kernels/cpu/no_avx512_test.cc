// Run with LOOM_NO_AVX512=1 (set by CTest): the AVX2 path must be the one in use where the CPU has
// AVX2, even when it also has AVX-512.

#include <gtest/gtest.h>

#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace {

TEST(NoAvx512Test, EnvironmentSelectsAvx2) {
  if (!cpu::Avx2Supported()) GTEST_SKIP() << "CPU lacks AVX2/FMA/F16C";
  EXPECT_EQ(CpuPath(), "avx2");
}

}  // namespace
}  // namespace loom::kernels
