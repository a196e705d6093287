// RunProcess: fork/exec a program, feed it stdin, capture its stdout and
// stderr and its exit status, with a deadline. For tests that run the real
// `shmalloc` CLI and the C API test binary.
//
// Thread-safety: thread-safe (no shared state); the child is exec'd right
// after fork, with an environment prepared before the fork.
#ifndef TESTS_INTEGRATION_SUBPROCESS_H_
#define TESTS_INTEGRATION_SUBPROCESS_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace shmalloc::testing {

struct ProcessOptions {
  // Environment changes: NAME -> value; a value of "\0unset" (see kUnset)
  // removes NAME. Everything else is inherited.
  std::map<std::string, std::string> env;
  std::string stdin_data;  // written to the child's stdin, then closed
  absl::Duration deadline = absl::Seconds(30);
};
inline const std::string kUnset = std::string("\0unset", 6);

struct ProcessResult {
  int exit_code = -1;  // WEXITSTATUS, or -1 when killed by a signal
  int signal = 0;      // the signal that killed it, else 0
  std::string out;     // all of stdout
  std::string err;     // all of stderr
};

// Runs argv[0] (a path) with `argv`. Returns INTERNAL when it cannot start
// (fork, pipe or exec failure: exit code 127 from the child),
// DEADLINE_EXCEEDED (after SIGKILL) when it runs past options.deadline.
absl::StatusOr<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                         const ProcessOptions& options = {});

}  // namespace shmalloc::testing

#endif  // TESTS_INTEGRATION_SUBPROCESS_H_
