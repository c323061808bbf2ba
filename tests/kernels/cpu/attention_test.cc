// AttentionHead against the reference. Both round q and the probabilities to fp16; a probability
// that lands next to an fp16 rounding boundary may round the other way in one of them, so the
// tolerance is 2^-10 of max |v| (one fp16 ulp of a probability times the values), plus 1e-6.

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

LOOM_INSTANTIATE_PATHS(AttentionTest);

}  // namespace
}  // namespace loom::kernels::testing
