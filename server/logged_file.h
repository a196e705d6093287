// OpenLoggedFile: the life cycle shared by the daemon's small persistent
// tables (shmalloc.sessions, shmalloc.ended): a daemon-only file whose first
// word is a magic written last at format, with an undo log at a fixed place.
// Opens the file, or creates and formats it when absent or when a crash cut
// its format short (no magic yet: nothing can have been stored in it),
// validates its header, opens its log and rolls back a transaction a crash
// interrupted.
//
// Thread-safety: a plain function; the caller owns what it returns.
#ifndef SERVER_LOGGED_FILE_H_
#define SERVER_LOGGED_FILE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/undo_log.h"
#include "server/shm_file.h"

namespace shmalloc::server {

struct LoggedFileSpec {
  std::string path;
  mode_t mode;            // the file's mode, and the widest one adopted
  uint64_t create_bytes;  // the size of a new file
  uint64_t log_offset;    // where the undo log lies in the file
  uint64_t log_bytes;
  // Formats a new zero-filled file (its undo log included), the magic last.
  absl::FunctionRef<absl::Status(MappedFile&)> format;
  // Checks the header of an existing file: FAILED_PRECONDITION for another
  // layout version, DATA_LOSS for anything inconsistent.
  absl::FunctionRef<absl::Status(const MappedFile&)> validate;
};

struct LoggedFile {
  MappedFile file;
  UndoLog log;
  uint64_t recovered;  // words rolled back
};

// The errors of `validate` and of the file system; DATA_LOSS (naming the
// path) for a log that cannot be opened or rolled back.
[[nodiscard]] absl::StatusOr<LoggedFile> OpenLoggedFile(
    const LoggedFileSpec& spec);

}  // namespace shmalloc::server

#endif  // SERVER_LOGGED_FILE_H_
