#include "server/watch_reactor.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

namespace shmalloc::server {
namespace {

// Recent Stats snapshots, one per (daemon Core, region), shared by every
// watcher of that region. Keyed by the Core's address and its random
// incarnation too, so a Core made at a freed one's address (tests run
// several in one process) never sees the other's snapshots. Thread-safe.
class SharedStats {
 public:
  static SharedStats& Get() {
    static SharedStats* const instance = new SharedStats();
    return *instance;
  }

  // Returns a snapshot of `region` ("" = all) no older than `max_age`,
  // collecting a new one (outside this cache's lock) when there is none.
  absl::StatusOr<std::shared_ptr<const v1::Stats>> Snapshot(
      const Core& core, const std::string& region, absl::Duration max_age) {
    const Key key{&core, core.incarnation, region};
    const absl::Time now = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      auto it = entries_.find(key);
      if (it != entries_.end() && now - it->second.at <= max_age) {
        return it->second.stats;
      }
    }
    // Two watchers may both collect here at a tick; the later one wins the
    // slot. Never under mu_: CollectStats takes the region locks.
    absl::StatusOr<v1::Stats> stats = CollectStats(core, region);
    if (!stats.ok()) {
      return stats.status();
    }
    auto shared = std::make_shared<const v1::Stats>(*std::move(stats));
    absl::MutexLock lock(&mu_);
    if (entries_.size() > 256) {
      Prune(now);
    }
    entries_[key] = Entry{now, shared};
    return shared;
  }

 private:
  using Key = std::tuple<const Core*, uint64_t, std::string>;
  struct Entry {
    absl::Time at;
    std::shared_ptr<const v1::Stats> stats;
  };
  // Drops snapshots nobody refreshed for a second (deleted regions, ended
  // daemons).
  void Prune(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = entries_.begin(); it != entries_.end();) {
      it = now - it->second.at > absl::Seconds(1) ? entries_.erase(it)
                                                  : std::next(it);
    }
  }

  absl::Mutex mu_;
  std::map<Key, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

WatchReactor::WatchReactor(Core& core, const v1::WatchStatsRequest& request)
    : core_(core), region_(request.region()) {
  const uint32_t ms = request.interval_ms() == 0 ? kDefaultWatchIntervalMs
                                                 : request.interval_ms();
  interval_ = absl::Milliseconds(ms);
  registered_ = core_.streams.Add(this);
  absl::MutexLock lock(&mu_);
  started_ = true;
  absl::Status status;
  if (!registered_ || stopping_) {
    status = absl::UnavailableError("shmallocd is shutting down");
  } else if (ms < kMinWatchIntervalMs) {
    status = absl::InvalidArgumentError(
        absl::StrCat("interval_ms must be 0 (= ", kDefaultWatchIntervalMs,
                     ") or >= ", kMinWatchIntervalMs));
  } else if (core_.watchers.fetch_add(1, std::memory_order_relaxed) >=
             core_.limits.max_watchers) {
    core_.watchers.fetch_sub(1, std::memory_order_relaxed);
    status = absl::ResourceExhaustedError(absl::StrCat(
        core_.limits.max_watchers,
        " WatchStats streams are open (limits.max_watchers); poll GetStats "
        "or retry later"));
  } else {
    counted_ = true;
  }
  core_.metrics.Record("WatchStats", status.code());
  if (!status.ok()) {
    final_status_ = status;
    stopping_ = true;
    MaybeFinish();
    return;
  }
  WriteNext();
}

void WatchReactor::WriteNext() {
  // The first write of a stream is always fresh; later ones may share a
  // snapshot another watcher of the region took within half an interval.
  const absl::Duration max_age =
      started_writing_
          ? std::min(interval_ / 2, absl::Milliseconds(kMaxSharedAgeMs))
          : absl::ZeroDuration();
  started_writing_ = true;
  absl::StatusOr<std::shared_ptr<const v1::Stats>> stats =
      SharedStats::Get().Snapshot(core_, region_, max_age);
  if (!stats.ok()) {
    RequestStop(stats.status());
    MaybeFinish();
    return;
  }
  stats_ = *std::move(stats);
  write_in_flight_ = true;
  StartWrite(stats_.get());
}

void WatchReactor::MaybeFinish() {
  if (finished_ || write_in_flight_ || alarm_pending_) return;
  finished_ = true;
  Finish(ToGrpcStatus(final_status_));
}

grpc::Alarm* WatchReactor::RequestStop(const absl::Status& status) {
  if (!stopping_) {
    stopping_ = true;
    final_status_ = status;
  }
  return alarm_pending_ ? alarm_.get() : nullptr;
}

void WatchReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) RequestStop(absl::CancelledError("the client went away"));
  if (stopping_) {
    MaybeFinish();
    return;
  }
  alarm_pending_ = true;
  alarm_ = std::make_unique<grpc::Alarm>();
  alarm_->Set(
      std::chrono::system_clock::now() + absl::ToChronoMilliseconds(interval_),
      [this](bool fired) { OnAlarm(fired); });
}

void WatchReactor::OnAlarm(bool fired) {
  absl::MutexLock lock(&mu_);
  alarm_pending_ = false;
  if (!fired) RequestStop(absl::CancelledError("watch cancelled"));
  if (stopping_) {
    MaybeFinish();
    return;
  }
  WriteNext();
}

void WatchReactor::OnCancel() {
  grpc::Alarm* pending;
  {
    absl::MutexLock lock(&mu_);
    pending = RequestStop(absl::CancelledError("watch cancelled"));
    MaybeFinish();
  }
  // gRPC keeps the reactor (and so the alarm) alive until OnCancel returns.
  if (pending != nullptr) pending->Cancel();
}

void WatchReactor::Stop() {
  grpc::Alarm* pending;
  {
    absl::MutexLock lock(&mu_);
    if (!started_) {
      stopping_ = true;  // The constructor will finish.
      return;
    }
    pending = RequestStop(absl::OkStatus());
    MaybeFinish();
  }
  // The registry's lock keeps OnDone (and so deletion) waiting until here.
  if (pending != nullptr) pending->Cancel();
}

void WatchReactor::OnDone() {
  // relaxed: a count; the stream registry orders shutdown.
  if (counted_) core_.watchers.fetch_sub(1, std::memory_order_relaxed);
  if (registered_) core_.streams.Remove(this);
  delete this;
}

}  // namespace shmalloc::server
