// The daemon's Unix-socket listener: binds the socket file with its mode set
// before listen() (so no client can connect through a wider mode, review item
// L4), accepts each connection itself, records the kernel's credentials of
// the peer (SO_PEERCRED) in a PeerTable, and hands the descriptor to gRPC
// (grpc::AddInsecureChannelFromFd; its peer string is then "fd:N"). See
// peer_table.h for why gRPC's own Unix listener is not used.
//
// Thread-safety: Start and Stop from one thread; the accept loop runs on a
// thread of its own.
#ifndef SERVER_UNIX_LISTENER_H_
#define SERVER_UNIX_LISTENER_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "grpcpp/server.h"
#include "server/peer_table.h"

namespace shmalloc::server {

class UnixListener {
 public:
  // Binds and listens on `path` (made ready by PrepareSocketPath) with
  // permission bits `mode`. INVALID_ARGUMENT for a path too long for a Unix
  // socket address; the errno's code otherwise.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UnixListener>> Bind(
      const std::string& path, mode_t mode);

  ~UnixListener();
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Starts accepting: every connection's credentials go to `peers`, its
  // descriptor to `server` (started, outliving Stop). Both must outlive
  // Stop.
  void Start(grpc::Server* server, PeerTable* peers);

  // Stops accepting (connections already handed to gRPC stay); idempotent.
  void Stop();

 private:
  UnixListener(int listen_fd, int wake_read, int wake_write)
      : listen_fd_(listen_fd), wake_read_(wake_read), wake_write_(wake_write) {}
  void AcceptLoop(grpc::Server* server, PeerTable* peers);

  int listen_fd_;
  int wake_read_;
  int wake_write_;
  std::thread thread_;
};

}  // namespace shmalloc::server

#endif  // SERVER_UNIX_LISTENER_H_
