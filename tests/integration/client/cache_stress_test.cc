// Many-thread stress of the client's per-thread tables (issue 9, review M8
// and L2): Arenas whose ids collide in the 8-slot chunk table, many Arenas
// used at random by several threads (patterns verified, no overlap), and
// BlockCache thread exits racing Flush, with blocks handed across threads.
// A real shmallocd and real shared memory; meant for TSan as well (the
// interesting code is the client library's, not gRPC's).
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using CacheStressTest = ClientTest;

// Two Arenas made one after the other in one thread have consecutive ids,
// so among a[0] and a[1..8] exactly one partner shares a[0]'s slot. Before
// the table kept displaced chunks, alternating such a pair burnt a fresh
// 64 KiB chunk per allocation (4096x the bytes handed out).
TEST_F(CacheStressTest, CollidingArenasAlternatingStayBounded) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("collide", sc::Strategy::kArena, 16 << 20);
  ASSERT_NE(region, nullptr);
  std::vector<std::unique_ptr<sc::Arena>> arenas;
  for (int i = 0; i < 9; ++i) {
    absl::StatusOr<std::unique_ptr<sc::Arena>> a = sc::Arena::Create(region);
    ASSERT_THAT(a, IsOk());
    arenas.push_back(*std::move(a));
  }
  constexpr int kPairs = 4000;
  for (int k = 1; k <= 8; ++k) {
    for (int i = 0; i < kPairs; ++i) {
      ASSERT_NE(arenas[0]->TryAllocate(16), nullptr);
      ASSERT_NE(arenas[k]->TryAllocate(16), nullptr);
    }
  }
  // 8 * 2 * 4000 * 16 bytes = 1 MiB handed out; allow every Arena two
  // partly used chunks on top.
  uint64_t claimed = 0;
  for (const auto& a : arenas) {
    claimed += a->Stats().claimed_bytes;
  }
  EXPECT_LE(claimed, (1u << 20) + 9u * 2 * (64u << 10));
  EXPECT_EQ(arenas[0]->Stats().chunks, uint64_t{(8 * kPairs * 16) >> 16} + 1);
}

TEST_F(CacheStressTest, ManyThreadsManyArenasNeverOverlap) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("many", sc::Strategy::kArena, 32 << 20);
  ASSERT_NE(region, nullptr);
  // 10 Arenas, every other id skipped: homes collide in pairs and the table
  // (8 slots) overflows, so threads displace, swap back and evict (the
  // registry path) all the time. Small chunks keep the evicted tails cheap.
  constexpr int kArenas = 10;
  constexpr int kThreads = 4;
  constexpr int kIters = 20000;
  std::vector<std::unique_ptr<sc::Arena>> arenas;
  for (int i = 0; i < 2 * kArenas; ++i) {
    absl::StatusOr<std::unique_ptr<sc::Arena>> a =
        sc::Arena::Create(region, {.chunk_bytes = 512});
    ASSERT_THAT(a, IsOk());
    if (i % 2 == 0) {
      arenas.push_back(*std::move(a));
    }
  }
  const uint64_t seed = std::random_device{}();
  std::cout << "seed " << seed << std::endl;
  std::vector<std::vector<std::pair<uint64_t*, uint64_t>>> got(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed + t);
      for (int i = 0; i < kIters; ++i) {
        sc::Arena& a = *arenas[rng() % kArenas];
        const uint64_t words = 1 + rng() % 8;
        auto* p = static_cast<uint64_t*>(a.TryAllocate(words * 8, 8));
        if (p == nullptr) {
          return;
        }
        const uint64_t tag =
            (static_cast<uint64_t>(t) << 32) | static_cast<uint64_t>(i);
        std::fill(p, p + words, tag);
        got[t].emplace_back(p, words);
      }
      for (auto& a : arenas) {
        a->Flush();
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }
  std::vector<std::pair<uint64_t*, uint64_t>> all;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(got[t].size(), size_t{kIters}) << "thread " << t;
    for (size_t i = 0; i < got[t].size(); ++i) {
      const uint64_t tag = (static_cast<uint64_t>(t) << 32) | i;
      const auto [p, words] = got[t][i];
      ASSERT_TRUE(
          std::all_of(p, p + words, [tag](uint64_t w) { return w == tag; }))
          << "allocation " << i << " of thread " << t << " overwritten";
      all.push_back(got[t][i]);
    }
  }
  std::sort(all.begin(), all.end());
  for (size_t i = 1; i < all.size(); ++i) {
    ASSERT_LE(all[i - 1].first + all[i - 1].second, all[i].first);
  }
  for (const auto& a : arenas) {
    const sc::ArenaStats s = a->Stats();
    EXPECT_EQ(s.open_chunk_bytes, 0u);
    EXPECT_EQ(s.claimed_bytes, s.handed_out_bytes + s.leftover_bytes);
  }
}

// Threads that used a BlockCache exit (their exit hook moves their lists to
// the central lists) while the owner flushes; blocks also cross threads
// (allocated in one, freed in another). The daemon ends with nothing live.
TEST_F(CacheStressTest, ThreadExitRacesFlushAndBlocksCrossThreads) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("exit", sc::Strategy::kPool, 4 << 20, 256);
  ASSERT_NE(region, nullptr);
  constexpr int kRounds = 20;
  constexpr int kThreads = 4;
  for (int round = 0; round < kRounds; ++round) {
    absl::StatusOr<std::unique_ptr<sc::BlockCache>> cache =
        sc::BlockCache::Create(
            region,
            {.batch = 16, .thread_capacity = 64, .central_capacity = 64});
    ASSERT_THAT(cache, IsOk());
    std::mutex mu;
    std::condition_variable cv;
    std::deque<uint64_t> handoff;  // allocated by one thread, freed by another
    int done = 0;
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<uint64_t> mine;
        for (int i = 0; i < 200; ++i) {
          absl::StatusOr<uint64_t> o = (*cache)->Allocate(256);
          ASSERT_THAT(o, IsOk());
          *static_cast<uint64_t*>(region->ToPointer(*o)) = *o;
          if (i % 2 == 0) {
            std::lock_guard<std::mutex> lock(mu);
            handoff.push_back(*o);
          } else {
            mine.push_back(*o);
          }
        }
        for (int i = 0; i < 100; ++i) {
          uint64_t o;
          {
            std::unique_lock<std::mutex> lock(mu);
            cv.wait(lock, [&] { return !handoff.empty(); });
            o = handoff.front();
            handoff.pop_front();
          }
          cv.notify_all();
          ASSERT_EQ(*static_cast<uint64_t*>(region->ToPointer(o)), o);
          ASSERT_THAT((*cache)->Free(o, 256), IsOk());
        }
        for (uint64_t o : mine) {
          ASSERT_THAT((*cache)->Free(o, 256), IsOk());
        }
        {
          std::lock_guard<std::mutex> lock(mu);
          ++done;
        }
        cv.notify_all();
        (void)t;
      });  // returning runs the thread's exit hook
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return done == kThreads; });
    }
    // The threads are exiting now: their hooks race this Flush.
    EXPECT_THAT((*cache)->Flush(), IsOk());
    for (std::thread& th : threads) {
      th.join();
    }
    EXPECT_THAT((*cache)->Flush(), IsOk());
    EXPECT_EQ((*cache)->Stats().cached_blocks, 0u);
    cache->reset();
    ASSERT_EQ(StatsOf("exit").live_allocations, 0u) << "round " << round;
  }
}

}  // namespace
}  // namespace shmalloc::testing
