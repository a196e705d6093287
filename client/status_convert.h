// The one place the client turns a grpc::Status into an absl::Status.
// Thread-safe (pure functions).
#ifndef CLIENT_STATUS_CONVERT_H_
#define CLIENT_STATUS_CONVERT_H_

#include <grpcpp/support/status.h>

#include <string_view>

#include "absl/status/status.h"

namespace shmalloc::client::internal {

// Returns `status` as an absl::Status with the same code (the numeric values
// are identical by design) and the daemon's message, prefixed with `method`
// ("Allocate: region 'x' is full"). A transport failure (UNAVAILABLE) also
// names `target`, so the user sees which daemon could not be reached.
absl::Status FromGrpc(const grpc::Status& status, std::string_view method,
                      std::string_view target);

}  // namespace shmalloc::client::internal

#endif  // CLIENT_STATUS_CONVERT_H_
