// Per-RPC call and error counts for Stats.rpcs: calls per method, and per
// method the failures by status code name ("NOT_FOUND", ...).
//
// Invariant: for every method, sum(errors) <= calls.
// Thread-safety: thread-safe.
#ifndef SERVER_RPC_METRICS_H_
#define SERVER_RPC_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

class RpcMetrics {
 public:
  // Counts one call of `method` ending with `code` (OK counts no error).
  // Thread-safe.
  void Record(std::string_view method, absl::StatusCode code);

  // Appends one RpcCount per method seen, ordered by method. Thread-safe.
  void Fill(v1::Stats& stats) const;

 private:
  struct Counts {
    uint64_t calls = 0;
    std::map<std::string, uint64_t> errors;  // code name -> count
  };
  mutable absl::Mutex mu_;
  std::map<std::string, Counts, std::less<>> methods_ ABSL_GUARDED_BY(mu_);
};

// Returns the canonical gRPC name of `code`: "OK", "NOT_FOUND", ...
std::string StatusCodeName(absl::StatusCode code);

}  // namespace shmalloc::server

#endif  // SERVER_RPC_METRICS_H_
