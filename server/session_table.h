// The open sessions of the daemon: id -> client name.
//
// A session lives exactly as long as its OpenSession stream; the stream's
// reactor opens it here and closes it when the stream ends, then asks every
// region to release what the session owned. Ids are never 0 and never
// reused within a run; they start at a random point so that an id from a
// previous run of the daemon is very unlikely to name a live session.
//
// Invariants: open() <= max_sessions; opened_total() >= open().
// Thread-safety: thread-safe.
#ifndef SERVER_SESSION_TABLE_H_
#define SERVER_SESSION_TABLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace shmalloc::server {

inline constexpr size_t kMaxClientNameBytes = 128;

class SessionTable {
 public:
  explicit SessionTable(uint32_t max_sessions);

  // Opens a session and returns its id. INVALID_ARGUMENT for a client name
  // over kMaxClientNameBytes; RESOURCE_EXHAUSTED when max_sessions are open.
  // State unchanged on error. Thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> Open(std::string client_name);

  // Closes session `id`; returns false when it was not open. Thread-safe.
  bool Close(uint64_t id);

  // Returns true when session `id` is open. Thread-safe.
  bool IsOpen(uint64_t id) const;

  // Returns the client name of `id` ("" when not open). Thread-safe.
  std::string ClientName(uint64_t id) const;

  // Returns the ids of every open session. Thread-safe.
  std::vector<uint64_t> OpenIds() const;

  uint64_t open() const;
  uint64_t opened_total() const;

 private:
  const uint32_t max_sessions_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, std::string> sessions_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_);
  uint64_t opened_total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace shmalloc::server

#endif  // SERVER_SESSION_TABLE_H_
