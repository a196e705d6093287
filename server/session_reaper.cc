#include "server/session_reaper.h"

#include <optional>

#include "absl/time/clock.h"
#include "common/log.h"

namespace shmalloc::server {

void SessionReaper::Start() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] { Run(); });
}

void SessionReaper::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    wake_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

void SessionReaper::Run() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    const std::optional<absl::Time> next = core_.sessions.NextOrphanDeadline();
    if (!next.has_value()) {
      // Nothing left to reclaim in this run: wait for Stop only.
      while (!stop_) wake_.Wait(&mu_);
      break;
    }
    if (absl::Now() < *next) {
      wake_.WaitWithDeadline(&mu_, *next);
      continue;
    }
    const uint32_t grace_ms = core_.sessions.grace_ms();
    for (uint64_t id : core_.sessions.TakeExpired(absl::Now())) {
      const std::string name = core_.sessions.ClientName(id);
      const uint64_t freed = ReclaimSession(core_, id);
      SHMALLOC_LOG(Info) << "session " << id << " (" << name
                         << ") not resumed within " << grace_ms << " ms; "
                         << freed << " allocations reclaimed";
    }
  }
}

}  // namespace shmalloc::server
