// The WatchStats stream: a callback-API write reactor that writes the Stats
// of one region ("" = all) every interval_ms until the client cancels or the
// daemon stops. Between writes it holds no thread: a grpc::Alarm with a
// callback wakes it.
//
// States: writing -> waiting on the alarm -> writing ... -> finished -> done.
// Finish is called exactly once, never while a write or the alarm is
// pending, so no callback can run after OnDone deletes the reactor.
//
// Watchers share snapshots: a tick writes the region's Stats taken by any
// watcher of the same daemon and region within the last min(interval / 2,
// 5 ms), so N watchers at 10 ms take the region lock (and the session table
// lock) ~200 times a second, not 100 * N.
//
// Thread-safety: gRPC may run OnWriteDone, OnCancel, the alarm callback and
// Stop concurrently; they serialise on the reactor's mutex. The reactor
// deletes itself in OnDone.
#ifndef SERVER_WATCH_REACTOR_H_
#define SERVER_WATCH_REACTOR_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/support/server_callback.h"
#include "server/core.h"
#include "server/stream_registry.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

inline constexpr uint32_t kDefaultWatchIntervalMs = 1000;
inline constexpr uint32_t kMinWatchIntervalMs = 10;
// The oldest snapshot a watcher's tick may share with other watchers.
inline constexpr int64_t kMaxSharedAgeMs = 5;

class WatchReactor final : public grpc::ServerWriteReactor<v1::Stats>,
                           public StoppableStream {
 public:
  // Starts the stream: writes the first Stats at once, or finishes with
  // INVALID_ARGUMENT (interval_ms in 1..9, bad region name), NOT_FOUND
  // (unknown region), RESOURCE_EXHAUSTED (limits.max_watchers streams are
  // already open) or UNAVAILABLE (shutting down).
  WatchReactor(Core& core, const v1::WatchStatsRequest& request);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void Stop() override;

 private:
  void OnAlarm(bool ok);
  // Collects and writes the next Stats, or finishes with the error.
  void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes now unless a write or the alarm is pending (then their
  // completion finishes).
  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stops the stream with `status`; returns the alarm to cancel (outside the
  // lock), or null when none is pending.
  grpc::Alarm* RequestStop(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Core& core_;
  const std::string region_;
  absl::Duration interval_;
  bool registered_ = false;
  bool counted_ = false;  // holds one of core_.watchers
  absl::Mutex mu_;
  // A fresh alarm per tick; never replaced once stopping_ is set.
  std::unique_ptr<grpc::Alarm> alarm_ ABSL_GUARDED_BY(mu_);
  // The snapshot being written (shared with the other watchers of the
  // region that took it; see SharedStats in watch_reactor.cc).
  std::shared_ptr<const v1::Stats> stats_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool started_writing_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool alarm_pending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmalloc::server

#endif  // SERVER_WATCH_REACTOR_H_
