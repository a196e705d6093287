// Conversions between the shmalloc.v1 messages and the client's plain
// structs (shmalloc/types.h), so no public header needs generated code.
// Thread-safe (pure functions).
#ifndef CLIENT_PROTO_CONVERT_H_
#define CLIENT_PROTO_CONVERT_H_

#include <vector>

#include "shmalloc/types.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::client::internal {

RegionInfo FromProto(const v1::Region& region);
RegionStats FromProto(const v1::RegionStats& stats);
DaemonStats FromProto(const v1::Stats& stats);
v1::CreateRegionRequest ToProto(const CreateRegionOptions& options);
// The extents of an Allocate answer, in either form (packed offsets + one
// size, or one Extent message each; see AllocateRequest.packed).
std::vector<Extent> ExtentsOf(const v1::AllocateResponse& response);

}  // namespace shmalloc::client::internal

#endif  // CLIENT_PROTO_CONVERT_H_
