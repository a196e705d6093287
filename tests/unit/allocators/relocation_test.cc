// Metadata is position-independent: its bytes copied to another address (as
// when another process maps the meta file, or the daemon restarts) attach and
// keep working, with the same stats and the same live allocations.
#include <cstring>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/factory.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::SameStats;
using ::shmalloc::testing::StatusIs;

class RelocationTest : public ::testing::TestWithParam<Strategy> {};

TEST_P(RelocationTest, CopiedMetadataAttachesAndKeepsWorking) {
  const AllocatorOptions options = testing::TestOptions(GetParam());
  testing::StrategyUnderTest original = testing::MakeStrategy(options);
  ASSERT_NE(original.allocator, nullptr);
  std::vector<Extent> extents;
  for (int i = 0; i < 64; ++i) {
    auto extent = original.allocator->Allocate(16 + 8 * (i % 7), 0);
    ASSERT_THAT(extent, IsOk());
    extents.push_back(*extent);
  }
  if (GetParam() != Strategy::kArena) {
    for (size_t i = 0; i < extents.size(); i += 4) {
      ASSERT_THAT(original.allocator->Free(extents[i].offset), IsOk());
    }
  }
  const AllocatorStats before = original.allocator->Stats();

  // Copy into a larger buffer at a different address and scribble over the
  // original, so nothing can still point into it.
  std::vector<std::byte> moved(original.meta.size() + 4096);
  std::byte* at = moved.data() + 64;
  std::memcpy(at, original.meta.data(), original.meta.size());
  original.allocator.reset();
  std::memset(original.meta.data(), 0xa5, original.meta.size());

  auto attached = AttachAllocator(std::span(at, original.meta.size()));
  ASSERT_THAT(attached, IsOk());
  OffsetAllocator& a = **attached;
  EXPECT_TRUE(SameStats(before, a.Stats()));
  EXPECT_THAT(a.CheckInvariants(), IsOk());

  if (GetParam() != Strategy::kArena) {
    // What was freed before the move stays free, what was live stays live.
    EXPECT_THAT(a.Free(extents[0].offset),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    for (size_t i = 1; i < extents.size(); ++i) {
      if (i % 4 == 0) continue;
      ASSERT_THAT(a.Free(extents[i].offset), IsOk()) << "extent " << i;
    }
    EXPECT_EQ(a.Stats().used_bytes, 0u);
  }
  auto fresh =
      a.Allocate(std::min<uint64_t>(128, testing::MaxTestSize(options)), 64);
  ASSERT_THAT(fresh, IsOk());
  EXPECT_EQ(fresh->offset % 64, 0u);
  EXPECT_THAT(a.CheckInvariants(), IsOk());
}

INSTANTIATE_TEST_SUITE_P(AllStrategies, RelocationTest,
                         ::testing::ValuesIn(testing::kAllStrategies),
                         testing::StrategyParamName);

}  // namespace
}  // namespace shmalloc
