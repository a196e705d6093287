// shmallocd as a library: start serving DaemonOptions, shut down cleanly.
//
// Start locks shm_dir (one daemon per directory: <shm_dir>/shmalloc.lock),
// re-attaches every region in it, creates the configured regions that are
// absent, then listens on the Unix socket (mode 0660, set before listen();
// a stale socket file nobody answers on is replaced; connections accepted
// by the daemon itself so each peer's SO_PEERCRED is known: unix_listener.h)
// and on any TCP addresses, with
// grpc.health.v1 (SERVING) and server reflection next to shmalloc.v1,
// and serves /metrics over HTTP when options.metrics_listen is set. Start
// also attaches the persistent session table (<shm_dir>/shmalloc.sessions):
// sessions of the previous run become orphans, and a SessionReaper thread
// reclaims those not resumed within session_grace_ms.
//
// Shutdown: stops the metrics endpoint, refuses new calls (UNAVAILABLE), ends
// every OpenSession and WatchStats stream (each session is orphaned, never
// freed: its client resumes it after the restart; the reaper is stopped first),
// waits at most `drain` for unary calls in flight, then stops gRPC at once
// (idle client connections do not hold it up), syncs and unmaps every
// region and removes the socket file. Regions persist in shm_dir.
//
// Thread-safety: Start and Shutdown are not thread-safe with each other;
// the running service is.
#ifndef SERVER_DAEMON_H_
#define SERVER_DAEMON_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/config.h"
#include "server/core.h"
#include "server/service.h"
#include "server/session_reaper.h"
#include "server/shm_file.h"
#include "server/unix_listener.h"

namespace shmalloc::server {

class MetricsServer;

class Daemon {
 public:
  // Starts serving. Returns the error that prevents it: shm_dir unusable or
  // locked by another daemon (FAILED_PRECONDITION),
  // a configured region that cannot be created (e.g. RESOURCE_EXHAUSTED:
  // the mount is too small), the socket path taken by a live server
  // (ALREADY_EXISTS) or not bindable (UNAVAILABLE), the metrics address
  // not bindable (UNAVAILABLE).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Daemon>> Start(
      const DaemonOptions& options);

  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Shuts down as described above; idempotent. Not thread-safe.
  void Shutdown(absl::Duration drain);

  // "unix:PATH" and every "HOST:PORT" listened on.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  // "HOST:PORT" serving /metrics; "" when off.
  std::string metrics_endpoint() const;

 private:
  explicit Daemon(DaemonOptions options);
  absl::Status AttachSessions();
  absl::Status CreateConfiguredRegions();
  absl::Status Listen();

  DaemonOptions options_;
  std::optional<DirectoryLock> shm_dir_lock_;   // held while running
  std::optional<DirectoryLock> huge_dir_lock_;  // with --huge_dir
  std::unique_ptr<Core> core_;
  std::unique_ptr<AllocatorService> service_;
  std::unique_ptr<SessionReaper> reaper_;  // running between Start, Shutdown
  std::unique_ptr<grpc::Server> server_;
  // Accepts on the Unix socket and hands connections to server_ (declared
  // after it: destroyed, so stopped, first).
  std::unique_ptr<UnixListener> unix_listener_;
  std::unique_ptr<MetricsServer> metrics_;  // reads core_: declared after it
  std::vector<std::string> endpoints_;
  bool shut_down_ = false;
};

}  // namespace shmalloc::server

#endif  // SERVER_DAEMON_H_
