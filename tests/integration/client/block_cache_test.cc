// The per-client BlockCache: many threads in a client_worker process, then a
// clean exit (everything returned by Free) or a SIGKILL (everything reclaimed
// with the session); and in-process behaviour.
#include "shmalloc/block_cache.h"

#include <atomic>
#include <memory_resource>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "shmalloc/memory_resource.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using BlockCacheTest = ClientTest;

TEST_F(BlockCacheTest, ManyThreadsThenCleanExitReturnsEveryBlock) {
  ASSERT_NE(MakeRegion("pool", sc::Strategy::kPool, 16 << 20, 64), nullptr);
  std::unique_ptr<ChildProcess> w =
      Worker({"cache", daemon_->target(), "pool", "4", "50000", "clean"});
  ASSERT_NE(w, nullptr);
  absl::StatusOr<std::string> line = w->ReadLine();
  ASSERT_THAT(line, IsOk());
  std::istringstream in(*line);
  std::string word;
  uint64_t from = 0, to = 0;
  in >> word >> from >> to;
  EXPECT_EQ(word, "ok") << *line;
  EXPECT_GT(from, 0u);
  EXPECT_EQ(from, to);  // returned by Free, not reclaimed by session end
  SHMALLOC_EXPECT_OK(w->WaitForSuccess());
  const sc::RegionStats stats = StatsOf("pool");
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_EQ(stats.used_bytes, 0u);
}

TEST_F(BlockCacheTest, SigkilledClientsBlocksAreReclaimed) {
  ASSERT_NE(MakeRegion("pool", sc::Strategy::kPool, 16 << 20, 64), nullptr);
  std::unique_ptr<ChildProcess> w =
      Worker({"cache", daemon_->target(), "pool", "4", "20000", "hold"});
  ASSERT_NE(w, nullptr);
  absl::StatusOr<std::string> line = w->ReadLine();
  ASSERT_THAT(line, IsOk());
  ASSERT_EQ(line->rfind("holding ", 0), 0u) << *line;
  EXPECT_GT(StatsOf("pool").live_allocations, 0u);
  w->Kill(SIGKILL);
  ASSERT_THAT(w->Wait(), IsOk());
  PollResult r = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.regions_size() == 1 && s.regions(0).live_allocations() == 0;
      },
      absl::Seconds(10));
  EXPECT_TRUE(r.done) << r.stats.DebugString();
}

TEST_F(BlockCacheTest, RefillsAndDrainsInBatches) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 4 << 20, 128);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 16);
  ASSERT_NE(cache, nullptr);
  sc::BlockCache& c = *cache;
  EXPECT_EQ(c.ClassSize(100), 128u);
  EXPECT_EQ(c.ClassSize(129), 0u);
  std::vector<uint64_t> blocks;
  for (int i = 0; i < 100; ++i) {
    absl::StatusOr<uint64_t> b = c.Allocate(128);
    ASSERT_THAT(b, IsOk());
    blocks.push_back(*b);
  }
  EXPECT_EQ(c.Stats().allocate_rpcs, 7u);  // ceil(100 / 16)
  EXPECT_EQ(StatsOf("pool").live_allocations, 112u);
  for (uint64_t b : blocks) SHMALLOC_ASSERT_OK(c.Free(b, 128));
  const sc::BlockCacheStats s = c.Stats();
  EXPECT_EQ(s.cached_blocks + s.blocks_to_daemon, s.blocks_from_daemon);
  EXPECT_LE(s.cached_blocks, 32u + 32u);
  SHMALLOC_ASSERT_OK(c.Flush());
  EXPECT_EQ(c.Stats().cached_blocks, 0u);
  EXPECT_EQ(StatsOf("pool").live_allocations, 0u);
  EXPECT_THAT(c.Allocate(129), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Free(1, 64), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(BlockCacheTest, ThreadExitHandsBlocksToTheCentralList) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 4 << 20, 64);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::BlockCache>> cache =
      sc::BlockCache::Create(region, {.batch = 8});
  ASSERT_THAT(cache, IsOk());
  std::thread t([&] {
    absl::StatusOr<uint64_t> b = (*cache)->Allocate(64);
    ASSERT_THAT(b, IsOk());
    SHMALLOC_ASSERT_OK((*cache)->Free(*b, 64));
  });
  t.join();
  // The exited thread's 8 blocks now serve this thread without an RPC.
  const uint64_t rpcs = (*cache)->Stats().allocate_rpcs;
  ASSERT_THAT((*cache)->Allocate(64), IsOk());
  EXPECT_EQ((*cache)->Stats().allocate_rpcs, rpcs);
  EXPECT_EQ((*cache)->Stats().thread_caches, 1u);  // adopted, not a new one
}

// A thread_local object made before its thread first used the cache is
// destroyed after anything the cache sets up for the thread; freeing (and
// allocating again) from its destructor must still find the thread's cache,
// and the thread's blocks still come back when it exits. (Before the exit
// hook became a pthread key destructor, this read a destroyed vector: ASan
// reports a heap-use-after-free.)
TEST_F(BlockCacheTest, ThreadLocalDestructorsMayStillUseTheCache) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 4 << 20, 64);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 8);
  ASSERT_NE(cache, nullptr);
  sc::BlockCache* c = cache.get();
  std::atomic<int> destructor_frees{0};
  std::thread t([&] {
    struct Holder {
      sc::BlockCache* cache = nullptr;
      std::atomic<int>* frees = nullptr;
      void* block = nullptr;
      ~Holder() {
        if (block == nullptr) return;
        if (cache->Free(block, 64).ok()) frees->fetch_add(1);
        void* again = cache->TryAllocate(64);
        if (again != nullptr && cache->Free(again, 64).ok())
          frees->fetch_add(1);
      }
    };
    thread_local Holder holder;  // constructed before the cache's first use
    holder.cache = c;
    holder.frees = &destructor_frees;
    holder.block = c->TryAllocate(64);
    ASSERT_NE(holder.block, nullptr);
  });
  t.join();
  EXPECT_EQ(destructor_frees.load(), 2);
  const sc::BlockCacheStats s = c->Stats();
  EXPECT_EQ(s.thread_caches, 1u);
  EXPECT_EQ(s.cached_blocks, s.blocks_from_daemon);
  // The exited thread's blocks, the two freed in its destructor among them,
  // serve this thread from the central list: no RPC.
  const uint64_t rpcs = s.allocate_rpcs;
  ASSERT_NE(c->TryAllocate(64), nullptr);
  EXPECT_EQ(c->Stats().allocate_rpcs, rpcs);
  EXPECT_EQ(c->Stats().thread_caches, 1u);  // adopted, not a new one
}

TEST_F(BlockCacheTest, SlabRegionPicksTheSmallestClass) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("slab", sc::Strategy::kSlab, 8 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::BlockCache>> cache =
      sc::BlockCache::Create(region);
  ASSERT_THAT(cache, IsOk());
  EXPECT_EQ((*cache)->ClassSize(17), 32u);
  sc::BlockCacheResource resource(**cache);
  {
    std::pmr::vector<uint64_t> v(&resource);
    for (uint64_t i = 0; i < 1000; ++i) v.push_back(i);
    EXPECT_THAT(region->ToOffset(v.data()), IsOk());
  }
  SHMALLOC_ASSERT_OK((*cache)->Flush());
  EXPECT_EQ(StatsOf("slab").live_allocations, 0u);
}

TEST_F(BlockCacheTest, OtherStrategiesAreRefused) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("buddy", sc::Strategy::kBuddy, 4 << 20);
  ASSERT_NE(region, nullptr);
  EXPECT_THAT(sc::BlockCache::Create(region),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace shmalloc::testing
