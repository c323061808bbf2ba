// Internal to engine/grammar (and its tests): the compiled form of a GBNF grammar. The parser
// (parser.cc) lowers repetitions and groups into generated rules, so a grammar is only rules of
// alternatives of code-point classes and rule references, flattened llama.cpp-style into one
// element array where each alternative ends with kEnd. A position is an index into that array.
//
//   const Ir& ir = GrammarImpl::Of(grammar).ir();
//   for (uint32_t start : ir.rules[ir.root].alts) {
//     for (uint32_t p = start; ir.elems[p].kind != ElemKind::kEnd; ++p) { ... }
//   }
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/tokenizer/unicode.h"

namespace loom::grammar::internal {

inline constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// A set of Unicode scalar values (never surrogates), as sorted disjoint inclusive ranges.
struct CharClass {
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  uint64_t ascii[2] = {0, 0};  // membership of 0..127, for the common case

  // How it was written, for ToString(): `written` ranges, negated with [^...], or `.`.
  std::vector<std::pair<uint32_t, uint32_t>> written;
  bool negated = false;
  bool any = false;

  bool Contains(uint32_t cp) const {
    if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
    const auto it = FirstEndingAtOrAfter(cp);
    return it != ranges.end() && it->first <= cp;
  }
  // Some member lies in [lo, hi].
  bool Intersects(uint32_t lo, uint32_t hi) const {
    const auto it = FirstEndingAtOrAfter(lo);
    return it != ranges.end() && it->first <= hi;
  }
  // The first range whose end is >= cp.
  std::vector<std::pair<uint32_t, uint32_t>>::const_iterator FirstEndingAtOrAfter(
      uint32_t cp) const {
    return std::lower_bound(ranges.begin(), ranges.end(), cp,
                            [](const auto& r, uint32_t c) { return r.second < c; });
  }
  // Fills `ranges` and `ascii` from `written`, `negated` and `any`.
  void Finalize();
};

enum class ElemKind : uint8_t { kChar, kRef, kEnd };

struct Elem {
  ElemKind kind = ElemKind::kEnd;
  uint32_t arg = 0;  // kChar: class index; kRef: rule index
};

struct Rule {
  std::string name;
  std::vector<uint32_t> alts;  // position of each alternative's first element
  bool generated = false;      // made by the parser for a group or a repetition
};

struct Ir {
  std::vector<Elem> elems;
  std::vector<CharClass> classes;
  std::vector<Rule> rules;
  uint32_t root = 0;
};

// UTF-8 helpers shared by the walker and the tests.
// The length of the sequence a lead byte starts (2..4), or 0 for ASCII, continuation bytes and
// bytes that never start valid UTF-8 (C0, C1, F5..FF).
inline int Utf8SequenceLength(uint8_t b) {
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}
inline uint32_t Utf8MinCodePoint(int len) {
  return len == 2 ? 0x80 : len == 3 ? 0x800 : len == 4 ? 0x10000 : 0;
}
inline uint32_t Utf8MaxCodePoint(int len) {
  return len == 2 ? 0x7FF : len == 3 ? 0xFFFF : len == 4 ? kMaxCodePoint : 0x7F;
}
// UTF-8 of one code point (the tokenizer's encoder).
using tokenizer::AppendUtf8;

}  // namespace loom::grammar::internal
