// GBNF (llama.cpp's grammar dialect) -> Ir: Grammar::Parse, the checks a grammar must pass, and
// ToString().
#include <algorithm>
#include <functional>
#include <list>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_impl.h"

namespace loom::grammar {
namespace internal {
namespace {

constexpr int kMaxRepetition = 10000;  // bound in x{m,n}
constexpr size_t kMaxElements = 4'000'000;

struct PElem {
  ElemKind kind;
  uint32_t arg;
};
using PSeq = std::vector<PElem>;

struct PRule {
  std::string name;  // empty for generated rules until Flatten()
  std::vector<PSeq> alts;
  bool defined = false;
  bool generated = false;
  uint32_t parent = 0;  // generated: the user rule it was written in
  size_t pos = 0;       // where it was defined, else first referenced
};

bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

class Parser {
 public:
  explicit Parser(std::string_view src) : src_(src) {}

  absl::StatusOr<Ir> Run(std::string_view root) {
    SkipSpace(true);
    while (!AtEnd()) LOOM_RETURN_IF_ERROR(ParseRule());
    uint32_t root_id = 0;
    LOOM_RETURN_IF_ERROR(Check(root, &root_id));
    return Flatten(root_id);
  }

 private:
  absl::Status Error(size_t pos, std::string_view msg) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < pos && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line;
        col = 1;
      } else if ((static_cast<uint8_t>(src_[i]) & 0xC0) != 0x80) {
        ++col;  // columns count code points
      }
    }
    return absl::InvalidArgumentError(
        absl::StrFormat("grammar error at %d:%d: %s", line, col, msg));
  }
  bool AtEnd() const { return pos_ >= src_.size(); }
  char Peek(size_t ahead = 0) const {
    return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0';
  }

  void SkipSpace(bool newline_ok) {
    while (!AtEnd()) {
      const char c = src_[pos_];
      if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (!AtEnd() && src_[pos_] != '\n' && src_[pos_] != '\r') ++pos_;
      } else {
        break;
      }
    }
  }

  std::string ParseName() {
    const size_t start = pos_;
    while (!AtEnd() && IsNameChar(src_[pos_])) ++pos_;
    return std::string(src_.substr(start, pos_ - start));
  }

  absl::Status ParseRule() {
    const size_t start = pos_;
    const std::string name = ParseName();
    if (name.empty()) return Error(pos_, "expected a rule name");
    SkipSpace(false);
    if (src_.substr(pos_, 3) != "::=") return Error(pos_, "expected '::='");
    pos_ += 3;
    SkipSpace(true);
    const uint32_t id = RuleId(name, start);
    if (rules_[id].defined) return Error(start, absl::StrCat("rule '", name, "' is defined twice"));
    rules_[id].defined = true;
    rules_[id].pos = start;
    std::vector<PSeq> alts;
    LOOM_RETURN_IF_ERROR(ParseAlternates(id, /*nested=*/false, &alts));
    rules_[id].alts = std::move(alts);
    if (Peek() == '\r') ++pos_;
    if (Peek() == '\n') {
      ++pos_;
    } else if (!AtEnd()) {
      return Error(pos_, absl::StrCat("unexpected '", std::string(1, Peek()), "'"));
    }
    SkipSpace(true);
    return absl::OkStatus();
  }

  absl::Status ParseAlternates(uint32_t rule, bool nested, std::vector<PSeq>* alts) {
    PSeq seq;
    LOOM_RETURN_IF_ERROR(ParseSequence(rule, nested, &seq));
    alts->push_back(std::move(seq));
    while (true) {
      // Beyond llama.cpp: a top-level rule may continue on a line that starts with '|'.
      const size_t save = pos_;
      SkipSpace(true);
      if (Peek() != '|') {
        pos_ = save;
        break;
      }
      ++pos_;
      SkipSpace(true);
      PSeq next;
      LOOM_RETURN_IF_ERROR(ParseSequence(rule, nested, &next));
      alts->push_back(std::move(next));
    }
    return absl::OkStatus();
  }

  absl::Status ParseSequence(uint32_t rule, bool nested, PSeq* seq) {
    size_t item = 0;
    bool have_item = false;
    while (!AtEnd()) {
      const size_t start = pos_;
      const char c = Peek();
      if (c == '"') {
        ++pos_;
        item = seq->size();
        have_item = true;
        while (Peek() != '"') {
          if (AtEnd()) return Error(start, "unterminated string literal");
          LOOM_ASSIGN_OR_RETURN(uint32_t cp, ParseChar());
          CharClass cls;
          cls.written = {{cp, cp}};
          seq->push_back({ElemKind::kChar, ClassId(std::move(cls))});
        }
        ++pos_;
      } else if (c == '[') {
        ++pos_;
        CharClass cls;
        if (Peek() == '^') {
          cls.negated = true;
          ++pos_;
        }
        while (Peek() != ']') {
          if (AtEnd()) return Error(start, "unterminated character class");
          const size_t at = pos_;
          LOOM_ASSIGN_OR_RETURN(uint32_t lo, ParseChar());
          uint32_t hi = lo;
          if (Peek() == '-' && Peek(1) != ']' && pos_ + 1 < src_.size()) {
            ++pos_;
            LOOM_ASSIGN_OR_RETURN(hi, ParseChar());
            if (hi < lo) return Error(at, "character range is out of order");
          }
          cls.written.emplace_back(lo, hi);
        }
        ++pos_;
        item = seq->size();
        have_item = true;
        seq->push_back({ElemKind::kChar, ClassId(std::move(cls))});
      } else if (c == '.') {
        ++pos_;
        CharClass cls;
        cls.any = true;
        item = seq->size();
        have_item = true;
        seq->push_back({ElemKind::kChar, ClassId(std::move(cls))});
      } else if (IsNameChar(c)) {
        const std::string name = ParseName();
        item = seq->size();
        have_item = true;
        seq->push_back({ElemKind::kRef, RuleId(name, start)});
      } else if (c == '(') {
        ++pos_;
        SkipSpace(true);
        const uint32_t sub = NewRule(rule, start);
        std::vector<PSeq> alts;
        LOOM_RETURN_IF_ERROR(ParseAlternates(sub, /*nested=*/true, &alts));
        if (Peek() != ')') return Error(pos_, "expected ')'");
        ++pos_;
        rules_[sub].alts = std::move(alts);
        item = seq->size();
        have_item = true;
        seq->push_back({ElemKind::kRef, sub});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (!have_item) {
          return Error(pos_, absl::StrCat("'", std::string(1, c), "' follows nothing"));
        }
        int min = 0, max = -1;
        ++pos_;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') LOOM_RETURN_IF_ERROR(ParseBounds(nested, &min, &max));
        LOOM_RETURN_IF_ERROR(Repeat(rule, seq, item, min, max, start));
      } else {
        break;
      }
      SkipSpace(nested);
    }
    return absl::OkStatus();
  }

  absl::Status ParseBounds(bool nested, int* min, int* max) {
    auto parse_int = [&](int* out) -> absl::Status {
      const size_t start = pos_;
      int64_t v = 0;
      while (Peek() >= '0' && Peek() <= '9') {
        v = v * 10 + (Peek() - '0');
        if (v > kMaxRepetition) {
          return Error(start, absl::StrCat("repetition bound over ", kMaxRepetition));
        }
        ++pos_;
      }
      if (pos_ == start) return Error(pos_, "expected a number");
      *out = static_cast<int>(v);
      return absl::OkStatus();
    };
    SkipSpace(nested);
    const size_t start = pos_;
    LOOM_RETURN_IF_ERROR(parse_int(min));
    SkipSpace(nested);
    if (Peek() == '}') {
      ++pos_;
      *max = *min;
      return absl::OkStatus();
    }
    if (Peek() != ',') return Error(pos_, "expected ',' or '}'");
    ++pos_;
    SkipSpace(nested);
    *max = -1;
    if (Peek() >= '0' && Peek() <= '9') {
      LOOM_RETURN_IF_ERROR(parse_int(max));
      SkipSpace(nested);
    }
    if (Peek() != '}') return Error(pos_, "expected '}'");
    ++pos_;
    if (*max >= 0 && *max < *min) return Error(start, "repetition maximum is below its minimum");
    return absl::OkStatus();
  }

  // Replaces seq[item..] by `min` copies of it followed by up to max - min optional ones (a
  // chain of generated rules, each a tail call) or, unbounded, a generated `r ::= item r | `.
  absl::Status Repeat(uint32_t rule, PSeq* seq, size_t item, int min, int max, size_t pos) {
    const PSeq x(seq->begin() + item, seq->end());
    seq->resize(item);
    if (x.empty()) return absl::OkStatus();  // repeating nothing is nothing
    total_ += x.size() * (min + std::max(max - min, 1) + 1);
    if (total_ > kMaxElements) return Error(pos, "the grammar is too large");
    for (int i = 0; i < min; ++i) seq->insert(seq->end(), x.begin(), x.end());
    if (max < 0) {
      const uint32_t star = NewRule(rule, pos);
      PSeq loop = x;
      loop.push_back({ElemKind::kRef, star});
      rules_[star].alts = {std::move(loop), PSeq()};
      seq->push_back({ElemKind::kRef, star});
    } else if (max > min) {
      int64_t next = -1;
      for (int k = 0; k < max - min; ++k) {
        const uint32_t r = NewRule(rule, pos);
        PSeq once = x;
        if (next >= 0) once.push_back({ElemKind::kRef, static_cast<uint32_t>(next)});
        rules_[r].alts = {std::move(once), PSeq()};
        next = r;
      }
      seq->push_back({ElemKind::kRef, static_cast<uint32_t>(next)});
    }
    return absl::OkStatus();
  }

  // One character of a literal or class: an escape or a UTF-8 sequence.
  absl::StatusOr<uint32_t> ParseChar() {
    const size_t start = pos_;
    const uint8_t c = static_cast<uint8_t>(Peek());
    if (c == '\\') {
      const char e = Peek(1);
      pos_ += 2;
      int digits = 0;
      switch (e) {
        case 'x':
          digits = 2;
          break;
        case 'u':
          digits = 4;
          break;
        case 'U':
          digits = 8;
          break;
        case 't':
          return '\t';
        case 'r':
          return '\r';
        case 'n':
          return '\n';
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-':
        case '^':
        case '/':
          return static_cast<uint32_t>(e);
        default:
          return Error(start, "unknown escape");
      }
      uint32_t v = 0;
      for (int i = 0; i < digits; ++i) {
        const char h = Peek();
        int d = -1;
        if (h >= '0' && h <= '9') d = h - '0';
        if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
        if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
        if (d < 0) return Error(start, absl::StrCat("expected ", digits, " hex digits"));
        v = v * 16 + d;
        ++pos_;
      }
      if (v > kMaxCodePoint || (v >= 0xD800 && v <= 0xDFFF)) {
        return Error(start, "escape is not a Unicode scalar value");
      }
      return v;
    }
    if (c < 0x80) {
      ++pos_;
      return c;
    }
    const int len = Utf8SequenceLength(c);
    uint32_t v = c & (0x7F >> len);
    for (int i = 1; i < len; ++i) {
      const uint8_t b = static_cast<uint8_t>(Peek(i));
      if ((b & 0xC0) != 0x80) return Error(start, "invalid UTF-8");
      v = v << 6 | (b & 0x3F);
    }
    if (len == 0 || v < Utf8MinCodePoint(len) || v > Utf8MaxCodePoint(len) ||
        (v >= 0xD800 && v <= 0xDFFF)) {
      return Error(start, "invalid UTF-8");
    }
    pos_ += len;
    return v;
  }

  uint32_t RuleId(const std::string& name, size_t pos) {
    auto [it, inserted] = ids_.try_emplace(name, static_cast<uint32_t>(rules_.size()));
    if (inserted) {
      PRule r;
      r.name = name;
      r.pos = pos;
      rules_.push_back(std::move(r));
    }
    return it->second;
  }

  uint32_t NewRule(uint32_t parent, size_t pos) {
    PRule r;
    r.generated = true;
    r.defined = true;
    r.parent = rules_[parent].generated ? rules_[parent].parent : parent;
    r.pos = pos;
    rules_.push_back(std::move(r));
    return static_cast<uint32_t>(rules_.size() - 1);
  }

  uint32_t ClassId(CharClass cls) {
    std::string key = cls.any ? "." : cls.negated ? "^" : "";
    for (const auto& [lo, hi] : cls.written) absl::StrAppend(&key, lo, "-", hi, ",");
    auto [it, inserted] = class_ids_.try_emplace(key, static_cast<uint32_t>(classes_.size()));
    if (inserted) {
      cls.Finalize();
      classes_.push_back(std::move(cls));
    }
    return it->second;
  }

  std::string Describe(uint32_t r) const {
    return rules_[r].generated
               ? absl::StrCat("a group or repetition in rule '", rules_[rules_[r].parent].name, "'")
               : absl::StrCat("rule '", rules_[r].name, "'");
  }

  absl::Status Check(std::string_view root, uint32_t* root_id) {
    auto it = ids_.find(std::string(root));
    if (it == ids_.end() || !rules_[it->second].defined) {
      return absl::InvalidArgumentError(
          absl::StrCat("grammar error: no rule named '", std::string(root), "'"));
    }
    *root_id = it->second;
    for (const PRule& r : rules_) {
      if (!r.defined) return Error(r.pos, absl::StrCat("undefined rule '", r.name, "'"));
    }
    const size_t n = rules_.size();
    // Nullable rules (derive the empty string) and productive ones (derive some string).
    std::vector<bool> nullable(n, false), productive(n, false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        for (const PSeq& alt : rules_[r].alts) {
          bool nul = true, prod = true;
          for (const PElem& e : alt) {
            if (e.kind == ElemKind::kChar) nul = false;
            if (e.kind == ElemKind::kRef) {
              nul = nul && nullable[e.arg];
              prod = prod && productive[e.arg];
            }
          }
          if (nul && !nullable[r]) nullable[r] = changed = true;
          if (prod && !productive[r]) productive[r] = changed = true;
        }
      }
    }
    for (size_t r = 0; r < n; ++r) {
      if (!productive[r]) {
        return Error(rules_[r].pos, absl::StrCat(Describe(r),
                                                 " can never finish: every "
                                                 "alternative needs itself again"));
      }
    }
    // Left recursion: a rule reachable from itself through leftmost, possibly-empty prefixes.
    std::vector<std::vector<uint32_t>> left(n);
    for (size_t r = 0; r < n; ++r) {
      for (const PSeq& alt : rules_[r].alts) {
        for (const PElem& e : alt) {
          if (e.kind == ElemKind::kChar) break;
          left[r].push_back(e.arg);
          if (!nullable[e.arg]) break;
        }
      }
    }
    std::vector<int> color(n, 0);  // 0 unseen, 1 on the path, 2 done
    int64_t cycle = -1;
    std::function<void(uint32_t)> dfs = [&](uint32_t r) {
      color[r] = 1;
      for (const uint32_t next : left[r]) {
        if (cycle >= 0) return;
        if (color[next] == 1) {
          cycle = next;
          return;
        }
        if (color[next] == 0) dfs(next);
      }
      color[r] = 2;
    };
    for (size_t r = 0; r < n && cycle < 0; ++r) {
      if (color[r] == 0) dfs(static_cast<uint32_t>(r));
    }
    if (cycle >= 0) {
      const std::string hint = rules_[cycle].generated ? " (a repetition of something that can "
                                                         "match the empty string?)"
                                                       : "";
      return Error(rules_[cycle].pos, absl::StrCat(Describe(cycle), " is left-recursive", hint));
    }
    return absl::OkStatus();
  }

  Ir Flatten(uint32_t root) {
    Ir ir;
    ir.root = root;
    ir.classes = std::move(classes_);
    absl::flat_hash_map<uint32_t, int> counter;
    for (PRule& r : rules_) {
      Rule out;
      out.generated = r.generated;
      if (r.generated) {
        // parent-N, unique against every written name.
        do {
          out.name = absl::StrCat(rules_[r.parent].name, "-", ++counter[r.parent]);
        } while (ids_.contains(out.name));
      } else {
        out.name = r.name;
      }
      for (const PSeq& alt : r.alts) {
        out.alts.push_back(static_cast<uint32_t>(ir.elems.size()));
        for (const PElem& e : alt) ir.elems.push_back({e.kind, e.arg});
        ir.elems.push_back({ElemKind::kEnd, 0});
      }
      ir.rules.push_back(std::move(out));
    }
    return ir;
  }

  std::string_view src_;
  size_t pos_ = 0;
  size_t total_ = 0;
  std::vector<PRule> rules_;
  absl::flat_hash_map<std::string, uint32_t> ids_;
  std::vector<CharClass> classes_;
  absl::flat_hash_map<std::string, uint32_t> class_ids_;
};

void AppendEscaped(uint32_t cp, bool in_class, std::string* out) {
  switch (cp) {
    case '\n':
      *out += "\\n";
      return;
    case '\r':
      *out += "\\r";
      return;
    case '\t':
      *out += "\\t";
      return;
    case '\\':
      *out += "\\\\";
      return;
    case '"':
      *out += "\\\"";
      return;
    default:
      break;
  }
  if (cp < 0x20 || cp == 0x7F || (in_class && (cp == ']' || cp == '-' || cp == '^' || cp == '['))) {
    absl::StrAppendFormat(out, "\\x%02X", cp);
    return;
  }
  AppendUtf8(cp, out);
}

}  // namespace

std::string GrammarImpl::ToString() const {
  std::string out;
  auto single = [&](const Elem& e) {
    const CharClass& c = ir_.classes[e.arg];
    return e.kind == ElemKind::kChar && !c.any && !c.negated && c.written.size() == 1 &&
           c.written[0].first == c.written[0].second;
  };
  for (const Rule& r : ir_.rules) {
    absl::StrAppend(&out, r.name, " ::=");
    for (size_t a = 0; a < r.alts.size(); ++a) {
      if (a > 0) out += " |";
      if (ir_.elems[r.alts[a]].kind == ElemKind::kEnd) out += " \"\"";  // an empty alternative
      for (uint32_t p = r.alts[a]; ir_.elems[p].kind != ElemKind::kEnd;) {
        const Elem& e = ir_.elems[p];
        out += ' ';
        if (e.kind == ElemKind::kRef) {
          out += ir_.rules[e.arg].name;
          ++p;
        } else if (single(e)) {
          out += '"';
          for (; ir_.elems[p].kind != ElemKind::kEnd && single(ir_.elems[p]); ++p) {
            AppendEscaped(ir_.classes[ir_.elems[p].arg].written[0].first, false, &out);
          }
          out += '"';
        } else {
          const CharClass& c = ir_.classes[e.arg];
          if (c.any) {
            out += '.';
          } else {
            out += c.negated ? "[^" : "[";
            for (const auto& [lo, hi] : c.written) {
              AppendEscaped(lo, true, &out);
              if (hi != lo) {
                out += '-';
                AppendEscaped(hi, true, &out);
              }
            }
            out += ']';
          }
          ++p;
        }
      }
    }
    out += '\n';
  }
  return out;
}

}  // namespace internal

absl::StatusOr<std::shared_ptr<const Grammar>> Grammar::Parse(std::string_view gbnf,
                                                              std::string_view root) {
  // Identical grammars (a JSON schema sent with every request) share one compiled grammar and
  // so its warm mask caches.
  static std::mutex mu;
  static std::list<std::pair<std::string, std::shared_ptr<const Grammar>>> recent;
  constexpr size_t kRecent = 16;
  std::string key = absl::StrCat(std::string(root), "\n", std::string(gbnf));
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = recent.begin(); it != recent.end(); ++it) {
      if (it->first == key) {
        recent.splice(recent.begin(), recent, it);
        return recent.front().second;
      }
    }
  }
  internal::Parser parser(gbnf);
  LOOM_ASSIGN_OR_RETURN(internal::Ir ir, parser.Run(root));
  std::shared_ptr<const Grammar> g = std::make_shared<const internal::GrammarImpl>(std::move(ir));
  std::lock_guard<std::mutex> lock(mu);
  recent.emplace_front(std::move(key), g);
  if (recent.size() > kRecent) recent.pop_back();
  return g;
}

std::string GbnfLiteral(std::string_view utf8) {
  std::string out = "\"";
  for (const char ch : utf8) {
    const uint8_t c = static_cast<uint8_t>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02X", c);
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

}  // namespace loom::grammar
