// Attention kernel benchmark (not a test): one GQA group of SmolLM2's shape (3 query heads per KV
// head, head_dim 64) over a paged fp16 cache, at several context lengths. Times
// AttentionRowsBlocks (one pass over K and V for all rows) against one AttentionHeadBlocks call
// per row, for a prefill task (3 heads x 16 tokens = 48 rows) and a decode step (3 rows), on the
// AVX2 path and, where the CPU has it, the AVX-512 path (both give the same bits); the variants
// take turns within each repetition and the medians are reported, so a busy machine skews them
// alike. One thread, thread CPU time. Writes JSON.
//
//   build/bench/attention/bench_attention --out bench/results/attention.json [--reps 7]
//       [--rows 48,3] [--lengths 512,2048,4096,8192]
// (row counts: 3 heads x tokens, token t seeing length + t positions)
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/internal.h"
#include "kernels/kernels.h"
#include "nlohmann/json.hpp"

namespace {

using loom::kernels::fp16_t;
using loom::kernels::cpu::Path;

double CpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path = "bench/results/attention.json";
  int reps = 7;
  std::vector<int> row_counts = {48, 3};
  std::vector<int> lengths = {512, 2048, 4096, 8192};
  // A comma-separated list of positive ints.
  auto parse_list = [](const char* s, std::vector<int>* out) {
    out->clear();
    for (const char* p = s; *p != '\0';) {
      char* end;
      const long x = std::strtol(p, &end, 10);
      if (end == p || x <= 0) break;
      out->push_back(static_cast<int>(x));
      p = *end == ',' ? end + 1 : end;
    }
  };
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out_path = argv[i + 1];
    if (std::strcmp(argv[i], "--reps") == 0) reps = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--rows") == 0) parse_list(argv[i + 1], &row_counts);
    if (std::strcmp(argv[i], "--lengths") == 0) parse_list(argv[i + 1], &lengths);
  }
  if (row_counts.empty() || lengths.empty()) {
    std::fprintf(stderr, "bench_attention: bad --rows or --lengths\n");
    return 1;
  }
  constexpr int kHd = 64, kKvHeads = 3, kGroup = 3, kBlock = 16;
  const int max_rows = *std::max_element(row_counts.begin(), row_counts.end());
  const int max_n = *std::max_element(lengths.begin(), lengths.end()) + max_rows / kGroup + 1;
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
  std::vector<float> q(static_cast<size_t>(max_rows) * kHd), out(q.size()), scores(max_n);
  for (float& x : q) x = u(rng);
  const float scale = 0.125f;
  const size_t head_offset = kHd;  // the middle KV head

  std::vector<Path> paths = {Path::kAvx2};
  if (loom::kernels::cpu::Avx512Supported()) paths.push_back(Path::kAvx512);
  if (!loom::kernels::cpu::Avx2Supported()) {
    std::fprintf(stderr, "bench_attention: the CPU lacks AVX2\n");
    return 1;
  }
  const char* path_names[] = {"scalar", "avx2", "avx512"};

  nlohmann::json result;
  result["threads"] = 1;
  result["head_dim"] = kHd;
  result["group"] = kGroup;
  result["reps"] = reps;
  std::printf(
      "attention, one thread, medians of %d; per-row = one AttentionHeadBlocks per row, "
      "grouped = AttentionRowsBlocks\n",
      reps);
  for (int n : lengths) {
    std::vector<const float*> qs(max_rows);
    std::vector<float*> os(max_rows);
    std::vector<int64_t> nk(max_rows);
    for (int r = 0; r < max_rows; ++r) {
      qs[r] = &q[static_cast<size_t>(r) * kHd];
      os[r] = &out[static_cast<size_t>(r) * kHd];
      nk[r] = n + r / kGroup;  // a prefill tile: each token sees one more position
    }
    auto per_row = [&](int n_rows) {
      for (int r = 0; r < n_rows; ++r) {
        loom::kernels::AttentionHeadBlocks(qs[r], kb.data(), vb.data(), head_offset, kBlock, stride,
                                           nk[r], kHd, scale, scores.data(), os[r]);
      }
    };
    auto grouped = [&](int n_rows) {
      loom::kernels::AttentionRowsBlocks(qs.data(), os.data(), nk.data(), n_rows, kb.data(),
                                         vb.data(), head_offset, kBlock, stride, kHd, scale);
    };
    nlohmann::json& j = result["lengths"][std::to_string(n)];
    for (int n_rows : row_counts) {
      const std::string what = n_rows == 48  ? "prefill_48_rows"
                               : n_rows == 3 ? "decode_3_rows"
                                             : std::to_string(n_rows) + "_rows";
      const int inner = std::max(1, 48 / n_rows) * std::max(1, 2048 / n);  // about equal work
      // times[path][0: per-row, 1: grouped]
      std::vector<std::vector<std::vector<double>>> times(paths.size(),
                                                          std::vector<std::vector<double>>(2));
      for (int rep = 0; rep < reps; ++rep) {
        for (size_t p = 0; p < paths.size(); ++p) {
          loom::kernels::cpu::SetPathForTesting(paths[p]);
          for (int g = 0; g < 2; ++g) {
            const double t0 = CpuSeconds();
            for (int i = 0; i < inner; ++i) g == 0 ? per_row(n_rows) : grouped(n_rows);
            times[p][g].push_back((CpuSeconds() - t0) / inner);
          }
        }
      }
      double flops = 0;
      for (int r = 0; r < n_rows; ++r) flops += 4.0 * static_cast<double>(nk[r]) * kHd;
      std::printf("  n_kv %5d %-16s", n, what.c_str());
      const double base = Median(times[0][1]);
      for (size_t p = 0; p < paths.size(); ++p) {
        const double pr = Median(times[p][0]), gr = Median(times[p][1]);
        std::printf("  %s: per-row %7.3f grouped %7.3f ms (%5.1f GFLOP/s)",
                    path_names[static_cast<int>(paths[p])], pr * 1e3, gr * 1e3, flops / gr / 1e9);
        j[what][path_names[static_cast<int>(paths[p])]] = {{"per_row_ms", pr * 1e3},
                                                           {"grouped_ms", gr * 1e3},
                                                           {"grouped_gflops", flops / gr / 1e9}};
      }
      if (paths.size() > 1) {
        const double speedup = base / Median(times[1][1]);
        std::printf("  avx512 %.2fx", speedup);
        j[what]["avx512_speedup"] = speedup;
      }
      std::printf("\n");
    }
  }
  std::ofstream(out_path) << result.dump(2) << "\n";
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
