// Byte-level BPE merges, as llama.cpp's llm_tokenizer_bpe_session: a word's bytes are mapped to
// GPT-2's printable codepoints, one symbol per codepoint, and adjacent pairs are merged lowest
// rank first (leftmost first among equal ranks) until no listed pair is left.
//
//   LOOM_ASSIGN_OR_RETURN(auto bpe, BpeModel::Create(tokens, {"a b", "ab c"}, false));
//   std::vector<int32_t> ids;
//   bpe->EncodeWord("abc", &ids);  // the id of "abc", if it is a token
//
// Works on integer ids throughout: every token text, merge operand and merge result is interned
// once at load time. Thread-safe; a small per-word cache is shared by all threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace loom::tokenizer {

class BpeModel {
 public:
  // `tokens` are byte-level encoded token texts (id = index; for duplicates the last one wins,
  // as in llama.cpp); `merges` are "left right" strings, rank = index (first occurrence wins).
  // `ignore_merges`: a word that is itself a token is emitted without merging (llama3).
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const std::vector<std::string>& tokens,
                                                          const std::vector<std::string>& merges,
                                                          bool ignore_merges);

  // Appends the token ids of one pre-tokenized word given as raw bytes.
  void EncodeWord(std::string_view raw_word, std::vector<int32_t>* out) const;

  // The id of a token text (byte-level encoded), if it is in the vocabulary.
  std::optional<int32_t> Find(std::string_view text) const;

  int32_t vocab_size() const { return n_vocab_; }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };

  BpeModel() = default;
  int32_t Intern(std::string text);
  void EncodeUncached(std::string_view raw_word, std::vector<int32_t>* out) const;

  int32_t n_vocab_ = 0;
  bool ignore_merges_ = false;
  std::vector<std::string> texts_;  // by interned id; [0, n_vocab_) is the vocabulary
  absl::flat_hash_map<std::string, int32_t> ids_;
  absl::flat_hash_map<uint64_t, Merge> merges_;  // (left << 32 | right) -> merge
  int32_t byte_symbol_[256] = {};                // interned id of each byte's codepoint

  static constexpr size_t kMaxCachedWordBytes = 64;
  static constexpr size_t kMaxCacheEntries = 1 << 16;
  mutable std::shared_mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace loom::tokenizer
