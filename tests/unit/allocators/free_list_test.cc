// Unit tests for FreeList: good fit, coalescing, alignment, node exhaustion,
// every kind of bad free, metadata validation, relocation and Reset.
#include "allocators/free_list.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;
using ::testing::Eq;
using ::testing::HasSubstr;

constexpr uint64_t kBegin = 4096;

AllocatorOptions Options(uint64_t capacity, uint64_t max_extents = 0) {
  AllocatorOptions options;
  options.strategy = Strategy::kFreeList;
  options.begin = kBegin;
  options.end = kBegin + capacity;
  options.max_extents = max_extents;
  return options;
}

bool SameStats(const AllocatorStats& a, const AllocatorStats& b) {
  return a.capacity_bytes == b.capacity_bytes && a.used_bytes == b.used_bytes &&
         a.free_bytes == b.free_bytes &&
         a.requested_bytes == b.requested_bytes &&
         a.live_allocations == b.live_allocations &&
         a.peak_used_bytes == b.peak_used_bytes &&
         a.failed_allocations == b.failed_allocations &&
         a.largest_free_bytes == b.largest_free_bytes &&
         a.fragmentation == b.fragmentation &&
         a.internal_fragmentation == b.internal_fragmentation;
}

// A FreeList with its metadata in a vector.
class FreeListTest : public ::testing::Test {
 protected:
  void Make(const AllocatorOptions& options) {
    auto bytes = FreeList::MetadataBytes(options);
    ASSERT_THAT(bytes, IsOk());
    meta_.assign(*bytes, std::byte{0});
    auto list = FreeList::Create(meta_, options);
    ASSERT_THAT(list, IsOk());
    list_ = std::move(*list);
    ASSERT_THAT(list_->CheckInvariants(), IsOk());
  }
  Extent MustAllocate(uint64_t size, uint64_t alignment = 0) {
    auto extent = list_->Allocate(size, alignment);
    EXPECT_THAT(extent, IsOk()) << "size " << size;
    EXPECT_THAT(list_->CheckInvariants(), IsOk());
    return extent.ok() ? *extent : Extent{};
  }
  void MustFree(uint64_t offset) {
    EXPECT_THAT(list_->Free(offset), IsOk()) << "offset " << offset;
    EXPECT_THAT(list_->CheckInvariants(), IsOk());
  }

  std::vector<std::byte> meta_;
  std::unique_ptr<FreeList> list_;
};

TEST_F(FreeListTest, FreshAllocatorIsOneFreeExtentOfFullCapacity) {
  Make(Options(1 << 20));
  const AllocatorStats stats = list_->Stats();
  EXPECT_EQ(stats.capacity_bytes, 1u << 20);
  EXPECT_EQ(stats.free_bytes, 1u << 20);
  EXPECT_EQ(stats.largest_free_bytes, 1u << 20);
  EXPECT_EQ(stats.fragmentation, 0.0);
  EXPECT_EQ(list_->max_extents(), 1024u);  // max(1 MiB / 1024, 1024)
  EXPECT_EQ(list_->strategy(), Strategy::kFreeList);
}

TEST_F(FreeListTest, SizesAreRoundedToSixteenBytesAndCounted) {
  Make(Options(1 << 20));
  const Extent e = MustAllocate(1);
  EXPECT_EQ(e.offset, kBegin);
  EXPECT_EQ(e.size_bytes, 16u);
  EXPECT_THAT(list_->SizeOf(e.offset), IsOkAndHolds(Eq(16u)));
  const Extent f = MustAllocate(100);
  EXPECT_EQ(f.size_bytes, 112u);
  const AllocatorStats stats = list_->Stats();
  EXPECT_EQ(stats.used_bytes, 128u);
  EXPECT_EQ(stats.requested_bytes, 101u);
  EXPECT_EQ(stats.live_allocations, 2u);
  EXPECT_EQ(stats.peak_used_bytes, 128u);
}

TEST_F(FreeListTest, WholeCapacityCanBeAllocatedAtOnce) {
  Make(Options(1 << 20));
  const Extent e = MustAllocate(1 << 20);
  EXPECT_EQ(e.offset, kBegin);
  EXPECT_EQ(e.size_bytes, 1u << 20);
  EXPECT_EQ(list_->Stats().largest_free_bytes, 0u);
  EXPECT_THAT(list_->Allocate(1, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  MustFree(e.offset);
  EXPECT_EQ(list_->Stats().largest_free_bytes, 1u << 20);
}

TEST_F(FreeListTest, SizeAboveCapacityIsInvalidArgumentAndNotCounted) {
  Make(Options(1 << 20));
  const AllocatorStats before = list_->Stats();
  EXPECT_THAT(list_->Allocate((1 << 20) + 1, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(list_->Allocate(~uint64_t{0}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(SameStats(before, list_->Stats()));
}

TEST_F(FreeListTest, UnevenHeapTailIsUsableToTheLastByte) {
  Make(Options(4096 + 8));
  EXPECT_EQ(list_->Stats().largest_free_bytes, 4104u);
  const Extent e = MustAllocate(4104, 1);
  EXPECT_EQ(e.size_bytes, 4104u);
  MustFree(e.offset);
  const Extent a = MustAllocate(4096);
  EXPECT_EQ(a.size_bytes, 4104u);  // an 8-byte tail cannot stand alone
  EXPECT_EQ(list_->Stats().requested_bytes, 4096u);
}

TEST_F(FreeListTest, ExhaustionIsResourceExhaustedAndCountedOnce) {
  Make(Options(64 * 1024));
  for (int i = 0; i < 16; ++i) MustAllocate(4096);
  AllocatorStats before = list_->Stats();
  EXPECT_THAT(list_->Allocate(16, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  before.failed_allocations += 1;
  EXPECT_TRUE(SameStats(before, list_->Stats()));
  EXPECT_THAT(list_->CheckInvariants(), IsOk());
}

TEST_F(FreeListTest, EveryAlignmentUpToTheMaximumIsHonoured) {
  // 2 MiB alignment from begin 4096: the unaligned heads are split off.
  Make(Options(16 << 20));
  MustAllocate(16);  // so the next free extent starts unaligned
  std::vector<Extent> extents;
  for (uint64_t alignment = 1; alignment <= kMaxAlignment; alignment *= 2) {
    const Extent e = MustAllocate(48, alignment);
    EXPECT_EQ(e.offset % alignment, 0u) << "alignment " << alignment;
    EXPECT_EQ(e.offset % 16, 0u);
    EXPECT_EQ(e.size_bytes, 48u);
    extents.push_back(e);
  }
  // The leading gaps became free extents that stay usable and coalesce.
  for (const Extent& e : extents) MustFree(e.offset);
  EXPECT_EQ(list_->Stats().largest_free_bytes, (16u << 20) - 16);
}

TEST_F(FreeListTest, AlignedAllocationFindsAFittingExtentBeyondTheFirst) {
  Make(Options(3 * 4096 + 16 * 4));
  // Leave a free hole of 4096 bytes at an unaligned offset, then a 4096-byte
  // aligned request must skip it and be served from the aligned tail.
  const Extent a = MustAllocate(16);
  const Extent hole = MustAllocate(4096);
  MustAllocate(16);
  MustFree(hole.offset);
  const Extent e = MustAllocate(4096, 4096);
  EXPECT_EQ(e.offset % 4096, 0u);
  EXPECT_NE(e.offset, hole.offset);
  MustFree(a.offset);
}

TEST_F(FreeListTest, FreeingNeighboursCoalescesIntoOneExtent) {
  // Every permutation of freeing three neighbours (plus a guard after them)
  // must end in one free extent of full capacity.
  std::vector<int> order = {0, 1, 2, 3};
  do {
    Make(Options(64 * 1024));
    std::vector<Extent> e;
    for (int i = 0; i < 4; ++i) e.push_back(MustAllocate(1000 + i * 16));
    for (int i : order) MustFree(e[i].offset);
    const AllocatorStats stats = list_->Stats();
    EXPECT_EQ(stats.largest_free_bytes, stats.capacity_bytes);
    EXPECT_EQ(stats.used_bytes, 0u);
  } while (std::next_permutation(order.begin(), order.end()));
}

TEST_F(FreeListTest, RandomFreeOrderCoalescesBackToFullCapacity) {
  Make(Options(1 << 20));
  std::mt19937_64 rng(7);
  std::vector<Extent> live;
  for (int round = 0; round < 2000; ++round) {
    if (live.empty() || rng() % 3 != 0) {
      auto e = list_->Allocate(1 + rng() % 4000, 1ull << (rng() % 8));
      if (e.ok()) live.push_back(*e);
    } else {
      const size_t i = rng() % live.size();
      ASSERT_THAT(list_->Free(live[i].offset), IsOk());
      live[i] = live.back();
      live.pop_back();
    }
    if (round % 50 == 0) {
      ASSERT_THAT(list_->CheckInvariants(), IsOk());
    }
  }
  std::shuffle(live.begin(), live.end(), rng);
  for (const Extent& e : live) MustFree(e.offset);
  EXPECT_EQ(list_->Stats().largest_free_bytes, 1u << 20);
}

TEST_F(FreeListTest, RunningOutOfExtentDescriptorsIsResourceExhausted) {
  Make(Options(1 << 20, /*max_extents=*/4));
  MustAllocate(64);
  MustAllocate(64);
  MustAllocate(64);  // 3 live + the free rest use all 4 descriptors
  AllocatorStats before = list_->Stats();
  auto extent = list_->Allocate(64, 0);
  EXPECT_THAT(extent, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(std::string(extent.status().message()), HasSubstr("max_extents"));
  before.failed_allocations += 1;
  EXPECT_TRUE(SameStats(before, list_->Stats()));
  // An exact fit needs no descriptor: the rest of the heap still works.
  const Extent rest = MustAllocate(before.largest_free_bytes);
  MustFree(rest.offset);
}

TEST_F(FreeListTest, EveryBadFreeIsRefusedAndChangesNothing) {
  Make(Options(1 << 20));
  const Extent a = MustAllocate(64);
  const Extent b = MustAllocate(64);
  MustAllocate(64);
  MustFree(b.offset);
  const AllocatorStats before = list_->Stats();
  struct Case {
    uint64_t offset;
    absl::StatusCode code;
  };
  const Case cases[] = {
      {0, absl::StatusCode::kInvalidArgument},                   // below
      {kBegin - 1, absl::StatusCode::kInvalidArgument},          // below
      {kBegin + (1 << 20), absl::StatusCode::kInvalidArgument},  // at end
      {~uint64_t{0}, absl::StatusCode::kInvalidArgument},        // far out
      {b.offset, absl::StatusCode::kFailedPrecondition},         // double
      {a.offset + 16, absl::StatusCode::kFailedPrecondition},    // interior
      {a.offset + 1, absl::StatusCode::kFailedPrecondition},     // misaligned
      {kBegin + 4096, absl::StatusCode::kFailedPrecondition},    // never
  };
  for (const Case& c : cases) {
    EXPECT_THAT(list_->Free(c.offset), StatusIs(c.code)) << c.offset;
    EXPECT_THAT(list_->SizeOf(c.offset), StatusIs(c.code)) << c.offset;
    EXPECT_TRUE(SameStats(before, list_->Stats())) << c.offset;
    EXPECT_THAT(list_->CheckInvariants(), IsOk());
  }
}

TEST_F(FreeListTest, MetadataSpanTooSmallIsInvalidArgumentNamingBothSizes) {
  const AllocatorOptions options = Options(1 << 20);
  auto needed = FreeList::MetadataBytes(options);
  ASSERT_THAT(needed, IsOk());
  std::vector<std::byte> small(*needed - 1);
  auto list = FreeList::Create(small, options);
  EXPECT_THAT(list, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(list.status().message()),
              HasSubstr(std::to_string(*needed)));
  EXPECT_THAT(std::string(list.status().message()),
              HasSubstr(std::to_string(*needed - 1)));
}

TEST_F(FreeListTest, BadOptionsAreInvalidArgument) {
  EXPECT_THAT(FreeList::MetadataBytes(Options(8)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(FreeList::MetadataBytes(Options(1 << 20, uint64_t{1} << 40)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  AllocatorOptions pool = Options(1 << 20);
  pool.strategy = Strategy::kPool;
  EXPECT_THAT(FreeList::MetadataBytes(pool),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(FreeListTest, AttachToGarbageIsDataLoss) {
  Make(Options(1 << 20));
  std::vector<std::byte> garbage(meta_.size(), std::byte{0x5a});
  EXPECT_THAT(FreeList::Attach(garbage), StatusIs(absl::StatusCode::kDataLoss));
  // A valid header over scribbled state is caught by the invariants.
  std::vector<std::byte> scribbled = meta_;
  std::memset(scribbled.data() + sizeof(MetaHeader) + 200, 0x5a, 4096);
  EXPECT_THAT(FreeList::Attach(scribbled),
              StatusIs(absl::StatusCode::kDataLoss));
  std::vector<std::byte> zeros(meta_.size());
  std::memcpy(zeros.data(), meta_.data(), sizeof(MetaHeader));
  EXPECT_THAT(FreeList::Attach(zeros), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(FreeListTest, CopiedMetadataAttachesElsewhereAndKeepsWorking) {
  Make(Options(1 << 20));
  std::vector<Extent> live;
  for (int i = 0; i < 50; ++i) live.push_back(MustAllocate(100 + i * 32));
  for (size_t i = 0; i < live.size(); i += 3) MustFree(live[i].offset);
  const AllocatorStats before = list_->Stats();

  std::vector<std::byte> moved(meta_.size() + 128);
  std::byte* at = moved.data() + 64;
  std::memcpy(at, meta_.data(), meta_.size());
  list_.reset();
  std::memset(meta_.data(), 0xa5, meta_.size());

  auto attached = FreeList::Attach(std::span(at, meta_.size()));
  ASSERT_THAT(attached, IsOk());
  FreeList& list = **attached;
  EXPECT_TRUE(SameStats(before, list.Stats()));
  for (size_t i = 1; i < live.size(); i += 3) {
    EXPECT_THAT(list.Free(live[i].offset), IsOk());
  }
  EXPECT_THAT(list.Free(live[0].offset),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(list.Allocate(5000, 64), IsOk());
  EXPECT_THAT(list.CheckInvariants(), IsOk());
}

TEST_F(FreeListTest, ResetFreesEverythingAndKeepsPeakAndFailures) {
  Make(Options(64 * 1024));
  for (int i = 0; i < 10; ++i) MustAllocate(5000);
  EXPECT_THAT(list_->Allocate(20000, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  const AllocatorStats full = list_->Stats();
  list_->Reset();
  EXPECT_THAT(list_->CheckInvariants(), IsOk());
  const AllocatorStats stats = list_->Stats();
  EXPECT_EQ(stats.used_bytes, 0u);
  EXPECT_EQ(stats.requested_bytes, 0u);
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_EQ(stats.largest_free_bytes, stats.capacity_bytes);
  EXPECT_EQ(stats.peak_used_bytes, full.peak_used_bytes);
  EXPECT_EQ(stats.failed_allocations, 1u);
  MustAllocate(64 * 1024);
}

TEST_F(FreeListTest, GoodFitKeepsLargeExtentsWhole) {
  // Holes of 1 KiB and one of 8 KiB: 1 KiB requests must use the small holes
  // and leave the 8 KiB hole intact.
  Make(Options(1 << 20));
  std::vector<Extent> holes;
  for (int i = 0; i < 8; ++i) {
    holes.push_back(MustAllocate(1024));
    MustAllocate(16);
  }
  const Extent big = MustAllocate(8192);
  MustAllocate(16);
  MustAllocate((1 << 20) - list_->Stats().used_bytes);  // fill the rest
  for (const Extent& h : holes) MustFree(h.offset);
  MustFree(big.offset);
  for (int i = 0; i < 8; ++i) MustAllocate(1000);
  EXPECT_EQ(list_->Stats().largest_free_bytes, 8192u);
}

}  // namespace
}  // namespace shmalloc
