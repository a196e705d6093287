// EndedSessions: who the last sessions that ended were (id, client name,
// pid, when opened and ended), in <shm_dir>/shmalloc.ended (mode 0600,
// shmallocd's alone), so that the leak report and the region map can still
// name the client behind a detached allocation after its session is gone —
// the case a leak report exists for — across daemon restarts too.
//
// A ring of `capacity` entries: Append overwrites the oldest. Each Append is
// one transaction on an UndoLog in the same file (Touch before every store;
// Attach rolls an interrupted one back), like the session file.
//
// Byte layout (little-endian; sizes in bytes):
//   0     magic              u64   kEndedSessionsMagic, written last at format
//   8     layout_version     u32   kEndedSessionsLayoutVersion
//   12    capacity           u32   entries in the ring
//   16    appended           u64   entries ever appended; the next goes to
//                                  slot appended % capacity
//   24    log_offset         u64   kEndedSessionsHeaderBytes
//   32    log_bytes          u64   UndoLogBytes(kEndedSessionsLogEntries)
//   40    entries_offset     u64   log_offset + log_bytes
//   48    reserved           u64[2], zero
//   64    undo log           log_bytes
//   entries_offset           EndedSession[capacity], 160 bytes each
//
// EndedSession (160 bytes): id u64 (0 = empty), opened_at_ms i64,
// ended_at_ms i64, pid i32 (0 = unknown), client_name_bytes u32 (<= 128),
// client_name char[128] (not NUL-terminated).
//
// Invariants: file size == entries_offset + 160 * capacity; an entry is
// empty iff id == 0; outside a transaction the log is empty.
// Thread-safety: not thread-safe; the owner (SessionTable) serialises calls.
#ifndef SERVER_ENDED_SESSIONS_H_
#define SERVER_ENDED_SESSIONS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "allocators/undo_log.h"
#include "server/shm_file.h"

namespace shmalloc::server {

inline constexpr uint64_t kEndedSessionsMagic =
    0x31444e4553485348ULL;  // HSHSEND1
inline constexpr uint32_t kEndedSessionsLayoutVersion = 1;
inline constexpr uint64_t kEndedSessionsHeaderBytes = 64;
// An Append touches one entry (20 words) and `appended`.
inline constexpr uint64_t kEndedSessionsLogEntries = 32;
inline constexpr size_t kEndedClientNameBytes = 128;
inline constexpr uint32_t kEndedSessionsDefaultCapacity = 4096;
inline constexpr char kEndedSessionsFileName[] = "shmalloc.ended";

struct EndedSessionsHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t capacity;
  uint64_t appended;
  uint64_t log_offset;
  uint64_t log_bytes;
  uint64_t entries_offset;
  uint64_t reserved[2];
};
static_assert(sizeof(EndedSessionsHeader) == kEndedSessionsHeaderBytes);

struct EndedSession {
  uint64_t id;
  int64_t opened_at_ms;
  int64_t ended_at_ms;
  int32_t pid;
  uint32_t client_name_bytes;
  char client_name[kEndedClientNameBytes];
};
static_assert(sizeof(EndedSession) == 160);

class EndedSessions {
 public:
  // Opens <dir>/shmalloc.ended, creating it with `capacity` entries when
  // absent (or when a crash cut its format short), and rolls back an
  // interrupted Append. FAILED_PRECONDITION for another layout version,
  // DATA_LOSS for a file that fails validation, INVALID_ARGUMENT for
  // capacity 0, or the file system's error.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<EndedSessions>> Attach(
      const std::string& dir,
      uint32_t capacity = kEndedSessionsDefaultCapacity);

  EndedSessions(const EndedSessions&) = delete;
  EndedSessions& operator=(const EndedSessions&) = delete;

  uint32_t capacity() const { return header()->capacity; }
  uint64_t appended() const { return header()->appended; }

  // Records that session `id` ended, in one transaction, replacing the
  // oldest entry when the ring is full. A name over 128 bytes is cut.
  void Append(uint64_t id, int32_t pid, std::string_view client_name,
              int64_t opened_at_ms, int64_t ended_at_ms);

  // The entry of session `id`, if it is still in the ring.
  std::optional<EndedSession> Find(uint64_t id) const;

 private:
  EndedSessions(MappedFile file, UndoLog log)
      : file_(std::move(file)), log_(std::move(log)) {}
  EndedSessionsHeader* header() const {
    return reinterpret_cast<EndedSessionsHeader*>(file_.data());
  }
  EndedSession* entries() const {
    return reinterpret_cast<EndedSession*>(file_.data() +
                                           header()->entries_offset);
  }

  MappedFile file_;
  UndoLog log_;
  absl::flat_hash_map<uint64_t, uint32_t> slot_of_;  // id -> slot
};

}  // namespace shmalloc::server

#endif  // SERVER_ENDED_SESSIONS_H_
