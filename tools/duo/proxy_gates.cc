// A cheap PROXY for DuoAttention's per-head gates, NOT the paper's optimisation (which trains a
// gate per KV head with an L2 loss on the final hidden states; that is tools/duo_calibrate).
// For each (layer, KV head) alone, the head is made a streaming head (small sink and recent
// window) and the model is run on passkey prompts (the passkey far outside the window); the gate
// is how much the logits of the prompt's last positions move, relative to full attention:
//   dev(l, h) = mean over prompts and scored positions of |z_ablated - z_full|_2 / |z_full|_2
//   gate(l, h) = dev(l, h) / max dev      (in [0, 1]; high = the head needs the full context)
// Writes the reference's full_attention_heads.tsv shape (one row per layer, one tab-separated
// column per KV head).
//
//   build/tools/duo/duo_proxy_gates --model models/SmolLM2-135M-Instruct.Q4_1.gguf
//     --out config/duo_attention/SmolLM2-135M-Instruct.Q4_1.proxy.tsv [--threads 2]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/backend.h"
#include "engine/model/duo_layout.h"
#include "engine/model/kv_sequence.h"
#include "engine/model/model.h"
#include "engine/tokenizer/tokenizer.h"
#include "tools/duo/passkey_prompt.h"

namespace {

using loom::engine::DuoLayout;
using loom::engine::KvSequence;

constexpr int kSink = 16, kRecent = 64, kScored = 48;

// Logits of the last kScored positions.
std::vector<float> Score(loom::engine::Backend& backend, const loom::engine::Model& model,
                         std::shared_ptr<const DuoLayout> duo, const std::vector<int32_t>& ids) {
  KvSequence kv(model.config(), static_cast<int>(ids.size()), std::move(duo));
  const size_t head = ids.size() - kScored;
  std::vector<float> logits;
  for (size_t at = 0; at < head; at += 512) {
    const size_t n = std::min<size_t>(512, head - at);
    loom::engine::SeqBatch b{&kv, std::span<const int32_t>(ids.data() + at, n), false};
    if (!backend.Forward({&b, 1}, &logits).ok()) std::exit(1);
  }
  loom::engine::SeqBatch b{&kv, std::span<const int32_t>(ids.data() + head, kScored), true};
  if (!backend.Forward({&b, 1}, &logits).ok()) std::exit(1);
  return logits;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
  std::string out = "config/duo_attention/SmolLM2-135M-Instruct.Q4_1.proxy.tsv";
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model")
      model_path = argv[i + 1];
    else if (a == "--out")
      out = argv[i + 1];
    else if (a == "--threads")
      threads = std::atoi(argv[i + 1]);
  }
  auto model = loom::engine::Model::Load(model_path);
  if (!model.ok()) return std::fprintf(stderr, "%s\n", model.status().ToString().c_str()), 1;
  auto tok = loom::tokenizer::Tokenizer::FromGguf((*model)->file());
  auto backend = loom::engine::CreateBackend("cpu", **model, {.n_threads = threads});
  if (!tok.ok() || !backend.ok()) return 1;
  const loom::engine::ModelConfig& c = (*model)->config();
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& [key, before, after] :
       std::vector<std::tuple<std::string, int, int>>{{"68521", 3, 40}, {"90173", 12, 30}}) {
    prompts.push_back((*tok)->Encode(loom::duo::PasskeyPrompt(key, before, after) + " " + key + ".",
                                     true, false));
    std::fprintf(stderr, "prompt %zu: %zu tokens\n", prompts.size(), prompts.back().size());
  }
  std::vector<std::vector<float>> full;
  for (const auto& p : prompts) full.push_back(Score(**backend, **model, nullptr, p));
  std::vector<double> dev(static_cast<size_t>(c.n_layers) * c.n_kv_heads, 0.0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int l = 0; l < c.n_layers; ++l) {
    for (int h = 0; h < c.n_kv_heads; ++h) {
      std::vector<bool> streaming(dev.size(), false);
      const size_t i = static_cast<size_t>(l) * c.n_kv_heads + h;
      streaming[i] = true;
      auto duo = DuoLayout::Create(c, streaming, kSink, kRecent);
      if (!duo.ok()) return 1;
      double sum = 0;
      int n = 0;
      for (size_t pi = 0; pi < prompts.size(); ++pi) {
        const std::vector<float> z = Score(**backend, **model, *duo, prompts[pi]);
        for (int r = 0; r < kScored; ++r) {
          double num = 0, den = 0;
          for (int v = 0; v < c.vocab_size; ++v) {
            const double a = z[static_cast<size_t>(r) * c.vocab_size + v];
            const double b = full[pi][static_cast<size_t>(r) * c.vocab_size + v];
            num += (a - b) * (a - b);
            den += b * b;
          }
          sum += std::sqrt(num / den);
          ++n;
        }
      }
      dev[i] = sum / n;
    }
    std::fprintf(stderr, "layer %d done (%.0f s)\n", l,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  double max_dev = 0;
  for (double d : dev) max_dev = std::max(max_dev, d);
  std::ofstream f(out);
  for (int l = 0; l < c.n_layers; ++l) {
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const double g = max_dev > 0 ? dev[static_cast<size_t>(l) * c.n_kv_heads + h] / max_dev : 0;
      f << (h ? "\t" : "") << absl::StrCat(std::round(g * 1e4) / 1e4);
    }
    f << "\n";
  }
  std::fprintf(stderr, "wrote %s (max relative logit deviation %.4f)\n", out.c_str(), max_dev);
  return f ? 0 : 1;
}
