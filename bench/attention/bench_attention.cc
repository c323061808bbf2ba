// Attention kernel benchmark (not a test): one GQA group of SmolLM2's shape (3 query heads per KV
// head, head_dim 64) over a paged fp16 cache, at several context lengths. Times
// AttentionRowsBlocks (one pass over K and V for all rows) against the reference measured in the
// same run, one AttentionHeadBlocks call per row, for a prefill task (3 heads × 16 tokens = 48
// rows) and a decode step (3 rows), on one thread (thread CPU time, so a busy machine skews less),
// and reports the FLOP rate of each. Writes JSON.
//
//   build/bench/attention/bench_attention --out bench/results/attention.json
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "nlohmann/json.hpp"

namespace {

using loom::kernels::fp16_t;

double CpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// Best of `reps` timings of fn(), in seconds.
template <typename Fn>
double Best(int reps, Fn&& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = CpuSeconds();
    fn();
    best = std::min(best, CpuSeconds() - t0);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path = "bench/results/attention.json";
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out_path = argv[i + 1];
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
  }
  constexpr int kHd = 64, kKvHeads = 3, kGroup = 3, kTokens = 16, kBlock = 16;
  const std::vector<int> lengths = {512, 2048, 4096, 8192};
  const int max_n = lengths.back() + kTokens;
  const size_t stride = static_cast<size_t>(kKvHeads * kHd);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> tmp(static_cast<size_t>(max_n) * stride);
  std::vector<fp16_t> k(tmp.size()), v(tmp.size());
  for (float& x : tmp) x = u(rng);
  loom::kernels::Fp32ToFp16Row(tmp.data(), k.data(), static_cast<int64_t>(tmp.size()));
  for (float& x : tmp) x = u(rng);
  loom::kernels::Fp32ToFp16Row(tmp.data(), v.data(), static_cast<int64_t>(tmp.size()));
  // Blocks in reverse memory order, as a paged cache may hand them out.
  std::vector<const fp16_t*> kb, vb;
  const int n_blocks = (max_n + kBlock - 1) / kBlock;
  for (int b = 0; b < n_blocks; ++b) {
    const size_t off = static_cast<size_t>(n_blocks - 1 - b) * kBlock * stride;
    kb.push_back(k.data() + off);
    vb.push_back(v.data() + off);
  }
  const int rows = kGroup * kTokens;
  std::vector<float> q(static_cast<size_t>(rows) * kHd), out(q.size()), scores(max_n);
  for (float& x : q) x = u(rng);
  const float scale = 0.125f;
  const size_t head_offset = kHd;  // the middle KV head

  nlohmann::json result;
  result["threads"] = 1;
  result["head_dim"] = kHd;
  result["group"] = kGroup;
  result["kernel_path"] = std::string(loom::kernels::CpuPath());
  std::printf("attention, one thread, %s path; ratio = per-row reference time / grouped time\n",
              std::string(loom::kernels::CpuPath()).c_str());
  for (int n : lengths) {
    std::vector<const float*> qs(rows);
    std::vector<float*> os(rows);
    std::vector<int64_t> nk(rows);
    for (int t = 0; t < kTokens; ++t) {
      for (int h = 0; h < kGroup; ++h) {
        const int r = t * kGroup + h;
        qs[r] = &q[static_cast<size_t>(r) * kHd];
        os[r] = &out[static_cast<size_t>(r) * kHd];
        nk[r] = n + t;  // a prefill tile: each token sees one more position
      }
    }
    auto per_row = [&](int n_rows) {
      for (int r = 0; r < n_rows; ++r) {
        loom::kernels::AttentionHeadBlocks(qs[r], kb.data(), vb.data(), head_offset, kBlock,
                                           stride, nk[r], kHd, scale, scores.data(), os[r]);
      }
    };
    auto grouped = [&](int n_rows) {
      loom::kernels::AttentionRowsBlocks(qs.data(), os.data(), nk.data(), n_rows, kb.data(),
                                         vb.data(), head_offset, kBlock, stride, kHd, scale);
    };
    nlohmann::json& j = result["lengths"][std::to_string(n)];
    for (int n_rows : {rows, kGroup}) {
      const char* what = n_rows == rows ? "prefill_48_rows" : "decode_3_rows";
      const int inner = n_rows == rows ? 1 : 16;
      const double ref = Best(reps, [&] { for (int i = 0; i < inner; ++i) per_row(n_rows); }) / inner;
      const double got = Best(reps, [&] { for (int i = 0; i < inner; ++i) grouped(n_rows); }) / inner;
      double flops = 0;
      for (int r = 0; r < n_rows; ++r) flops += 4.0 * static_cast<double>(nk[r]) * kHd;
      std::printf("  n_kv %5d %-16s per-row %8.3f ms  grouped %8.3f ms  %.2fx  (%.1f -> %.1f GFLOP/s)\n",
                  n, what, ref * 1e3, got * 1e3, ref / got, flops / ref / 1e9, flops / got / 1e9);
      j[what] = {{"per_row_ms", ref * 1e3}, {"grouped_ms", got * 1e3}, {"speedup", ref / got},
                 {"per_row_gflops", flops / ref / 1e9}, {"grouped_gflops", flops / got / 1e9}};
    }
  }
  std::ofstream(out_path) << result.dump(2) << "\n";
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
