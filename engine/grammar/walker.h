// Internal to engine/grammar: the pushdown recogniser a grammar runs on, one byte at a time.
// A parse position is a stack of grammar positions (llama.cpp's "stacks"): the top is the class
// the next code point must match, the frames below are where each enclosing rule resumes. Stacks
// are hash-consed (a stack is an id; pushing is interning (position, parent)), a state is the
// sorted set of stacks every parse could be in plus the UTF-8 sequence read so far, and the
// transition from a state on a byte is computed once and memoised, so walking the token trie
// costs a table lookup per trie node wherever the state repeats (inside a JSON string it does).
//
//   Walker w(ir);
//   std::vector<uint32_t> start;
//   w.ExpandRule(ir.root, Walker::kBase, &start);
//   uint32_t s = w.MakeState(std::move(start), {});
//   for (char c : std::string("{\"a\"")) s = w.Step(s, c);
//   bool ok = s != Walker::kDead;
//
// kBase, the empty stack, is either "the root rule is complete" (a walk from a whole stack) or
// "the frames this walk was not given take over" (a walk from the top frames only, see
// MaskCache). Not thread-safe; walkers are short-lived scratch objects.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "engine/grammar/grammar_ir.h"

namespace loom::grammar::internal {

// An incomplete UTF-8 sequence at the end of the bytes read so far (all parses have read the
// same bytes, so there is one per state).
struct Partial {
  uint32_t value = 0;  // the payload bits read so far
  uint8_t remain = 0;  // continuation bytes still expected; 0 at a code point boundary
  uint8_t len = 0;     // the sequence's length
  uint32_t Encode() const { return value << 8 | uint32_t{remain} << 4 | len; }
  bool operator==(const Partial&) const = default;
};

class Walker {
 public:
  static constexpr uint32_t kBase = 0;  // the empty stack
  static constexpr uint32_t kDead = 0;  // the state with no stacks
  // Stack sets are cut to this many (a sound subset: every stack kept is a real parse).
  static constexpr size_t kDefaultMaxStacks = 2048;

  explicit Walker(const Ir& ir, size_t max_stacks = kDefaultMaxStacks);

  uint32_t Push(uint32_t pos, uint32_t parent);
  // The stack with `frames` (bottom to top) over the base.
  uint32_t StackOf(std::span<const uint32_t> frames);
  // Appends the stacks `stack` expands to: rule references on top are entered until every top
  // is a class (or the stack is the base).
  void Expand(uint32_t stack, std::vector<uint32_t>* out);
  // Appends the expanded stacks at the start of `rule`, returning to `parent`.
  void ExpandRule(uint32_t rule, uint32_t parent, std::vector<uint32_t>* out);
  // Interns a state; `stacks` must be expanded. kDead when empty.
  uint32_t MakeState(std::vector<uint32_t> stacks, Partial partial);
  // The state after reading `byte`; kDead when no parse can read it.
  uint32_t Step(uint32_t state, uint8_t byte) {
    const int32_t next = next_[size_t{state} * 256 + byte];
    return next >= 0 ? static_cast<uint32_t>(next) : StepSlow(state, byte);
  }

  const std::vector<uint32_t>& stacks(uint32_t state) const { return states_[state].stacks; }
  Partial partial(uint32_t state) const { return states_[state].partial; }
  bool has_base(uint32_t state) const { return states_[state].has_base; }
  // Frames of `stack`, bottom to top.
  void Frames(uint32_t stack, std::vector<uint32_t>* frames) const;
  // A stack set was cut to max_stacks, or an expansion ran past its work limit.
  bool overflowed() const { return overflowed_; }
  size_t num_states() const { return states_.size(); }

 private:
  struct Node {
    uint32_t pos;
    uint32_t parent;
  };
  struct State {
    std::vector<uint32_t> stacks;  // sorted stack ids
    Partial partial;
    bool has_base = false;
  };

  uint32_t StepSlow(uint32_t state, uint8_t byte);
  // Stacks whose top class accepts `cp`, advanced past it and expanded.
  void Advance(const std::vector<uint32_t>& stacks, uint32_t cp, std::vector<uint32_t>* out);
  // Stacks whose top class has a code point the partial sequence `p` can still become.
  void Filter(const std::vector<uint32_t>& stacks, Partial p, std::vector<uint32_t>* out) const;

  const Ir& ir_;
  const size_t max_stacks_;
  std::vector<Node> nodes_;
  absl::flat_hash_map<uint64_t, uint32_t> node_ids_;
  std::vector<State> states_;
  absl::flat_hash_map<std::vector<uint32_t>, uint32_t> state_ids_;
  std::vector<int32_t> next_;  // 256 per state; -1: not computed yet
  int64_t work_ = 0;           // expansion steps in the current StepSlow/MakeState
  bool overflowed_ = false;
};

}  // namespace loom::grammar::internal
