// Run with LOOM_FORCE_SCALAR=1 (set by CTest): the scalar path must be the one in use.

#include <gtest/gtest.h>

#include "kernels/kernels.h"

namespace loom::kernels {
namespace {

TEST(ForceScalarTest, EnvironmentSelectsScalar) { EXPECT_EQ(CpuPath(), "scalar"); }

}  // namespace
}  // namespace loom::kernels
