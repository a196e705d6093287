// Who is on the other end of a connection, and how many sessions each peer
// holds (limits.max_sessions_per_peer, review item L3).
//
// gRPC 1.51 does not expose SO_PEERCRED: on a Unix socket it accepts itself,
// ServerContext::peer() is "unix:" for every client. So the daemon accepts
// on its Unix socket itself (server/unix_listener.h), reads the kernel's
// credentials of each connection (SO_PEERCRED: pid, uid, gid; the client
// cannot lie about them) and hands the descriptor to gRPC with
// AddInsecureChannelFromFd, whose peer string is then "fd:N". This table
// maps N to the credentials recorded at accept: a descriptor number is
// reused only after gRPC closed the connection that had it, and no call
// arrives on a closed connection, so a lookup always finds the credentials
// of the connection the call came on.
//
// A peer is a process (its pid as the kernel reports it). A process in a PID
// namespace the daemon cannot see (a client in another container) is
// reported as pid 0: it is then counted by its uid and the pid it declares.
// TCP connections
// (--listen) carry no credentials: their sessions count against the pid the
// client declares, prefixed "tcp", which a hostile client can vary; the TCP
// listener is for trusted networks only (docs/design/trust.md).
//
// Thread-safety: thread-safe.
#ifndef SERVER_PEER_TABLE_H_
#define SERVER_PEER_TABLE_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace shmalloc::server {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

class PeerTable {
 public:
  // Records the credentials of the connection on descriptor `fd`.
  void Record(int fd, const PeerCredentials& credentials);

  // The credentials of the connection gRPC names `grpc_peer` ("fd:N"), or
  // nullopt (TCP, or an unknown descriptor).
  std::optional<PeerCredentials> Lookup(std::string_view grpc_peer) const;

  // The key sessions are counted under: "pid P (uid U)" from the kernel's
  // credentials; the uid and the declared pid D when the kernel reports pid
  // 0 (another PID namespace); else "tcp pid D".
  std::string Key(std::string_view grpc_peer, int32_t declared_pid) const;

  // Counts one more session for `key`; RESOURCE_EXHAUSTED (nothing
  // counted) when it already holds `limit`.
  [[nodiscard]] absl::Status AcquireSession(const std::string& key,
                                            uint32_t limit);
  // Counts one session of `key` less.
  void ReleaseSession(const std::string& key);
  // Sessions counted for `key` (tests).
  uint32_t sessions(const std::string& key) const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<int, PeerCredentials> by_fd_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> sessions_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmalloc::server

#endif  // SERVER_PEER_TABLE_H_
