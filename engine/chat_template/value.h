// The dynamic value type of the chat template engine: what a Jinja expression evaluates to.
//
// Values follow Python's semantics as Jinja2 sees them (None, bool, int, float, str, list, tuple,
// dict, plus Jinja's `undefined`, `namespace` objects and callables). Lists and dicts are immutable
// once wrapped in a Value and shared by reference, so copying a Value is cheap.
//
//   ValueDict message;
//   message.Set("role", Value("user"));
//   message.Set("content", Value("Hi"));
//   Value messages = Value(ValueList{Value(std::move(message))});
//   messages.AsList()[0].Get("role").Str();  // "user"
//   Value().IsUndefined();                   // true: a default Value is undefined
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace loom::chat {

class Value;
using ValueList = std::vector<Value>;

// An insertion-ordered string-keyed map (Python dicts keep insertion order).
class ValueDict {
 public:
  using Entry = std::pair<std::string, Value>;

  ValueDict() = default;

  // Returns the value stored under `key`, or nullptr.
  const Value* Find(std::string_view key) const;
  // Inserts or replaces; a replaced key keeps its position.
  void Set(std::string key, Value value);

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

// Something a template can call: a builtin function or a macro. The evaluator knows the concrete
// kinds; elsewhere only the name matters.
class Callable {
 public:
  virtual ~Callable() = default;
  virtual const std::string& name() const = 0;
};

// The mutable object made by `namespace(...)`; shared by every Value that refers to it.
struct Namespace {
  ValueDict attributes;
};

// Options of Value::ToJson, mirroring Python's json.dumps as transformers calls it.
struct JsonOptions {
  bool has_indent = false;            // false: compact one-line output (json.dumps(indent=None))
  std::string indent;                 // used when has_indent
  std::string item_separator = ", ";  // json.dumps defaults: ", " / ": " (or "," with indent)
  std::string key_separator = ": ";
  bool ensure_ascii = false;
  bool sort_keys = false;
};

class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kCallable
  };

  // The undefined value (what a missing variable or dict key evaluates to).
  Value() = default;
  static Value Undefined(std::string hint);
  static Value None();
  Value(bool b) : data_(b) {}
  Value(int i) : data_(static_cast<int64_t>(i)) {}
  Value(int64_t i) : data_(i) {}
  Value(double d) : data_(d) {}
  Value(const char* s) : data_(std::string(s)) {}
  Value(std::string_view s) : data_(std::string(s)) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(ValueList list);
  Value(ValueDict dict);
  static Value Tuple(ValueList items);
  static Value MakeNamespace(ValueDict attributes);
  static Value MakeCallable(std::shared_ptr<const Callable> callable);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool IsUndefined() const { return kind() == Kind::kUndefined; }
  bool IsNone() const { return kind() == Kind::kNone; }
  bool IsBool() const { return kind() == Kind::kBool; }
  bool IsInt() const { return kind() == Kind::kInt; }
  bool IsFloat() const { return kind() == Kind::kFloat; }
  // int, float or bool (a bool is an int in Python).
  bool IsNumber() const { return IsInt() || IsFloat() || IsBool(); }
  bool IsString() const { return kind() == Kind::kString; }
  bool IsList() const { return kind() == Kind::kList; }
  bool IsTuple() const { return IsList() && tuple_; }
  bool IsDict() const { return kind() == Kind::kDict; }
  bool IsNamespace() const { return kind() == Kind::kNamespace; }
  bool IsCallable() const { return kind() == Kind::kCallable; }

  // Accessors; each requires the matching kind.
  bool AsBool() const { return std::get<bool>(data_); }
  int64_t AsInt() const { return std::get<int64_t>(data_); }
  double AsFloat() const { return std::get<double>(data_); }
  const std::string& AsString() const { return std::get<std::string>(data_); }
  const ValueList& AsList() const { return *std::get<std::shared_ptr<const ValueList>>(data_); }
  const ValueDict& AsDict() const { return *std::get<std::shared_ptr<const ValueDict>>(data_); }
  Namespace& AsNamespace() const { return *std::get<std::shared_ptr<Namespace>>(data_); }
  const Callable& AsCallable() const { return *std::get<std::shared_ptr<const Callable>>(data_); }
  const std::shared_ptr<const Callable>& callable_ptr() const {
    return std::get<std::shared_ptr<const Callable>>(data_);
  }
  // Nesting depth: 0 for scalars, 1 + the deepest element for lists and dicts (computed when the
  // container is built), 1 for namespaces.
  int depth() const { return depth_; }
  // For an undefined value: why it is undefined ("'x' is undefined"), for error messages.
  std::string UndefinedMessage() const;

  // int or bool as int64; float truncated. Requires IsNumber().
  int64_t NumberAsInt() const;
  double NumberAsFloat() const;

  // Dict or namespace member, or undefined.
  Value Get(std::string_view key) const;

  // Python truthiness (undefined is falsy).
  bool Truthy() const;
  // Python str(): what `{{ value }}` prints. Undefined prints as "".
  std::string Str() const;
  // Python repr(), used inside containers: strings are quoted.
  std::string Repr() const;
  // Python type name for error messages: "str", "int", "dict", ...
  std::string TypeName() const;
  // Python ==. Undefined equals only undefined.
  bool Equals(const Value& other) const;
  // Python json.dumps; fails for undefined, namespaces and callables.
  absl::StatusOr<std::string> ToJson(const JsonOptions& options = {}) const;

 private:
  struct UndefinedData {
    std::string hint;
  };
  struct NoneData {};
  using Data = std::variant<UndefinedData, NoneData, bool, int64_t, double, std::string,
                            std::shared_ptr<const ValueList>, std::shared_ptr<const ValueDict>,
                            std::shared_ptr<Namespace>, std::shared_ptr<const Callable>>;

  Data data_;
  bool tuple_ = false;
  int depth_ = 0;
};

// Python float repr: "1.0", "0.1", "1e+16", "1.5e-05", "inf", "nan".
std::string FormatPythonFloat(double d);

}  // namespace loom::chat
