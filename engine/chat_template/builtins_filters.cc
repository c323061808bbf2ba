// Jinja2 filters, tests and global functions (see builtins.h).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/absl_compat.h"
#include "engine/chat_template/builtins.h"
#include "engine/chat_template/utf8.h"

namespace loom::chat {
namespace {

constexpr std::string_view kFilters[] = {
    "abs",     "attr",     "batch",  "capitalize", "center",     "count",    "d",
    "default", "dictsort", "e",      "escape",     "first",      "float",    "indent",
    "int",     "items",    "join",   "last",       "length",     "list",     "lower",
    "map",     "max",      "min",    "reject",     "rejectattr", "replace",  "reverse",
    "round",   "safe",     "select", "selectattr", "sort",       "string",   "sum",
    "title",   "tojson",   "trim",   "unique",     "upper",      "wordcount"};

constexpr std::string_view kTests[] = {
    "boolean", "callable", "defined",  "divisibleby", "eq",       "equalto", "escaped",
    "even",    "false",    "filter",   "float",       "ge",       "gt",      "greaterthan",
    "in",      "integer",  "iterable", "le",          "lessthan", "lower",   "lt",
    "mapping", "ne",       "none",     "number",      "odd",      "sameas",  "sequence",
    "string",  "test",     "true",     "undefined",   "upper",    "==",      "!=",
    "<",       "<=",       ">",        ">="};

const Value* Arg(const CallArgs& args, size_t index, std::string_view name) {
  if (index < args.positional.size()) return &args.positional[index];
  for (const auto& [key, value] : args.keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

Value ArgOr(const CallArgs& args, size_t index, std::string_view name, Value fallback) {
  const Value* v = Arg(args, index, name);
  return v != nullptr ? *v : std::move(fallback);
}

absl::Status TypeError(std::string_view message) { return absl::InvalidArgumentError(SV(message)); }

// Jinja raises on most uses of an undefined value.
absl::Status RequireDefined(const Value& v) {
  if (v.IsUndefined()) return absl::InvalidArgumentError(v.UndefinedMessage());
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CountCodePoints(v.AsString()));
    case Value::Kind::kList:
      return static_cast<int64_t>(v.AsList().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.AsDict().size());
    default:
      return TypeError(absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
}

// Jinja's attribute getter for filters: "a.b.0" looks up each part with getitem.
absl::StatusOr<Value> GetPath(const Value& item, const Value& attribute) {
  if (!attribute.IsString()) return GetItem(item, attribute);
  Value current = item;
  const std::string& path = attribute.AsString();
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
    Value key(part);
    if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      key = Value(static_cast<int64_t>(std::strtoll(part.c_str(), nullptr, 10)));
    }
    LOOM_ASSIGN_OR_RETURN(current, GetItem(current, key));
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

// Key used by sort/unique/min/max: the attribute, lower-cased when case-insensitive.
absl::StatusOr<Value> SortKey(const Value& item, const Value* attribute, bool case_sensitive) {
  Value key = item;
  if (attribute != nullptr && !attribute->IsNone()) {
    LOOM_ASSIGN_OR_RETURN(key, GetPath(item, *attribute));
  }
  if (!case_sensitive && key.IsString()) key = Value(PythonLower(key.AsString()));
  return key;
}

absl::StatusOr<ValueList> SortedItems(ValueList items, const Value* attribute, bool case_sensitive,
                                      bool reverse) {
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& item : items) {
    LOOM_ASSIGN_OR_RETURN(Value key, SortKey(item, attribute, case_sensitive));
    keyed.emplace_back(std::move(key), std::move(item));
  }
  absl::Status status;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    // Jinja's sort keys are one-element lists, so equal keys (undefined ones included) are
    // never compared with '<'.
    if (a.first.Equals(b.first)) return false;
    absl::StatusOr<bool> less = reverse ? LessThan(b.first, a.first) : LessThan(a.first, b.first);
    if (!less.ok()) {
      status = less.status();
      return false;
    }
    return *less;
  });
  LOOM_RETURN_IF_ERROR(status);
  ValueList out;
  for (auto& [key, item] : keyed) out.push_back(std::move(item));
  return out;
}

absl::StatusOr<Value> ToJsonFilter(const Value& input, const CallArgs& args) {
  // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
  JsonOptions options;
  options.ensure_ascii = ArgOr(args, 0, "ensure_ascii", Value(false)).Truthy();
  const Value indent = ArgOr(args, 1, "indent", Value::None());
  if (indent.IsString()) {
    options.has_indent = true;
    options.indent = indent.AsString();
  } else if (indent.IsNumber() && !indent.IsFloat()) {
    options.has_indent = true;
    options.indent =
        std::string(std::max<int64_t>(0, std::min<int64_t>(indent.NumberAsInt(), 64)), ' ');
  } else if (!indent.IsNone()) {
    return TypeError("tojson: indent must be an int or a string");
  }
  if (options.has_indent) options.item_separator = ",";
  const Value separators = ArgOr(args, 2, "separators", Value::None());
  if (separators.IsList() && separators.AsList().size() == 2 && separators.AsList()[0].IsString() &&
      separators.AsList()[1].IsString()) {
    options.item_separator = separators.AsList()[0].AsString();
    options.key_separator = separators.AsList()[1].AsString();
  } else if (!separators.IsNone()) {
    return TypeError("tojson: separators must be a pair of strings");
  }
  options.sort_keys = ArgOr(args, 3, "sort_keys", Value(false)).Truthy();
  LOOM_ASSIGN_OR_RETURN(std::string json, input.ToJson(options));
  return Value(std::move(json));
}

// Python's float(str): decimal or inf/nan spellings, underscores between digits; no hex.
bool ParsePythonFloat(const std::string& text, double* out) {
  std::string s;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '_' && i > 0 && i + 1 < text.size() && isdigit(text[i - 1]) && isdigit(text[i + 1])) {
      continue;
    }
    if (c == 'x' || c == 'X' || c == 'p' || c == 'P' || isspace(static_cast<unsigned char>(c))) {
      return false;
    }
    s.push_back(c);
  }
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end != nullptr && *end == '\0';
}

absl::StatusOr<Value> IntFilter(const Value& input, const CallArgs& args) {
  LOOM_RETURN_IF_ERROR(RequireDefined(input));
  const Value fallback = ArgOr(args, 0, "default", Value(0));
  const int64_t base = ArgOr(args, 1, "base", Value(10)).IsNumber()
                           ? ArgOr(args, 1, "base", Value(10)).NumberAsInt()
                           : 10;
  if (input.IsNumber()) {
    if (input.IsFloat() && !std::isfinite(input.AsFloat())) {
      return absl::OutOfRangeError("cannot convert float infinity or NaN to integer");
    }
    return Value(input.NumberAsInt());
  }
  if (!input.IsString()) return fallback;
  std::string s = PythonStrip(input.AsString());
  std::string digits;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && isalnum(s[i - 1]) && isalnum(s[i + 1])) {
      continue;
    }
    digits.push_back(s[i]);
  }
  if (!digits.empty()) {
    int actual_base = static_cast<int>(base);
    std::string body = digits;
    bool negative = false;
    if (body[0] == '+' || body[0] == '-') {
      negative = body[0] == '-';
      body = body.substr(1);
    }
    if (body.size() > 2 && body[0] == '0') {
      const char p = static_cast<char>(body[1] | 0x20);
      if ((p == 'x' && (base == 16 || base == 0)) || (p == 'o' && (base == 8 || base == 0)) ||
          (p == 'b' && (base == 2 || base == 0))) {
        actual_base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
        body = body.substr(2);
      }
    }
    if (actual_base == 0) actual_base = 10;
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(body.c_str(), &end, actual_base);
    if (!body.empty() && end != nullptr && *end == '\0' && errno == 0 && body[0] != '-' &&
        body[0] != '+' && !isspace(static_cast<unsigned char>(body[0]))) {
      return Value(static_cast<int64_t>(negative ? -v : v));
    }
  }
  // "42.23"|int == 42.
  double d;
  if (ParsePythonFloat(digits, &d)) {
    if (std::isinf(d)) return absl::OutOfRangeError("cannot convert float infinity to integer");
    if (!std::isnan(d)) return Value(static_cast<int64_t>(d));
  }
  return fallback;
}

absl::StatusOr<Value> FloatFilter(const Value& input, const CallArgs& args) {
  LOOM_RETURN_IF_ERROR(RequireDefined(input));
  const Value fallback = ArgOr(args, 0, "default", Value(0.0));
  if (input.IsNumber()) return Value(input.NumberAsFloat());
  if (!input.IsString()) return fallback;
  double d;
  if (ParsePythonFloat(PythonStrip(input.AsString()), &d)) return Value(d);
  return fallback;
}

absl::StatusOr<Value> RoundFilter(const Value& input, const CallArgs& args) {
  if (!input.IsNumber()) {
    return TypeError(absl::StrCat("type ", input.TypeName(), " doesn't define __round__ method"));
  }
  const int64_t precision = ArgOr(args, 0, "precision", Value(0)).NumberAsInt();
  const Value method = ArgOr(args, 1, "method", Value("common"));
  if (!method.IsString() || (method.AsString() != "common" && method.AsString() != "ceil" &&
                             method.AsString() != "floor")) {
    return TypeError("method must be common, ceil or floor");
  }
  if (method.AsString() != "common") {
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = input.NumberAsFloat() * scale;
    return Value((method.AsString() == "ceil" ? std::ceil(x) : std::floor(x)) / scale);
  }
  if (!input.IsFloat() && precision >= 0) return Value(input.NumberAsInt());
  if (precision == 0) return Value(std::nearbyint(input.NumberAsFloat()));
  if (precision < 0 || precision > 300) {
    const double scale = std::pow(10.0, static_cast<double>(precision));
    return Value(std::nearbyint(input.NumberAsFloat() * scale) / scale);
  }
  char buf[512];
  std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(precision), input.NumberAsFloat());
  return Value(std::strtod(buf, nullptr));
}

absl::StatusOr<Value> IndentFilter(const Value& input, const CallArgs& args) {
  LOOM_RETURN_IF_ERROR(RequireDefined(input));
  const Value width = ArgOr(args, 0, "width", Value(4));
  const std::string indention =
      width.IsString()
          ? width.AsString()
          : std::string(std::max<int64_t>(0, std::min<int64_t>(width.NumberAsInt(), 1024)), ' ');
  const bool first = ArgOr(args, 1, "first", Value(false)).Truthy();
  const bool blank = ArgOr(args, 2, "blank", Value(false)).Truthy();
  LOOM_ASSIGN_OR_RETURN(Value lines_value, CallMethod(Value(input.Str() + "\n"), "splitlines",
                                                      CallArgs{}, BuiltinLimits{}));
  const ValueList& lines = lines_value.AsList();
  std::string rv;
  if (blank) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) rv += "\n" + indention;
      rv += lines[i].AsString();
    }
  } else if (!lines.empty()) {
    rv = lines[0].AsString();
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].AsString().empty()) rv += indention;
      rv += lines[i].AsString();
    }
  }
  if (first) rv = indention + rv;
  return Value(std::move(rv));
}

std::string HtmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// select/reject/selectattr/rejectattr.
absl::StatusOr<Value> SelectFilter(std::string_view name, const Value& input, const CallArgs& args,
                                   const BuiltinLimits& limits) {
  const bool by_attribute = name == "selectattr" || name == "rejectattr";
  const bool keep_matching = name == "select" || name == "selectattr";
  size_t next = 0;
  Value attribute;
  if (by_attribute) {
    if (args.positional.empty()) return TypeError(absl::StrCat(SV(name), ": missing attribute"));
    attribute = args.positional[next++];
  }
  std::string test;
  CallArgs test_args;
  if (next < args.positional.size()) {
    if (!args.positional[next].IsString())
      return TypeError(absl::StrCat(SV(name), ": bad test name"));
    test = args.positional[next++].AsString();
    if (!IsKnownTest(test)) return TypeError(absl::StrCat("no test named '", test, "'"));
    test_args.positional.assign(args.positional.begin() + next, args.positional.end());
  }
  LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
  ValueList out;
  for (Value& item : items) {
    Value subject = item;
    if (by_attribute) {
      LOOM_ASSIGN_OR_RETURN(subject, GetPath(item, attribute));
    }
    bool match;
    if (test.empty()) {
      match = subject.Truthy();
    } else {
      LOOM_ASSIGN_OR_RETURN(match, ApplyTest(test, subject, test_args, limits));
    }
    if (match == keep_matching) out.push_back(std::move(item));
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> MapFilter(const Value& input, const CallArgs& args,
                                const BuiltinLimits& limits) {
  LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
  ValueList out;
  if (args.positional.empty()) {
    const Value* attribute = Arg(args, 99, "attribute");
    if (attribute == nullptr) return TypeError("map: expected a filter name or attribute=");
    const Value* fallback = Arg(args, 99, "default");
    for (const Value& item : items) {
      LOOM_ASSIGN_OR_RETURN(Value v, GetPath(item, *attribute));
      if (v.IsUndefined() && fallback != nullptr) v = *fallback;
      out.push_back(std::move(v));
    }
    return Value(std::move(out));
  }
  if (!args.positional[0].IsString()) return TypeError("map: filter name must be a string");
  const std::string filter = args.positional[0].AsString();
  if (!IsKnownFilter(filter)) return TypeError(absl::StrCat("no filter named '", filter, "'"));
  CallArgs filter_args;
  filter_args.positional.assign(args.positional.begin() + 1, args.positional.end());
  filter_args.keyword = args.keyword;
  for (const Value& item : items) {
    LOOM_ASSIGN_OR_RETURN(Value v, ApplyFilter(filter, item, filter_args, limits));
    out.push_back(std::move(v));
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> MinMax(bool want_max, const Value& input, const CallArgs& args,
                             const BuiltinLimits& limits) {
  LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  const bool case_sensitive = ArgOr(args, 0, "case_sensitive", Value(false)).Truthy();
  const Value* attribute = Arg(args, 1, "attribute");
  size_t best = 0;
  LOOM_ASSIGN_OR_RETURN(Value best_key, SortKey(items[0], attribute, case_sensitive));
  for (size_t i = 1; i < items.size(); ++i) {
    LOOM_ASSIGN_OR_RETURN(Value key, SortKey(items[i], attribute, case_sensitive));
    LOOM_ASSIGN_OR_RETURN(bool better,
                          want_max ? LessThan(best_key, key) : LessThan(key, best_key));
    if (better) {
      best = i;
      best_key = std::move(key);
    }
  }
  return items[best];
}

}  // namespace

bool IsKnownFilter(std::string_view name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool IsKnownTest(std::string_view name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& input, const CallArgs& args,
                                  const BuiltinLimits& limits) {
  if (name == "default" || name == "d") {
    const bool boolean = ArgOr(args, 1, "boolean", Value(false)).Truthy();
    if (input.IsUndefined() || (boolean && !input.Truthy())) {
      return ArgOr(args, 0, "default_value", Value(""));
    }
    return input;
  }
  if (name == "length" || name == "count") {
    LOOM_ASSIGN_OR_RETURN(int64_t n, Length(input));
    return Value(n);
  }
  if (name == "string") return Value(input.Str());
  if (name == "safe") return Value(input.Str());
  if (name == "escape" || name == "e") return Value(HtmlEscape(input.Str()));
  if (name == "upper") return Value(PythonUpper(input.Str()));
  if (name == "lower") return Value(PythonLower(input.Str()));
  if (name == "capitalize") return Value(PythonCapitalize(input.Str()));
  if (name == "title") {
    // Jinja's title: capitalize each piece split on runs of whitespace, '-', '(', '{', '[', '<'.
    std::string out;
    std::string piece;
    auto flush = [&] {
      out += PythonCapitalize(piece);
      piece.clear();
    };
    for (char32_t cp : DecodeUtf8(input.Str())) {
      const bool sep =
          IsPythonSpace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
      if (sep) {
        flush();
        AppendUtf8(cp, &out);
      } else {
        AppendUtf8(cp, &piece);
      }
    }
    flush();
    return Value(std::move(out));
  }
  if (name == "trim") {
    const Value chars = ArgOr(args, 0, "chars", Value::None());
    return Value(PythonStrip(input.Str(), chars.IsString() ? &chars.AsString() : nullptr));
  }
  if (name == "replace") {
    const Value old = ArgOr(args, 0, "old", Value(""));
    const Value with = ArgOr(args, 1, "new", Value(""));
    const Value count = ArgOr(args, 2, "count", Value::None());
    std::string out = PythonReplace(input.Str(), old.Str(), with.Str(),
                                    count.IsNumber() ? count.NumberAsInt() : -1);
    if (out.size() > limits.max_string_bytes) {
      return absl::ResourceExhaustedError("replace: result too large");
    }
    return Value(std::move(out));
  }
  if (name == "center") {
    const int64_t width = std::min<int64_t>(ArgOr(args, 0, "width", Value(80)).NumberAsInt(),
                                            static_cast<int64_t>(limits.max_string_bytes));
    const std::string s = input.Str();
    const int64_t len = static_cast<int64_t>(CountCodePoints(s));
    if (width <= len) return Value(s);
    const int64_t pad = width - len;
    const int64_t left = pad / 2 + (pad & width & 1);
    return Value(std::string(left, ' ') + s + std::string(pad - left, ' '));
  }
  if (name == "wordcount") {
    int64_t words = 0;
    bool in_word = false;
    for (char32_t cp : DecodeUtf8(input.Str())) {
      const bool word = IsWordChar(cp);
      if (word && !in_word) ++words;
      in_word = word;
    }
    return Value(words);
  }
  if (name == "tojson") return ToJsonFilter(input, args);
  if (name == "int") return IntFilter(input, args);
  if (name == "float") return FloatFilter(input, args);
  if (name == "round") return RoundFilter(input, args);
  if (name == "indent") return IndentFilter(input, args);
  if (name == "abs") {
    if (!input.IsNumber()) {
      return TypeError(absl::StrCat("bad operand type for abs(): '", input.TypeName(), "'"));
    }
    if (input.IsFloat()) return Value(std::fabs(input.AsFloat()));
    if (input.NumberAsInt() == INT64_MIN) return absl::OutOfRangeError("integer overflow");
    return Value(std::abs(input.NumberAsInt()));
  }
  if (name == "attr") {
    const Value attribute = ArgOr(args, 0, "name", Value(""));
    LOOM_RETURN_IF_ERROR(RequireDefined(input));
    return GetAttribute(input, attribute.Str());
  }
  if (name == "first" || name == "last") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    return Value(std::move(items));
  }
  if (name == "items") {
    if (input.IsUndefined()) return Value(ValueList{});
    if (!input.IsDict()) return TypeError("Can only get item pairs from a mapping.");
    return CallMethod(input, "items", CallArgs{}, limits);
  }
  if (name == "reverse") {
    if (input.IsString()) return Slice(input, Value::None(), Value::None(), Value(-1));
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "join") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    const Value separator = ArgOr(args, 0, "d", Value(""));
    const Value* attribute = Arg(args, 1, "attribute");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += separator.Str();
      Value item = items[i];
      if (attribute != nullptr && !attribute->IsNone()) {
        LOOM_ASSIGN_OR_RETURN(item, GetPath(item, *attribute));
      }
      out += item.Str();
      if (out.size() > limits.max_string_bytes) {
        return absl::ResourceExhaustedError("join: result too large");
      }
    }
    return Value(std::move(out));
  }
  if (name == "sort") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    const bool reverse = ArgOr(args, 0, "reverse", Value(false)).Truthy();
    const bool case_sensitive = ArgOr(args, 1, "case_sensitive", Value(false)).Truthy();
    LOOM_ASSIGN_OR_RETURN(
        items, SortedItems(std::move(items), Arg(args, 2, "attribute"), case_sensitive, reverse));
    return Value(std::move(items));
  }
  if (name == "dictsort") {
    LOOM_RETURN_IF_ERROR(RequireDefined(input));
    if (!input.IsDict()) return TypeError("You can only sort by either a mapping");
    const bool case_sensitive = ArgOr(args, 0, "case_sensitive", Value(false)).Truthy();
    const Value by = ArgOr(args, 1, "by", Value("key"));
    if (!by.IsString() || (by.AsString() != "key" && by.AsString() != "value")) {
      return TypeError("You can only sort by either \"key\" or \"value\"");
    }
    const bool reverse = ArgOr(args, 2, "reverse", Value(false)).Truthy();
    LOOM_ASSIGN_OR_RETURN(Value pairs, CallMethod(input, "items", CallArgs{}, limits));
    const Value index(by.IsString() && by.AsString() == "value" ? 1 : 0);
    LOOM_ASSIGN_OR_RETURN(ValueList items,
                          SortedItems(pairs.AsList(), &index, case_sensitive, reverse));
    return Value(std::move(items));
  }
  if (name == "unique") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    const bool case_sensitive = ArgOr(args, 0, "case_sensitive", Value(false)).Truthy();
    const Value* attribute = Arg(args, 1, "attribute");
    ValueList out;
    ValueList seen;
    for (Value& item : items) {
      LOOM_ASSIGN_OR_RETURN(Value key, SortKey(item, attribute, case_sensitive));
      bool found = false;
      for (const Value& s : seen) found = found || s.Equals(key);
      if (found) continue;
      seen.push_back(std::move(key));
      out.push_back(std::move(item));
    }
    return Value(std::move(out));
  }
  if (name == "sum") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    const Value* attribute = Arg(args, 0, "attribute");
    Value total = ArgOr(args, 1, "start", Value(0));
    for (const Value& item : items) {
      Value v = item;
      if (attribute != nullptr && !attribute->IsNone()) {
        LOOM_ASSIGN_OR_RETURN(v, GetPath(item, *attribute));
      }
      LOOM_ASSIGN_OR_RETURN(total, BinaryOp("+", total, v, limits));
    }
    return total;
  }
  if (name == "min" || name == "max") return MinMax(name == "max", input, args, limits);
  if (name == "batch") {
    LOOM_ASSIGN_OR_RETURN(ValueList items, Iterate(input, limits));
    const Value count = ArgOr(args, 0, "linecount", Value(1));
    if (!count.IsNumber() || count.NumberAsInt() <= 0) return TypeError("batch: bad line count");
    const size_t n = static_cast<size_t>(count.NumberAsInt());
    const Value* fill = Arg(args, 1, "fill_with");
    ValueList out;
    for (size_t i = 0; i < items.size(); i += n) {
      ValueList row(items.begin() + i, items.begin() + std::min(items.size(), i + n));
      if (fill != nullptr && !fill->IsNone()) {
        while (row.size() < n) row.push_back(*fill);
      }
      out.push_back(Value(std::move(row)));
    }
    return Value(std::move(out));
  }
  if (name == "map") return MapFilter(input, args, limits);
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return SelectFilter(name, input, args, limits);
  }
  return absl::InvalidArgumentError(absl::StrCat("no filter named '", SV(name), "'"));
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& input, const CallArgs& args,
                               const BuiltinLimits& limits) {
  const Value* other = Arg(args, 0, "other");
  auto need_arg = [&]() -> absl::Status {
    if (other == nullptr) return TypeError(absl::StrCat("test '", SV(name), "' needs an argument"));
    return absl::OkStatus();
  };
  if (name == "defined") return !input.IsUndefined();
  if (name == "undefined") return input.IsUndefined();
  if (name == "none") return input.IsNone();
  if (name == "boolean") return input.IsBool();
  if (name == "true") return input.IsBool() && input.AsBool();
  if (name == "false") return input.IsBool() && !input.AsBool();
  if (name == "integer") return input.IsInt();
  if (name == "float") return input.IsFloat();
  if (name == "number") return input.IsNumber();
  if (name == "string") return input.IsString();
  if (name == "mapping") return input.IsDict();
  if (name == "sequence") {
    return input.IsString() || input.IsList() || input.IsDict() || input.IsUndefined();
  }
  if (name == "iterable") {
    return input.IsString() || input.IsList() || input.IsDict() || input.IsUndefined();
  }
  if (name == "callable") return input.IsCallable();
  if (name == "escaped") return false;
  if (name == "filter") return input.IsString() && IsKnownFilter(input.AsString());
  if (name == "test") return input.IsString() && IsKnownTest(input.AsString());
  if (name == "lower" || name == "upper") {
    LOOM_ASSIGN_OR_RETURN(
        Value v, CallMethod(Value(input.Str()), name == "lower" ? "islower" : "isupper", CallArgs{},
                            limits));
    return v.AsBool();
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    LOOM_RETURN_IF_ERROR(RequireDefined(input));
    const Value divisor = name == "divisibleby" ? ArgOr(args, 0, "num", Value()) : Value(2);
    LOOM_RETURN_IF_ERROR(RequireDefined(divisor));
    LOOM_ASSIGN_OR_RETURN(Value rem, BinaryOp("%", input, divisor, limits));
    const bool zero = rem.IsNumber() && rem.NumberAsFloat() == 0;
    return name == "odd" ? !zero : zero;
  }
  if (name == "sameas") {
    LOOM_RETURN_IF_ERROR(need_arg());
    if (input.kind() != other->kind()) return false;
    switch (input.kind()) {
      case Value::Kind::kNone:
      case Value::Kind::kUndefined:
        return true;
      case Value::Kind::kBool:
        return input.AsBool() == other->AsBool();
      case Value::Kind::kInt:
        return input.AsInt() == other->AsInt() && input.AsInt() >= -5 && input.AsInt() <= 256;
      case Value::Kind::kString:
        return input.AsString() == other->AsString();
      case Value::Kind::kList:
        return &input.AsList() == &other->AsList();
      case Value::Kind::kDict:
        return &input.AsDict() == &other->AsDict();
      default:
        return input.Equals(*other);
    }
  }
  if (name == "eq" || name == "equalto" || name == "==") {
    LOOM_RETURN_IF_ERROR(need_arg());
    return input.Equals(*other);
  }
  if (name == "ne" || name == "!=") {
    LOOM_RETURN_IF_ERROR(need_arg());
    return !input.Equals(*other);
  }
  if (name == "in") {
    const Value* seq = Arg(args, 0, "seq");
    if (seq == nullptr) return TypeError("test 'in' needs an argument");
    return Contains(*seq, input);
  }
  if (name == "lt" || name == "lessthan" || name == "<" || name == "gt" || name == "greaterthan" ||
      name == ">" || name == "le" || name == "<=" || name == "ge" || name == ">=") {
    LOOM_RETURN_IF_ERROR(need_arg());
    LOOM_RETURN_IF_ERROR(RequireDefined(input));
    LOOM_RETURN_IF_ERROR(RequireDefined(*other));
    const bool greater =
        name == "gt" || name == "greaterthan" || name == ">" || name == "le" || name == "<=";
    LOOM_ASSIGN_OR_RETURN(bool less, greater ? LessThan(*other, input) : LessThan(input, *other));
    const bool strict = name == "lt" || name == "lessthan" || name == "<" || name == "gt" ||
                        name == "greaterthan" || name == ">";
    return strict ? less : !less;
  }
  return absl::InvalidArgumentError(absl::StrCat("no test named '", SV(name), "'"));
}

// ---- Global functions ------------------------------------------------------------------------

namespace {

class GlobalFunction : public Callable {
 public:
  explicit GlobalFunction(std::string name) : name_(std::move(name)) {}
  const std::string& name() const override { return name_; }

 private:
  std::string name_;
};

constexpr std::string_view kGlobalFunctions[] = {"range", "namespace", "dict", "raise_exception",
                                                 "strftime_now"};
// Jinja's sandbox refuses larger ranges.
constexpr int64_t kMaxRange = 100000;

}  // namespace

Value LookupGlobalFunction(std::string_view name) {
  for (std::string_view known : kGlobalFunctions) {
    if (known == name) {
      return Value::MakeCallable(std::make_shared<GlobalFunction>(std::string(name)));
    }
  }
  return Value();
}

bool IsGlobalFunction(const Callable& function) {
  return dynamic_cast<const GlobalFunction*>(&function) != nullptr;
}

absl::StatusOr<Value> CallGlobalFunction(const Callable& function, const CallArgs& args,
                                         const BuiltinLimits& limits) {
  const std::string& name = function.name();
  if (name == "raise_exception") {
    const Value message = ArgOr(args, 0, "message", Value(""));
    return absl::InvalidArgumentError(message.Str());
  }
  if (name == "range") {
    if (args.positional.empty() || args.positional.size() > 3 || !args.keyword.empty()) {
      return TypeError("range expected 1 to 3 integer arguments");
    }
    for (const Value& v : args.positional) {
      if (!v.IsInt() && !v.IsBool()) {
        return TypeError(absl::StrCat("'", v.TypeName(),
                                      "' object cannot be interpreted as an "
                                      "integer"));
      }
    }
    int64_t start = 0, stop, step = 1;
    if (args.positional.size() == 1) {
      stop = args.positional[0].NumberAsInt();
    } else {
      start = args.positional[0].NumberAsInt();
      stop = args.positional[1].NumberAsInt();
      if (args.positional.size() == 3) step = args.positional[2].NumberAsInt();
    }
    if (step == 0) return absl::InvalidArgumentError("range() arg 3 must not be zero");
    const __int128 span = static_cast<__int128>(stop) - start;
    __int128 count = 0;
    if ((step > 0 && span > 0) || (step < 0 && span < 0)) {
      count = (span + (step > 0 ? step - 1 : step + 1)) / step;
    }
    if (count > kMaxRange || count > limits.max_sequence_length) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "Range too big. The sandbox blocks ranges larger than MAX_RANGE (", kMaxRange, ")."));
    }
    ValueList out;
    out.reserve(static_cast<size_t>(count));
    for (int64_t i = 0; i < static_cast<int64_t>(count); ++i)
      out.push_back(Value(start + i * step));
    return Value(std::move(out));
  }
  if (name == "namespace" || name == "dict") {
    ValueDict attributes;
    if (!args.positional.empty()) {
      if (args.positional.size() > 1 || !args.positional[0].IsDict()) {
        return TypeError(absl::StrCat(name, "() accepts one mapping and keyword arguments"));
      }
      attributes = args.positional[0].AsDict();
    }
    for (const auto& [key, value] : args.keyword) attributes.Set(key, value);
    if (name == "dict") return Value(std::move(attributes));
    return Value::MakeNamespace(std::move(attributes));
  }
  if (name == "strftime_now") {
    const Value format = ArgOr(args, 0, "format", Value());
    if (!format.IsString()) return TypeError("strftime_now() argument must be str");
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buf[512];
    const size_t n = std::strftime(buf, sizeof(buf), format.AsString().c_str(), &local);
    if (n == 0 && !format.AsString().empty()) {
      return absl::InvalidArgumentError("strftime_now: format produced no output");
    }
    return Value(std::string(buf, n));
  }
  return absl::InvalidArgumentError(absl::StrCat("'", name, "' is not callable"));
}

}  // namespace loom::chat
