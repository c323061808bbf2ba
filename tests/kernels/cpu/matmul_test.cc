// MatMulRows against the reference for the decode (m = 1) and prefill (tiled) kernels: odd block
// counts, partial row ranges, ldy > n_out, and rows outside the range left untouched; and the
// AVX-512 VNNI prefill kernel against the AVX2 kernels, bit for bit.

#include <cmath>
#include <cstring>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

struct Shape {
  int64_t n_out, k, m;
};

void CheckMatMul(DType t, const Shape& s, int64_t row_begin, int64_t row_end) {
  std::mt19937 rng(static_cast<uint32_t>(s.n_out * 7 + s.k * 3 + s.m + static_cast<int>(t)));
  const size_t w_row_bytes = RowBytes(t, s.k);
  const DType xt = VecDotType(t);
  const size_t x_row_bytes = RowBytes(xt, s.k);
  std::vector<uint8_t> w;
  for (int64_t i = 0; i < s.n_out; ++i) {
    const std::vector<uint8_t> row = RandomRow(rng, t, s.k);
    w.insert(w.end(), row.begin(), row.end());
  }
  std::vector<uint8_t> x;
  for (int64_t j = 0; j < s.m; ++j) {
    const std::vector<uint8_t> row = RandomActRow(rng, t, s.k);
    x.insert(x.end(), row.begin(), row.end());
  }
  const int64_t ldy = s.n_out + 3;
  const float kSentinel = -12345.0f;
  std::vector<float> y(static_cast<size_t>(ldy * s.m), kSentinel);
  MatMulRows(t, w.data(), w_row_bytes, s.k, x.data(), x_row_bytes, s.m, y.data(), ldy, row_begin,
             row_end);
  for (int64_t j = 0; j < s.m; ++j) {
    for (int64_t i = 0; i < ldy; ++i) {
      const float got = y[static_cast<size_t>(j * ldy + i)];
      if (i < row_begin || i >= row_end) {
        ASSERT_EQ(got, kSentinel) << "row " << i << " outside the range was written";
        continue;
      }
      const uint8_t* wr = w.data() + i * w_row_bytes;
      const uint8_t* xr = x.data() + j * x_row_bytes;
      const double want = ref::VecDot(t, s.k, wr, xr);
      const double tol = 1e-5 * ref::VecDotAbs(t, s.k, wr, xr) + 1e-30;
      ASSERT_NEAR(got, want, tol) << DTypeName(t) << " n_out=" << s.n_out << " k=" << s.k
                                  << " m=" << s.m << " row " << i << " token " << j;
    }
  }
}

class MatMulTest : public PathTest {};

TEST_P(MatMulTest, QuantizedWeightsMatchReference) {
  const Shape shapes[] = {{16, 32, 1},   {37, 576, 1},  {24, 1536, 1}, {9, 544, 1},
                          {13, 2080, 1}, {19, 96, 2},   {33, 160, 3},  {40, 576, 4},
                          {17, 544, 7},  {21, 2080, 5}, {35, 576, 9},  {18, 256, 16}};
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
    for (const Shape& s : shapes) CheckMatMul(t, s, 0, s.n_out);
  }
}

TEST_P(MatMulTest, PartialRowRanges) {
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0}) {
    CheckMatMul(t, {50, 576, 1}, 3, 47);
    CheckMatMul(t, {50, 576, 6}, 17, 35);
    CheckMatMul(t, {50, 576, 6}, 49, 50);
  }
}

TEST_P(MatMulTest, OtherWeightTypesMatchReference) {
  for (DType t : {DType::kQ4_K, DType::kQ6_K, DType::kF32, DType::kF16, DType::kBF16}) {
    const int64_t k = BlockSize(t) == 1 ? 72 : 512;
    CheckMatMul(t, {11, k, 1}, 0, 11);
    CheckMatMul(t, {11, k, 5}, 2, 9);
  }
}

TEST_P(MatMulTest, BatchDoesNotChangeTheBits) {
  // A token's outputs are bit-identical whether it comes alone (m = 1, the decode kernel), in a
  // batch (the prefill tiles, at any position in a tile), through VecDot, or with any row range.
  std::mt19937 rng(21);
  for (DType t : {DType::kQ4_0, DType::kQ4_1, DType::kQ8_0, DType::kQ4_K, DType::kF16}) {
    for (int64_t k : {64, 544, 576}) {
      const int64_t kk = BlockSize(t) == 256 ? 512 : k;
      const int64_t n_out = 23, m = 10;
      std::vector<uint8_t> w, x;
      for (int64_t i = 0; i < n_out; ++i) {
        const std::vector<uint8_t> r = RandomRow(rng, t, kk);
        w.insert(w.end(), r.begin(), r.end());
      }
      for (int64_t j = 0; j < m; ++j) {
        const std::vector<uint8_t> r = RandomActRow(rng, t, kk);
        x.insert(x.end(), r.begin(), r.end());
      }
      const size_t wrb = RowBytes(t, kk), xrb = RowBytes(VecDotType(t), kk);
      std::vector<float> all(static_cast<size_t>(n_out * m)), one(static_cast<size_t>(n_out));
      MatMulRows(t, w.data(), wrb, kk, x.data(), xrb, m, all.data(), n_out, 0, n_out);
      for (int64_t j = 0; j < m; ++j) {
        MatMulRows(t, w.data(), wrb, kk, x.data() + j * xrb, xrb, 1, one.data(), n_out, 0, 5);
        MatMulRows(t, w.data(), wrb, kk, x.data() + j * xrb, xrb, 1, one.data(), n_out, 5, n_out);
        std::vector<float> sub(static_cast<size_t>(n_out * 3));
        const int64_t j0 = j < 2 ? 0 : j - 2;  // the token at another position of a tile
        MatMulRows(t, w.data(), wrb, kk, x.data() + j0 * xrb, xrb, 3, sub.data(), n_out, 1, n_out);
        for (int64_t i = 0; i < n_out; ++i) {
          const float got = all[static_cast<size_t>(j * n_out + i)];
          ASSERT_EQ(Bits(got), Bits(one[static_cast<size_t>(i)]))
              << DTypeName(t) << " k=" << kk << " row " << i << " token " << j;
          ASSERT_EQ(Bits(got), Bits(VecDot(t, kk, w.data() + i * wrb, x.data() + j * xrb)));
          if (i >= 1 && j - j0 < 3) {
            ASSERT_EQ(Bits(got), Bits(sub[static_cast<size_t>((j - j0) * n_out + i)]));
          }
        }
      }
    }
  }
}

LOOM_INSTANTIATE_PATHS(MatMulTest);

// Sets the n_qs quant bytes (from offset qs) of each block of block_bytes in rows[begin, end) to v.
void FillQuants(std::vector<uint8_t>& rows, size_t block_bytes, size_t qs, size_t n_qs,
                size_t begin, size_t end, uint8_t v) {
  for (size_t b = begin; b < end; b += block_bytes) std::memset(&rows[b + qs], v, n_qs);
}

TEST(MatMulAvx512Test, VnniKernelGivesTheAvx2Bits) {
  // The AVX-512 VNNI prefill kernel must give the AVX2 kernels' bits for every output: through
  // MatMulRows on each path, and called directly for every batch size (MatMulRows sends small ones
  // to the decode kernel), with odd block counts, row ranges not starting at 0, partial 16-row
  // tiles, and the extreme quants (all-15 nibbles against all -128 or 127).
  if (!cpu::Avx512Supported()) GTEST_SKIP() << "CPU lacks AVX-512 F/BW/VL/VNNI";
  struct RestorePath {
    Path saved = cpu::ActivePath();
    ~RestorePath() { cpu::SetPathForTesting(saved); }
  } restore;
  struct Range {
    int64_t begin, end;
  };
  // Row ranges of 32 + 5, 32, 16 + 9, 1 and 16 rows (the kernel takes 32 rows at a time).
  const Range ranges[] = {{0, 37}, {3, 35}, {2, 27}, {17, 18}, {5, 37}, {16, 32}};
  std::mt19937 rng(5);
  for (DType t : {DType::kQ4_0, DType::kQ4_1}) {
    const bool q4_0 = t == DType::kQ4_0;
    for (int64_t k : {32, 96, 544, 576, 1568}) {  // 1, 3, 17, 18 and 49 blocks
      const int64_t n_out = 37, max_m = 40;
      const size_t wrb = RowBytes(t, k), xrb = RowBytes(VecDotType(t), k);
      std::vector<uint8_t> w, x;
      for (int64_t i = 0; i < n_out; ++i) {
        const std::vector<uint8_t> r = RandomRow(rng, t, k);
        w.insert(w.end(), r.begin(), r.end());
      }
      for (int64_t j = 0; j < max_m; ++j) {
        const std::vector<uint8_t> r = RandomActRow(rng, t, k);
        x.insert(x.end(), r.begin(), r.end());
      }
      FillQuants(w, q4_0 ? 18 : 20, q4_0 ? 2 : 4, 16, 4 * wrb, 5 * wrb, 0xFF);
      FillQuants(x, q4_0 ? 34 : 36, q4_0 ? 2 : 4, 32, 2 * xrb, 3 * xrb, 0x80);
      FillQuants(x, q4_0 ? 34 : 36, q4_0 ? 2 : 4, 32, 6 * xrb, 7 * xrb, 0x7F);
      for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 9, 40}) {
        for (const Range& r : ranges) {
          const int64_t ldy = n_out + 2;
          auto run = [&](auto fn) {
            std::vector<float> y(static_cast<size_t>(ldy * m), -12345.0f);
            fn(w.data(), wrb, k, x.data(), xrb, m, y.data(), ldy, r.begin, r.end);
            return y;
          };
          auto matmul_rows = [&](Path p) {
            EXPECT_TRUE(cpu::SetPathForTesting(p));
            return run([t](auto... args) { MatMulRows(t, args...); });
          };
          const std::vector<float> want = matmul_rows(Path::kAvx2);
          const std::vector<float> got[] = {
              matmul_rows(Path::kAvx512),
              run(q4_0 ? cpu::avx512::MatMulQ4_0 : cpu::avx512::MatMulQ4_1),
              run(q4_0 ? cpu::avx2::MatMulQ4_0 : cpu::avx2::MatMulQ4_1)};
          for (const std::vector<float>& g : got) {
            for (size_t i = 0; i < want.size(); ++i) {
              ASSERT_EQ(Bits(g[i]), Bits(want[i]))
                  << DTypeName(t) << " k=" << k << " m=" << m << " rows [" << r.begin << ", "
                  << r.end << ") token " << i / ldy << " row " << i % ldy;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace loom::kernels::testing
