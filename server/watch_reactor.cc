#include "server/watch_reactor.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/grpc_status.h"

namespace shmalloc::server {

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
  absl::StatusOr<v1::Stats> stats = CollectStats(core_, region_);
  if (!stats.ok()) {
    RequestStop(stats.status());
    MaybeFinish();
    return;
  }
  stats_ = *std::move(stats);
  write_in_flight_ = true;
  StartWrite(&stats_);
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
