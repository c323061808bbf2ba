// Tensor element types as GGUF numbers them, with their block layouts.
//
// A quantized row of n elements is n / BlockSize(t) blocks of TypeSize(t) bytes:
//   size_t row_bytes = loom::kernels::RowBytes(DType::kQ4_1, 576);  // 18 blocks * 20 bytes
//   if (!loom::kernels::IsSupported(t)) { /* reject the tensor */ }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace loom::kernels {

// Values match ggml_type, which GGUF files store.
enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kBF16 = 30,
};

// Half-precision storage types (raw bits).
using fp16_t = uint16_t;
using bf16_t = uint16_t;

constexpr int kQK4_0 = 32;
constexpr int kQK4_1 = 32;
constexpr int kQK8_0 = 32;
constexpr int kQK8_1 = 32;
constexpr int kQK_K = 256;

// Block layouts, bit-identical to ggml's.
struct BlockQ4_0 {
  fp16_t d;                // scale
  uint8_t qs[kQK4_0 / 2];  // nibbles: low nibble = element j, high nibble = element j + 16
};
struct BlockQ4_1 {
  fp16_t d;  // scale
  fp16_t m;  // min
  uint8_t qs[kQK4_1 / 2];
};
struct BlockQ8_0 {
  fp16_t d;
  int8_t qs[kQK8_0];
};
struct BlockQ8_1 {
  fp16_t d;  // scale
  fp16_t s;  // d * sum(qs)
  int8_t qs[kQK8_1];
};
struct BlockQ4_K {
  fp16_t d;
  fp16_t dmin;
  uint8_t scales[12];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  fp16_t d;
};
struct BlockQ8_K {
  float d;
  int8_t qs[kQK_K];
  int16_t bsums[kQK_K / 16];
};
static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockQ8_K) == 292);

// True for the types Loom can load and compute with.
constexpr bool IsSupported(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ8_0:
    case DType::kQ4_K:
    case DType::kQ6_K:
      return true;
    default:
      return false;
  }
}

// Elements per block (1 for plain float types); 0 for an unknown type.
constexpr int BlockSize(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      return 1;
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
    case DType::kQ8_0:
    case DType::kQ8_1:
      return 32;
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
    case DType::kQ8_K:
      return kQK_K;
  }
  return 0;
}

// Bytes per block; 0 for an unknown type.
constexpr size_t TypeSize(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kQ4_0:
      return sizeof(BlockQ4_0);
    case DType::kQ4_1:
      return sizeof(BlockQ4_1);
    case DType::kQ5_0:
      return 22;
    case DType::kQ5_1:
      return 24;
    case DType::kQ8_0:
      return sizeof(BlockQ8_0);
    case DType::kQ8_1:
      return sizeof(BlockQ8_1);
    case DType::kQ2_K:
      return 84;
    case DType::kQ3_K:
      return 110;
    case DType::kQ4_K:
      return sizeof(BlockQ4_K);
    case DType::kQ5_K:
      return 176;
    case DType::kQ6_K:
      return sizeof(BlockQ6_K);
    case DType::kQ8_K:
      return sizeof(BlockQ8_K);
  }
  return 0;
}

// Bytes of a row of n elements; n must be a multiple of BlockSize(t).
constexpr size_t RowBytes(DType t, int64_t n) {
  return static_cast<size_t>(n / BlockSize(t)) * TypeSize(t);
}

constexpr std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
    case DType::kQ4_0:
      return "Q4_0";
    case DType::kQ4_1:
      return "Q4_1";
    case DType::kQ5_0:
      return "Q5_0";
    case DType::kQ5_1:
      return "Q5_1";
    case DType::kQ8_0:
      return "Q8_0";
    case DType::kQ8_1:
      return "Q8_1";
    case DType::kQ2_K:
      return "Q2_K";
    case DType::kQ3_K:
      return "Q3_K";
    case DType::kQ4_K:
      return "Q4_K";
    case DType::kQ5_K:
      return "Q5_K";
    case DType::kQ6_K:
      return "Q6_K";
    case DType::kQ8_K:
      return "Q8_K";
  }
  return "unknown";
}

}  // namespace loom::kernels
