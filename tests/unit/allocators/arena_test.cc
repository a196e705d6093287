#include "allocators/arena.h"

#include <cstring>
#include <memory>
#include <vector>

#include "common/segment_header.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;
using ::testing::Eq;
using ::testing::Field;
using ::testing::HasSubstr;

constexpr uint64_t kBegin = 4096;

AllocatorOptions ArenaOptions(uint64_t capacity) {
  AllocatorOptions options;
  options.strategy = Strategy::kArena;
  options.begin = kBegin;
  options.end = kBegin + capacity;
  return options;
}

// Metadata storage, 64-byte aligned as in the segment header.
struct MetaBuffer {
  alignas(64) std::byte bytes[kArenaMetaBytes];
  std::span<std::byte> span() { return std::span<std::byte>(bytes); }
};

class ArenaTest : public ::testing::Test {
 protected:
  void SetUp() override { MakeArena(1 << 20); }
  void MakeArena(uint64_t capacity) {
    auto arena = Arena::Create(meta_.span(), ArenaOptions(capacity));
    ASSERT_THAT(arena, IsOk());
    arena_ = *std::move(arena);
  }
  MetaBuffer meta_;
  std::unique_ptr<Arena> arena_;
};

// Two stats snapshots are equal (AllocatorStats has no operator==).
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

TEST(ArenaMetaTest, MetadataFitsInTheSegmentHeader) {
  EXPECT_THAT(Arena::MetadataBytes(ArenaOptions(4096)),
              IsOkAndHolds(sizeof(ArenaMeta)));
  EXPECT_LE(sizeof(ArenaMeta), kArenaMetaBytes);
}

TEST(ArenaMetaTest, MetadataBytesRejectsAnotherStrategy) {
  AllocatorOptions options = ArenaOptions(4096);
  options.strategy = Strategy::kPool;
  EXPECT_THAT(Arena::MetadataBytes(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ArenaMetaTest, CreateRejectsBadRanges) {
  MetaBuffer meta;
  AllocatorOptions options = ArenaOptions(4096);
  options.begin = 0;
  EXPECT_THAT(Arena::Create(meta.span(), options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options = ArenaOptions(4096);
  options.begin = 100;
  EXPECT_THAT(Arena::Create(meta.span(), options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options = ArenaOptions(4096);
  options.end = options.begin;
  EXPECT_THAT(Arena::Create(meta.span(), options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ArenaMetaTest, CreateWithTooSmallSpanIsInvalidArgumentNamingBothSizes) {
  MetaBuffer meta;
  absl::StatusOr<std::unique_ptr<Arena>> arena =
      Arena::Create(meta.span().first(100), ArenaOptions(4096));
  EXPECT_THAT(arena, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena.status().message(), HasSubstr("100"));
  EXPECT_THAT(arena.status().message(), HasSubstr("192"));
}

TEST(ArenaMetaTest, CreateWithMisalignedSpanIsInvalidArgument) {
  MetaBuffer meta;
  EXPECT_THAT(Arena::Create(meta.span().subspan(4), ArenaOptions(4096)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ArenaMetaTest, AttachOnGarbageIsDataLoss) {
  MetaBuffer meta;
  std::memset(meta.bytes, 0xA5, sizeof(meta.bytes));
  EXPECT_THAT(Arena::Attach(meta.span()),
              StatusIs(absl::StatusCode::kDataLoss));
  std::memset(meta.bytes, 0, sizeof(meta.bytes));
  EXPECT_THAT(Arena::Attach(meta.span()),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ArenaMetaTest, AttachOnCorruptCursorIsDataLoss) {
  MetaBuffer meta;
  ASSERT_THAT(Arena::Create(meta.span(), ArenaOptions(4096)), IsOk());
  reinterpret_cast<ArenaMeta*>(meta.bytes)
      ->cursor.store(kBegin + 4097, std::memory_order_relaxed);
  EXPECT_THAT(Arena::Attach(meta.span()),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(ArenaMetaTest, AttachOnAnotherStrategysMetadataIsDataLoss) {
  MetaBuffer meta;
  ASSERT_THAT(Arena::Create(meta.span(), ArenaOptions(4096)), IsOk());
  reinterpret_cast<ArenaMeta*>(meta.bytes)->header.strategy =
      static_cast<uint32_t>(Strategy::kPool);
  EXPECT_THAT(Arena::Attach(meta.span()),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(ArenaTest, FreshArenaIsEmpty) {
  AllocatorStats s = arena_->Stats();
  EXPECT_EQ(s.capacity_bytes, 1u << 20);
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.free_bytes, 1u << 20);
  EXPECT_EQ(s.largest_free_bytes, 1u << 20);
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.peak_used_bytes, 0u);
  EXPECT_EQ(arena_->strategy(), Strategy::kArena);
  EXPECT_EQ(arena_->begin(), kBegin);
  EXPECT_EQ(arena_->end(), kBegin + (1 << 20));
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, AllocationsAreConsecutiveAndDisjoint) {
  EXPECT_THAT(arena_->Allocate(10, 1), IsOkAndHolds(Eq(Extent{kBegin, 10})));
  EXPECT_THAT(arena_->Allocate(6, 1), IsOkAndHolds(Eq(Extent{kBegin + 10, 6})));
  EXPECT_THAT(arena_->Allocate(1, 16),
              IsOkAndHolds(Eq(Extent{kBegin + 16, 1})));
  AllocatorStats s = arena_->Stats();
  EXPECT_EQ(s.used_bytes, 17u);
  EXPECT_EQ(s.requested_bytes, s.used_bytes);
  EXPECT_EQ(s.live_allocations, 0u);  // not tracked, see arena.h
  EXPECT_EQ(s.used_bytes + s.free_bytes, s.capacity_bytes);
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, ZeroAlignmentMeansDefaultAlignment) {
  ASSERT_THAT(arena_->Allocate(1, 1), IsOk());
  EXPECT_THAT(arena_->Allocate(1, 0),
              IsOkAndHolds(Field(&Extent::offset, kBegin + kDefaultAlignment)));
}

TEST_F(ArenaTest, EveryPowerOfTwoAlignmentUpTo2MiBIsHonoured) {
  // The cursor pads: every alignment up to kMaxAlignment, begin 4 KiB only.
  MakeArena(64 << 20);
  for (uint64_t alignment = 1; alignment <= kMaxAlignment; alignment *= 2) {
    ASSERT_THAT(arena_->Allocate(1, 1), IsOk());  // misalign the cursor
    absl::StatusOr<Extent> e = arena_->Allocate(3, alignment);
    ASSERT_THAT(e, IsOk()) << alignment;
    EXPECT_EQ(e->offset % alignment, 0u) << alignment;
    EXPECT_EQ(e->size_bytes, 3u);
  }
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, BadArgumentsAreInvalidArgumentAndChangeNothing) {
  ASSERT_THAT(arena_->Allocate(5, 1), IsOk());
  const AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Allocate(0, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena_->Allocate(8, 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena_->Allocate(8, 2 * kMaxAlignment),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena_->Allocate((1 << 20) + 1, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena_->Allocate(~uint64_t{0}, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, SmallestAndLargestSizesFit) {
  EXPECT_THAT(arena_->Allocate(1, 1), IsOkAndHolds(Eq(Extent{kBegin, 1})));
  arena_->Reset();
  EXPECT_THAT(arena_->Allocate(1 << 20, kHeapBeginGranule),
              IsOkAndHolds(Eq(Extent{kBegin, 1 << 20})));
  EXPECT_EQ(arena_->Stats().free_bytes, 0u);
  EXPECT_EQ(arena_->Stats().largest_free_bytes, 0u);
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, ExhaustionIsResourceExhaustedCountedAndChangesNothingElse) {
  ASSERT_THAT(arena_->Allocate((1 << 20) - 8, 1), IsOk());
  AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Allocate(9, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  // 8 bytes are left, but not at 16-byte alignment.
  EXPECT_THAT(arena_->Allocate(1, 16),
              StatusIs(absl::StatusCode::kResourceExhausted));
  AllocatorStats after = arena_->Stats();
  EXPECT_EQ(after.failed_allocations, before.failed_allocations + 2);
  before.failed_allocations = after.failed_allocations;
  ExpectSameStats(before, after);
  EXPECT_THAT(arena_->Allocate(8, 8), IsOk());
  EXPECT_THAT(arena_->Allocate(1, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, FreeOfAnyInRangeOffsetIsFailedPreconditionAndChangesNothing) {
  absl::StatusOr<Extent> e = arena_->Allocate(64, 16);
  ASSERT_THAT(e, IsOk());
  const AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Free(e->offset),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(arena_->Free(e->offset + 3),  // interior
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(arena_->Free(kBegin + 4096),  // never allocated
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(arena_->Free(e->offset).message(), HasSubstr("reset or rewind"));
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, FreeOutOfRangeIsInvalidArgumentAndChangesNothing) {
  const AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Free(0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena_->Free(kBegin - 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(arena_->Free(kBegin + (1 << 20)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, SizeOfIsUnimplementedInRangeAndInvalidArgumentOutside) {
  EXPECT_THAT(arena_->SizeOf(kBegin),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(arena_->SizeOf(1), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ArenaTest, ResetReleasesEverythingAndKeepsPeakAndFailures) {
  ASSERT_THAT(arena_->Allocate(1000, 1), IsOk());
  ASSERT_THAT(arena_->Allocate(2 << 20, 1),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(arena_->Allocate((1 << 20) - 999, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
  arena_->Reset();
  AllocatorStats s = arena_->Stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.peak_used_bytes, 1000u);
  EXPECT_EQ(s.failed_allocations, 1u);
  EXPECT_EQ(arena_->epoch(), 1u);
  EXPECT_THAT(arena_->Allocate(8, 8), IsOkAndHolds(Eq(Extent{kBegin, 8})));
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, PeakIsTheMaximumAcrossRewinds) {
  const Arena::Marker start = arena_->Mark();
  ASSERT_THAT(arena_->Allocate(300, 1), IsOk());
  EXPECT_EQ(arena_->Stats().peak_used_bytes, 300u);
  ASSERT_THAT(arena_->Rewind(start), IsOk());
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  EXPECT_EQ(arena_->Stats().peak_used_bytes, 300u);
  ASSERT_THAT(arena_->Allocate(400, 1), IsOk());
  EXPECT_EQ(arena_->Stats().peak_used_bytes, 500u);
}

TEST_F(ArenaTest, RewindToMarkerReleasesLaterAllocations) {
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  const Arena::Marker marker = arena_->Mark();
  EXPECT_EQ(marker.offset, kBegin + 100);
  ASSERT_THAT(arena_->Allocate(50, 1), IsOk());
  ASSERT_THAT(arena_->Allocate(50, 64), IsOk());
  ASSERT_THAT(arena_->Rewind(marker), IsOk());
  EXPECT_EQ(arena_->Stats().used_bytes, 100u);
  EXPECT_THAT(arena_->Allocate(7, 1),
              IsOkAndHolds(Eq(Extent{kBegin + 100, 7})));
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, RewindToTheCursorItselfIsANoOp) {
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  const AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Rewind(arena_->Mark()), IsOk());
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, RewindToMarkerAboveTheCursorIsFailedPrecondition) {
  const Arena::Marker start = arena_->Mark();
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  const Arena::Marker high = arena_->Mark();
  ASSERT_THAT(arena_->Rewind(start), IsOk());
  const AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Rewind(high),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, RewindToMarkerOutsideTheArenaIsInvalidArgument) {
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  const AllocatorStats before = arena_->Stats();
  Arena::Marker below = arena_->Mark();
  below.offset = kBegin - 1;
  EXPECT_THAT(arena_->Rewind(below),
              StatusIs(absl::StatusCode::kInvalidArgument));
  Arena::Marker above = arena_->Mark();
  above.offset = kBegin + (1 << 20) + 1;
  EXPECT_THAT(arena_->Rewind(above),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, RewindToMarkerFromBeforeResetIsFailedPrecondition) {
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  const Arena::Marker stale = arena_->Mark();
  arena_->Reset();
  ASSERT_THAT(arena_->Allocate(200, 1), IsOk());
  const AllocatorStats before = arena_->Stats();
  EXPECT_THAT(arena_->Rewind(stale),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ExpectSameStats(before, arena_->Stats());
}

TEST_F(ArenaTest, RelocatedMetadataKeepsWorkingAfterAttach) {
  ASSERT_THAT(arena_->Allocate(100, 1), IsOk());
  const Arena::Marker marker = arena_->Mark();
  ASSERT_THAT(arena_->Allocate(1 << 10, 1), IsOk());
  const AllocatorStats before = arena_->Stats();

  MetaBuffer copy;
  std::memcpy(copy.bytes, meta_.bytes, sizeof(copy.bytes));
  std::memset(meta_.bytes, 0, sizeof(meta_.bytes));  // the old view is dead
  arena_.reset();
  absl::StatusOr<std::unique_ptr<Arena>> moved = Arena::Attach(copy.span());
  ASSERT_THAT(moved, IsOk());
  ExpectSameStats(before, (*moved)->Stats());
  EXPECT_THAT((*moved)->Allocate(8, 4),
              IsOkAndHolds(Eq(Extent{kBegin + 100 + (1 << 10), 8})));
  EXPECT_THAT((*moved)->Rewind(marker), IsOk());
  EXPECT_EQ((*moved)->Stats().used_bytes, 100u);
  EXPECT_THAT((*moved)->CheckInvariants(), IsOk());
}

TEST_F(ArenaTest, TwoViewsOfOneMetadataShareTheCursor) {
  absl::StatusOr<std::unique_ptr<Arena>> other = Arena::Attach(meta_.span());
  ASSERT_THAT(other, IsOk());
  EXPECT_THAT(arena_->Allocate(10, 1), IsOkAndHolds(Eq(Extent{kBegin, 10})));
  EXPECT_THAT((*other)->Allocate(10, 1),
              IsOkAndHolds(Eq(Extent{kBegin + 10, 10})));
}

TEST_F(ArenaTest, ArenaOfOneByteHoldsExactlyOneByte) {
  // Capacity is not required to be a multiple of anything.
  MakeArena(1);
  EXPECT_THAT(arena_->Allocate(1, kHeapBeginGranule),
              IsOkAndHolds(Eq(Extent{kBegin, 1})));
  EXPECT_THAT(arena_->Allocate(1, 1),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

// The cursor lies in client-writable shared memory (an ARENA region's data
// file). Each scribbled value below must make Allocate refuse with DATA_LOSS
// (no extent at all, so none outside [begin, end) and never offset 0), keep
// Stats consistent, and leave Reset able to repair the arena without folding
// the bad value into the peak.
class ArenaScribbledCursorTest : public ::testing::TestWithParam<uint64_t> {
 protected:
  static constexpr uint64_t kCapacity = 1 << 20;
  void SetUp() override {
    auto arena = Arena::Create(meta_.span(), ArenaOptions(kCapacity));
    ASSERT_THAT(arena, IsOk());
    arena_ = *std::move(arena);
    ASSERT_THAT(arena_->Allocate(1000, 1), IsOk());
    arena_->Reset();  // peak 1000
    ASSERT_THAT(arena_->Allocate(10, 1), IsOk());
  }
  void Scribble(uint64_t cursor) {
    reinterpret_cast<ArenaMeta*>(meta_.bytes)
        ->cursor.store(cursor, std::memory_order_relaxed);
  }
  MetaBuffer meta_;
  std::unique_ptr<Arena> arena_;
};

TEST_P(ArenaScribbledCursorTest, AllocateIsDataLossForEverySizeAndAlignment) {
  Scribble(GetParam());
  for (uint64_t alignment :
       {uint64_t{0}, uint64_t{1}, uint64_t{8}, uint64_t{16}, uint64_t{4096}}) {
    for (uint64_t size :
         {uint64_t{1}, uint64_t{8}, uint64_t{4096}, uint64_t{kCapacity}}) {
      absl::StatusOr<Extent> e = arena_->Allocate(size, alignment);
      EXPECT_THAT(e, StatusIs(absl::StatusCode::kDataLoss))
          << "size " << size << " alignment " << alignment;
      if (e.ok()) {  // name the extent that escaped
        EXPECT_NE(e->offset, 0u);
        EXPECT_GE(e->offset, kBegin);
        EXPECT_LE(e->offset + e->size_bytes, kBegin + kCapacity);
      }
    }
  }
  // No CAS: the scribbled value is still there, and nothing was counted.
  EXPECT_EQ(reinterpret_cast<ArenaMeta*>(meta_.bytes)
                ->cursor.load(std::memory_order_relaxed),
            GetParam());
  EXPECT_EQ(arena_->Stats().failed_allocations, 0u);
}

TEST_P(ArenaScribbledCursorTest, StatsReadAsFullAndStayConsistent) {
  Scribble(GetParam());
  const AllocatorStats s = arena_->Stats();
  EXPECT_EQ(s.capacity_bytes, kCapacity);
  EXPECT_EQ(s.used_bytes, kCapacity);
  EXPECT_EQ(s.free_bytes, 0u);
  EXPECT_EQ(s.largest_free_bytes, 0u);
  EXPECT_LE(s.peak_used_bytes, kCapacity);
  EXPECT_THAT(arena_->CheckInvariants(), StatusIs(absl::StatusCode::kInternal));
}

TEST_P(ArenaScribbledCursorTest, MarkReadsEndAndRewindIsDataLoss) {
  const Arena::Marker before = arena_->Mark();
  Scribble(GetParam());
  EXPECT_EQ(arena_->Mark().offset, kBegin + kCapacity);
  EXPECT_THAT(arena_->Rewind(before), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_EQ(reinterpret_cast<ArenaMeta*>(meta_.bytes)
                ->cursor.load(std::memory_order_relaxed),
            GetParam());
}

TEST_P(ArenaScribbledCursorTest, ResetRepairsWithoutFoldingTheCursorIntoPeak) {
  Scribble(GetParam());
  arena_->Reset();
  const AllocatorStats s = arena_->Stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.peak_used_bytes, 1000u);  // from SetUp, not the scribble
  EXPECT_THAT(arena_->CheckInvariants(), IsOk());
  // And the re-attach that a daemon restart does still accepts the region.
  EXPECT_THAT(Arena::Attach(meta_.span()), IsOk());
  EXPECT_THAT(arena_->Allocate(16, 16), IsOkAndHolds(Eq(Extent{kBegin, 16})));
}

TEST_P(ArenaScribbledCursorTest, AttachRefusesTheScribbledMetadata) {
  Scribble(GetParam());
  EXPECT_THAT(Arena::Attach(meta_.span()),
              StatusIs(absl::StatusCode::kDataLoss));
}

INSTANTIATE_TEST_SUITE_P(
    Values, ArenaScribbledCursorTest,
    ::testing::Values(kBegin + (uint64_t{1} << 20) + 1,  // just beyond end
                      kBegin + (uint64_t{1} << 20) + (uint64_t{1} << 20),
                      kBegin - 1,        // just below begin
                      0,                 // offset 0 itself
                      ~uint64_t{0} - 7,  // 2^64 - 8: start wraps to 0
                      ~uint64_t{0}));

// A scribble of the header's bounds after Attach does not move this view's
// bounds: begin and end are cached, so extents stay in the attached range.
TEST_F(ArenaTest, ScribbledHeaderBoundsDoNotMoveAnAttachedView) {
  auto* m = reinterpret_cast<ArenaMeta*>(meta_.bytes);
  m->header.begin = 0;
  m->header.end = ~uint64_t{0};
  absl::StatusOr<Extent> e = arena_->Allocate(64, 64);
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->offset, kBegin);
}

}  // namespace
}  // namespace shmalloc
