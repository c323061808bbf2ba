#include "engine/model/model_config.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {

// Architectures whose GGUF layout and graph match the Llama forward in this module.
bool IsLlamaLike(const std::string& arch) {
  return arch == "llama" || arch == "mistral" || arch == "granite";
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromGguf(const gguf::GgufFile& file) {
  ModelConfig c;
  LOOM_ASSIGN_OR_RETURN(c.arch, file.GetString("general.architecture"));
  if (!IsLlamaLike(c.arch)) {
    return absl::UnimplementedError(
        absl::StrCat("model architecture '", c.arch, "' is not supported (Llama family only)"));
  }
  if (auto name = file.GetString("general.name"); name.ok()) c.name = *name;
  const std::string p = c.arch + ".";
  auto u32 = [&](const std::string& key, int* out) -> absl::Status {
    LOOM_ASSIGN_OR_RETURN(uint32_t v, file.GetUint32(p + key));
    if (v > (1u << 30))
      return absl::InvalidArgumentError(absl::StrCat(p, key, " is too large: ", v));
    *out = static_cast<int>(v);
    return absl::OkStatus();
  };
  LOOM_RETURN_IF_ERROR(u32("block_count", &c.n_layers));
  LOOM_RETURN_IF_ERROR(u32("embedding_length", &c.d_model));
  LOOM_RETURN_IF_ERROR(u32("feed_forward_length", &c.ffn_dim));
  LOOM_RETURN_IF_ERROR(u32("attention.head_count", &c.n_heads));
  LOOM_RETURN_IF_ERROR(u32("context_length", &c.context_length));
  c.n_kv_heads = c.n_heads;
  if (file.Find(p + "attention.head_count_kv") != nullptr) {
    LOOM_RETURN_IF_ERROR(u32("attention.head_count_kv", &c.n_kv_heads));
  }
  if (c.n_heads <= 0) return absl::InvalidArgumentError("attention.head_count must be positive");
  c.head_dim = c.d_model / c.n_heads;
  if (file.Find(p + "attention.key_length") != nullptr) {
    LOOM_RETURN_IF_ERROR(u32("attention.key_length", &c.head_dim));
  }
  c.rope_dim = c.head_dim;
  if (file.Find(p + "rope.dimension_count") != nullptr) {
    LOOM_RETURN_IF_ERROR(u32("rope.dimension_count", &c.rope_dim));
  }
  if (file.Find(p + "rope.freq_base") != nullptr) {
    LOOM_ASSIGN_OR_RETURN(c.rope_freq_base, file.GetFloat32(p + "rope.freq_base"));
  }
  if (file.Find(p + "rope.scale_linear") != nullptr) {
    LOOM_ASSIGN_OR_RETURN(float s, file.GetFloat32(p + "rope.scale_linear"));
    if (s > 0) c.rope_freq_scale = 1.0f / s;
  }
  LOOM_ASSIGN_OR_RETURN(c.rms_eps, file.GetFloat32(p + "attention.layer_norm_rms_epsilon"));
  if (file.Find(p + "vocab_size") != nullptr) {
    LOOM_RETURN_IF_ERROR(u32("vocab_size", &c.vocab_size));
  } else {
    const gguf::TensorInfo* emb = file.FindTensor("token_embd.weight");
    if (emb == nullptr) return absl::InvalidArgumentError("missing tensor token_embd.weight");
    c.vocab_size = static_cast<int>(emb->ne[1]);
  }
  LOOM_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::Status ModelConfig::Validate() const {
  if (n_layers <= 0 || d_model <= 0 || ffn_dim <= 0 || vocab_size <= 0 || head_dim <= 0) {
    return absl::InvalidArgumentError("model dimensions must be positive");
  }
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("head_count ", n_heads, " is not a multiple of head_count_kv ", n_kv_heads));
  }
  if (rope_dim <= 0 || rope_dim > head_dim || rope_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad rope.dimension_count ", rope_dim));
  }
  if (!(rms_eps > 0.0f) || !(rope_freq_base > 0.0f)) {
    return absl::InvalidArgumentError("rms epsilon and rope base must be positive");
  }
  return absl::OkStatus();
}

}  // namespace loom::engine
