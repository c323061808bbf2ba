// AttentionHead, AttentionHeadBlocks and AttentionRowsBlocks against the reference, and the
// AVX-512 kernels against the AVX2 ones, bit for bit. The kernels and the reference both round q
// and the probabilities to fp16; a probability that lands next to an fp16 rounding boundary may
// round the other way in one of them, so the tolerance is 2^-10 of max |v| (one fp16 ulp of a
// probability times the values), plus 1e-6.

#include <algorithm>
#include <cmath>
#include <utility>

#include "tests/kernels/cpu/test_util.h"

namespace loom::kernels::testing {
namespace {

class AttentionTest : public PathTest {};

TEST_P(AttentionTest, MatchesReference) {
  for (int64_t head_dim : {64, 48, 80, 13, 128}) {
    for (int64_t n_kv : {1, 2, 7, 33, 300}) {
      std::mt19937 rng(static_cast<uint32_t>(head_dim * 1000 + n_kv));
      const size_t kv_stride = static_cast<size_t>(3 * head_dim);  // 3 KV heads interleaved
      const std::vector<float> q = RandomFloats(rng, head_dim, -2.0f, 2.0f);
      const std::vector<float> kf = RandomFloats(rng, n_kv * 3 * head_dim, -2.0f, 2.0f);
      const std::vector<float> vf = RandomFloats(rng, n_kv * 3 * head_dim, -1.5f, 1.5f);
      std::vector<fp16_t> k(kf.size()), v(vf.size());
      for (size_t i = 0; i < kf.size(); ++i) k[i] = ref::Fp32ToFp16(kf[i]);
      for (size_t i = 0; i < vf.size(); ++i) v[i] = ref::Fp32ToFp16(vf[i]);
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      const fp16_t* kh = k.data() + head_dim;  // the middle KV head
      const fp16_t* vh = v.data() + head_dim;
      std::vector<float> scores(static_cast<size_t>(n_kv)), got(static_cast<size_t>(head_dim));
      std::vector<float> want(static_cast<size_t>(head_dim));
      AttentionHead(q.data(), kh, vh, kv_stride, n_kv, head_dim, scale, scores.data(), got.data());
      ref::AttentionHead(q.data(), kh, vh, kv_stride, n_kv, head_dim, scale, want.data());
      for (int64_t d = 0; d < head_dim; ++d) {
        ASSERT_NEAR(got[d], want[d], 1.5 / 1024 + 1e-6)
            << "head_dim " << head_dim << " n_kv " << n_kv << " d " << d;
      }
    }
  }
}

// The paged form: rows scattered over blocks of several sizes (some not dividing n_kv), in an
// order unrelated to their positions. It must match the reference and be bit-identical to
// AttentionHead over the same rows laid out contiguously.
TEST_P(AttentionTest, BlocksMatchReferenceAndContiguous) {
  for (int64_t head_dim : {64, 48, 13}) {
    for (int64_t n_kv : {1, 7, 33, 100}) {
      for (int64_t block_size : {1, 4, 16, 5, 32}) {
        std::mt19937 rng(static_cast<uint32_t>(head_dim * 7919 + n_kv * 31 + block_size));
        const int64_t n_heads = 3;
        const size_t kv_stride = static_cast<size_t>(n_heads * head_dim);
        const int64_t n_blocks = (n_kv + block_size - 1) / block_size;
        const std::vector<float> q = RandomFloats(rng, head_dim, -2.0f, 2.0f);
        // A pool of 2 * n_blocks + 1 blocks; the sequence uses every other one, last first.
        const int64_t pool_blocks = 2 * n_blocks + 1;
        const size_t block_elems = static_cast<size_t>(block_size) * kv_stride;
        const std::vector<float> kf = RandomFloats(rng, pool_blocks * block_elems, -2.0f, 2.0f);
        const std::vector<float> vf = RandomFloats(rng, pool_blocks * block_elems, -1.5f, 1.5f);
        std::vector<fp16_t> k(kf.size()), v(vf.size());
        for (size_t i = 0; i < kf.size(); ++i) k[i] = ref::Fp32ToFp16(kf[i]);
        for (size_t i = 0; i < vf.size(); ++i) v[i] = ref::Fp32ToFp16(vf[i]);
        std::vector<const fp16_t*> kb(static_cast<size_t>(n_blocks)), vb(kb.size());
        for (int64_t b = 0; b < n_blocks; ++b) {
          const size_t id = static_cast<size_t>(2 * (n_blocks - 1 - b) + 1);
          kb[static_cast<size_t>(b)] = k.data() + id * block_elems;
          vb[static_cast<size_t>(b)] = v.data() + id * block_elems;
        }
        const size_t head_offset = static_cast<size_t>(head_dim);  // the middle KV head
        // The same rows, contiguous.
        std::vector<fp16_t> kc(static_cast<size_t>(n_kv) * kv_stride);
        std::vector<fp16_t> vc(kc.size());
        for (int64_t t = 0; t < n_kv; ++t) {
          const size_t src = static_cast<size_t>(t % block_size) * kv_stride;
          std::copy_n(kb[static_cast<size_t>(t / block_size)] + src, kv_stride,
                      kc.data() + t * kv_stride);
          std::copy_n(vb[static_cast<size_t>(t / block_size)] + src, kv_stride,
                      vc.data() + t * kv_stride);
        }
        const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        std::vector<float> scores(static_cast<size_t>(n_kv)), got(static_cast<size_t>(head_dim));
        std::vector<float> flat(got.size()), want(got.size());
        AttentionHeadBlocks(q.data(), kb.data(), vb.data(), head_offset, block_size, kv_stride,
                            n_kv, head_dim, scale, scores.data(), got.data());
        AttentionHead(q.data(), kc.data() + head_offset, vc.data() + head_offset, kv_stride, n_kv,
                      head_dim, scale, scores.data(), flat.data());
        ref::AttentionHeadBlocks(q.data(), kb.data(), vb.data(), head_offset, block_size, kv_stride,
                                 n_kv, head_dim, scale, want.data());
        for (int64_t d = 0; d < head_dim; ++d) {
          ASSERT_EQ(got[d], flat[d]) << "head_dim " << head_dim << " n_kv " << n_kv
                                     << " block_size " << block_size << " d " << d;
          ASSERT_NEAR(got[d], want[d], 1.5 / 1024 + 1e-6)
              << "head_dim " << head_dim << " n_kv " << n_kv << " block_size " << block_size;
        }
      }
    }
  }
}

TEST_P(AttentionTest, SinglePositionReturnsItsValue) {
  const int64_t hd = 64;
  std::mt19937 rng(4);
  const std::vector<float> q = RandomFloats(rng, hd, -1.0f, 1.0f);
  std::vector<fp16_t> k(hd), v(hd);
  for (int64_t d = 0; d < hd; ++d) {
    k[d] = Fp32ToFp16(0.1f * d);
    v[d] = Fp32ToFp16(0.25f * d - 3.0f);
  }
  float score;
  std::vector<float> out(hd);
  AttentionHead(q.data(), k.data(), v.data(), hd, 1, hd, 0.125f, &score, out.data());
  for (int64_t d = 0; d < hd; ++d) EXPECT_EQ(out[d], Fp16ToFp32(v[d]));
}

// Several rows at once (a GQA group over a run of tokens, each row seeing its own prefix), paged:
// every row must match the reference and be bit-identical to AttentionHeadBlocks on that row.
TEST_P(AttentionTest, RowsMatchReferencePerRow) {
  for (int64_t head_dim : {64, 48, 13, 128}) {
    for (int64_t n_rows : {1, 3, 5, 48}) {
      for (int64_t block_size : {16, 7}) {
        std::mt19937 rng(static_cast<uint32_t>(head_dim * 131 + n_rows * 17 + block_size));
        const int64_t max_n = 150;
        const size_t kv_stride = static_cast<size_t>(3 * head_dim);
        const int64_t n_blocks = (max_n + block_size - 1) / block_size;
        const size_t block_elems = static_cast<size_t>(block_size) * kv_stride;
        const std::vector<float> kf = RandomFloats(rng, n_blocks * block_elems, -2.0f, 2.0f);
        const std::vector<float> vf = RandomFloats(rng, n_blocks * block_elems, -1.5f, 1.5f);
        std::vector<fp16_t> k(kf.size()), v(vf.size());
        for (size_t i = 0; i < kf.size(); ++i) k[i] = ref::Fp32ToFp16(kf[i]);
        for (size_t i = 0; i < vf.size(); ++i) v[i] = ref::Fp32ToFp16(vf[i]);
        std::vector<const fp16_t*> kb, vb;
        for (int64_t b = n_blocks - 1; b >= 0; --b) {  // blocks in reverse memory order
          kb.push_back(k.data() + b * block_elems);
          vb.push_back(v.data() + b * block_elems);
        }
        const std::vector<float> qf = RandomFloats(rng, n_rows * head_dim, -2.0f, 2.0f);
        std::vector<float> got(qf.size(), -7.0f);
        std::vector<const float*> q;
        std::vector<float*> out;
        std::vector<int64_t> n_kv;
        for (int64_t r = 0; r < n_rows; ++r) {
          q.push_back(qf.data() + r * head_dim);
          out.push_back(got.data() + r * head_dim);
          n_kv.push_back(r == 0 ? max_n : 1 + static_cast<int64_t>(rng() % max_n));
        }
        const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        const size_t head_offset = static_cast<size_t>(2 * head_dim);  // the last KV head
        AttentionRowsBlocks(q.data(), out.data(), n_kv.data(), n_rows, kb.data(), vb.data(),
                            head_offset, block_size, kv_stride, head_dim, scale);
        std::vector<float> want(static_cast<size_t>(head_dim)), one(want.size());
        std::vector<float> scores(static_cast<size_t>(max_n));
        for (int64_t r = 0; r < n_rows; ++r) {
          ref::AttentionHeadBlocks(q[r], kb.data(), vb.data(), head_offset, block_size, kv_stride,
                                   n_kv[r], head_dim, scale, want.data());
          AttentionHeadBlocks(q[r], kb.data(), vb.data(), head_offset, block_size, kv_stride,
                              n_kv[r], head_dim, scale, scores.data(), one.data());
          for (int64_t d = 0; d < head_dim; ++d) {
            ASSERT_NEAR(out[r][d], want[d], 1.5 / 1024 + 1e-6)
                << "head_dim " << head_dim << " rows " << n_rows << " row " << r << " n_kv "
                << n_kv[r] << " d " << d;
            ASSERT_EQ(out[r][d], one[d]) << "head_dim " << head_dim << " row " << r;
          }
        }
      }
    }
  }
}

LOOM_INSTANTIATE_PATHS(AttentionTest);

// Values of both signs and magnitudes spread over 2^-12 .. 2^max_exp, so that the fp16 products
// of a dot are not all multiples of one power of two: with values of one magnitude (uniform in
// [-2, 2], say) most float sums of such products are exact, whatever their order, and would hide
// a change in the order of additions.
inline std::vector<float> WideFloats(std::mt19937& rng, int64_t n, int max_exp) {
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  std::uniform_int_distribution<int> exp(-12, max_exp - 1);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = std::ldexp(rng() % 2 ? mant(rng) : -mant(rng), exp(rng));
  return v;
}

// A paged fp16 K and V cache of n_heads heads: blocks of block_size rows, handed out in an order
// unrelated to memory (every other block of a larger pool, last first).
struct PagedKv {
  PagedKv(std::mt19937& rng, int64_t max_n, int64_t head_dim, int64_t n_heads, int64_t block_size)
      : stride(static_cast<size_t>(n_heads * head_dim)) {
    const int64_t n_blocks = std::max<int64_t>(1, (max_n + block_size - 1) / block_size);
    const size_t block_elems = static_cast<size_t>(block_size) * stride;
    const size_t pool = static_cast<size_t>(2 * n_blocks + 1) * block_elems;
    const std::vector<float> kf = WideFloats(rng, static_cast<int64_t>(pool), 1);
    const std::vector<float> vf = WideFloats(rng, static_cast<int64_t>(pool), 1);
    k.resize(pool);
    v.resize(pool);
    for (size_t i = 0; i < pool; ++i) {
      k[i] = ref::Fp32ToFp16(kf[i]);
      v[i] = ref::Fp32ToFp16(vf[i]);
    }
    for (int64_t b = 0; b < n_blocks; ++b) {
      const size_t id = static_cast<size_t>(2 * (n_blocks - 1 - b) + 1);
      kb.push_back(k.data() + id * block_elems);
      vb.push_back(v.data() + id * block_elems);
    }
  }
  size_t stride;
  std::vector<fp16_t> k, v;
  std::vector<const fp16_t*> kb, vb;
};

// Runs `fn` on the AVX2 path, then on the AVX-512 path, and returns both results.
template <typename Fn>
std::pair<std::vector<float>, std::vector<float>> OnBothPaths(Fn&& fn) {
  EXPECT_TRUE(cpu::SetPathForTesting(Path::kAvx2));
  std::vector<float> avx2 = fn();
  EXPECT_TRUE(cpu::SetPathForTesting(Path::kAvx512));
  std::vector<float> avx512 = fn();
  return {std::move(avx2), std::move(avx512)};
}

class AttentionAvx512Test : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cpu::Avx512Supported()) GTEST_SKIP() << "CPU lacks AVX-512 F/BW/VL/VNNI";
  }
  void TearDown() override { cpu::SetPathForTesting(saved_); }

 private:
  Path saved_ = cpu::ActivePath();
};

// The AVX-512 kernels must give the AVX2 kernels' bits for every output: AttentionRowsBlocks over
// row counts that take each of its routes (the direct one for a few rows, the tiled one for many,
// the AVX2 fallbacks for head dims they do not take), rows of equal length (decode), of one
// sequence's consecutive tokens (a prefill tile) and random lengths, several block sizes and head
// dims, and larger scores (probabilities down to fp16 subnormals and zero).
TEST_F(AttentionAvx512Test, RowsGiveTheAvx2Bits) {
  const int64_t n_heads = 3, max_n = 203;
  for (int64_t head_dim : {64, 32, 40, 48, 80, 96, 128, 8, 24, 136, 256, 13}) {
    for (int64_t block_size : {16, 1, 7, 32}) {
      for (int q_exp : {2, 5}) {
        std::mt19937 rng(static_cast<uint32_t>(head_dim * 977 + block_size * 13 + q_exp));
        const PagedKv kv(rng, max_n, head_dim, n_heads, block_size);
        const size_t head_offset = static_cast<size_t>((n_heads - 1) * head_dim);
        const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
        for (int64_t n_rows : {1, 2, 3, 4, 5, 6, 8, 9, 16, 17, 24, 48, 49, 64}) {
          for (int pattern = 0; pattern < 3; ++pattern) {
            const std::vector<float> qf = WideFloats(rng, n_rows * head_dim, q_exp);
            std::vector<const float*> q;
            std::vector<int64_t> n_kv;
            const int64_t base = 1 + static_cast<int64_t>(rng() % (max_n - n_rows / 3));
            for (int64_t r = 0; r < n_rows; ++r) {
              q.push_back(qf.data() + r * head_dim);
              // Decode (equal lengths), a prefill tile (3 heads x tokens), or random (0 included).
              n_kv.push_back(pattern == 0   ? base
                             : pattern == 1 ? base + r / 3
                                            : static_cast<int64_t>(rng() % (max_n + 1)));
            }
            const auto [want, got] = OnBothPaths([&] {
              std::vector<float> o(qf.size(), -7.0f);
              std::vector<float*> out;
              for (int64_t r = 0; r < n_rows; ++r) out.push_back(o.data() + r * head_dim);
              AttentionRowsBlocks(q.data(), out.data(), n_kv.data(), n_rows, kv.kb.data(),
                                  kv.vb.data(), head_offset, block_size, kv.stride, head_dim,
                                  scale);
              return o;
            });
            for (size_t i = 0; i < want.size(); ++i) {
              ASSERT_EQ(Bits(got[i]), Bits(want[i]))
                  << "head_dim " << head_dim << " block_size " << block_size << " q_exp " << q_exp
                  << " rows " << n_rows << " pattern " << pattern << " row "
                  << i / static_cast<size_t>(head_dim) << " n_kv "
                  << n_kv[i / static_cast<size_t>(head_dim)] << " d "
                  << i % static_cast<size_t>(head_dim);
            }
          }
        }
      }
    }
  }
}

// Every length from 1 to 200 (all residues mod 8, 16 and 64), for one head (AttentionHeadBlocks,
// AttentionHead, AttentionRowsBlocks with one row) and a decode step's GQA group of 3 rows.
TEST_F(AttentionAvx512Test, EveryLengthGivesTheAvx2Bits) {
  const int64_t n_heads = 3, max_n = 200;
  for (int64_t head_dim : {64, 40, 128}) {
    for (int64_t block_size : {16, 5}) {
      std::mt19937 rng(static_cast<uint32_t>(head_dim * 31 + block_size));
      const PagedKv kv(rng, max_n, head_dim, n_heads, block_size);
      const size_t head_offset = static_cast<size_t>(head_dim);  // the middle KV head
      const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      // The same rows, contiguous, for AttentionHead.
      std::vector<fp16_t> kc(static_cast<size_t>(max_n) * kv.stride), vc(kc.size());
      for (int64_t t = 0; t < max_n; ++t) {
        const size_t src = static_cast<size_t>(t % block_size) * kv.stride;
        std::copy_n(kv.kb[static_cast<size_t>(t / block_size)] + src, kv.stride,
                    kc.data() + t * kv.stride);
        std::copy_n(kv.vb[static_cast<size_t>(t / block_size)] + src, kv.stride,
                    vc.data() + t * kv.stride);
      }
      const std::vector<float> qf = WideFloats(rng, 3 * head_dim, 2);
      const float* q[] = {qf.data(), qf.data() + head_dim, qf.data() + 2 * head_dim};
      for (int64_t n = 1; n <= max_n; ++n) {
        const auto [want, got] = OnBothPaths([&] {
          std::vector<float> o(static_cast<size_t>(6 * head_dim), -7.0f);
          std::vector<float> scores(static_cast<size_t>(n));
          AttentionHeadBlocks(q[0], kv.kb.data(), kv.vb.data(), head_offset, block_size, kv.stride,
                              n, head_dim, scale, scores.data(), o.data());
          AttentionHead(q[0], kc.data() + head_offset, vc.data() + head_offset, kv.stride, n,
                        head_dim, scale, scores.data(), o.data() + head_dim);
          float* one[] = {o.data() + 2 * head_dim};
          AttentionRowsBlocks(q, one, &n, 1, kv.kb.data(), kv.vb.data(), head_offset, block_size,
                              kv.stride, head_dim, scale);
          float* three[] = {o.data() + 3 * head_dim, o.data() + 4 * head_dim,
                            o.data() + 5 * head_dim};
          const int64_t n3[] = {n, n, n};
          AttentionRowsBlocks(q, three, n3, 3, kv.kb.data(), kv.vb.data(), head_offset, block_size,
                              kv.stride, head_dim, scale);
          return o;
        });
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(Bits(got[i]), Bits(want[i]))
              << "head_dim " << head_dim << " block_size " << block_size << " n_kv " << n
              << " output " << i / static_cast<size_t>(head_dim) << " d "
              << i % static_cast<size_t>(head_dim);
        }
        // One head and its group's first row agree on either path.
        for (int64_t d = 0; d < head_dim; ++d) {
          for (int j = 1; j < 4; ++j) ASSERT_EQ(Bits(got[d + j * head_dim]), Bits(got[d]));
        }
      }
    }
  }
}

// Softmax on its own: every length to 100 and a few long rows, ordinary, wide (exp underflowing
// to subnormals and zero) and -inf (masked) inputs.
TEST_F(AttentionAvx512Test, SoftmaxGivesTheAvx2Bits) {
  std::mt19937 rng(11);
  std::vector<int64_t> lengths;
  for (int64_t n = 0; n <= 100; ++n) lengths.push_back(n);
  for (int64_t n : {255, 256, 257, 1000, 4099}) lengths.push_back(n);
  for (int64_t n : lengths) {
    for (float range : {4.0f, 120.0f}) {
      std::vector<float> x = RandomFloats(rng, n, -range, range);
      for (int64_t i = 3; i < n; i += 7) x[static_cast<size_t>(i)] = -INFINITY;
      const auto [want, got] = OnBothPaths([&] {
        std::vector<float> y = x;
        Softmax(y.data(), n);
        return y;
      });
      for (size_t i = 0; i < want.size(); ++i) {
        ASSERT_EQ(Bits(got[i]), Bits(want[i])) << "n " << n << " range " << range << " i " << i;
      }
    }
  }
}

}  // namespace
}  // namespace loom::kernels::testing
