// rpc_load: end-to-end load on shmallocd over its Unix socket, side by side
// with a bare gRPC echo service on the same transport (the floor), in one run.
//
// For each thread count (--threads, default 1,2,4) and each phase of
// --seconds: unary Echo, Allocate+Free pairs (each op = one unary Allocate of
// one block, then one Free of it), Echo carrying --batch uint64 values, and
// batch Allocate (count = --batch) followed by a Free of all its offsets.
// Each client thread has its own channel (own connection). Reported per
// phase: calls/s (or values/s, offsets/s), latency p50/p99/p99.9 of each
// call, the client process's CPU time per call, and the server's own CPU
// time (utime+stime from /proc/PID/stat, 10 ms ticks) per call and per
// batched offset.
//
// Processes: the echo server is this binary re-exec'd with --echo_serve (a
// callback-API server, like the daemon); shmallocd is fork/exec'd by
// tests/integration/daemon_process (temp dir, --ready_fd handshake) with its
// shm_dir on tmpfs. Both are stopped with SIGTERM + waitpid at the end and
// their exit status is checked. --target uses an already running daemon
// instead (--daemon_pid to get its CPU time).
//
// --mode=library runs only the raw stub and client library pairs, --rounds
// times each, interleaved (raw, library, library, raw, ...), and prints the
// median p50 of each and their ratio (issue 11 item 3). --mode=watchers runs
// only the raw Allocate+Free pair, --rounds times without and with
// --watchers WatchStats streams (every --watch_interval_ms) open on the
// measured region, interleaved the same way; the streams are read by
// callback reactors on a channel (connection) of their own, and the daemon
// is started with limits.max_watchers raised to fit them (issue 11 item 6).
//
// Not thread-safe beyond what main() does: phases run one at a time.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/rpc/echo.grpc.pb.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"
#include "tests/integration/daemon_process.h"

ABSL_FLAG(std::vector<std::string>, threads,
          std::vector<std::string>({"1", "2", "4"}),
          "Client thread counts, one row group each");
ABSL_FLAG(double, seconds, 1.5, "Seconds per phase (4 phases per count)");
ABSL_FLAG(std::string, strategy, "pool", "Region strategy: pool|free_list");
ABSL_FLAG(uint32_t, batch, 1000, "Offsets per batch Allocate / echo values");
ABSL_FLAG(uint64_t, block_bytes, 64, "Bytes per allocation");
ABSL_FLAG(std::string, target, "",
          "Use this running daemon (e.g. unix:/run/x.sock) instead of "
          "starting one");
ABSL_FLAG(int, daemon_pid, 0, "With --target: the daemon's pid, for CPU");
ABSL_FLAG(bool, packed, true,
          "Batch Allocate asks for the packed answer (offsets + one size), "
          "as the client library does; false = one Extent message each");
ABSL_FLAG(bool, library, true,
          "Also run the client library's calls (Region::Allocate + RAII "
          "free, AllocateExtents + Free of a batch) next to the same calls "
          "made with the raw stub, and report the ratios");
ABSL_FLAG(std::string, mode, "all",
          "all: every phase; library: raw stub vs client library pairs only, "
          "--rounds interleaved rounds; watchers: the raw pair without and "
          "with --watchers WatchStats streams, --rounds interleaved rounds");
ABSL_FLAG(int, rounds, 5, "--mode=library|watchers: rounds of each side");
ABSL_FLAG(int, watchers, 100, "--mode=watchers: WatchStats streams");
ABSL_FLAG(uint32_t, watch_interval_ms, 10, "--mode=watchers: their interval");
ABSL_FLAG(std::string, echo_serve, "", "(internal) serve Echo on this UDS");
ABSL_FLAG(int, ready_fd, -1, "(internal) readiness fd for --echo_serve");

namespace {

namespace v1 = ::shmalloc::v1;
namespace ev1 = ::shmalloc::bench::v1;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------ echo server

class EchoService final : public ev1::Echo::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const ev1::EchoRequest* request,
                                 ev1::EchoResponse* response) override {
    response->set_value(request->value());
    *response->mutable_values() = request->values();
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// Serves Echo on `socket_path` until SIGTERM; returns the exit status.
int ServeEcho(const std::string& socket_path, int ready_fd) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before gRPC's threads
  EchoService service;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path,
                           grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return 1;
  if (ready_fd >= 0) {
    const char r = 'R';
    if (write(ready_fd, &r, 1) != 1) return 1;
    close(ready_fd);
  }
  int signal = 0;
  sigwait(&set, &signal);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

// The echo server child: this binary re-exec'd with --echo_serve.
class EchoProcess {
 public:
  explicit EchoProcess(std::string socket_path)
      : socket_path_(std::move(socket_path)) {}
  ~EchoProcess() { Stop(); }
  bool Start() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return false;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 3);  // dup2 clears CLOEXEC on the copy
      const std::string serve = "--echo_serve=" + socket_path_;
      execl("/proc/self/exe", "rpc_load_echo", serve.c_str(), "--ready_fd=3",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(fds[1]);
    char r = 0;
    const bool ok = read(fds[0], &r, 1) == 1 && r == 'R';
    close(fds[0]);
    return ok;
  }
  // SIGTERM + waitpid; returns true when it exited with status 0.
  bool Stop() {
    if (pid_ <= 0) return true;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  pid_t pid() const { return pid_; }
  std::string target() const { return "unix:" + socket_path_; }

 private:
  std::string socket_path_;
  pid_t pid_ = -1;
};

// ------------------------------------------------------------ measurement

// utime + stime of `pid` in ns (10 ms resolution); 0 when unknown.
double ProcessCpuNs(pid_t pid) {
  if (pid <= 0) return 0;
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));
  std::string f;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {  // field 3 is the state
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
  }
  return double(utime + stime) * 1e9 / double(sysconf(_SC_CLK_TCK));
}

double SelfCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e9 + double(ts.tv_nsec);
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target, int id) {
  grpc::ChannelArguments args;
  args.SetInt("shmalloc.bench.channel", id);  // no shared subchannel
  auto channel = grpc::CreateCustomChannel(
      target, grpc::InsecureChannelCredentials(), args);
  channel->WaitForConnected(std::chrono::system_clock::now() +
                            std::chrono::seconds(10));
  return channel;
}

struct PhaseResult {
  std::string name;
  int threads = 0;
  uint64_t calls = 0;
  uint64_t items = 0;  // offsets or values moved (batch phases)
  uint64_t errors = 0;
  double wall_s = 0;
  double client_cpu_ns = 0;
  double server_cpu_ns = 0;
  std::vector<double> latency_us;  // one per timed call (sorted)
  std::vector<double> free_us;     // Free calls of the pair/batch phases
  static double Pct(const std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    return v[std::min(v.size() - 1, size_t(p * double(v.size())))];
  }
  double Pct(double p) const { return Pct(latency_us, p); }
};

// One thread's loop body: performs one operation, appends the latency (µs)
// of its first call to `lat` and of a following Free to `lat_free`, and
// returns the items it moved; sets `ok` false on any error (counted).
using Op = std::function<uint64_t(std::vector<double>& lat,
                                  std::vector<double>& lat_free, bool& ok)>;

// Runs `make_op(thread)`'s op on `threads` threads for `seconds`.
PhaseResult RunPhase(const std::string& name, int threads, double seconds,
                     pid_t server_pid, const std::function<Op(int)>& make_op) {
  std::vector<Op> ops;
  for (int t = 0; t < threads; ++t) ops.push_back(make_op(t));
  PhaseResult r;
  r.name = name;
  r.threads = threads;
  std::vector<std::vector<double>> lat(threads), lat_free(threads);
  std::vector<uint64_t> calls(threads), items(threads), errors(threads);
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  Clock::time_point deadline;
  for (int t = 0; t < threads; ++t) {
    lat[t].reserve(1 << 16);
    ts.emplace_back([&, t] {
      ready.fetch_add(1, std::memory_order_acq_rel);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (Clock::now() < deadline) {
        bool ok = true;
        items[t] += ops[t](lat[t], lat_free[t], ok);
        ++calls[t];
        if (!ok) ++errors[t];
      }
    });
  }
  while (ready.load(std::memory_order_acquire) < threads) {
    std::this_thread::yield();
  }
  const double server0 = ProcessCpuNs(server_pid);
  const double self0 = SelfCpuNs();
  const Clock::time_point start = Clock::now();
  deadline = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(seconds));
  go.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();
  r.wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  r.client_cpu_ns = SelfCpuNs() - self0;
  r.server_cpu_ns = ProcessCpuNs(server_pid) - server0;
  for (int t = 0; t < threads; ++t) {
    r.calls += calls[t];
    r.items += items[t];
    r.errors += errors[t];
    r.latency_us.insert(r.latency_us.end(), lat[t].begin(), lat[t].end());
    r.free_us.insert(r.free_us.end(), lat_free[t].begin(), lat_free[t].end());
  }
  std::sort(r.latency_us.begin(), r.latency_us.end());
  std::sort(r.free_us.begin(), r.free_us.end());
  return r;
}

double UsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

void Deadline(grpc::ClientContext& c) {
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
}

void PrintRow(const PhaseResult& r, const char* unit) {
  const double per_s = double(r.items) / r.wall_s;
  const double calls = double(std::max<uint64_t>(r.calls, 1));
  const double items = double(std::max<uint64_t>(r.items, 1));
  std::printf(
      "%-22s %2d %10.0f %-7s %8.1f %8.1f %8.1f %9.1f %9.1f %10.1f %8" PRIu64
      "\n",
      r.name.c_str(), r.threads, per_s, unit, r.Pct(0.5), r.Pct(0.99),
      r.Pct(0.999), r.client_cpu_ns / calls / 1e3,
      r.server_cpu_ns / calls / 1e3, r.server_cpu_ns / items, r.errors);
}

// One WatchStats stream read by a callback reactor: counts the updates
// until Stop() cancels it.
class Watcher final : public grpc::ClientReadReactor<v1::Stats> {
 public:
  Watcher(v1::Allocator::Stub& stub, const std::string& region,
          uint32_t interval_ms) {
    request_.set_region(region);
    request_.set_interval_ms(interval_ms);
    stub.async()->WatchStats(&context_, &request_, this);
    StartRead(&stats_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    updates_.fetch_add(1, std::memory_order_relaxed);
    StartRead(&stats_);
  }
  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }
  uint64_t updates() const { return updates_.load(std::memory_order_relaxed); }
  // Cancels the stream and waits for its end; returns its status.
  grpc::Status Stop() {
    context_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
    return status_;
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

 private:
  grpc::ClientContext context_;
  v1::WatchStatsRequest request_;
  v1::Stats stats_;
  std::atomic<uint64_t> updates_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (const std::string s = absl::GetFlag(FLAGS_echo_serve); !s.empty()) {
    return ServeEcho(s, absl::GetFlag(FLAGS_ready_fd));
  }
  signal(SIGPIPE, SIG_IGN);
  const double seconds = absl::GetFlag(FLAGS_seconds);
  const uint32_t batch = absl::GetFlag(FLAGS_batch);
  const uint64_t block = absl::GetFlag(FLAGS_block_bytes);
  const std::string strategy = absl::GetFlag(FLAGS_strategy);
  const bool packed = absl::GetFlag(FLAGS_packed);
  const bool library = absl::GetFlag(FLAGS_library);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const int n_watchers = std::max(1, absl::GetFlag(FLAGS_watchers));
  const uint32_t watch_interval_ms = absl::GetFlag(FLAGS_watch_interval_ms);
  if (mode != "all" && mode != "library" && mode != "watchers") {
    std::fprintf(stderr, "bad --mode '%s' (all|library|watchers)\n",
                 mode.c_str());
    return 2;
  }
  uint64_t ab_errors = 0;
  std::vector<int> thread_counts;
  for (const std::string& t : absl::GetFlag(FLAGS_threads)) {
    int n = 0;
    if (!absl::SimpleAtoi(t, &n) || n < 1) {
      std::fprintf(stderr, "bad --threads entry '%s'\n", t.c_str());
      return 2;
    }
    thread_counts.push_back(n);
  }
  const int max_threads =
      *std::max_element(thread_counts.begin(), thread_counts.end());

  // Region files on tmpfs, as deployed (a disk-backed shm_dir adds page
  // dirty-tracking faults).
  std::string shm_dir = "/dev/shm/shmalloc-rpc-load-XXXXXX";
  if (mkdtemp(shm_dir.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::unique_ptr<shmalloc::testing::DaemonProcess> daemon;
  std::string target = absl::GetFlag(FLAGS_target);
  pid_t daemon_pid = absl::GetFlag(FLAGS_daemon_pid);
  if (target.empty()) {
    daemon = std::make_unique<shmalloc::testing::DaemonProcess>(
        shmalloc::testing::DaemonOptions{
            // Room for the watchers (the default limits.max_watchers is
            // 64), twice: the daemon counts a cancelled stream down in its
            // OnDone, after this side saw the end, so a round's streams may
            // start while the last round's are still counted.
            .config_text = mode == "watchers"
                               ? absl::StrCat("limits { max_watchers: ",
                                              2 * n_watchers + 16, " }\n")
                               : "",
            .extra_flags = {"--shm_dir=" + shm_dir}});
    if (absl::Status s = daemon->Start(); !s.ok()) {
      std::fprintf(stderr, "shmallocd: %s\n", s.ToString().c_str());
      return 1;
    }
    target = daemon->target();
    daemon_pid = daemon->pid();
  }
  char echo_dir[] = "/tmp/shmalloc-echo-XXXXXX";
  if (mkdtemp(echo_dir) == nullptr) return 1;
  EchoProcess echo(std::string(echo_dir) + "/echo.sock");
  if (!echo.Start()) {
    std::fprintf(stderr, "echo server did not start\n");
    return 1;
  }

  // Region and one session shared by all threads.
  auto admin = v1::Allocator::NewStub(NewChannel(target, -1));
  const std::string region = absl::StrCat("rpcload", getpid());
  v1::CreateRegionRequest create;
  create.set_name(region);
  create.set_strategy(strategy == "free_list" ? v1::STRATEGY_FREE_LIST
                                              : v1::STRATEGY_POOL);
  create.set_size_bytes(uint64_t(max_threads) * batch * block * 4 + (16 << 20));
  if (strategy != "free_list") create.set_block_size(block);
  if (auto r = shmalloc::testing::CreateRegion(*admin, create); !r.ok()) {
    std::fprintf(stderr, "CreateRegion: %s\n", r.status().ToString().c_str());
    return 1;
  }
  auto session = shmalloc::testing::Session::Open(*admin, "rpc_load");
  if (!session.ok()) return 1;
  const uint64_t session_id = (*session)->id();
  const std::string session_token = (*session)->token();

  std::printf(
      "rpc_load: target %s (pid %d), echo %s (pid %d), region %s %s "
      "%" PRIu64
      " B blocks, batch %u, %.1f s per phase, %ld cores, "
      "load %s\n",
      target.c_str(), int(daemon_pid), echo.target().c_str(), int(echo.pid()),
      region.c_str(), strategy.c_str(), block, batch, seconds,
      sysconf(_SC_NPROCESSORS_ONLN), [] {
        std::ifstream in("/proc/loadavg");
        static std::string l;
        std::getline(in, l);
        return l.c_str();
      }());
  std::printf("\n%-22s %2s %10s %-7s %8s %8s %8s %9s %9s %10s %8s\n", "phase",
              "th", "rate", "per s", "p50 us", "p99 us", "p99.9 us", "cli CPU",
              "srv CPU", "srv ns/item", "errors");
  std::printf("%-22s %2s %10s %-7s %8s %8s %8s %9s %9s %10s %8s\n", "", "", "",
              "", "", "", "", "us/call", "us/call", "", "");

  std::vector<PhaseResult> results;
  std::atomic<uint64_t> request_ids{1};
  auto echo_target = echo.target();
  // The watchers' own connection: their writes do not queue behind (or in
  // front of) the measured calls on one HTTP/2 connection.
  auto watch_stub = v1::Allocator::NewStub(NewChannel(target, 1 << 20));
  for (int threads : thread_counts) {
    std::vector<std::unique_ptr<ev1::Echo::Stub>> echo_stubs;
    std::vector<std::unique_ptr<v1::Allocator::Stub>> stubs;
    for (int t = 0; t < threads; ++t) {
      echo_stubs.push_back(ev1::Echo::NewStub(NewChannel(echo_target, t)));
      stubs.push_back(v1::Allocator::NewStub(NewChannel(target, t)));
    }
    // Warm each connection up (not timed).
    for (int t = 0; t < threads; ++t) {
      grpc::ClientContext c;
      ev1::EchoRequest q;
      ev1::EchoResponse a;
      echo_stubs[t]->Echo(&c, q, &a).ok();
    }
    // The fields every raw Allocate / Free of this session carries.
    auto alloc_request = [&] {
      v1::AllocateRequest q;
      q.set_session_id(session_id);
      q.set_session_token(session_token);
      q.set_region(region);
      q.set_size_bytes(block);
      return q;
    };
    auto free_request = [&] {
      v1::FreeRequest q;
      q.set_session_id(session_id);
      q.set_session_token(session_token);
      q.set_region(region);
      return q;
    };
    // The ops the phases and the interleaved modes share.
    auto raw_pair = [&](int t) -> Op {
      return [&, stub = stubs[t].get()](std::vector<double>& lat,
                                        std::vector<double>& lat_free,
                                        bool& ok) -> uint64_t {
        grpc::ClientContext c;
        Deadline(c);
        v1::AllocateRequest q = alloc_request();
        v1::AllocateResponse a;
        const auto t0 = Clock::now();
        ok = stub->Allocate(&c, q, &a).ok() && a.extents_size() == 1;
        lat.push_back(UsSince(t0));  // latency = the Allocate call alone
        if (!ok) return 1;
        grpc::ClientContext fc;
        Deadline(fc);
        v1::FreeRequest fq = free_request();
        fq.add_offsets(a.extents(0).offset());
        v1::FreeResponse fa;
        const auto f0 = Clock::now();
        ok = stub->Free(&fc, fq, &fa).ok();
        lat_free.push_back(UsSince(f0));
        return 1;
      };
    };
    // The same two calls with the raw stub, each with a request id as the
    // library sends them.
    auto raw_pair_id = [&](int t) -> Op {
      return [&, stub = stubs[t].get()](std::vector<double>& lat,
                                        std::vector<double>& lat_free,
                                        bool& ok) -> uint64_t {
        // Unique in the run: a reused Free id would be taken for a retry.
        const uint64_t n = request_ids.fetch_add(1);
        grpc::ClientContext c;
        Deadline(c);
        v1::AllocateRequest q = alloc_request();
        q.set_request_id(absl::StrCat("rpc-load-a", n));
        q.set_packed(true);
        v1::AllocateResponse a;
        const auto t0 = Clock::now();
        ok = stub->Allocate(&c, q, &a).ok() && a.offsets_size() == 1;
        lat.push_back(UsSince(t0));
        if (!ok) return 1;
        grpc::ClientContext fc;
        Deadline(fc);
        v1::FreeRequest fq = free_request();
        fq.add_offsets(a.offsets(0));
        fq.set_generation(a.generation());
        fq.set_request_id(absl::StrCat("rpc-load-f", n));
        v1::FreeResponse fa;
        const auto f0 = Clock::now();
        ok = stub->Free(&fc, fq, &fa).ok();
        lat_free.push_back(UsSince(f0));
        return 1;
      };
    };
    std::vector<std::unique_ptr<shmalloc::client::Client>> clients;
    std::vector<std::shared_ptr<shmalloc::client::Region>> regions;
    // One client (own connections, own session) per thread, each with the
    // region open.
    auto open_library = [&]() -> bool {
      for (int t = 0; t < threads; ++t) {
        shmalloc::client::ConnectOptions options;
        options.target = target;
        options.client_name = absl::StrCat("rpc_load-lib-", t);
        auto client = shmalloc::client::Client::Connect(options);
        if (!client.ok()) {
          std::fprintf(stderr, "Client::Connect: %s\n",
                       client.status().ToString().c_str());
          return false;
        }
        auto r = (*client)->OpenRegion(region);
        if (!r.ok()) {
          std::fprintf(stderr, "OpenRegion: %s\n",
                       r.status().ToString().c_str());
          return false;
        }
        clients.push_back(*std::move(client));
        regions.push_back(*std::move(r));
      }
      return true;
    };
    auto lib_pair = [&](int t) -> Op {
      return [&, r = regions[t].get()](std::vector<double>& lat,
                                       std::vector<double>& lat_free,
                                       bool& ok) -> uint64_t {
        const auto t0 = Clock::now();
        absl::StatusOr<shmalloc::client::Allocation> a = r->Allocate(block);
        lat.push_back(UsSince(t0));  // the Allocate alone
        ok = a.ok();
        if (!ok) return 1;
        const auto f0 = Clock::now();
        ok = a->Free().ok();  // what the destructor does
        lat_free.push_back(UsSince(f0));
        return 1;
      };
    };
    if (mode != "all") {
      if (mode == "library" && !open_library()) return 1;
      // Interleaved rounds, side A then B, then B then A, ...: a drift in
      // the machine's load hits both sides alike.
      const bool lib_mode = mode == "library";
      std::vector<double> a_p50, b_p50, a_free, b_free, ratios;
      double updates = 0, watched_s = 0;
      for (int round = 1; round <= rounds; ++round) {
        for (int k = 0; k < 2; ++k) {
          const bool side_b = (round % 2 == 1) == (k == 1);
          const std::string name =
              lib_mode
                  ? absl::StrCat(side_b ? "ab library r" : "ab raw r", round)
                  : absl::StrCat("ab ", side_b ? n_watchers : 0, " watchers r",
                                 round);
          PhaseResult r;
          if (lib_mode) {
            r = RunPhase(name, threads, seconds, daemon_pid,
                         side_b ? std::function<Op(int)>(lib_pair)
                                : std::function<Op(int)>(raw_pair_id));
          } else if (!side_b) {
            r = RunPhase(name, threads, seconds, daemon_pid, raw_pair);
          } else {
            std::vector<std::unique_ptr<Watcher>> watchers;
            for (int w = 0; w < n_watchers; ++w) {
              watchers.push_back(std::make_unique<Watcher>(*watch_stub, region,
                                                           watch_interval_ms));
            }
            // Every stream live (its first update read) before timing.
            const Clock::time_point limit =
                Clock::now() + std::chrono::seconds(20);
            bool live = true;
            for (const auto& w : watchers) {
              while (w->updates() == 0 && !w->done() && Clock::now() < limit) {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
              }
              live = live && w->updates() > 0;
            }
            if (!live) {
              for (const auto& w : watchers) {
                const grpc::Status st = w->Stop();
                if (w->updates() == 0) {
                  std::fprintf(stderr,
                               "a WatchStats stream got no update: %s\n",
                               st.error_message().c_str());
                }
              }
              return 1;
            }
            double before = 0;
            for (const auto& w : watchers) before += double(w->updates());
            r = RunPhase(name, threads, seconds, daemon_pid, raw_pair);
            double after = 0;
            for (const auto& w : watchers) after += double(w->updates());
            updates += after - before;
            watched_s += r.wall_s;
            for (const auto& w : watchers) {
              const grpc::Status st = w->Stop();
              if (st.error_code() != grpc::StatusCode::CANCELLED) {
                std::fprintf(stderr, "WatchStats ended: %d %s\n",
                             int(st.error_code()), st.error_message().c_str());
                ++ab_errors;
              }
            }
          }
          PrintRow(r, "pairs");
          ab_errors += r.errors;
          (side_b ? b_p50 : a_p50).push_back(r.Pct(0.5));
          (side_b ? b_free : a_free)
              .push_back(PhaseResult::Pct(r.free_us, 0.5));
        }
        ratios.push_back(b_p50.back() / a_p50.back());
      }
      const double a = Median(a_p50), b = Median(b_p50);
      if (lib_mode) {
        std::printf(
            "library vs raw, %d thr, %d interleaved rounds: Allocate p50 "
            "median raw %.1f us, library %.1f us, p50 ratio %.3f (median of "
            "per-round ratios %.3f); Free p50 median raw %.1f, library %.1f, "
            "ratio %.3f\n",
            threads, rounds, a, b, b / a, Median(ratios), Median(a_free),
            Median(b_free), Median(b_free) / Median(a_free));
      } else {
        std::printf(
            "watchers %d at %u ms, %d thr, %d interleaved rounds: Allocate "
            "p50 median none %.1f us, with %.1f us, p50 ratio %.3f (median "
            "of per-round ratios %.3f); Free p50 ratio %.3f; updates per "
            "watcher per s %.1f (expected %.1f)\n",
            n_watchers, watch_interval_ms, threads, rounds, a, b, b / a,
            Median(ratios), Median(b_free) / Median(a_free),
            updates / double(n_watchers) / std::max(watched_s, 1e-9),
            1000.0 / double(watch_interval_ms));
      }
      std::fflush(stdout);
      continue;
    }
    results.push_back(
        RunPhase("echo unary", threads, seconds, echo.pid(), [&](int t) -> Op {
          return [stub = echo_stubs[t].get()](std::vector<double>& lat,
                                              std::vector<double>&,
                                              bool& ok) -> uint64_t {
            grpc::ClientContext c;
            Deadline(c);
            ev1::EchoRequest q;
            q.set_value(42);
            ev1::EchoResponse a;
            const auto t0 = Clock::now();
            ok = stub->Echo(&c, q, &a).ok();
            lat.push_back(UsSince(t0));
            return 1;
          };
        }));
    PrintRow(results.back(), "calls");
    results.push_back(RunPhase("allocate+free (pair)", threads, seconds,
                               daemon_pid, raw_pair));
    PrintRow(results.back(), "pairs");
    results.push_back(RunPhase(
        absl::StrCat("echo ", batch, " values"), threads, seconds, echo.pid(),
        [&](int t) -> Op {
          return [&, stub = echo_stubs[t].get()](std::vector<double>& lat,
                                                 std::vector<double>&,
                                                 bool& ok) -> uint64_t {
            grpc::ClientContext c;
            Deadline(c);
            ev1::EchoRequest q;
            for (uint32_t i = 0; i < batch; ++i) q.add_values(4096 + i * 64);
            ev1::EchoResponse a;
            const auto t0 = Clock::now();
            ok = stub->Echo(&c, q, &a).ok() && a.values_size() == int(batch);
            lat.push_back(UsSince(t0));
            return batch;
          };
        }));
    PrintRow(results.back(), "values");
    results.push_back(RunPhase(
        absl::StrCat("batch alloc ", batch, "+free"), threads, seconds,
        daemon_pid, [&](int t) -> Op {
          return [&, stub = stubs[t].get()](std::vector<double>& lat,
                                            std::vector<double>& lat_free,
                                            bool& ok) -> uint64_t {
            grpc::ClientContext c;
            Deadline(c);
            v1::AllocateRequest q = alloc_request();
            q.set_count(batch);
            q.set_packed(packed);
            v1::AllocateResponse a;
            const auto t0 = Clock::now();
            ok = stub->Allocate(&c, q, &a).ok() &&
                 a.extents_size() + a.offsets_size() == int(batch);
            lat.push_back(UsSince(t0));
            if (!ok) return 0;
            grpc::ClientContext fc;
            Deadline(fc);
            v1::FreeRequest fq = free_request();
            if (a.offsets_size() > 0) {
              *fq.mutable_offsets() = a.offsets();
            }
            for (const v1::Extent& e : a.extents()) fq.add_offsets(e.offset());
            v1::FreeResponse fa;
            const auto f0 = Clock::now();
            ok = stub->Free(&fc, fq, &fa).ok() && ok;
            lat_free.push_back(UsSince(f0));
            return ok ? batch : 0;
          };
        }));
    PrintRow(results.back(), "offsets");
    if (!library) continue;
    // The same two calls with the raw stub, each with a request id as the
    // library sends them, then through the client library.
    results.push_back(RunPhase("pair, raw + request id", threads, seconds,
                               daemon_pid, raw_pair_id));
    PrintRow(results.back(), "pairs");
    if (!open_library()) return 1;
    results.push_back(RunPhase("pair, client library", threads, seconds,
                               daemon_pid, lib_pair));
    PrintRow(results.back(), "pairs");
    results.push_back(RunPhase(
        absl::StrCat("batch ", batch, ", library"), threads, seconds,
        daemon_pid, [&](int t) -> Op {
          return [&, r = regions[t].get()](std::vector<double>& lat,
                                           std::vector<double>& lat_free,
                                           bool& ok) -> uint64_t {
            uint64_t generation = 0;
            const auto t0 = Clock::now();
            absl::StatusOr<std::vector<shmalloc::client::Extent>> e =
                r->AllocateExtents(block, batch, {}, &generation);
            lat.push_back(UsSince(t0));
            ok = e.ok() && e->size() == batch;
            if (!ok) return 0;
            std::vector<uint64_t> offsets;
            offsets.reserve(e->size());
            for (const auto& x : *e) offsets.push_back(x.offset);
            const auto f0 = Clock::now();
            ok = r->Free(offsets, generation).ok();
            lat_free.push_back(UsSince(f0));
            return ok ? batch : 0;
          };
        }));
    PrintRow(results.back(), "offsets");
  }

  // Summary: ratios against the targets of issue 3, per thread count.
  if (mode == "all") {
    std::printf(
        "\nsummary (targets: allocate p50 / echo p50 <= 1.30; "
        "batch >= 3,000,000 offsets/s)\n");
    std::printf("%2s %9s %9s %7s %9s %13s %13s %12s %12s %11s %9s\n", "th",
                "alloc p50", "echo p50", "ratio", "free p50", "batch off/s",
                "echo val/s", "b.alloc p50", "b.free p50", "srv ns/off",
                "srv CPU x");
    std::printf("%2s %9s %9s %7s %9s %13s %13s %12s %12s %11s %9s\n", "", "us",
                "us", "", "us", "(alloc+free)", "", "us", "us", "(batch)",
                "(unary)");
    const size_t stride = library ? 7 : 4;
    for (size_t i = 0; i + 3 < results.size(); i += stride) {
      const PhaseResult& e = results[i];
      const PhaseResult& p = results[i + 1];
      const PhaseResult& ev = results[i + 2];
      const PhaseResult& b = results[i + 3];
      // Server CPU per unary call, allocate pair (2 calls) vs echo (1 call).
      const double srv_ratio = e.server_cpu_ns > 0
                                   ? (p.server_cpu_ns / double(2 * p.calls)) /
                                         (e.server_cpu_ns / double(e.calls))
                                   : 0;
      std::printf(
          "%2d %9.1f %9.1f %7.2f %9.1f %13.0f %13.0f %12.1f %12.1f %11.1f "
          "%9.2f\n",
          e.threads, p.Pct(0.5), e.Pct(0.5), p.Pct(0.5) / e.Pct(0.5),
          PhaseResult::Pct(p.free_us, 0.5), double(b.items) / b.wall_s,
          double(ev.items) / ev.wall_s, b.Pct(0.5),
          PhaseResult::Pct(b.free_us, 0.5),
          b.server_cpu_ns / double(std::max<uint64_t>(b.items, 1)), srv_ratio);
    }
    std::printf(
        "(srv CPU x: the daemon's CPU per Allocate or Free call / the echo "
        "server's CPU per Echo call; srv ns/off: daemon CPU per offset "
        "allocated and freed in the batch phase)\n");
    if (library) {
      std::printf(
          "\nclient library vs raw stub, same calls (target: <= 1.15)\n");
      std::printf(
          "%2s %12s %12s %7s %10s %10s %7s %10s %10s %7s %12s %12s %7s\n", "th",
          "raw pair us", "lib pair us", "ratio", "raw alloc", "lib alloc",
          "ratio", "raw free", "lib free", "ratio", "raw b.off/s",
          "lib b.off/s", "ratio");
      for (size_t i = 0; i + 6 < results.size(); i += stride) {
        const PhaseResult& raw = results[i + 4];
        const PhaseResult& lib = results[i + 5];
        const PhaseResult& braw = results[i + 3];
        const PhaseResult& blib = results[i + 6];
        // Real time per pair: the phase's wall time over its pairs.
        const double raw_pair = raw.wall_s * 1e6 * raw.threads /
                                double(std::max<uint64_t>(raw.calls, 1));
        const double lib_pair = lib.wall_s * 1e6 * lib.threads /
                                double(std::max<uint64_t>(lib.calls, 1));
        const double braw_rate = double(braw.items) / braw.wall_s;
        const double blib_rate = double(blib.items) / blib.wall_s;
        const double raw_free = PhaseResult::Pct(raw.free_us, 0.5);
        const double lib_free = PhaseResult::Pct(lib.free_us, 0.5);
        std::printf(
            "%2d %12.1f %12.1f %7.2f %10.1f %10.1f %7.2f %10.1f %10.1f %7.2f "
            "%12.0f %12.0f %7.2f\n",
            raw.threads, raw_pair, lib_pair, lib_pair / raw_pair, raw.Pct(0.5),
            lib.Pct(0.5), lib.Pct(0.5) / raw.Pct(0.5), raw_free, lib_free,
            lib_free / raw_free, braw_rate, blib_rate, braw_rate / blib_rate);
      }
      std::printf(
          "(pair us: wall time per Allocate+Free pair per thread, raw stub "
          "with "
          "request ids vs Region::Allocate + Allocation::Free; alloc, free: "
          "p50 "
          "of each call alone; b.off/s: offsets/s of batch Allocate+Free, raw "
          "packed stub vs Region::AllocateExtents + Region::Free, ratio "
          "raw/lib)\n");
    }

  }  // mode == "all"

  uint64_t errors = ab_errors;
  for (const PhaseResult& r : results) errors += r.errors;
  (*session)->Close();
  grpc::ClientContext dc;
  Deadline(dc);
  v1::DeleteRegionRequest del;
  del.set_name(region);
  del.set_force(true);
  v1::DeleteRegionResponse dr;
  admin->DeleteRegion(&dc, del, &dr).ok();
  bool clean = echo.Stop();
  if (daemon != nullptr) {
    if (absl::Status s = daemon->Stop(); !s.ok()) {
      std::fprintf(stderr, "shmallocd stop: %s\n", s.ToString().c_str());
      clean = false;
    }
  }
  std::filesystem::remove_all(shm_dir);  // the daemon's files stay behind
  unlink((std::string(echo_dir) + "/echo.sock").c_str());
  rmdir(echo_dir);
  std::printf("\nerrors: %" PRIu64 "; servers stopped cleanly: %s\n", errors,
              clean ? "yes" : "no");
  return errors == 0 && clean ? 0 : 1;
}
