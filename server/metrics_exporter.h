// The daemon's figures in the Prometheus text format, served over HTTP at
// /metrics (prometheus-cpp's pull Exposer, civetweb underneath) when
// shmallocd runs with --metrics_listen=HOST:PORT.
//
// Nothing is kept between scrapes: each scrape calls CollectStats (which
// holds each region's lock only to copy its counters) and
// RpcMetrics::Latencies, and turns them into metric families. Names follow
// the Prometheus conventions (shmalloc_ prefix, base units, _bytes,
// _seconds, _ratio, counters end in _total):
//
//   per region {region, strategy}
//     shmalloc_region_{capacity,used,free,peak_used,largest_free,requested,
//       detached}_bytes                                       gauge
//     shmalloc_region_{live,detached}_allocations             gauge
//     shmalloc_region_failed_allocations_total                counter
//     shmalloc_region_{fragmentation,internal_fragmentation}_ratio  gauge
//   per session and region {region, session_id, client}: the top
//   `top_sessions` sessions of each region by used bytes, the rest summed
//   in session_id="other" (client=""), so cardinality is bounded by
//   regions x (top_sessions + 1):
//     shmalloc_session_used_bytes, shmalloc_session_live_allocations  gauge
//   daemon
//     shmalloc_sessions_open, shmalloc_sessions_orphaned, shmalloc_regions,
//       shmalloc_uptime_seconds                               gauge
//     shmalloc_sessions_{opened,resumed,reclaimed}_total      counter
//     shmalloc_rpcs_total {method, code}                      counter
//     shmalloc_rpc_duration_seconds {method, code}            histogram
//       (unary RPCs; streams are counted, not timed)
//
// Thread-safety: StatsCollector::Collect and ToMetricFamilies are
// thread-safe; MetricsServer is not (start it, then destroy it).
#ifndef SERVER_METRICS_EXPORTER_H_
#define SERVER_METRICS_EXPORTER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/core.h"
#include "server/rpc_metrics.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace shmalloc::server {

// Sessions named per region; the rest are summed as session_id="other".
inline constexpr size_t kTopSessions = 10;

// Returns the metric families described above for `stats` and `latencies`.
// Pure: the same input gives the same families, in the same order.
std::vector<prometheus::MetricFamily> ToMetricFamilies(
    const v1::Stats& stats, const std::vector<RpcMetrics::Latency>& latencies,
    size_t top_sessions = kTopSessions);

// Scrape-time collection from a running daemon's Core.
class StatsCollector : public prometheus::Collectable {
 public:
  // REQUIRES: `core` outlives every Collect call.
  explicit StatsCollector(const Core& core) : core_(core) {}

  // Returns ToMetricFamilies of the current CollectStats(core, "") and
  // RPC latencies. Thread-safe.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Core& core_;
};

// The HTTP endpoint: GET /metrics answers the StatsCollector's families.
class MetricsServer {
 public:
  // Starts serving on `address` (HOST:PORT, as NormalizeListenAddress
  // returns it). UNAVAILABLE, naming the address, when it cannot listen
  // there (port taken, host not local, bad host). REQUIRES: `core` outlives
  // the returned server.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const Core& core, const std::string& address);

  // Stops serving; waits for scrapes in progress. Takes up to 2 s: civetweb
  // polls its listening socket in 2 s quanta before it sees the stop flag.
  // Not thread-safe.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // "HOST:PORT" listened on, with the port actually bound.
  const std::string& endpoint() const { return endpoint_; }

 private:
  MetricsServer() = default;

  std::shared_ptr<StatsCollector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // destroyed first
  std::string endpoint_;
};

}  // namespace shmalloc::server

#endif  // SERVER_METRICS_EXPORTER_H_
