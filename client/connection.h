// internal::Connection: the gRPC channel and stub to shmallocd plus the
// session held open by the OpenSession stream on a background thread, which
// also reconnects and resumes the session when the daemon restarts (see the
// state diagram in shmalloc/client.h). Shared (std::shared_ptr) by the
// Client and every Region, Arena and BlockCache made from it; the session
// ends when the last owner goes away.
//
// Invariants: session_id() != 0 once Open returned OK and it never
// changes afterwards (a resume keeps the id; a
// daemon that answers a resume with another session makes the session LOST,
// it is never adopted). LOST is final. epoch_ counts the streams the session
// has been attached by (1 = the first): a call that failed in epoch e and is
// resent waits for a later epoch or for the link to settle.
// Thread-safety: every method is thread-safe. Only the session thread
// changes state_ and calls on_state_change, so callbacks arrive in order.
#ifndef CLIENT_CONNECTION_H_
#define CLIENT_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/status_convert.h"
#include "shmalloc/client.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"

namespace shmalloc::client::internal {

// Returns the gRPC target for `target` as in ConnectOptions::target ("" =
// $SHMALLOC_SOCKET, else kDefaultSocketPath; a path becomes "unix:PATH").
std::string ResolveTarget(std::string_view target);

// Returns a fresh request id for AllocateRequest / FreeRequest: 16 random
// bytes as 32 lowercase hex digits. Thread-safe.
std::string NewRequestId();

// Whether Connection::Call may send a request again when its outcome is
// unknown (UNAVAILABLE or DEADLINE_EXCEEDED after it may have been sent).
enum class Resend {
  kNever,  // not idempotent (CreateRegion, DeleteRegion, ResetRegion)
  kSafe,   // a read, or a request the daemon dedupes by request_id
};

// What the session looks like now (for the CLI and the C API).
struct SessionSnapshot {
  uint64_t session_id = 0;
  ConnectionState state = ConnectionState::kConnected;
  uint32_t session_grace_ms = 0;    // as the daemon reported; 0 = unknown
  uint64_t daemon_incarnation = 0;  // of the daemon attached last
  uint64_t resumes = 0;             // successful resumes so far
};

class Connection {
 public:
  // Connects, opens the session and waits for its first event, each within
  // options.connect_timeout. UNAVAILABLE, DEADLINE_EXCEEDED, INVALID_ARGUMENT
  // (bad options or target), or the status the stream ended with.
  static absl::StatusOr<std::shared_ptr<Connection>> Open(
      const ConnectOptions& options);

  // Cancels the session stream (a clean client-side close: the daemon frees
  // the session's non-detached allocations) and joins its thread.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uint64_t session_id() const { return session_id_; }
  const std::string& target() const { return target_; }
  const std::string& shm_dir() const { return shm_dir_; }
  absl::Duration rpc_timeout() const { return rpc_timeout_; }
  // Returns the stub of the current channel (a resume attaches a fresh
  // channel; earlier stubs stay valid while the Connection lives).
  v1::Allocator::Stub& stub() { return *CurrentStub(); }
  // Returns the current channel.
  std::shared_ptr<grpc::Channel> channel() const {
    absl::MutexLock lock(&mu_);
    return channel_;
  }

  // Returns OK while CONNECTED or RESUMED, UNAVAILABLE while RECONNECTING,
  // FAILED_PRECONDITION "session lost" once LOST; each names the session.
  absl::Status session_status() const;
  // Returns the link state now.
  ConnectionState state() const;
  // Returns the session's id, state and what the daemon last told about it.
  SessionSnapshot snapshot() const;

  // Runs one unary RPC `(stub.*method)(ctx, request, response)` with the
  // rpc_timeout deadline once the session is live: while RECONNECTING it
  // waits up to call_wait first. With Resend::kSafe an unknown outcome
  // (UNAVAILABLE / DEADLINE_EXCEEDED) is sent again, unchanged, after the
  // link recovers, until call_wait has passed. Returns the daemon's status
  // converted by FromGrpc; UNAVAILABLE when the daemon stayed away;
  // FAILED_PRECONDITION when the session is LOST.
  template <typename Request, typename Response>
  absl::Status Call(grpc::Status (v1::Allocator::Stub::*method)(
                        grpc::ClientContext*, const Request&, Response*),
                    std::string_view name, const Request& request,
                    Response* response, Resend resend = Resend::kSafe) {
    const absl::Time now = absl::Now();
    const absl::Time wait_deadline = now + call_wait_;
    absl::Duration pause = initial_backoff_;
    for (bool first = true;; first = false) {
      uint64_t epoch = 0;
      v1::Allocator::Stub* stub = nullptr;
      // The common case without the mutex: live, read from the mirrors
      // (acquire pairs with PublishLocked's release stores).
      if (live_fast_.load(std::memory_order_acquire)) {
        epoch = epoch_fast_.load(std::memory_order_acquire);
        stub = stub_fast_.load(std::memory_order_acquire);
      } else {
        std::shared_ptr<v1::Allocator::Stub> held;
        absl::Status live = AwaitLive(name, wait_deadline, &epoch, &held);
        if (!live.ok()) return live;
        stub = held.get();  // every stub lives as long as the Connection
      }
      grpc::ClientContext context;
      context.set_deadline(
          absl::ToChronoTime((first ? now : absl::Now()) + rpc_timeout_));
      const grpc::Status status = (stub->*method)(&context, request, response);
      if (status.ok()) return absl::OkStatus();
      const bool unknown =
          status.error_code() == grpc::StatusCode::UNAVAILABLE ||
          status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      if (!unknown || resend == Resend::kNever ||
          absl::Now() >= wait_deadline) {
        return FromGrpc(status, name, target_);
      }
      // The stream may not have noticed the break yet: wait for the session
      // thread to move (a new epoch, or RECONNECTING) or for a short pause.
      AwaitChange(epoch, std::min(wait_deadline, absl::Now() + pause));
      pause = std::min(pause * 2, max_backoff_);
      response->Clear();
    }
  }

  // Sends `request` (session_id, session_token and a fresh request_id filled
  // in here) as one logical Allocate: resent with the same request_id after
  // an unknown outcome. Errors as Call.
  absl::Status Allocate(v1::AllocateRequest request,
                        v1::AllocateResponse* response);
  // Likewise for Free.
  absl::Status Free(v1::FreeRequest request, v1::FreeResponse* response);
  // Likewise for AdoptAllocations.
  absl::Status Adopt(v1::AdoptRequest request, v1::AdoptResponse* response);

 private:
  Connection() = default;
  // The session thread: holds the stream, reconnects and resumes.
  void RunSession();
  // Opens one stream (resuming when `resume`) and reads it until it ends.
  // Returns the status it ended with; *attached says whether its first
  // event came and was accepted; *lost_reason is set when the session must
  // become LOST because of what the daemon answered.
  grpc::Status RunStream(bool resume, bool* attached, std::string* lost_reason);
  // Records the first event of a stream. Returns "" when accepted, else why
  // the session is lost.
  // `channel` / `stub`: what the stream runs on; installed on a resume.
  std::string Attach(const v1::SessionEvent& event, bool resume,
                     std::shared_ptr<grpc::Channel> channel,
                     std::shared_ptr<v1::Allocator::Stub> stub);
  // Returns a new channel to target_ with its own subchannels: a channel
  // whose connection broke keeps failing fast with the stale error for
  // seconds after the daemon is back (gRPC's pick_first), a fresh one
  // connects at once.
  std::shared_ptr<grpc::Channel> NewChannel() const;
  std::shared_ptr<v1::Allocator::Stub> CurrentStub() const {
    absl::MutexLock lock(&mu_);
    return stub_;
  }
  // Moves to `state` (with `why` for RECONNECTING / LOST) and tells the
  // observer. Called by the session thread only, without mu_ held.
  void SetState(ConnectionState state, absl::Status why);
  // Sleeps `d`, waking early when closing. Returns false when closing.
  bool Pause(absl::Duration d);
  // Waits until the session is live (returns OK, *epoch = the stream's
  // epoch), LOST or closing (returns that status), or `deadline` passes
  // while RECONNECTING (UNAVAILABLE naming `method`).
  absl::Status AwaitLive(std::string_view method, absl::Time deadline,
                         uint64_t* epoch,
                         std::shared_ptr<v1::Allocator::Stub>* stub) const;
  // Waits until epoch_ != epoch, the link is not live, or `until`.
  void AwaitChange(uint64_t epoch, absl::Time until) const;
  absl::Status StatusLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores the lock-free mirrors of stub_, epoch_ and Live() (in that
  // order, release). Call after every change to them.
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets session_token_ and its lock-free mirror.
  void SetTokenLocked(const std::string& token)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Live() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return opened_ && (state_ == ConnectionState::kConnected ||
                       state_ == ConnectionState::kResumed);
  }

  // Set by Open, then constant.
  std::string target_;
  std::string client_name_;
  std::string shm_dir_;  // this process's view; set before Open returns
  absl::Duration rpc_timeout_;
  absl::Duration call_wait_;
  absl::Duration initial_backoff_;
  absl::Duration max_backoff_;
  absl::Duration give_up_after_;
  bool reconnect_ = true;
  std::function<void(ConnectionState)> on_state_change_;
  int initial_backoff_ms_ = 0;  // gRPC channel arguments
  int max_backoff_ms_ = 0;
  // Set by the session thread before opened_ (published by mu_), then
  // constant.
  uint64_t session_id_ = 0;
  std::string first_shm_dir_;

  std::thread session_thread_;
  mutable absl::Mutex mu_;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* stream_context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool opened_ ABSL_GUARDED_BY(mu_) = false;  // the first event came
  // The first stream ended before its first event (Open fails with it).
  bool open_failed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status open_status_ ABSL_GUARDED_BY(mu_);
  ConnectionState state_ ABSL_GUARDED_BY(mu_) = ConnectionState::kConnected;
  absl::Status why_ ABSL_GUARDED_BY(mu_);  // why RECONNECTING or LOST
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<v1::Allocator::Stub> stub_ ABSL_GUARDED_BY(mu_);
  // Stubs replaced by a resume, kept so stub() references stay valid.
  std::vector<std::shared_ptr<v1::Allocator::Stub>> retired_stubs_
      ABSL_GUARDED_BY(mu_);
  // Secret; set by the first event, replaced only if a resume brings one.
  std::string session_token_ ABSL_GUARDED_BY(mu_);
  uint64_t resumes_ ABSL_GUARDED_BY(mu_) = 0;
  // Lock-free mirrors for the call path, written under mu_ (PublishLocked,
  // SetTokenLocked): Call and Allocate/Free take no mutex while live (an
  // absl::Mutex with Debian's deadlock detection costs ~1 us per lock).
  // Stubs and tokens are kept for the Connection's life, so the raw
  // pointers stay valid.
  std::atomic<bool> live_fast_{false};
  std::atomic<uint64_t> epoch_fast_{0};
  std::atomic<v1::Allocator::Stub*> stub_fast_{nullptr};
  std::atomic<const std::string*> token_fast_{nullptr};
  std::vector<std::unique_ptr<const std::string>> tokens_ ABSL_GUARDED_BY(mu_);
  uint32_t grace_ms_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t daemon_incarnation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace shmalloc::client::internal

#endif  // CLIENT_CONNECTION_H_
