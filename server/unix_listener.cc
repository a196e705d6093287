#include "server/unix_listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "grpcpp/server_posix.h"

namespace shmalloc::server {
namespace {

// strerror, thread-safe (the GNU strerror_r returns the text).
std::string ErrnoText(int error) {
  char buffer[128];
  return strerror_r(error, buffer, sizeof(buffer));
}

absl::Status Errno(int error, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(
      error, absl::StrCat(what, " ", path, ": ", ErrnoText(error)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Bind(
    const std::string& path, mode_t mode) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path ", path, " is too long"));
  }
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return Errno(errno, "socket", path);
  }
  auto fail = [&](absl::string_view what) {
    const int error = errno;
    close(fd);
    return Errno(error, what, path);
  };
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) !=
      0) {
    return fail("bind");
  }
  // The mode before listen(): until then no client can connect at all.
  if (chmod(path.c_str(), mode) != 0) {
    return fail("chmod");
  }
  if (listen(fd, SOMAXCONN) != 0) {
    return fail("listen");
  }
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    return fail("pipe2");
  }
  return std::unique_ptr<UnixListener>(new UnixListener(fd, wake[0], wake[1]));
}

UnixListener::~UnixListener() {
  Stop();
  close(listen_fd_);
  close(wake_read_);
  close(wake_write_);
}

void UnixListener::Start(grpc::Server* server, PeerTable* peers) {
  thread_ = std::thread([this, server, peers] { AcceptLoop(server, peers); });
}

void UnixListener::Stop() {
  if (!thread_.joinable()) {
    return;
  }
  const char byte = 0;
  (void)!write(wake_write_, &byte, 1);
  thread_.join();
}

void UnixListener::AcceptLoop(grpc::Server* server, PeerTable* peers) {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      SHMALLOC_LOG(Error) << "poll on the Unix socket: " << ErrnoText(errno);
      return;
    }
    if (fds[1].revents != 0) {
      return;  // Stop
    }
    const int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      const int error = errno;
      if (error == EINTR || error == EAGAIN || error == ECONNABORTED) {
        continue;
      }
      SHMALLOC_LOG(Warning)
          << "accept on the Unix socket: " << ErrnoText(error);
      // Out of descriptors or memory: let connections close before trying
      // again rather than spin.
      absl::SleepFor(absl::Milliseconds(50));
      continue;
    }
    ucred credentials{};
    socklen_t length = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) {
      SHMALLOC_LOG(Warning) << "SO_PEERCRED: " << ErrnoText(errno);
      close(fd);
      continue;
    }
    peers->Record(
        fd, PeerCredentials{credentials.pid, credentials.uid, credentials.gid});
    grpc::AddInsecureChannelFromFd(server, fd);
  }
}

}  // namespace shmalloc::server
