// A tiny random-weight Llama for unit tests, written as GGUF in memory and loaded as a Model: the
// architecture metadata the loader reads, normal(0, 0.5) weights drawn row by row from one seeded
// stream (times a per-tensor scale), quantized to a per-tensor type, and RMSNorm weights near 1.
//
//   TinyLlamaSpec spec;                          // 2 layers, dim 64, 4 heads, 2 KV heads, ...
//   spec.type = [](int layer, const std::string& t) { return kernels::DType::kQ8_0; };
//   absl::StatusOr<std::unique_ptr<Model>> m = BuildTinyLlama(spec);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/model/model.h"
#include "kernels/dtype.h"

namespace loom::engine {

struct TinyLlamaSpec {
  std::string name = "tiny";
  int layers = 2, dim = 64, heads = 4, kv_heads = 2, ffn = 128, vocab = 96;
  uint32_t seed = 42;
  // Type and scale of each layer matrix ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate",
  // "ffn_up", "ffn_down"); the token embedding (also the tied output) has its own.
  std::function<kernels::DType(int layer, const std::string& tensor)> type =
      [](int, const std::string&) { return kernels::DType::kQ8_0; };
  std::function<float(const std::string& tensor)> scale = [](const std::string&) { return 0.3f; };
  kernels::DType embd_type = kernels::DType::kQ8_0;
  float embd_scale = 1.0f;

  int head_dim() const { return dim / heads; }
};

// The row bytes of `x` in type `t` (F32, F16, Q4_1 as ggml's reference rounds it, or any type
// kernels::QuantizeRow knows).
std::string QuantizeAs(kernels::DType t, const std::vector<float>& x);

absl::StatusOr<std::unique_ptr<Model>> BuildTinyLlama(const TinyLlamaSpec& spec);

}  // namespace loom::engine
