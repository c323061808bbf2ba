// A loaded Llama-family model: the mapped GGUF file, its config, and typed views of its weights.
// Computation lives in backends (engine/model/backend.h); this module only owns and checks weights.
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::engine::Model> model,
//                         loom::engine::Model::Load("models/SmolLM2-135M-Instruct.Q4_1.gguf"));
//   const loom::engine::ModelConfig& cfg = model->config();
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "engine/model/model_config.h"
#include "kernels/dtype.h"

namespace loom::engine {

// A 1-D or 2-D weight: ne1 rows of ne0 elements, each row row_bytes long.
struct WeightTensor {
  kernels::DType type = kernels::DType::kF32;
  int64_t ne0 = 0;
  int64_t ne1 = 1;
  size_t row_bytes = 0;
  const uint8_t* data = nullptr;

  const uint8_t* Row(int64_t i) const { return data + static_cast<size_t>(i) * row_bytes; }
  const float* F32() const { return reinterpret_cast<const float*>(data); }
};

struct LayerWeights {
  WeightTensor attn_norm, wq, wk, wv, wo;
  WeightTensor ffn_norm, w_gate, w_up, w_down;
};

struct ModelWeights {
  WeightTensor tok_embd;
  WeightTensor output_norm;
  WeightTensor output;  // token_embd.weight when the model ties embeddings
  std::vector<LayerWeights> layers;
};

class Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path);
  // Takes an already opened file (tests build small ones in memory).
  static absl::StatusOr<std::unique_ptr<Model>> FromFile(std::unique_ptr<gguf::GgufFile> file);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const gguf::GgufFile& file() const { return *file_; }
  // Bytes of weights one decode step reads (every matrix once, one embedding row).
  size_t DecodeBytesPerToken() const;

 private:
  Model() = default;
  std::unique_ptr<gguf::GgufFile> file_;
  ModelConfig config_;
  ModelWeights weights_;
};

}  // namespace loom::engine
