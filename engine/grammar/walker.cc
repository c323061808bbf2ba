#include "engine/grammar/walker.h"

#include <algorithm>

namespace loom::grammar::internal {
namespace {

// Expansion steps one transition may take before the set is cut (pathological grammars only).
constexpr int64_t kMaxWork = 1 << 20;

bool IsSurrogate(uint32_t cp) { return cp >= 0xD800 && cp <= 0xDFFF; }

}  // namespace

void CharClass::Finalize() {
  std::vector<std::pair<uint32_t, uint32_t>> set;
  if (any) {
    set.emplace_back(0, kMaxCodePoint);
  } else {
    set = written;
    std::sort(set.begin(), set.end());
    std::vector<std::pair<uint32_t, uint32_t>> merged;
    for (const auto& r : set) {
      if (!merged.empty() && r.first <= merged.back().second + 1) {
        merged.back().second = std::max(merged.back().second, r.second);
      } else {
        merged.push_back(r);
      }
    }
    set = std::move(merged);
    if (negated) {
      std::vector<std::pair<uint32_t, uint32_t>> comp;
      uint32_t next = 0;
      for (const auto& r : set) {
        if (r.first > next) comp.emplace_back(next, r.first - 1);
        next = r.second + 1;
      }
      if (next <= kMaxCodePoint) comp.emplace_back(next, kMaxCodePoint);
      set = std::move(comp);
    }
  }
  // Remove the surrogates: they are not scalar values, so no UTF-8 encodes them.
  ranges.clear();
  for (auto [lo, hi] : set) {
    hi = std::min(hi, kMaxCodePoint);
    if (lo > hi) continue;
    if (hi < 0xD800 || lo > 0xDFFF) {
      ranges.emplace_back(lo, hi);
      continue;
    }
    if (lo < 0xD800) ranges.emplace_back(lo, 0xD7FF);
    if (hi > 0xDFFF) ranges.emplace_back(0xE000, hi);
  }
  ascii[0] = ascii[1] = 0;
  for (const auto& [lo, hi] : ranges) {
    for (uint32_t c = lo; c <= hi && c < 128; ++c) ascii[c >> 6] |= uint64_t{1} << (c & 63);
  }
}

Walker::Walker(const Ir& ir, size_t max_stacks) : ir_(ir), max_stacks_(max_stacks) {
  nodes_.push_back({0, 0});  // kBase
  states_.emplace_back();    // kDead
  next_.assign(256, kDead);  // the dead state stays dead
}

uint32_t Walker::Push(uint32_t pos, uint32_t parent) {
  const uint64_t key = uint64_t{pos} << 32 | parent;
  auto [it, inserted] = node_ids_.try_emplace(key, static_cast<uint32_t>(nodes_.size()));
  if (inserted) nodes_.push_back({pos, parent});
  return it->second;
}

uint32_t Walker::StackOf(std::span<const uint32_t> frames) {
  uint32_t s = kBase;
  for (const uint32_t pos : frames) s = Push(pos, s);
  return s;
}

void Walker::Frames(uint32_t stack, std::vector<uint32_t>* frames) const {
  frames->clear();
  for (uint32_t s = stack; s != kBase; s = nodes_[s].parent) frames->push_back(nodes_[s].pos);
  std::reverse(frames->begin(), frames->end());
}

void Walker::Expand(uint32_t stack, std::vector<uint32_t>* out) {
  if (++work_ > kMaxWork) {
    overflowed_ = true;
    return;
  }
  if (stack == kBase) {
    out->push_back(kBase);
    return;
  }
  const uint32_t pos = nodes_[stack].pos;
  const Elem& e = ir_.elems[pos];
  if (e.kind == ElemKind::kChar) {
    out->push_back(stack);
    return;
  }
  // A rule reference: resume after it (nothing to resume when it ends the alternative: a tail
  // call, so right recursion does not deepen the stack), and enter each alternative.
  uint32_t rest = nodes_[stack].parent;
  if (ir_.elems[pos + 1].kind != ElemKind::kEnd) rest = Push(pos + 1, rest);
  ExpandRule(e.arg, rest, out);
}

void Walker::ExpandRule(uint32_t rule, uint32_t parent, std::vector<uint32_t>* out) {
  for (const uint32_t start : ir_.rules[rule].alts) {
    if (ir_.elems[start].kind == ElemKind::kEnd) {
      Expand(parent, out);  // an empty alternative
    } else {
      Expand(Push(start, parent), out);
    }
  }
}

uint32_t Walker::MakeState(std::vector<uint32_t> stacks, Partial partial) {
  work_ = 0;
  std::sort(stacks.begin(), stacks.end());
  stacks.erase(std::unique(stacks.begin(), stacks.end()), stacks.end());
  if (stacks.size() > max_stacks_) {
    stacks.resize(max_stacks_);
    overflowed_ = true;
  }
  if (stacks.empty()) return kDead;
  std::vector<uint32_t> key;
  key.reserve(stacks.size() + 1);
  key.push_back(partial.Encode());
  key.insert(key.end(), stacks.begin(), stacks.end());
  auto [it, inserted] =
      state_ids_.try_emplace(std::move(key), static_cast<uint32_t>(states_.size()));
  if (inserted) {
    State st;
    st.has_base = stacks.front() == kBase;
    st.stacks = std::move(stacks);
    st.partial = partial;
    states_.push_back(std::move(st));
    next_.resize(next_.size() + 256, -1);
  }
  return it->second;
}

void Walker::Advance(const std::vector<uint32_t>& stacks, uint32_t cp, std::vector<uint32_t>* out) {
  for (const uint32_t s : stacks) {
    if (s == kBase) continue;
    const uint32_t pos = nodes_[s].pos;
    if (!ir_.classes[ir_.elems[pos].arg].Contains(cp)) continue;
    const uint32_t parent = nodes_[s].parent;
    if (ir_.elems[pos + 1].kind == ElemKind::kEnd) {
      Expand(parent, out);
    } else {
      Expand(Push(pos + 1, parent), out);
    }
  }
}

void Walker::Filter(const std::vector<uint32_t>& stacks, Partial p,
                    std::vector<uint32_t>* out) const {
  // The code points this sequence can still become.
  const int shift = 6 * p.remain;
  uint32_t lo = p.value << shift;
  uint32_t hi = lo | ((uint32_t{1} << shift) - 1);
  lo = std::max(lo, Utf8MinCodePoint(p.len));
  hi = std::min(hi, Utf8MaxCodePoint(p.len));
  if (lo > hi) return;
  for (const uint32_t s : stacks) {
    if (s == kBase) continue;
    if (ir_.classes[ir_.elems[nodes_[s].pos].arg].Intersects(lo, hi)) out->push_back(s);
  }
}

uint32_t Walker::StepSlow(uint32_t state, uint8_t byte) {
  work_ = 0;
  std::vector<uint32_t> out;
  const Partial p = states_[state].partial;
  uint32_t result = kDead;
  // `states_[state].stacks` stays valid until MakeState() appends a state.
  const std::vector<uint32_t>& stacks = states_[state].stacks;
  if (p.remain == 0) {
    if (byte < 0x80) {
      Advance(stacks, byte, &out);
      result = MakeState(std::move(out), {});
    } else if (const int len = Utf8SequenceLength(byte); len > 0) {
      const Partial np{static_cast<uint32_t>(byte & (0x7F >> len)), static_cast<uint8_t>(len - 1),
                       static_cast<uint8_t>(len)};
      Filter(stacks, np, &out);
      result = MakeState(std::move(out), np);
    }
  } else if ((byte & 0xC0) == 0x80) {
    Partial np = p;
    np.value = p.value << 6 | (byte & 0x3F);
    --np.remain;
    if (np.remain > 0) {
      Filter(stacks, np, &out);
      result = MakeState(std::move(out), np);
    } else if (np.value >= Utf8MinCodePoint(np.len) && np.value <= Utf8MaxCodePoint(np.len) &&
               !IsSurrogate(np.value)) {
      Advance(stacks, np.value, &out);
      result = MakeState(std::move(out), {});
    }
  }
  next_[size_t{state} * 256 + byte] = static_cast<int32_t>(result);
  return result;
}

}  // namespace loom::grammar::internal
