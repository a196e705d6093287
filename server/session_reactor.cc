#include "server/session_reactor.h"

#include <utility>

#include "common/log.h"
#include "server/grpc_status.h"

namespace shmalloc::server {

SessionReactor::SessionReactor(Core& core,
                               const v1::OpenSessionRequest& request)
    : core_(core) {
  // Register before taking our own lock (lock order: registry, then us).
  registered_ = core_.streams.Add(this);
  absl::MutexLock lock(&mu_);
  started_ = true;
  if (!registered_ || stop_requested_) {
    core_.metrics.Record("OpenSession", absl::StatusCode::kUnavailable);
    FinishOnce(absl::UnavailableError("shmallocd is shutting down"));
    return;
  }
  absl::StatusOr<uint64_t> id = core_.sessions.Open(request.client_name());
  core_.metrics.Record("OpenSession", id.status().code());
  if (!id.ok()) {
    FinishOnce(id.status());
    return;
  }
  session_id_ = *id;
  client_name_ = request.client_name();
  event_.set_session_id(session_id_);
  event_.set_shm_dir(core_.regions.shm_dir());
  write_in_flight_ = true;
  StartWrite(&event_);
}

void SessionReactor::FinishOnce(const absl::Status& status) {
  if (finished_) return;
  if (write_in_flight_) {
    if (!finish_pending_) {
      finish_pending_ = true;
      pending_status_ = status;
    }
    return;
  }
  finished_ = true;
  Finish(ToGrpcStatus(status));
}

void SessionReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (finish_pending_) {
    FinishOnce(pending_status_);
  } else if (!ok) {
    FinishOnce(absl::CancelledError("the client went away"));
  }
}

void SessionReactor::OnCancel() {
  absl::MutexLock lock(&mu_);
  FinishOnce(absl::CancelledError("session cancelled"));
}

void SessionReactor::Stop() {
  absl::MutexLock lock(&mu_);
  stop_requested_ = true;
  if (started_) FinishOnce(absl::OkStatus());
}

void SessionReactor::OnDone() {
  uint64_t id;
  std::string name;
  {
    absl::MutexLock lock(&mu_);
    id = session_id_;
    name = client_name_;
  }
  if (id != 0) {
    // Quiet for the common case: a thousand sessions are a thousand lines.
    if (const uint64_t freed = EndSession(core_, id); freed > 0) {
      SHMALLOC_LOG(Info) << "session " << id << " (" << name << ") ended; "
                         << freed << " owned allocations freed";
    }
  }
  // Last: shutdown waits for the registry to empty, so by then every
  // session's allocations are released.
  if (registered_) core_.streams.Remove(this);
  delete this;
}

}  // namespace shmalloc::server
