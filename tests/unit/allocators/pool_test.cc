#include "allocators/pool.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
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

AllocatorOptions PoolOptions(uint64_t block_size, uint64_t blocks,
                             uint64_t tail = 0) {
  AllocatorOptions options;
  options.strategy = Strategy::kPool;
  options.begin = kBegin;
  options.end = kBegin + block_size * blocks + tail;
  options.block_size = block_size;
  return options;
}

// 8-byte aligned metadata storage of any size.
std::vector<uint64_t> MetaStorage(const AllocatorOptions& options) {
  absl::StatusOr<uint64_t> bytes = Pool::MetadataBytes(options);
  EXPECT_THAT(bytes, IsOk());
  return std::vector<uint64_t>((bytes.value_or(0) + 7) / 8);
}

std::span<std::byte> AsBytes(std::vector<uint64_t>& storage) {
  return std::as_writable_bytes(std::span<uint64_t>(storage));
}

void ExpectSameStats(const AllocatorStats& a, const AllocatorStats& b) {
  EXPECT_EQ(a.capacity_bytes, b.capacity_bytes);
  EXPECT_EQ(a.used_bytes, b.used_bytes);
  EXPECT_EQ(a.free_bytes, b.free_bytes);
  EXPECT_EQ(a.requested_bytes, b.requested_bytes);
  EXPECT_EQ(a.live_allocations, b.live_allocations);
  EXPECT_EQ(a.peak_used_bytes, b.peak_used_bytes);
  EXPECT_EQ(a.failed_allocations, b.failed_allocations);
  EXPECT_EQ(a.largest_free_bytes, b.largest_free_bytes);
}

class PoolTest : public ::testing::Test {
 protected:
  void SetUp() override { MakePool(PoolOptions(64, 16)); }
  void MakePool(const AllocatorOptions& options) {
    meta_ = MetaStorage(options);
    auto pool = Pool::Create(AsBytes(meta_), options);
    ASSERT_THAT(pool, IsOk());
    pool_ = *std::move(pool);
  }
  // Allocates one block and checks the invariants.
  Extent MustAllocate(uint64_t size = 1, uint64_t alignment = 1) {
    absl::StatusOr<Extent> e = pool_->Allocate(size, alignment);
    EXPECT_THAT(e, IsOk());
    EXPECT_THAT(pool_->CheckInvariants(), IsOk());
    return e.value_or(Extent{});
  }
  std::vector<uint64_t> meta_;
  std::unique_ptr<Pool> pool_;
};

TEST(PoolMetaTest, MetadataBytesIsHeaderPlusOneSlotPerBlock) {
  EXPECT_THAT(Pool::MetadataBytes(PoolOptions(64, 16)),
              IsOkAndHolds(sizeof(PoolMeta) + 16 * 8));
  EXPECT_THAT(Pool::MetadataBytes(PoolOptions(24, 10, 23)),
              IsOkAndHolds(sizeof(PoolMeta) + 10 * 8));
}

TEST(PoolMetaTest, BadBlockSizesAreInvalidArgument) {
  for (uint64_t block_size : {0, 1, 4, 12, 100}) {
    AllocatorOptions options = PoolOptions(64, 16);
    options.block_size = block_size;
    EXPECT_THAT(Pool::MetadataBytes(options),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << block_size;
  }
  AllocatorOptions too_big = PoolOptions(64, 1);
  too_big.block_size = 128;
  EXPECT_THAT(Pool::MetadataBytes(too_big),
              StatusIs(absl::StatusCode::kInvalidArgument));
  AllocatorOptions too_many = PoolOptions(8, uint64_t{1} << 32);
  EXPECT_THAT(Pool::MetadataBytes(too_many),
              StatusIs(absl::StatusCode::kInvalidArgument));
  AllocatorOptions wrong = PoolOptions(64, 16);
  wrong.strategy = Strategy::kBuddy;
  EXPECT_THAT(Pool::MetadataBytes(wrong),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PoolMetaTest, CreateWithTooSmallSpanIsInvalidArgumentNamingBothSizes) {
  AllocatorOptions options = PoolOptions(64, 16);
  std::vector<uint64_t> meta = MetaStorage(options);
  absl::StatusOr<std::unique_ptr<Pool>> pool =
      Pool::Create(AsBytes(meta).first(300), options);
  EXPECT_THAT(pool, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pool.status().message(), HasSubstr("300"));
  EXPECT_THAT(pool.status().message(), HasSubstr("320"));
}

TEST(PoolMetaTest, CreateWithMisalignedSpanIsInvalidArgument) {
  AllocatorOptions options = PoolOptions(64, 16);
  std::vector<uint64_t> meta = MetaStorage(options);
  meta.push_back(0);
  EXPECT_THAT(Pool::Create(AsBytes(meta).subspan(4), options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PoolMetaTest, AttachOnGarbageIsDataLoss) {
  std::vector<uint64_t> meta(64, 0xA5A5A5A5A5A5A5A5ULL);
  EXPECT_THAT(Pool::Attach(AsBytes(meta)),
              StatusIs(absl::StatusCode::kDataLoss));
  std::fill(meta.begin(), meta.end(), 0);
  EXPECT_THAT(Pool::Attach(AsBytes(meta)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(PoolMetaTest, AttachOnACorruptFreeStackIsDataLoss) {
  AllocatorOptions options = PoolOptions(64, 4);
  std::vector<uint64_t> meta = MetaStorage(options);
  auto pool = Pool::Create(AsBytes(meta), options);
  ASSERT_THAT(pool, IsOk());
  absl::StatusOr<Extent> a = (*pool)->Allocate(8, 8);
  absl::StatusOr<Extent> b = (*pool)->Allocate(8, 8);
  ASSERT_THAT((*pool)->Free(a->offset), IsOk());
  ASSERT_THAT((*pool)->Free(b->offset), IsOk());
  // Make block 0's link point to itself: a cycle.
  auto* slots = reinterpret_cast<std::atomic<uint64_t>*>(AsBytes(meta).data() +
                                                         sizeof(PoolMeta));
  slots[0].store(0, std::memory_order_relaxed);
  EXPECT_THAT(Pool::Attach(AsBytes(meta)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(PoolMetaTest, AttachOnInconsistentGeometryIsDataLoss) {
  AllocatorOptions options = PoolOptions(64, 4);
  std::vector<uint64_t> meta = MetaStorage(options);
  ASSERT_THAT(Pool::Create(AsBytes(meta), options), IsOk());
  reinterpret_cast<PoolMeta*>(meta.data())->block_count = 5;
  EXPECT_THAT(Pool::Attach(AsBytes(meta)),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(PoolTest, FreshPoolIsEmpty) {
  AllocatorStats s = pool_->Stats();
  EXPECT_EQ(s.capacity_bytes, 64u * 16);
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.free_bytes, 64u * 16);
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.largest_free_bytes, 64u);
  EXPECT_EQ(pool_->block_size(), 64u);
  EXPECT_EQ(pool_->block_count(), 16u);
  EXPECT_THAT(pool_->CountFreeBlocks(), IsOkAndHolds(16u));
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, AllocateHandsOutEveryBlockOnceThenIsResourceExhausted) {
  std::set<uint64_t> offsets;
  for (int i = 0; i < 16; ++i) {
    Extent e = MustAllocate(64, 64);
    EXPECT_EQ(e.size_bytes, 64u);
    EXPECT_EQ((e.offset - kBegin) % 64, 0u);
    EXPECT_LT(e.offset, kBegin + 64 * 16);
    EXPECT_TRUE(offsets.insert(e.offset).second) << e.offset;
  }
  const AllocatorStats before = pool_->Stats();
  EXPECT_EQ(before.live_allocations, 16u);
  EXPECT_EQ(before.free_bytes, 0u);
  EXPECT_EQ(before.largest_free_bytes, 0u);
  EXPECT_THAT(pool_->Allocate(1, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  AllocatorStats after = pool_->Stats();
  EXPECT_EQ(after.failed_allocations, before.failed_allocations + 1);
  after.failed_allocations = before.failed_allocations;
  ExpectSameStats(before, after);
  EXPECT_THAT(pool_->CountFreeBlocks(), IsOkAndHolds(0u));
  // One free makes exactly that block available again.
  ASSERT_THAT(pool_->Free(kBegin + 5 * 64), IsOk());
  EXPECT_THAT(pool_->Allocate(1, 1),
              IsOkAndHolds(Eq(Extent{kBegin + 5 * 64, 64})));
}

TEST_F(PoolTest, FreedBlocksAreReusedLastInFirstOut) {
  Extent a = MustAllocate();
  Extent b = MustAllocate();
  ASSERT_THAT(pool_->Free(a.offset), IsOk());
  ASSERT_THAT(pool_->Free(b.offset), IsOk());
  EXPECT_THAT(pool_->Allocate(1, 1), IsOkAndHolds(Eq(b)));
  EXPECT_THAT(pool_->Allocate(1, 1), IsOkAndHolds(Eq(a)));
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, StatsCountLiveBlocksRequestedBytesAndPeak) {
  Extent a = MustAllocate(10);
  MustAllocate(64);
  MustAllocate(1);
  AllocatorStats s = pool_->Stats();
  EXPECT_EQ(s.live_allocations, 3u);
  EXPECT_EQ(s.used_bytes, 3u * 64);
  EXPECT_EQ(s.requested_bytes, 75u);
  EXPECT_EQ(s.peak_used_bytes, 3u * 64);
  EXPECT_EQ(s.used_bytes + s.free_bytes, s.capacity_bytes);
  EXPECT_DOUBLE_EQ(s.internal_fragmentation, 1.0 - 75.0 / 192.0);
  ASSERT_THAT(pool_->Free(a.offset), IsOk());
  s = pool_->Stats();
  EXPECT_EQ(s.live_allocations, 2u);
  EXPECT_EQ(s.requested_bytes, 65u);
  EXPECT_EQ(s.peak_used_bytes, 3u * 64);
  MustAllocate();  // reuses the freed block: no new peak
  EXPECT_EQ(pool_->Stats().peak_used_bytes, 3u * 64);
  MustAllocate();  // a fourth live block
  EXPECT_EQ(pool_->Stats().peak_used_bytes, 4u * 64);
}

TEST_F(PoolTest, SizeOfReturnsBlockSizeForLiveBlocksOnly) {
  Extent a = MustAllocate(3);
  EXPECT_THAT(pool_->SizeOf(a.offset), IsOkAndHolds(64u));
  EXPECT_THAT(pool_->SizeOf(a.offset + 8),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(pool_->SizeOf(kBegin + 64 * 7),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(pool_->SizeOf(1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PoolTest, EveryAlignmentUpToTheBlockAlignmentIsHonoured) {
  // 64-byte blocks: natural alignment 64.
  EXPECT_EQ(pool_->natural_alignment(), 64u);
  for (uint64_t alignment = 1; alignment <= 64; alignment *= 2) {
    Extent e = MustAllocate(1, alignment);
    EXPECT_EQ(e.offset % alignment, 0u) << alignment;
  }
  const AllocatorStats before = pool_->Stats();
  for (uint64_t alignment = 128; alignment <= kMaxAlignment; alignment *= 2) {
    EXPECT_THAT(pool_->Allocate(1, alignment),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << alignment;
  }
  ExpectSameStats(before, pool_->Stats());
}

TEST_F(PoolTest, AlignmentIsCappedByTheBeginOfTheHeap) {
  // Blocks of 8 KiB from begin 4096: every block is 4 KiB-aligned only.
  MakePool(PoolOptions(8192, 4));
  EXPECT_EQ(pool_->natural_alignment(), kHeapBeginGranule);
  for (uint64_t alignment = 1; alignment <= kHeapBeginGranule; alignment *= 2) {
    Extent e = MustAllocate(8192, alignment);
    EXPECT_EQ(e.offset % alignment, 0u) << alignment;
    ASSERT_THAT(pool_->Free(e.offset), IsOk());
  }
  for (uint64_t alignment = 2 * kHeapBeginGranule; alignment <= kMaxAlignment;
       alignment *= 2) {
    EXPECT_THAT(pool_->Allocate(1, alignment),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << alignment;
  }
}

TEST_F(PoolTest, EveryAlignmentUpTo2MiBIsHonouredByAlignedLargeBlocks) {
  // 2 MiB blocks from a 2 MiB-aligned begin.
  AllocatorOptions options;
  options.strategy = Strategy::kPool;
  options.begin = kMaxAlignment;
  options.block_size = kMaxAlignment;
  options.end = options.begin + 3 * kMaxAlignment;
  MakePool(options);
  EXPECT_EQ(pool_->natural_alignment(), kMaxAlignment);
  for (uint64_t alignment = 1; alignment <= kMaxAlignment; alignment *= 2) {
    Extent e = MustAllocate(kMaxAlignment, alignment);
    EXPECT_EQ(e.offset % alignment, 0u) << alignment;
    ASSERT_THAT(pool_->Free(e.offset), IsOk());
  }
  EXPECT_THAT(pool_->Allocate(1, 2 * kMaxAlignment),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PoolTest, OddMultipleBlockSizesHaveEightByteAlignment) {
  MakePool(PoolOptions(24, 10, 17));
  EXPECT_EQ(pool_->natural_alignment(), 8u);
  for (uint64_t alignment : {1, 2, 4, 8}) {
    Extent e = MustAllocate(24, alignment);
    EXPECT_EQ(e.offset % alignment, 0u);
  }
  EXPECT_THAT(pool_->Allocate(1, 16),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Alignment 0 means the default, capped at what the blocks can give.
  EXPECT_THAT(pool_->Allocate(1, 0), IsOk());
}

TEST_F(PoolTest, SmallestPoolAndSmallestBlockWork) {
  MakePool(PoolOptions(8, 1));
  EXPECT_THAT(pool_->Allocate(8, 8), IsOkAndHolds(Eq(Extent{kBegin, 8})));
  EXPECT_THAT(pool_->Allocate(1, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  ASSERT_THAT(pool_->Free(kBegin), IsOk());
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, SizeZeroOrAboveBlockSizeIsInvalidArgumentAndChangesNothing) {
  MustAllocate();
  const AllocatorStats before = pool_->Stats();
  EXPECT_THAT(pool_->Allocate(0, 8),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pool_->Allocate(65, 8),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pool_->Allocate(~uint64_t{0}, 8),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(pool_->Allocate(8, 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectSameStats(before, pool_->Stats());
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, DoubleFreeIsFailedPreconditionAndChangesNothing) {
  Extent a = MustAllocate();
  MustAllocate();
  ASSERT_THAT(pool_->Free(a.offset), IsOk());
  const AllocatorStats before = pool_->Stats();
  EXPECT_THAT(pool_->Free(a.offset),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectSameStats(before, pool_->Stats());
  EXPECT_THAT(pool_->CountFreeBlocks(), IsOkAndHolds(15u));
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, FreeOfInteriorOffsetIsFailedPrecondition) {
  Extent a = MustAllocate();
  const AllocatorStats before = pool_->Stats();
  for (uint64_t delta : {8, 16, 32, 63}) {
    EXPECT_THAT(pool_->Free(a.offset + delta),
                StatusIs(absl::StatusCode::kFailedPrecondition))
        << delta;
  }
  ExpectSameStats(before, pool_->Stats());
  EXPECT_THAT(pool_->Free(a.offset), IsOk());
}

TEST_F(PoolTest, FreeOfMisalignedOffsetIsFailedPrecondition) {
  Extent a = MustAllocate();
  const AllocatorStats before = pool_->Stats();
  for (uint64_t delta : {1, 3, 7}) {
    EXPECT_THAT(pool_->Free(a.offset + delta),
                StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  ExpectSameStats(before, pool_->Stats());
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, FreeOutOfRangeIsInvalidArgument) {
  MustAllocate();
  const AllocatorStats before = pool_->Stats();
  for (uint64_t offset :
       {uint64_t{0}, uint64_t{1}, kBegin - 64, kBegin - 1, kBegin + 64 * 16,
        kBegin + 64 * 17, ~uint64_t{0}, ~uint64_t{0} - 63}) {
    EXPECT_THAT(pool_->Free(offset),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << offset;
  }
  ExpectSameStats(before, pool_->Stats());
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, FreeOfNeverAllocatedBlockIsFailedPrecondition) {
  MustAllocate();
  const AllocatorStats before = pool_->Stats();
  EXPECT_THAT(pool_->Free(kBegin + 64 * 3),  // never carved
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectSameStats(before, pool_->Stats());
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
}

TEST_F(PoolTest, FreeInTheUnusedTailIsFailedPrecondition) {
  MakePool(PoolOptions(24, 10, 17));  // [begin + 240, begin + 257) is tail
  const AllocatorStats before = pool_->Stats();
  EXPECT_THAT(pool_->Free(kBegin + 240),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(pool_->Free(kBegin + 248),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectSameStats(before, pool_->Stats());
}

TEST_F(PoolTest, NonPowerOfTwoBlocksMapOffsetsExactly) {
  MakePool(PoolOptions(24, 10, 17));
  std::vector<Extent> all;
  for (int i = 0; i < 10; ++i) all.push_back(MustAllocate());
  for (const Extent& e : all) {
    EXPECT_THAT(pool_->SizeOf(e.offset), IsOkAndHolds(24u));
    EXPECT_THAT(pool_->Free(e.offset + 8),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(pool_->Free(e.offset + 16),
                StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  for (const Extent& e : all) ASSERT_THAT(pool_->Free(e.offset), IsOk());
  EXPECT_THAT(pool_->CountFreeBlocks(), IsOkAndHolds(10u));
}

TEST_F(PoolTest, ResetFreesEverythingAndKeepsPeakAndFailures) {
  for (int i = 0; i < 16; ++i) MustAllocate();
  ASSERT_THAT(pool_->Allocate(1, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  pool_->Reset();
  AllocatorStats s = pool_->Stats();
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.peak_used_bytes, 16u * 64);
  EXPECT_EQ(s.failed_allocations, 1u);
  EXPECT_THAT(pool_->CountFreeBlocks(), IsOkAndHolds(16u));
  EXPECT_THAT(pool_->CheckInvariants(), IsOk());
  EXPECT_THAT(pool_->Free(kBegin),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  for (int i = 0; i < 16; ++i) MustAllocate();
}

TEST_F(PoolTest, RelocatedMetadataKeepsWorkingAfterAttach) {
  Extent a = MustAllocate(5);
  Extent b = MustAllocate(6);
  MustAllocate(7);
  ASSERT_THAT(pool_->Free(b.offset), IsOk());
  const AllocatorStats before = pool_->Stats();

  std::vector<uint64_t> copy = meta_;
  std::fill(meta_.begin(), meta_.end(), 0);  // the old view is dead
  pool_.reset();
  absl::StatusOr<std::unique_ptr<Pool>> moved = Pool::Attach(AsBytes(copy));
  ASSERT_THAT(moved, IsOk());
  Pool& pool = **moved;
  ExpectSameStats(before, pool.Stats());
  EXPECT_EQ(pool.block_size(), 64u);
  EXPECT_THAT(pool.Free(b.offset),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(pool.Allocate(1, 1), IsOkAndHolds(Eq(b)));
  EXPECT_THAT(pool.Free(a.offset), IsOk());
  EXPECT_THAT(pool.CountFreeBlocks(), IsOkAndHolds(14u));
  EXPECT_THAT(pool.CheckInvariants(), IsOk());
}

}  // namespace
}  // namespace shmalloc
