// shmalloc stats [REGION] [--json] and shmalloc watch [REGION].
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/stats_format.h"
#include "client/connection.h"

namespace shmalloc::cli {
namespace {

constexpr char kClearScreen[] = "\x1b[H\x1b[2J";
constexpr char kHideCursor[] = "\x1b[?25l";
constexpr char kShowCursor[] = "\x1b[?25h";
constexpr size_t kSparkSamples = 30;  // sparkline width in `watch`

std::string RegionArg(const std::vector<std::string>& positional) {
  return positional.empty() ? std::string() : positional[0];
}

int BarWidth() {
  winsize ws{};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    return std::clamp(static_cast<int>(ws.ws_col) - 60, 10, 60);
  }
  return 40;
}

// Waits for SIGINT or SIGTERM (blocked in every thread) and cancels the
// watch stream when one comes; stops when asked.
class SignalWaiter {
 public:
  explicit SignalWaiter(const sigset_t& signals, grpc::ClientContext& context)
      : thread_([this, signals, &context] {
          const timespec poll = {0, 100 * 1000 * 1000};
          while (!stop_.load(std::memory_order_acquire)) {
            if (sigtimedwait(&signals, nullptr, &poll) > 0) {
              interrupted_.store(true, std::memory_order_release);
              context.TryCancel();
              return;
            }
          }
        }) {}
  ~SignalWaiter() {
    stop_.store(true, std::memory_order_release);
    thread_.join();
  }
  bool interrupted() const {
    return interrupted_.load(std::memory_order_acquire);
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<bool> interrupted_{false};
  std::thread thread_;  // last: starts after the flags exist
};

}  // namespace

absl::Status RunStats(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global) {
  if (positional.size() > 1) {
    return UsageError("usage: shmalloc stats [REGION] [--json]");
  }
  absl::StatusOr<bool> json = args.GetBool("json", false);
  if (!json.ok()) return UsageError(json.status().message());
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  v1::GetStatsRequest request;
  request.set_region(RegionArg(positional));
  v1::Stats stats;
  absl::Status s = (*c)->connection()->Call(&v1::Allocator::Stub::GetStats,
                                            "GetStats", request, &stats);
  if (!s.ok()) return s;
  if (*json) {
    std::cout << StatsToJson(stats);
  } else if (positional.empty()) {
    std::cout << FormatStats(stats);
  } else {
    std::cout << FormatRegionDetail(stats);
  }
  return absl::OkStatus();
}

absl::Status RunWatch(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global) {
  if (positional.size() > 1) {
    return UsageError(
        "usage: shmalloc watch [REGION] [--interval_ms=N] [--count=N] "
        "[--json] [--clear]");
  }
  absl::StatusOr<uint64_t> interval = args.GetUint("interval_ms", 1000);
  absl::StatusOr<uint64_t> count = args.GetUint("count", 0);
  absl::StatusOr<bool> json = args.GetBool("json", false);
  const bool tty = isatty(STDOUT_FILENO) == 1;
  absl::StatusOr<bool> clear = args.GetBool("clear", tty && !json.value_or(0));
  for (const absl::Status& s :
       {interval.status(), count.status(), json.status(), clear.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*interval < 10 || *interval > 3600 * 1000) {
    return UsageError("--interval_ms must be in [10, 3600000]");
  }

  // Ctrl-C and SIGTERM end the watch cleanly (exit 0, cursor restored):
  // block them before gRPC starts its threads, so only the waiter sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto c = Connect(global);
  if (!c.ok()) return c.status();
  client::internal::Connection& connection = *(*c)->connection();
  v1::WatchStatsRequest request;
  request.set_region(RegionArg(positional));
  request.set_interval_ms(static_cast<uint32_t>(*interval));
  grpc::ClientContext context;  // no deadline: runs until cancelled
  SignalWaiter waiter(signals, context);
  auto reader = connection.stub().WatchStats(&context, request);

  const int bar_width = BarWidth();
  if (*clear) std::cout << kHideCursor;
  uint64_t frames = 0;
  v1::Stats stats;
  // Used bytes per region over the last kSparkSamples frames, for the
  // sparkline; a region gone from a frame loses its history.
  std::map<std::string, std::vector<uint64_t>> history;
  while (reader->Read(&stats)) {
    std::map<std::string, std::vector<uint64_t>> next;
    for (const v1::RegionStats& r : stats.regions()) {
      std::vector<uint64_t>& h = next[r.name()];
      if (auto it = history.find(r.name()); it != history.end()) {
        h = std::move(it->second);
      }
      h.push_back(r.used_bytes());
      if (h.size() > kSparkSamples) h.erase(h.begin());
    }
    history = std::move(next);
    if (*json) {
      std::cout << StatsToJson(stats, /*pretty=*/false);
    } else {
      if (*clear) {
        std::cout << kClearScreen;
      } else if (frames > 0) {
        std::cout << "\n";
      }
      std::cout << FormatWatchFrame(stats, connection.target(),
                                    static_cast<int>(*interval), bar_width,
                                    history);
    }
    std::cout << std::flush;
    if (*count != 0 && ++frames >= *count) {
      context.TryCancel();
      break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (*clear) std::cout << kShowCursor << std::flush;
  if (waiter.interrupted() || (*count != 0 && frames >= *count)) {
    return absl::OkStatus();
  }
  if (status.ok()) {
    return absl::UnavailableError("WatchStats: the daemon ended the stream");
  }
  return client::internal::FromGrpc(status, "WatchStats", connection.target());
}

}  // namespace shmalloc::cli
