#include "server/watch_reactor.h"

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/container/flat_hash_set.h"
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

// One per (daemon Core, region, interval): a thread that, every interval on
// a fixed schedule, takes the region's Stats once and hands it to each
// stream's Tick. Streams join after their first write and leave in OnDone.
// Thread-safe.
class WatchTicker {
 public:
  WatchTicker(const Core& core, std::string region, absl::Duration interval)
      : core_(core), region_(std::move(region)), interval_(interval) {
    thread_ = std::thread([this] { Run(); });
  }
  WatchTicker(const WatchTicker&) = delete;
  WatchTicker& operator=(const WatchTicker&) = delete;
  ~WatchTicker() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  // Returns the ticker of (core, region, interval) with `stream` added,
  // starting one when there is none.
  static std::shared_ptr<WatchTicker> Join(const Core& core,
                                           const std::string& region,
                                           absl::Duration interval,
                                           WatchReactor* stream) {
    Table& table = GetTable();
    absl::MutexLock table_lock(&table.mu);
    const Key key{&core, core.incarnation, region,
                  absl::ToInt64Milliseconds(interval)};
    std::shared_ptr<WatchTicker>& ticker = table.tickers[key];
    if (ticker == nullptr) {
      ticker = std::make_shared<WatchTicker>(core, region, interval);
    }
    absl::MutexLock lock(&ticker->mu_);
    ticker->streams_.insert(stream);
    return ticker;
  }

  // Removes `stream`: once this returns no tick touches it. The last
  // stream to leave stops the ticker and joins its thread (outside the
  // locks).
  static void Leave(std::shared_ptr<WatchTicker> ticker, WatchReactor* stream) {
    Table& table = GetTable();
    {
      absl::MutexLock table_lock(&table.mu);
      absl::MutexLock lock(&ticker->mu_);
      ticker->streams_.erase(stream);
      if (!ticker->streams_.empty()) return;
      ticker->stop_ = true;
      const Key key{&ticker->core_, ticker->core_.incarnation, ticker->region_,
                    absl::ToInt64Milliseconds(ticker->interval_)};
      auto it = table.tickers.find(key);
      if (it != table.tickers.end() && it->second == ticker) {
        table.tickers.erase(it);
      }
    }
    // Ours is the last reference (the table dropped its own; the thread
    // holds none): the destructor joins the thread, which sees stop_.
    ticker.reset();
  }

 private:
  using Key = std::tuple<const Core*, uint64_t, std::string, int64_t>;
  struct Table {
    absl::Mutex mu;
    std::map<Key, std::shared_ptr<WatchTicker>> tickers ABSL_GUARDED_BY(mu);
  };
  static Table& GetTable() {
    static Table* const table = new Table();
    return *table;
  }

  void Run() {
    absl::Time next = absl::Now() + interval_;
    mu_.Lock();
    while (true) {
      mu_.AwaitWithDeadline(absl::Condition(&stop_), next);
      if (stop_) break;
      mu_.Unlock();
      // Never under mu_: the snapshot takes the region locks.
      absl::StatusOr<std::shared_ptr<const v1::Stats>> stats =
          SharedStats::Get().Snapshot(
              core_, region_,
              std::min(interval_ / 2, absl::Milliseconds(kMaxSharedAgeMs)));
      mu_.Lock();
      if (stop_) break;
      for (WatchReactor* stream : streams_) {
        if (stats.ok()) {
          stream->Tick(*stats);
        } else {
          stream->TickFailed(stats.status());
        }
      }
      // A fixed schedule: ticks missed while this one ran are skipped.
      next += interval_;
      const absl::Time now = absl::Now();
      while (next <= now) next += interval_;
    }
    mu_.Unlock();
  }

  const Core& core_;
  const std::string region_;
  const absl::Duration interval_;
  absl::Mutex mu_;
  absl::flat_hash_set<WatchReactor*> streams_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

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
  // Reserved for the first write: ticks skip the stream until it is done.
  write_in_flight_ = true;
  mu_.Unlock();
  ticker_ = WatchTicker::Join(core_, region_, interval_, this);
  mu_.Lock();
  write_in_flight_ = false;
  if (stopping_) {
    MaybeFinish();
    return;
  }
  // The first write of a stream is always fresh.
  absl::StatusOr<std::shared_ptr<const v1::Stats>> stats =
      SharedStats::Get().Snapshot(core_, region_, absl::ZeroDuration());
  if (!stats.ok()) {
    RequestStop(stats.status());
    MaybeFinish();
    return;
  }
  stats_ = *std::move(stats);
  write_in_flight_ = true;
  StartWrite(stats_.get());
}

void WatchReactor::Tick(const std::shared_ptr<const v1::Stats>& stats) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || write_in_flight_) return;
  stats_ = stats;
  write_in_flight_ = true;
  StartWrite(stats_.get());
}

void WatchReactor::TickFailed(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  RequestStop(status);
  MaybeFinish();
}

void WatchReactor::MaybeFinish() {
  if (finished_ || write_in_flight_) return;
  finished_ = true;
  Finish(ToGrpcStatus(final_status_));
}

void WatchReactor::RequestStop(const absl::Status& status) {
  if (!stopping_) {
    stopping_ = true;
    final_status_ = status;
  }
}

void WatchReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  write_in_flight_ = false;
  if (!ok) RequestStop(absl::CancelledError("the client went away"));
  if (stopping_) MaybeFinish();
  // Otherwise the ticker's next tick writes.
}

void WatchReactor::OnCancel() {
  absl::MutexLock lock(&mu_);
  RequestStop(absl::CancelledError("watch cancelled"));
  MaybeFinish();
}

void WatchReactor::Stop() {
  absl::MutexLock lock(&mu_);
  if (!started_) {
    stopping_ = true;  // The constructor will finish.
    return;
  }
  RequestStop(absl::OkStatus());
  MaybeFinish();
}

void WatchReactor::OnDone() {
  // After this no tick touches the reactor.
  if (ticker_ != nullptr) WatchTicker::Leave(std::move(ticker_), this);
  // relaxed: a count; the stream registry orders shutdown.
  if (counted_) core_.watchers.fetch_sub(1, std::memory_order_relaxed);
  if (registered_) core_.streams.Remove(this);
  delete this;
}

}  // namespace shmalloc::server
