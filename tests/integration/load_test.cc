// Load: T client threads (default 16), each with its own channel and
// session, do N Allocate+Free pairs (default 10,000) through the RPC on
// regions of every freeing strategy, while a WatchStats stream runs. Every
// call is counted; a shared table of live offsets proves no extent is handed
// out twice; at the end every region is back to zero used bytes and nothing
// errored.
//
// Flags (after the gtest ones): --threads=T --iterations=N --seed=S
// --window=W (live allocations each thread keeps, default 8). The values are
// printed, so a failing run can be repeated.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

struct LoadParams {
  int threads = 16;
  int iterations = 10000;
  uint64_t seed = 20261125;
  int window = 8;
};
LoadParams params;

const std::vector<std::pair<std::string, v1::Strategy>> kRegions = {
    {"pool", v1::STRATEGY_POOL},
    {"buddy", v1::STRATEGY_BUDDY},
    {"slab", v1::STRATEGY_SLAB},
    {"free-list", v1::STRATEGY_FREE_LIST},
};

// The offsets currently live per region, as the clients see them.
class LiveTable {
 public:
  // Returns false when (region, offset) is already live: a double hand-out.
  bool Insert(const std::string& region, uint64_t offset) {
    absl::MutexLock lock(&mu_);
    return live_[region].insert(offset).second;
  }
  void Erase(const std::string& region, uint64_t offset) {
    absl::MutexLock lock(&mu_);
    live_[region].erase(offset);
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::set<uint64_t>> live_ ABSL_GUARDED_BY(mu_);
};

struct Counters {
  std::atomic<uint64_t> allocations{0};
  std::atomic<uint64_t> frees{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> double_handouts{0};
};

class LoadTest : public DaemonTest {};

// Runs one client thread: `iterations` Allocate calls, each later matched by
// exactly one Free.
void Client(DaemonProcess& daemon, int index, absl::Barrier* start,
            LiveTable& table, Counters& counters, std::string& first_error) {
  std::shared_ptr<grpc::Channel> channel = daemon.NewChannel();
  std::unique_ptr<v1::Allocator::Stub> stub = v1::Allocator::NewStub(channel);
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Open(*stub, absl::StrCat("load-", index));
  std::mt19937_64 rng(params.seed + static_cast<uint64_t>(index));
  auto fail = [&](const absl::Status& s) {
    if (counters.errors.fetch_add(1) == 0) first_error = s.ToString();
  };
  if (start->Block()) delete start;
  if (!session.ok()) return fail(session.status());
  std::vector<std::pair<std::string, uint64_t>> window;
  auto free_one = [&](size_t i) {
    auto [region, offset] = window[i];
    window[i] = window.back();
    window.pop_back();
    table.Erase(region, offset);
    absl::StatusOr<v1::FreeResponse> f =
        Free(*stub, **session, region, {offset});
    if (!f.ok()) return fail(f.status());
    counters.frees.fetch_add(1, std::memory_order_relaxed);
  };
  for (int i = 0; i < params.iterations; ++i) {
    const std::string& region = kRegions[rng() % kRegions.size()].first;
    const uint64_t size = region == "pool" ? 64 : 1 + rng() % 2048;
    absl::StatusOr<v1::AllocateResponse> a =
        Allocate(*stub, **session, region, size);
    if (!a.ok()) {
      fail(a.status());
      continue;
    }
    counters.allocations.fetch_add(1, std::memory_order_relaxed);
    const uint64_t offset = a->extents(0).offset();
    if (!table.Insert(region, offset)) counters.double_handouts.fetch_add(1);
    window.emplace_back(region, offset);
    if (static_cast<int>(window.size()) > params.window) {
      free_one(rng() % window.size());
    }
  }
  while (!window.empty()) free_one(window.size() - 1);
}

TEST_F(LoadTest, ConcurrentAllocateFreeWithWatchStatsEndsAtZero) {
  std::printf("load: --threads=%d --iterations=%d --seed=%llu --window=%d\n",
              params.threads, params.iterations,
              static_cast<unsigned long long>(params.seed), params.window);
  for (const auto& [name, strategy] : kRegions) {
    ASSERT_THAT(CreateRegion(stub(), name, strategy, 16 << 20), IsOk());
  }

  // The watcher: every update must be internally consistent.
  grpc::ClientContext watch_context;
  v1::WatchStatsRequest watch_request;
  watch_request.set_interval_ms(50);
  std::unique_ptr<grpc::ClientReader<v1::Stats>> watch =
      stub().WatchStats(&watch_context, watch_request);
  std::atomic<int> updates{0};
  std::atomic<int> inconsistent{0};
  std::thread watcher([&] {
    v1::Stats stats;
    while (watch->Read(&stats)) {
      updates.fetch_add(1);
      for (const v1::RegionStats& r : stats.regions()) {
        if (r.used_bytes() + r.free_bytes() != r.capacity_bytes()) {
          inconsistent.fetch_add(1);
        }
      }
    }
  });

  LiveTable table;
  Counters counters;
  std::string first_error;
  auto* start = new absl::Barrier(params.threads + 1);
  std::vector<std::thread> clients;
  for (int t = 0; t < params.threads; ++t) {
    clients.emplace_back(Client, std::ref(*daemon_), t, start, std::ref(table),
                         std::ref(counters), std::ref(first_error));
  }
  if (start->Block()) delete start;
  const absl::Time begin = absl::Now();
  for (std::thread& t : clients) t.join();
  const absl::Duration elapsed = absl::Now() - begin;
  const uint64_t pairs = counters.allocations.load();
  std::printf(
      "load: %llu allocate+free pairs (%llu RPCs) in %s: %.0f RPC/s, "
      "%.1f us per pair per thread; %d WatchStats updates\n",
      static_cast<unsigned long long>(pairs),
      static_cast<unsigned long long>(pairs + counters.frees.load()),
      absl::FormatDuration(elapsed).c_str(),
      2.0 * pairs / absl::ToDoubleSeconds(elapsed),
      absl::ToDoubleMicroseconds(elapsed) * params.threads / pairs,
      updates.load());

  EXPECT_EQ(counters.errors.load(), 0u) << first_error;
  EXPECT_EQ(counters.double_handouts.load(), 0u);
  const uint64_t expected =
      static_cast<uint64_t>(params.threads) * params.iterations;
  EXPECT_EQ(counters.allocations.load(), expected);
  EXPECT_EQ(counters.frees.load(), expected);

  // Sessions are closed by now (each thread's Session went out of scope),
  // and their allocations were all freed explicitly: zero with no reclaim.
  absl::StatusOr<v1::Stats> stats = GetStats(stub());
  ASSERT_THAT(stats, IsOk());
  for (const v1::RegionStats& r : stats->regions()) {
    SCOPED_TRACE(r.name());
    EXPECT_EQ(r.used_bytes(), 0u);
    EXPECT_EQ(r.live_allocations(), 0u);
    EXPECT_EQ(r.failed_allocations(), 0u);
    EXPECT_GT(r.peak_used_bytes(), 0u);
  }
  // (Streams ended by the client count as CANCELLED; only the unary calls
  // of the load must be error-free.)
  for (const v1::RpcCount& rpc : stats->rpcs()) {
    if (rpc.method() == "Allocate" || rpc.method() == "Free") {
      EXPECT_EQ(rpc.calls(), expected) << rpc.method();
      EXPECT_EQ(rpc.errors_size(), 0) << rpc.method();
    }
  }

  watch_context.TryCancel();
  watcher.join();
  (void)watch->Finish();
  EXPECT_GE(updates.load(), 2);
  EXPECT_EQ(inconsistent.load(), 0);
}

}  // namespace
}  // namespace shmalloc::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  using shmalloc::testing::params;
  for (int i = 1; i < argc; ++i) {
    const char* arg = argv[i];
    auto value = [arg](const char* flag) -> const char* {
      size_t n = std::strlen(flag);
      return std::strncmp(arg, flag, n) == 0 ? arg + n : nullptr;
    };
    if (const char* v = value("--threads=")) {
      params.threads = std::atoi(v);
    } else if (const char* v = value("--iterations=")) {
      params.iterations = std::atoi(v);
    } else if (const char* v = value("--seed=")) {
      params.seed = std::strtoull(v, nullptr, 10);
    } else if (const char* v = value("--window=")) {
      params.window = std::atoi(v);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", arg);
      return 2;
    }
  }
  return RUN_ALL_TESTS();
}
