// SessionStore: the daemon-wide persistent table of session records, in
// <shm_dir>/shmalloc.sessions (mode 0600, read and written by shmallocd
// alone), so that sessions outlive a daemon restart (clean or kill -9).
//
// Every change (insert, state change, erase) is one transaction on an
// UndoLog kept in the same file: each word is Touch()ed before it is stored,
// and Attach rolls a non-empty log back, so after a crash at any store the
// table is exactly as before the interrupted change. The session token is
// never stored: only a stable 64-bit hash of it (TokenHash).
//
// Byte layout (little-endian; sizes in bytes):
//   0     magic              u64   kSessionFileMagic, written last at format
//   8     layout_version     u32   kSessionFileLayoutVersion
//   12    capacity           u32   records in the file (max_sessions at format)
//   16    next_id            u64   the id the next Insert gives; never 0
//   24    formatted_at_ms    i64   unix ms of the format (diagnostic)
//   32    log_offset         u64   kSessionFileHeaderBytes
//   40    log_bytes          u64   UndoLogBytes(kSessionLogEntries)
//   48    records_offset     u64   log_offset + log_bytes
//   56    reserved           to 256, zero
//   256   undo log           log_bytes (undo_log.h has its layout)
//   records_offset           SessionRecord[capacity], 192 bytes each
//
// SessionRecord (192 bytes):
//   0     id                 u64   0 = free slot
//   8     token_hash         u64   TokenHash(token)
//   16    opened_at_ms       i64   unix ms
//   24    orphaned_since_ms  i64   unix ms; 0 unless ORPHANED
//   32    pid                i32   0 = unknown
//   36    state              u32   SessionState
//   40    client_name_bytes  u32   <= 128
//   44    reserved0          u32   zero
//   48    client_name        char[128]
//   176   reserved1          u64[2], zero
//
// Invariants: file size == records_offset + 192 * capacity; a slot is free
// iff id == 0 iff state == kFree; the ids of used slots are distinct and
// < next_id; outside a transaction the log is empty.
//
// Thread-safety: not thread-safe; the owner (SessionTable) serialises every
// call under its mutex.
#ifndef SERVER_SESSION_STORE_H_
#define SERVER_SESSION_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/undo_log.h"
#include "server/shm_file.h"

namespace shmalloc::server {

inline constexpr uint64_t kSessionFileMagic =
    0x3153534553485348ULL;  // HSHSESS1
inline constexpr uint32_t kSessionFileLayoutVersion = 1;
inline constexpr uint64_t kSessionFileHeaderBytes = 256;
inline constexpr size_t kSessionClientNameBytes = 128;
inline constexpr size_t kSessionTokenBytes = 16;
// The largest transaction touches one record (24 words) and next_id.
inline constexpr uint64_t kSessionLogEntries = 64;
inline constexpr char kSessionFileName[] = "shmalloc.sessions";

enum class SessionState : uint32_t {
  kFree = 0,      // slot unused
  kOpen = 1,      // a stream is (or was, until a crash) attached
  kOrphaned = 2,  // the daemon stopped; waiting to be resumed
  kClosing = 3,   // being reclaimed: its allocations are being released
};

struct SessionFileHeader {
  uint64_t magic;           // kSessionFileMagic once fully formatted
  uint32_t layout_version;  // kSessionFileLayoutVersion
  uint32_t capacity;        // records
  uint64_t next_id;         // id for the next Insert; never 0
  int64_t formatted_at_ms;  // unix ms
  uint64_t log_offset;      // kSessionFileHeaderBytes
  uint64_t log_bytes;       // UndoLogBytes(kSessionLogEntries)
  uint64_t records_offset;  // log_offset + log_bytes
  uint64_t reserved[25];    // zero
};
static_assert(sizeof(SessionFileHeader) == kSessionFileHeaderBytes);
static_assert(offsetof(SessionFileHeader, next_id) == 16);
static_assert(offsetof(SessionFileHeader, records_offset) == 48);

struct SessionRecord {
  uint64_t id;                                // 0 = free slot
  uint64_t token_hash;                        // TokenHash(token)
  int64_t opened_at_ms;                       // unix ms
  int64_t orphaned_since_ms;                  // unix ms; 0 unless ORPHANED
  int32_t pid;                                // 0 = unknown
  uint32_t state;                             // SessionState
  uint32_t client_name_bytes;                 // <= kSessionClientNameBytes
  uint32_t reserved0;                         // zero
  char client_name[kSessionClientNameBytes];  // not NUL-terminated
  uint64_t reserved1[2];                      // zero
};
static_assert(sizeof(SessionRecord) == 192);
static_assert(alignof(SessionRecord) == 8);
static_assert(offsetof(SessionRecord, pid) == 32);
static_assert(offsetof(SessionRecord, client_name) == 48);
static_assert(offsetof(SessionRecord, reserved1) == 176);

// Returns the stable 64-bit hash of a session token stored in the file (the
// first 8 bytes of its SHA-256, little-endian): the same in every run, and
// not invertible, so the file does not give the token away.
uint64_t TokenHash(std::string_view token);

class SessionStore {
 public:
  // Opens <dir>/shmalloc.sessions, creating and formatting it with
  // `capacity` records when absent (or when a crash interrupted its format:
  // no magic yet), and rolls back a transaction a crash interrupted.
  // `recovered` (optional) receives the number of words rolled back.
  // FAILED_PRECONDITION for a file of another layout version (the message
  // says which), DATA_LOSS for a file that fails validation, INVALID_ARGUMENT
  // for capacity 0, or the error from the file system.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SessionStore>> Attach(
      const std::string& dir, uint32_t capacity, int64_t now_ms,
      uint64_t* recovered = nullptr);

  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  uint32_t capacity() const { return header()->capacity; }
  uint64_t next_id() const { return header()->next_id; }
  const std::string& path() const { return file_.path(); }
  // Returns the record in `slot`. REQUIRES: slot < capacity().
  const SessionRecord& record(uint32_t slot) const { return records()[slot]; }

  // Writes a new OPEN record with the next id into a free slot, in one
  // transaction. Returns {slot, id}; RESOURCE_EXHAUSTED when every slot is
  // used; INVALID_ARGUMENT for a client name over 128 bytes. Unchanged on
  // error.
  struct Inserted {
    uint32_t slot;
    uint64_t id;
  };
  [[nodiscard]] absl::StatusOr<Inserted> Insert(uint64_t token_hash,
                                                int32_t pid,
                                                std::string_view client_name,
                                                int64_t opened_at_ms);

  // Sets the state of the used record in `slot` (and orphaned_since_ms:
  // `since_ms` for kOrphaned, 0 otherwise), in one transaction.
  // REQUIRES: slot holds a record; state != kFree (use Erase).
  void SetState(uint32_t slot, SessionState state, int64_t since_ms);

  // Frees `slot` (every field zero), in one transaction. REQUIRES: slot
  // holds a record.
  void Erase(uint32_t slot);

  // Writes dirty pages back (msync); INTERNAL on failure.
  [[nodiscard]] absl::Status Sync() const { return file_.Sync(); }

 private:
  SessionStore(MappedFile file, UndoLog log)
      : file_(std::move(file)), log_(std::move(log)) {}
  SessionFileHeader* header() const {
    return reinterpret_cast<SessionFileHeader*>(file_.data());
  }
  SessionRecord* records() const {
    return reinterpret_cast<SessionRecord*>(file_.data() +
                                            header()->records_offset);
  }
  // Logs the word of `field`, then stores `value` into it.
  template <typename T>
  void Store(T& field, T value) {
    static_assert(sizeof(T) <= 8);
    log_.Touch(&field);
    field = value;
  }

  MappedFile file_;
  UndoLog log_;
};

}  // namespace shmalloc::server

#endif  // SERVER_SESSION_STORE_H_
