#include "engine/chat_template/value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/absl_compat.h"
#include "engine/chat_template/utf8.h"

namespace loom::chat {

const Value* ValueDict::Find(std::string_view key) const {
  for (const Entry& e : entries_) {
    if (e.first == key) return &e.second;
  }
  return nullptr;
}

void ValueDict::Set(std::string key, Value value) {
  for (Entry& e : entries_) {
    if (e.first == key) {
      e.second = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

Value Value::Undefined(std::string hint) {
  Value v;
  v.data_ = UndefinedData{std::move(hint)};
  return v;
}

Value Value::None() {
  Value v;
  v.data_ = NoneData{};
  return v;
}

Value::Value(ValueList list) : depth_(1) {
  for (const Value& v : list) depth_ = std::max(depth_, v.depth_ + 1);
  data_ = std::make_shared<const ValueList>(std::move(list));
}

Value::Value(ValueDict dict) : depth_(1) {
  for (const auto& [key, v] : dict) depth_ = std::max(depth_, v.depth_ + 1);
  data_ = std::make_shared<const ValueDict>(std::move(dict));
}

Value Value::Tuple(ValueList items) {
  Value v(std::move(items));
  v.tuple_ = true;
  return v;
}

Value Value::MakeNamespace(ValueDict attributes) {
  Value v;
  v.data_ = std::make_shared<Namespace>(Namespace{std::move(attributes)});
  v.depth_ = 1;
  return v;
}

Value Value::MakeCallable(std::shared_ptr<const Callable> callable) {
  Value v;
  v.data_ = std::move(callable);
  return v;
}

std::string Value::UndefinedMessage() const {
  const std::string& hint = std::get<UndefinedData>(data_).hint;
  return hint.empty() ? "value is undefined" : hint;
}

int64_t Value::NumberAsInt() const {
  switch (kind()) {
    case Kind::kBool:
      return AsBool() ? 1 : 0;
    case Kind::kInt:
      return AsInt();
    default:
      return static_cast<int64_t>(AsFloat());
  }
}

double Value::NumberAsFloat() const {
  return IsFloat() ? AsFloat() : static_cast<double>(NumberAsInt());
}

Value Value::Get(std::string_view key) const {
  const Value* found = nullptr;
  if (IsDict()) {
    found = AsDict().Find(key);
  } else if (IsNamespace()) {
    found = AsNamespace().attributes.Find(key);
  }
  if (found != nullptr) return *found;
  return Undefined(absl::StrCat("'", TypeName(), " object' has no attribute '", SV(key), "'"));
}

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return AsBool();
    case Kind::kInt:
      return AsInt() != 0;
    case Kind::kFloat:
      return AsFloat() != 0.0;
    case Kind::kString:
      return !AsString().empty();
    case Kind::kList:
      return !AsList().empty();
    case Kind::kDict:
      return !AsDict().empty();
    case Kind::kNamespace:
    case Kind::kCallable:
      return true;
  }
  return false;
}

std::string FormatPythonFloat(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (d == 0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  // sci is like "-1.2345e+02": split into sign, digits and exponent.
  std::string sign;
  size_t pos = 0;
  if (sci[0] == '-') {
    sign = "-";
    pos = 1;
  }
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t i = pos; i < e; ++i) {
    if (sci[i] != '.') digits.push_back(sci[i]);
  }
  const int exponent = std::stoi(sci.substr(e + 1));
  const int decpt = exponent + 1;  // value = 0.DIGITS * 10^decpt
  std::string out = sign;
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out += "0." + std::string(-decpt, '0') + digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out += digits + std::string(decpt - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_buf[16];
  std::snprintf(exp_buf, sizeof(exp_buf), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_buf;
}

namespace {

std::string ReprString(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (char32_t cp : DecodeUtf8(s)) {
    if (cp == static_cast<char32_t>(quote) || cp == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(cp));
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0xAD ||
               (cp >= 0xDC80 && cp <= 0xDCFF)) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(cp & 0xFF));
      out += buf;
    } else if (cp != ' ' &&
               (IsPythonSpace(cp) || (cp >= 0x200B && cp <= 0x200F) ||
                (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2060 && cp <= 0x2064) || cp == 0xFEFF)) {
      char buf[16];
      if (cp <= 0xFF) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(cp));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      }
      out += buf;
    } else {
      AppendUtf8(cp, &out);
    }
  }
  out.push_back(quote);
  return out;
}

void AppendJsonString(const std::string& s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (char32_t cp : DecodeUtf8(s)) {
    switch (cp) {
      case '"':
        *out += "\\\"";
        continue;
      case '\\':
        *out += "\\\\";
        continue;
      case '\n':
        *out += "\\n";
        continue;
      case '\r':
        *out += "\\r";
        continue;
      case '\t':
        *out += "\\t";
        continue;
      case '\b':
        *out += "\\b";
        continue;
      case '\f':
        *out += "\\f";
        continue;
      default:
        break;
    }
    char buf[16];
    if (cp < 0x20 || (ensure_ascii && cp >= 0x7F)) {
      if (cp >= 0x10000) {
        const char32_t v = cp - 0x10000;
        std::snprintf(buf, sizeof(buf), "\\u%04x\\u%04x", static_cast<unsigned>(0xD800 + (v >> 10)),
                      static_cast<unsigned>(0xDC00 + (v & 0x3FF)));
      } else {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(cp));
      }
      *out += buf;
    } else {
      AppendUtf8(cp, out);
    }
  }
  out->push_back('"');
}

absl::Status AppendJson(const Value& v, const JsonOptions& opt, int depth, std::string* out) {
  if (depth > 512) return absl::InvalidArgumentError("tojson: value nested too deeply");
  auto newline = [&](int level) {
    if (!opt.has_indent) return;
    out->push_back('\n');
    for (int i = 0; i < level; ++i) *out += opt.indent;
  };
  switch (v.kind()) {
    case Value::Kind::kNone:
      *out += "null";
      return absl::OkStatus();
    case Value::Kind::kBool:
      *out += v.AsBool() ? "true" : "false";
      return absl::OkStatus();
    case Value::Kind::kInt:
      *out += std::to_string(v.AsInt());
      return absl::OkStatus();
    case Value::Kind::kFloat: {
      const double d = v.AsFloat();
      if (std::isnan(d)) {
        *out += "NaN";
      } else if (std::isinf(d)) {
        *out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        *out += FormatPythonFloat(d);
      }
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      AppendJsonString(v.AsString(), opt.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList: {
      const ValueList& list = v.AsList();
      if (list.empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t i = 0; i < list.size(); ++i) {
        if (i > 0) *out += opt.item_separator;
        newline(depth + 1);
        LOOM_RETURN_IF_ERROR(AppendJson(list[i], opt, depth + 1, out));
      }
      newline(depth);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      const ValueDict& dict = v.AsDict();
      if (dict.empty()) {
        *out += "{}";
        return absl::OkStatus();
      }
      std::vector<const ValueDict::Entry*> entries;
      for (const auto& e : dict) entries.push_back(&e);
      if (opt.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      out->push_back('{');
      for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0) *out += opt.item_separator;
        newline(depth + 1);
        AppendJsonString(entries[i]->first, opt.ensure_ascii, out);
        *out += opt.key_separator;
        LOOM_RETURN_IF_ERROR(AppendJson(entries[i]->second, opt, depth + 1, out));
      }
      newline(depth);
      out->push_back('}');
      return absl::OkStatus();
    }
    case Value::Kind::kUndefined:
      return absl::InvalidArgumentError("Object of type Undefined is not JSON serializable");
    case Value::Kind::kNamespace:
      return absl::InvalidArgumentError("Object of type Namespace is not JSON serializable");
    case Value::Kind::kCallable:
      return absl::InvalidArgumentError("Object of type function is not JSON serializable");
  }
  return absl::OkStatus();
}

void AppendRepr(const Value& v, int depth, std::string* out);

void AppendContainer(const Value& v, int depth, std::string* out) {
  if (depth > 256) {
    *out += "...";
    return;
  }
  if (v.IsList()) {
    const ValueList& list = v.AsList();
    out->push_back(v.IsTuple() ? '(' : '[');
    for (size_t i = 0; i < list.size(); ++i) {
      if (i > 0) *out += ", ";
      AppendRepr(list[i], depth + 1, out);
    }
    if (v.IsTuple() && list.size() == 1) out->push_back(',');
    out->push_back(v.IsTuple() ? ')' : ']');
    return;
  }
  const ValueDict& dict = v.IsDict() ? v.AsDict() : v.AsNamespace().attributes;
  if (v.IsNamespace()) *out += "<Namespace ";
  out->push_back('{');
  bool first = true;
  for (const auto& [key, value] : dict) {
    if (!first) *out += ", ";
    first = false;
    *out += ReprString(key);
    *out += ": ";
    AppendRepr(value, depth + 1, out);
  }
  out->push_back('}');
  if (v.IsNamespace()) out->push_back('>');
}

void AppendRepr(const Value& v, int depth, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      *out += "Undefined";
      return;
    case Value::Kind::kString:
      *out += ReprString(v.AsString());
      return;
    case Value::Kind::kList:
    case Value::Kind::kDict:
    case Value::Kind::kNamespace:
      AppendContainer(v, depth, out);
      return;
    default:
      *out += v.Str();
  }
}

}  // namespace

std::string Value::Str() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return AsBool() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(AsInt());
    case Kind::kFloat:
      return FormatPythonFloat(AsFloat());
    case Kind::kString:
      return AsString();
    case Kind::kList:
    case Kind::kDict:
    case Kind::kNamespace: {
      std::string out;
      AppendContainer(*this, 0, &out);
      return out;
    }
    case Kind::kCallable:
      return absl::StrCat("<function ", AsCallable().name(), ">");
  }
  return "";
}

std::string Value::Repr() const {
  std::string out;
  AppendRepr(*this, 0, &out);
  return out;
}

std::string Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return IsTuple() ? "tuple" : "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kCallable:
      return "function";
  }
  return "object";
}

bool Value::Equals(const Value& other) const {
  if (IsNumber() && other.IsNumber()) {
    if (IsFloat() || other.IsFloat()) return NumberAsFloat() == other.NumberAsFloat();
    return NumberAsInt() == other.NumberAsInt();
  }
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return AsString() == other.AsString();
    case Kind::kList: {
      if (IsTuple() != other.IsTuple()) return false;
      const ValueList& a = AsList();
      const ValueList& b = other.AsList();
      if (a.size() != b.size()) return false;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!a[i].Equals(b[i])) return false;
      }
      return true;
    }
    case Kind::kDict: {
      const ValueDict& a = AsDict();
      const ValueDict& b = other.AsDict();
      if (a.size() != b.size()) return false;
      for (const auto& [key, value] : a) {
        const Value* found = b.Find(key);
        if (found == nullptr || !value.Equals(*found)) return false;
      }
      return true;
    }
    case Kind::kNamespace:
      return &AsNamespace() == &other.AsNamespace();
    case Kind::kCallable:
      return &AsCallable() == &other.AsCallable();
    default:
      return false;
  }
}

absl::StatusOr<std::string> Value::ToJson(const JsonOptions& options) const {
  std::string out;
  LOOM_RETURN_IF_ERROR(AppendJson(*this, options, 0, &out));
  return out;
}

}  // namespace loom::chat
