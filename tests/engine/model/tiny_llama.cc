#include "tests/engine/model/tiny_llama.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "common/status_macros.h"
#include "engine/gguf/gguf_writer.h"
#include "kernels/kernels.h"

namespace loom::engine {
namespace {

using kernels::DType;

// Q4_1 quantization as ggml's reference does it (min/max per block of 32).
std::string QuantizeQ4_1(const std::vector<float>& x) {
  std::string out;
  for (size_t b = 0; b < x.size(); b += 32) {
    float lo = x[b], hi = x[b];
    for (int j = 0; j < 32; ++j) lo = std::min(lo, x[b + j]), hi = std::max(hi, x[b + j]);
    const float d = (hi - lo) / 15.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    kernels::BlockQ4_1 blk;
    blk.d = kernels::Fp32ToFp16(d);
    blk.m = kernels::Fp32ToFp16(lo);
    for (int j = 0; j < 16; ++j) {
      int q0 = std::min(15, static_cast<int>((x[b + j] - lo) * id + 0.5f));
      int q1 = std::min(15, static_cast<int>((x[b + j + 16] - lo) * id + 0.5f));
      blk.qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
    out.append(reinterpret_cast<const char*>(&blk), sizeof(blk));
  }
  return out;
}

}  // namespace

std::string QuantizeAs(DType t, const std::vector<float>& x) {
  if (t == DType::kQ4_1) return QuantizeQ4_1(x);
  std::string out(kernels::RowBytes(t, static_cast<int64_t>(x.size())), '\0');
  if (t == DType::kF32) {
    std::memcpy(out.data(), x.data(), out.size());
  } else if (t == DType::kF16) {
    kernels::Fp32ToFp16Row(x.data(), reinterpret_cast<kernels::fp16_t*>(out.data()),
                           static_cast<int64_t>(x.size()));
  } else {
    kernels::QuantizeRow(t, x.data(), out.data(), static_cast<int64_t>(x.size()));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Model>> BuildTinyLlama(const TinyLlamaSpec& s) {
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> nd(0.0f, 0.5f);
  const int hd = s.head_dim();
  gguf::GgufWriter w;
  w.AddString("general.architecture", "llama");
  w.AddString("general.name", s.name);
  w.AddUint32("llama.block_count", s.layers);
  w.AddUint32("llama.context_length", 256);
  w.AddUint32("llama.embedding_length", s.dim);
  w.AddUint32("llama.feed_forward_length", s.ffn);
  w.AddUint32("llama.attention.head_count", s.heads);
  w.AddUint32("llama.attention.head_count_kv", s.kv_heads);
  w.AddUint32("llama.attention.key_length", hd);
  w.AddUint32("llama.attention.value_length", hd);
  w.AddUint32("llama.rope.dimension_count", hd);
  w.AddFloat32("llama.rope.freq_base", 10000.0f);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddUint32("llama.vocab_size", s.vocab);
  auto add = [&](const std::string& name, DType t, int64_t ne0, int64_t ne1, float scale) {
    std::string bytes;
    for (int64_t r = 0; r < ne1; ++r) {
      std::vector<float> row(ne0);
      for (float& x : row) x = nd(rng) * scale;
      bytes += QuantizeAs(t, row);
    }
    w.AddTensor(name, t, {ne0, ne1}, bytes);
  };
  auto add_norm = [&](const std::string& name) {
    std::vector<float> v(s.dim);
    for (float& x : v) x = 1.0f + 0.1f * nd(rng);
    w.AddTensorF32(name, {s.dim}, v);
  };
  add("token_embd.weight", s.embd_type, s.dim, s.vocab, s.embd_scale);
  add_norm("output_norm.weight");
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    auto matrix = [&](const std::string& t, int64_t ne0, int64_t ne1) {
      add(p + t + ".weight", s.type(l, t), ne0, ne1, s.scale(t));
    };
    add_norm(p + "attn_norm.weight");
    add_norm(p + "ffn_norm.weight");
    matrix("attn_q", s.dim, s.heads * hd);
    matrix("attn_k", s.dim, s.kv_heads * hd);
    matrix("attn_v", s.dim, s.kv_heads * hd);
    matrix("attn_output", s.heads * hd, s.dim);
    matrix("ffn_gate", s.dim, s.ffn);
    matrix("ffn_up", s.dim, s.ffn);
    matrix("ffn_down", s.ffn, s.dim);
  }
  LOOM_ASSIGN_OR_RETURN(std::string bytes, w.Serialize());
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<gguf::GgufFile> file,
                        gguf::GgufFile::FromBuffer(std::move(bytes)));
  return Model::FromFile(std::move(file));
}

}  // namespace loom::engine
