// DuoAttention's memory and decode speed against full attention, in one run on the same model:
// KV bytes per sequence at the model's full context, decode tokens/s there, and how many
// full-context sequences a fixed KV budget holds (the serving engine's accounting: paged blocks
// for the retrieval heads plus one fixed streaming cache per sequence). Writes JSON.
//
//   build/bench/duo_memory/bench_duo_memory --pattern config/duo_attention/x.json
//     --sparsity 0.5 --threads 2 --out bench/results/duo_memory.json
//
// Decode timing fills the cache synthetically (zeros, no prefill: a decode step's cost depends on
// how many positions it reads, not on their values), then times --steps decode steps.
// --passkey N adds a quality check: N passkey prompts of about --passkey-tokens tokens (the key at
// spread depths), greedy answers with full attention, with the pattern, and with the pattern
// inverted (gates 1 - g: the heads it rates highest stream), counting answers holding the key.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/kv_cache/kv_block_manager.h"
#include "engine/model/backend.h"
#include "engine/model/duo_pattern.h"
#include "engine/model/kv_sequence.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "tools/duo/passkey_prompt.h"

namespace {

using loom::engine::DuoLayout;

struct Result {
  int64_t bytes_per_seq = 0;
  double decode_tok_s = 0;
  int64_t max_seqs = 0;
};

Result Measure(loom::engine::Backend& backend, const loom::engine::Model& model,
               std::shared_ptr<const DuoLayout> duo, int ctx, int steps, int64_t budget,
               int block_size) {
  const auto& c = model.config();
  Result r;
  loom::engine::KvSequence kv(c, ctx, duo);
  if (loom::engine::StreamingKv* sk = kv.streaming()) {
    for (int l = 0; l < c.n_layers; ++l) {
      for (int p = 0; p < duo->window(); ++p) {
        std::fill_n(sk->K(l, p), duo->StreamingRowElems(l), loom::kernels::fp16_t{0});
        std::fill_n(sk->V(l, p), duo->StreamingRowElems(l), loom::kernels::fp16_t{0});
      }
    }
  }
  kv.Advance(ctx - steps);
  std::vector<float> logits;
  int32_t tok = 1;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) {
    loom::engine::SeqBatch b{&kv, std::span<const int32_t>(&tok, 1), false};
    if (!backend.Forward({&b, 1}, &logits).ok()) std::exit(1);
    tok = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  r.decode_tok_s =
      steps / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Bytes one full-context sequence holds in the engine: whole blocks, plus its streaming cache.
  const int64_t per_token =
      duo ? duo->RetrievalBytesPerToken() : loom::kv::KvBytesPerToken(c.n_layers, c.kv_dim());
  const int64_t blocks = (ctx + block_size - 1) / block_size;
  r.bytes_per_seq = blocks * block_size * per_token + (duo ? duo->StreamingBytesPerSequence() : 0);
  r.max_seqs = budget / r.bytes_per_seq;
  return r;
}

// Greedy answers (8 tokens) holding the key, out of the prompts.
int Passkey(loom::engine::Backend& backend, const loom::engine::Model& model,
            const loom::tokenizer::Tokenizer& tok, std::shared_ptr<const DuoLayout> duo, int n,
            int approx_tokens) {
  const int fillers = approx_tokens / 22;
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    const std::string key = std::to_string(10000 + (i * 7919 + 1237) % 90000);
    const int before = fillers * (i + 1) / (n + 1);
    const auto ids =
        tok.Encode(loom::duo::PasskeyPrompt(key, before, fillers - before), true, false);
    loom::engine::KvSequence kv(model.config(), static_cast<int>(ids.size()) + 8, duo);
    std::vector<float> logits;
    std::string text;
    for (size_t at = 0; at < ids.size(); at += 512) {
      const size_t m = std::min<size_t>(512, ids.size() - at);
      loom::engine::SeqBatch b{&kv, std::span<const int32_t>(ids.data() + at, m), false};
      if (!backend.Forward({&b, 1}, &logits).ok()) std::exit(1);
    }
    for (int step = 0; step < 8; ++step) {
      const int32_t t =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      text += tok.Decode(std::span<const int32_t>(&t, 1), false);
      loom::engine::SeqBatch b{&kv, std::span<const int32_t>(&t, 1), false};
      if (!backend.Forward({&b, 1}, &logits).ok()) std::exit(1);
    }
    ok += text.find(key) != std::string::npos;
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string pattern_path = "config/duo_attention/SmolLM2-135M-Instruct.Q4_1.json";
  std::string out = "bench/results/duo_memory.json";
  double sparsity = 0.5;
  int threads = 2, ctx = 0, steps = 32, passkey = 0, passkey_tokens = 2000;
  int64_t budget_mb = 1024;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--model")
      model_path = v;
    else if (a == "--pattern")
      pattern_path = v;
    else if (a == "--out")
      out = v;
    else if (a == "--sparsity")
      sparsity = std::atof(v);
    else if (a == "--threads")
      threads = std::atoi(v);
    else if (a == "--ctx")
      ctx = std::atoi(v);
    else if (a == "--steps")
      steps = std::atoi(v);
    else if (a == "--kv-budget-mb")
      budget_mb = std::atoll(v);
    else if (a == "--passkey")
      passkey = std::atoi(v);
    else if (a == "--passkey-tokens")
      passkey_tokens = std::atoi(v);
    else
      return std::fprintf(stderr, "unknown flag %s\n", a.c_str()), 2;
  }
  auto model = loom::engine::Model::Load(model_path);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  const auto& c = (*model)->config();
  if (ctx <= 0) ctx = c.context_length;
  auto pattern = loom::engine::DuoPattern::LoadJson(pattern_path);
  if (!pattern.ok()) return std::fprintf(stderr, "%s\n", pattern.status().ToString().c_str()), 1;
  auto duo = pattern->Layout(c, sparsity);
  if (!duo.ok()) return std::fprintf(stderr, "%s\n", duo.status().ToString().c_str()), 1;
  auto backend = loom::engine::CreateBackend("cpu", **model, {.n_threads = threads});
  if (!backend.ok()) return 1;
  const int64_t budget = budget_mb << 20;
  const int block_size = 16;
  Measure(**backend, **model, nullptr, 256, 4, budget, block_size);  // warm-up
  const Result full = Measure(**backend, **model, nullptr, ctx, steps, budget, block_size);
  const Result d = Measure(**backend, **model, *duo, ctx, steps, budget, block_size);
  nlohmann::json j;
  j["model"] = model_path;
  j["pattern"] = pattern_path;
  j["sparsity"] = sparsity;
  j["streaming_heads"] = (*duo)->TotalStreaming();
  j["kv_heads"] = c.n_layers * c.n_kv_heads;
  j["sink"] = (*duo)->sink();
  j["recent"] = (*duo)->recent();
  j["context"] = ctx;
  j["threads"] = threads;
  j["decode_steps"] = steps;
  j["kv_budget_bytes"] = budget;
  j["decode_cache"] = "synthetic (zeros), context - steps positions before timing";
  auto side = [](const Result& r) {
    return nlohmann::json{{"kv_bytes_per_sequence", r.bytes_per_seq},
                          {"decode_tok_s", r.decode_tok_s},
                          {"max_full_context_sequences", r.max_seqs}};
  };
  j["full"] = side(full);
  j["duo"] = side(d);
  j["ratio_duo_over_full"] = {
      {"kv_bytes_per_sequence", static_cast<double>(d.bytes_per_seq) / full.bytes_per_seq},
      {"decode_tok_s", d.decode_tok_s / full.decode_tok_s},
      {"max_full_context_sequences",
       full.max_seqs > 0 ? static_cast<double>(d.max_seqs) / full.max_seqs : 0.0}};
  if (passkey > 0) {
    auto tok = loom::tokenizer::Tokenizer::FromGguf((*model)->file());
    if (!tok.ok()) return 1;
    loom::engine::DuoPattern inverted = *pattern;
    for (float& g : inverted.gates) g = 1.0f - g;
    auto inv = inverted.Layout(c, sparsity);
    if (!inv.ok()) return 1;
    const int f = Passkey(**backend, **model, **tok, nullptr, passkey, passkey_tokens);
    const int p = Passkey(**backend, **model, **tok, *duo, passkey, passkey_tokens);
    const int q = Passkey(**backend, **model, **tok, *inv, passkey, passkey_tokens);
    j["passkey"] = {{"prompts", passkey},
                    {"approx_tokens", passkey_tokens},
                    {"full_correct", f},
                    {"duo_correct", p},
                    {"duo_inverted_gates_correct", q}};
    std::printf("passkey (~%d tokens, %d prompts): full %d, duo %d, duo with inverted gates %d\n",
                passkey_tokens, passkey, f, p, q);
  }
  std::ofstream(out) << j.dump(2) << "\n";
  std::printf("context %d, %d/%d heads streaming (sink %d, recent %d)\n", ctx,
              (*duo)->TotalStreaming(), c.n_layers * c.n_kv_heads, (*duo)->sink(),
              (*duo)->recent());
  std::printf("KV bytes/sequence: full %.1f MiB, duo %.1f MiB (x%.3f)\n",
              full.bytes_per_seq / 1048576.0, d.bytes_per_seq / 1048576.0,
              static_cast<double>(d.bytes_per_seq) / full.bytes_per_seq);
  std::printf("decode tok/s: full %.1f, duo %.1f (x%.2f)\n", full.decode_tok_s, d.decode_tok_s,
              d.decode_tok_s / full.decode_tok_s);
  std::printf("full-context sequences in %lld MiB: full %lld, duo %lld\n",
              static_cast<long long>(budget_mb), static_cast<long long>(full.max_seqs),
              static_cast<long long>(d.max_seqs));
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
