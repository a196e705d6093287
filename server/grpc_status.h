// The daemon's one adapter from absl::Status to grpc::Status. Nothing else in
// server/ constructs a grpc::Status. The two code spaces have the same
// numbering (both follow google.rpc.Code), so the code maps one to one and
// the message is kept.
//
// Thread-safety: pure function, thread-safe.
#ifndef SERVER_GRPC_STATUS_H_
#define SERVER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace shmalloc::server {

// Returns the grpc::Status with the same code and message as `status`.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace shmalloc::server

#endif  // SERVER_GRPC_STATUS_H_
