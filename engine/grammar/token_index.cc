// TokenIndex: the vocabulary's bytes in a preorder trie (token_index_impl.h).
#include <algorithm>
#include <atomic>
#include <numeric>

#include "engine/grammar/grammar.h"
#include "engine/grammar/token_index_impl.h"

namespace loom::grammar {
namespace internal {
namespace {

std::atomic<uint64_t> next_index_id{1};

}  // namespace

TokenIndexImpl::TokenIndexImpl(std::vector<std::string> token_bytes, std::vector<int32_t> eog_ids,
                               std::vector<bool> never)
    : bytes_(std::move(token_bytes)), id_(next_index_id.fetch_add(1)) {
  const int32_t n = static_cast<int32_t>(bytes_.size());
  kind_.assign(n, kNormal);
  for (int32_t i = 0; i < n; ++i) {
    const bool special = i < static_cast<int32_t>(never.size()) && never[i];
    if (bytes_[i].empty() || special) kind_[i] = kNever;
  }
  for (const int32_t id : eog_ids) {
    if (id >= 0 && id < n) kind_[id] = kEog;
  }
  for (int32_t i = 0; i < n; ++i) {
    if (kind_[i] == kEog) eog_ids_.push_back(i);
  }

  for (int32_t i = 0; i < n; ++i) {
    if (kind_[i] == kNormal) sorted_.push_back(i);
  }
  std::stable_sort(sorted_.begin(), sorted_.end(),
                   [&](int32_t a, int32_t b) { return bytes_[a] < bytes_[b]; });

  // Preorder trie from the sorted strings: `path` holds the open nodes, one per depth.
  std::vector<uint32_t> path;
  const std::string* prev = nullptr;
  auto close_to = [&](size_t depth, uint32_t k) {
    while (path.size() > depth) {
      Node& node = nodes_[path.back()];
      node.end = static_cast<uint32_t>(nodes_.size());
      node.tok_end = k;
      path.pop_back();
    }
  };
  for (uint32_t k = 0; k < sorted_.size(); ++k) {
    const std::string& s = bytes_[sorted_[k]];
    size_t lcp = 0;
    if (prev != nullptr) {
      const size_t m = std::min(prev->size(), s.size());
      while (lcp < m && (*prev)[lcp] == s[lcp]) ++lcp;
    }
    close_to(lcp, k);
    for (size_t d = path.size() + 1; d <= s.size(); ++d) {
      path.push_back(static_cast<uint32_t>(nodes_.size()));
      nodes_.push_back(Node{0, k, k, k, static_cast<uint16_t>(d), static_cast<uint8_t>(s[d - 1])});
    }
    nodes_[path.back()].tok_here = k + 1;  // s ends here (after any duplicates of it)
    max_depth_ = std::max(max_depth_, static_cast<int>(s.size()));
    prev = &s;
  }
  close_to(0, static_cast<uint32_t>(sorted_.size()));
}

}  // namespace internal

std::shared_ptr<const TokenIndex> TokenIndex::Build(const tokenizer::Tokenizer& tokenizer) {
  const int32_t n = tokenizer.vocab_size();
  std::vector<std::string> bytes(n);
  std::vector<bool> never(n, false);
  for (int32_t id = 0; id < n; ++id) {
    if (tokenizer.IsEog(id)) continue;
    switch (tokenizer.GetTokenType(id)) {
      case tokenizer::TokenType::kControl:
      case tokenizer::TokenType::kUnknown:
      case tokenizer::TokenType::kUnused:
        never[id] = true;
        break;
      default:
        bytes[id] = tokenizer.TokenToPiece(id, /*render_special=*/false);
        break;
    }
  }
  return std::make_shared<internal::TokenIndexImpl>(std::move(bytes), tokenizer.eog_ids(),
                                                    std::move(never));
}

std::shared_ptr<const TokenIndex> TokenIndex::FromStrings(std::vector<std::string> token_bytes,
                                                          std::vector<int32_t> eog_ids) {
  return std::make_shared<internal::TokenIndexImpl>(std::move(token_bytes), std::move(eog_ids),
                                                    std::vector<bool>());
}

}  // namespace loom::grammar
