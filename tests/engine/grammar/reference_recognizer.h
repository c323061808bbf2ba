// Test support: a slow, independent recogniser for a compiled grammar (an Earley parser over code
// points). It answers "is this byte string a prefix of some sentence?" and "is it a sentence?",
// which is what a matcher's mask must agree with, token by token. A Chart parses a prefix once so
// that every token's extension of it is checked from there.
//
//   ReferenceRecognizer ref(GrammarImpl::Of(*grammar).ir());
//   ReferenceRecognizer::Chart chart = ref.Parse("{\"a\"");
//   bool ok = ref.Extend(chart, ":").prefix;
//   bool complete = ref.Extend(ref.Parse("{}"), "").sentence;
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "engine/grammar/grammar_ir.h"

namespace loom::grammar::internal {

class ReferenceRecognizer {
 public:
  struct Item {
    uint32_t pos;     // next element
    uint32_t origin;  // set where the rule started
    uint32_t rule;
    auto operator<=>(const Item&) const = default;
  };
  struct EarleySet {
    std::set<Item> items;
    std::set<uint32_t> nullable_done;  // rules completed with origin == this set
  };
  struct Chart {
    std::vector<EarleySet> sets;  // one per complete code point read, plus the start
    std::string tail;             // trailing bytes of an incomplete UTF-8 sequence
    bool valid = true;            // no parse reads the prefix
  };
  struct Result {
    bool prefix = false;    // some sentence starts with the bytes
    bool sentence = false;  // the bytes are a sentence
    bool final = false;     // a sentence no code point can extend
  };

  explicit ReferenceRecognizer(const Ir& ir) : ir_(ir) {}

 private:
  // A chart's sets (read-only) followed by new ones (written), so that extending a prefix does
  // not copy its chart.
  struct View {
    const std::vector<EarleySet>* base;
    std::vector<EarleySet>* own;
    size_t size() const { return base->size() + own->size(); }
    const EarleySet& operator[](size_t k) const {
      return k < base->size() ? (*base)[k] : (*own)[k - base->size()];
    }
    EarleySet& Last() { return own->back(); }
  };

 public:
  Chart Parse(std::string_view bytes) const {
    Chart c;
    const std::vector<EarleySet> none;
    c.sets.emplace_back();
    View view{&none, &c.sets};
    for (const uint32_t a : ir_.rules[ir_.root].alts) Add(view, {a, 0, ir_.root});
    std::vector<uint32_t> cps;
    if (!Decode(bytes, &cps, &c.tail)) {
      c.valid = false;
      return c;
    }
    for (const uint32_t cp : cps) {
      if (!Scan(view, cp)) {
        c.valid = false;
        return c;
      }
    }
    return c;
  }

  // The prefix `chart` was parsed from, followed by `bytes`.
  Result Extend(const Chart& chart, std::string_view bytes) const {
    Result r;
    if (!chart.valid) return r;
    std::vector<uint32_t> cps;
    std::string tail;
    if (!Decode(chart.tail + std::string(bytes), &cps, &tail)) return r;
    std::vector<EarleySet> own;
    View sets{&chart.sets, &own};
    for (const uint32_t cp : cps) {
      if (!Scan(sets, cp)) return r;
    }
    const EarleySet& last = sets[sets.size() - 1];
    bool can_scan = false;
    for (const Item& it : last.items) {
      const Elem& e = ir_.elems[it.pos];
      if (e.kind == ElemKind::kChar) can_scan = true;
      if (e.kind == ElemKind::kEnd && it.origin == 0 && it.rule == ir_.root) r.sentence = true;
    }
    if (tail.empty()) {
      r.prefix = true;
      r.final = r.sentence && !can_scan;
      return r;
    }
    r.sentence = false;
    // An incomplete sequence: some class must hold a code point it can still become.
    const uint8_t lead = static_cast<uint8_t>(tail[0]);
    const int len = Utf8SequenceLength(lead);
    uint32_t value = lead & (0x7F >> len);
    for (size_t i = 1; i < tail.size(); ++i) value = value << 6 | (tail[i] & 0x3F);
    const int shift = 6 * (len - static_cast<int>(tail.size()));
    uint32_t lo = value << shift, hi = lo | ((1u << shift) - 1);
    lo = std::max(lo, Utf8MinCodePoint(len));
    hi = std::min(hi, Utf8MaxCodePoint(len));
    for (const Item& it : last.items) {
      const Elem& e = ir_.elems[it.pos];
      if (e.kind == ElemKind::kChar && lo <= hi && ir_.classes[e.arg].Intersects(lo, hi)) {
        r.prefix = true;
      }
    }
    return r;
  }

  Result Check(std::string_view bytes) const { return Extend(Parse(bytes), ""); }
  bool IsPrefix(std::string_view bytes) const { return Check(bytes).prefix; }
  bool IsSentence(std::string_view bytes) const { return Check(bytes).sentence; }

 private:
  // Code points, and a trailing incomplete (but so far valid) sequence in `tail`.
  static bool Decode(std::string_view s, std::vector<uint32_t>* cps, std::string* tail) {
    tail->clear();
    for (size_t i = 0; i < s.size();) {
      const uint8_t b = static_cast<uint8_t>(s[i]);
      if (b < 0x80) {
        cps->push_back(b);
        ++i;
        continue;
      }
      const int n = Utf8SequenceLength(b);
      if (n == 0) return false;
      uint32_t v = b & (0x7F >> n);
      int k = 1;
      for (; k < n && i + k < s.size(); ++k) {
        const uint8_t c = static_cast<uint8_t>(s[i + k]);
        if ((c & 0xC0) != 0x80) return false;
        v = v << 6 | (c & 0x3F);
      }
      if (k < n) {  // cut short by the end of the string
        const int shift = 6 * (n - k);
        const uint32_t lo = std::max(v << shift, Utf8MinCodePoint(n));
        const uint32_t hi = std::min(v << shift | ((1u << shift) - 1), Utf8MaxCodePoint(n));
        if (lo > hi) return false;  // overlong or out of range already
        *tail = std::string(s.substr(i));
        return true;
      }
      if (v < Utf8MinCodePoint(n) || v > Utf8MaxCodePoint(n) || (v >= 0xD800 && v <= 0xDFFF)) {
        return false;
      }
      cps->push_back(v);
      i += n;
    }
    return true;
  }

  // Adds `item` to the last set with its predictions and completions (a worklist).
  void Add(View& sets, Item first) const {
    const size_t k = sets.size() - 1;
    EarleySet& set = sets.Last();
    std::vector<Item> work = {first};
    while (!work.empty()) {
      const Item it = work.back();
      work.pop_back();
      if (!set.items.insert(it).second) continue;
      const Elem& e = ir_.elems[it.pos];
      if (e.kind == ElemKind::kRef) {
        for (const uint32_t a : ir_.rules[e.arg].alts) {
          work.push_back({a, static_cast<uint32_t>(k), e.arg});
        }
        if (set.nullable_done.count(e.arg)) work.push_back({it.pos + 1, it.origin, it.rule});
      } else if (e.kind == ElemKind::kEnd) {
        if (it.origin == k) set.nullable_done.insert(it.rule);
        auto complete = [&](const std::set<Item>& parents) {
          for (const Item& p : parents) {
            const Elem& pe = ir_.elems[p.pos];
            if (pe.kind == ElemKind::kRef && pe.arg == it.rule) {
              work.push_back({p.pos + 1, p.origin, p.rule});
            }
          }
        };
        if (it.origin == k) {
          complete(std::set<Item>(set.items));  // a copy: `set` grows meanwhile
        } else {
          complete(sets[it.origin].items);
        }
      }
    }
  }

  bool Scan(View& sets, uint32_t cp) const {
    std::vector<Item> next;
    for (const Item& it : sets[sets.size() - 1].items) {
      const Elem& e = ir_.elems[it.pos];
      if (e.kind == ElemKind::kChar && ir_.classes[e.arg].Contains(cp)) {
        next.push_back({it.pos + 1, it.origin, it.rule});
      }
    }
    if (next.empty()) return false;
    sets.own->emplace_back();
    for (const Item& it : next) Add(sets, it);
    return true;
  }

  const Ir& ir_;
};

}  // namespace loom::grammar::internal
