#include "client/shm_mapping.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "shmalloc/types.h"

namespace shmalloc::client::internal {
namespace {

absl::Status ErrnoStatus(int err, std::string_view what,
                         const std::string& path) {
  std::string message =
      absl::StrCat(std::string(what), " ", path, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ENOMEM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

absl::StatusOr<std::byte*> MapFile(const std::string& path,
                                   uint64_t expected_size, bool populate) {
  const int fd = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "fstat", path);
  }
  if (static_cast<uint64_t>(st.st_size) != expected_size) {
    close(fd);
    return absl::DataLossError(absl::StrCat(
        path, " is ", st.st_size, " bytes, the daemon says ", expected_size));
  }
  // The daemon aligns offsets (up to kMaxAlignment, 2 MiB); an offset's
  // alignment is its address's only when the mapping starts on a multiple
  // of kMaxAlignment, in every process. So reserve enough address space to
  // find such a start, map the file there and give back the slack (address
  // space only; nothing is touched).
  const uint64_t slack = kMaxAlignment - kHeapBeginGranule;
  void* reserved = mmap(nullptr, expected_size + slack, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) {
    const int err = errno;
    close(fd);
    return ErrnoStatus(err, "mmap (reserve)", path);
  }
  const uintptr_t lo = reinterpret_cast<uintptr_t>(reserved);
  const uintptr_t at = (lo + kMaxAlignment - 1) & ~(kMaxAlignment - 1);
  void* base =
      mmap(reinterpret_cast<void*>(at), expected_size, PROT_READ | PROT_WRITE,
           MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0), fd, 0);
  const int err = errno;
  close(fd);  // the mapping keeps the file
  if (at > lo) munmap(reserved, at - lo);
  const uintptr_t end = at + expected_size;
  if (lo + expected_size + slack > end) {
    munmap(reinterpret_cast<void*>(end), lo + expected_size + slack - end);
  }
  if (base == MAP_FAILED) {
    munmap(reinterpret_cast<void*>(at), expected_size);
    return ErrnoStatus(err, "mmap", path);
  }
  return static_cast<std::byte*>(base);
}

std::string DataFilePath(const std::string& shm_dir,
                         const std::string& data_dir,
                         const std::string& data_file) {
  if (data_dir.empty()) return absl::StrCat(shm_dir, "/", data_file);
  const char* view = getenv(kHugeDirEnvVar);
  return absl::StrCat(view != nullptr && view[0] != '\0' ? view : data_dir, "/",
                      data_file);
}

void UnmapFile(std::byte* base, uint64_t size) {
  if (base != nullptr) munmap(base, size);
}

bool IsSocket(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

}  // namespace shmalloc::client::internal
