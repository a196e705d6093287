// ChildProcess: a helper program fork/exec'd by a client integration test,
// with its stdin and stdout on pipes, so the test can hand it work and read
// its answers line by line (readiness and results are messages, never
// sleeps). Also the byte patterns both sides write and verify.
//
// Thread-safety: not thread-safe.
#ifndef TESTS_INTEGRATION_CLIENT_CHILD_PROCESS_H_
#define TESTS_INTEGRATION_CLIENT_CHILD_PROCESS_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shmalloc::testing {

class ChildProcess {
 public:
  // Fork/execs `path` with `args` (argv[1..]). INTERNAL on pipe/fork errors.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::string& path, const std::vector<std::string>& args);
  // SIGKILLs a still-running child and reaps it.
  ~ChildProcess();

  // Returns the next line of the child's stdout without its newline;
  // OUT_OF_RANGE at end of file.
  absl::StatusOr<std::string> ReadLine();
  // Writes `line` and a newline to the child's stdin.
  absl::Status WriteLine(const std::string& line);
  // Closes the child's stdin (it reads end of file).
  void CloseStdin();
  // Sends `signal`.
  void Kill(int signal);
  // Waits for the child; returns its raw wait status.
  absl::StatusOr<int> Wait();
  // Waits and returns OK only for a normal exit with status 0.
  absl::Status WaitForSuccess();
  pid_t pid() const { return pid_; }

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  FILE* out_ = nullptr;  // child's stdout
  int in_fd_ = -1;       // child's stdin
};

// Fills `n` bytes at `p` with the pattern of `seed`.
void FillPattern(void* p, size_t n, uint64_t seed);
// Returns the index of the first byte that differs from the pattern of
// `seed`, or -1 when all match.
int64_t FindPatternMismatch(const void* p, size_t n, uint64_t seed);

}  // namespace shmalloc::testing

#endif  // TESTS_INTEGRATION_CLIENT_CHILD_PROCESS_H_
