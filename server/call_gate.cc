#include "server/call_gate.h"

#include "common/log.h"

namespace shmalloc::server {

bool CallGate::Enter() {
  absl::MutexLock lock(&mu_);
  if (closed_) return false;
  ++in_flight_;
  return true;
}

void CallGate::Exit() {
  absl::MutexLock lock(&mu_);
  SHMALLOC_CHECK(in_flight_ > 0) << "CallGate::Exit without Enter";
  --in_flight_;
}

void CallGate::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

bool CallGate::WaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return in_flight_ == 0;
  };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

}  // namespace shmalloc::server
