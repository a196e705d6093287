// Region names and the file names derived from them.
//
// A region NAME matches [a-z0-9][a-z0-9_.-]{0,62}: at most 63 bytes, so it
// fits SegmentHeader::name with its NUL; no slash, no upper case, no leading
// dot, so no name can escape the shm directory or hide in it. Region NAME is
// the files <shm_dir>/shmalloc-NAME.data and <shm_dir>/shmalloc-NAME.meta.
//
// Thread-safety: pure functions, thread-safe.
#ifndef SERVER_REGION_NAME_H_
#define SERVER_REGION_NAME_H_

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace shmalloc::server {

inline constexpr size_t kMaxRegionNameLength = 63;

// Returns OK when `name` is a valid region name; INVALID_ARGUMENT (saying
// which rule it breaks) otherwise.
[[nodiscard]] absl::Status ValidateRegionName(std::string_view name);

// Returns "shmalloc-NAME.data" / "shmalloc-NAME.meta" (base names).
std::string DataFileName(std::string_view name);
std::string MetaFileName(std::string_view name);

// Returns NAME when `file_name` is "shmalloc-NAME.data" or
// "shmalloc-NAME.meta" with a valid NAME, otherwise nullopt.
std::optional<std::string> RegionNameFromFile(std::string_view file_name);

// Returns `dir` + "/" + `file_name` (without doubling a trailing slash).
std::string JoinPath(std::string_view dir, std::string_view file_name);

}  // namespace shmalloc::server

#endif  // SERVER_REGION_NAME_H_
