// Per-RPC call and error counts for Stats.rpcs: calls per method, and per
// method the failures by status code name ("NOT_FOUND", ...). Calls recorded
// with a latency (the unary RPCs) also feed a latency histogram per (method,
// code) for the Prometheus exporter (server/metrics_exporter.h).
//
// Invariants: for every method, sum(errors) <= calls; for every (method,
// code), histogram count <= the calls of that method ending with that code.
// Thread-safety: thread-safe.
#ifndef SERVER_RPC_METRICS_H_
#define SERVER_RPC_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

class RpcMetrics {
 public:
  // Counts one call of `method` ending with `code` (OK counts no error).
  // Thread-safe.
  void Record(std::string_view method, absl::StatusCode code);

  // Counts the call as Record(method, code) does and adds `latency` to the
  // (method, code) latency histogram. Thread-safe.
  void Record(std::string_view method, absl::StatusCode code,
              absl::Duration latency);

  // Appends one RpcCount per method seen, ordered by method. Thread-safe.
  void Fill(v1::Stats& stats) const;

  // Upper bounds, in seconds, of the latency histogram buckets (ascending;
  // a last bucket above them all is implied: +Inf).
  static const std::vector<double>& LatencyBoundsSeconds();

  // One (method, code) latency histogram. Invariant: counts.size() ==
  // LatencyBoundsSeconds().size() + 1 and sum(counts) == count.
  struct Latency {
    std::string method;
    std::string code;              // "OK", "NOT_FOUND", ...
    std::vector<uint64_t> counts;  // per bucket, not cumulative; last = +Inf
    uint64_t count = 0;
    double sum_seconds = 0;
  };

  // Returns every latency histogram recorded, ordered by method then code.
  // Thread-safe.
  std::vector<Latency> Latencies() const;

 private:
  struct Histogram {
    std::vector<uint64_t> counts;  // sized on first use
    uint64_t count = 0;
    double sum_seconds = 0;
  };
  struct Counts {
    uint64_t calls = 0;
    std::map<std::string, uint64_t> errors;      // code name -> count
    std::map<std::string, Histogram> latencies;  // code name -> histogram
  };
  Counts& CountsOf(std::string_view method) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Counts, std::less<>> methods_ ABSL_GUARDED_BY(mu_);
};

// Returns the canonical gRPC name of `code`: "OK", "NOT_FOUND", ...
std::string StatusCodeName(absl::StatusCode code);

}  // namespace shmalloc::server

#endif  // SERVER_RPC_METRICS_H_
