// The OpenSession stream: a callback-API write reactor that opens a session
// (or resumes one with OpenSessionRequest.resume_token), writes one
// SessionEvent (session_id, shm_dir, the secret session_token, resumed,
// session_grace_ms, daemon_incarnation) and then holds no thread until the
// stream ends. When the client cancelled it or died (OnCancel, a failed
// write), the session is closed and every allocation it owns that is not
// detached is freed (OnDone). When the daemon stops (Stop), nothing is
// freed: the session is orphaned and waits to be resumed.
//
// States: writing the event -> idle -> finished -> done. Finish is called
// exactly once, never while the event write is in flight.
//
// Thread-safety: gRPC may run OnWriteDone, OnCancel and Stop concurrently;
// they serialise on the reactor's mutex. The reactor deletes itself in
// OnDone.
#ifndef SERVER_SESSION_REACTOR_H_
#define SERVER_SESSION_REACTOR_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_callback.h"
#include "server/core.h"
#include "server/stream_registry.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

class SessionReactor final : public grpc::ServerWriteReactor<v1::SessionEvent>,
                             public StoppableStream {
 public:
  // Starts the stream for `request`: opens the session and writes its event,
  // or finishes with the error (UNAVAILABLE while shutting down,
  // RESOURCE_EXHAUSTED over max_sessions, INVALID_ARGUMENT for a long
  // client name, RESOURCE_EXHAUSTED when the peer — the client process, by
  // `grpc_peer` (peer_table.h) — already holds max_sessions_per_peer; for a
  // resume: NOT_FOUND for an unknown or expired token, FAILED_PRECONDITION
  // when that session is attached to a live stream).
  SessionReactor(Core& core, const v1::OpenSessionRequest& request,
                 const std::string& grpc_peer);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void Stop() override;

 private:
  // Finishes with `status` now, or after the write in flight completes.
  void FinishOnce(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Core& core_;
  bool registered_ = false;  // in core_.streams; set before any callback
  std::string peer_key_;     // counted in core_.peers when non-empty
  absl::Mutex mu_;
  uint64_t session_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::string client_name_ ABSL_GUARDED_BY(mu_);
  v1::SessionEvent event_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  // The client cancelled or vanished before any Stop: reclaim, not orphan.
  bool client_gone_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status pending_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmalloc::server

#endif  // SERVER_SESSION_REACTOR_H_
