// Debian's abseil (20220623) was built with its own absl::string_view, which does not convert
// from std::string_view; SV() adapts one for absl::StrCat and absl::Status.
//
//   std::string_view name = "x";
//   absl::InvalidArgumentError(absl::StrCat("no filter named '", SV(name), "'"));
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace loom::chat {

inline absl::string_view SV(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace loom::chat
