#include "server/shm_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace shmalloc::server {
namespace {

// Builds a Status from an errno value: "<call> <path>: <strerror>".
absl::Status ErrnoError(int error, absl::string_view call,
                        absl::string_view path) {
  std::string message = absl::StrCat(call, " ", path, ": ", strerror(error));
  switch (error) {
    case ENOSPC:
    case EFBIG:
    case EDQUOT:
    case ENOMEM:
      return absl::ResourceExhaustedError(message);
    case ELOOP:
    case ENOTDIR:
    case EISDIR:
      return absl::FailedPreconditionError(message);
    default:
      return absl::ErrnoToStatus(error, message);
  }
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Describes the free space of the file system holding `path`, for messages.
std::string FreeSpaceText(const std::string& dir) {
  struct statvfs vfs;
  if (statvfs(dir.c_str(), &vfs) != 0) return "unknown";
  return absl::StrCat(static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize,
                      " bytes");
}

// Closes `fd`, keeping errno out of the caller's way.
void CloseFd(int fd) {
  const int saved = errno;
  close(fd);
  errno = saved;
}

// "0644": permission bits as chmod(1) spells them, for messages.
std::string ModeText(mode_t mode) {
  char text[8];
  std::snprintf(text, sizeof(text), "%04o",
                static_cast<unsigned>(mode & 07777));
  return text;
}

// "owner uid 1000, mode 0666, 2 links": what a refusal is about.
std::string OwnershipText(const struct stat& st) {
  return absl::StrCat("owner uid ", st.st_uid, ", mode ", ModeText(st.st_mode),
                      ", ", st.st_nlink, st.st_nlink == 1 ? " link" : " links");
}

// OK when the file `st` describes is one this process could have made
// itself: a regular file of its effective uid, one link, and no permission
// bit outside `widest_mode`. PERMISSION_DENIED naming `path` otherwise.
absl::Status CheckAdoptable(const struct stat& st, const std::string& path,
                            mode_t widest_mode) {
  const uid_t euid = geteuid();
  const char* why = nullptr;
  if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (st.st_uid != euid) {
    why = "owned by another user";
  } else if (st.st_nlink != 1) {
    why = "hard-linked";
  } else if ((st.st_mode & 07777 & ~widest_mode) != 0) {
    why = "permissions wider than allowed";
  }
  if (why == nullptr) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      "refusing ", path, ": ", why, " (", OwnershipText(st),
      "); shmallocd (uid ", euid,
      ") adopts only regular files it owns, with one link and mode within ",
      ModeText(widest_mode)));
}

}  // namespace

absl::StatusOr<MappedFile> MappedFile::Create(const std::string& path,
                                              uint64_t size, mode_t mode,
                                              bool keep_fd) {
  if (size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create ", path, " with size 0"));
  }
  const int fd = open(path.c_str(),
                      O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(errno, "open", path);
  // From here on every failure removes the file this call created.
  auto fail = [&](absl::Status status) {
    CloseFd(fd);
    unlink(path.c_str());
    return status;
  };
  if (fchmod(fd, mode) != 0) return fail(ErrnoError(errno, "fchmod", path));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int error = errno;
    if (error == EFBIG || error == EINVAL) {
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          "cannot size ", path, " to ", size, " bytes: ", strerror(error))));
    }
    return fail(ErrnoError(error, "ftruncate", path));
  }
  if (const int error = posix_fallocate(fd, 0, static_cast<off_t>(size));
      error != 0) {
    if (error == ENOSPC || error == EFBIG || error == EDQUOT) {
      const std::string dir = DirectoryOf(path);
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          "not enough space in ", dir, " for ", size, " bytes (", path,
          "; free: ", FreeSpaceText(dir),
          "); use a larger shared-memory mount or a smaller region")));
    }
    return fail(ErrnoError(error, "posix_fallocate", path));
  }
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) return fail(ErrnoError(errno, "mmap", path));
  if (!keep_fd) close(fd);  // The mapping keeps the file referenced.
  return MappedFile(path, static_cast<std::byte*>(data), size,
                    keep_fd ? fd : -1);
}

absl::StatusOr<MappedFile> MappedFile::Open(const std::string& path,
                                            mode_t widest_mode, bool keep_fd) {
  // O_NONBLOCK: a planted FIFO must not block the open; it is refused below.
  const int fd =
      open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoError(errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    CloseFd(fd);
    return ErrnoError(error, "fstat", path);
  }
  // The checks look at the opened fd, so a rename between the open and
  // the check cannot swap in another file.
  if (absl::Status s = CheckAdoptable(st, path, widest_mode); !s.ok()) {
    CloseFd(fd);
    return s;
  }
  if (st.st_size <= 0) {
    CloseFd(fd);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a non-empty regular file"));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  void* data = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (data == MAP_FAILED) {
    const int error = errno;
    CloseFd(fd);
    return ErrnoError(error, "mmap", path);
  }
  if (!keep_fd) close(fd);
  return MappedFile(path, static_cast<std::byte*>(data), size,
                    keep_fd ? fd : -1);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      fd_(std::exchange(other.fd_, -1)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

MappedFile::~MappedFile() { Unmap(); }

void MappedFile::Unmap() {
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
  if (fd_ >= 0) CloseFd(fd_);
  fd_ = -1;
}

absl::StatusOr<uint64_t> MappedFile::CurrentSize() const {
  if (fd_ < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, " was mapped without keeping its descriptor"));
  }
  struct stat st;
  if (fstat(fd_, &st) != 0) return ErrnoError(errno, "fstat", path_);
  return static_cast<uint64_t>(st.st_size);
}

absl::Status MappedFile::Sync() const {
  if (data_ == nullptr) return absl::OkStatus();
  if (msync(data_, size_, MS_SYNC) != 0) {
    return absl::InternalError(
        absl::StrCat("msync ", path_, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<DirectoryLock> DirectoryLock::Acquire(const std::string& dir) {
  const std::string path =
      (dir.empty() || dir.back() != '/' ? dir + "/" : dir) + "shmalloc.lock";
  constexpr mode_t kLockMode = 0600;
  const int fd =
      open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, kLockMode);
  auto squatted = [&](const struct stat& st) {
    return absl::PermissionDeniedError(absl::StrCat(
        path, " is not this daemon's lock file (", OwnershipText(st),
        "; shmallocd runs as uid ", geteuid(),
        " and needs a regular file it "
        "owns with mode within ",
        ModeText(kLockMode),
        "): someone else may hold it to keep shmallocd from starting; remove "
        "it (and check who made it)"));
  };
  if (fd < 0) {
    const int error = errno;
    // Another user's file in a sticky directory: EACCES (even for root with
    // fs.protected_regular). Say whose it is instead of a bare errno.
    struct stat st;
    if (error == EACCES && lstat(path.c_str(), &st) == 0 &&
        st.st_uid != geteuid()) {
      return squatted(st);
    }
    return ErrnoError(error, "open", path);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int error = errno;
    CloseFd(fd);
    return ErrnoError(error, "fstat", path);
  }
  if (!CheckAdoptable(st, path, kLockMode).ok()) {
    CloseFd(fd);
    return squatted(st);
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    CloseFd(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "another process holds ", path,
          ": a second shmallocd must not manage the same shm directory"));
    }
    return ErrnoError(error, "flock", path);
  }
  return DirectoryLock(fd);
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)) {}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) close(fd_);  // Releases the flock.
}

absl::Status UnlinkFile(const std::string& path) {
  if (unlink(path.c_str()) != 0) return ErrnoError(errno, "unlink", path);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return ErrnoError(errno, "opendir", dir);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = readdir(d)) {
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  const int error = errno;
  closedir(d);
  if (error != 0) return ErrnoError(error, "readdir", dir);
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status CheckWritableDirectory(const std::string& dir) {
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return ErrnoError(errno, "stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " is not a directory"));
  }
  if (access(dir.c_str(), W_OK | X_OK) != 0) {
    return ErrnoError(errno, "access", dir);
  }
  return absl::OkStatus();
}

absl::Status PrepareOwnDirectory(const std::string& dir, mode_t mode) {
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoError(errno, "lstat", dir);
    if (mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoError(errno, "mkdir", dir);
    }
    // Exactly `mode`, whatever the umask (and the setgid bit mkdir drops).
    if (chmod(dir.c_str(), mode) != 0) return ErrnoError(errno, "chmod", dir);
    if (lstat(dir.c_str(), &st) != 0) return ErrnoError(errno, "lstat", dir);
  }
  const char* why = nullptr;
  absl::StatusCode code = absl::StatusCode::kFailedPrecondition;
  if (S_ISLNK(st.st_mode)) {
    why = "a symbolic link";
  } else if (!S_ISDIR(st.st_mode)) {
    why = "not a directory";
  } else if (st.st_uid != geteuid()) {
    why = "owned by another user";
    code = absl::StatusCode::kPermissionDenied;
  } else if ((st.st_mode & 022) != 0) {
    why = "writable by group or others";
  }
  if (why == nullptr) return absl::OkStatus();
  return absl::Status(
      code, absl::StrCat("refusing region directory ", dir, ": ", why, " (",
                         OwnershipText(st), "); shmallocd (uid ", geteuid(),
                         ") keeps regions in a directory it owns that only it "
                         "can write; remove it and start again"));
}

absl::Status PathExists(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return ErrnoError(errno, "lstat", path);
  return absl::OkStatus();
}

}  // namespace shmalloc::server
