#include "tests/integration/client/child_process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace shmalloc::testing {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Start(
    const std::string& path, const std::vector<std::string>& args) {
  int to_child[2], from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  if (pipe2(from_child, O_CLOEXEC) != 0) {
    close(to_child[0]);
    close(to_child[1]);
    return absl::InternalError(absl::StrCat("pipe: ", strerror(errno)));
  }
  std::vector<std::string> argv_strings = {path};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0)
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    dup2(to_child[0], STDIN_FILENO);
    dup2(from_child[1], STDOUT_FILENO);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(to_child[0]);
  close(from_child[1]);
  auto child = std::unique_ptr<ChildProcess>(new ChildProcess());
  child->pid_ = pid;
  child->in_fd_ = to_child[1];
  child->out_ = fdopen(from_child[0], "r");
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  CloseStdin();
  if (out_ != nullptr) fclose(out_);
}

absl::StatusOr<std::string> ChildProcess::ReadLine() {
  std::string line;
  int c;
  while ((c = fgetc(out_)) != EOF && c != '\n') line.push_back(char(c));
  if (c == EOF && line.empty()) {
    return absl::OutOfRangeError("child closed its stdout");
  }
  return line;
}

absl::Status ChildProcess::WriteLine(const std::string& line) {
  const std::string data = line + "\n";
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(in_fd_, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return absl::InternalError(absl::StrCat("write: ", strerror(errno)));
    done += n;
  }
  return absl::OkStatus();
}

void ChildProcess::CloseStdin() {
  if (in_fd_ >= 0) close(in_fd_);
  in_fd_ = -1;
}

void ChildProcess::Kill(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

absl::StatusOr<int> ChildProcess::Wait() {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) {
      return absl::InternalError(absl::StrCat("waitpid: ", strerror(errno)));
    }
  }
  pid_ = -1;
  return status;
}

absl::Status ChildProcess::WaitForSuccess() {
  absl::StatusOr<int> status = Wait();
  if (!status.ok()) return status.status();
  if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) return absl::OkStatus();
  if (WIFSIGNALED(*status)) {
    return absl::InternalError(
        absl::StrCat("child killed by signal ", WTERMSIG(*status)));
  }
  return absl::InternalError(
      absl::StrCat("child exited with status ", WEXITSTATUS(*status)));
}

namespace {
inline uint8_t PatternByte(uint64_t seed, size_t i) {
  uint64_t x =
      (seed + 1) * 0x9E3779B97F4A7C15ULL + (i / 8) * 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 31;
  return static_cast<uint8_t>(x >> (8 * (i % 8)));
}
}  // namespace

void FillPattern(void* p, size_t n, uint64_t seed) {
  auto* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = PatternByte(seed, i);
}

int64_t FindPatternMismatch(const void* p, size_t n, uint64_t seed) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != PatternByte(seed, i)) return static_cast<int64_t>(i);
  }
  return -1;
}

}  // namespace shmalloc::testing
