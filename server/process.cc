#include "server/process.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace shmalloc::server {
namespace {

sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

void BlockTerminationSignals() {
  const sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  const sigset_t set = TerminationSignals();
  int signal = 0;
  while (sigwait(&set, &signal) != 0) {
  }
  return signal;
}

absl::Status NotifyReady(int fd) {
  if (fd < 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad ready fd ", fd));
  }
  const char byte = 'R';
  ssize_t n;
  do {
    n = write(fd, &byte, 1);
  } while (n < 0 && errno == EINTR);
  const int error = errno;
  close(fd);
  if (n != 1) {
    return absl::ErrnoToStatus(
        error, absl::StrCat("writing to ready fd ", fd, ": ", strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace shmalloc::server
