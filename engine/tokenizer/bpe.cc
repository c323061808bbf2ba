#include "engine/tokenizer/bpe.h"

#include <mutex>
#include <queue>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "engine/tokenizer/unicode.h"

namespace loom::tokenizer {
namespace {

inline uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct Symbol {
  int32_t id;    // interned text id; -1 once merged into its left neighbour
  int32_t prev;  // index of the previous live symbol, -1 if none
  int32_t next;  // index of the next live symbol, -1 if none
};

struct Bigram {
  int32_t rank;
  int32_t left;  // symbol indices
  int32_t right;
  int32_t left_id;  // the texts when queued; a bigram whose symbols changed since is stale
  int32_t right_id;
  int32_t result;
};

// llama.cpp's llm_bigram_bpe::comparator: lowest rank first, then leftmost.
struct BigramAfter {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

}  // namespace

int32_t BpeModel::Intern(std::string text) {
  auto [it, inserted] = ids_.try_emplace(text, static_cast<int32_t>(texts_.size()));
  if (inserted) texts_.push_back(std::move(text));
  return it->second;
}

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const std::vector<std::string>& tokens,
                                                           const std::vector<std::string>& merges,
                                                           bool ignore_merges) {
  if (tokens.size() >= static_cast<size_t>(INT32_MAX / 4)) {
    return absl::InvalidArgumentError("vocabulary too large");
  }
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->n_vocab_ = static_cast<int32_t>(tokens.size());
  m->ignore_merges_ = ignore_merges;
  m->texts_ = tokens;
  m->ids_.reserve(tokens.size() + merges.size() + 256);
  for (size_t i = 0; i < tokens.size(); ++i) {
    m->ids_.insert_or_assign(tokens[i], static_cast<int32_t>(i));  // last duplicate wins
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    AppendUtf8(ByteToCodepoint(static_cast<uint8_t>(b)), &s);
    m->byte_symbol_[b] = m->Intern(std::move(s));
  }
  m->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& merge = merges[rank];
    const size_t space = merge.find(' ', 1);
    if (space == std::string::npos) continue;  // llama.cpp stores ("", ""), which never matches
    std::string left = merge.substr(0, space);
    std::string right = merge.substr(space + 1);
    std::string joined = left + right;
    const int32_t l = m->Intern(std::move(left));
    const int32_t r = m->Intern(std::move(right));
    const int32_t result = m->Intern(std::move(joined));
    m->merges_.try_emplace(PairKey(l, r), Merge{static_cast<int32_t>(rank), result});
  }
  return m;
}

std::optional<int32_t> BpeModel::Find(std::string_view text) const {
  auto it = ids_.find(absl::string_view(text.data(), text.size()));
  if (it == ids_.end() || it->second >= n_vocab_) return std::nullopt;
  return it->second;
}

void BpeModel::EncodeWord(std::string_view raw_word, std::vector<int32_t>* out) const {
  if (raw_word.empty()) return;
  if (raw_word.size() > kMaxCachedWordBytes) {
    EncodeUncached(raw_word, out);
    return;
  }
  {
    std::shared_lock lock(cache_mu_);
    auto it = cache_.find(absl::string_view(raw_word.data(), raw_word.size()));
    if (it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  EncodeUncached(raw_word, out);
  std::vector<int32_t> ids(out->begin() + before, out->end());
  std::unique_lock lock(cache_mu_);
  if (cache_.size() >= kMaxCacheEntries) cache_.clear();
  cache_.try_emplace(std::string(raw_word), std::move(ids));
}

void BpeModel::EncodeUncached(std::string_view raw_word, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    std::string encoded;
    for (const char c : raw_word) AppendUtf8(ByteToCodepoint(static_cast<uint8_t>(c)), &encoded);
    if (std::optional<int32_t> id = Find(encoded)) {
      out->push_back(*id);
      return;
    }
  }

  const int32_t n = static_cast<int32_t>(raw_word.size());
  std::vector<Symbol> symbols(n);
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = {byte_symbol_[static_cast<uint8_t>(raw_word[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::priority_queue<Bigram, std::vector<Bigram>, BigramAfter> queue;
  const auto add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t l = symbols[left].id, r = symbols[right].id;
    auto it = merges_.find(PairKey(l, r));
    if (it == merges_.end()) return;
    queue.push({it->second.rank, left, right, l, r, it->second.result});
  };
  for (int32_t i = 1; i < n; ++i) add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = symbols[b.left];
    Symbol& right = symbols[b.right];
    if (left.id != b.left_id || right.id != b.right_id) continue;  // stale
    left.id = b.result;
    right.id = -1;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = b.left;
    add_bigram(left.prev, b.left);
    add_bigram(b.left, left.next);
  }

  for (int32_t i = 0; i >= 0; i = symbols[i].next) {
    const int32_t id = symbols[i].id;
    if (id < n_vocab_) {
      out->push_back(id);
      continue;
    }
    // Not a token (a merge result or byte missing from the vocabulary): llama.cpp then looks up
    // each byte of the symbol's text as a one-byte token and drops the ones it cannot find.
    for (const char c : texts_[id]) {
      if (std::optional<int32_t> t = Find(std::string_view(&c, 1))) out->push_back(*t);
    }
  }
}

}  // namespace loom::tokenizer
