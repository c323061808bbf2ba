// Internal to engine/grammar: the vocabulary as a byte trie laid out in preorder, so a walk is a
// loop over one array that skips a whole subtree (all tokens starting with a rejected prefix) by
// jumping to the node's `end`.
//
//   const TokenIndexImpl& idx = TokenIndexImpl::Of(*index);
//   for (size_t i = 0; i < idx.nodes().size();) {
//     const TokenIndexImpl::Node& n = idx.nodes()[i];
//     i = keep(n.byte) ? i + 1 : n.end;
//   }
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/grammar/grammar.h"

namespace loom::grammar::internal {

class TokenIndexImpl final : public TokenIndex {
 public:
  struct Node {
    uint32_t end;        // index of the first node after this subtree
    uint32_t tok_begin;  // sorted_tokens()[tok_begin, tok_here): tokens whose bytes end here
    uint32_t tok_here;
    uint32_t tok_end;  // sorted_tokens()[tok_begin, tok_end): every token in the subtree
    uint16_t depth;    // 1 for a token's first byte
    uint8_t byte;
  };

  TokenIndexImpl(std::vector<std::string> token_bytes, std::vector<int32_t> eog_ids,
                 std::vector<bool> never);
  static const TokenIndexImpl& Of(const TokenIndex& index) {
    return static_cast<const TokenIndexImpl&>(index);
  }

  int32_t vocab_size() const override { return static_cast<int32_t>(bytes_.size()); }
  // Distinguishes indexes in the grammars' caches (never reused).
  uint64_t id() const { return id_; }
  const std::string& bytes(int32_t token) const { return bytes_[token]; }
  bool is_eog(int32_t token) const { return kind_[token] == kEog; }
  // In the trie: may be allowed by a grammar (not special, not empty).
  bool in_trie(int32_t token) const { return kind_[token] == kNormal; }
  const std::vector<int32_t>& eog_ids() const { return eog_ids_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& sorted_tokens() const { return sorted_; }
  int max_depth() const { return max_depth_; }

 private:
  enum Kind : uint8_t { kNormal, kEog, kNever };
  std::vector<std::string> bytes_;
  std::vector<Kind> kind_;
  std::vector<int32_t> eog_ids_;
  std::vector<Node> nodes_;
  std::vector<int32_t> sorted_;
  int max_depth_ = 0;
  uint64_t id_;
};

}  // namespace loom::grammar::internal
