// Command-line value parsing shared by the loom subcommands.
//
//   int n = 0;
//   LOOM_RETURN_IF_ERROR(loom::server::ParseNumber("--max-tokens", "64", &n));
#pragma once

#include <charconv>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace loom::server {

// Parses all of `text` as a number of type T; InvalidArgument naming `flag` otherwise.
template <typename T>
absl::Status ParseNumber(const std::string& flag, const std::string& text, T* out) {
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, *out);
  if (ec != std::errc() || p != end) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", text, "' is not a valid number"));
  }
  return absl::OkStatus();
}

}  // namespace loom::server
