// Sessions end with their stream: a client process killed with SIGKILL, a
// clean close, and a thousand sessions at once. When a session ends, exactly
// its non-detached allocations are freed — within a second — and detached
// ones and other sessions' allocations are untouched.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

#ifndef ALLOC_CLIENT_PATH
#error "ALLOC_CLIENT_PATH must name the alloc_client binary"
#endif

namespace shmalloc::testing {
namespace {

using ::testing::SizeIs;

constexpr absl::Duration kReclaimDeadline = absl::Seconds(1);

// A forked alloc_client process (see alloc_client.cc) and what it printed.
class ChildClient {
 public:
  // Starts alloc_client and reads its output up to "ready".
  static absl::StatusOr<std::unique_ptr<ChildClient>> Start(
      const std::string& socket, const std::string& region, uint64_t size,
      uint32_t owned, uint32_t detached) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      return absl::InternalError(std::strerror(errno));
    }
    std::vector<std::string> args = {ALLOC_CLIENT_PATH,
                                     socket,
                                     region,
                                     absl::StrCat(size),
                                     absl::StrCat(owned),
                                     absl::StrCat(detached)};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) return absl::InternalError(std::strerror(errno));
    if (pid == 0) {
      dup2(fds[1], STDOUT_FILENO);  // dup2 clears FD_CLOEXEC on the copy.
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    std::unique_ptr<ChildClient> child(new ChildClient(pid));
    absl::Status read = child->ReadUntilReady(fds[0]);
    close(fds[0]);
    if (!read.ok()) return read;
    return child;
  }

  ~ChildClient() {
    if (pid_ > 0) (void)Kill();
  }

  // Kills the process with SIGKILL and reaps it; returns its wait status.
  int Kill() {
    int status = 0;
    kill(pid_, SIGKILL);
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

  uint64_t session_id() const { return session_id_; }
  const std::vector<uint64_t>& owned() const { return owned_; }
  const std::vector<uint64_t>& detached() const { return detached_; }

 private:
  explicit ChildClient(pid_t pid) : pid_(pid) {}

  absl::Status ReadUntilReady(int fd) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    std::string text;
    while (text.find("ready\n") == std::string::npos) {
      const int wait_ms = static_cast<int>(std::max<int64_t>(
          0, absl::ToInt64Milliseconds(deadline - absl::Now())));
      pollfd p = {fd, POLLIN, 0};
      int r = poll(&p, 1, wait_ms);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return absl::DeadlineExceededError("alloc_client not ready");
      char buf[4096];
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        return absl::InternalError("alloc_client exited early; output: " +
                                   text);
      }
      text.append(buf, static_cast<size_t>(n));
    }
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream words(line);
      std::string label;
      words >> label;
      uint64_t value;
      while (words >> value) {
        if (label == "session") session_id_ = value;
        if (label == "owned") owned_.push_back(value);
        if (label == "detached") detached_.push_back(value);
      }
    }
    return absl::OkStatus();
  }

  pid_t pid_;
  uint64_t session_id_ = 0;
  std::vector<uint64_t> owned_;
  std::vector<uint64_t> detached_;
};

const v1::SessionUsage* FindUsage(const v1::RegionStats& stats, uint64_t id) {
  for (const v1::SessionUsage& u : stats.sessions()) {
    if (u.session_id() == id) return &u;
  }
  return nullptr;
}

class SessionDeathTest : public DaemonTest,
                         public ::testing::WithParamInterface<v1::Strategy> {};

TEST_P(SessionDeathTest, KilledClientsOwnedAllocationsAreReclaimedInASecond) {
  ASSERT_THAT(CreateRegion(stub(), "r", GetParam()), IsOk());
  absl::StatusOr<std::unique_ptr<Session>> other =
      Session::Open(stub(), "other");
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<v1::AllocateResponse> others =
      Allocate(stub(), **other, "r", 64, 5);
  ASSERT_THAT(others, IsOk());

  absl::StatusOr<std::unique_ptr<ChildClient>> child =
      ChildClient::Start(daemon_->socket_path(), "r", 64, 10, 3);
  ASSERT_THAT(child, IsOk());
  ASSERT_THAT((*child)->owned(), SizeIs(10));
  ASSERT_THAT((*child)->detached(), SizeIs(3));
  absl::StatusOr<v1::RegionStats> before = GetRegionStats(stub(), "r");
  ASSERT_THAT(before, IsOk());
  EXPECT_EQ(before->live_allocations(), 18u);
  EXPECT_EQ(before->detached_allocations(), 3u);
  const v1::SessionUsage* usage = FindUsage(*before, (*child)->session_id());
  ASSERT_NE(usage, nullptr) << before->DebugString();
  EXPECT_EQ(usage->live_allocations(), 10u);

  const int status = (*child)->Kill();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  PollResult reclaimed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 1 && s.regions(0).live_allocations() == 8;
      },
      kReclaimDeadline);
  ASSERT_TRUE(reclaimed.done) << "after " << reclaimed.waited << ":\n"
                              << reclaimed.stats.DebugString();
  std::printf("reclaimed %s in %s\n", v1::Strategy_Name(GetParam()).c_str(),
              absl::FormatDuration(reclaimed.waited).c_str());

  const v1::RegionStats& after = reclaimed.stats.regions(0);
  EXPECT_EQ(after.detached_allocations(), 3u);
  EXPECT_EQ(FindUsage(after, (*child)->session_id()), nullptr);
  usage = FindUsage(after, (*other)->id());
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(usage->live_allocations(), 5u);

  // The dead client's owned offsets are no longer live; its detached ones
  // and the other session's are, and free normally.
  EXPECT_THAT(Free(stub(), **other, "r", {(*child)->owned()[0]}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(Free(stub(), **other, "r", (*child)->detached()), IsOk());
  EXPECT_THAT(Free(stub(), **other, "r", Offsets(*others)), IsOk());
  absl::StatusOr<v1::RegionStats> empty = GetRegionStats(stub(), "r");
  ASSERT_THAT(empty, IsOk());
  EXPECT_EQ(empty->used_bytes(), 0u);
  EXPECT_EQ(empty->live_allocations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, SessionDeathTest,
    ::testing::Values(v1::STRATEGY_POOL, v1::STRATEGY_BUDDY, v1::STRATEGY_SLAB,
                      v1::STRATEGY_FREE_LIST),
    [](const ::testing::TestParamInfo<v1::Strategy>& info) {
      return v1::Strategy_Name(info.param);
    });

class SessionTest : public DaemonTest {};

TEST_F(SessionTest, SeveralKilledClientsAreAllReclaimed) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_FREE_LIST), IsOk());
  std::vector<std::unique_ptr<ChildClient>> children;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<std::unique_ptr<ChildClient>> child =
        ChildClient::Start(daemon_->socket_path(), "r", 100, 20, 1);
    ASSERT_THAT(child, IsOk());
    children.push_back(*std::move(child));
  }
  absl::StatusOr<v1::RegionStats> before = GetRegionStats(stub(), "r");
  ASSERT_THAT(before, IsOk());
  EXPECT_EQ(before->live_allocations(), 4u * 21);
  for (auto& child : children) child->Kill();
  PollResult reclaimed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 0 && s.regions(0).live_allocations() == 4;
      },
      kReclaimDeadline);
  EXPECT_TRUE(reclaimed.done) << "after " << reclaimed.waited << ":\n"
                              << reclaimed.stats.DebugString();
  EXPECT_EQ(reclaimed.stats.regions(0).detached_allocations(), 4u);
}

TEST_F(SessionTest, CleanCloseFreesOnlyThatSessionsOwnedAllocations) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_BUDDY), IsOk());
  absl::StatusOr<std::unique_ptr<Session>> a = Session::Open(stub(), "a");
  absl::StatusOr<std::unique_ptr<Session>> b = Session::Open(stub(), "b");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ASSERT_THAT(Allocate(stub(), **a, "r", 200, 4), IsOk());
  absl::StatusOr<v1::AllocateResponse> kept =
      Allocate(stub(), **a, "r", 200, 2, /*detached=*/true);
  ASSERT_THAT(kept, IsOk());
  ASSERT_THAT(Allocate(stub(), **b, "r", 200, 3), IsOk());
  const uint64_t b_id = (*b)->id();

  (*a)->Close();
  PollResult closed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 1 && s.regions(0).live_allocations() == 5;
      },
      kReclaimDeadline);
  ASSERT_TRUE(closed.done) << closed.stats.DebugString();
  const v1::RegionStats& r = closed.stats.regions(0);
  EXPECT_EQ(r.detached_allocations(), 2u);
  ASSERT_EQ(r.sessions_size(), 1);
  EXPECT_EQ(r.sessions(0).session_id(), b_id);
  EXPECT_EQ(r.sessions(0).live_allocations(), 3u);
  EXPECT_THAT(Free(stub(), **b, "r", Offsets(*kept)), IsOk());
}

TEST_F(SessionTest, ThousandSessionsOpenAtOnceAllocateAndClose) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  constexpr int kSessions = kThreads * kPerThread;
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_POOL), IsOk());
  absl::Mutex mu;
  std::vector<std::unique_ptr<Session>> sessions;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Allocator::Stub>> stubs;
  for (int t = 0; t < kThreads; ++t) {
    channels.push_back(daemon_->NewChannel());
    stubs.push_back(v1::Allocator::NewStub(channels.back()));
  }
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto session = Session::Open(*stubs[t], absl::StrCat("s", t, ".", i));
        absl::Status s = session.status();
        if (s.ok()) s = Allocate(*stubs[t], **session, "r", 64).status();
        absl::MutexLock lock(&mu);
        if (!s.ok()) errors.push_back(s.ToString());
        if (session.ok()) sessions.push_back(*std::move(session));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::printf("opened %d sessions (each one Allocate) in %s\n", kSessions,
              absl::FormatDuration(absl::Now() - start).c_str());
  ASSERT_THAT(errors, SizeIs(0)) << errors.front();
  ASSERT_THAT(sessions, SizeIs(kSessions));
  std::set<uint64_t> ids;
  for (const auto& s : sessions) ids.insert(s->id());
  EXPECT_THAT(ids, SizeIs(kSessions));

  absl::StatusOr<v1::Stats> open = GetStats(stub());
  ASSERT_THAT(open, IsOk());
  EXPECT_EQ(open->sessions(), static_cast<uint64_t>(kSessions));
  EXPECT_EQ(open->sessions_opened(), static_cast<uint64_t>(kSessions));
  EXPECT_EQ(open->regions(0).live_allocations(),
            static_cast<uint64_t>(kSessions));
  EXPECT_EQ(open->regions(0).sessions_size(), kSessions);

  sessions.clear();  // Cancels every stream.
  PollResult closed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 0 && s.regions(0).live_allocations() == 0;
      },
      absl::Seconds(5));
  EXPECT_TRUE(closed.done) << "sessions " << closed.stats.sessions() << " live "
                           << closed.stats.regions(0).live_allocations();
  std::printf("all %d closed and reclaimed after %s\n", kSessions,
              absl::FormatDuration(closed.waited).c_str());
  EXPECT_EQ(closed.stats.regions(0).used_bytes(), 0u);
}

}  // namespace
}  // namespace shmalloc::testing
