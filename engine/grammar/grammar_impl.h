// Internal to engine/grammar: the Grammar implementation and the allowed-token cache that a
// grammar keeps per TokenIndex.
//
// How a mask is computed (MaskCache::Mask): a matcher state is a set of stacks. The tokens a
// stack allows mostly depend only on its top few frames (inside a JSON string: the string's
// rule, whichever property it belongs to), so each stack's top K frames are walked over the
// token trie once, with the frames below replaced by the base, and the result is cached under
// those K positions: tokens that stay above the base are allowed, tokens that die above it are
// not, and tokens that reach the base with bytes left over are "uncertain" and are rechecked
// against the whole stack. When too many tokens are uncertain, K grows (up to the whole stack,
// which leaves none). The final mask of a whole state is cached too, so a state seen before (JSON
// structure repeats) costs one hash lookup.
//
//   auto cache = GrammarImpl::Of(*grammar).CacheFor(index);
//   std::shared_ptr<const TokenMask> mask = cache->Mask(stacks, partial);
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_ir.h"
#include "engine/grammar/token_index_impl.h"
#include "engine/grammar/walker.h"

namespace loom::grammar::internal {

// A matcher state: stacks as frames bottom to top (sorted; an empty stack means the root rule
// is complete) and the partial UTF-8 sequence read so far.
struct ParseState {
  std::vector<std::vector<uint32_t>> stacks;
  Partial partial;
};

// One bit per token id.
struct TokenMask {
  std::vector<uint64_t> bits;
  bool any = false;  // some token is allowed
  bool Test(int32_t t) const { return (bits[t >> 6] >> (t & 63)) & 1; }
  void Set(int32_t t) { bits[t >> 6] |= uint64_t{1} << (t & 63); }
};

class MaskCache {
 public:
  MaskCache(const Ir& ir, const TokenIndexImpl& index) : ir_(ir), index_(index) {}
  // The allowed tokens in `state` (end-of-generation tokens included when it can end). `state`
  // must be non-empty. Thread-safe.
  std::shared_ptr<const TokenMask> Mask(const ParseState& state);

  struct Stats {
    int64_t state_hits = 0, state_misses = 0, key_walks = 0, uncertain_checks = 0;
    int64_t deeper_keys = 0;  // key walks with too many uncertain tokens (retried deeper)
    int64_t bytes = 0;        // held now (approximately)
  };
  Stats stats() const;

 private:
  // The tokens one stack's top frames allow, with the uncertain ones to recheck.
  struct KeyEntry {
    std::vector<uint64_t> bits;      // dense form, or
    std::vector<int32_t> ids;        // sparse form (when few are allowed)
    std::vector<int32_t> uncertain;  // reach the base with bytes left
    bool deeper = false;             // too many uncertain: use more frames
  };
  const KeyEntry& EntryFor(const std::vector<uint32_t>& frames, Partial partial);
  std::unique_ptr<KeyEntry> Walk(const std::vector<uint32_t>& frames, size_t k, Partial partial);
  void MaybeEvict();

  const Ir& ir_;
  const TokenIndexImpl& index_;
  mutable std::mutex mu_;
  absl::flat_hash_map<std::vector<uint32_t>, std::unique_ptr<KeyEntry>> keys_;
  absl::flat_hash_map<std::vector<uint32_t>, std::shared_ptr<const TokenMask>> states_;
  size_t bytes_ = 0;
  Stats stats_;
};

class GrammarImpl final : public Grammar {
 public:
  explicit GrammarImpl(Ir ir);
  static const GrammarImpl& Of(const Grammar& g) { return static_cast<const GrammarImpl&>(g); }

  std::string ToString() const override;
  const Ir& ir() const { return ir_; }
  // The root rule's expanded start stacks.
  const ParseState& initial() const { return initial_; }
  // This grammar's cache for `index`, made on first use. Thread-safe.
  std::shared_ptr<MaskCache> CacheFor(const std::shared_ptr<const TokenIndexImpl>& index) const;

 private:
  Ir ir_;
  ParseState initial_;
  mutable std::mutex mu_;
  mutable std::vector<std::pair<std::weak_ptr<const TokenIndexImpl>, std::shared_ptr<MaskCache>>>
      caches_;
};

// Runs `bytes` from `state` on a fresh walker into `*out`; false (and `*out` untouched) when no
// parse reads them all.
bool AdvanceState(const Ir& ir, const ParseState& state, std::string_view bytes, ParseState* out);

// Tests: the frames a cache key starts with (3) and the uncertain tokens beyond which a key takes
// more frames (512). Not thread-safe; set before building matchers.
void SetMaskCacheTuningForTest(size_t first_frames, size_t uncertain_limit);

}  // namespace loom::grammar::internal
