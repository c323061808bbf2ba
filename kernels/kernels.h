// Every compute kernel Loom has, as stateless free functions. Backends call these; each has a naive
// reference in kernels/cpu/reference.h and a test comparing the two (tests/kernels/cpu/).
// The CPU versions pick AVX-512 VNNI, AVX2/FMA or scalar code once, at run time (AVX-512 is never
// required).
//
//   std::vector<uint8_t> xq(RowBytes(VecDotType(w.type), k) * m);
//   QuantizeRows(VecDotType(w.type), x, xq.data(), k, m);
//   MatMulRows(w.type, w.data, w.RowBytes(), k, xq.data(), RowBytes(VecDotType(w.type), k), m,
//              y, /*ldy=*/n_out, /*row_begin=*/0, /*row_end=*/n_out);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "kernels/dtype.h"

namespace loom::kernels {

// ---- CPU features ------------------------------------------------------------------------------
// Name of the code path in use: "avx512", "avx2" or "scalar". LOOM_FORCE_SCALAR=1 in the
// environment forces the scalar path, LOOM_NO_AVX512=1 at most the AVX2 one (for tests and
// comparisons).
std::string_view CpuPath();

// ---- Conversions -------------------------------------------------------------------------------
float Fp16ToFp32(fp16_t h);
fp16_t Fp32ToFp16(float f);  // round to nearest even, as F16C does
float Bf16ToFp32(bf16_t h);
bf16_t Fp32ToBf16(float f);  // round to nearest even
void Fp32ToFp16Row(const float* x, fp16_t* y, int64_t n);
void Fp16ToFp32Row(const fp16_t* x, float* y, int64_t n);

// ---- Quantization ------------------------------------------------------------------------------
// Any supported type to f32; n is a multiple of BlockSize(t).
void DequantizeRow(DType t, const void* x, float* y, int64_t n);
// The type activations take for dot products with weights of type `weight` (ggml's vec_dot_type):
// Q4_0/Q8_0 -> Q8_0, Q4_1 -> Q8_1, Q4_K/Q6_K -> Q8_K, F16 -> F16, BF16 -> BF16, F32 -> F32.
DType VecDotType(DType weight);
// f32 to `t` (one of the VecDotType results), bit-identical to ggml's quantize_row_*.
void QuantizeRow(DType t, const float* x, void* y, int64_t n);
// m rows of k elements, rows packed back to back in y (RowBytes(t, k) each).
void QuantizeRows(DType t, const float* x, void* y, int64_t k, int64_t m);

// ---- Dot products and matrix multiply ----------------------------------------------------------
// Dot of one weight row (type w_type) with one activation row already in VecDotType(w_type).
float VecDot(DType w_type, int64_t k, const void* w_row, const void* x_row);

// y[j * ldy + i] = dot(W row i, X row j) for i in [row_begin, row_end), j in [0, m).
// W: rows of w_row_bytes; X: m rows in VecDotType(w_type), x_row_bytes apart. The caller splits
// [0, n_out) across threads; the kernel tiles over rows and tokens so each weight block is read
// once per tile.
void MatMulRows(DType w_type, const void* w, size_t w_row_bytes, int64_t k, const void* x,
                size_t x_row_bytes, int64_t m, float* y, int64_t ldy, int64_t row_begin,
                int64_t row_end);

// ---- Elementwise and normalisation (f32) -------------------------------------------------------
// y = x / sqrt(mean(x^2) + eps) * weight; y may alias x.
void RmsNorm(const float* x, const float* weight, float* y, int64_t n, float eps);
// y = silu(gate) * up; y may alias either.
void SwiGlu(const float* gate, const float* up, float* y, int64_t n);
// y = a + b; y may alias either.
void Add(const float* a, const float* b, float* y, int64_t n);
// In-place softmax over n values (max-subtracted, f32 accumulation).
void Softmax(float* x, int64_t n);

// Rotary embedding, in place, for n_heads heads of head_dim at one position. kNorm rotates adjacent
// pairs (x[2i], x[2i+1]) as llama.cpp's LLAMA_ROPE_TYPE_NORM; kNeox rotates (x[i], x[i + d/2]).
// theta_i = pos * freq_scale * freq_base^(-2i/rope_dim), for 2i < rope_dim; other dims unchanged.
enum class RopeStyle { kNorm, kNeox };
void Rope(float* x, int64_t n_heads, int64_t head_dim, int64_t rope_dim, int64_t pos,
          float freq_base, float freq_scale, RopeStyle style);

// ---- Attention ---------------------------------------------------------------------------------
// One query head over n_kv cached positions of fp16 K and V (row t of K at k + t * kv_stride, same
// for V), as ggml's non-flash path computes it: q is rounded to fp16, scores = scale * (q . k_t) in
// f32, softmax, then the probabilities are rounded to fp16 and out = sum_t p_t * v_t (f32).
// `scores` is scratch of n_kv floats. Causality is the caller's: pass only visible positions.
void AttentionHead(const float* q, const fp16_t* k, const fp16_t* v, size_t kv_stride, int64_t n_kv,
                   int64_t head_dim, float scale, float* scores, float* out);
// The same over a paged cache: row t of K is k_blocks[t / block_size] + head_offset +
// (t % block_size) * kv_stride, likewise for V, so one array of block pointers per sequence and
// layer serves every head. Bit-identical to AttentionHead over the same rows (AttentionHead is the
// one-block case). k_blocks and v_blocks hold at least ceil(n_kv / block_size) pointers.
void AttentionHeadBlocks(const float* q, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t n_kv, int64_t head_dim, float scale,
                         float* scores, float* out);
// Several query rows over one head's paged K and V, read once for all of them: the query heads of
// a GQA group and consecutive tokens of one sequence. Row r sees positions [0, n_kv[r]) and
// writes head_dim floats to out[r], bit-identical to AttentionHeadBlocks on that row (the same
// additions in the same order). Scratch is the kernels' own (per thread).
//
//   const float* q[] = {q_h0, q_h1, q_h2};  float* out[] = {o_h0, o_h1, o_h2};
//   const int64_t n[] = {pos + 1, pos + 1, pos + 1};
//   AttentionRowsBlocks(q, out, n, 3, k_blocks, v_blocks, kvh * hd, bs, kv_dim, hd, scale);
void AttentionRowsBlocks(const float* const* q, float* const* out, const int64_t* n_kv,
                         int64_t n_rows, const fp16_t* const* k_blocks,
                         const fp16_t* const* v_blocks, size_t head_offset, int64_t block_size,
                         size_t kv_stride, int64_t head_dim, float scale);

}  // namespace loom::kernels
