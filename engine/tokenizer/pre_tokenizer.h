// Regex pre-tokenizer for byte-level BPE: splits text into words the way llama.cpp's
// unicode_regex_split does for a given `tokenizer.ggml.pre`, using PCRE2 (UTF + UCP).
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PreTokenizer> pre, PreTokenizer::Create("smollm"));
//   std::vector<std::string> words = pre->Split("I'm 12 ");  // {"I", "'m", " ", "1", "2", " "}
//
// Words come back as raw UTF-8 bytes (not byte-level encoded). The input is first decoded as
// llama.cpp does (invalid bytes -> U+FFFD each), so words are the re-encoded text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::tokenizer {

// One row of the pre-tokenizer table.
struct PreTokenizerSpec {
  std::vector<std::string> regexes;  // applied in sequence, each within the previous pieces
  bool ignore_merges = false;        // a word that is itself a token skips the merges
  bool add_bos = false;              // default for tokenizer.ggml.add_bos_token
};

// The spec for a `tokenizer.ggml.pre` value, or nullptr for names this table does not know.
// Known: default, gpt2 (and llama.cpp's aliases gpt-2, phi-2, ...), llama3 (llama-bpe, ...),
// smollm (and starcoder, refact, command-r, codeshell, exaone, minerva-7b), qwen2.
const PreTokenizerSpec* FindPreTokenizerSpec(std::string_view pre);

class PreTokenizer {
 public:
  // Compiles the regexes of `pre`. An empty or unknown name falls back to "default", as
  // llama.cpp does; `*warning` (if given) then says so.
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(std::string_view pre,
                                                              std::string* warning = nullptr);
  // Compiles an explicit regex list (tests and new models).
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromSpec(const PreTokenizerSpec& spec);

  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Splits `text` into words (raw bytes). Thread-safe.
  std::vector<std::string> Split(std::string_view text) const;

  const PreTokenizerSpec& spec() const { return spec_; }

 private:
  struct Regex;
  PreTokenizer() = default;

  PreTokenizerSpec spec_;
  std::vector<std::unique_ptr<Regex>> regexes_;
};

}  // namespace loom::tokenizer
