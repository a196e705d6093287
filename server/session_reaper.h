// SessionReaper: the daemon thread that reclaims orphaned sessions nobody
// resumed within session_grace_ms (counted from the daemon's start, or from
// the orphaning if later): each is closed like a dead client's session, its
// non-detached allocations freed, and logged.
//
// The thread sleeps on a CondVar until the next orphan's deadline (or until
// Stop), so there is no polling; orphans only appear at start (Attach), so
// the set it waits on only shrinks while the daemon runs.
//
// Thread-safety: Start and Stop are not thread-safe with each other; the
// thread itself only calls thread-safe Core functions.
#ifndef SERVER_SESSION_REAPER_H_
#define SERVER_SESSION_REAPER_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/core.h"

namespace shmalloc::server {

class SessionReaper {
 public:
  explicit SessionReaper(Core& core) : core_(core) {}
  ~SessionReaper() { Stop(); }
  SessionReaper(const SessionReaper&) = delete;
  SessionReaper& operator=(const SessionReaper&) = delete;

  // Starts the thread. REQUIRES: not running. Not thread-safe.
  void Start();
  // Stops the thread and joins it; idempotent. Orphans left are kept (they
  // wait for the next start). Not thread-safe.
  void Stop();

 private:
  void Run();

  Core& core_;
  std::thread thread_;
  absl::Mutex mu_;
  absl::CondVar wake_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace shmalloc::server

#endif  // SERVER_SESSION_REAPER_H_
