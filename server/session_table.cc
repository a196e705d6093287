#include "server/session_table.h"

#include <openssl/rand.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace shmalloc::server {
namespace {

int64_t UnixMs(absl::Time t) { return absl::ToUnixMillis(t); }

// Compares without an early exit, so the time taken says nothing about how
// many bits of a guessed token's hash were right.
bool ConstantTimeEqual(uint64_t a, uint64_t b) {
  volatile uint64_t diff = a ^ b;
  return diff == 0;
}

}  // namespace

SessionTable::SessionTable(uint32_t max_sessions, uint32_t grace_ms)
    : max_sessions_(max_sessions), grace_ms_(grace_ms) {}

absl::StatusOr<std::vector<uint64_t>> SessionTable::Attach(
    const std::string& shm_dir, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (store_ != nullptr) {
    return absl::FailedPreconditionError("session store already attached");
  }
  SHMALLOC_ASSIGN_OR_RETURN(
      store_, SessionStore::Attach(shm_dir, max_sessions_, UnixMs(now)));
  SHMALLOC_ASSIGN_OR_RETURN(ended_, EndedSessions::Attach(shm_dir));
  if (store_->capacity() != max_sessions_) {
    SHMALLOC_LOG(Warning) << store_->path() << " holds " << store_->capacity()
                          << " session records; limits.max_sessions is "
                          << max_sessions_ << " (the smaller one applies)";
  }
  std::vector<uint64_t> closing;
  for (uint32_t slot = 0; slot < store_->capacity(); ++slot) {
    const SessionRecord& r = store_->record(slot);
    if (r.id == 0) continue;
    Entry entry{slot, static_cast<SessionState>(r.state), absl::InfinitePast()};
    if (entry.state == SessionState::kClosing) {
      closing.push_back(r.id);
    } else {
      SetState(entry, SessionState::kOrphaned, now);
    }
    by_token_hash_[r.token_hash] = r.id;
    sessions_.emplace(r.id, entry);
  }
  return closing;
}

void SessionTable::SetState(Entry& entry, SessionState state,
                            absl::Time since) {
  store_->SetState(entry.slot, state, UnixMs(since));
  entry.state = state;
  entry.deadline = state == SessionState::kOrphaned
                       ? since + absl::Milliseconds(grace_ms_)
                       : absl::InfinitePast();
}

absl::StatusOr<SessionTable::Opened> SessionTable::Open(
    std::string_view client_name, int32_t pid, absl::Time now) {
  if (client_name.size() > kMaxClientNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("client_name is ", client_name.size(), " bytes; at most ",
                     kMaxClientNameBytes));
  }
  Opened opened;
  opened.token.resize(kSessionTokenBytes);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(opened.token.data()),
                 static_cast<int>(opened.token.size())) != 1) {
    return absl::InternalError("no random bytes for a session token");
  }
  const uint64_t hash = TokenHash(opened.token);
  absl::MutexLock lock(&mu_);
  if (store_ == nullptr) {
    return absl::FailedPreconditionError("session store not attached");
  }
  if (sessions_.size() >= max_sessions_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the daemon already has ", sessions_.size(),
        " sessions, open or orphaned (limit max_sessions = ", max_sessions_,
        ")"));
  }
  if (by_token_hash_.contains(hash)) {
    // 2^-64 per pair: not worth a retry loop, but never two sessions per hash.
    return absl::InternalError("session token hash collision; retry");
  }
  SHMALLOC_ASSIGN_OR_RETURN(
      SessionStore::Inserted inserted,
      store_->Insert(hash, pid, client_name, UnixMs(now)));
  sessions_.emplace(inserted.id, Entry{inserted.slot, SessionState::kOpen,
                                       absl::InfinitePast()});
  by_token_hash_[hash] = inserted.id;
  ++opened_total_;
  opened.id = inserted.id;
  return opened;
}

absl::StatusOr<uint64_t> SessionTable::Resume(std::string_view token,
                                              absl::Time now) {
  const uint64_t hash = TokenHash(token);
  absl::MutexLock lock(&mu_);
  auto by_hash = by_token_hash_.find(hash);
  if (token.empty() || by_hash == by_token_hash_.end()) {
    return absl::NotFoundError(
        "no session has this resume_token (unknown, or already reclaimed)");
  }
  const uint64_t id = by_hash->second;
  Entry& entry = sessions_.at(id);
  switch (entry.state) {
    case SessionState::kOpen:
      return absl::FailedPreconditionError(absl::StrCat(
          "session ", id, " is attached to a live OpenSession stream"));
    case SessionState::kOrphaned:
      if (now >= entry.deadline) {
        return absl::NotFoundError(absl::StrCat(
            "session ", id, " was not resumed within its grace period of ",
            grace_ms_, " ms"));
      }
      break;
    default:
      return absl::NotFoundError(
          absl::StrCat("session ", id, " is being reclaimed"));
  }
  SetState(entry, SessionState::kOpen, now);
  ++resumed_total_;
  return id;
}

absl::Status SessionTable::Check(uint64_t id, std::string_view token) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = id == 0 ? sessions_.end() : sessions_.find(id);
  if (it == sessions_.end() || it->second.state == SessionState::kClosing) {
    return absl::NotFoundError(
        absl::StrCat("unknown session ", id, " (open one with OpenSession)"));
  }
  if (token.empty()) {
    return absl::PermissionDeniedError(
        absl::StrCat("session_token missing for session ", id,
                     " (send the one from the session's first SessionEvent)"));
  }
  if (!ConstantTimeEqual(store_->record(it->second.slot).token_hash,
                         TokenHash(token))) {
    return absl::PermissionDeniedError(
        absl::StrCat("wrong session_token for session ", id));
  }
  return absl::OkStatus();
}

bool SessionTable::IsOpen(uint64_t id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = sessions_.find(id);
  return it != sessions_.end() && it->second.state != SessionState::kClosing;
}

bool SessionTable::BeginClose(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.state == SessionState::kClosing) {
    return false;
  }
  SetState(it->second, SessionState::kClosing, absl::InfinitePast());
  return true;
}

void SessionTable::Remove(uint64_t id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  const uint32_t slot = it->second.slot;
  const SessionRecord& r = store_->record(slot);
  // The ring first: a crash between the two leaves the record CLOSING, and
  // the next start finishes the close and appends again (Find takes the
  // newest entry), so a name is never lost.
  ended_->Append(id, r.pid,
                 std::string_view(r.client_name, r.client_name_bytes),
                 r.opened_at_ms, UnixMs(now));
  by_token_hash_.erase(r.token_hash);
  store_->Erase(slot);
  sessions_.erase(it);
}

bool SessionTable::Orphan(uint64_t id, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.state != SessionState::kOpen) {
    return false;
  }
  SetState(it->second, SessionState::kOrphaned, now);
  return true;
}

uint64_t SessionTable::OrphanAll(absl::Time now) {
  absl::MutexLock lock(&mu_);
  uint64_t n = 0;
  for (auto& [id, entry] : sessions_) {
    if (entry.state != SessionState::kOpen) continue;
    SetState(entry, SessionState::kOrphaned, now);
    ++n;
  }
  return n;
}

std::optional<absl::Time> SessionTable::NextOrphanDeadline() const {
  absl::ReaderMutexLock lock(&mu_);
  std::optional<absl::Time> next;
  for (const auto& [id, entry] : sessions_) {
    if (entry.state != SessionState::kOrphaned) continue;
    if (!next.has_value() || entry.deadline < *next) next = entry.deadline;
  }
  return next;
}

std::vector<uint64_t> SessionTable::TakeExpired(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> expired;
  for (auto& [id, entry] : sessions_) {
    if (entry.state != SessionState::kOrphaned || now < entry.deadline) {
      continue;
    }
    SetState(entry, SessionState::kClosing, absl::InfinitePast());
    expired.push_back(id);
  }
  reclaimed_total_ += expired.size();
  return expired;
}

std::string SessionTable::ClientName(uint64_t id) const {
  return Label(id).client_name;
}

SessionLabel SessionTable::Label(uint64_t id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it != sessions_.end()) {
    const SessionRecord& r = store_->record(it->second.slot);
    return {std::string(r.client_name, r.client_name_bytes), false};
  }
  std::optional<EndedSession> e =
      ended_ == nullptr ? std::nullopt : ended_->Find(id);
  if (!e.has_value()) return {std::string(), true};
  return {std::string(e->client_name, e->client_name_bytes), true};
}

std::vector<uint64_t> SessionTable::Ids(SessionState state) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<uint64_t> ids;
  for (const auto& [id, entry] : sessions_) {
    if (entry.state == state) ids.push_back(id);
  }
  return ids;
}

uint64_t SessionTable::Count(SessionState state) const {
  uint64_t n = 0;
  for (const auto& [id, entry] : sessions_) n += entry.state == state;
  return n;
}

uint64_t SessionTable::open() const {
  absl::ReaderMutexLock lock(&mu_);
  return Count(SessionState::kOpen);
}

uint64_t SessionTable::orphaned() const {
  absl::ReaderMutexLock lock(&mu_);
  return Count(SessionState::kOrphaned);
}

uint64_t SessionTable::opened_total() const {
  absl::ReaderMutexLock lock(&mu_);
  return opened_total_;
}

uint64_t SessionTable::resumed_total() const {
  absl::ReaderMutexLock lock(&mu_);
  return resumed_total_;
}

uint64_t SessionTable::reclaimed_total() const {
  absl::ReaderMutexLock lock(&mu_);
  return reclaimed_total_;
}

}  // namespace shmalloc::server
