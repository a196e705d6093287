// GoogleTest matchers for absl::Status / absl::StatusOr, named like Abseil's
// later absl_testing ones (absent from Debian's 20220623) so an upgrade is a
// rename: EXPECT_THAT(s, IsOk()), StatusIs(absl::StatusCode::kNotFound),
// IsOkAndHolds(Eq(3)).
#ifndef TESTS_TESTING_STATUS_MATCHERS_H_
#define TESTS_TESTING_STATUS_MATCHERS_H_

#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"

namespace shmalloc::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

MATCHER_P(StatusIs, code, "has status code " + absl::StatusCodeToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

MATCHER_P(IsOkAndHolds, matcher, "is OK and holds a matching value") {
  if (!arg.ok()) {
    *result_listener << "status is " << arg.status();
    return false;
  }
  return ::testing::ExplainMatchResult(matcher, *arg, result_listener);
}

}  // namespace shmalloc::testing

#define SHMALLOC_ASSERT_OK(expr) ASSERT_THAT(expr, ::shmalloc::testing::IsOk())
#define SHMALLOC_EXPECT_OK(expr) EXPECT_THAT(expr, ::shmalloc::testing::IsOk())

#endif  // TESTS_TESTING_STATUS_MATCHERS_H_
