// O(1) Stats (issue 9 item 7, review M5): Pool keeps live/requested counters
// and FreeList its largest free extent in the metadata. These tests check the
// kept values against a walk of the metadata after random operations, the
// upgrade of metadata made before the counters existed, and that the counter
// stores are inside the operation's transaction (an Abort restores them).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "allocators/factory.h"
#include "allocators/free_list.h"
#include "allocators/pool.h"
#include "allocators/undo_log.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::IsOk;

constexpr uint64_t kBegin = 4096;

std::span<std::byte> AsBytes(std::vector<uint64_t>& storage) {
  return std::as_writable_bytes(std::span<uint64_t>(storage));
}

uint64_t Seed() {
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

AllocatorOptions PoolOptions() {
  AllocatorOptions o;
  o.strategy = Strategy::kPool;
  o.begin = kBegin;
  o.end = kBegin + 64 * 512;
  o.block_size = 64;
  return o;
}

AllocatorOptions FreeListOptions() {
  AllocatorOptions o;
  o.strategy = Strategy::kFreeList;
  o.begin = kBegin;
  o.end = kBegin + (1 << 20);
  o.max_extents = 2048;
  return o;
}

// The figures a walk gives: the slots of a pool, the free nodes of a list.
struct Walked {
  uint64_t live = 0;
  uint64_t requested = 0;
  uint64_t largest_free = 0;
};

Walked WalkPool(std::span<std::byte> meta) {
  const auto* m = reinterpret_cast<const PoolMeta*>(meta.data());
  const auto* slots = reinterpret_cast<const std::atomic<uint64_t>*>(m + 1);
  Walked w;
  for (uint64_t i = 0; i < m->block_count; ++i) {
    const uint64_t v = slots[i].load();
    if (v & kPoolAllocatedBit) {
      ++w.live;
      w.requested += v & ~kPoolAllocatedBit;
    }
  }
  return w;
}

Walked WalkFreeList(std::span<std::byte> meta) {
  using free_list_internal::FreeListControl;
  using free_list_internal::kControlOffset;
  using free_list_internal::kFree;
  using free_list_internal::Node;
  const auto* c =
      reinterpret_cast<const FreeListControl*>(meta.data() + kControlOffset);
  const auto* nodes =
      reinterpret_cast<const Node*>(meta.data() + c->nodes_offset);
  Walked w;
  for (uint64_t i = 0; i < c->max_extents; ++i) {
    if (nodes[i].state == kFree) {
      w.largest_free = std::max(w.largest_free, nodes[i].size);
    }
  }
  return w;
}

// Random allocations and frees; after each, Stats() equals the walk.
template <typename Walk>
void RandomOps(OffsetAllocator& a, std::span<std::byte> meta, Walk walk,
               uint64_t max_size, bool check_largest, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> live;
  for (int op = 0; op < 4000; ++op) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t size = 1 + rng() % max_size;
      const uint64_t alignment = uint64_t{16} << (rng() % 3);
      absl::StatusOr<Extent> e = a.Allocate(size, alignment);
      if (e.ok()) live.push_back(e->offset);
    } else {
      const size_t i = rng() % live.size();
      ASSERT_THAT(a.Free(live[i]), IsOk());
      live[i] = live.back();
      live.pop_back();
    }
    const AllocatorStats s = a.Stats();
    const Walked w = walk(meta);
    if (check_largest) {
      ASSERT_EQ(s.largest_free_bytes, w.largest_free) << "op " << op;
    } else {
      ASSERT_EQ(s.live_allocations, w.live) << "op " << op;
      ASSERT_EQ(s.requested_bytes, w.requested) << "op " << op;
    }
    ASSERT_EQ(s.live_allocations, live.size());
  }
  ASSERT_THAT(a.CheckInvariants(), IsOk());
}

TEST(StatsCountersTest, PoolCountersEqualTheSlots) {
  const AllocatorOptions o = PoolOptions();
  std::vector<uint64_t> meta(*Pool::MetadataBytes(o) / 8);
  auto pool = Pool::Create(AsBytes(meta), o);
  ASSERT_THAT(pool, IsOk());
  EXPECT_FALSE((*pool)->NeedsCounterUpgrade());
  RandomOps(**pool, AsBytes(meta), WalkPool, 64, false, Seed());
  (*pool)->Reset();
  EXPECT_EQ((*pool)->Stats().live_allocations, 0u);
  EXPECT_EQ((*pool)->Stats().requested_bytes, 0u);
  EXPECT_THAT((*pool)->CheckInvariants(), IsOk());
}

TEST(StatsCountersTest, FreeListLargestFreeEqualsTheNodes) {
  const AllocatorOptions o = FreeListOptions();
  std::vector<uint64_t> meta(*FreeList::MetadataBytes(o) / 8 + 1);
  auto list = FreeList::Create(AsBytes(meta), o);
  ASSERT_THAT(list, IsOk());
  EXPECT_FALSE((*list)->NeedsCounterUpgrade());
  EXPECT_EQ((*list)->Stats().largest_free_bytes, o.end - o.begin);
  RandomOps(**list, AsBytes(meta), WalkFreeList, 8192, true, Seed());
  (*list)->Reset();
  EXPECT_EQ((*list)->Stats().largest_free_bytes, o.end - o.begin);
  EXPECT_THAT((*list)->CheckInvariants(), IsOk());
}

// A pool written before the counters (layout 1, reserved words zero) is
// attached, walked by Stats, and upgraded in place by UpgradeCounters.
TEST(StatsCountersTest, LayoutOnePoolIsUpgraded) {
  const AllocatorOptions o = PoolOptions();
  std::vector<uint64_t> meta(*Pool::MetadataBytes(o) / 8);
  {
    auto pool = Pool::Create(AsBytes(meta), o);
    ASSERT_THAT(pool, IsOk());
    for (uint64_t i = 1; i <= 10; ++i)
      ASSERT_THAT((*pool)->Allocate(i, 0), IsOk());
  }
  auto* m = reinterpret_cast<PoolMeta*>(meta.data());
  m->layout_version = kPoolLegacyLayoutVersion;
  m->live_allocations.store(0);
  m->requested_bytes.store(0);
  auto pool = Pool::Attach(AsBytes(meta));
  ASSERT_THAT(pool, IsOk());
  ASSERT_TRUE((*pool)->NeedsCounterUpgrade());
  EXPECT_EQ((*pool)->Stats().live_allocations, 10u);  // walked
  EXPECT_EQ((*pool)->Stats().requested_bytes, 55u);
  (*pool)->UpgradeCounters();
  EXPECT_FALSE((*pool)->NeedsCounterUpgrade());
  EXPECT_EQ(m->layout_version, kPoolLayoutVersion);
  EXPECT_EQ(m->live_allocations.load(), 10u);
  EXPECT_EQ(m->requested_bytes.load(), 55u);
  EXPECT_THAT((*pool)->CheckInvariants(), IsOk());
  // Kept from now on, and a re-attach sees layout 2.
  ASSERT_THAT((*pool)->Allocate(7, 0), IsOk());
  EXPECT_EQ(m->live_allocations.load(), 11u);
  auto again = Pool::Attach(AsBytes(meta));
  ASSERT_THAT(again, IsOk());
  EXPECT_FALSE((*again)->NeedsCounterUpgrade());
}

// Counters that disagree with the slots are refused at Attach.
TEST(StatsCountersTest, PoolCountersThatLieAreDataLoss) {
  const AllocatorOptions o = PoolOptions();
  std::vector<uint64_t> meta(*Pool::MetadataBytes(o) / 8);
  {
    auto pool = Pool::Create(AsBytes(meta), o);
    ASSERT_THAT(pool, IsOk());
    ASSERT_THAT((*pool)->Allocate(8, 0), IsOk());
  }
  reinterpret_cast<PoolMeta*>(meta.data())->live_allocations.store(5);
  EXPECT_EQ(Pool::Attach(AsBytes(meta)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(StatsCountersTest, FreeListWithoutLargestFreeIsUpgraded) {
  const AllocatorOptions o = FreeListOptions();
  std::vector<uint64_t> meta(*FreeList::MetadataBytes(o) / 8 + 1);
  {
    auto list = FreeList::Create(AsBytes(meta), o);
    ASSERT_THAT(list, IsOk());
    ASSERT_THAT((*list)->Allocate(1000, 0), IsOk());
  }
  auto* c = reinterpret_cast<free_list_internal::FreeListControl*>(
      AsBytes(meta).data() + free_list_internal::kControlOffset);
  c->largest_free = 0;
  c->counters_version = 0;
  auto list = FreeList::Attach(AsBytes(meta));
  ASSERT_THAT(list, IsOk());
  ASSERT_TRUE((*list)->NeedsCounterUpgrade());
  const uint64_t walked = WalkFreeList(AsBytes(meta)).largest_free;
  EXPECT_EQ((*list)->Stats().largest_free_bytes, walked);
  (*list)->UpgradeCounters();
  EXPECT_FALSE((*list)->NeedsCounterUpgrade());
  EXPECT_EQ(c->largest_free, walked);
  EXPECT_THAT((*list)->CheckInvariants(), IsOk());
  // A wrong kept value is caught by the invariants.
  c->largest_free = walked - 16;
  EXPECT_EQ(FreeList::Attach(AsBytes(meta)).status().code(),
            absl::StatusCode::kDataLoss);
}

// The counter stores are logged: an aborted transaction restores them.
TEST(StatsCountersTest, AbortRestoresTheCounters) {
  std::vector<uint64_t> log_storage(UndoLogBytes(4096) / 8 + 1);
  for (const bool pool_case : {true, false}) {
    const AllocatorOptions o = pool_case ? PoolOptions() : FreeListOptions();
    const uint64_t bytes = *MetadataBytes(o);
    std::vector<uint64_t> storage(bytes / 8 + 16 + log_storage.size());
    std::span<std::byte> all = AsBytes(storage);
    std::span<std::byte> meta = all.subspan(0, bytes);
    std::span<std::byte> area =
        all.subspan(AlignUp(bytes, 64), UndoLogBytes(4096));
    auto a = CreateAllocator(meta, o);
    ASSERT_THAT(a, IsOk());
    auto log = UndoLog::Format(all, area);
    ASSERT_THAT(log, IsOk());
    (*a)->set_undo_log(&*log);
    std::vector<uint64_t> offsets;
    for (int i = 0; i < 5; ++i) {
      log->Begin();
      auto e = (*a)->Allocate(40, 0);
      ASSERT_THAT(e, IsOk());
      log->Commit();
      offsets.push_back(e->offset);
    }
    const AllocatorStats before = (*a)->Stats();
    log->Begin();
    ASSERT_THAT((*a)->Allocate(2000 % (pool_case ? 64 : 4096) + 1, 0), IsOk());
    ASSERT_THAT((*a)->Free(offsets[2]), IsOk());
    log->Abort();
    const AllocatorStats after = (*a)->Stats();
    EXPECT_EQ(after.live_allocations, before.live_allocations);
    EXPECT_EQ(after.requested_bytes, before.requested_bytes);
    EXPECT_EQ(after.largest_free_bytes, before.largest_free_bytes);
    EXPECT_THAT((*a)->CheckInvariants(), IsOk());
  }
}

// Batches in a transaction (the daemon's path; Pool has a one-pass version
// of its own) keep the counters equal to the walks, committed or aborted.
TEST(StatsCountersTest, BatchesInATransactionKeepTheCounters) {
  for (const bool pool_case : {true, false}) {
    const AllocatorOptions o = pool_case ? PoolOptions() : FreeListOptions();
    const uint64_t bytes = *MetadataBytes(o);
    const uint64_t log_bytes = UndoLogBytes(1 << 16);
    std::vector<uint64_t> storage((AlignUp(bytes, 64) + log_bytes) / 8 + 8);
    std::span<std::byte> all = AsBytes(storage);
    std::span<std::byte> meta = all.subspan(0, bytes);
    auto a = CreateAllocator(meta, o);
    ASSERT_THAT(a, IsOk());
    auto log = UndoLog::Format(all, all.subspan(AlignUp(bytes, 64), log_bytes));
    ASSERT_THAT(log, IsOk());
    (*a)->set_undo_log(&*log);
    auto walk = [&] { return pool_case ? WalkPool(meta) : WalkFreeList(meta); };
    auto check = [&](const char* when) {
      const AllocatorStats s = (*a)->Stats();
      const Walked w = walk();
      if (pool_case) {
        EXPECT_EQ(s.live_allocations, w.live) << when;
        EXPECT_EQ(s.requested_bytes, w.requested) << when;
      } else {
        EXPECT_EQ(s.largest_free_bytes, w.largest_free) << when;
      }
      EXPECT_THAT((*a)->CheckInvariants(), IsOk()) << when;
    };
    log->Begin();
    auto batch = (*a)->AllocateBatch(40, 0, 100);
    ASSERT_THAT(batch, IsOk());
    log->Commit();
    check("after a committed batch");
    std::vector<uint64_t> half;
    for (size_t i = 0; i < batch->size(); i += 2)
      half.push_back((*batch)[i].offset);
    log->Begin();
    ASSERT_THAT((*a)->FreeBatch(half), IsOk());
    log->Commit();
    check("after a committed batch free");
    const AllocatorStats before = (*a)->Stats();
    log->Begin();
    ASSERT_THAT((*a)->AllocateBatch(24, 0, 30), IsOk());
    log->Abort();
    check("after an aborted batch");
    EXPECT_EQ((*a)->Stats().live_allocations, before.live_allocations);
  }
}

}  // namespace
}  // namespace shmalloc
