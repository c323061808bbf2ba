// Python operators, container access and str/dict methods (see builtins.h).

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "engine/chat_template/absl_compat.h"
#include "engine/chat_template/builtins.h"
#include "engine/chat_template/utf8.h"

namespace loom::chat {
namespace {

absl::Status TypeError(std::string_view message) { return absl::InvalidArgumentError(SV(message)); }

absl::Status OperandError(std::string_view op, const Value& a, const Value& b) {
  return TypeError(absl::StrCat("unsupported operand type(s) for ", SV(op), ": '", a.TypeName(),
                                "' and '", b.TypeName(), "'"));
}

absl::Status CheckSize(size_t bytes, const BuiltinLimits& limits) {
  if (bytes > limits.max_string_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("string would exceed the limit of ", limits.max_string_bytes, " bytes"));
  }
  return absl::OkStatus();
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t FloorMod(int64_t a, int64_t b) {
  int64_t r = a % b;
  if (r != 0 && ((r < 0) != (b < 0))) r += b;
  return r;
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t times, const BuiltinLimits& limits) {
  if (times < 0) times = 0;
  if (seq.IsString()) {
    const std::string& s = seq.AsString();
    if (!s.empty() && static_cast<uint64_t>(times) > limits.max_string_bytes / s.size()) {
      return CheckSize(limits.max_string_bytes + 1, limits);
    }
    std::string out;
    out.reserve(s.size() * times);
    for (int64_t i = 0; i < times; ++i) out += s;
    return Value(std::move(out));
  }
  const ValueList& list = seq.AsList();
  if (!list.empty() && times > limits.max_sequence_length / static_cast<int64_t>(list.size())) {
    return absl::ResourceExhaustedError("list repetition too large");
  }
  ValueList out;
  for (int64_t i = 0; i < times; ++i) out.insert(out.end(), list.begin(), list.end());
  return seq.IsTuple() ? Value::Tuple(std::move(out)) : Value(std::move(out));
}

absl::StatusOr<Value> IntPow(int64_t base, int64_t exp) {
  if (exp < 0) return Value(std::pow(static_cast<double>(base), static_cast<double>(exp)));
  int64_t result = 1;
  while (exp > 0) {
    if (exp & 1) {
      if (__builtin_mul_overflow(result, base, &result)) {
        return absl::OutOfRangeError("integer overflow");
      }
    }
    exp >>= 1;
    if (exp > 0 && __builtin_mul_overflow(base, base, &base)) {
      return absl::OutOfRangeError("integer overflow");
    }
  }
  return Value(result);
}

// Normalizes a Python index into [0, size); false when out of range.
bool NormalizeIndex(int64_t size, int64_t* index) {
  if (*index < 0) *index += size;
  return *index >= 0 && *index < size;
}

}  // namespace

absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b,
                               const BuiltinLimits& limits) {
  if (op == "~") {
    std::string out = a.Str();
    out += b.Str();
    LOOM_RETURN_IF_ERROR(CheckSize(out.size(), limits));
    return Value(std::move(out));
  }
  const bool numbers = a.IsNumber() && b.IsNumber();
  const bool floats = numbers && (a.IsFloat() || b.IsFloat());
  if (op == "+") {
    if (floats) return Value(a.NumberAsFloat() + b.NumberAsFloat());
    if (numbers) {
      int64_t r;
      if (__builtin_add_overflow(a.NumberAsInt(), b.NumberAsInt(), &r)) {
        return absl::OutOfRangeError("integer overflow");
      }
      return Value(r);
    }
    if (a.IsString() && b.IsString()) {
      LOOM_RETURN_IF_ERROR(CheckSize(a.AsString().size() + b.AsString().size(), limits));
      return Value(a.AsString() + b.AsString());
    }
    if (a.IsList() && b.IsList() && a.IsTuple() == b.IsTuple()) {
      ValueList out = a.AsList();
      out.insert(out.end(), b.AsList().begin(), b.AsList().end());
      return a.IsTuple() ? Value::Tuple(std::move(out)) : Value(std::move(out));
    }
    if (a.IsString()) {
      return TypeError(
          absl::StrCat("can only concatenate str (not \"", b.TypeName(), "\") to str"));
    }
    return OperandError(op, a, b);
  }
  if (op == "-") {
    if (floats) return Value(a.NumberAsFloat() - b.NumberAsFloat());
    if (numbers) {
      int64_t r;
      if (__builtin_sub_overflow(a.NumberAsInt(), b.NumberAsInt(), &r)) {
        return absl::OutOfRangeError("integer overflow");
      }
      return Value(r);
    }
    return OperandError(op, a, b);
  }
  if (op == "*") {
    if (floats) return Value(a.NumberAsFloat() * b.NumberAsFloat());
    if (numbers) {
      int64_t r;
      if (__builtin_mul_overflow(a.NumberAsInt(), b.NumberAsInt(), &r)) {
        return absl::OutOfRangeError("integer overflow");
      }
      return Value(r);
    }
    if ((a.IsString() || a.IsList()) && b.IsNumber() && !b.IsFloat()) {
      return Repeat(a, b.NumberAsInt(), limits);
    }
    if ((b.IsString() || b.IsList()) && a.IsNumber() && !a.IsFloat()) {
      return Repeat(b, a.NumberAsInt(), limits);
    }
    return OperandError(op, a, b);
  }
  if (op == "/") {
    if (!numbers) return OperandError(op, a, b);
    if (b.NumberAsFloat() == 0) return absl::InvalidArgumentError("division by zero");
    return Value(a.NumberAsFloat() / b.NumberAsFloat());
  }
  if (op == "//" || op == "%") {
    if (!numbers) {
      if (op == "%" && a.IsString()) {
        return absl::UnimplementedError("printf-style string formatting ('%') is not supported");
      }
      return OperandError(op, a, b);
    }
    if (b.NumberAsFloat() == 0) {
      return absl::InvalidArgumentError(floats ? "float divmod()"
                                               : "integer division or modulo by zero");
    }
    if (floats) {
      // CPython's float_divmod.
      const double x = a.NumberAsFloat();
      const double y = b.NumberAsFloat();
      double mod = std::fmod(x, y);
      double div = (x - mod) / y;
      if (mod != 0) {
        if ((y < 0) != (mod < 0)) {
          mod += y;
          div -= 1.0;
        }
      } else {
        mod = std::copysign(0.0, y);
      }
      if (op == "%") return Value(mod);
      double floordiv;
      if (div != 0) {
        floordiv = std::floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
      } else {
        floordiv = std::copysign(0.0, x / y);
      }
      return Value(floordiv);
    }
    if (a.NumberAsInt() == std::numeric_limits<int64_t>::min() && b.NumberAsInt() == -1) {
      return absl::OutOfRangeError("integer overflow");
    }
    if (op == "%") return Value(FloorMod(a.NumberAsInt(), b.NumberAsInt()));
    return Value(FloorDiv(a.NumberAsInt(), b.NumberAsInt()));
  }
  if (op == "**") {
    if (!numbers) return OperandError(op, a, b);
    if (floats) return Value(std::pow(a.NumberAsFloat(), b.NumberAsFloat()));
    return IntPow(a.NumberAsInt(), b.NumberAsInt());
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown operator '", SV(op), "'"));
}

absl::StatusOr<bool> LessThan(const Value& a, const Value& b) {
  if (a.IsNumber() && b.IsNumber()) {
    if (a.IsFloat() || b.IsFloat()) return a.NumberAsFloat() < b.NumberAsFloat();
    return a.NumberAsInt() < b.NumberAsInt();
  }
  if (a.IsString() && b.IsString()) return a.AsString() < b.AsString();
  if (a.IsList() && b.IsList() && a.IsTuple() == b.IsTuple()) {
    const ValueList& x = a.AsList();
    const ValueList& y = b.AsList();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return LessThan(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return TypeError(absl::StrCat("'<' not supported between instances of '", a.TypeName(), "' and '",
                                b.TypeName(), "'"));
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.IsString()) {
        return TypeError(
            absl::StrCat("'in <string>' requires string as left operand, not ", item.TypeName()));
      }
      return container.AsString().find(item.AsString()) != std::string::npos;
    case Value::Kind::kList:
      for (const Value& v : container.AsList()) {
        if (v.Equals(item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (item.IsList() && !item.IsTuple()) return TypeError("unhashable type: 'list'");
      if (item.IsDict()) return TypeError("unhashable type: 'dict'");
      return item.IsString() && container.AsDict().Find(item.AsString()) != nullptr;
    default:
      return TypeError(
          absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
  }
}

absl::StatusOr<ValueList> Iterate(const Value& value, const BuiltinLimits& limits) {
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      return ValueList{};
    case Value::Kind::kList:
      return value.AsList();
    case Value::Kind::kDict: {
      ValueList keys;
      keys.reserve(value.AsDict().size());
      for (const auto& [key, unused] : value.AsDict()) keys.push_back(Value(key));
      return keys;
    }
    case Value::Kind::kString: {
      ValueList chars;
      for (char32_t cp : DecodeUtf8(value.AsString())) {
        std::string s;
        AppendUtf8(cp, &s);
        chars.push_back(Value(std::move(s)));
      }
      return chars;
    }
    default:
      return TypeError(absl::StrCat("'", value.TypeName(), "' object is not iterable"));
  }
}

absl::StatusOr<Value> GetItem(const Value& object, const Value& key) {
  // Jinja's getitem turns every lookup failure into undefined.
  auto missing = [&] {
    if (!key.IsString()) {
      return Value::Undefined(
          absl::StrCat(object.TypeName(), " object has no element ", key.Repr()));
    }
    return Value::Undefined(
        absl::StrCat("'", object.TypeName(), " object' has no attribute '", key.AsString(), "'"));
  };
  if (object.IsDict() || object.IsNamespace()) {
    if (!key.IsString()) return missing();
    Value v = object.Get(key.AsString());
    return v.IsUndefined() ? missing() : v;
  }
  if ((object.IsList() || object.IsString()) && (key.IsInt() || key.IsBool())) {
    int64_t index = key.NumberAsInt();
    if (object.IsList()) {
      const ValueList& list = object.AsList();
      if (!NormalizeIndex(static_cast<int64_t>(list.size()), &index)) return missing();
      return list[index];
    }
    const std::u32string cps = DecodeUtf8(object.AsString());
    if (!NormalizeIndex(static_cast<int64_t>(cps.size()), &index)) return missing();
    return Value(EncodeUtf8(std::u32string_view(cps).substr(index, 1)));
  }
  return missing();
}

absl::StatusOr<Value> Slice(const Value& object, const Value& start_v, const Value& stop_v,
                            const Value& step_v) {
  for (const Value* v : {&start_v, &stop_v, &step_v}) {
    if (!v->IsNone() && !v->IsInt() && !v->IsBool()) {
      return TypeError("slice indices must be integers or None");
    }
  }
  if (!object.IsList() && !object.IsString()) {
    return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' is not sliceable"));
  }
  const int64_t step = step_v.IsNone() ? 1 : step_v.NumberAsInt();
  if (step == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  std::u32string cps;
  int64_t length;
  if (object.IsString()) {
    cps = DecodeUtf8(object.AsString());
    length = static_cast<int64_t>(cps.size());
  } else {
    length = static_cast<int64_t>(object.AsList().size());
  }
  const int64_t lower = step < 0 ? -1 : 0;
  const int64_t upper = step < 0 ? length - 1 : length;
  auto adjust = [&](const Value& v, int64_t fallback) {
    if (v.IsNone()) return fallback;
    int64_t i = v.NumberAsInt();
    if (i < 0) {
      i += length;
      if (i < lower) i = lower;
    } else if (i > upper) {
      i = upper;
    }
    return i;
  };
  const int64_t start = adjust(start_v, step < 0 ? upper : lower);
  const int64_t stop = adjust(stop_v, step < 0 ? lower : upper);
  std::vector<int64_t> indices;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) indices.push_back(i);
  if (object.IsString()) {
    std::u32string out;
    for (int64_t i : indices) out.push_back(cps[i]);
    return Value(EncodeUtf8(out));
  }
  ValueList out;
  for (int64_t i : indices) out.push_back(object.AsList()[i]);
  return object.IsTuple() ? Value::Tuple(std::move(out)) : Value(std::move(out));
}

absl::StatusOr<Value> GetAttribute(const Value& object, std::string_view name) {
  if (object.IsDict() || object.IsNamespace()) return object.Get(name);
  return Value::Undefined(
      absl::StrCat("'", object.TypeName(), " object' has no attribute '", SV(name), "'"));
}

// ---- Methods ---------------------------------------------------------------------------------

namespace {

const Value* Arg(const CallArgs& args, size_t index, std::string_view name) {
  if (index < args.positional.size()) return &args.positional[index];
  for (const auto& [key, value] : args.keyword) {
    if (key == name) return &value;
  }
  return nullptr;
}

absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t index, std::string_view name,
                                      std::string_view method) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || !v->IsString()) {
    return TypeError(absl::StrCat(SV(method), "() argument '", SV(name), "' must be str"));
  }
  return v->AsString();
}

int64_t IntArg(const CallArgs& args, size_t index, std::string_view name, int64_t fallback) {
  const Value* v = Arg(args, index, name);
  if (v == nullptr || v->IsNone() || !v->IsNumber()) return fallback;
  return v->NumberAsInt();
}

ValueList SplitWhitespace(const std::string& s, int64_t maxsplit) {
  ValueList out;
  const std::u32string cps = DecodeUtf8(s);
  size_t i = 0;
  while (i < cps.size()) {
    while (i < cps.size() && IsPythonSpace(cps[i])) ++i;
    if (i >= cps.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit) {
      size_t end = cps.size();
      while (end > i && IsPythonSpace(cps[end - 1])) --end;
      out.push_back(Value(EncodeUtf8(std::u32string_view(cps).substr(i, end - i))));
      break;
    }
    size_t j = i;
    while (j < cps.size() && !IsPythonSpace(cps[j])) ++j;
    out.push_back(Value(EncodeUtf8(std::u32string_view(cps).substr(i, j - i))));
    i = j;
  }
  return out;
}

ValueList SplitOn(const std::string& s, const std::string& sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (!from_right) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const size_t at = s.find(sep, start);
      if (at == std::string::npos) break;
      parts.push_back(s.substr(start, at - start));
      start = at + sep.size();
    }
    parts.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    std::vector<std::string> reversed;
    while (maxsplit < 0 || static_cast<int64_t>(reversed.size()) < maxsplit) {
      if (end < sep.size()) break;
      const size_t at = s.rfind(sep, end - sep.size());
      if (at == std::string::npos) break;
      reversed.push_back(s.substr(at + sep.size(), end - at - sep.size()));
      end = at;
    }
    reversed.push_back(s.substr(0, end));
    parts.assign(reversed.rbegin(), reversed.rend());
  }
  ValueList out;
  for (std::string& p : parts) out.push_back(Value(std::move(p)));
  return out;
}

}  // namespace

absl::StatusOr<Value> CallMethod(const Value& object, std::string_view method, const CallArgs& args,
                                 const BuiltinLimits& limits) {
  if (object.IsString()) {
    const std::string& s = object.AsString();
    if (method == "strip" || method == "lstrip" || method == "rstrip") {
      const Value* chars = Arg(args, 0, "chars");
      if (chars != nullptr && !chars->IsNone() && !chars->IsString()) {
        return TypeError(absl::StrCat(SV(method), " arg must be None or str"));
      }
      const std::string* set =
          (chars != nullptr && chars->IsString()) ? &chars->AsString() : nullptr;
      return Value(PythonStrip(s, set, method != "rstrip", method != "lstrip"));
    }
    if (method == "upper") return Value(PythonUpper(s));
    if (method == "lower") return Value(PythonLower(s));
    if (method == "title") return Value(PythonTitle(s));
    if (method == "capitalize") return Value(PythonCapitalize(s));
    if (method == "startswith" || method == "endswith") {
      const Value* affix = Arg(args, 0, "prefix");
      if (affix == nullptr)
        return TypeError(absl::StrCat(SV(method), "() takes at least 1 argument"));
      std::vector<std::string> candidates;
      if (affix->IsString()) {
        candidates.push_back(affix->AsString());
      } else if (affix->IsList()) {
        for (const Value& v : affix->AsList()) {
          if (!v.IsString())
            return TypeError(absl::StrCat(SV(method), "() tuple items must be str"));
          candidates.push_back(v.AsString());
        }
      } else {
        return TypeError(absl::StrCat(SV(method), "() first arg must be str or a tuple of str"));
      }
      for (const std::string& c : candidates) {
        if (method == "startswith"
                ? s.compare(0, c.size(), c) == 0 && s.size() >= c.size()
                : s.size() >= c.size() && s.compare(s.size() - c.size(), c.size(), c) == 0) {
          return Value(true);
        }
      }
      return Value(false);
    }
    if (method == "split" || method == "rsplit") {
      const Value* sep = Arg(args, 0, "sep");
      const int64_t maxsplit = IntArg(args, 1, "maxsplit", -1);
      if (sep == nullptr || sep->IsNone()) {
        if (method == "rsplit" && maxsplit >= 0) {
          return absl::UnimplementedError("rsplit() with maxsplit and no separator");
        }
        return Value(SplitWhitespace(s, maxsplit));
      }
      if (!sep->IsString()) return TypeError("must be str or None");
      if (sep->AsString().empty()) return absl::InvalidArgumentError("empty separator");
      return Value(SplitOn(s, sep->AsString(), maxsplit, method == "rsplit"));
    }
    if (method == "splitlines") {
      ValueList lines;
      std::string current;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\n' || s[i] == '\r') {
          lines.push_back(Value(current));
          current.clear();
          if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
        } else {
          current.push_back(s[i]);
        }
      }
      if (!current.empty()) lines.push_back(Value(current));
      return Value(std::move(lines));
    }
    if (method == "replace") {
      LOOM_ASSIGN_OR_RETURN(std::string old, StringArg(args, 0, "old", method));
      LOOM_ASSIGN_OR_RETURN(std::string with, StringArg(args, 1, "new", method));
      std::string out = PythonReplace(s, old, with, IntArg(args, 2, "count", -1));
      if (out.size() > limits.max_string_bytes) {
        return absl::ResourceExhaustedError("string too large");
      }
      return Value(std::move(out));
    }
    if (method == "find" || method == "rfind" || method == "count") {
      LOOM_ASSIGN_OR_RETURN(std::string sub, StringArg(args, 0, "sub", method));
      if (method == "count") {
        if (sub.empty()) return Value(static_cast<int64_t>(CountCodePoints(s) + 1));
        int64_t n = 0;
        for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) {
          ++n;
        }
        return Value(n);
      }
      const size_t at = method == "find" ? s.find(sub) : s.rfind(sub);
      if (at == std::string::npos) return Value(-1);
      return Value(static_cast<int64_t>(CountCodePoints(std::string_view(s).substr(0, at))));
    }
    if (method == "join") {
      const Value* items = Arg(args, 0, "iterable");
      if (items == nullptr) return TypeError("join() takes exactly one argument");
      LOOM_ASSIGN_OR_RETURN(ValueList list, Iterate(*items, limits));
      std::string out;
      for (size_t i = 0; i < list.size(); ++i) {
        if (!list[i].IsString()) {
          return TypeError(absl::StrCat("sequence item ", i, ": expected str instance, ",
                                        list[i].TypeName(), " found"));
        }
        if (i > 0) out += s;
        out += list[i].AsString();
        LOOM_RETURN_IF_ERROR(CheckSize(out.size(), limits));
      }
      return Value(std::move(out));
    }
    if (method == "isdigit" || method == "isalpha" || method == "isspace" || method == "isalnum" ||
        method == "islower" || method == "isupper") {
      const std::u32string cps = DecodeUtf8(s);
      if (cps.empty()) return Value(false);
      bool any_cased = false;
      for (char32_t cp : cps) {
        const bool digit = cp >= '0' && cp <= '9';
        const bool alpha = IsCasedLetter(cp);
        if (method == "isdigit" && !digit) return Value(false);
        if (method == "isalpha" && !alpha) return Value(false);
        if (method == "isalnum" && !alpha && !digit) return Value(false);
        if (method == "isspace" && !IsPythonSpace(cp)) return Value(false);
        if (method == "islower" && alpha) {
          if (ToLower(cp) != cp) return Value(false);
          any_cased = true;
        }
        if (method == "isupper" && alpha) {
          if (ToUpper(cp) != cp) return Value(false);
          any_cased = true;
        }
      }
      if (method == "islower" || method == "isupper") return Value(any_cased);
      return Value(true);
    }
  }
  if (object.IsDict()) {
    const ValueDict& dict = object.AsDict();
    if (method == "items") {
      ValueList items;
      for (const auto& [key, value] : dict) items.push_back(Value::Tuple({Value(key), value}));
      return Value(std::move(items));
    }
    if (method == "keys" || method == "values") {
      ValueList items;
      for (const auto& [key, value] : dict) items.push_back(method == "keys" ? Value(key) : value);
      return Value(std::move(items));
    }
    if (method == "get") {
      const Value* key = Arg(args, 0, "key");
      if (key == nullptr) return TypeError("get expected at least 1 argument, got 0");
      const Value* fallback = Arg(args, 1, "default");
      if (key->IsString()) {
        if (const Value* found = dict.Find(key->AsString())) return *found;
      }
      return fallback != nullptr ? *fallback : Value::None();
    }
  }
  static constexpr std::string_view kMutating[] = {"append", "extend",  "insert",    "pop",
                                                   "remove", "clear",   "sort",      "reverse",
                                                   "update", "popitem", "setdefault"};
  for (std::string_view m : kMutating) {
    if (method == m && (object.IsList() || object.IsDict())) {
      return absl::PermissionDeniedError(absl::StrCat("access to attribute '", SV(method), "' of '",
                                                      object.TypeName(),
                                                      "' object is unsafe (templates are "
                                                      "immutable)"));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'", object.TypeName(), " object' has no method '", SV(method), "'"));
}

}  // namespace loom::chat
