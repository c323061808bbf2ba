// Engine benchmark (not a test): prefill tok/s on a 512-token prompt and decode tok/s over 128
// tokens, at 1 and 2 threads, beside the machine's measured memory read bandwidth and the decode
// roofline it implies (bandwidth / weight bytes read per token). Writes JSON; bench/engine/run.py
// adds llama.cpp's figures on the same GGUF when llama-cpp-python is installed.
//
//   build/bench/engine/bench_engine --model models/SmolLM2-135M-Instruct.Q4_1.gguf --out r.json
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "engine/model/backend.h"
#include "engine/model/model.h"
#include "kernels/kernels.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Best of several passes reading a 512 MiB buffer with `threads` threads, in GB/s.
double MeasureBandwidth(int threads) {
  const size_t n = (512ull << 20) / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = i * 2654435761u;
  double best = 0;
  std::vector<uint64_t> sinks(threads);
  for (int pass = 0; pass < 5; ++pass) {
    auto t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t) {
      ts.emplace_back([&, t] {
        const size_t b = n * t / threads, e = n * (t + 1) / threads;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = b; i + 4 <= e; i += 4) {
          s0 += buf[i];
          s1 += buf[i + 1];
          s2 += buf[i + 2];
          s3 += buf[i + 3];
        }
        sinks[t] = s0 ^ s1 ^ s2 ^ s3;
      });
    }
    for (auto& th : ts) th.join();
    best = std::max(best, n * sizeof(uint64_t) / Seconds(t0, Clock::now()) / 1e9);
  }
  std::printf("  (checksum %llu)\n",
              static_cast<unsigned long long>(std::accumulate(sinks.begin(), sinks.end(), 0ull)));
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string out_path = "bench/results/engine_loom.json";
  int prefill_tokens = 512, decode_tokens = 128, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--model")
      model_path = argv[i + 1];
    else if (a == "--out")
      out_path = argv[i + 1];
    else if (a == "--prefill")
      prefill_tokens = std::atoi(argv[i + 1]);
    else if (a == "--decode")
      decode_tokens = std::atoi(argv[i + 1]);
    else if (a == "--reps")
      reps = std::atoi(argv[i + 1]);
  }
  auto model = loom::engine::Model::Load(model_path);
  if (!model.ok()) {
    std::fprintf(stderr, "bench_engine: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  const auto& cfg = (*model)->config();
  const double bytes_per_token = static_cast<double>((*model)->DecodeBytesPerToken());
  std::printf("model %s: %.1f MB read per decoded token; kernels: %s\n", cfg.name.c_str(),
              bytes_per_token / 1e6, std::string(loom::kernels::CpuPath()).c_str());

  nlohmann::json result;
  result["model"] = model_path;
  result["cpu_path"] = std::string(loom::kernels::CpuPath());
  result["bytes_per_token"] = bytes_per_token;
  result["prefill_tokens"] = prefill_tokens;
  result["decode_tokens"] = decode_tokens;
  // Deterministic pseudo-text prompt of ordinary token ids.
  std::vector<int32_t> prompt(prefill_tokens);
  for (int i = 0; i < prefill_tokens; ++i) prompt[i] = 1000 + (i * 7919) % 20000;

  for (int threads : {1, 2}) {
    std::printf("threads=%d: measuring bandwidth...\n", threads);
    const double bw = MeasureBandwidth(threads);
    auto backend = loom::engine::CreateBackend("cpu", **model, {.n_threads = threads});
    if (!backend.ok()) return 1;
    loom::engine::KvSequence kv(cfg, prefill_tokens + decode_tokens + 8);
    std::vector<float> logits;
    double best_prefill = 0, best_decode = 0;
    for (int r = 0; r < reps; ++r) {
      kv.Clear();
      loom::engine::SeqBatch pb{&kv, prompt, false};
      auto t0 = Clock::now();
      if (!(*backend)->Forward({&pb, 1}, &logits).ok()) return 1;
      auto t1 = Clock::now();
      best_prefill = std::max(best_prefill, prefill_tokens / Seconds(t0, t1));
      int32_t tok = 0;
      auto t2 = Clock::now();
      for (int i = 0; i < decode_tokens; ++i) {
        tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        loom::engine::SeqBatch db{&kv, std::span<const int32_t>(&tok, 1), false};
        if (!(*backend)->Forward({&db, 1}, &logits).ok()) return 1;
      }
      best_decode = std::max(best_decode, decode_tokens / Seconds(t2, Clock::now()));
    }
    const double roofline = bw * 1e9 / bytes_per_token;
    std::printf("threads=%d: bandwidth %.1f GB/s -> decode roofline %.0f tok/s\n", threads, bw,
                roofline);
    std::printf("threads=%d: prefill %.1f tok/s, decode %.1f tok/s = %.0f%% of roofline\n", threads,
                best_prefill, best_decode, 100.0 * best_decode / roofline);
    nlohmann::json& t = result["threads"][std::to_string(threads)];
    t["bandwidth_gbps"] = bw;
    t["decode_roofline_tok_s"] = roofline;
    t["prefill_tok_s"] = best_prefill;
    t["decode_tok_s"] = best_decode;
    t["decode_vs_roofline"] = best_decode / roofline;
  }
  std::ofstream(out_path) << result.dump(2) << "\n";
  std::printf("wrote %s\n", out_path.c_str());
  return 0;
}
