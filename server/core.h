// The daemon's state shared by the gRPC service and its stream reactors:
// regions, sessions, RPC counters, open streams, the gate of unary calls
// and the start time.
//
// Thread-safety: every member is thread-safe.
#ifndef SERVER_CORE_H_
#define SERVER_CORE_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/call_gate.h"
#include "server/config.h"
#include "server/peer_table.h"
#include "server/region_registry.h"
#include "server/rpc_metrics.h"
#include "server/session_table.h"
#include "server/stream_registry.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

struct Core {
  Core(std::string shm_dir, ServerLimits limits)
      : regions(std::move(shm_dir), limits),
        sessions(limits.max_sessions, limits.session_grace_ms),
        limits(limits),
        started(absl::Now()),
        incarnation(NewIncarnation()) {}

  RegionRegistry regions;
  SessionTable sessions;  // attached to <shm_dir>/shmalloc.sessions at start
  RpcMetrics metrics;
  StreamRegistry streams;
  CallGate unary_calls;  // closed when shutdown begins
  const ServerLimits limits;
  // WatchStats streams counted against limits.max_watchers.
  std::atomic<uint32_t> watchers{0};
  // Unix-socket peers' credentials and their sessions (max_sessions_per_peer).
  PeerTable peers;
  const absl::Time started;
  const uint64_t incarnation;  // random per daemon start; never 0

 private:
  static uint64_t NewIncarnation();
};

// Ends session `id`: marks it CLOSING (persisted, so it can gain nothing
// more and a crash finishes the job at the next start), frees every
// allocation it owns in every region, then forgets it. Returns how many
// were freed (0 when it did not exist or was already closing). Thread-safe.
uint64_t EndSession(Core& core, uint64_t id);

// Finishes closing session `id`, already CLOSING (SessionTable::Attach and
// TakeExpired hand those out): frees what it owns, then forgets it. Returns
// how many allocations were freed. Thread-safe.
uint64_t ReclaimSession(Core& core, uint64_t id);

// Returns the figures of region `region` ("" = every region) and of the
// daemon. NOT_FOUND for an unknown region, INVALID_ARGUMENT for a malformed
// name. Thread-safe.
[[nodiscard]] absl::StatusOr<v1::Stats> CollectStats(const Core& core,
                                                     std::string_view region);

}  // namespace shmalloc::server

#endif  // SERVER_CORE_H_
