#include "server/rpc_metrics.h"

namespace shmalloc::server {

std::string StatusCodeName(absl::StatusCode code) {
  // Abseil spells codes as gRPC does: "NOT_FOUND", "RESOURCE_EXHAUSTED", ...
  return absl::StatusCodeToString(code);
}

void RpcMetrics::Record(std::string_view method, absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  auto it = methods_.find(method);
  if (it == methods_.end()) {
    it = methods_.emplace(std::string(method), Counts{}).first;
  }
  ++it->second.calls;
  if (code != absl::StatusCode::kOk) ++it->second.errors[StatusCodeName(code)];
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

}  // namespace shmalloc::server
