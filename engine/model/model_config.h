// Hyper-parameters of a Llama-family model, read from GGUF metadata (never hard-coded).
//
//   LOOM_ASSIGN_OR_RETURN(loom::engine::ModelConfig cfg,
//   loom::engine::ModelConfig::FromGguf(*file)); int kv_dim = cfg.n_kv_heads * cfg.head_dim;
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "kernels/kernels.h"

namespace loom::engine {

struct ModelConfig {
  std::string arch;  // general.architecture, e.g. "llama"
  std::string name;  // general.name
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int vocab_size = 0;
  int context_length = 0;
  int rope_dim = 0;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  float rms_eps = 1e-5f;
  kernels::RopeStyle rope_style = kernels::RopeStyle::kNorm;

  int kv_dim() const { return n_kv_heads * head_dim; }
  int q_dim() const { return n_heads * head_dim; }

  static absl::StatusOr<ModelConfig> FromGguf(const gguf::GgufFile& file);
  absl::Status Validate() const;
};

}  // namespace loom::engine
