// The client's one OS seam: open + fstat + mmap of a region's data file,
// munmap, and the stat behind the default socket rule. errno never leaks past
// this file: every failure is an absl::Status with the path and strerror text.
// Thread-safety: thread-safe (no shared state).
#ifndef CLIENT_SHM_MAPPING_H_
#define CLIENT_SHM_MAPPING_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace shmalloc::client::internal {

// Maps the whole file at `path` read-write, MAP_SHARED (MAP_POPULATE when
// `populate`). Returns NOT_FOUND (no such file), PERMISSION_DENIED,
// DATA_LOSS when the file is not `expected_size` bytes, INTERNAL otherwise.
absl::StatusOr<std::byte*> MapFile(const std::string& path,
                                   uint64_t expected_size, bool populate);
// Unmaps a mapping returned by MapFile. Never fails for such a mapping.
void UnmapFile(std::byte* base, uint64_t size);
// The environment variable that replaces a region's data_dir (the daemon's
// --huge_dir) when this process sees that directory elsewhere.
inline constexpr char kHugeDirEnvVar[] = "SHMALLOC_HUGE_DIR";
// Returns the path of data file `data_file`: in `data_dir` ($SHMALLOC_HUGE_DIR
// if set) when `data_dir` is not empty (a huge-page region), else in
// `shm_dir` (this process's view of the shm directory).
std::string DataFilePath(const std::string& shm_dir,
                         const std::string& data_dir,
                         const std::string& data_file);
// Returns true when `path` exists and is a Unix socket.
bool IsSocket(const std::string& path);

}  // namespace shmalloc::client::internal

#endif  // CLIENT_SHM_MAPPING_H_
