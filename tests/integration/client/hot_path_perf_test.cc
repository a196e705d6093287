// Figures of the hot paths against a real daemon, printed (not asserted:
// timing on shared CI machines is noise). Arena allocate with a store into
// each object, 1 and 2 threads, chunked and direct; BlockCache
// allocate+free pair (median of batches), 1 and 2 threads; the plain RPC
// pair for comparison. Figures are thread CPU time per operation (the RPC
// pair: wall time).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

// Region files on tmpfs (/dev/shm), as deployed: on a disk-backed shm_dir
// every first write to a page of a MAP_SHARED file faults for dirty tracking,
// which would swamp the figures.
class HotPathPerfTest : public ClientTest {
 protected:
  DaemonOptions Options() const override {
    return {.config_text = "", .extra_flags = {"--shm_dir=" + shm_dir_}};
  }
  void SetUp() override {
    ASSERT_NE(mkdtemp(shm_dir_.data()), nullptr);
    ClientTest::SetUp();
  }
  void TearDown() override {
    for (const char* name : {"arena", "pool"}) {
      client_->DeleteRegion(name, /*force=*/true).IgnoreError();
    }
    ClientTest::TearDown();
    // The daemon's own files (sessions, lock) stay behind it.
    std::filesystem::remove_all(shm_dir_);
  }
  std::string shm_dir_ = "/dev/shm/shmalloc-perf-XXXXXX";
};

// CPU time of the calling thread: the machines these run on are shared with
// parallel builds, so wall time mostly measures the scheduler.
int64_t ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

double NsSince(int64_t start, uint64_t ops) {
  return static_cast<double>(ThreadCpuNs() - start) / ops;
}

// Runs `body(thread)` on `threads` threads released together; returns the
// mean per-thread ns/op over `ops` operations per thread.
template <typename Body>
double PerThread(int threads, uint64_t ops, Body body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<double> ns(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      const int64_t start = ThreadCpuNs();
      body(t);
      ns[t] = NsSince(start, ops);
    });
  }
  while (ready.load() < threads) {
  }
  go.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();
  double sum = 0;
  for (double x : ns) sum += x;
  return sum / threads;
}

TEST_F(HotPathPerfTest, ArenaAllocateWithStore) {
  constexpr uint64_t kOps = 2'000'000;
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 256 << 20);
  ASSERT_NE(region, nullptr);
  // Write every page once first: on these virtual machines the first write
  // to a page costs microseconds even after MAP_POPULATE (host-side).
  std::memset(region->base() + region->heap_begin(), 0,
              region->heap_end() - region->heap_begin());
  for (auto mode :
       {sc::ArenaOptions::Mode::kChunked, sc::ArenaOptions::Mode::kDirect}) {
    for (int threads : {1, 2}) {
      absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
          sc::Arena::Create(region, {.mode = mode});
      ASSERT_THAT(arena, IsOk());
      sc::Arena& a = **arena;
      std::atomic<uint64_t> failures{0};
      const double ns = PerThread(threads, kOps, [&](int) {
        for (uint64_t i = 0; i < kOps; ++i) {
          auto* p = static_cast<uint64_t*>(a.TryAllocate(32));
          if (p == nullptr) {
            failures.fetch_add(1);
            return;
          }
          *p = i;
        }
      });
      EXPECT_EQ(failures.load(), 0u);
      std::printf(
          "arena %s, %d thread(s): %.2f ns per allocation+store\n",
          mode == sc::ArenaOptions::Mode::kChunked ? "chunked" : "direct",
          threads, ns);
      SHMALLOC_ASSERT_OK(a.Reset());
    }
  }
}

TEST_F(HotPathPerfTest, BlockCachePairAndRpcPair) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 64 << 20, 64);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::BlockCache>> cache =
      sc::BlockCache::Create(region);
  ASSERT_THAT(cache, IsOk());
  sc::BlockCache& c = **cache;
  constexpr int kBatches = 200;
  constexpr int kPerBatch = 10000;
  for (int threads : {1, 2}) {
    std::vector<std::vector<double>> medians(threads);
    PerThread(threads, 1, [&](int t) {
      std::vector<double> samples;
      for (int b = 0; b < kBatches; ++b) {
        const int64_t start = ThreadCpuNs();
        for (int i = 0; i < kPerBatch; ++i) {
          absl::StatusOr<uint64_t> off = c.Allocate(64);
          if (!off.ok()) return;
          c.Free(*off, 64).IgnoreError();
        }
        samples.push_back(NsSince(start, kPerBatch));
      }
      std::sort(samples.begin(), samples.end());
      medians[t] = samples;
    });
    for (int t = 0; t < threads; ++t) {
      ASSERT_EQ(medians[t].size(), size_t{kBatches});
      std::printf("block cache pair, %d thread(s), thread %d: median %.2f ns\n",
                  threads, t, medians[t][kBatches / 2]);
    }
  }
  constexpr int kRpcPairs = 2000;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRpcPairs; ++i) {
    absl::StatusOr<std::vector<sc::Extent>> e = region->AllocateExtents(64, 1);
    ASSERT_THAT(e, IsOk());
    SHMALLOC_ASSERT_OK(region->Free(e->front().offset));
  }
  std::printf("RPC allocate+free pair: %.0f ns wall\n",
              std::chrono::duration<double, std::nano>(
                  std::chrono::steady_clock::now() - start)
                      .count() /
                  kRpcPairs);
}

}  // namespace
}  // namespace shmalloc::testing
