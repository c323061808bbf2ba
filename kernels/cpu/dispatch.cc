// Run-time choice between the AVX2 and scalar code paths.

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace cpu {
namespace {

bool DetectAvx2() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

bool ForcedScalar() {
  const char* v = std::getenv("LOOM_FORCE_SCALAR");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

std::atomic<int>& PathVar() {
  static std::atomic<int> path{
      static_cast<int>(Avx2Supported() && !ForcedScalar() ? Path::kAvx2 : Path::kScalar)};
  return path;
}

}  // namespace

bool Avx2Supported() {
  static const bool supported = DetectAvx2();
  return supported;
}

Path ActivePath() { return static_cast<Path>(PathVar().load(std::memory_order_relaxed)); }

void UnsupportedType(const char* kernel, DType t) {
  const std::string_view name = DTypeName(t);
  std::fprintf(stderr, "loom kernels: %s does not handle type %.*s (%u)\n", kernel,
               static_cast<int>(name.size()), name.data(), static_cast<unsigned>(t));
  std::abort();
}

bool SetPathForTesting(Path p) {
  if (p == Path::kAvx2 && !Avx2Supported()) return false;
  PathVar().store(static_cast<int>(p), std::memory_order_relaxed);
  return true;
}

}  // namespace cpu

std::string_view CpuPath() { return cpu::UseAvx2() ? "avx2" : "scalar"; }

}  // namespace loom::kernels
