#include "server/session_store.h"

#include <openssl/sha.h>

#include <atomic>
#include <cstring>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/logged_file.h"

namespace shmalloc::server {
namespace {

constexpr mode_t kSessionFileMode = 0600;
constexpr uint64_t kLogBytes = UndoLogBytes(kSessionLogEntries);
constexpr uint64_t kRecordsOffset = kSessionFileHeaderBytes + kLogBytes;

uint64_t FileBytes(uint64_t capacity) {
  return kRecordsOffset + sizeof(SessionRecord) * capacity;
}

// Formats a zero-filled file of FileBytes(capacity). The magic goes last, so
// a crash before it leaves a file Attach formats again (no session can have
// been stored in it yet).
absl::Status Format(MappedFile& file, uint32_t capacity, int64_t now_ms) {
  auto* h = reinterpret_cast<SessionFileHeader*>(file.data());
  h->layout_version = kSessionFileLayoutVersion;
  h->capacity = capacity;
  absl::BitGen gen;
  // Random high 32 bits, counter in the low ones: an id from an unrelated
  // shm_dir (or a deleted file) is unlikely to name one of these sessions.
  h->next_id = (absl::Uniform<uint64_t>(gen, 1, uint64_t{1} << 31) << 32) | 1;
  h->formatted_at_ms = now_ms;
  h->log_offset = kSessionFileHeaderBytes;
  h->log_bytes = kLogBytes;
  h->records_offset = kRecordsOffset;
  SHMALLOC_RETURN_IF_ERROR(
      UndoLog::Format(file.bytes(),
                      file.bytes().subspan(kSessionFileHeaderBytes, kLogBytes))
          .status());
  std::atomic_signal_fence(std::memory_order_seq_cst);
  h->magic = kSessionFileMagic;
  return absl::OkStatus();
}

absl::Status Validate(const MappedFile& file) {
  const std::string& path = file.path();
  if (file.size() < kSessionFileHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, " is ", file.size(),
                                            " bytes, shorter than its header"));
  }
  const auto* h = reinterpret_cast<const SessionFileHeader*>(file.data());
  if (h->magic != kSessionFileMagic) {
    return absl::DataLossError(
        absl::StrCat(path, " is not a shmalloc session file (bad magic)"));
  }
  if (h->layout_version != kSessionFileLayoutVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has session file layout version ", h->layout_version,
        "; this shmallocd reads version ", kSessionFileLayoutVersion,
        " only (move the file away to start with no sessions)"));
  }
  if (h->capacity == 0 || h->log_offset != kSessionFileHeaderBytes ||
      h->log_bytes != kLogBytes || h->records_offset != kRecordsOffset ||
      file.size() != FileBytes(h->capacity) || h->next_id == 0) {
    return absl::DataLossError(
        absl::StrCat(path, ": header geometry (capacity ", h->capacity,
                     ", file ", file.size(), " bytes) is inconsistent"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRecords(const SessionStore& store) {
  for (uint32_t slot = 0; slot < store.capacity(); ++slot) {
    const SessionRecord& r = store.record(slot);
    const bool free = r.id == 0;
    if (r.state > static_cast<uint32_t>(SessionState::kClosing) ||
        free != (r.state == static_cast<uint32_t>(SessionState::kFree)) ||
        r.client_name_bytes > kSessionClientNameBytes ||
        (!free && r.id >= store.next_id())) {
      return absl::DataLossError(absl::StrCat(store.path(), ": session record ",
                                              slot, " fails validation"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t TokenHash(std::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(),
         digest);
  uint64_t hash = 0;
  for (int i = 7; i >= 0; --i) hash = (hash << 8) | digest[i];
  return hash;
}

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Attach(
    const std::string& dir, uint32_t capacity, int64_t now_ms,
    uint64_t* recovered) {
  if (capacity == 0) {
    return absl::InvalidArgumentError("a session store needs capacity > 0");
  }
  if (recovered != nullptr) *recovered = 0;
  SHMALLOC_ASSIGN_OR_RETURN(
      LoggedFile opened,
      OpenLoggedFile(
          {.path = absl::StrCat(dir, "/", kSessionFileName),
           .mode = kSessionFileMode,
           .create_bytes = FileBytes(capacity),
           .log_offset = kSessionFileHeaderBytes,
           .log_bytes = kLogBytes,
           .format =
               [&](MappedFile& file) { return Format(file, capacity, now_ms); },
           .validate = Validate}));
  if (recovered != nullptr) *recovered = opened.recovered;
  std::unique_ptr<SessionStore> store(
      new SessionStore(std::move(opened.file), std::move(opened.log)));
  SHMALLOC_RETURN_IF_ERROR(ValidateRecords(*store));
  return store;
}

absl::StatusOr<SessionStore::Inserted> SessionStore::Insert(
    uint64_t token_hash, int32_t pid, std::string_view client_name,
    int64_t opened_at_ms) {
  if (client_name.size() > kSessionClientNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("client_name is ", client_name.size(), " bytes; at most ",
                     kSessionClientNameBytes));
  }
  SessionRecord* rs = records();
  uint32_t slot = 0;
  while (slot < capacity() && rs[slot].id != 0) ++slot;
  if (slot == capacity()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the session file holds ", capacity(), " sessions, all in use"));
  }
  SessionRecord& r = rs[slot];
  SessionFileHeader* h = header();
  const uint64_t id = h->next_id;
  log_.Begin();
  Store(h->next_id, id + 1);
  Store(r.token_hash, token_hash);
  Store(r.opened_at_ms, opened_at_ms);
  Store(r.orphaned_since_ms, int64_t{0});
  Store(r.pid, pid);
  Store(r.state, static_cast<uint32_t>(SessionState::kOpen));
  Store(r.client_name_bytes, static_cast<uint32_t>(client_name.size()));
  log_.TouchRange(r.client_name, kSessionClientNameBytes);
  std::memset(r.client_name, 0, kSessionClientNameBytes);
  std::memcpy(r.client_name, client_name.data(), client_name.size());
  // The id last: a record is used iff its id is set (rollback covers a crash
  // anyway; this keeps the in-transaction view valid too).
  Store(r.id, id);
  log_.Commit();
  return Inserted{slot, id};
}

void SessionStore::SetState(uint32_t slot, SessionState state,
                            int64_t since_ms) {
  SHMALLOC_CHECK(slot < capacity() && records()[slot].id != 0 &&
                 state != SessionState::kFree);
  SessionRecord& r = records()[slot];
  log_.Begin();
  Store(r.state, static_cast<uint32_t>(state));
  Store(r.orphaned_since_ms,
        state == SessionState::kOrphaned ? since_ms : int64_t{0});
  log_.Commit();
}

void SessionStore::Erase(uint32_t slot) {
  SHMALLOC_CHECK(slot < capacity() && records()[slot].id != 0);
  SessionRecord& r = records()[slot];
  log_.Begin();
  log_.TouchRange(&r, sizeof(SessionRecord));
  std::memset(static_cast<void*>(&r), 0, sizeof(SessionRecord));
  log_.Commit();
}

}  // namespace shmalloc::server
