// Run-time choice between the AVX-512, AVX2 and scalar code paths.

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

bool DetectAvx512() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
  return false;
#endif
}

// True when the environment variable `name` is set to anything but "" or "0".
bool EnvFlag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

Path DefaultPath() {
  if (!Avx2Supported() || EnvFlag("LOOM_FORCE_SCALAR")) return Path::kScalar;
  if (!Avx512Supported() || EnvFlag("LOOM_NO_AVX512")) return Path::kAvx2;
  return Path::kAvx512;
}

std::atomic<int>& PathVar() {
  static std::atomic<int> path{static_cast<int>(DefaultPath())};
  return path;
}

}  // namespace

bool Avx2Supported() {
  static const bool supported = DetectAvx2();
  return supported;
}

bool Avx512Supported() {
  static const bool supported = Avx2Supported() && DetectAvx512();
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
  if (p == Path::kAvx512 && !Avx512Supported()) return false;
  PathVar().store(static_cast<int>(p), std::memory_order_relaxed);
  return true;
}

}  // namespace cpu

std::string_view CpuPath() {
  switch (cpu::ActivePath()) {
    case cpu::Path::kAvx512:
      return "avx512";
    case cpu::Path::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

}  // namespace loom::kernels
