// Small absl::Status helpers. Debian's abseil (20220623) ships no status macros, so Loom has its
// own.
//
//   absl::StatusOr<int> ParseCount(std::string_view s);
//   absl::Status Load() {
//     LOOM_ASSIGN_OR_RETURN(int n, ParseCount("12"));
//     LOOM_RETURN_IF_ERROR(Check(n));
//     return absl::OkStatus();
//   }
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOOM_STATUS_CONCAT_INNER_(a, b) a##b
#define LOOM_STATUS_CONCAT_(a, b) LOOM_STATUS_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function when `expr` is not OK.
#define LOOM_RETURN_IF_ERROR(expr)               \
  do {                                           \
    const ::absl::Status loom_status_ = (expr);  \
    if (!loom_status_.ok()) return loom_status_; \
  } while (0)

#define LOOM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

// `lhs` may be a declaration (`auto x`) or an existing variable.
#define LOOM_ASSIGN_OR_RETURN(lhs, expr) \
  LOOM_ASSIGN_OR_RETURN_IMPL_(LOOM_STATUS_CONCAT_(loom_statusor_, __LINE__), lhs, expr)
