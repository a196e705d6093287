// Status propagation macros, named like Abseil's later ABSL_RETURN_IF_ERROR /
// ABSL_ASSIGN_OR_RETURN (absent from Debian's Abseil 20220623), so that an
// upgrade is a rename.
#ifndef COMMON_STATUS_MACROS_H_
#define COMMON_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SHMALLOC_STATUS_CONCAT_INNER_(a, b) a##b
#define SHMALLOC_STATUS_CONCAT_(a, b) SHMALLOC_STATUS_CONCAT_INNER_(a, b)

// Returns the status of `expr` from the enclosing function if it is not OK.
#define SHMALLOC_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::absl::Status shmalloc_status_ = (expr);            \
    if (!shmalloc_status_.ok()) return shmalloc_status_; \
  } while (0)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status,
// otherwise move-assigns the value to `lhs` (which may be a declaration).
#define SHMALLOC_ASSIGN_OR_RETURN(lhs, rexpr) \
  SHMALLOC_ASSIGN_OR_RETURN_IMPL_(            \
      SHMALLOC_STATUS_CONCAT_(shmalloc_statusor_, __LINE__), lhs, rexpr)

#define SHMALLOC_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                    \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = *std::move(statusor)

#endif  // COMMON_STATUS_MACROS_H_
