// The daemon's sessions: id -> {token hash, client name, pid, state}, kept
// in a SessionStore (<shm_dir>/shmalloc.sessions) so they outlive a restart.
//
// Life of a session:
//   Open ──▶ OPEN (attached to its OpenSession stream)
//   OPEN ──stream ends, daemon running──▶ CLOSING ──allocations released──▶
//       Remove (gone)
//   OPEN ──daemon stops (Orphan/OrphanAll) or dies──▶ ORPHANED
//   ORPHANED ──Resume(token) within the grace period──▶ OPEN
//   ORPHANED ──grace period over (TakeExpired)──▶ CLOSING ──▶ Remove
// At Attach (daemon start) every OPEN or ORPHANED record becomes ORPHANED
// since the start time, and CLOSING ones (a close a crash cut short) are
// handed back to be finished at once.
//
// The session token (16 random bytes from the OS CSPRNG) is returned once by
// Open and never stored, logged or kept in memory: the table keeps only its
// TokenHash. Ids are never 0 and never reused in a shm_dir (the counter is
// persistent).
//
// Invariants: open() + orphaned() + closing <= max_sessions; a session is
// OPEN iff a live stream holds it.
// Thread-safety: thread-safe (one mutex; every store change is a
// transaction under it).
#ifndef SERVER_SESSION_TABLE_H_
#define SERVER_SESSION_TABLE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/ended_sessions.h"
#include "server/session_store.h"

namespace shmalloc::server {

inline constexpr size_t kMaxClientNameBytes = kSessionClientNameBytes;

// Who a session id is, for reports: its client name, and whether the
// session has ended (its name then comes from the ended-session ring;
// "" once the ring has forgotten it).
struct SessionLabel {
  std::string client_name;
  bool ended = false;
};

class SessionTable {
 public:
  SessionTable(uint32_t max_sessions, uint32_t grace_ms);

  // Opens (or creates) the store in `shm_dir`, rolls back an interrupted
  // change, makes every OPEN/ORPHANED record ORPHANED since `now`, and
  // returns the ids of the CLOSING ones: the caller releases their
  // allocations and calls Remove. The errors of SessionStore::Attach;
  // FAILED_PRECONDITION when already attached. Thread-safe.
  [[nodiscard]] absl::StatusOr<std::vector<uint64_t>> Attach(
      const std::string& shm_dir, absl::Time now);

  struct Opened {
    uint64_t id;
    std::string token;  // kSessionTokenBytes; the caller's secret
  };
  // Opens a session (OPEN). INVALID_ARGUMENT for a client name over
  // kMaxClientNameBytes; RESOURCE_EXHAUSTED when max_sessions exist;
  // FAILED_PRECONDITION before Attach; INTERNAL when the OS has no random
  // bytes. State unchanged on error. Thread-safe.
  [[nodiscard]] absl::StatusOr<Opened> Open(std::string_view client_name,
                                            int32_t pid, absl::Time now);

  // Resumes the ORPHANED session whose token is `token` (it becomes OPEN)
  // and returns its id. NOT_FOUND when no session has that token, it is
  // being closed, or its grace period ended by `now`; FAILED_PRECONDITION
  // when it is OPEN (attached to a live stream). Unchanged on error.
  // Thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> Resume(std::string_view token,
                                                absl::Time now);

  // Checks that `token` is session `id`'s (for Allocate and Free; an
  // ORPHANED session may be used with its token). NOT_FOUND when there is
  // no such session or it is being closed; PERMISSION_DENIED when `token`
  // is missing or wrong (compared in constant time). Thread-safe.
  [[nodiscard]] absl::Status Check(uint64_t id, std::string_view token) const;

  // Returns true when session `id` exists and is not being closed (it can
  // still gain allocations). Thread-safe.
  bool IsOpen(uint64_t id) const;

  // Marks session `id` CLOSING (persisted) so it gains nothing more; the
  // caller then releases its allocations and calls Remove. Returns false
  // when there is no such session or it is already closing. Thread-safe.
  bool BeginClose(uint64_t id);

  // Forgets session `id`: its name goes to the ended-session ring (so
  // reports can still name it), then its record is erased. No-op when
  // absent. `now` is when it ended. Thread-safe.
  void Remove(uint64_t id, absl::Time now = absl::Now());

  // Orphans OPEN session `id` since `now` (its stream ended because the
  // daemon stops). Returns false (no change) unless it was OPEN.
  // Thread-safe.
  bool Orphan(uint64_t id, absl::Time now);

  // Orphans every OPEN session since `now`; returns how many. Thread-safe.
  uint64_t OrphanAll(absl::Time now);

  // Returns when the next orphan's grace period ends (nullopt: none).
  // Thread-safe.
  std::optional<absl::Time> NextOrphanDeadline() const;

  // Marks CLOSING every orphan whose grace period ended by `now` and returns
  // their ids; the caller releases their allocations and calls Remove.
  // Counted in reclaimed_total(). Thread-safe.
  std::vector<uint64_t> TakeExpired(absl::Time now);

  // Returns the client name of `id`: a live (open, orphaned or closing)
  // session's, else an ended one's from the ring ("" when unknown).
  // Thread-safe.
  std::string ClientName(uint64_t id) const;
  // ClientName plus whether the session has ended. Thread-safe.
  SessionLabel Label(uint64_t id) const;

  // Returns the ids of every session in `state`. Thread-safe.
  std::vector<uint64_t> Ids(SessionState state) const;

  uint32_t grace_ms() const { return grace_ms_; }
  uint64_t open() const;          // OPEN sessions
  uint64_t orphaned() const;      // ORPHANED sessions
  uint64_t opened_total() const;  // Open calls that succeeded, this run
  uint64_t resumed_total() const;
  uint64_t reclaimed_total() const;

 private:
  struct Entry {
    uint32_t slot;
    SessionState state;
    absl::Time deadline;  // ORPHANED: end of the grace period
  };
  void SetState(Entry& entry, SessionState state, absl::Time since)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t Count(SessionState state) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const uint32_t max_sessions_;
  const uint32_t grace_ms_;
  mutable absl::Mutex mu_;
  std::unique_ptr<SessionStore> store_ ABSL_GUARDED_BY(mu_);
  // Names of the sessions that ended (<shm_dir>/shmalloc.ended).
  std::unique_ptr<EndedSessions> ended_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Entry> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint64_t> by_token_hash_ ABSL_GUARDED_BY(mu_);
  uint64_t opened_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t resumed_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reclaimed_total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace shmalloc::server

#endif  // SERVER_SESSION_TABLE_H_
