// The rules every strategy obeys, run against all five: argument checks,
// alignment, every kind of bad free, exhaustion, stats consistency, and that
// a refused request leaves the state unchanged.
#include <cstring>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/factory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::DescribeStats;
using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::SameStats;
using ::shmalloc::testing::StatusIs;
using ::shmalloc::testing::StrategyUnderTest;
using ::testing::Ge;

class ContractTest : public ::testing::TestWithParam<Strategy> {
 protected:
  void SetUp() override {
    options_ = testing::TestOptions(GetParam());
    s_ = testing::MakeStrategy(options_);
    ASSERT_NE(s_.allocator, nullptr);
  }
  OffsetAllocator& a() { return *s_.allocator; }
  bool is_arena() const { return GetParam() == Strategy::kArena; }

  // Expects `status` to be `code` and the stats to be exactly `before`.
  void ExpectRefusedUnchanged(const absl::Status& status, absl::StatusCode code,
                              const AllocatorStats& before) {
    EXPECT_THAT(status, StatusIs(code));
    const AllocatorStats after = a().Stats();
    EXPECT_TRUE(SameStats(before, after))
        << "before: " << DescribeStats(before)
        << "\nafter:  " << DescribeStats(after);
    EXPECT_THAT(a().CheckInvariants(), IsOk());
  }

  AllocatorOptions options_;
  StrategyUnderTest s_;
};

TEST_P(ContractTest, FreshAllocatorIsEmptyAndConsistent) {
  const AllocatorStats stats = a().Stats();
  EXPECT_EQ(stats.capacity_bytes, options_.end - options_.begin);
  EXPECT_EQ(stats.used_bytes, 0u);
  EXPECT_EQ(stats.free_bytes, stats.capacity_bytes);
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_GT(stats.largest_free_bytes, 0u);
  EXPECT_EQ(a().strategy(), GetParam());
  EXPECT_EQ(a().begin(), options_.begin);
  EXPECT_EQ(a().end(), options_.end);
  EXPECT_THAT(a().CheckInvariants(), IsOk());
}

TEST_P(ContractTest, SizeZeroIsInvalidArgumentAndChangesNothing) {
  const AllocatorStats before = a().Stats();
  ExpectRefusedUnchanged(a().Allocate(0, 0).status(),
                         absl::StatusCode::kInvalidArgument, before);
}

TEST_P(ContractTest, AlignmentThatIsNotAPowerOfTwoIsInvalidArgument) {
  const AllocatorStats before = a().Stats();
  for (uint64_t alignment : {uint64_t{3}, uint64_t{6}, uint64_t{24},
                             2 * kMaxAlignment, uint64_t{1} << 30}) {
    ExpectRefusedUnchanged(a().Allocate(16, alignment).status(),
                           absl::StatusCode::kInvalidArgument, before);
  }
}

TEST_P(ContractTest, EveryPowerOfTwoAlignmentIsHonouredOrRefused) {
  // A heap from 4096 with room for a 2 MiB-aligned offset.
  options_ = testing::TestOptions(GetParam(), 8 << 20);
  s_ = testing::MakeStrategy(options_);
  ASSERT_NE(s_.allocator, nullptr);
  for (uint64_t alignment = 1; alignment <= kMaxAlignment; alignment *= 2) {
    auto extent = a().Allocate(16, alignment);
    if (!extent.ok()) {
      // A strategy may refuse an alignment it cannot honour (a pool whose
      // blocks are smaller), but only with INVALID_ARGUMENT.
      EXPECT_THAT(extent, StatusIs(absl::StatusCode::kInvalidArgument))
          << "alignment " << alignment;
      continue;
    }
    EXPECT_EQ(extent->offset % alignment, 0u) << "alignment " << alignment;
    EXPECT_GE(extent->offset, options_.begin);
    EXPECT_LE(extent->offset + extent->size_bytes, options_.end);
    EXPECT_GE(extent->size_bytes, 16u);
  }
  EXPECT_THAT(a().CheckInvariants(), IsOk());
}

TEST_P(ContractTest, FreeOutsideTheHeapIsInvalidArgument) {
  ASSERT_THAT(a().Allocate(64, 0), IsOk());
  const AllocatorStats before = a().Stats();
  for (uint64_t offset : {uint64_t{0}, options_.begin - 1, options_.end,
                          options_.end + 4096, ~uint64_t{0}}) {
    ExpectRefusedUnchanged(a().Free(offset), absl::StatusCode::kInvalidArgument,
                           before);
  }
}

TEST_P(ContractTest, DoubleFreeIsFailedPreconditionAndChangesNothing) {
  auto extent = a().Allocate(64, 0);
  ASSERT_THAT(extent, IsOk());
  if (is_arena()) {
    const AllocatorStats before = a().Stats();
    ExpectRefusedUnchanged(a().Free(extent->offset),
                           absl::StatusCode::kFailedPrecondition, before);
    return;
  }
  ASSERT_THAT(a().Free(extent->offset), IsOk());
  const AllocatorStats before = a().Stats();
  ExpectRefusedUnchanged(a().Free(extent->offset),
                         absl::StatusCode::kFailedPrecondition, before);
}

TEST_P(ContractTest, FreeOfInteriorOrMisalignedOffsetIsFailedPrecondition) {
  auto extent = a().Allocate(64, 0);
  ASSERT_THAT(extent, IsOk());
  ASSERT_THAT(a().Allocate(64, 0), IsOk());
  const AllocatorStats before = a().Stats();
  for (uint64_t delta : {1, 8, 16, 32, 63}) {
    ExpectRefusedUnchanged(a().Free(extent->offset + delta),
                           absl::StatusCode::kFailedPrecondition, before);
  }
}

TEST_P(ContractTest, FreeOfANeverAllocatedOffsetIsFailedPrecondition) {
  auto extent = a().Allocate(64, 0);
  ASSERT_THAT(extent, IsOk());
  const AllocatorStats before = a().Stats();
  // Far from the only allocation, in free space.
  const uint64_t untouched =
      options_.begin + (options_.end - options_.begin) / 2;
  ExpectRefusedUnchanged(a().Free(untouched),
                         absl::StatusCode::kFailedPrecondition, before);
}

TEST_P(ContractTest, ExhaustionIsResourceExhaustedAndCounted) {
  const uint64_t size =
      std::min<uint64_t>(4096, testing::MaxTestSize(options_));
  uint64_t count = 0;
  absl::StatusOr<Extent> extent;
  while ((extent = a().Allocate(size, 0)).ok()) ++count;
  EXPECT_THAT(extent, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_GT(count, 0u);
  const AllocatorStats stats = a().Stats();
  EXPECT_EQ(stats.failed_allocations, 1u);
  EXPECT_LT(stats.largest_free_bytes, size);
  EXPECT_EQ(stats.used_bytes + stats.free_bytes, stats.capacity_bytes);
  if (!is_arena()) {
    EXPECT_EQ(stats.live_allocations, count);
  }
  // The failure changed nothing but the failure counter.
  AllocatorStats before = stats;
  before.failed_allocations += 1;
  EXPECT_THAT(a().Allocate(size, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(SameStats(before, a().Stats()));
  EXPECT_THAT(a().CheckInvariants(), IsOk());
}

TEST_P(ContractTest, ResetFreesEverythingAndKeepsPeak) {
  for (int i = 0; i < 100; ++i) ASSERT_THAT(a().Allocate(64, 0), IsOk());
  const uint64_t peak = a().Stats().used_bytes;
  a().Reset();
  const AllocatorStats stats = a().Stats();
  EXPECT_EQ(stats.used_bytes, 0u);
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_EQ(stats.free_bytes, stats.capacity_bytes);
  EXPECT_THAT(stats.peak_used_bytes, Ge(peak));
  EXPECT_THAT(a().CheckInvariants(), IsOk());
  EXPECT_THAT(a().Allocate(64, 0), IsOk());
}

TEST_P(ContractTest, UsedPlusFreeIsCapacityAfterEveryOperation) {
  std::vector<uint64_t> live;
  for (int i = 0; i < 200; ++i) {
    auto extent =
        a().Allocate(std::min<uint64_t>(16 + (i * 37) % 1000,
                                        testing::MaxTestSize(options_)),
                     0);
    ASSERT_THAT(extent, IsOk());
    live.push_back(extent->offset);
    if (!is_arena() && i % 3 == 0) {
      ASSERT_THAT(a().Free(live[live.size() / 2]), IsOk());
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(live.size() / 2));
    }
    const AllocatorStats stats = a().Stats();
    ASSERT_EQ(stats.used_bytes + stats.free_bytes, stats.capacity_bytes);
    ASSERT_LE(stats.largest_free_bytes, stats.free_bytes);
    ASSERT_GE(stats.peak_used_bytes, stats.used_bytes);
  }
  EXPECT_THAT(a().CheckInvariants(), IsOk());
}

TEST_P(ContractTest, MetadataSpanTooSmallIsInvalidArgumentNamingSizes) {
  auto needed = MetadataBytes(options_);
  ASSERT_THAT(needed, IsOk());
  std::vector<std::byte> small(*needed - 1);
  auto allocator = CreateAllocator(small, options_);
  EXPECT_THAT(allocator, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(allocator.status().message()),
              ::testing::HasSubstr(std::to_string(*needed)));
}

TEST_P(ContractTest, AttachToGarbageIsDataLoss) {
  std::vector<std::byte> garbage(s_.meta.size(), std::byte{0x5a});
  EXPECT_THAT(AttachAllocator(garbage), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<std::byte> zeros(s_.meta.size());
  EXPECT_THAT(AttachAllocator(zeros), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_P(ContractTest, AttachToTruncatedMetadataIsDataLoss) {
  std::vector<std::byte> truncated(s_.meta.begin(), s_.meta.end() - 1);
  EXPECT_THAT(AttachAllocator(truncated),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_P(ContractTest, EmptyOrUnalignedRangeIsInvalidArgument) {
  AllocatorOptions bad = options_;
  bad.begin = 0;
  EXPECT_THAT(MetadataBytes(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = options_;
  bad.begin = 4096 + 8;
  EXPECT_THAT(MetadataBytes(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = options_;
  bad.end = bad.begin;
  EXPECT_THAT(MetadataBytes(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(AllStrategies, ContractTest,
                         ::testing::ValuesIn(testing::kAllStrategies),
                         testing::StrategyParamName);

TEST(FactoryTest, UnknownStrategyIsInvalidArgument) {
  AllocatorOptions options = testing::TestOptions(Strategy::kUnspecified);
  EXPECT_THAT(MetadataBytes(options),
              StatusIs(absl::StatusCode::kInvalidArgument));
  options.strategy = static_cast<Strategy>(42);
  std::vector<std::byte> meta(1 << 16);
  EXPECT_THAT(CreateAllocator(meta, options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace shmalloc
