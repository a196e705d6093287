// sessions_bench: what concurrent sessions cost the daemon (issue 11, scale
// figures).
//
// Starts the real daemon (tests/integration/daemon_process.h) with
// max_sessions raised to --sessions, then opens --sessions OpenSession
// streams at once over --channels channels (asynchronous client API: one
// completion queue, no thread per stream), each with one owned allocation in
// a POOL region so the session costs what a real one does (session record,
// owner record, stream). Reads the daemon's VmRSS / RssAnon / RssShmem from
// /proc before and after, and prints the cost per session; then the time of
// GetStats("") with every session open, the time to close them all (the
// daemon reclaims each session's allocation) and checks that the region is
// empty again.
//
// Usage: sessions_bench [--sessions=10000] [--channels=16]
//                       [--tmpdir=/dev/shm]
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/proc_status.h"
#include "tests/integration/daemon_process.h"

ABSL_FLAG(uint32_t, sessions, 10000, "concurrent sessions to open");
ABSL_FLAG(uint32_t, channels, 16, "channels (connections) they share");
ABSL_FLAG(std::string, tmpdir, "/dev/shm",
          "where the daemon's socket and shm_dir go (TEST_TMPDIR)");

namespace {

namespace v1 = ::shmalloc::v1;
using shmalloc::bench::StatusKb;
using shmalloc::testing::DaemonOptions;
using shmalloc::testing::DaemonProcess;

// The daemon, so that Die does not leave it running (exit runs no
// destructor of main's locals).
pid_t g_daemon_pid = -1;

[[noreturn]] void Die(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "sessions_bench: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  if (g_daemon_pid > 0) kill(g_daemon_pid, SIGKILL);
  std::exit(1);
}

// One open stream; its tag on the completion queue is its index.
struct Stream {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientAsyncReader<v1::SessionEvent>> reader;
  v1::SessionEvent event;
  grpc::Status status;
};

// Waits for `n` completions on `cq`; any failed one is fatal.
void Drain(grpc::CompletionQueue& cq, uint32_t n, const char* what) {
  for (uint32_t i = 0; i < n; ++i) {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) Die(what, absl::InternalError("queue shut down"));
    if (!ok) Die(what, absl::UnavailableError("stream ended early"));
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const uint32_t n = absl::GetFlag(FLAGS_sessions);
  const uint32_t channels =
      std::max<uint32_t>(1, absl::GetFlag(FLAGS_channels));
  setenv("TEST_TMPDIR", absl::GetFlag(FLAGS_tmpdir).c_str(), 1);

  DaemonProcess daemon(DaemonOptions{
      .config_text = absl::StrCat("limits { max_sessions: ", n + 16,
                                  " max_sessions_per_peer: ", n + 16, " }\n"),
      .extra_flags = {}});
  if (absl::Status s = daemon.Start(); !s.ok()) Die("start", s);
  g_daemon_pid = daemon.pid();
  v1::CreateRegionRequest create;
  create.set_name("pool");
  create.set_strategy(v1::STRATEGY_POOL);
  create.set_block_size(64);
  create.set_size_bytes(
      std::max<uint64_t>(uint64_t{1} << 20, uint64_t{n} * 256));
  if (absl::Status s =
          shmalloc::testing::CreateRegion(daemon.stub(), create).status();
      !s.ok()) {
    Die("CreateRegion", s);
  }
  const uint64_t rss0 = StatusKb(daemon.pid(), "VmRSS");
  const uint64_t anon0 = StatusKb(daemon.pid(), "RssAnon");
  const uint64_t shmem0 = StatusKb(daemon.pid(), "RssShmem");

  std::vector<std::unique_ptr<v1::Allocator::Stub>> stubs;
  for (uint32_t c = 0; c < channels; ++c) {
    stubs.push_back(v1::Allocator::NewStub(daemon.NewChannel()));
  }
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Stream>> streams(n);
  const absl::Time open_start = absl::Now();
  // Start every stream, then read every first event: all n are open at once.
  for (uint32_t i = 0; i < n; ++i) {
    streams[i] = std::make_unique<Stream>();
    v1::OpenSessionRequest request;
    request.set_client_name(absl::StrCat("sessions_bench-", i));
    streams[i]->reader = stubs[i % channels]->AsyncOpenSession(
        &streams[i]->context, request, &cq, streams[i].get());
  }
  Drain(cq, n, "OpenSession start");
  for (auto& s : streams) s->reader->Read(&s->event, s.get());
  Drain(cq, n, "first SessionEvent");
  const absl::Duration open_time = absl::Now() - open_start;
  const uint64_t rss_open = StatusKb(daemon.pid(), "VmRSS");

  // One owned allocation per session, so each costs an owner record too.
  for (uint32_t i = 0; i < n; ++i) {
    v1::AllocateRequest request;
    request.set_session_id(streams[i]->event.session_id());
    request.set_session_token(streams[i]->event.session_token());
    request.set_region("pool");
    request.set_size_bytes(64);
    if (absl::Status s =
            shmalloc::testing::Allocate(*stubs[i % channels], request).status();
        !s.ok()) {
      Die("Allocate", s);
    }
  }

  const absl::Time stats_start = absl::Now();
  absl::StatusOr<v1::Stats> stats = shmalloc::testing::GetStats(daemon.stub());
  const absl::Duration stats_time = absl::Now() - stats_start;
  if (!stats.ok()) Die("GetStats", stats.status());
  const uint64_t rss1 = StatusKb(daemon.pid(), "VmRSS");
  const uint64_t anon1 = StatusKb(daemon.pid(), "RssAnon");
  const uint64_t shmem1 = StatusKb(daemon.pid(), "RssShmem");
  const auto per = [n](uint64_t before, uint64_t after) {
    return after > before ? static_cast<double>(after - before) * 1024 / n
                          : 0.0;
  };
  std::printf(
      "sessions_bench: %u sessions open at once over %u channels (opened in "
      "%s), each with one 64 B allocation; stats report %llu sessions\n",
      n, channels, absl::FormatDuration(open_time).c_str(),
      static_cast<unsigned long long>(stats->sessions()));
  std::printf(
      "daemon VmRSS %llu -> %llu kB: %.0f B per session (anon %.0f B, shmem "
      "%.0f B; %.0f B of it with the streams open, before any Allocate); "
      "GetStats(\"\") with them open: %.2f ms\n",
      static_cast<unsigned long long>(rss0),
      static_cast<unsigned long long>(rss1), per(rss0, rss1), per(anon0, anon1),
      per(shmem0, shmem1), per(rss0, rss_open),
      absl::ToDoubleMilliseconds(stats_time));
  std::fflush(stdout);

  // Close every stream: the daemon reclaims each session's allocation.
  const absl::Time close_start = absl::Now();
  for (auto& s : streams) s->context.TryCancel();
  for (auto& s : streams) s->reader->Finish(&s->status, s.get());
  for (uint32_t i = 0; i < n; ++i) {
    void* tag = nullptr;
    bool ok = false;
    if (!cq.Next(&tag, &ok)) Die("Finish", absl::InternalError("queue"));
  }
  shmalloc::testing::PollResult empty = shmalloc::testing::PollStats(
      daemon.stub(),
      [](const v1::Stats& s) {
        return s.regions_size() == 1 && s.regions(0).live_allocations() == 0;
      },
      absl::Seconds(60), absl::Milliseconds(20));
  if (!empty.done) Die("reclaim", absl::DeadlineExceededError("not empty"));
  std::printf("closed all %u sessions; region empty again after %s\n", n,
              absl::FormatDuration(absl::Now() - close_start).c_str());
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
  if (absl::Status s = daemon.Stop(); !s.ok()) Die("stop", s);
  return 0;
}
