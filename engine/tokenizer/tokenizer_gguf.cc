// Tokenizer::FromGguf: reads tokenizer.ggml.* the way llama.cpp's llama_vocab::impl::load does.
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/gguf/gguf.h"
#include "engine/tokenizer/tokenizer.h"

namespace loom::tokenizer {
namespace {

// Optional token id: absent keeps `*id`; an id outside the vocabulary keeps it too (llama.cpp
// warns "bad special token" and uses the default).
absl::Status ReadId(const gguf::GgufFile& f, std::string_view key, size_t n_tokens, int32_t* id) {
  if (f.Find(key) == nullptr) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(uint32_t v, f.GetUint32(key));
  if (v < n_tokens) *id = static_cast<int32_t>(v);
  return absl::OkStatus();
}

absl::Status ReadBool(const gguf::GgufFile& f, std::string_view key, std::optional<bool>* out) {
  if (f.Find(key) == nullptr) return absl::OkStatus();
  LOOM_ASSIGN_OR_RETURN(bool v, f.GetBool(key));
  *out = v;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::GgufFile& f) {
  TokenizerData d;
  LOOM_ASSIGN_OR_RETURN(d.model, f.GetString("tokenizer.ggml.model"));
  if (d.model != "gpt2") {
    return absl::UnimplementedError(absl::StrCat(
        "tokenizer model '", d.model, "' is not supported (only byte-level BPE 'gpt2')"));
  }
  if (f.Find("tokenizer.ggml.pre") != nullptr) {
    LOOM_ASSIGN_OR_RETURN(d.pre, f.GetString("tokenizer.ggml.pre"));
  }
  LOOM_ASSIGN_OR_RETURN(d.tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  if (f.Find("tokenizer.ggml.token_type") != nullptr) {
    LOOM_ASSIGN_OR_RETURN(d.token_types, f.GetInt32Array("tokenizer.ggml.token_type"));
  }
  if (f.Find("tokenizer.ggml.merges") == nullptr) {
    return absl::InvalidArgumentError("cannot find tokenizer merges (tokenizer.ggml.merges)");
  }
  LOOM_ASSIGN_OR_RETURN(d.merges, f.GetStringArray("tokenizer.ggml.merges"));

  // llama.cpp's defaults for "gpt2" vocabularies.
  d.bos_id = 11;
  d.eos_id = 11;
  const size_t n = d.tokens.size();
  if (n <= 11) {  // the defaults would be out of range
    d.bos_id = kNoToken;
    d.eos_id = kNoToken;
  }
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.bos_token_id", n, &d.bos_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.eos_token_id", n, &d.eos_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.eot_token_id", n, &d.eot_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.eom_token_id", n, &d.eom_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.unknown_token_id", n, &d.unk_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.padding_token_id", n, &d.pad_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.fim_pre_token_id", n, &d.fim_pre_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.fim_suf_token_id", n, &d.fim_suf_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.fim_mid_token_id", n, &d.fim_mid_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.fim_pad_token_id", n, &d.fim_pad_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.fim_rep_token_id", n, &d.fim_rep_id));
  LOOM_RETURN_IF_ERROR(ReadId(f, "tokenizer.ggml.fim_sep_token_id", n, &d.fim_sep_id));
  LOOM_RETURN_IF_ERROR(ReadBool(f, "tokenizer.ggml.add_bos_token", &d.add_bos));
  LOOM_RETURN_IF_ERROR(ReadBool(f, "tokenizer.ggml.add_eos_token", &d.add_eos));
  return Create(d);
}

}  // namespace loom::tokenizer
