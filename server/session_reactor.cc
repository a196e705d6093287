#include "server/session_reactor.h"

#include <string>
#include <utility>

#include "absl/time/clock.h"
#include "common/log.h"
#include "server/grpc_status.h"

namespace shmalloc::server {

SessionReactor::SessionReactor(Core& core,
                               const v1::OpenSessionRequest& request,
                               const std::string& grpc_peer)
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
  // One process cannot take every session (review item L3).
  const std::string key = core_.peers.Key(grpc_peer, request.pid());
  if (absl::Status s =
          core_.peers.AcquireSession(key, core_.limits.max_sessions_per_peer);
      !s.ok()) {
    core_.metrics.Record("OpenSession", s.code());
    SHMALLOC_LOG(Warning) << "session refused: " << s.message();
    FinishOnce(s);
    return;
  }
  peer_key_ = key;
  absl::StatusOr<uint64_t> id;
  std::string token;
  const bool resume = !request.resume_token().empty();
  if (resume) {
    id = core_.sessions.Resume(request.resume_token(), absl::Now());
    if (id.ok()) token = request.resume_token();
  } else {
    absl::StatusOr<SessionTable::Opened> opened =
        core_.sessions.Open(request.client_name(), request.pid(), absl::Now());
    if (opened.ok()) {
      id = opened->id;
      token = std::move(opened->token);
    } else {
      id = opened.status();
    }
  }
  core_.metrics.Record("OpenSession", id.status().code());
  if (!id.ok()) {
    FinishOnce(id.status());
    return;
  }
  session_id_ = *id;
  client_name_ = core_.sessions.ClientName(session_id_);
  if (resume) {
    SHMALLOC_LOG(Info) << "session " << session_id_ << " (" << client_name_
                       << ") resumed";
  }
  event_.set_session_id(session_id_);
  event_.set_shm_dir(core_.regions.shm_dir());
  // The secret goes in this first event only and is never logged.
  event_.set_session_token(std::move(token));
  event_.set_resumed(resume);
  event_.set_session_grace_ms(core_.sessions.grace_ms());
  event_.set_daemon_incarnation(core_.incarnation);
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
    if (!stop_requested_) client_gone_ = true;
    FinishOnce(absl::CancelledError("the client went away"));
  }
}

void SessionReactor::OnCancel() {
  absl::MutexLock lock(&mu_);
  // A cancel after Stop is gRPC ending the stream for the shutdown.
  if (!stop_requested_) client_gone_ = true;
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
  bool daemon_stopping;
  {
    absl::MutexLock lock(&mu_);
    id = session_id_;
    name = client_name_;
    daemon_stopping = stop_requested_ && !client_gone_;
    // The token is not needed any more; do not keep the secret around.
    event_.Clear();
  }
  if (id != 0 && daemon_stopping) {
    // The daemon stops, the client may well live on: keep everything it
    // owns; it resumes with its token within the grace period.
    core_.sessions.Orphan(id, absl::Now());
  } else if (id != 0) {
    // Quiet for the common case: a thousand sessions are a thousand lines.
    if (const uint64_t freed = EndSession(core_, id); freed > 0) {
      SHMALLOC_LOG(Info) << "session " << id << " (" << name << ") ended; "
                         << freed << " owned allocations freed";
    }
  }
  if (!peer_key_.empty()) core_.peers.ReleaseSession(peer_key_);
  // Last: shutdown waits for the registry to empty, so by then every
  // session is released or orphaned.
  if (registered_) core_.streams.Remove(this);
  delete this;
}

}  // namespace shmalloc::server
