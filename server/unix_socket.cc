#include "server/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace shmalloc::server {
namespace {

constexpr char kSocketName[] = "shmalloc.sock";

absl::Status ErrnoError(int error, absl::string_view call,
                        absl::string_view path) {
  return absl::ErrnoToStatus(
      error, absl::StrCat(call, " ", path, ": ", strerror(error)));
}

std::string EnvOrEmpty(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

// The real `usable_dir`: a writable directory, created with `mode` if asked.
bool UsableDirectory(const std::string& dir, bool create, mode_t mode,
                     bool must_own) {
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) {
    if (!create || errno != ENOENT) return false;
    if (mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) return false;
    if (lstat(dir.c_str(), &st) != 0) return false;
  }
  if (!S_ISDIR(st.st_mode)) return false;
  if (must_own && st.st_uid != getuid()) return false;
  return access(dir.c_str(), W_OK | X_OK) == 0;
}

}  // namespace

std::string ChooseSocketPath(
    const SocketEnvironment& env,
    absl::FunctionRef<bool(const std::string& dir, bool create)> usable_dir) {
  if (!env.shmalloc_socket.empty()) return env.shmalloc_socket;
  if (usable_dir("/run/shmalloc", true)) {
    return absl::StrCat("/run/shmalloc/", kSocketName);
  }
  if (!env.xdg_runtime_dir.empty() && usable_dir(env.xdg_runtime_dir, false)) {
    return absl::StrCat(env.xdg_runtime_dir, "/", kSocketName);
  }
  return absl::StrCat("/tmp/shmalloc-", env.uid, "/", kSocketName);
}

absl::StatusOr<std::string> DefaultSocketPath() {
  SocketEnvironment env;
  env.shmalloc_socket = EnvOrEmpty("SHMALLOC_SOCKET");
  env.xdg_runtime_dir = EnvOrEmpty("XDG_RUNTIME_DIR");
  env.uid = getuid();
  std::string path =
      ChooseSocketPath(env, [](const std::string& dir, bool create) {
        return UsableDirectory(dir, create, 0770, /*must_own=*/false);
      });
  const std::string tmp_dir = absl::StrCat("/tmp/shmalloc-", env.uid);
  if (path.rfind(tmp_dir + "/", 0) == 0 &&
      !UsableDirectory(tmp_dir, true, 0700, /*must_own=*/true)) {
    return absl::FailedPreconditionError(
        absl::StrCat("no usable socket directory: ", tmp_dir,
                     " cannot be created or is not ours; pass --socket"));
  }
  return path;
}

absl::Status PrepareSocketPath(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path \"", path, "\" must be 1 to ",
                     sizeof(addr.sun_path) - 1, " bytes long"));
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos
                              ? "."
                              : (slash == 0 ? "/" : path.substr(0, slash));
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(
        absl::StrCat("socket directory ", dir, " does not exist"));
  }
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoError(errno, "lstat", path);
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; not touching it"));
  }
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoError(errno, "socket", path);
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int rc =
      connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  const int error = errno;
  close(fd);
  if (rc == 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "another server is listening on ", path, "; not replacing it"));
  }
  if (error != ECONNREFUSED && error != ENOENT) {
    return ErrnoError(error, "connect", path);
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(errno, "unlink stale socket", path);
  }
  return absl::OkStatus();
}

absl::Status SetSocketMode(const std::string& path, mode_t mode) {
  if (chmod(path.c_str(), mode) != 0) return ErrnoError(errno, "chmod", path);
  return absl::OkStatus();
}

void RemoveSocketFile(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    unlink(path.c_str());
  }
}

}  // namespace shmalloc::server
