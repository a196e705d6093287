// internal::Connection: the gRPC channel and stub to shmallocd plus the
// session held open by the OpenSession stream on a background thread.
// Shared (std::shared_ptr) by the Client and every Region, Arena and
// BlockCache made from it; the session ends when the last owner goes away.
//
// Invariants: session_id() != 0 once Open returned OK; after the stream
// ends, session_status() is non-OK forever and every Call fails with it.
// Thread-safety: every method is thread-safe.
#ifndef CLIENT_CONNECTION_H_
#define CLIENT_CONNECTION_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

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

class Connection {
 public:
  // Connects, opens the session and waits for its first event, each within
  // options.connect_timeout. UNAVAILABLE, DEADLINE_EXCEEDED, or the status
  // the stream ended with.
  static absl::StatusOr<std::shared_ptr<Connection>> Open(
      const ConnectOptions& options);

  // Cancels the session stream and joins its thread.
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  uint64_t session_id() const { return session_id_; }
  const std::string& target() const { return target_; }
  const std::string& shm_dir() const { return shm_dir_; }
  absl::Duration rpc_timeout() const { return rpc_timeout_; }
  v1::Allocator::Stub& stub() { return *stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

  // Returns OK while the session stream is open, else UNAVAILABLE naming the
  // session and the status it ended with.
  absl::Status session_status() const;

  // Runs one unary RPC `(stub.*method)(ctx, request, response)` with the
  // rpc_timeout deadline, after checking the session. Returns the daemon's
  // status converted by FromGrpc.
  template <typename Request, typename Response>
  absl::Status Call(grpc::Status (v1::Allocator::Stub::*method)(
                        grpc::ClientContext*, const Request&, Response*),
                    std::string_view name, const Request& request,
                    Response* response) {
    absl::Status session = session_status();
    if (!session.ok()) return session;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + rpc_timeout_));
    return FromGrpc((stub_.get()->*method)(&context, request, response), name,
                    target_);
  }

 private:
  Connection() = default;
  // The session thread: reads the stream until it ends.
  void RunSession();
  // Returns true once the first event came or the stream ended.
  bool Settled() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return first_event_ || ended_;
  }

  std::string target_;
  std::string client_name_;
  std::string shm_dir_;  // this process's view; set before Open returns
  absl::Duration rpc_timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Allocator::Stub> stub_;
  uint64_t session_id_ = 0;  // set before Open returns, then constant

  grpc::ClientContext session_context_;  // TryCancel ends the stream
  std::thread session_thread_;
  mutable absl::Mutex mu_;
  bool first_event_ ABSL_GUARDED_BY(mu_) = false;
  v1::SessionEvent first_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status end_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmalloc::client::internal

#endif  // CLIENT_CONNECTION_H_
