// The daemon's Unix-socket path: choosing the default, clearing a stale
// socket file, and setting the socket's mode. Like shm_file.h, this is an OS
// seam: errno never leaks past it.
//
// Default path, first that applies:
//   1. $SHMALLOC_SOCKET (the same variable clients honour);
//   2. /run/shmalloc/shmalloc.sock when /run/shmalloc exists and is
//      writable, or can be created (mode 0770) — typically as root;
//   3. $XDG_RUNTIME_DIR/shmalloc.sock when that directory is writable;
//   4. /tmp/shmalloc-$UID/shmalloc.sock (the directory is created 0700 and
//      must be owned by this user).
//
// Thread-safety: thread-safe.
#ifndef SERVER_UNIX_SOCKET_H_
#define SERVER_UNIX_SOCKET_H_

#include <sys/types.h>

#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shmalloc::server {

// The inputs of the default-path rule, so it can be tested without an OS.
struct SocketEnvironment {
  std::string shmalloc_socket;  // $SHMALLOC_SOCKET or ""
  std::string xdg_runtime_dir;  // $XDG_RUNTIME_DIR or ""
  uid_t uid = 0;
};

// Applies the rule above; `usable_dir(dir, create)` says whether `dir` can
// hold the socket (creating it when `create`). Pure apart from `usable_dir`.
std::string ChooseSocketPath(
    const SocketEnvironment& env,
    absl::FunctionRef<bool(const std::string& dir, bool create)> usable_dir);

// Returns the default socket path for this process (environment, real
// directories), creating its directory when the rule says so. Thread-safe.
[[nodiscard]] absl::StatusOr<std::string> DefaultSocketPath();

// Makes `path` ready to bind: INVALID_ARGUMENT when it is too long for a
// Unix socket address; NOT_FOUND when its directory does not exist;
// ALREADY_EXISTS when a server answers on it; FAILED_PRECONDITION when it is
// something other than a socket. A socket file nobody answers on is removed.
[[nodiscard]] absl::Status PrepareSocketPath(const std::string& path);

// Sets the permission bits of the socket file at `path`.
[[nodiscard]] absl::Status SetSocketMode(const std::string& path, mode_t mode);

// Removes the socket file at `path` if it is a socket; errors are ignored.
void RemoveSocketFile(const std::string& path);

}  // namespace shmalloc::server

#endif  // SERVER_UNIX_SOCKET_H_
