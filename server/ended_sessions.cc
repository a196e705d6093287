#include "server/ended_sessions.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/logged_file.h"

namespace shmalloc::server {
namespace {

constexpr mode_t kEndedFileMode = 0600;
constexpr uint64_t kLogBytes = UndoLogBytes(kEndedSessionsLogEntries);
constexpr uint64_t kEntriesOffset = kEndedSessionsHeaderBytes + kLogBytes;

uint64_t FileBytes(uint64_t capacity) {
  return kEntriesOffset + sizeof(EndedSession) * capacity;
}

// Formats a zero-filled file; the magic goes last, so a crash before it
// leaves a file that Attach formats again.
absl::Status Format(MappedFile& file, uint32_t capacity) {
  auto* h = reinterpret_cast<EndedSessionsHeader*>(file.data());
  h->layout_version = kEndedSessionsLayoutVersion;
  h->capacity = capacity;
  h->log_offset = kEndedSessionsHeaderBytes;
  h->log_bytes = kLogBytes;
  h->entries_offset = kEntriesOffset;
  SHMALLOC_RETURN_IF_ERROR(
      UndoLog::Format(file.bytes(), file.bytes().subspan(
                                        kEndedSessionsHeaderBytes, kLogBytes))
          .status());
  std::atomic_signal_fence(std::memory_order_seq_cst);
  h->magic = kEndedSessionsMagic;
  return absl::OkStatus();
}

absl::Status Validate(const MappedFile& file) {
  const std::string& path = file.path();
  if (file.size() < kEndedSessionsHeaderBytes) {
    return absl::DataLossError(absl::StrCat(path, " is ", file.size(),
                                            " bytes, shorter than its header"));
  }
  const auto* h = reinterpret_cast<const EndedSessionsHeader*>(file.data());
  if (h->magic != kEndedSessionsMagic) {
    return absl::DataLossError(absl::StrCat(
        path, " is not a shmalloc ended-session file (bad magic)"));
  }
  if (h->layout_version != kEndedSessionsLayoutVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has layout version ", h->layout_version,
        "; this shmallocd reads version ", kEndedSessionsLayoutVersion,
        " only (move the file away: it only names ended sessions)"));
  }
  if (h->capacity == 0 || h->log_offset != kEndedSessionsHeaderBytes ||
      h->log_bytes != kLogBytes || h->entries_offset != kEntriesOffset ||
      file.size() != FileBytes(h->capacity)) {
    return absl::DataLossError(
        absl::StrCat(path, ": header geometry (capacity ", h->capacity,
                     ", file ", file.size(), " bytes) is inconsistent"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<EndedSessions>> EndedSessions::Attach(
    const std::string& dir, uint32_t capacity) {
  if (capacity == 0) {
    return absl::InvalidArgumentError(
        "an ended-session ring needs capacity > 0");
  }
  const std::string path = absl::StrCat(dir, "/", kEndedSessionsFileName);
  SHMALLOC_ASSIGN_OR_RETURN(
      LoggedFile opened,
      OpenLoggedFile(
          {.path = path,
           .mode = kEndedFileMode,
           .create_bytes = FileBytes(capacity),
           .log_offset = kEndedSessionsHeaderBytes,
           .log_bytes = kLogBytes,
           .format = [&](MappedFile& file) { return Format(file, capacity); },
           .validate = Validate}));
  std::unique_ptr<EndedSessions> ended(
      new EndedSessions(std::move(opened.file), std::move(opened.log)));
  // The index, newest entry last so that an id appended twice (a close that
  // a crash interrupted after the Append is finished again at the next
  // start) maps to its newest entry.
  const uint32_t cap = ended->capacity();
  const uint64_t appended = ended->appended();
  const uint64_t first = appended > cap ? appended - cap : 0;
  for (uint64_t n = first; n < appended; ++n) {
    const auto slot = static_cast<uint32_t>(n % cap);
    const EndedSession& e = ended->entries()[slot];
    if (e.client_name_bytes > kEndedClientNameBytes) {
      return absl::DataLossError(
          absl::StrCat(path, ": entry ", slot, " fails validation"));
    }
    if (e.id != 0) ended->slot_of_[e.id] = slot;
  }
  return ended;
}

void EndedSessions::Append(uint64_t id, int32_t pid,
                           std::string_view client_name, int64_t opened_at_ms,
                           int64_t ended_at_ms) {
  EndedSessionsHeader* h = header();
  const auto slot = static_cast<uint32_t>(h->appended % h->capacity);
  EndedSession& e = entries()[slot];
  if (e.id != 0) {
    auto it = slot_of_.find(e.id);
    if (it != slot_of_.end() && it->second == slot) slot_of_.erase(it);
  }
  const size_t name_bytes = std::min(client_name.size(), kEndedClientNameBytes);
  log_.Begin();
  log_.TouchRange(&e, sizeof(EndedSession));
  std::memset(static_cast<void*>(&e), 0, sizeof(EndedSession));
  e.opened_at_ms = opened_at_ms;
  e.ended_at_ms = ended_at_ms;
  e.pid = pid;
  e.client_name_bytes = static_cast<uint32_t>(name_bytes);
  std::memcpy(e.client_name, client_name.data(), name_bytes);
  e.id = id;
  log_.Touch(&h->appended);
  h->appended = h->appended + 1;
  log_.Commit();
  slot_of_[id] = slot;
}

std::optional<EndedSession> EndedSessions::Find(uint64_t id) const {
  auto it = slot_of_.find(id);
  if (it == slot_of_.end()) return std::nullopt;
  return entries()[it->second];
}

}  // namespace shmalloc::server
