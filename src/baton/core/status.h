// Error handling conventions for baton.
//
// Anything a caller can recover from returns absl::Status / absl::StatusOr<T>;
// broken invariants use assert/CHECK. These macros keep the happy path short.
// Thread-safety: stateless.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define BATON_CONCAT_INNER_(a, b) a##b
#define BATON_CONCAT_(a, b) BATON_CONCAT_INNER_(a, b)

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define BATON_RETURN_IF_ERROR(expr)                 \
  do {                                              \
    ::absl::Status baton_status_ = (expr);          \
    if (!baton_status_.ok()) return baton_status_;  \
  } while (false)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status.
#define BATON_ASSIGN_OR_RETURN(lhs, rexpr) \
  BATON_ASSIGN_OR_RETURN_IMPL_(BATON_CONCAT_(baton_statusor_, __LINE__), lhs, rexpr)
#define BATON_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                 \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = std::move(tmp).value()
