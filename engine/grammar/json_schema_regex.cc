// Regex patterns and integer ranges -> GBNF expressions, for json_schema.cc.
#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/grammar_ir.h"
#include "engine/grammar/json_schema_internal.h"

namespace loom::grammar::internal {
namespace {

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;

// A code point inside a GBNF class.
std::string ClassChar(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7F || cp == '\\' || cp == ']' || cp == '[' || cp == '-' || cp == '^' ||
      cp == '"') {
    return absl::StrFormat("\\x%02X", cp);
  }
  std::string s;
  AppendUtf8(cp, &s);
  return s;
}

std::string ClassText(const Ranges& ranges, bool negated) {
  std::string out = negated ? "[^" : "[";
  for (const auto& [lo, hi] : ranges) {
    out += ClassChar(lo);
    if (hi != lo) absl::StrAppend(&out, "-", ClassChar(hi));
  }
  return out + "]";
}

// How code point `cp` appears inside a JSON string (escaped where JSON requires it).
std::string JsonEscaped(uint32_t cp) {
  switch (cp) {
    case '"':
      return "\\\"";
    case '\\':
      return "\\\\";
    case '\n':
      return "\\n";
    case '\t':
      return "\\t";
    case '\r':
      return "\\r";
    case '\b':
      return "\\b";
    case '\f':
      return "\\f";
    default:
      break;
  }
  if (cp < 0x20) return absl::StrFormat("\\u%04x", cp);
  std::string s;
  AppendUtf8(cp, &s);
  return s;
}

// Characters a JSON string cannot hold unescaped.
constexpr char kUnescapable[] = "\"\\\\\\x00-\\x1F";

class RegexConverter {
 public:
  explicit RegexConverter(std::string_view p) : p_(p) {}

  absl::StatusOr<std::string> Run() {
    if (!p_.empty() && p_[0] == '^') ++pos_;
    size_t end = p_.size();
    if (end > pos_ && p_[end - 1] == '$' && (end < 2 || p_[end - 2] != '\\')) --end;
    p_ = p_.substr(0, end);
    LOOM_ASSIGN_OR_RETURN(std::string out, Alternation());
    if (pos_ < p_.size()) return Unsupported(std::string(1, p_[pos_]));
    return out.empty() ? "\"\"" : out;
  }

 private:
  absl::Status Unsupported(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported regex construct '", std::string(what), "' in pattern"));
  }
  bool AtEnd() const { return pos_ >= p_.size(); }

  absl::StatusOr<std::string> Alternation() {
    std::vector<std::string> alts;
    LOOM_ASSIGN_OR_RETURN(std::string first, Sequence());
    alts.push_back(first.empty() ? "\"\"" : first);
    while (!AtEnd() && p_[pos_] == '|') {
      ++pos_;
      LOOM_ASSIGN_OR_RETURN(std::string next, Sequence());
      alts.push_back(next.empty() ? "\"\"" : next);
    }
    return alts.size() == 1 ? alts[0] : absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
  }

  absl::StatusOr<std::string> Sequence() {
    std::vector<std::string> items;
    while (!AtEnd() && p_[pos_] != '|' && p_[pos_] != ')') {
      LOOM_ASSIGN_OR_RETURN(std::string atom, Atom());
      LOOM_ASSIGN_OR_RETURN(std::string quant, Quantifier());
      items.push_back(quant.empty() ? atom : absl::StrCat("(", atom, ")", quant));
    }
    return absl::StrJoin(items, " ");
  }

  absl::StatusOr<std::string> Quantifier() {
    if (AtEnd()) return std::string();
    const char c = p_[pos_];
    std::string q;
    if (c == '*' || c == '+' || c == '?') {
      ++pos_;
      q = std::string(1, c);
    } else if (c == '{') {
      const size_t close = p_.find('}', pos_);
      if (close == std::string_view::npos) return Unsupported("{");
      const std::string body(p_.substr(pos_ + 1, close - pos_ - 1));
      int m = 0, n = 0;
      char extra = 0;
      if (std::sscanf(body.c_str(), "%d,%d%c", &m, &n, &extra) == 2 && m >= 0 && n >= m) {
        q = absl::StrCat("{", m, ",", n, "}");
      } else if (body.size() > 1 && body.back() == ',' &&
                 std::sscanf(body.c_str(), "%d,%c", &m, &extra) == 1 && m >= 0) {
        q = absl::StrCat("{", m, ",}");
      } else if (std::sscanf(body.c_str(), "%d%c", &m, &extra) == 1 && m >= 0) {
        q = absl::StrCat("{", m, "}");
      } else {
        return Unsupported(absl::StrCat("{", body, "}"));
      }
      if (std::max(m, n) > 10000) return Unsupported(absl::StrCat("{", body, "} (over 10000)"));
      pos_ = close + 1;
    } else {
      return std::string();
    }
    if (!AtEnd() && (p_[pos_] == '?' || p_[pos_] == '+')) {
      return Unsupported(absl::StrCat(q, std::string(1, p_[pos_])));  // lazy / possessive
    }
    return q;
  }

  absl::StatusOr<std::string> Atom() {
    const char c = p_[pos_];
    if (c == '(') {
      ++pos_;
      if (p_.substr(pos_, 2) == "?:") {
        pos_ += 2;
      } else if (!AtEnd() && p_[pos_] == '?') {
        return Unsupported(p_.substr(pos_ - 1, 3));
      }
      LOOM_ASSIGN_OR_RETURN(std::string inner, Alternation());
      if (AtEnd() || p_[pos_] != ')') return Unsupported("(");
      ++pos_;
      return absl::StrCat("(", inner.empty() ? "\"\"" : inner, ")");
    }
    if (c == '[') return Class();
    if (c == '.') {
      ++pos_;
      return absl::StrCat("([^", kUnescapable, "] | \"\\\\\" [\"\\\\])");
    }
    if (c == '\\') {
      ++pos_;
      if (AtEnd()) return Unsupported("\\");
      const char e = p_[pos_++];
      switch (e) {
        case 'd':
          return std::string("[0-9]");
        case 'w':
          return std::string("[a-zA-Z0-9_]");
        case 's':
          return std::string("([ ] | \"\\\\t\" | \"\\\\n\" | \"\\\\r\")");
        case 'D':
          return absl::StrCat("[^0-9", kUnescapable, "]");
        case 'W':
          return absl::StrCat("[^a-zA-Z0-9_", kUnescapable, "]");
        case 'S':
          return absl::StrCat("[^ ", kUnescapable, "]");
        default:
          break;
      }
      LOOM_ASSIGN_OR_RETURN(uint32_t cp, EscapedChar(e));
      return GbnfLiteral(JsonEscaped(cp));
    }
    if (c == '^' || c == '$' || c == '*' || c == '+' || c == '?' || c == '{' || c == '}' ||
        c == ']') {
      return Unsupported(std::string(1, c));
    }
    LOOM_ASSIGN_OR_RETURN(uint32_t cp, Utf8Char());
    return GbnfLiteral(JsonEscaped(cp));
  }

  // The code point after a backslash (already consumed along with `e`).
  absl::StatusOr<uint32_t> EscapedChar(char e) {
    switch (e) {
      case 'n':
        return '\n';
      case 't':
        return '\t';
      case 'r':
        return '\r';
      case 'f':
        return '\f';
      case 'v':
        return '\v';
      case 'u': {
        if (pos_ + 4 > p_.size()) return Unsupported("\\u");
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
          const char h = p_[pos_++];
          const int d = h >= '0' && h <= '9'   ? h - '0'
                        : h >= 'a' && h <= 'f' ? h - 'a' + 10
                        : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                               : -1;
          if (d < 0) return Unsupported("\\u");
          v = v * 16 + d;
        }
        if (v >= 0xD800 && v <= 0xDFFF) return Unsupported("\\u surrogate");
        return v;
      }
      default:
        break;
    }
    if (std::string_view(".-\\/()[]{}*+?|^$\"'#&,:;<=>!@%~`_ ").find(e) != std::string_view::npos) {
      return static_cast<uint32_t>(static_cast<uint8_t>(e));
    }
    return Unsupported(absl::StrCat("\\", std::string(1, e)));
  }

  absl::StatusOr<uint32_t> Utf8Char() {
    const uint8_t b = static_cast<uint8_t>(p_[pos_]);
    if (b < 0x80) {
      ++pos_;
      return b;
    }
    const int len = Utf8SequenceLength(b);
    if (len == 0 || pos_ + len > p_.size()) return Unsupported("invalid UTF-8");
    uint32_t v = b & (0x7F >> len);
    for (int i = 1; i < len; ++i) v = v << 6 | (p_[pos_ + i] & 0x3F);
    pos_ += len;
    return v;
  }

  absl::StatusOr<std::string> Class() {
    ++pos_;  // '['
    bool negated = false;
    if (!AtEnd() && p_[pos_] == '^') {
      negated = true;
      ++pos_;
    }
    Ranges ranges;
    bool first = true;
    while (true) {
      if (AtEnd()) return Unsupported("[");
      if (p_[pos_] == ']' && !first) break;
      first = false;
      uint32_t lo;
      if (p_[pos_] == '\\') {
        ++pos_;
        if (AtEnd()) return Unsupported("\\");
        const char e = p_[pos_++];
        if (e == 'd') {
          ranges.emplace_back('0', '9');
          continue;
        }
        if (e == 'w') {
          ranges.insert(ranges.end(), {{'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {'_', '_'}});
          continue;
        }
        if (e == 's') {
          ranges.insert(ranges.end(), {{' ', ' '}, {'\t', '\t'}, {'\n', '\n'}, {'\r', '\r'}});
          continue;
        }
        LOOM_ASSIGN_OR_RETURN(lo, EscapedChar(e));
      } else {
        LOOM_ASSIGN_OR_RETURN(lo, Utf8Char());
      }
      uint32_t hi = lo;
      if (pos_ + 1 < p_.size() && p_[pos_] == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        if (p_[pos_] == '\\') {
          ++pos_;
          if (AtEnd()) return Unsupported("\\");
          LOOM_ASSIGN_OR_RETURN(hi, EscapedChar(p_[pos_++]));
        } else {
          LOOM_ASSIGN_OR_RETURN(hi, Utf8Char());
        }
        if (hi < lo) return Unsupported("out-of-order range");
      }
      ranges.emplace_back(lo, hi);
    }
    ++pos_;  // ']'
    if (negated) {
      ranges.insert(ranges.end(), {{'"', '"'}, {'\\', '\\'}, {0, 0x1F}});
      return ClassText(ranges, true);
    }
    // A JSON string holds '"', '\' and control characters only escaped.
    Ranges plain;
    std::vector<std::string> alts;
    for (const auto& [lo, hi] : ranges) {
      uint32_t a = lo;
      for (uint32_t c = lo; c <= hi && c <= 0x7F; ++c) {
        if (c < 0x20 || c == '"' || c == '\\') {
          if (a < c) plain.emplace_back(a, c - 1);
          alts.push_back(GbnfLiteral(JsonEscaped(c)));
          a = c + 1;
        }
      }
      if (a <= hi) plain.emplace_back(a, hi);
    }
    if (!plain.empty()) alts.insert(alts.begin(), ClassText(plain, false));
    if (alts.empty()) return Unsupported("[] (an empty class)");
    return alts.size() == 1 ? alts[0] : absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
  }

  std::string_view p_;
  size_t pos_ = 0;
};

// Decimal strings of equal length n, lo <= hi (inner digits may be leading zeros).
std::string SameLength(const std::string& lo, const std::string& hi) {
  const size_t n = lo.size();
  if (lo == hi) return absl::StrCat("\"", lo, "\"");
  if (n == 1) return absl::StrCat("[", lo, "-", hi, "]");
  if (lo[0] == hi[0]) {
    return absl::StrCat("\"", lo.substr(0, 1), "\" (", SameLength(lo.substr(1), hi.substr(1)), ")");
  }
  const std::string lo_rest = lo.substr(1), hi_rest = hi.substr(1);
  const bool lo_zero = lo_rest == std::string(n - 1, '0');
  const bool hi_nine = hi_rest == std::string(n - 1, '9');
  std::vector<std::string> alts;
  char first = lo[0], last = hi[0];
  if (!lo_zero) {
    alts.push_back(absl::StrCat("\"", lo.substr(0, 1), "\" (",
                                SameLength(lo_rest, std::string(n - 1, '9')), ")"));
    ++first;
  }
  if (!hi_nine) --last;
  if (first <= last) {
    alts.push_back(absl::StrCat("[", std::string(1, first), "-", std::string(1, last), "] [0-9]{",
                                n - 1, "}"));
  }
  if (!hi_nine) {
    alts.push_back(absl::StrCat("\"", hi.substr(0, 1), "\" (",
                                SameLength(std::string(n - 1, '0'), hi_rest), ")"));
  }
  return absl::StrJoin(alts, " | ");
}

constexpr int kMaxDigits = 16;

// Non-negative integers in [lo, hi] (hi unset: up to 16 digits), lo <= hi.
std::string NonNegative(uint64_t lo, std::optional<uint64_t> hi) {
  const std::string a = std::to_string(lo);
  const int la = static_cast<int>(a.size());
  std::vector<std::string> alts;
  if (!hi) {
    alts.push_back(SameLength(a, std::string(la, '9')));
    if (la < kMaxDigits) alts.push_back(absl::StrCat("[1-9] [0-9]{", la, ",", kMaxDigits - 1, "}"));
  } else {
    const std::string b = std::to_string(*hi);
    const int lb = static_cast<int>(b.size());
    if (la == lb) {
      alts.push_back(SameLength(a, b));
    } else {
      alts.push_back(SameLength(a, std::string(la, '9')));
      if (lb - la >= 2) alts.push_back(absl::StrCat("[1-9] [0-9]{", la, ",", lb - 2, "}"));
      std::string lowest(b.size(), '0');  // 10...0, as many digits as hi
      lowest[0] = '1';
      alts.push_back(SameLength(lowest, b));
    }
  }
  return absl::StrCat("(", absl::StrJoin(alts, " | "), ")");
}

}  // namespace

absl::StatusOr<std::string> RegexToGbnf(std::string_view pattern) {
  return RegexConverter(pattern).Run();
}

std::string IntegerRangeGbnf(std::optional<int64_t> lo, std::optional<int64_t> hi) {
  std::vector<std::string> parts;
  if (!lo || *lo < 0) {  // -x for x in [max(1, -hi), -lo]
    const uint64_t from = hi && *hi < 0 ? static_cast<uint64_t>(-*hi) : 1;
    std::optional<uint64_t> to;
    if (lo) to = static_cast<uint64_t>(-*lo);
    parts.push_back(absl::StrCat("\"-\" ", NonNegative(from, to)));
  }
  if (!hi || *hi >= 0) {
    std::optional<uint64_t> to;
    if (hi) to = static_cast<uint64_t>(*hi);
    parts.push_back(NonNegative(lo && *lo > 0 ? static_cast<uint64_t>(*lo) : 0, to));
  }
  return parts.size() == 1 ? parts[0] : absl::StrCat("(", absl::StrJoin(parts, " | "), ")");
}

}  // namespace loom::grammar::internal
