// The client library rides through a daemon restart: a real shmallocd is
// stopped (SIGTERM) or killed (SIGKILL) and started again on the same socket
// and shm_dir while a Client holds Allocations, an Arena and a BlockCache.
// The observer must see RECONNECTING then RESUMED with nothing done by the
// application; allocations stay live and owned by the same session; frees
// then work exactly once; calls during the outage wait (or fail UNAVAILABLE
// past ReconnectOptions::call_wait); a grace period shorter than the outage
// makes the session LOST, never silently replaced by a new one.
//
// Synchronisation is by the observer (a condition variable with a deadline)
// and by DaemonProcess's readiness handshake; no sleeps.
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

namespace sc = ::shmalloc::client;
using ::testing::HasSubstr;

constexpr absl::Duration kObserverDeadline = absl::Seconds(30);

// Records every state the client reports, in order.
class StateLog {
 public:
  void Record(sc::ConnectionState s) {
    std::lock_guard<std::mutex> lock(mu_);
    states_.push_back(s);
    cv_.notify_all();
  }
  // Waits until `s` has been reported at least `times` times in all.
  bool WaitFor(sc::ConnectionState s, int times = 1,
               absl::Duration deadline = kObserverDeadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, absl::ToChronoTime(absl::Now() + deadline),
                          [&] { return CountLocked(s) >= times; });
  }
  std::vector<sc::ConnectionState> states() {
    std::lock_guard<std::mutex> lock(mu_);
    return states_;
  }

 private:
  int CountLocked(sc::ConnectionState s) const {
    int n = 0;
    for (sc::ConnectionState x : states_) n += x == s;
    return n;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<sc::ConnectionState> states_;
};

std::string Names(const std::vector<sc::ConnectionState>& states) {
  std::string out;
  for (sc::ConnectionState s : states) {
    if (!out.empty()) out += " ";
    out += std::string(sc::ConnectionStateName(s));
  }
  return out;
}

class ReconnectTest : public ::testing::Test {
 protected:
  void StartDaemon(const std::string& config_text = "") {
    daemon_ = std::make_unique<DaemonProcess>(
        DaemonOptions{.config_text = config_text, .extra_flags = {}});
    SHMALLOC_ASSERT_OK(daemon_->Start());
  }
  // Connects with fast backoff and `call_wait`; the observer records.
  void ConnectClient(absl::Duration call_wait = absl::Seconds(30),
                     absl::Duration initial_backoff = absl::Milliseconds(10),
                     absl::Duration max_backoff = absl::Milliseconds(200)) {
    sc::ConnectOptions o;
    o.target = daemon_->target();
    o.client_name = "reconnect-test";
    o.rpc_timeout = absl::Seconds(5);
    o.reconnect.initial_backoff = initial_backoff;
    o.reconnect.max_backoff = max_backoff;
    o.reconnect.call_wait = call_wait;
    o.reconnect.on_state_change = [log = log_](sc::ConnectionState s) {
      log->Record(s);
    };
    absl::StatusOr<std::unique_ptr<sc::Client>> c = sc::Client::Connect(o);
    ASSERT_THAT(c, IsOk());
    client_ = *std::move(c);
  }
  std::shared_ptr<sc::Region> MakeRegion(const std::string& name,
                                         sc::Strategy strategy,
                                         uint64_t block_size = 0) {
    EXPECT_THAT(client_->CreateRegion({.name = name,
                                       .strategy = strategy,
                                       .size_bytes = 4 << 20,
                                       .block_size = block_size}),
                IsOk());
    absl::StatusOr<std::shared_ptr<sc::Region>> r = client_->OpenRegion(name);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : nullptr;
  }
  // The live allocations session `id` owns in `region`.
  uint64_t OwnedBy(uint64_t id, const std::string& region) {
    absl::StatusOr<sc::DaemonStats> s = client_->GetStats(region);
    EXPECT_THAT(s, IsOk());
    if (!s.ok() || s->regions.empty()) return ~uint64_t{0};
    for (const sc::SessionUsage& u : s->regions.front().sessions) {
      if (u.session_id == id) return u.live_allocations;
    }
    return 0;
  }
  void TearDown() override {
    client_.reset();
    if (daemon_ != nullptr && daemon_->running()) {
      SHMALLOC_EXPECT_OK(daemon_->Stop());
    }
  }

  // Holds allocations, an arena and a block cache across an outage made by
  // `outage` (stop or kill), then checks everything survived.
  void RideThrough(const std::function<absl::Status()>& outage);

  std::shared_ptr<StateLog> log_ = std::make_shared<StateLog>();
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<sc::Client> client_;
};

TEST_F(ReconnectTest, ObserverSeesConnectedBeforeConnectReturns) {
  StartDaemon();
  ConnectClient();
  EXPECT_EQ(Names(log_->states()), "CONNECTED");
  EXPECT_EQ(client_->connection_state(), sc::ConnectionState::kConnected);
}

void ReconnectTest::RideThrough(const std::function<absl::Status()>& outage) {
  StartDaemon();
  ConnectClient();
  const uint64_t id = client_->session_id();
  std::shared_ptr<sc::Region> pool =
      MakeRegion("pool", sc::Strategy::kPool, 64);
  std::shared_ptr<sc::Region> heap =
      MakeRegion("heap", sc::Strategy::kFreeList);
  ASSERT_NE(pool, nullptr);
  ASSERT_NE(heap, nullptr);

  std::vector<sc::Allocation> held;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<sc::Allocation> a = heap->Allocate(1000);
    ASSERT_THAT(a, IsOk());
    std::memset(a->data(), 'a' + i, a->size());
    held.push_back(*std::move(a));
  }
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
      sc::Arena::Create(heap, {.capacity_bytes = 256 << 10});
  ASSERT_THAT(arena, IsOk());
  absl::StatusOr<std::unique_ptr<sc::BlockCache>> cache =
      sc::BlockCache::Create(pool, {.batch = 16});
  ASSERT_THAT(cache, IsOk());
  absl::StatusOr<uint64_t> first_block = (*cache)->Allocate(64);
  ASSERT_THAT(first_block, IsOk());  // one refill: 15 more blocks held here
  const uint64_t heap_owned = OwnedBy(id, "heap");
  const uint64_t pool_owned = OwnedBy(id, "pool");
  EXPECT_EQ(heap_owned, 4u);  // 3 allocations + the arena's extent
  EXPECT_EQ(pool_owned, 16u);
  const sc::BlockCacheStats cache_before = (*cache)->Stats();

  SHMALLOC_ASSERT_OK(outage());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kReconnecting))
      << Names(log_->states());
  EXPECT_THAT(client_->SessionStatus(),
              StatusIs(absl::StatusCode::kUnavailable));

  // The hot paths need no daemon: the arena bumps its own cursor, the cache
  // hands out blocks it already holds.
  for (int i = 0; i < 100; ++i) {
    ASSERT_NE((*arena)->TryAllocate(512), nullptr) << i;
  }
  std::vector<uint64_t> blocks;
  for (int i = 0; i < 15; ++i) {
    absl::StatusOr<uint64_t> b = (*cache)->Allocate(64);
    ASSERT_THAT(b, IsOk()) << i;
    blocks.push_back(*b);
  }
  EXPECT_EQ((*cache)->Stats().allocate_rpcs, cache_before.allocate_rpcs);
  for (uint64_t b : blocks) SHMALLOC_EXPECT_OK((*cache)->Free(b, 64));

  SHMALLOC_ASSERT_OK(daemon_->Start());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kResumed))
      << Names(log_->states());
  EXPECT_EQ(Names(log_->states()), "CONNECTED RECONNECTING RESUMED");
  EXPECT_EQ(client_->session_id(), id);
  SHMALLOC_EXPECT_OK(client_->SessionStatus());

  // Still live, still ours, still holding what we wrote.
  EXPECT_EQ(OwnedBy(id, "heap"), heap_owned);
  EXPECT_EQ(OwnedBy(id, "pool"), pool_owned);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(static_cast<const char*>(held[i].data())[999], 'a' + i);
  }

  // Frees work, exactly once.
  const uint64_t offset = held[0].offset();
  const uint64_t generation = held[0].generation();
  SHMALLOC_EXPECT_OK(held[0].Free());
  EXPECT_EQ(OwnedBy(id, "heap"), heap_owned - 1);
  EXPECT_THAT(heap->Free(offset, generation),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(OwnedBy(id, "heap"), heap_owned - 1);
  held.clear();  // RAII frees the other two
  EXPECT_EQ(OwnedBy(id, "heap"), 1u);
  arena->reset();
  EXPECT_EQ(OwnedBy(id, "heap"), 0u);
  SHMALLOC_EXPECT_OK((*cache)->Free(*first_block, 64));
  SHMALLOC_EXPECT_OK((*cache)->Flush());
  EXPECT_EQ(OwnedBy(id, "pool"), 0u);
  EXPECT_EQ((*cache)->Stats().rejected_frees, 0u);
}

TEST_F(ReconnectTest, SigtermRestartIsRiddenThrough) {
  RideThrough([this] { return daemon_->Stop(); });
}

TEST_F(ReconnectTest, SigkillRestartIsRiddenThrough) {
  RideThrough([this] { return daemon_->Kill(); });
}

TEST_F(ReconnectTest, CallDuringOutageWaitsAndSucceedsAfterRestart) {
  StartDaemon();
  ConnectClient(/*call_wait=*/absl::Seconds(60));
  std::shared_ptr<sc::Region> heap = MakeRegion("heap", sc::Strategy::kBuddy);
  ASSERT_NE(heap, nullptr);
  SHMALLOC_ASSERT_OK(daemon_->Stop());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kReconnecting));

  absl::StatusOr<sc::Allocation> result = absl::UnknownError("not run");
  sc::ConnectionState state_at_call = sc::ConnectionState::kConnected;
  std::thread caller([&] {
    state_at_call = client_->connection_state();
    result = heap->Allocate(4096);
  });
  SHMALLOC_ASSERT_OK(daemon_->Start());
  caller.join();
  EXPECT_EQ(state_at_call, sc::ConnectionState::kReconnecting);
  ASSERT_THAT(result, IsOk());
  EXPECT_EQ(OwnedBy(client_->session_id(), "heap"), 1u);
  SHMALLOC_EXPECT_OK(result->Free());
  EXPECT_EQ(OwnedBy(client_->session_id(), "heap"), 0u);
}

TEST_F(ReconnectTest, DaemonDownPastCallWaitIsUnavailable) {
  StartDaemon();
  ConnectClient(/*call_wait=*/absl::Milliseconds(300));
  std::shared_ptr<sc::Region> heap = MakeRegion("heap", sc::Strategy::kBuddy);
  ASSERT_NE(heap, nullptr);
  SHMALLOC_ASSERT_OK(daemon_->Stop());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kReconnecting));

  const absl::Time start = absl::Now();
  absl::StatusOr<sc::Allocation> a = heap->Allocate(4096);
  const absl::Duration took = absl::Now() - start;
  EXPECT_THAT(a, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(a.status().message()), HasSubstr("reconnecting"));
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(5));
  EXPECT_THAT(client_->GetStats(), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(client_->ResetRegion("heap"),
              StatusIs(absl::StatusCode::kUnavailable));

  // Back again: the session resumes and calls work.
  SHMALLOC_ASSERT_OK(daemon_->Start());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kResumed));
  EXPECT_THAT(heap->Allocate(4096), IsOk());
}

TEST_F(ReconnectTest, GraceShorterThanOutageIsLost) {
  StartDaemon("limits { session_grace_ms: 50 }\n");
  // Slow backoff: the first attempt after the restart comes ~1 s later,
  // long after the 50 ms grace period.
  ConnectClient(/*call_wait=*/absl::Seconds(5),
                /*initial_backoff=*/absl::Seconds(1),
                /*max_backoff=*/absl::Seconds(1));
  const uint64_t id = client_->session_id();
  std::shared_ptr<sc::Region> heap = MakeRegion("heap", sc::Strategy::kBuddy);
  ASSERT_NE(heap, nullptr);
  absl::StatusOr<sc::Allocation> a = heap->Allocate(4096);
  ASSERT_THAT(a, IsOk());

  SHMALLOC_ASSERT_OK(daemon_->Stop());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kReconnecting));
  SHMALLOC_ASSERT_OK(daemon_->Start());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kLost))
      << Names(log_->states());
  EXPECT_EQ(Names(log_->states()), "CONNECTED RECONNECTING LOST");
  EXPECT_EQ(client_->connection_state(), sc::ConnectionState::kLost);
  EXPECT_EQ(client_->session_id(), id);  // never a new session in its place
  EXPECT_THAT(client_->SessionStatus(),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(client_->SessionStatus().message()),
              HasSubstr("lost"));
  absl::StatusOr<sc::Allocation> b = heap->Allocate(4096);
  EXPECT_THAT(b, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("session lost"));
  EXPECT_THAT(a->Free(), StatusIs(absl::StatusCode::kFailedPrecondition));

  // The daemon reclaimed the orphan and holds no session for this client.
  absl::StatusOr<v1::Stats> stats = GetStats(daemon_->stub());
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->sessions(), 0u);
  for (const v1::RegionStats& r : stats->regions()) {
    EXPECT_EQ(r.live_allocations(), 0u) << r.name();
  }
}

TEST_F(ReconnectTest, AllocationsInFlightAcrossAKillAreNeitherLostNorDoubled) {
  StartDaemon();
  ConnectClient(/*call_wait=*/absl::Seconds(60));
  const uint64_t id = client_->session_id();
  std::shared_ptr<sc::Region> pool =
      MakeRegion("pool", sc::Strategy::kPool, 64);
  ASSERT_NE(pool, nullptr);
  // Two threads allocate and free without pause while the daemon is killed
  // and restarted; some calls are in flight when it dies and are resent.
  // Each keeps at most kKeep handles, freeing the one it replaces.
  constexpr size_t kKeep = 100;
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<uint64_t> ops{0};
  std::vector<std::vector<sc::Allocation>> kept(2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        absl::StatusOr<sc::Allocation> a = pool->Allocate(64);
        if (!a.ok()) {
          errors.fetch_add(1);
          continue;
        }
        if (kept[t].size() < kKeep) {
          kept[t].push_back(*std::move(a));
        } else {
          sc::Allocation old = std::exchange(kept[t][i % kKeep], *std::move(a));
          if (!old.Free().ok()) errors.fetch_add(1);
        }
        ops.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  // Waiting on progress counters (a state), not on time.
  while (ops.load() < 300) std::this_thread::yield();
  SHMALLOC_ASSERT_OK(daemon_->Kill());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kReconnecting));
  SHMALLOC_ASSERT_OK(daemon_->Start());
  ASSERT_TRUE(log_->WaitFor(sc::ConnectionState::kResumed));
  const uint64_t at_resume = ops.load();
  while (ops.load() < at_resume + 300) std::this_thread::yield();
  stop.store(true);
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0);
  uint64_t live = 0;
  for (const auto& list : kept) {
    for (const sc::Allocation& a : list) live += a.valid();
  }
  EXPECT_EQ(live, 2 * kKeep);
  EXPECT_EQ(OwnedBy(id, "pool"), live);
  kept.clear();
  EXPECT_EQ(OwnedBy(id, "pool"), 0u);
}

}  // namespace
}  // namespace shmalloc::testing
