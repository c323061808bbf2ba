// Internal to loom_json_schema: the pieces json_schema.cc builds GBNF from.
//
//   RegexToGbnf("^[a-z]+\\d?$")   // ([a-z])+ ([0-9])?  (JSON-escaped string contents)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace loom::grammar::internal {

// A GBNF expression for the contents (between the quotes, JSON-escaped) of a JSON string whose
// value `pattern` matches in full. InvalidArgument naming the construct for unsupported regex.
absl::StatusOr<std::string> RegexToGbnf(std::string_view pattern);

// A GBNF expression for the decimal integers in [lo, hi] (unset: unbounded; unbounded ones have
// at most 16 digits).
std::string IntegerRangeGbnf(std::optional<int64_t> lo, std::optional<int64_t> hi);

}  // namespace loom::grammar::internal
