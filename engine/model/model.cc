#include "engine/model/model.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace loom::engine {
namespace {

using kernels::DType;

// Looks up `name` and checks its shape is {ne0, ne1} and its type usable for its role.
absl::StatusOr<WeightTensor> Bind(const gguf::GgufFile& f, const std::string& name, int64_t ne0,
                                  int64_t ne1, bool must_be_f32) {
  const gguf::TensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing tensor ", name));
  if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has shape [", t->ne[0], ", ",
                                                   t->ne[1], "], want [", ne0, ", ", ne1, "]"));
  }
  if (must_be_f32 && t->type != DType::kF32) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " must be F32, is ",
                                                   std::string(kernels::DTypeName(t->type))));
  }
  if (!kernels::IsSupported(t->type)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has unsupported type ",
                                                   std::string(kernels::DTypeName(t->type))));
  }
  WeightTensor w;
  w.type = t->type;
  w.ne0 = ne0;
  w.ne1 = ne1;
  w.row_bytes = t->RowBytes();
  w.data = t->data;
  return w;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file, gguf::GgufFile::Open(path));
  return FromFile(std::move(file));
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromFile(std::unique_ptr<gguf::GgufFile> file) {
  std::unique_ptr<Model> m(new Model());
  LOOM_ASSIGN_OR_RETURN(m->config_, ModelConfig::FromGguf(*file));
  const ModelConfig& c = m->config_;
  const gguf::GgufFile& f = *file;
  ModelWeights& w = m->weights_;
  LOOM_ASSIGN_OR_RETURN(w.tok_embd, Bind(f, "token_embd.weight", c.d_model, c.vocab_size, false));
  LOOM_ASSIGN_OR_RETURN(w.output_norm, Bind(f, "output_norm.weight", c.d_model, 1, true));
  if (f.FindTensor("output.weight") != nullptr) {
    LOOM_ASSIGN_OR_RETURN(w.output, Bind(f, "output.weight", c.d_model, c.vocab_size, false));
  } else {
    w.output = w.tok_embd;
  }
  w.layers.resize(c.n_layers);
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = absl::StrCat("blk.", i, ".");
    LayerWeights& l = w.layers[i];
    LOOM_ASSIGN_OR_RETURN(l.attn_norm, Bind(f, p + "attn_norm.weight", c.d_model, 1, true));
    LOOM_ASSIGN_OR_RETURN(l.wq, Bind(f, p + "attn_q.weight", c.d_model, c.q_dim(), false));
    LOOM_ASSIGN_OR_RETURN(l.wk, Bind(f, p + "attn_k.weight", c.d_model, c.kv_dim(), false));
    LOOM_ASSIGN_OR_RETURN(l.wv, Bind(f, p + "attn_v.weight", c.d_model, c.kv_dim(), false));
    LOOM_ASSIGN_OR_RETURN(l.wo, Bind(f, p + "attn_output.weight", c.q_dim(), c.d_model, false));
    LOOM_ASSIGN_OR_RETURN(l.ffn_norm, Bind(f, p + "ffn_norm.weight", c.d_model, 1, true));
    LOOM_ASSIGN_OR_RETURN(l.w_gate, Bind(f, p + "ffn_gate.weight", c.d_model, c.ffn_dim, false));
    LOOM_ASSIGN_OR_RETURN(l.w_up, Bind(f, p + "ffn_up.weight", c.d_model, c.ffn_dim, false));
    LOOM_ASSIGN_OR_RETURN(l.w_down, Bind(f, p + "ffn_down.weight", c.ffn_dim, c.d_model, false));
  }
  m->file_ = std::move(file);
  return m;
}

size_t Model::DecodeBytesPerToken() const {
  size_t total = weights_.output.row_bytes * weights_.output.ne1 + weights_.tok_embd.row_bytes;
  total += weights_.output_norm.row_bytes;
  for (const LayerWeights& l : weights_.layers) {
    for (const WeightTensor* t :
         {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down}) {
      total += t->row_bytes * t->ne1;
    }
  }
  return total;
}

}  // namespace loom::engine
