#include "engine/chat_template/lexer.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/absl_compat.h"
#include "engine/chat_template/utf8.h"

namespace loom::chat {
namespace {

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
// Jinja accepts Python identifiers; any non-ASCII byte is taken as part of one.
bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         static_cast<unsigned char>(c) >= 0x80;
}
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Python's str.rstrip() for the text before a `{%-` tag.
std::string RstripAll(std::string_view text) {
  return PythonStrip(text, nullptr, /*left=*/false, /*right=*/true);
}

class Lexer {
 public:
  Lexer(std::string_view source, const LexerOptions& options) : options_(options) {
    // Jinja normalizes \r\n and \r to \n before lexing.
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_.push_back(source[i]);
      }
    }
    if (!options_.keep_trailing_newline && !src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) {
      const size_t start = FindTagStart(pos_);
      if (start == std::string::npos) {
        EmitText(src_.substr(pos_), pos_);
        break;
      }
      std::string text = src_.substr(pos_, start - pos_);
      const char kind = src_[start + 1];
      const char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      text = ApplyLeftWhitespaceControl(std::move(text), sign, kind != '{');
      EmitText(std::move(text), pos_);
      if (kind == '#') {
        LOOM_RETURN_IF_ERROR(LexComment(start, sign));
      } else {
        LOOM_RETURN_IF_ERROR(LexTag(start, kind, sign));
      }
    }
    Token eof;
    eof.type = TokenType::kEof;
    SetPosition(src_.size(), &eof);
    tokens_.push_back(eof);
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    size_t p = from;
    while (true) {
      p = src_.find('{', p);
      if (p == std::string::npos || p + 1 >= src_.size()) return std::string::npos;
      const char next = src_[p + 1];
      if (next == '{' || next == '%' || next == '#') return p;
      ++p;
    }
  }

  // `{%-` strips all whitespace before the tag; otherwise lstrip_blocks removes the spaces and
  // tabs between the start of the line and a block or comment tag.
  std::string ApplyLeftWhitespaceControl(std::string text, char sign, bool block_or_comment) {
    if (sign == '-') return RstripAll(text);
    if (sign == '+' || !block_or_comment || !options_.lstrip_blocks) return text;
    const size_t rpos = text.rfind('\n');
    const size_t l_pos = rpos == std::string::npos ? 0 : rpos + 1;
    if (l_pos > 0 || line_starting_) {
      const std::u32string rest = DecodeUtf8(std::string_view(text).substr(l_pos));
      if (!rest.empty() && std::all_of(rest.begin(), rest.end(), IsPythonSpace)) {
        text.resize(l_pos);
      }
    }
    return text;
  }

  // After a block or comment end: `-%}` strips all following whitespace, `+%}` keeps it, and
  // trim_blocks removes a single newline.
  size_t ApplyRightWhitespaceControl(size_t after, char sign, bool trim_newline) {
    if (sign == '-') {
      while (after < src_.size() && IsPythonSpaceAt(after)) after = NextCodePoint(after);
    } else if (sign != '+' && trim_newline && options_.trim_blocks && after < src_.size() &&
               src_[after] == '\n') {
      ++after;
    }
    return after;
  }

  bool IsPythonSpaceAt(size_t p) const {
    const size_t end = NextCodePoint(p);
    const std::u32string cp = DecodeUtf8(std::string_view(src_).substr(p, end - p));
    return cp.size() == 1 && IsPythonSpace(cp[0]);
  }

  size_t NextCodePoint(size_t p) const {
    ++p;
    while (p < src_.size() && (static_cast<unsigned char>(src_[p]) & 0xC0) == 0x80) ++p;
    return p;
  }

  void Advance(size_t new_pos, size_t match_start) {
    line_starting_ = new_pos > match_start && src_[new_pos - 1] == '\n';
    pos_ = new_pos;
  }

  absl::Status LexComment(size_t start, char sign) {
    size_t content = start + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
    const size_t end = src_.find("#}", content);
    if (end == std::string::npos) return Error(start, "missing end of comment tag");
    char end_sign = '\0';
    if (end > content && (src_[end - 1] == '-' || src_[end - 1] == '+')) end_sign = src_[end - 1];
    Advance(ApplyRightWhitespaceControl(end + 2, end_sign, true), start);
    return absl::OkStatus();
  }

  absl::Status LexTag(size_t start, char kind, char sign) {
    size_t p = start + 2;
    if (sign == '-' || (kind == '%' && sign == '+')) ++p;
    if (kind == '%') {
      LOOM_ASSIGN_OR_RETURN(bool was_raw, TryLexRaw(start, p));
      if (was_raw) return absl::OkStatus();
    }
    Token begin;
    begin.type = kind == '%' ? TokenType::kBlockBegin : TokenType::kVariableBegin;
    SetPosition(start, &begin);
    tokens_.push_back(begin);
    const std::string close = kind == '%' ? "%}" : "}}";
    std::vector<char> balance;
    while (true) {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (p >= src_.size()) {
        return Error(start, absl::StrCat("unexpected end of template, expected '", close, "'"));
      }
      if (balance.empty()) {
        char end_sign = '\0';
        size_t close_at = p;
        if ((src_[p] == '-' || (kind == '%' && src_[p] == '+')) &&
            src_.compare(p + 1, 2, close) == 0) {
          end_sign = src_[p];
          close_at = p + 1;
        }
        if (src_.compare(close_at, 2, close) == 0) {
          Token end;
          end.type = kind == '%' ? TokenType::kBlockEnd : TokenType::kVariableEnd;
          SetPosition(p, &end);
          tokens_.push_back(end);
          Advance(ApplyRightWhitespaceControl(close_at + 2, end_sign, kind == '%'), p);
          return absl::OkStatus();
        }
      }
      LOOM_ASSIGN_OR_RETURN(p, LexExpressionToken(p, &balance));
    }
  }

  // `{% raw %}...{% endraw %}`: the content is literal text.
  absl::StatusOr<bool> TryLexRaw(size_t start, size_t p) {
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && IsNameChar(src_[p + 3]))) {
      return false;
    }
    p += 3;
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    char end_sign = '\0';
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) end_sign = src_[p++];
    if (src_.compare(p, 2, "%}") != 0) return false;
    Advance(ApplyRightWhitespaceControl(p + 2, end_sign == '-' ? '-' : '\0', false), start);
    size_t search = pos_;
    while (true) {
      const size_t tag = src_.find("{%", search);
      if (tag == std::string::npos) return Error(start, "missing endraw for raw block");
      size_t q = tag + 2;
      const char sign = q < src_.size() ? src_[q] : '\0';
      if (sign == '-' || sign == '+') ++q;
      while (q < src_.size() && IsSpace(src_[q])) ++q;
      if (src_.compare(q, 6, "endraw") != 0) {
        search = tag + 2;
        continue;
      }
      q += 6;
      while (q < src_.size() && IsSpace(src_[q])) ++q;
      char close_sign = '\0';
      if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) close_sign = src_[q++];
      if (src_.compare(q, 2, "%}") != 0) return Error(tag, "malformed endraw tag");
      std::string text = src_.substr(pos_, tag - pos_);
      EmitText(ApplyLeftWhitespaceControl(std::move(text), sign, true), pos_);
      Advance(ApplyRightWhitespaceControl(q + 2, close_sign, true), tag);
      return true;
    }
  }

  absl::StatusOr<size_t> LexExpressionToken(size_t p, std::vector<char>* balance) {
    Token tok;
    SetPosition(p, &tok);
    const char c = src_[p];
    if (c == '\'' || c == '"') {
      LOOM_ASSIGN_OR_RETURN(p, LexString(p, &tok));
    } else if (IsDigit(c)) {
      LOOM_ASSIGN_OR_RETURN(p, LexNumber(p, &tok));
    } else if (IsNameStart(c)) {
      size_t e = p;
      while (e < src_.size() && IsNameChar(src_[e])) ++e;
      tok.type = TokenType::kName;
      tok.value = src_.substr(p, e - p);
      p = e;
    } else {
      static constexpr std::string_view kTwoChar[] = {"**", "//", "==", "!=", ">=", "<="};
      static constexpr std::string_view kOneChar = "+-/*%~[](){}><=.:|,;";
      tok.type = TokenType::kOperator;
      for (std::string_view op : kTwoChar) {
        if (src_.compare(p, 2, op) == 0) tok.value = std::string(op);
      }
      if (tok.value.empty()) {
        if (kOneChar.find(c) == std::string_view::npos) {
          return Error(p, absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        tok.value = std::string(1, c);
      }
      if (c == '(' || c == '[' || c == '{') {
        balance->push_back(c == '(' ? ')' : c == '[' ? ']' : '}');
      } else if (c == ')' || c == ']' || c == '}') {
        if (balance->empty() || balance->back() != c) {
          return Error(p, absl::StrCat("unexpected '", std::string(1, c), "'"));
        }
        balance->pop_back();
      }
      p += tok.value.size();
    }
    tokens_.push_back(std::move(tok));
    return p;
  }

  absl::StatusOr<size_t> LexNumber(size_t p, Token* tok) {
    const size_t start = p;
    auto digits = [&](auto is_digit) {
      std::string out;
      while (p < src_.size() && (is_digit(src_[p]) || (src_[p] == '_' && !out.empty()))) {
        if (src_[p] != '_') out.push_back(src_[p]);
        ++p;
      }
      return out;
    };
    if (src_[p] == '0' && p + 1 < src_.size() &&
        std::string_view("xXoObB").find(src_[p + 1]) != std::string_view::npos) {
      const char base_char = static_cast<char>(src_[p + 1] | 0x20);
      const int base = base_char == 'x' ? 16 : base_char == 'o' ? 8 : 2;
      p += 2;
      const std::string d = digits([&](char ch) {
        const int v = IsDigit(ch)                                ? ch - '0'
                      : (ch | 0x20) >= 'a' && (ch | 0x20) <= 'f' ? (ch | 0x20) - 'a' + 10
                                                                 : 99;
        return v < base;
      });
      if (d.empty()) return Error(start, "malformed number literal");
      uint64_t v = 0;
      for (char ch : d) {
        const int dv = IsDigit(ch) ? ch - '0' : (ch | 0x20) - 'a' + 10;
        if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - dv) / base) {
          return Error(start, "integer literal too large");
        }
        v = v * base + dv;
      }
      tok->type = TokenType::kInteger;
      tok->int_value = static_cast<int64_t>(v);
      return p;
    }
    std::string text = digits(IsDigit);
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' && IsDigit(src_[p + 1])) {
      ++p;
      text.push_back('.');
      text += digits(IsDigit);
      is_float = true;
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && IsDigit(src_[q])) {
        text.push_back('e');
        text.append(src_, p + 1, q - p - 1);
        p = q;
        text += digits(IsDigit);
        is_float = true;
      }
    }
    if (is_float) {
      tok->type = TokenType::kFloat;
      tok->float_value = std::strtod(text.c_str(), nullptr);
      return p;
    }
    uint64_t v = 0;
    for (char ch : text) {
      if (v > (static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) - (ch - '0')) / 10) {
        return Error(start, "integer literal too large");
      }
      v = v * 10 + (ch - '0');
    }
    tok->type = TokenType::kInteger;
    tok->int_value = static_cast<int64_t>(v);
    return p;
  }

  // Decodes a string literal with Python's escape sequences (Jinja uses "unicode-escape").
  absl::StatusOr<size_t> LexString(size_t p, Token* tok) {
    const size_t start = p;
    const char quote = src_[p++];
    std::string out;
    auto hex = [&](size_t at, int n, char32_t* cp) {
      if (at + n > src_.size()) return false;
      *cp = 0;
      for (int i = 0; i < n; ++i) {
        const char ch = src_[at + i];
        int v;
        if (IsDigit(ch)) {
          v = ch - '0';
        } else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
          v = (ch | 0x20) - 'a' + 10;
        } else {
          return false;
        }
        *cp = *cp * 16 + v;
      }
      return true;
    };
    while (true) {
      if (p >= src_.size()) return Error(start, "unterminated string literal");
      const char c = src_[p];
      if (c == quote) {
        ++p;
        break;
      }
      if (c != '\\') {
        out.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= src_.size()) return Error(start, "unterminated string literal");
      const char e = src_[p + 1];
      p += 2;
      char32_t cp = 0;
      switch (e) {
        case '\n':
          break;
        case '\\':
        case '\'':
        case '"':
          out.push_back(e);
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (!hex(p, n, &cp) || cp > 0x10FFFF) {
            return Error(p - 2, absl::StrCat("truncated \\", std::string(1, e), " escape"));
          }
          AppendUtf8(cp, &out);
          p += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            cp = e - '0';
            for (int i = 0; i < 2 && p < src_.size() && src_[p] >= '0' && src_[p] <= '7'; ++i) {
              cp = cp * 8 + (src_[p++] - '0');
            }
            AppendUtf8(cp, &out);
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    tok->type = TokenType::kString;
    tok->value = std::move(out);
    return p;
  }

  void EmitText(std::string text, size_t at) {
    if (text.empty()) return;
    Token tok;
    tok.type = TokenType::kText;
    tok.value = std::move(text);
    SetPosition(at, &tok);
    tokens_.push_back(std::move(tok));
  }

  void SetPosition(size_t at, Token* tok) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), at);
    const size_t line_index = static_cast<size_t>(it - line_starts_.begin()) - 1;
    tok->line = static_cast<int>(line_index + 1);
    tok->column = static_cast<int>(at - line_starts_[line_index] + 1);
  }

  absl::Status Error(size_t at, std::string_view message) const {
    Token where;
    SetPosition(at, &where);
    return absl::InvalidArgumentError(absl::StrCat("template syntax error at line ", where.line,
                                                   ", column ", where.column, ": ", SV(message)));
  }

  LexerOptions options_;
  std::string src_;
  std::vector<size_t> line_starts_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, const LexerOptions& options) {
  Lexer lexer(source, options);
  return lexer.Run();
}

std::string DescribeToken(const Token& token) {
  switch (token.type) {
    case TokenType::kText:
      return "template text";
    case TokenType::kVariableBegin:
      return "'{{'";
    case TokenType::kVariableEnd:
      return "end of print statement '}}'";
    case TokenType::kBlockBegin:
      return "'{%'";
    case TokenType::kBlockEnd:
      return "end of statement block '%}'";
    case TokenType::kName:
    case TokenType::kOperator:
      return absl::StrCat("'", token.value, "'");
    case TokenType::kString:
      return "string literal";
    case TokenType::kInteger:
    case TokenType::kFloat:
      return "number literal";
    case TokenType::kEof:
      return "end of template";
  }
  return "token";
}

}  // namespace loom::chat
