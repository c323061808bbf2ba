// Jinja2's builtin filters, tests, global functions and Python methods for the chat template
// engine. Filters and tests follow jinja2 3.1 (plus transformers' `tojson`); methods follow
// Python's str and dict.
//
//   CallArgs args;
//   args.positional = {Value(", ")};
//   absl::StatusOr<Value> joined = ApplyFilter("join", Value(ValueList{"a", "b"}), args, limits);
//   // "a, b"
//   ApplyTest("defined", Value(), {}, limits);  // false
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/chat_template/value.h"

namespace loom::chat {

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

// Size limits that builtins must respect (a hostile template must not allocate unboundedly).
struct BuiltinLimits {
  size_t max_string_bytes = 16 << 20;
  int64_t max_sequence_length = 1'000'000;
};

bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& input, const CallArgs& args,
                                  const BuiltinLimits& limits);
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& input, const CallArgs& args,
                               const BuiltinLimits& limits);

// `object.method(args)` for str and dict methods (strip, split, startswith, items, get, ...).
absl::StatusOr<Value> CallMethod(const Value& object, std::string_view method, const CallArgs& args,
                                 const BuiltinLimits& limits);

// Global functions other than macros: range, namespace, dict, raise_exception, strftime_now.
// Each is a Value holding a Callable, so that `raise_exception is defined` holds.
Value LookupGlobalFunction(std::string_view name);
// Calls a function returned by LookupGlobalFunction. raise_exception returns an InvalidArgument
// status carrying exactly the template's message.
absl::StatusOr<Value> CallGlobalFunction(const Callable& function, const CallArgs& args,
                                         const BuiltinLimits& limits);
bool IsGlobalFunction(const Callable& function);

// Python operators, shared by the evaluator and filters such as sum and sort.
absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b,
                               const BuiltinLimits& limits);
// Python's < for numbers, strings and lists (fails for mixed or unordered types).
absl::StatusOr<bool> LessThan(const Value& a, const Value& b);
// Python's `a in b`.
absl::StatusOr<bool> Contains(const Value& container, const Value& item);
// Python's iter(): list items, dict keys, string characters; undefined iterates as empty.
absl::StatusOr<ValueList> Iterate(const Value& value, const BuiltinLimits& limits);
// Python subscript and slice; a missing key or index gives undefined.
absl::StatusOr<Value> GetItem(const Value& object, const Value& key);
absl::StatusOr<Value> Slice(const Value& object, const Value& start, const Value& stop,
                            const Value& step);
// Jinja attribute lookup `object.name`: dict keys, namespace attributes; otherwise undefined.
absl::StatusOr<Value> GetAttribute(const Value& object, std::string_view name);

}  // namespace loom::chat
