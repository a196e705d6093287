#include "server/rpc_metrics.h"

#include <algorithm>

namespace shmalloc::server {

std::string StatusCodeName(absl::StatusCode code) {
  // Abseil spells codes as gRPC does: "NOT_FOUND", "RESOURCE_EXHAUSTED", ...
  return absl::StatusCodeToString(code);
}

const std::vector<double>& RpcMetrics::LatencyBoundsSeconds() {
  // 1-2.5-5 steps from 10 us (a unary call over the Unix socket takes tens
  // of microseconds) to 10 s (a batch of 65536 extents, or a stalled disk).
  static const std::vector<double>* const kBounds = new std::vector<double>{
      0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
      0.0025,  0.005,    0.01,    0.025,  0.05,    0.1,    0.25,
      0.5,     1,        2.5,     5,      10};
  return *kBounds;
}

RpcMetrics::Counts& RpcMetrics::CountsOf(std::string_view method) {
  auto it = methods_.find(method);
  if (it == methods_.end()) {
    it = methods_.emplace(std::string(method), Counts{}).first;
  }
  return it->second;
}

void RpcMetrics::Record(std::string_view method, absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  Counts& counts = CountsOf(method);
  ++counts.calls;
  if (code != absl::StatusCode::kOk) ++counts.errors[StatusCodeName(code)];
}

void RpcMetrics::Record(std::string_view method, absl::StatusCode code,
                        absl::Duration latency) {
  const std::vector<double>& bounds = LatencyBoundsSeconds();
  const double seconds = absl::ToDoubleSeconds(latency);
  // Prometheus buckets are "le": the first bound >= the value.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin());
  const std::string name = StatusCodeName(code);
  absl::MutexLock lock(&mu_);
  Counts& counts = CountsOf(method);
  ++counts.calls;
  if (code != absl::StatusCode::kOk) ++counts.errors[name];
  Histogram& histogram = counts.latencies[name];
  if (histogram.counts.empty()) histogram.counts.resize(bounds.size() + 1);
  ++histogram.counts[bucket];
  ++histogram.count;
  histogram.sum_seconds += seconds;
}

void RpcMetrics::Fill(v1::Stats& stats) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [method, counts] : methods_) {
    v1::RpcCount* rpc = stats.add_rpcs();
    rpc->set_method(method);
    rpc->set_calls(counts.calls);
    for (const auto& [code, n] : counts.errors)
      (*rpc->mutable_errors())[code] = n;
  }
}

std::vector<RpcMetrics::Latency> RpcMetrics::Latencies() const {
  std::vector<Latency> out;
  absl::MutexLock lock(&mu_);
  for (const auto& [method, counts] : methods_) {
    for (const auto& [code, histogram] : counts.latencies) {
      out.push_back(Latency{method, code, histogram.counts, histogram.count,
                            histogram.sum_seconds});
    }
  }
  return out;
}

}  // namespace shmalloc::server
