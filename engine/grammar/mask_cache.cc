// MaskCache (the allowed tokens per parse state, see grammar_impl.h) and GrammarImpl's state.
#include <algorithm>

#include "engine/grammar/grammar_impl.h"

namespace loom::grammar::internal {
namespace {

size_t first_key_frames = 3;  // frames a key starts with
size_t max_uncertain = 512;   // more than this many uncertain tokens: use more frames
constexpr size_t kMaxCacheBytes = 16 << 20;  // per grammar and vocabulary

ParseState ToParseState(const Walker& w, uint32_t state) {
  ParseState out;
  out.partial = w.partial(state);
  for (const uint32_t s : w.stacks(state)) {
    std::vector<uint32_t> frames;
    w.Frames(s, &frames);
    out.stacks.push_back(std::move(frames));
  }
  std::sort(out.stacks.begin(), out.stacks.end());
  return out;
}

uint32_t FromParseState(Walker& w, const ParseState& state) {
  std::vector<uint32_t> stacks;
  for (const auto& frames : state.stacks) stacks.push_back(w.StackOf(frames));
  return w.MakeState(std::move(stacks), state.partial);
}

}  // namespace

void SetMaskCacheTuningForTest(size_t first_frames, size_t uncertain_limit) {
  first_key_frames = first_frames;
  max_uncertain = uncertain_limit;
}

bool AdvanceState(const Ir& ir, const ParseState& state, std::string_view bytes, ParseState* out) {
  Walker w(ir);
  uint32_t s = FromParseState(w, state);
  for (const char c : bytes) {
    s = w.Step(s, static_cast<uint8_t>(c));
    if (s == Walker::kDead) return false;
  }
  *out = ToParseState(w, s);
  return true;
}

GrammarImpl::GrammarImpl(Ir ir) : ir_(std::move(ir)) {
  Walker w(ir_);
  std::vector<uint32_t> stacks;
  w.ExpandRule(ir_.root, Walker::kBase, &stacks);
  initial_ = ToParseState(w, w.MakeState(std::move(stacks), {}));
}

std::shared_ptr<MaskCache> GrammarImpl::CacheFor(
    const std::shared_ptr<const TokenIndexImpl>& index) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::erase_if(caches_, [](const auto& c) { return c.first.expired(); });
  for (const auto& [weak, cache] : caches_) {
    if (weak.lock() == index) return cache;
  }
  caches_.emplace_back(index, std::make_shared<MaskCache>(ir_, *index));
  return caches_.back().second;
}

MaskCache::Stats MaskCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.bytes = static_cast<int64_t>(bytes_);
  return s;
}

std::unique_ptr<MaskCache::KeyEntry> MaskCache::Walk(const std::vector<uint32_t>& frames, size_t k,
                                                     Partial partial) {
  ++stats_.key_walks;
  Walker w(ir_);
  const uint32_t top = w.StackOf(std::span<const uint32_t>(frames).last(k));
  const uint32_t start = w.MakeState({top}, partial);
  const bool base_is_parent = k < frames.size();
  const auto& nodes = index_.nodes();
  const auto& sorted = index_.sorted_tokens();

  auto entry = std::make_unique<KeyEntry>();
  TokenMask accepted;
  accepted.bits.assign((index_.vocab_size() + 63) / 64, 0);
  size_t n_accepted = 0;
  // state[d]: the state after a node's first d bytes; below[d]: the base was reached on the
  // way there, so a token that dies deeper may still continue in the frames below.
  std::vector<uint32_t> state(index_.max_depth() + 1);
  std::vector<uint8_t> below(index_.max_depth() + 1, 0);
  state[0] = start;
  for (size_t i = 0; i < nodes.size();) {
    const TokenIndexImpl::Node& n = nodes[i];
    const uint32_t s = w.Step(state[n.depth - 1], n.byte);
    if (s == Walker::kDead) {
      if (below[n.depth - 1]) {
        entry->uncertain.insert(entry->uncertain.end(), sorted.begin() + n.tok_begin,
                                sorted.begin() + n.tok_end);
      }
      i = n.end;
      continue;
    }
    state[n.depth] = s;
    below[n.depth] = base_is_parent && (below[n.depth - 1] || w.has_base(s));
    for (uint32_t j = n.tok_begin; j < n.tok_here; ++j) accepted.Set(sorted[j]);
    n_accepted += n.tok_here - n.tok_begin;
    ++i;
  }
  if (entry->uncertain.size() > max_uncertain && base_is_parent) {
    entry->uncertain.clear();
    entry->uncertain.shrink_to_fit();
    entry->deeper = true;
    ++stats_.deeper_keys;
    return entry;
  }
  if (n_accepted * 32 < accepted.bits.size() * 64) {  // sparse is smaller
    for (size_t w64 = 0; w64 < accepted.bits.size(); ++w64) {
      for (uint64_t b = accepted.bits[w64]; b != 0; b &= b - 1) {
        entry->ids.push_back(static_cast<int32_t>(w64 * 64 + __builtin_ctzll(b)));
      }
    }
  } else {
    entry->bits = std::move(accepted.bits);
  }
  return entry;
}

const MaskCache::KeyEntry& MaskCache::EntryFor(const std::vector<uint32_t>& frames,
                                               Partial partial) {
  size_t k = std::min(first_key_frames, frames.size());
  std::vector<uint32_t> key;
  while (true) {
    key.assign({partial.Encode(), k < frames.size() ? 1u : 0u});
    key.insert(key.end(), frames.end() - k, frames.end());
    auto it = keys_.find(key);
    if (it == keys_.end()) {
      std::unique_ptr<KeyEntry> e = Walk(frames, k, partial);
      bytes_ +=
          key.size() * 4 + e->bits.size() * 8 + (e->ids.size() + e->uncertain.size()) * 4 + 64;
      it = keys_.emplace(key, std::move(e)).first;
    }
    if (!it->second->deeper || k == frames.size()) return *it->second;
    k = std::min(frames.size(), k * 2);
  }
}

std::shared_ptr<const TokenMask> MaskCache::Mask(const ParseState& state) {
  std::vector<uint32_t> key;
  key.push_back(state.partial.Encode());
  for (const auto& frames : state.stacks) {
    key.push_back(static_cast<uint32_t>(frames.size()));
    key.insert(key.end(), frames.begin(), frames.end());
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = states_.find(key); it != states_.end()) {
    ++stats_.state_hits;
    return it->second;
  }
  ++stats_.state_misses;
  auto mask = std::make_shared<TokenMask>();
  mask->bits.assign((index_.vocab_size() + 63) / 64, 0);
  bool can_end = false;
  std::vector<const KeyEntry*> entries;
  for (const auto& frames : state.stacks) {
    if (frames.empty()) {
      can_end = state.partial.remain == 0;
      entries.push_back(nullptr);
      continue;
    }
    const KeyEntry& e = EntryFor(frames, state.partial);
    entries.push_back(&e);
    if (!e.bits.empty()) {
      for (size_t w = 0; w < e.bits.size(); ++w) mask->bits[w] |= e.bits[w];
    }
    for (const int32_t t : e.ids) mask->Set(t);
  }
  // Tokens that leave a stack's top frames: run them on the whole stack.
  Walker full(ir_);
  for (size_t i = 0; i < state.stacks.size(); ++i) {
    if (entries[i] == nullptr || entries[i]->uncertain.empty()) continue;
    const uint32_t start = full.MakeState({full.StackOf(state.stacks[i])}, state.partial);
    for (const int32_t t : entries[i]->uncertain) {
      if (mask->Test(t)) continue;
      ++stats_.uncertain_checks;
      uint32_t s = start;
      for (const char c : index_.bytes(t)) {
        s = full.Step(s, static_cast<uint8_t>(c));
        if (s == Walker::kDead) break;
      }
      if (s != Walker::kDead) mask->Set(t);
    }
  }
  if (can_end) {
    for (const int32_t t : index_.eog_ids()) mask->Set(t);
  }
  for (const uint64_t b : mask->bits) mask->any = mask->any || b != 0;
  bytes_ += key.size() * 4 + mask->bits.size() * 8 + 64;
  MaybeEvict();
  states_.emplace(std::move(key), mask);
  return mask;
}

void MaskCache::MaybeEvict() {
  if (bytes_ <= kMaxCacheBytes) return;
  keys_.clear();
  states_.clear();
  bytes_ = 0;
}

}  // namespace loom::grammar::internal
