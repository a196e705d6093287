// The daemon's one operating-system seam for region files: create, open,
// size, reserve, map, unmap, unlink and list. Every function returns an
// absl::Status carrying the failing call, the path and the errno text; errno
// never leaks past this file.
//
// Files are created with O_CREAT|O_EXCL|O_NOFOLLOW (never reusing or following
// anything already there), set to exactly the requested mode (the umask does
// not apply), sized with ftruncate and reserved with posix_fallocate, so a
// shared-memory mount that is too small fails here with RESOURCE_EXHAUSTED
// instead of raising SIGBUS in some process that touches the pages later.
//
// Thread-safety: the free functions are thread-safe. A MappedFile is not
// thread-safe as an object (move, destroy), but the bytes it maps are shared
// memory: synchronising access to them is the caller's business.
#ifndef SERVER_SHM_FILE_H_
#define SERVER_SHM_FILE_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shmalloc::server {

// A regular file mapped MAP_SHARED read-write in its entirety. Move-only;
// unmaps on destruction (the file itself stays).
class MappedFile {
 public:
  // Creates `path` (which must not exist) with permission bits `mode`, sizes
  // it to `size` bytes, reserves its backing store and maps it. Returns
  // ALREADY_EXISTS when the path exists (even as a dangling symlink),
  // RESOURCE_EXHAUSTED when the file system cannot hold `size` bytes (the
  // message names the directory, the size asked for and the space free),
  // INVALID_ARGUMENT for size 0, NOT_FOUND for a missing directory,
  // PERMISSION_DENIED, or another code from the errno. On error nothing is
  // left behind: a file this call created is removed again.
  // With `keep_fd` the descriptor stays open for CurrentSize().
  [[nodiscard]] static absl::StatusOr<MappedFile> Create(
      const std::string& path, uint64_t size, mode_t mode,
      bool keep_fd = false);

  // Opens and maps an existing regular file without following a symlink,
  // adopting it only if this process could have made it: the shm directory
  // is usually world-writable (/dev/shm), so anyone may have planted a file
  // under a region's name, and mapping a file someone else can write would
  // let them rewrite the daemon's allocator metadata under it. The opened fd
  // is fstat-ed (no race with a rename) and must be a regular file owned by
  // the effective uid, with exactly one link (a hard link could alias a file
  // of someone else's choosing) and no permission bit outside `widest_mode`
  // (the daemon passes 0600 for meta and session files, 0660 for data
  // files; the default 0777 checks owner and links only, for tests and tools
  // that open the daemon's files).
  // Returns NOT_FOUND; PERMISSION_DENIED for a file refused by the checks
  // above (the message names the path, its owner uid, its mode and link
  // count) or by the OS; FAILED_PRECONDITION (a symlink, a directory, or an
  // empty file); or another code from the errno.
  // With `keep_fd` the descriptor stays open for CurrentSize().
  [[nodiscard]] static absl::StatusOr<MappedFile> Open(
      const std::string& path, mode_t widest_mode = 0777, bool keep_fd = false);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Writes dirty pages back (msync MS_SYNC). Returns INTERNAL with the errno
  // text on failure. A no-op for an empty MappedFile.
  [[nodiscard]] absl::Status Sync() const;

  // Unmaps now (idempotent); bytes() is empty afterwards. Closes a kept
  // descriptor.
  void Unmap();

  // The file's size now (fstat on the kept descriptor: one system call), so
  // a caller can tell that someone truncated or grew it under the mapping.
  // FAILED_PRECONDITION when the file was not opened with keep_fd.
  [[nodiscard]] absl::StatusOr<uint64_t> CurrentSize() const;

  std::span<std::byte> bytes() const { return {data_, size_}; }
  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, std::byte* data, uint64_t size, int fd)
      : path_(std::move(path)), data_(data), size_(size), fd_(fd) {}

  std::string path_;
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
  int fd_ = -1;  // kept open only with keep_fd
};

// An exclusive advisory lock (flock) on <dir>/shmalloc.lock, held for the
// object's lifetime, so two daemons never manage one shm directory. Move-only.
class DirectoryLock {
 public:
  // Creates the lock file if needed (mode 0600, never following a symlink)
  // and locks it without waiting. An existing lock file must be a regular
  // file owned by the effective uid, with one link and mode within 0600:
  // anything else may be squatted by another user (to hold the flock and
  // keep the daemon from starting), so it is refused with a message saying
  // to remove it, rather than failing as a vague "another process holds".
  // Returns FAILED_PRECONDITION when another process holds it;
  // PERMISSION_DENIED for a lock file that fails the checks (the message
  // names its owner and mode); NOT_FOUND / PERMISSION_DENIED for the
  // directory.
  [[nodiscard]] static absl::StatusOr<DirectoryLock> Acquire(
      const std::string& dir);

  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();

 private:
  explicit DirectoryLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Removes `path` (not following symlinks). Returns NOT_FOUND when it does not
// exist, or another code from the errno.
[[nodiscard]] absl::Status UnlinkFile(const std::string& path);

// Returns the names (not paths) of the entries of directory `dir`, sorted,
// without "." and "..". NOT_FOUND, FAILED_PRECONDITION (not a directory),
// PERMISSION_DENIED.
[[nodiscard]] absl::StatusOr<std::vector<std::string>> ListDirectory(
    const std::string& dir);

// Returns OK when `dir` is an existing directory this process can create
// files in; NOT_FOUND, FAILED_PRECONDITION (not a directory) or
// PERMISSION_DENIED otherwise.
[[nodiscard]] absl::Status CheckWritableDirectory(const std::string& dir);

// Makes `dir` the daemon's own directory for region files: creates it with
// exactly `mode` when absent (its parent must exist), then requires a real
// directory (not a symlink) owned by the effective uid with no write bit
// for group or others, so nobody else can plant, rename or remove files in
// it. FAILED_PRECONDITION (a symlink, not a directory, writable by others)
// or PERMISSION_DENIED (another owner), each naming the owner and mode and
// saying to remove it; NOT_FOUND when the parent does not exist.
[[nodiscard]] absl::Status PrepareOwnDirectory(const std::string& dir,
                                               mode_t mode);

// Returns OK when `path` exists (not following symlinks); NOT_FOUND when not.
[[nodiscard]] absl::Status PathExists(const std::string& path);

}  // namespace shmalloc::server

#endif  // SERVER_SHM_FILE_H_
