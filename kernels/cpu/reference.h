// Naive reference versions of the kernels in kernels/kernels.h, for tests: plain loops, dequantize
// then compute in double, no tiling, no SIMD. They define what each kernel must compute; the tests
// in tests/kernels/cpu/ compare both CPU paths (AVX2 and scalar) against them.
//
//   std::vector<float> wf(k);
//   loom::kernels::ref::DequantizeRow(DType::kQ4_1, w_row, wf.data(), k);
//   double want = loom::kernels::ref::VecDot(DType::kQ4_1, k, w_row, x_row);  // x_row is Q8_1
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/kernels.h"

namespace loom::kernels::ref {

// IEEE half / bfloat16 conversions, round to nearest even, written from the definitions.
float Fp16ToFp32(fp16_t h);
fp16_t Fp32ToFp16(float f);
float Bf16ToFp32(bf16_t h);
bf16_t Fp32ToBf16(float f);

// Any type of dtype.h that kernels handle (F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q8_1, Q4_K, Q6_K,
// Q8_K) to f32, element by element from the block layout.
void DequantizeRow(DType t, const void* x, float* y, int64_t n);

// ggml's quantize_row_*_ref for Q4_0, Q4_1 (to make test weights), Q8_0, Q8_1, Q8_K, and F32, F16,
// BF16 (element-wise conversion).
void QuantizeRow(DType t, const float* x, void* y, int64_t n);

// Dot of a weight row with an activation row in VecDot type, in double: sum of dequantized
// products. For Q4_1 x Q8_1 the min term uses the block's stored s (d * sum(qs) rounded to fp16),
// as the format defines: sum_b [sum_j (d_w q_j)(d_x x_j) + m_w s_x].
double VecDot(DType w_type, int64_t k, const void* w_row, const void* x_row);
// Same with every product taken in absolute value: the scale for error tolerances.
double VecDotAbs(DType w_type, int64_t k, const void* w_row, const void* x_row);

// y[j * ldy + i] = VecDot(W row i, X row j), as kernels::MatMulRows.
void MatMulRows(DType w_type, const void* w, size_t w_row_bytes, int64_t k, const void* x,
                size_t x_row_bytes, int64_t m, float* y, int64_t ldy, int64_t row_begin,
                int64_t row_end);

void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);
void SwiGlu(const float* gate, const float* up, float* y, int64_t n);
void Add(const float* a, const float* b, float* y, int64_t n);
void Softmax(float* x, int64_t n);

// theta_i = pos * freq_scale * freq_base^(-2i/rope_dim), evaluated directly in double.
void Rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t pos,
          float freq_base, float freq_scale, RopeStyle style);

// q and the probabilities rounded to fp16 as kernels::AttentionHead; everything else in double.
void AttentionHead(const float* q, const fp16_t* k, const fp16_t* v, size_t kv_stride, int64_t n_kv,
                   int64_t head_dim, float scale, float* out);
// The paged form (kernels::AttentionHeadBlocks): gathers the rows, then AttentionHead.
void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale, float* out);

}  // namespace loom::kernels::ref
