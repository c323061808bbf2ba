// Byte-level BPE tokenizer (GGUF tokenizer.ggml.model "gpt2") that reproduces llama.cpp's
// llama-vocab.cpp + unicode.cpp token for token: special-token partitioning, the regex
// pre-tokenizer named by tokenizer.ggml.pre, BPE merges by rank, and piece rendering.
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::gguf::GgufFile> f, loom::gguf::GgufFile::Open(p));
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<loom::tokenizer::Tokenizer> tok,
//                         loom::tokenizer::Tokenizer::FromGguf(*f));
//   std::vector<int32_t> ids = tok->Encode("<|im_start|>user\nHi<|im_end|>\n",
//                                          /*add_special=*/true, /*parse_special=*/true);
//   std::string text = tok->Decode(ids, /*render_special=*/true);  // the input again
//
//   loom::tokenizer::StreamDecoder stream(*tok, /*render_special=*/false);
//   for (int32_t id : generated) out += stream.Feed(id);  // only complete UTF-8
//   out += stream.Flush();
//
// Like llama.cpp, invalid UTF-8 in the input is encoded as U+FFFD per bad byte (so such input
// does not round-trip); valid UTF-8 always does. All const methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::gguf {
class GgufFile;
}

namespace loom::tokenizer {

class BpeModel;
class PreTokenizer;

inline constexpr int32_t kNoToken = -1;

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// Everything a tokenizer is built from, as plain vectors (what FromGguf reads from the file).
struct TokenizerData {
  std::string model = "gpt2";        // tokenizer.ggml.model; only "gpt2" is supported
  std::string pre;                   // tokenizer.ggml.pre; empty/unknown: "default" + warning
  std::vector<std::string> tokens;   // byte-level encoded texts, id = index
  std::vector<int32_t> token_types;  // TokenType per token; empty: all kNormal
  std::vector<std::string> merges;   // "left right", rank = index
  int32_t bos_id = kNoToken;
  int32_t eos_id = kNoToken;
  int32_t unk_id = kNoToken;
  int32_t pad_id = kNoToken;
  // Found by token text when kNoToken, as llama.cpp does (which also makes them control tokens).
  int32_t eot_id = kNoToken;
  int32_t eom_id = kNoToken;
  int32_t fim_pre_id = kNoToken;
  int32_t fim_suf_id = kNoToken;
  int32_t fim_mid_id = kNoToken;
  int32_t fim_pad_id = kNoToken;
  int32_t fim_rep_id = kNoToken;
  int32_t fim_sep_id = kNoToken;
  std::optional<bool> add_bos;  // unset: the pre-tokenizer's default (true only for llama3)
  std::optional<bool> add_eos;  // unset: false
};

class Tokenizer {
 public:
  // Reads tokenizer.ggml.* from `file`, with llama.cpp's defaults for absent keys.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const gguf::GgufFile& file);
  // InvalidArgument for inconsistent data (sizes, ids out of range), Unimplemented for models
  // other than "gpt2".
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const TokenizerData& data);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // `add_special`: prepend BOS (append EOS) when the model asks for it (add_bos / add_eos).
  // `parse_special`: control and unknown-type token texts in `text` become those tokens.
  // User-defined token texts are always matched, as in llama.cpp.
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;

  // The raw bytes of one token. Control and unknown tokens are empty unless `render_special`;
  // user-defined tokens render as their text; <0xXX> byte tokens as that byte; unused and
  // out-of-range ids are empty.
  std::string TokenToPiece(int32_t id, bool render_special) const;
  // Concatenated pieces.
  std::string Decode(std::span<const int32_t> ids, bool render_special) const;

  int32_t vocab_size() const { return static_cast<int32_t>(types_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t eot_id() const { return eot_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t pad_id() const { return pad_id_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }

  // End of generation: eos, eot, eom, fim pad/repo/sep, and the control tokens llama.cpp
  // recognises by text (<|im_end|>, <|endoftext|>, <|eot_id|>, <end_of_turn>, ...).
  bool IsEog(int32_t id) const;
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }  // sorted

  // Exact vocabulary lookup of a token text (as stored, i.e. byte-level encoded).
  std::optional<int32_t> TokenId(std::string_view text) const;
  const std::string& TokenText(int32_t id) const;  // empty for out-of-range ids
  TokenType GetTokenType(int32_t id) const;        // after llama.cpp's by-text overrides

  const std::string& pre() const { return pre_name_; }
  // Load-time warning (e.g. the pre-tokenizer fallback); empty if none.
  const std::string& warning() const { return warning_; }

 private:
  struct Fragment {
    int32_t token;  // kNoToken for raw text
    size_t begin;
    size_t size;
  };

  Tokenizer();
  void ComputeSpecials(const TokenizerData& data);
  std::vector<Fragment> Partition(std::string_view text, bool parse_special) const;

  std::vector<std::string> texts_;
  std::vector<TokenType> types_;
  std::vector<std::string> pieces_;      // rendered bytes (render_special = true)
  std::vector<int32_t> special_tokens_;  // control/user-defined/unknown, longest text first
  std::vector<int32_t> eog_ids_;
  std::vector<bool> is_eog_;
  std::unique_ptr<BpeModel> bpe_;
  std::unique_ptr<PreTokenizer> pre_;
  std::string pre_name_;
  std::string warning_;
  int32_t bos_id_ = kNoToken;
  int32_t eos_id_ = kNoToken;
  int32_t eot_id_ = kNoToken;
  int32_t unk_id_ = kNoToken;
  int32_t pad_id_ = kNoToken;
  bool add_bos_ = false;
  bool add_eos_ = false;
};

// Incremental detokenizer: feed ids one at a time, get back only complete UTF-8; an incomplete
// trailing sequence is held until the bytes that finish it arrive (bytes that can never become
// valid UTF-8 are passed through). The concatenation of all Feed() results and Flush() equals
// Decode() of the same ids.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool render_special)
      : tokenizer_(&tokenizer), render_special_(render_special) {}

  std::string Feed(int32_t id);
  // Everything still held back (possibly an incomplete sequence); resets the decoder.
  std::string Flush();
  void Reset() { pending_.clear(); }
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool render_special_;
  std::string pending_;
};

}  // namespace loom::tokenizer
