// AttentionHead and AttentionHeadBlocks against the reference. Both round q and the probabilities
// to fp16; a probability that lands next to an fp16 rounding boundary may round the other way in
// one of them, so the tolerance is 2^-10 of max |v| (one fp16 ulp of a probability times the
// values), plus 1e-6.

#include <algorithm>
#include <cmath>

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
        ref::AttentionHeadBlocks(q.data(), kb.data(), vb.data(), head_offset, block_size,
                                 kv_stride, n_kv, head_dim, scale, want.data());
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

}  // namespace
}  // namespace loom::kernels::testing
