// The WatchStats stream: a callback-API write reactor that writes the Stats
// of one region ("" = all) every interval_ms until the client cancels or the
// daemon stops.
//
// The first write is a fresh snapshot taken in the constructor. After it the
// stream joins the ticker of its (daemon, region, interval): one thread per
// ticker that wakes on a fixed schedule (start + k * interval, never drifting
// with write completion), takes the region's Stats once and starts the write
// on every stream of the ticker whose previous write has completed; a stream
// still writing skips that tick (at most one write in flight per stream). So
// 100 streams at 10 ms cost 100 wake-ups a second, not 10,000, and one
// snapshot per tick. Snapshots are also shared across tickers of the same
// region within min(interval / 2, 5 ms) (SharedStats in watch_reactor.cc).
//
// Lifetime: a stream leaves its ticker in OnDone, before it deletes itself;
// leaving takes the ticker's mutex, which a tick holds while it touches its
// streams, so no tick runs on a deleted reactor. The last stream to leave
// stops and joins the ticker's thread, so once every stream is done (daemon
// shutdown waits for that) no ticker runs.
//
// Finish is called exactly once, never while a write is pending.
//
// Thread-safety: gRPC may run OnWriteDone, OnCancel, a tick and Stop
// concurrently; they serialise on the reactor's mutex. Lock order: the
// tickers' table, a ticker, a reactor. The reactor deletes itself in OnDone.
#ifndef SERVER_WATCH_REACTOR_H_
#define SERVER_WATCH_REACTOR_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/server_callback.h"
#include "server/core.h"
#include "server/stream_registry.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

inline constexpr uint32_t kDefaultWatchIntervalMs = 1000;
inline constexpr uint32_t kMinWatchIntervalMs = 10;
// The oldest snapshot a watcher's tick may share with other watchers.
inline constexpr int64_t kMaxSharedAgeMs = 5;

class WatchTicker;

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

  // Called by the ticker (with its mutex held) on each tick: starts writing
  // `stats` unless a write is in flight or the stream is stopping.
  void Tick(const std::shared_ptr<const v1::Stats>& stats);
  // Called by the ticker when the tick's snapshot failed: finishes with
  // `status` (e.g. NOT_FOUND once the region is deleted).
  void TickFailed(const absl::Status& status);

 private:
  // Finishes now unless a write is pending (then its completion finishes).
  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records that the stream stops with `status` (the first one wins).
  void RequestStop(const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Core& core_;
  const std::string region_;
  absl::Duration interval_;
  bool registered_ = false;
  bool counted_ = false;  // holds one of core_.watchers
  // The ticker this stream joined after its first write (null if it never
  // did); set in the constructor, read in OnDone.
  std::shared_ptr<WatchTicker> ticker_;
  absl::Mutex mu_;
  // The snapshot being written (shared with the other streams of the
  // ticker).
  std::shared_ptr<const v1::Stats> stats_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace shmalloc::server

#endif  // SERVER_WATCH_REACTOR_H_
