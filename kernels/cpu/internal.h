// Internals of the CPU kernels: which code path runs, and the per-path entry points that the public
// functions of kernels/kernels.h dispatch to. Tests use SetPathForTesting to run every path:
//
//   if (loom::kernels::cpu::SetPathForTesting(loom::kernels::cpu::Path::kAvx2)) { ... }
//   loom::kernels::cpu::SetPathForTesting(loom::kernels::cpu::Path::kScalar);
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

namespace loom::kernels::cpu {

// Unaligned little-endian loads from quantized blocks (fp16 scales, 4 packed bytes).
inline uint16_t LoadU16(const void* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline int32_t LoadI32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// kAvx512 is the AVX2 path with the AVX-512 kernels where there are some (Q4 prefill, attention).
enum class Path { kScalar, kAvx2, kAvx512 };

// True when the binary has the AVX2 code and the CPU (and OS) support AVX2, FMA and F16C.
bool Avx2Supported();
// True when, in addition, the CPU (and OS) support AVX-512 F, BW, VL and VNNI.
bool Avx512Supported();
// The path in use: the widest supported, unless LOOM_FORCE_SCALAR=1 (scalar) or LOOM_NO_AVX512=1
// (at most AVX2), or what a test selected.
Path ActivePath();
// The AVX2 code runs on both the AVX2 and the AVX-512 path.
inline bool UseAvx2() { return ActivePath() != Path::kScalar; }
inline bool UseAvx512() { return ActivePath() == Path::kAvx512; }
// Selects `p` for the whole process (tests only); false, and no change, when `p` is unsupported.
bool SetPathForTesting(Path p);

// Reports a kernel called with a type it does not handle (a caller bug: load-time checks with
// IsSupported() exclude it) and aborts.
[[noreturn]] void UnsupportedType(const char* kernel, DType t);

// Per-thread scratch memory (grown as needed, 64-byte aligned, contents undefined); `slot` tells
// independent users apart. Lives in a scalar file so the AVX2 files need no std containers (their
// out-of-line template copies could otherwise be picked by the linker for the scalar path).
uint8_t* Scratch(int slot, size_t bytes);
enum ScratchSlot : int {
  kScratchAttnQ = 0,    // AttentionHeadBlocks: q rounded to fp16
  kScratchAttnAcc = 1,  // AttentionHeadBlocks: output accumulators
  kScratchMatX = 2,     // MatMulRows: activations repacked for the kernel
  kScratchMatTile = 3,  // MatMulRows: per-token-tile scale vectors
  kScratchMatW = 4,     // MatMulRows: weight scales (AVX-512: and quants) of a chunk of rows
  kScratchRowsQ = 5,    // AttentionRowsBlocks: the rows' q rounded to fp16
  kScratchRowsS = 6,    // AttentionRowsBlocks: the rows' scores / probabilities
  kScratchRowsKv = 7,   // AttentionRowsBlocks: one tile of K (transposed) or V in f32
};

// Dot of k elements of one weight row with one activation row (ggml's vec_dot_<w>_<x>).
using DotFn = float (*)(int64_t k, const void* w, const void* x);

// Portable code, bit-faithful to ggml's generic (non-SIMD) kernels.
namespace scalar {
void QuantizeRowQ8_0(const float* x, BlockQ8_0* y, int64_t n);
void QuantizeRowQ8_1(const float* x, BlockQ8_1* y, int64_t n);
void QuantizeRowQ8_K(const float* x, BlockQ8_K* y, int64_t n);
float DotQ4_0Q8_0(int64_t k, const void* w, const void* x);
float DotQ4_1Q8_1(int64_t k, const void* w, const void* x);
float DotQ8_0Q8_0(int64_t k, const void* w, const void* x);
float DotQ4_KQ8_K(int64_t k, const void* w, const void* x);
float DotQ6_KQ8_K(int64_t k, const void* w, const void* x);
float DotF32(int64_t k, const void* w, const void* x);
float DotF16(int64_t k, const void* w, const void* x);
float DotBF16(int64_t k, const void* w, const void* x);
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);
void SwiGlu(const float* gate, const float* up, float* y, int64_t n);
void Add(const float* a, const float* b, float* y, int64_t n);
void Softmax(float* x, int64_t n);
void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out);
void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale);
}  // namespace scalar

// AVX2 + FMA + F16C code (the *_avx2.cc files); call only when UseAvx2().
namespace avx2 {
void QuantizeRowQ8_0(const float* x, BlockQ8_0* y, int64_t n);
void QuantizeRowQ8_1(const float* x, BlockQ8_1* y, int64_t n);
void Fp32ToFp16Row(const float* x, fp16_t* y, int64_t n);
void Fp16ToFp32Row(const fp16_t* x, float* y, int64_t n);
float DotQ4_0Q8_0(int64_t k, const void* w, const void* x);
float DotQ4_1Q8_1(int64_t k, const void* w, const void* x);
float DotQ8_0Q8_0(int64_t k, const void* w, const void* x);
float DotF32(int64_t k, const void* w, const void* x);
float DotF16(int64_t k, const void* w, const void* x);
// MatMulRows for one weight type (kernels.h describes the arguments).
void MatMulQ4_0(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end);
void MatMulQ4_1(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end);
void MatMulQ8_0(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end);
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);
void SwiGlu(const float* gate, const float* up, float* y, int64_t n);
void Add(const float* a, const float* b, float* y, int64_t n);
void Softmax(float* x, int64_t n);
void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out);
void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale);
}  // namespace avx2

// AVX-512 F/BW/VL/VNNI code (the *_avx512.cc files); call only when UseAvx512().
namespace avx512 {
// MatMulRows for m >= 2 tokens (kernels.h describes the arguments); same bits as avx2::MatMulQ4_*.
void MatMulQ4_0(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end);
void MatMulQ4_1(const void* w, size_t w_row_bytes, int64_t k, const void* x, size_t x_row_bytes,
                int64_t m, float* y, int64_t ldy, int64_t row_begin, int64_t row_end);
// Same bits as avx2::Softmax, avx2::AttentionHeadBlocks and avx2::AttentionRowsBlocks.
void Softmax(float* x, int64_t n);
void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out);
void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale);
}  // namespace avx512

}  // namespace loom::kernels::cpu
