// Random kill -9 under load: several chaos_client processes allocate and
// free (singles and batches, detached and owned, with request ids) in one
// region of each strategy while the test SIGKILLs the real shmallocd at
// random moments and restarts it on the same files. The clients resume their
// sessions and retry the interrupted call with the same request_id.
//
// When to kill is drawn from the seed as a number of acknowledged operations
// (read from the clients' logs), never a sleep. After every restart the
// clients are paused (no call in flight), and the test checks against the
// logs, its ground truth: every region READY; every acknowledged, not freed
// allocation still holds the pattern its client wrote; no two live
// allocations overlap (so nothing new was handed out over a survivor);
// live_allocations and detached_allocations of each non-ARENA region equal
// the acknowledged ones. At the end the clients close their sessions and only
// the detached allocations stay.
//
// SHMALLOC_ROUNDS (default 40, about 30-60 s) and SHMALLOC_SEED (default:
// random) override; both are printed.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/chaos_pattern.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

#ifndef CHAOS_CLIENT_PATH
#error "CHAOS_CLIENT_PATH must name the chaos_client binary"
#endif

namespace shmalloc::testing {
namespace {

constexpr int kClients = 4;
constexpr absl::Duration kProgressDeadline = absl::Seconds(60);

struct RegionSetup {
  std::string name;
  v1::Strategy strategy;
  uint64_t heap_bytes;
  uint64_t block_size;  // POOL only
  uint64_t min_size, max_size;
  uint32_t max_count;
  size_t cap;  // live allocations per client
};

// Sized so that kClients clients at their cap never fill a region (ARENA
// fills; that is an acknowledged RESOURCE_EXHAUSTED).
const std::vector<RegionSetup>& Regions() {
  static const auto* regions = new std::vector<RegionSetup>{
      {"pool", v1::STRATEGY_POOL, 8 << 20, 64, 8, 64, 4096, 12000},
      {"buddy", v1::STRATEGY_BUDDY, 32 << 20, 0, 8, 256, 4096, 8000},
      {"slab", v1::STRATEGY_SLAB, 32 << 20, 0, 8, 512, 4096, 8000},
      {"freelist", v1::STRATEGY_FREE_LIST, 32 << 20, 0, 8, 512, 2048, 4000},
      {"arena", v1::STRATEGY_ARENA, 16 << 20, 0, 8, 128, 1024, 0},
  };
  return *regions;
}

struct Live {
  uint64_t reserved = 0, size = 0, tag = 0;
  bool detached = false;
};

// What one client's log says, per region: offset -> the live allocation.
// Logs of different clients are not ordered against each other (a free in
// one and the reuse of the block in another can be read in either order),
// so each client has its own map; they are merged only while every client is
// paused.
using LiveMap = std::map<std::string, std::map<uint64_t, Live>>;

// Counters over every log.
struct Model {
  uint64_t ops = 0;        // acknowledged A/F/X/E lines
  uint64_t uncertain = 0;  // X lines: retried Frees refused
  uint64_t exhausted = 0;  // E lines
};

// Reads one client's log incrementally; only complete lines count.
class LogReader {
 public:
  explicit LogReader(std::string path) : path_(std::move(path)) {}

  // Applies the new complete lines to `model`; records failures.
  void Update(Model& model) {
    std::ifstream in(path_, std::ios::binary);
    if (!in) return;
    in.seekg(static_cast<std::streamoff>(pos_));
    std::string chunk((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    size_t start = 0;
    for (size_t nl; (nl = chunk.find('\n', start)) != std::string::npos;
         start = nl + 1) {
      Apply(chunk.substr(start, nl - start), model);
    }
    pos_ += start;
  }

  const LiveMap& live() const { return live_; }
  uint64_t pauses() const { return pauses_; }
  const std::string& last_resume() const { return last_resume_; }
  uint64_t retried() const { return retried_; }
  uint64_t resumes() const { return resumes_; }
  bool started() const { return started_; }

 private:
  void Apply(const std::string& line, Model& model) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    ASSERT_FALSE(f.empty());
    if (f[0] == "P") {
      ++pauses_;
      if (f.size() == 3) (void)absl::SimpleAtoi(f[2], &retried_);
      return;
    }
    if (f[0] == "S") {
      started_ = true;
      return;
    }
    if (f[0] == "R") {
      ++resumes_;
      last_resume_ = line;
      return;
    }
    ASSERT_GE(f.size(), 3u) << line;
    ++model.ops;
    std::map<uint64_t, Live>& live = live_[f[2]];
    if (f[0] == "E") {
      ++model.exhausted;
      return;
    }
    if (f[0] == "A") {
      ASSERT_GE(f.size(), 7u) << line;
      Live l;
      ASSERT_TRUE(absl::SimpleAtoi(f[1], &l.tag));
      l.detached = f[4] == "1";
      ASSERT_TRUE(absl::SimpleAtoi(f[5], &l.size));
      for (size_t i = 6; i < f.size(); ++i) {
        std::pair<std::string, std::string> e = absl::StrSplit(f[i], ':');
        uint64_t offset = 0;
        ASSERT_TRUE(absl::SimpleAtoi(e.first, &offset) &&
                    absl::SimpleAtoi(e.second, &l.reserved))
            << line;
        ASSERT_TRUE(live.emplace(offset, l).second)
            << "offset " << offset << " in " << f[2]
            << " acknowledged twice while live: " << line;
      }
      return;
    }
    ASSERT_TRUE(f[0] == "F" || f[0] == "X") << line;
    if (f[0] == "X") ++model.uncertain;
    for (size_t i = 3; i < f.size(); ++i) {
      uint64_t offset = 0;
      ASSERT_TRUE(absl::SimpleAtoi(f[i], &offset)) << line;
      ASSERT_EQ(live.erase(offset), 1u)
          << "freed offset " << offset << " in " << f[2]
          << " is not live in the log: " << line;
    }
  }

  std::string path_;
  size_t pos_ = 0;
  LiveMap live_;
  std::string last_resume_;
  uint64_t pauses_ = 0, resumes_ = 0, retried_ = 0;
  bool started_ = false;
};

// One chaos_client process: its stdin is a pipe the test commands through.
struct ClientProcess {
  pid_t pid = -1;
  int stdin_fd = -1;
  std::unique_ptr<LogReader> log;

  void Send(char c) const {
    ASSERT_EQ(write(stdin_fd, &c, 1), 1) << std::strerror(errno);
  }
};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = getenv(name);
  uint64_t out = 0;
  return v != nullptr && absl::SimpleAtoi(v, &out) ? out : fallback;
}

class Kill9Test : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = EnvOr("SHMALLOC_SEED", std::random_device{}());
    rounds_ = EnvOr("SHMALLOC_ROUNDS", 40);
    std::printf("kill9_test: SHMALLOC_SEED=%llu SHMALLOC_ROUNDS=%llu\n",
                static_cast<unsigned long long>(seed_),
                static_cast<unsigned long long>(rounds_));
    std::fflush(stdout);
    rng_.seed(seed_);
    // A client that died must fail the test, not kill it with SIGPIPE.
    signal(SIGPIPE, SIG_IGN);
    daemon_ = std::make_unique<DaemonProcess>(
        DaemonOptions{.config_text = "limits { session_grace_ms: 120000 }\n",
                      .extra_flags = {}});
    SHMALLOC_ASSERT_OK(daemon_->Start());
    for (const RegionSetup& r : Regions()) {
      v1::CreateRegionRequest request;
      request.set_name(r.name);
      request.set_strategy(r.strategy);
      request.set_size_bytes(r.heap_bytes);
      request.set_block_size(r.block_size);
      if (r.strategy != v1::STRATEGY_ARENA) {
        request.set_max_live_allocations(65536);
      }
      ASSERT_THAT(CreateRegion(daemon_->stub(), request), IsOk());
    }
  }

  void TearDown() override {
    if (HasFailure() && daemon_ != nullptr) {
      // Keep the ground truth for a post-mortem (the temp dir goes away).
      const std::string keep = absl::StrCat(
          getenv("TEST_TMPDIR") != nullptr ? getenv("TEST_TMPDIR") : "/tmp",
          "/kill9-", seed_);
      std::error_code ec;
      std::filesystem::create_directories(keep, ec);
      for (int i = 0; i < kClients; ++i) {
        for (const char* ext : {".log", ".err"}) {
          const std::string name = absl::StrCat("client", i, ext);
          std::filesystem::copy_file(
              absl::StrCat(daemon_->dir(), "/", name), keep + "/" + name,
              std::filesystem::copy_options::overwrite_existing, ec);
        }
      }
      std::printf("kill9_test: client logs kept in %s\n", keep.c_str());
    }
    for (ClientProcess& c : clients_) {
      if (c.stdin_fd >= 0) close(c.stdin_fd);
      if (c.pid > 0) {
        kill(c.pid, SIGKILL);
        waitpid(c.pid, nullptr, 0);
      }
    }
  }

  void StartClient(int index) {
    ClientProcess c;
    const std::string log =
        absl::StrCat(daemon_->dir(), "/client", index, ".log");
    const std::string err =
        absl::StrCat(daemon_->dir(), "/client", index, ".err");
    std::vector<std::string> args = {CHAOS_CLIENT_PATH, daemon_->socket_path(),
                                     log, absl::StrCat(seed_ + index + 1),
                                     absl::StrCat(index)};
    for (const RegionSetup& r : Regions()) {
      args.push_back(absl::StrCat(
          r.name, ",", r.strategy == v1::STRATEGY_ARENA ? 1 : 0, ",",
          r.min_size, ",", r.max_size, ",", r.max_count, ",", r.cap));
    }
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    const int err_fd = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(err_fd, 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // A client must not outlive a test that crashed.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(fds[0], 0);
      dup2(err_fd, 2);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[0]);
    close(err_fd);
    c.pid = pid;
    c.stdin_fd = fds[1];
    c.log = std::make_unique<LogReader>(log);
    clients_.push_back(std::move(c));
  }

  std::string ClientErrors() const {
    std::string out;
    for (int i = 0; i < kClients; ++i) {
      std::ifstream in(absl::StrCat(daemon_->dir(), "/client", i, ".err"));
      std::string text((std::istreambuf_iterator<char>(in)),
                       std::istreambuf_iterator<char>());
      if (!text.empty()) absl::StrAppend(&out, "client ", i, ": ", text);
    }
    return out;
  }

  void UpdateModel() {
    for (ClientProcess& c : clients_) c.log->Update(model_);
  }

  // Reads the logs until `done` holds; fails after kProgressDeadline (or
  // when a client exited early).
  void WaitFor(const std::function<bool()>& done, const std::string& what) {
    const absl::Time deadline = absl::Now() + kProgressDeadline;
    for (;;) {
      UpdateModel();
      if (::testing::Test::HasFatalFailure() || done()) return;
      for (const ClientProcess& c : clients_) {
        int status = 0;
        ASSERT_EQ(waitpid(c.pid, &status, WNOHANG), 0)
            << "a client exited while waiting for " << what << ": "
            << ClientErrors();
      }
      ASSERT_LT(absl::Now(), deadline)
          << "no progress: " << what << "; " << ClientErrors();
      absl::SleepFor(absl::Milliseconds(2));  // polling, with a deadline
    }
  }

  // Pauses every client (no call in flight, each resumed `kills_` times),
  // checks the daemon against the logs, and lets them go on unless `last`.
  void PauseAndVerify(const std::string& when) {
    std::vector<uint64_t> pauses;
    for (const ClientProcess& c : clients_) {
      pauses.push_back(c.log->pauses());
      c.Send('p');
    }
    WaitFor(
        [&] {
          for (size_t i = 0; i < clients_.size(); ++i) {
            if (clients_[i].log->pauses() <= pauses[i] ||
                clients_[i].log->resumes() < kills_) {
              return false;
            }
          }
          return true;
        },
        "clients to pause and resume");
    if (HasFatalFailure()) return;
    Verify(when, /*sessions_closed=*/false);
  }

  void Verify(const std::string& when, bool sessions_closed) {
    SCOPED_TRACE(when);
    absl::StatusOr<v1::Stats> stats = GetStats(daemon_->stub());
    ASSERT_THAT(stats, IsOk());
    std::map<std::string, const v1::RegionStats*> by_name;
    for (const v1::RegionStats& r : stats->regions()) by_name[r.name()] = &r;
    uint64_t live_total = 0;
    for (const RegionSetup& setup : Regions()) {
      absl::StatusOr<v1::Region> region =
          GetRegion(daemon_->stub(), setup.name);
      ASSERT_THAT(region, IsOk());
      EXPECT_EQ(region->state(), v1::REGION_STATE_READY)
          << setup.name << ": " << region->state_detail();
      absl::StatusOr<std::unique_ptr<MappedFile>> data =
          MappedFile::Map(daemon_->RegionFile(setup.name));
      ASSERT_THAT(data, IsOk());
      std::multimap<uint64_t, Live> live;
      for (const ClientProcess& c : clients_) {
        auto it = c.log->live().find(setup.name);
        if (it != c.log->live().end())
          live.insert(it->second.begin(), it->second.end());
      }
      uint64_t end = region->heap_begin(), detached = 0, bad = 0;
      for (const auto& [offset, l] : live) {
        EXPECT_GE(offset, end) << setup.name << ": " << offset
                               << " overlaps the allocation before it";
        end = offset + l.reserved;
        EXPECT_LE(end, region->heap_end()) << setup.name;
        if (l.detached) ++detached;
        const auto* words =
            reinterpret_cast<const uint64_t*>((*data)->data() + offset);
        for (uint64_t i = 0; i < l.size / 8; ++i) {
          if (words[i] != ChaosWord(offset, l.tag, i)) {
            if (++bad <= 5) {
              ADD_FAILURE()
                  << setup.name << ": allocation at " << offset << " (tag "
                  << l.tag << ") word " << i << " changed";
            }
            break;
          }
        }
      }
      EXPECT_EQ(bad, 0u) << setup.name << ": allocations with a bad pattern";
      ASSERT_TRUE(by_name.count(setup.name)) << setup.name;
      const v1::RegionStats& rs = *by_name[setup.name];
      if (setup.strategy != v1::STRATEGY_ARENA) {
        const uint64_t expected = sessions_closed ? detached : live.size();
        EXPECT_EQ(rs.live_allocations(), expected) << setup.name;
        EXPECT_EQ(rs.detached_allocations(), detached) << setup.name;
        live_total += live.size();
      }
    }
    std::printf(
        "kill9_test: %s: %llu acknowledged ops, %llu live (non-ARENA), %llu "
        "exhausted, %llu retried frees refused\n",
        when.c_str(), static_cast<unsigned long long>(model_.ops),
        static_cast<unsigned long long>(live_total),
        static_cast<unsigned long long>(model_.exhausted),
        static_cast<unsigned long long>(model_.uncertain));
    for (size_t i = 0; i < clients_.size(); ++i) {
      std::printf("  client %zu: %llu calls retried; %s\n", i,
                  static_cast<unsigned long long>(clients_[i].log->retried()),
                  clients_[i].log->last_resume().c_str());
    }
    std::fflush(stdout);
  }

  uint64_t seed_ = 0, rounds_ = 0, kills_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::vector<ClientProcess> clients_;
  Model model_;
};

TEST_F(Kill9Test, AcknowledgedAllocationsSurviveRandomKills) {
  for (int i = 0; i < kClients; ++i) {
    ASSERT_NO_FATAL_FAILURE(StartClient(i));
  }
  // Every kill must find every client with a session to resume (a client
  // that opens its session after a kill has nothing to resume, and the
  // pause check counts resumes): under a sanitizer one client can reach the
  // first kill's operation count alone while the others are still starting.
  WaitFor(
      [&] {
        for (const ClientProcess& c : clients_) {
          if (!c.log->started()) return false;
        }
        return true;
      },
      "clients to open their sessions");
  ASSERT_FALSE(HasFatalFailure());
  for (uint64_t round = 1; round <= rounds_; ++round) {
    const uint64_t target =
        model_.ops + std::uniform_int_distribution<uint64_t>(20, 400)(rng_);
    WaitFor([&] { return model_.ops >= target; }, "operations before a kill");
    ASSERT_FALSE(HasFatalFailure());
    SHMALLOC_ASSERT_OK(daemon_->Kill());
    ++kills_;
    const absl::Time start = absl::Now();
    SHMALLOC_ASSERT_OK(daemon_->Start());
    const absl::Duration restart = absl::Now() - start;
    ASSERT_NO_FATAL_FAILURE(PauseAndVerify(
        absl::StrCat("round ", round, " (killed after ", model_.ops,
                     " ops, ready in ", absl::FormatDuration(restart), ")")));
    for (const ClientProcess& c : clients_) c.Send('g');
  }
  // The end: a clean close of every session frees its owned allocations.
  ASSERT_NO_FATAL_FAILURE(PauseAndVerify("before close"));
  for (ClientProcess& c : clients_) {
    c.Send('q');
    int status = 0;
    ASSERT_EQ(waitpid(c.pid, &status, 0), c.pid);
    c.pid = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "wait status " << status << ": " << ClientErrors();
  }
  UpdateModel();
  PollResult closed = PollStats(
      daemon_->stub(),
      [](const v1::Stats& s) {
        // The owned allocations are released after the session count drops.
        if (s.sessions() != 0) return false;
        for (const v1::RegionStats& r : s.regions()) {
          if (r.strategy() != v1::STRATEGY_ARENA &&
              r.live_allocations() != r.detached_allocations()) {
            return false;
          }
        }
        return true;
      },
      kProgressDeadline);
  ASSERT_TRUE(closed.done) << closed.stats.DebugString();
  Verify("after close", /*sessions_closed=*/true);
  std::printf("kill9_test: survived %llu kill -9 rounds\n",
              static_cast<unsigned long long>(kills_));
  SHMALLOC_EXPECT_OK(daemon_->Stop());
}

}  // namespace
}  // namespace shmalloc::testing
