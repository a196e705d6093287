// For the CLI and the C API only (not installed): the gRPC pieces behind a
// Client, for RPCs the public API does not wrap (WatchStats, raw requests).
// Calls made through the stub should use Connection::Call, so they get the
// deadline, the session check and the one grpc -> absl status conversion.
// Thread-safety: as internal::Connection (thread-safe).
#ifndef CLIENT_RPC_H_
#define CLIENT_RPC_H_

#include "client/connection.h"
#include "shmalloc/client.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"

namespace shmalloc::client {

// Returns the connection (channel, stub, session) `client` wraps.
inline internal::Connection& ConnectionOf(const Client& client) {
  return *client.connection();
}
// Returns the generated stub of `client`'s channel.
inline v1::Allocator::Stub& StubOf(const Client& client) {
  return client.connection()->stub();
}

}  // namespace shmalloc::client

#endif  // CLIENT_RPC_H_
