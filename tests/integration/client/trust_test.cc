// The client library against a misbehaving neighbour and stale handles
// (issue 9, client side): a real shmallocd, real shared memory, and a second
// process (client_scribbler, fork/exec'd) that writes the ARENA cursor and
// bounds in the shared header. The honest client must get DATA_LOSS, never a
// pointer outside its mapping; stale Allocations and BlockCaches (after a
// forced reset, after delete + re-create) and double, foreign and wrong-class
// BlockCache frees are refused and leave other sessions' blocks alone.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using ::absl::StatusCode;
using ::testing::HasSubstr;

// Where the shared ARENA metadata keeps its words (common/segment_header.h,
// allocators/allocator.h MetaHeader, allocators/arena.h ArenaMeta).
constexpr uint64_t kMetaBegin = 256 + 16;
constexpr uint64_t kMetaEnd = 256 + 24;
constexpr uint64_t kCursor = 256 + 64;

class TrustTest : public ClientTest {
 protected:
  // Runs client_scribbler on `region` with OFFSET=VALUE words; returns once
  // it wrote them (its "done" line), so no sleep is needed.
  void Scribble(const std::string& region,
                const std::vector<std::pair<uint64_t, uint64_t>>& words) {
    std::vector<std::string> args = {daemon_->target(), region};
    for (const auto& [offset, value] : words) {
      args.push_back(absl::StrCat(offset, "=", value));
    }
    absl::StatusOr<std::unique_ptr<ChildProcess>> child =
        ChildProcess::Start(CLIENT_SCRIBBLER_PATH, args);
    ASSERT_THAT(child, IsOk());
    absl::StatusOr<std::string> line = (*child)->ReadLine();
    ASSERT_THAT(line, IsOk());
    EXPECT_EQ(*line, "done");
    EXPECT_THAT((*child)->WaitForSuccess(), IsOk());
  }

  // True when [p, p + size) lies in the heap of `region` as mapped here.
  static bool InHeap(const sc::Region& region, const void* p, uint64_t size) {
    const auto* b = static_cast<const std::byte*>(p);
    return b >= region.base() + region.heap_begin() &&
           b + size <= region.base() + region.heap_end();
  }
};

TEST_F(TrustTest, ScribbledArenaCursorIsDataLossNeverAWildPointer) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 1 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> chunked =
      sc::Arena::Create(region);
  ASSERT_THAT(chunked, IsOk());
  absl::StatusOr<std::unique_ptr<sc::Arena>> direct =
      sc::Arena::Create(region, {.mode = sc::ArenaOptions::Mode::kDirect});
  ASSERT_THAT(direct, IsOk());
  void* before = (*chunked)->TryAllocate(64);
  ASSERT_NE(before, nullptr);
  EXPECT_TRUE(InHeap(*region, before, 64));
  (*chunked)->Flush();  // the next allocation claims from the shared cursor

  const uint64_t past_eof = region->heap_end() + (1 << 20);
  const uint64_t wraps_to_zero = std::numeric_limits<uint64_t>::max() - 7;
  for (uint64_t bad : {past_eof, wraps_to_zero, uint64_t{0}}) {
    SCOPED_TRACE(absl::StrCat("cursor scribbled to ", bad));
    Scribble("arena", {{kCursor, bad}});
    EXPECT_THAT((*chunked)->Allocate(64), StatusIs(StatusCode::kDataLoss));
    EXPECT_EQ((*chunked)->TryAllocate(64), nullptr);
    EXPECT_THAT((*direct)->Allocate(64), StatusIs(StatusCode::kDataLoss));
    EXPECT_EQ((*direct)->TryAllocate(64), nullptr);
    // A large request goes straight to the shared cursor too.
    EXPECT_THAT((*chunked)->Allocate(256 << 10),
                StatusIs(StatusCode::kDataLoss));
    // The daemon's own Allocate on the region: an error, never an extent
    // outside the heap (the client checks whatever the daemon answers).
    absl::StatusOr<sc::Allocation> rpc =
        region->Allocate(64, {.detached = true});
    EXPECT_THAT(rpc, StatusIs(StatusCode::kDataLoss));
  }

  // An operator's forced reset repairs the cursor; allocation resumes inside
  // the mapping.
  ASSERT_THAT(region->Reset(/*force=*/true), IsOk());
  for (int i = 0; i < 2000; ++i) {
    void* p = (*chunked)->TryAllocate(64);
    ASSERT_NE(p, nullptr);
    ASSERT_TRUE(InHeap(*region, p, 64));
    void* q = (*direct)->TryAllocate(48);
    ASSERT_NE(q, nullptr);
    ASSERT_TRUE(InHeap(*region, q, 48));
  }
}

TEST_F(TrustTest, ScribbledArenaBoundsAreRefusedAtCreate) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("bounds", sc::Strategy::kArena, 1 << 20);
  ASSERT_NE(region, nullptr);
  // An Arena made before the scribble keeps the bounds it validated.
  absl::StatusOr<std::unique_ptr<sc::Arena>> early = sc::Arena::Create(region);
  ASSERT_THAT(early, IsOk());
  const uint64_t heap_begin = region->heap_begin();
  const uint64_t heap_end = region->heap_end();

  // End past the file (the cursor inside it, so the arena looks sane).
  Scribble("bounds", {{kMetaEnd, heap_end + (16 << 20)}});
  EXPECT_THAT(sc::Arena::Create(region), StatusIs(StatusCode::kDataLoss));
  // Begin inside the header (offset 0 would be handed out).
  Scribble("bounds", {{kMetaEnd, heap_end}, {kMetaBegin, 0}, {kCursor, 0}});
  EXPECT_THAT(sc::Arena::Create(region), StatusIs(StatusCode::kDataLoss));
  // The early Arena's claims are checked against its own bounds.
  Scribble("bounds", {{kMetaBegin, heap_begin}, {kCursor, 64}});
  EXPECT_THAT((*early)->Allocate(64), StatusIs(StatusCode::kDataLoss));

  Scribble("bounds", {{kCursor, heap_begin}});
  absl::StatusOr<std::unique_ptr<sc::Arena>> late = sc::Arena::Create(region);
  ASSERT_THAT(late, IsOk());
  absl::StatusOr<uint64_t> at = (*late)->Allocate(64);
  ASSERT_THAT(at, IsOk());
  EXPECT_GE(*at, heap_begin);
  EXPECT_LE(*at + 64, heap_end);
}

TEST_F(TrustTest, StaleAllocationAfterForcedResetIsRefused) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 64 << 10, 4096);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<sc::Allocation> old = region->Allocate(4096);
  ASSERT_THAT(old, IsOk());
  const uint64_t offset = old->offset();
  ASSERT_THAT(region->Reset(/*force=*/true), IsOk());

  // Another session now owns blocks, the old offset among them.
  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<std::shared_ptr<sc::Region>> theirs =
      (*other)->OpenRegion("pool");
  ASSERT_THAT(theirs, IsOk());
  absl::StatusOr<std::vector<sc::Allocation>> live =
      (*theirs)->AllocateBatch(4096, 15);
  ASSERT_THAT(live, IsOk());
  bool reissued = false;
  for (const sc::Allocation& a : *live) {
    reissued |= a.offset() == offset;
  }
  EXPECT_TRUE(reissued);

  EXPECT_THAT(old->Free(), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_TRUE(old->valid());
  { sc::Allocation gone = *std::move(old); }  // the destructor tries again
  EXPECT_EQ(StatsOf("pool").live_allocations, 15u);
}

TEST_F(TrustTest, StaleHandlesAfterDeleteAndRecreateAreRefused) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("again", sc::Strategy::kPool, 64 << 10, 4096);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<sc::Allocation> old = region->Allocate(4096);
  ASSERT_THAT(old, IsOk());
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 4);
  ASSERT_NE(cache, nullptr);
  absl::StatusOr<uint64_t> cached = cache->Allocate(4096);
  ASSERT_THAT(cached, IsOk());
  const uint64_t old_incarnation = region->incarnation();
  EXPECT_NE(old_incarnation, 0u);

  ASSERT_THAT(client_->DeleteRegion("again", /*force=*/true), IsOk());
  sc::CreateRegionOptions o;
  o.name = "again";
  o.strategy = sc::Strategy::kPool;
  o.size_bytes = 64 << 10;
  o.block_size = 4096;
  absl::StatusOr<sc::RegionInfo> info = client_->CreateRegion(o);
  ASSERT_THAT(info, IsOk());
  EXPECT_NE(info->incarnation, old_incarnation);
  // Another session fills the new region (generation 0 again, like the old).
  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<std::shared_ptr<sc::Region>> fresh =
      (*other)->OpenRegion("again");
  ASSERT_THAT(fresh, IsOk());
  absl::StatusOr<std::vector<sc::Allocation>> live =
      (*fresh)->AllocateBatch(4096, 15);
  ASSERT_THAT(live, IsOk());

  EXPECT_THAT(region->CheckIncarnation(),
              StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(old->Free(), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(region->Free(old->offset()),
              StatusIs(StatusCode::kFailedPrecondition));
  // Refused by the daemon (the request carries the incarnation mapped
  // here; no stat() of the data file): nothing allocated in the new region.
  const absl::Status refused = region->Allocate(4096).status();
  EXPECT_THAT(refused, StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("re-created"));
  EXPECT_EQ(StatsOf("again").live_allocations, 15u);
  // The cache's next daemon call finds out, and from then on refuses all.
  EXPECT_THAT(cache->Flush(), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(cache->Allocate(4096), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_THAT(cache->Free(*cached, 4096),
              StatusIs(StatusCode::kFailedPrecondition));
  { sc::Allocation gone = *std::move(old); }
  cache.reset();
  EXPECT_EQ(StatsOf("again").live_allocations, 15u);
}

TEST_F(TrustTest, BlockCacheRefusesDoubleForeignAndWrongClassFrees) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("slab", sc::Strategy::kSlab, 4 << 20);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 8);
  ASSERT_NE(cache, nullptr);
  absl::StatusOr<uint64_t> small = cache->Allocate(16);
  ASSERT_THAT(small, IsOk());
  absl::StatusOr<uint64_t> big = cache->Allocate(1024);
  ASSERT_THAT(big, IsOk());

  // Wrong class: a 16-byte block freed as 1024 bytes would be re-issued to
  // a caller that writes 1024 bytes into it.
  EXPECT_THAT(cache->Free(*small, 1024),
              StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(cache->Free(*small, 16), IsOk());
  // Double free.
  EXPECT_THAT(cache->Free(*small, 16),
              StatusIs(StatusCode::kFailedPrecondition));
  // Inside a block, not at its start.
  EXPECT_THAT(cache->Free(*big + 16, 1024),
              StatusIs(StatusCode::kFailedPrecondition));
  // Foreign: a block another session allocated through the daemon.
  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<std::shared_ptr<sc::Region>> theirs =
      (*other)->OpenRegion("slab");
  ASSERT_THAT(theirs, IsOk());
  absl::StatusOr<sc::Allocation> foreign = (*theirs)->Allocate(16);
  ASSERT_THAT(foreign, IsOk());
  EXPECT_THAT(cache->Free(foreign->offset(), 16),
              StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_EQ(cache->Stats().refused_frees, 4u);

  // Nothing refused was re-issued: the double-freed block comes back once,
  // the foreign one never.
  int seen_small = 0;
  for (int i = 0; i < 64; ++i) {
    absl::StatusOr<uint64_t> o = cache->Allocate(16);
    ASSERT_THAT(o, IsOk());
    EXPECT_NE(*o, foreign->offset());
    seen_small += *o == *small;
  }
  EXPECT_EQ(seen_small, 1);
}

TEST_F(TrustTest, BlockCacheDropsAndRefusesBlocksFromBeforeAReset) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("cache", sc::Strategy::kPool, 256 << 10, 1024);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 16);
  ASSERT_NE(cache, nullptr);
  absl::StatusOr<uint64_t> held = cache->Allocate(1024);
  ASSERT_THAT(held, IsOk());
  ASSERT_THAT(region->Reset(/*force=*/true), IsOk());
  // Another session takes most of the region, old blocks included.
  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<std::shared_ptr<sc::Region>> theirs =
      (*other)->OpenRegion("cache");
  ASSERT_THAT(theirs, IsOk());
  absl::StatusOr<std::vector<sc::Allocation>> live =
      (*theirs)->AllocateBatch(1024, 200);
  ASSERT_THAT(live, IsOk());
  std::vector<bool> theirs_at(region->heap_end() / 1024 + 1, false);
  for (const sc::Allocation& a : *live) {
    theirs_at[a.offset() / 1024] = true;
  }

  // The pre-reset block is stale; the cached ones are never handed out.
  EXPECT_THAT(cache->Free(*held, 1024),
              StatusIs(StatusCode::kFailedPrecondition));
  for (int i = 0; i < 40; ++i) {
    absl::StatusOr<uint64_t> o = cache->Allocate(1024);
    ASSERT_THAT(o, IsOk());
    EXPECT_FALSE(theirs_at[*o / 1024]) << "offset " << *o << " is theirs";
  }
  EXPECT_GE(cache->Stats().stale_blocks, 15u);
  ASSERT_THAT(cache->Flush(), IsOk());
  EXPECT_EQ(StatsOf("cache").live_allocations, 200u + 40u);
}

// The inline hit paths of TryAllocate / Free(void*) (a thread-local slot per
// cache) refuse what the core's paths refuse: double, inside-a-block,
// wrong-size, foreign, outside-the-mapping and stale (reset) frees; after a
// reset they never hand out a block that is now another session's.
TEST_F(TrustTest, BlockCacheInlinePathsRefuseAsTheCorePaths) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("inline", sc::Strategy::kPool, 256 << 10, 1024);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 16);
  ASSERT_NE(cache, nullptr);
  sc::BlockCache& c = *cache;
  void* p = c.TryAllocate(1024);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(InHeap(*region, p, 1024));
  void* q = c.TryAllocate(100);  // any size of the class
  ASSERT_NE(q, nullptr);
  EXPECT_NE(p, q);

  EXPECT_THAT(c.Free(p, 1025), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Free(p, 0), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Free(static_cast<std::byte*>(p) + 64, 1024),
              StatusIs(StatusCode::kFailedPrecondition));
  int outside = 0;
  EXPECT_THAT(c.Free(&outside, 1024), StatusIs(StatusCode::kInvalidArgument));
  EXPECT_THAT(c.Free(p, 512), IsOk());
  EXPECT_THAT(c.Free(p, 1024), StatusIs(StatusCode::kFailedPrecondition));

  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<std::shared_ptr<sc::Region>> theirs =
      (*other)->OpenRegion("inline");
  ASSERT_THAT(theirs, IsOk());
  absl::StatusOr<sc::Allocation> foreign = (*theirs)->Allocate(1024);
  ASSERT_THAT(foreign, IsOk());
  EXPECT_THAT(c.Free(region->base() + foreign->offset(), 1024),
              StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_EQ(c.Stats().refused_frees, 3u);

  // A reset in another session: q is stale, the cached blocks are dropped.
  ASSERT_THAT((*theirs)->Reset(/*force=*/true), IsOk());
  absl::StatusOr<std::vector<sc::Allocation>> live =
      (*theirs)->AllocateBatch(1024, 200);
  ASSERT_THAT(live, IsOk());
  std::vector<bool> theirs_at(region->heap_end() / 1024 + 1, false);
  for (const sc::Allocation& a : *live) {
    theirs_at[a.offset() / 1024] = true;
  }
  EXPECT_THAT(c.Free(q, 1024), StatusIs(StatusCode::kFailedPrecondition));
  for (int i = 0; i < 40; ++i) {
    void* o = c.TryAllocate(1024);
    ASSERT_NE(o, nullptr);
    const uint64_t offset =
        static_cast<uint64_t>(static_cast<std::byte*>(o) - region->base());
    EXPECT_FALSE(theirs_at[offset / 1024]) << "offset " << offset;
    EXPECT_THAT(c.Free(o, 1024), IsOk());
  }
  EXPECT_GE(c.Stats().stale_blocks, 15u);
  ASSERT_THAT(c.Flush(), IsOk());
}

// A cache found stale (region deleted and re-created) by one thread refuses
// the inline hit path of every other thread that still holds cached blocks.
TEST_F(TrustTest, BlockCachePoisonedByOneThreadMissesInAll) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("gone", sc::Strategy::kPool, 64 << 10, 1024);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<sc::BlockCache> cache = MakeCache(region, 8);
  ASSERT_NE(cache, nullptr);
  sc::BlockCache& c = *cache;
  void* held = c.TryAllocate(1024);  // this thread now caches 7 blocks
  ASSERT_NE(held, nullptr);

  ASSERT_THAT(client_->DeleteRegion("gone", /*force=*/true), IsOk());
  sc::CreateRegionOptions o;
  o.name = "gone";
  o.strategy = sc::Strategy::kPool;
  o.size_bytes = 64 << 10;
  o.block_size = 1024;
  ASSERT_THAT(client_->CreateRegion(o), IsOk());
  // Another thread's refill finds the region re-created.
  std::thread([&c] { EXPECT_EQ(c.TryAllocate(1024), nullptr); }).join();
  EXPECT_EQ(c.TryAllocate(1024), nullptr);
  EXPECT_THAT(c.Free(held, 1024), StatusIs(StatusCode::kFailedPrecondition));
  EXPECT_EQ(StatsOf("gone").live_allocations, 0u);
}

TEST_F(TrustTest, AllocationSpanNeverLeavesTheMapping) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("span", sc::Strategy::kFreeList, 1 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<sc::Allocation> a = region->Allocate(100);
  ASSERT_THAT(a, IsOk());
  EXPECT_TRUE(InHeap(*region, a->data(), a->size()));
  // A handle built from an offset past the mapping (as a corrupted hand-off
  // would give) has no bytes.
  sc::Allocation wild(region, {region->heap_end() - 8, 64}, 0, false);
  EXPECT_EQ(wild.data(), nullptr);
  EXPECT_TRUE(wild.span().empty());
  sc::Allocation header(region, {0, 64}, 0, false);
  EXPECT_EQ(header.data(), nullptr);
}

// An extent arena smaller than a chunk: claiming a chunk is refused as too
// large, which is not damage; requests go straight to the shared cursor.
TEST_F(TrustTest, ExtentArenaSmallerThanAChunkAllocatesDirectly) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("small", sc::Strategy::kFreeList, 1 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
      sc::Arena::Create(region, {.capacity_bytes = 16 << 10});
  ASSERT_THAT(arena, IsOk());
  void* a = (*arena)->TryAllocate(100);
  void* b = (*arena)->TryAllocate(100, 64);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a, b);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 64, 0u);
  EXPECT_TRUE(InHeap(*region, b, 100));
  EXPECT_THAT((*arena)->Allocate(64 << 10),
              StatusIs(StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace shmalloc::testing
