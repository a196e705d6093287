// restart_bench: how fast a kill -9'd shmallocd serves again with a big
// region, and what its live allocations cost in memory (issue 8).
//
// Starts the real daemon (the integration fixture, tests/integration/
// daemon_process.h) with a POOL region (block 64, max_live_allocations
// 1048576) holding --live allocations made over the RPC in batches of the
// region's max_batch, owned by one session. Then, --runs times: SIGKILL the
// daemon, fork/exec a new one on the same files and measure
//   ready:    exec -> the readiness byte on --ready_fd (region re-attached,
//             undo log rolled back, invariants and owner records checked)
//   allocate: exec -> the first successful Allocate in the resumed session
//             (new channel, OpenSession{resume_token}, Allocate of 1 block)
// plus the time of one GetStats with every allocation live, and the new
// daemon's CPU time (user + system, /proc/<pid>/stat) at
// readiness, which a loaded machine inflates less than wall time,
// and read VmRSS/RssAnon/RssFile of the new daemon from /proc/<pid>/status
// after that Allocate. Prints every run and the medians.
//
// Usage: restart_bench [--live=1000000] [--runs=5] [--tmpdir=/dev/shm]
#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/proc_status.h"
#include "tests/integration/daemon_process.h"

ABSL_FLAG(uint64_t, live, 1000000, "live allocations in the POOL region");
ABSL_FLAG(int, runs, 5, "kill -9 / restart runs");
ABSL_FLAG(std::string, tmpdir, "/dev/shm",
          "where the daemon's socket and shm_dir go (TEST_TMPDIR)");

namespace {

namespace v1 = ::shmalloc::v1;
using shmalloc::bench::StatusKb;
using shmalloc::testing::DaemonOptions;
using shmalloc::testing::DaemonProcess;
using shmalloc::testing::Session;

[[noreturn]] void Die(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "restart_bench: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  std::exit(1);
}

// Returns the CPU time (user + system) `pid` has used, in ms: less
// sensitive than wall time to a loaded machine.
double CpuMs(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  // Fields after the ")" that ends comm: state is field 3, utime 14, stime 15.
  std::vector<std::string> f =
      absl::StrSplit(stat.substr(stat.rfind(')') + 2), ' ');
  uint64_t utime = 0, stime = 0;
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &utime) ||
      !absl::SimpleAtoi(f[12], &stime)) {
    return 0;
  }
  return static_cast<double>(utime + stime) * 1000.0 /
         static_cast<double>(sysconf(_SC_CLK_TCK));
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2]
                           : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Rss {
  uint64_t vm = 0, anon = 0, file = 0, shmem = 0;  // kB
};

Rss ReadRss(pid_t pid) {
  return {StatusKb(pid, "VmRSS"), StatusKb(pid, "RssAnon"),
          StatusKb(pid, "RssFile"), StatusKb(pid, "RssShmem")};
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const uint64_t live = absl::GetFlag(FLAGS_live);
  const int runs = absl::GetFlag(FLAGS_runs);
  setenv("TEST_TMPDIR", absl::GetFlag(FLAGS_tmpdir).c_str(), 1);

  DaemonProcess daemon(
      DaemonOptions{.config_text = "limits { session_grace_ms: 600000 }\n",
                    .extra_flags = {}});
  if (absl::Status s = daemon.Start(); !s.ok()) Die("start", s);
  v1::CreateRegionRequest create;
  create.set_name("pool");
  create.set_strategy(v1::STRATEGY_POOL);
  create.set_block_size(64);
  create.set_size_bytes(uint64_t{64} << 20);  // 1048576 blocks
  create.set_max_live_allocations(1048576);
  create.set_max_batch(65536);  // the fill's batches (a 25 MB undo log)
  if (absl::Status s =
          shmalloc::testing::CreateRegion(daemon.stub(), create).status();
      !s.ok()) {
    Die("CreateRegion", s);
  }
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Open(daemon.stub(), "restart_bench");
  if (!session.ok()) Die("OpenSession", session.status());
  const std::string token = (*session)->token();

  // Fill in batches of max_batch (min(65536, max_live)).
  constexpr uint32_t kBatch = 65536;
  const absl::Time fill_start = absl::Now();
  for (uint64_t done = 0; done < live;) {
    const auto n =
        static_cast<uint32_t>(std::min<uint64_t>(kBatch, live - done));
    absl::StatusOr<v1::AllocateResponse> r =
        shmalloc::testing::Allocate(daemon.stub(), **session, "pool", 64, n);
    if (!r.ok()) Die("Allocate batch", r.status());
    done += n;
  }
  const absl::Duration fill = absl::Now() - fill_start;
  const Rss before = ReadRss(daemon.pid());
  std::printf(
      "restart_bench: %llu live allocations (POOL, 64 B, batches of %u) in "
      "%s; daemon VmRSS %llu kB before the first kill\n",
      static_cast<unsigned long long>(live), kBatch,
      absl::FormatDuration(fill).c_str(),
      static_cast<unsigned long long>(before.vm));

  std::vector<double> ready_ms, alloc_ms, rss_per, cpu_ms, stats_ms;
  for (int run = 1; run <= runs; ++run) {
    if (absl::Status s = daemon.Kill(); !s.ok()) Die("kill", s);
    session->reset();  // its stream died with the daemon
    const absl::Time exec = absl::Now();
    if (absl::Status s = daemon.Start(); !s.ok()) Die("restart", s);
    const absl::Time ready = absl::Now();
    const double cpu_at_ready = CpuMs(daemon.pid());
    // A client reconnecting: a new channel, resume, one Allocate.
    std::unique_ptr<v1::Allocator::Stub> stub =
        v1::Allocator::NewStub(daemon.NewChannel());
    session = Session::Resume(*stub, token);
    if (!session.ok()) Die("resume", session.status());
    absl::StatusOr<v1::AllocateResponse> one =
        shmalloc::testing::Allocate(*stub, **session, "pool", 64, 1);
    const absl::Time allocated = absl::Now();
    if (!one.ok()) Die("first Allocate", one.status());
    // Keep the count at --live.
    if (absl::Status s =
            shmalloc::testing::Free(*stub, **session, "pool",
                                    shmalloc::testing::Offsets(*one))
                .status();
        !s.ok()) {
      Die("Free", s);
    }
    const absl::Time stats_start = absl::Now();
    absl::StatusOr<v1::RegionStats> stats =
        shmalloc::testing::GetRegionStats(*stub, "pool");
    stats_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - stats_start));
    if (!stats.ok()) Die("GetStats", stats.status());
    const Rss rss = ReadRss(daemon.pid());
    ready_ms.push_back(absl::ToDoubleMilliseconds(ready - exec));
    cpu_ms.push_back(cpu_at_ready);
    alloc_ms.push_back(absl::ToDoubleMilliseconds(allocated - exec));
    rss_per.push_back(static_cast<double>(rss.vm) * 1024 /
                      static_cast<double>(stats->live_allocations()));
    std::printf(
        "run %d: ready %.1f ms (daemon CPU %.0f ms), first Allocate %.1f ms "
        "after exec; GetStats %.2f ms; "
        "live_allocations %llu; VmRSS %llu kB (anon %llu, file %llu, shmem "
        "%llu) = %.1f B per live allocation\n",
        run, ready_ms.back(), cpu_ms.back(), alloc_ms.back(), stats_ms.back(),
        static_cast<unsigned long long>(stats->live_allocations()),
        static_cast<unsigned long long>(rss.vm),
        static_cast<unsigned long long>(rss.anon),
        static_cast<unsigned long long>(rss.file),
        static_cast<unsigned long long>(rss.shmem), rss_per.back());
    std::fflush(stdout);
  }
  std::printf(
      "median of %d: ready %.1f ms (daemon CPU %.0f ms), first Allocate "
      "%.1f ms, GetStats %.2f ms, %.1f B VmRSS per live allocation\n",
      runs, Median(ready_ms), Median(cpu_ms), Median(alloc_ms),
      Median(stats_ms), Median(rss_per));
  session->reset();
  if (absl::Status s = daemon.Stop(); !s.ok()) Die("stop", s);
  return 0;
}
