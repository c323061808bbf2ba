// VecDot and MatMulRows: dispatch to the AVX-512 VNNI or AVX2 matmul kernels where there are some,
// else a tiled loop over the per-type dot products.

#include <cstdlib>
#include <memory>
#include <vector>

#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"

namespace loom::kernels {
namespace cpu {
namespace {

DotFn DotFor(DType w_type, bool avx2) {
  switch (w_type) {
    case DType::kQ4_0:
      return avx2 ? avx2::DotQ4_0Q8_0 : scalar::DotQ4_0Q8_0;
    case DType::kQ4_1:
      return avx2 ? avx2::DotQ4_1Q8_1 : scalar::DotQ4_1Q8_1;
    case DType::kQ8_0:
      return avx2 ? avx2::DotQ8_0Q8_0 : scalar::DotQ8_0Q8_0;
    case DType::kQ4_K:
      return scalar::DotQ4_KQ8_K;
    case DType::kQ6_K:
      return scalar::DotQ6_KQ8_K;
    case DType::kF32:
      return avx2 ? avx2::DotF32 : scalar::DotF32;
    case DType::kF16:
      return avx2 ? avx2::DotF16 : scalar::DotF16;
    case DType::kBF16:
      return scalar::DotBF16;
    default:
      return nullptr;
  }
}

// Rows in tiles small enough for L1, tokens inner: each tile of W is read from memory once.
void MatMulByDot(DotFn dot, const void* w, size_t w_row_bytes, int64_t k, const void* x,
                 size_t x_row_bytes, int64_t m, float* y, int64_t ldy, int64_t row_begin,
                 int64_t row_end) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* xb = static_cast<const uint8_t*>(x);
  const int64_t tile = w_row_bytes >= 8192 ? 1 : static_cast<int64_t>(8192 / w_row_bytes);
  for (int64_t r0 = row_begin; r0 < row_end; r0 += tile) {
    const int64_t r1 = r0 + tile < row_end ? r0 + tile : row_end;
    for (int64_t j = 0; j < m; ++j) {
      for (int64_t i = r0; i < r1; ++i) {
        y[j * ldy + i] = dot(k, wb + i * w_row_bytes, xb + j * x_row_bytes);
      }
    }
  }
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};

}  // namespace

uint8_t* Scratch(int slot, size_t bytes) {
  struct Buffer {
    std::unique_ptr<uint8_t, FreeDeleter> data;
    size_t size = 0;
  };
  thread_local std::vector<Buffer> buffers;
  if (static_cast<size_t>(slot) >= buffers.size()) buffers.resize(slot + 1);
  Buffer& b = buffers[slot];
  if (b.size < bytes) {
    const size_t size = (bytes + 63) / 64 * 64;
    b.data.reset(static_cast<uint8_t*>(std::aligned_alloc(64, size)));
    b.size = size;
  }
  return b.data.get();
}

}  // namespace cpu

float VecDot(DType w_type, int64_t k, const void* w_row, const void* x_row) {
  const cpu::DotFn dot = cpu::DotFor(w_type, cpu::UseAvx2());
  if (dot == nullptr) cpu::UnsupportedType("VecDot", w_type);
  return dot(k, w_row, x_row);
}

void MatMulRows(DType w_type, const void* w, size_t w_row_bytes, int64_t k, const void* x,
                size_t x_row_bytes, int64_t m, float* y, int64_t ldy, int64_t row_begin,
                int64_t row_end) {
  if (row_begin >= row_end || m <= 0) return;
  const bool avx2 = cpu::UseAvx2();
  // The AVX-512 VNNI kernel for Q4 from 2 tokens: it gives the AVX2 kernels' bits, so the choice
  // never changes a result, and beats the alternatives below already at m=2 (Q4_1 768x576, cached:
  // 35 us vs 2 x 22 us; 4 tokens: 41 us vs 89 us). One token stays on the AVX2 decode kernel.
  const bool vnni = cpu::UseAvx512() && (w_type == DType::kQ4_0 || w_type == DType::kQ4_1);
  if (vnni && m >= 2) {
    if (w_type == DType::kQ4_0) {
      return cpu::avx512::MatMulQ4_0(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin,
                                     row_end);
    }
    return cpu::avx512::MatMulQ4_1(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin,
                                   row_end);
  }
  // For a few tokens the one-token streaming kernel, once per token, beats the 4-token tiles:
  // measured on Q4_1 1536x576 (0.5 MB, stays in cache) m=2 takes 160 us in tiles vs 2 x 26 us, and
  // the tiles win only from about m=12; on the 30 MB Q8_0 output matrix, re-read from memory per
  // token, they win from m=4. Both give the same bits for a token, so the choice never changes a
  // result.
  const bool cached = static_cast<size_t>(row_end - row_begin) * w_row_bytes <= (2u << 20);
  const int64_t min_tiled_tokens = cached ? 12 : 4;
  if (avx2 && m > 1 && m < min_tiled_tokens) {
    for (int64_t j = 0; j < m; ++j) {
      MatMulRows(w_type, w, w_row_bytes, k, static_cast<const uint8_t*>(x) + j * x_row_bytes,
                 x_row_bytes, 1, y + j * ldy, ldy, row_begin, row_end);
    }
    return;
  }
  if (avx2) {
    switch (w_type) {
      case DType::kQ4_0:
        return cpu::avx2::MatMulQ4_0(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin,
                                     row_end);
      case DType::kQ4_1:
        return cpu::avx2::MatMulQ4_1(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin,
                                     row_end);
      case DType::kQ8_0:
        return cpu::avx2::MatMulQ8_0(w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin,
                                     row_end);
      default:
        break;
    }
  }
  const cpu::DotFn dot = cpu::DotFor(w_type, avx2);
  if (dot == nullptr) cpu::UnsupportedType("MatMulRows", w_type);
  cpu::MatMulByDot(dot, w, w_row_bytes, k, x, x_row_bytes, m, y, ldy, row_begin, row_end);
}

}  // namespace loom::kernels
