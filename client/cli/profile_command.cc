// shmalloc profile [REGION] --duration=60s [--interval=1s] --out=FILE
// [--json]: samples GetStats every interval for the duration (a progress
// line on stderr, rewritten per sample), then lists the regions and the
// live allocations once and writes the report (profile_report.h): one
// self-contained HTML file, or with --json the raw series (to --out, or
// stdout without it). SIGINT/SIGTERM end the sampling early; the report is
// still written.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cli/commands.h"
#include "client/cli/profile_report.h"
#include "client/cli/units.h"
#include "client/connection.h"

namespace shmalloc::cli {
namespace {

constexpr uint32_t kPageSize = 1000;

// Waits until `until` or a signal in `signals`; returns true on a signal.
bool WaitOrSignal(const sigset_t& signals, absl::Time until) {
  for (;;) {
    const absl::Duration left = until - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    const timespec ts = absl::ToTimespec(left);
    const int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig > 0) return true;
    if (errno != EINTR && errno != EAGAIN) return false;
  }
}

std::string Progress(const ProfileData& data, int64_t total) {
  const v1::Stats& s = data.samples.back().stats;
  uint64_t used = 0, live = 0;
  for (const v1::RegionStats& r : s.regions()) {
    used += r.used_bytes();
    live += r.live_allocations();
  }
  return absl::StrFormat(
      "\rprofile: sample %d/%d  %.1fs  %s used  %d live ", data.samples.size(),
      total, data.samples.back().t_ms / 1000.0, FormatBytes(used), live);
}

}  // namespace

absl::Status RunProfile(const std::vector<std::string>& positional,
                        const Args& args, const GlobalOptions& global) {
  constexpr char kUsage[] =
      "usage: shmalloc profile [REGION] --duration=60s [--interval=1s] "
      "--out=FILE [--json]";
  if (positional.size() > 1) return UsageError(kUsage);
  absl::StatusOr<absl::Duration> duration =
      args.GetDuration("duration", absl::Seconds(60));
  absl::StatusOr<absl::Duration> interval =
      args.GetDuration("interval", absl::Seconds(1));
  absl::StatusOr<bool> json = args.GetBool("json", false);
  for (const absl::Status& s :
       {duration.status(), interval.status(), json.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*interval < absl::Milliseconds(10) || *interval > absl::Hours(1)) {
    return UsageError("--interval must be in [10ms, 1h]");
  }
  if (*duration < absl::ZeroDuration() || *duration > absl::Hours(24 * 7)) {
    return UsageError("--duration must be in [0, 7 days]");
  }
  const std::optional<std::string> out = args.Get("out");
  if (!out.has_value() && !*json) {
    return UsageError(
        absl::StrCat("--out=FILE is required for the HTML "
                     "report\n",
                     kUsage));
  }

  // Ctrl-C ends the sampling, not the program: block the signals before
  // gRPC starts its threads, and wait for them between samples.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto c = Connect(global);
  if (!c.ok()) return c.status();
  client::internal::Connection& connection = *(*c)->connection();
  ProfileData data;
  data.target = connection.target();
  data.region = positional.empty() ? "" : positional[0];
  data.interval_ms = absl::ToInt64Milliseconds(*interval);
  data.duration_ms = absl::ToInt64Milliseconds(*duration);
  const absl::Time start = absl::Now();
  data.started =
      absl::FormatTime(absl::RFC3339_sec, start, absl::UTCTimeZone());
  const int64_t total = data.duration_ms / data.interval_ms + 1;
  const bool tty = isatty(STDERR_FILENO) == 1;
  v1::GetStatsRequest request;
  request.set_region(data.region);
  for (int64_t i = 0; i < total; ++i) {
    if (i > 0 && WaitOrSignal(signals, start + i * *interval)) {
      data.interrupted = true;
      break;
    }
    ProfileSample sample;
    absl::Status s = connection.Call(&v1::Allocator::Stub::GetStats, "GetStats",
                                     request, &sample.stats);
    if (!s.ok()) {
      if (!data.samples.empty()) std::cerr << "\n";
      return s;
    }
    sample.t_ms = absl::ToInt64Milliseconds(absl::Now() - start);
    data.samples.push_back(std::move(sample));
    // Not a terminal (a log, a test): one line per sample instead of \r.
    std::cerr << Progress(data, total) << (tty ? "" : "\n") << std::flush;
  }
  if (tty) std::cerr << "\n";

  v1::ListRegionsResponse regions;
  if (absl::Status s =
          connection.Call(&v1::Allocator::Stub::ListRegions, "ListRegions",
                          v1::ListRegionsRequest(), &regions);
      !s.ok()) {
    return s;
  }
  for (const v1::Region& r : regions.regions()) {
    if (data.region.empty() || r.name() == data.region) {
      data.regions.push_back(r);
    }
  }
  v1::ListAllocationsRequest list;
  list.set_region(data.region);
  list.set_page_size(kPageSize);
  do {
    v1::ListAllocationsResponse page;
    absl::Status s = connection.Call(&v1::Allocator::Stub::ListAllocations,
                                     "ListAllocations", list, &page);
    if (!s.ok()) return s;
    for (const v1::Allocation& a : page.allocations()) {
      data.allocations.push_back(a);
    }
    list.set_page_token(page.next_page_token());
  } while (!list.page_token().empty());

  const std::string report =
      *json ? RenderProfileJson(data) : RenderProfileHtml(data);
  if (!out.has_value() || *out == "-") {
    std::cout << report << std::flush;
    return absl::OkStatus();
  }
  std::ofstream file(*out, std::ios::binary | std::ios::trunc);
  file << report;
  file.close();
  if (!file) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot write ", *out, ": ",
        std::error_code(errno, std::generic_category()).message()));
  }
  std::cout << "wrote " << *out << " (" << data.samples.size() << " samples, "
            << data.allocations.size() << " live allocations)\n";
  return absl::OkStatus();
}

}  // namespace shmalloc::cli
