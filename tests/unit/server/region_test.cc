#include "server/region.h"

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/segment_header.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/region_name.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::SizeIs;

constexpr uint64_t kSession = 7;
constexpr uint64_t kOther = 8;
bool Alive() { return true; }

v1::CreateRegionRequest Request(const std::string& name, v1::Strategy strategy,
                                uint64_t size = 1 << 20) {
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(strategy);
  request.set_size_bytes(size);
  if (strategy == v1::STRATEGY_POOL) request.set_block_size(256);
  return request;
}

AllocateArgs Args(uint64_t session, uint64_t size, uint32_t count = 1,
                  bool detached = false) {
  AllocateArgs args;
  args.session_id = session;
  args.size = size;
  args.count = count;
  args.detached = detached;
  return args;
}

// Stats with the fields a failed call may legitimately move masked out.
std::string Fingerprint(const Region& region) {
  v1::RegionStats stats = region.Stats();
  stats.clear_peak_used_bytes();
  stats.clear_failed_allocations();
  return stats.SerializeAsString();
}

class RegionTest : public ::testing::TestWithParam<v1::Strategy> {
 protected:
  std::unique_ptr<Region> Make(const std::string& name = "r") {
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Create(dir_.path(), Request(name, GetParam()));
    EXPECT_THAT(region, IsOk());
    return region.ok() ? *std::move(region) : nullptr;
  }
  TempDir dir_;
};

TEST_P(RegionTest, CreateDescribesTheGeometry) {
  auto region = Make("geo");
  const v1::Region d = region->Describe();
  EXPECT_EQ(d.name(), "geo");
  EXPECT_EQ(d.strategy(), GetParam());
  EXPECT_EQ(d.heap_begin(), kHeapBegin);
  EXPECT_EQ(d.heap_end(), kHeapBegin + (1 << 20));
  EXPECT_EQ(d.size_bytes(), d.heap_end());
  EXPECT_EQ(d.data_file(), "shmalloc-geo.data");
  EXPECT_EQ(d.generation(), 0u);
}

TEST_P(RegionTest, CreateTwiceIsAlreadyExists) {
  auto region = Make("twice");
  EXPECT_THAT(Region::Create(dir_.path(), Request("twice", GetParam())),
              StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_P(RegionTest, BadRequestsChangeNothing) {
  auto region = Make();
  SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 64), Alive));
  const std::string before = Fingerprint(*region);
  EXPECT_THAT(region->Allocate(Args(kSession, 0), Alive),
              StatusIs(absl::StatusCode::kInvalidArgument));
  AllocateArgs misaligned = Args(kSession, 64);
  misaligned.alignment = 3;
  EXPECT_THAT(region->Allocate(misaligned, Alive),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->Allocate(Args(kSession, 2 << 20), Alive),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->Allocate(Args(kSession, 64), [] { return false; }),
              StatusIs(absl::StatusCode::kNotFound));
  const uint64_t bad[] = {uint64_t{1} << 40};
  EXPECT_FALSE(region->Free(bad).ok());
  EXPECT_EQ(Fingerprint(*region), before);
}

TEST_P(RegionTest, ResetBumpsGenerationAndFreesAll) {
  auto region = Make();
  SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 64, 3), Alive));
  if (GetParam() != v1::STRATEGY_ARENA) {
    EXPECT_THAT(region->Reset(false),
                StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  SHMALLOC_ASSERT_OK(region->Reset(true));
  EXPECT_EQ(region->Describe().generation(), 1u);
  EXPECT_EQ(region->Stats().used_bytes(), 0u);
  EXPECT_EQ(region->Stats().sessions_size(), 0);
}

TEST_P(RegionTest, DeleteNeedsForceWhileAllocated) {
  auto region = Make();
  SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 64), Alive));
  EXPECT_THAT(region->MarkDeleted(false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  SHMALLOC_ASSERT_OK(region->MarkDeleted(true));
  EXPECT_THAT(region->Allocate(Args(kSession, 64), Alive),
              StatusIs(absl::StatusCode::kNotFound));
  SHMALLOC_EXPECT_OK(region->UnlinkFiles());
}

INSTANTIATE_TEST_SUITE_P(
    AllStrategies, RegionTest,
    ::testing::Values(v1::STRATEGY_ARENA, v1::STRATEGY_POOL, v1::STRATEGY_BUDDY,
                      v1::STRATEGY_SLAB, v1::STRATEGY_FREE_LIST),
    [](const auto& info) { return v1::Strategy_Name(info.param); });

// Ownership, batches and quotas (strategies that free single extents).
class OwnedRegionTest : public RegionTest {};

TEST_P(OwnedRegionTest, ReleaseSessionFreesOnlyItsOwnedAllocations) {
  auto region = Make();
  SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 100, 4), Alive));
  SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 100, 2, true), Alive));
  SHMALLOC_ASSERT_OK(region->Allocate(Args(kOther, 100, 3), Alive));
  v1::RegionStats stats = region->Stats();
  EXPECT_EQ(stats.live_allocations(), 9u);
  EXPECT_EQ(stats.detached_allocations(), 2u);
  ASSERT_EQ(stats.sessions_size(), 2);
  EXPECT_EQ(region->ReleaseSession(kSession), 4u);
  stats = region->Stats();
  EXPECT_EQ(stats.live_allocations(), 5u);
  EXPECT_EQ(stats.detached_allocations(), 2u);
  ASSERT_EQ(stats.sessions_size(), 1);
  EXPECT_EQ(stats.sessions(0).session_id(), kOther);
  EXPECT_EQ(stats.sessions(0).live_allocations(), 3u);
}

TEST_P(OwnedRegionTest, AnySessionMayFreeAndFreeIsAllOrNothing) {
  auto region = Make();
  absl::StatusOr<AllocateResult> a =
      region->Allocate(Args(kSession, 64, 2), Alive);
  SHMALLOC_ASSERT_OK(a);
  const std::string before = Fingerprint(*region);
  const uint64_t with_bad[] = {a->extents[0].offset, a->extents[0].offset + 8};
  EXPECT_THAT(region->Free(with_bad),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const uint64_t dup[] = {a->extents[0].offset, a->extents[0].offset};
  EXPECT_THAT(region->Free(dup),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(Fingerprint(*region), before);
  const uint64_t both[] = {a->extents[0].offset, a->extents[1].offset};
  EXPECT_THAT(region->Free(both),
              shmalloc::testing::IsOkAndHolds(a->extents[0].size_bytes +
                                              a->extents[1].size_bytes));
  EXPECT_EQ(region->Stats().live_allocations(), 0u);
  EXPECT_EQ(region->Stats().size_histogram_size(), 0);
}

TEST_P(OwnedRegionTest, BatchThatDoesNotFitKeepsNothing) {
  auto region = Make();
  const std::string before = Fingerprint(*region);
  EXPECT_THAT(region->Allocate(Args(kSession, 200, 60000), Alive),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Fingerprint(*region), before);
}

TEST_P(OwnedRegionTest, QuotaLimitsOwnedBytesPerSession) {
  v1::CreateRegionRequest request = Request("q", GetParam());
  request.set_quota_bytes_per_session(1024);
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Create(dir_.path(), request);
  SHMALLOC_ASSERT_OK(region);
  SHMALLOC_ASSERT_OK((*region)->Allocate(Args(kSession, 256, 2), Alive));
  const std::string before = Fingerprint(**region);
  EXPECT_THAT((*region)->Allocate(Args(kSession, 256, 3), Alive),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Fingerprint(**region), before);
  SHMALLOC_EXPECT_OK((*region)->Allocate(Args(kOther, 256, 2), Alive));
}

TEST_P(OwnedRegionTest, ReopenKeepsAllocationsAsDetachedAndHistogram) {
  uint64_t offset;
  {
    auto region = Make("persist");
    absl::StatusOr<AllocateResult> a =
        region->Allocate(Args(kSession, 100, 1, true), Alive);
    SHMALLOC_ASSERT_OK(a);
    offset = a->extents[0].offset;
    SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 100), Alive));
    SHMALLOC_ASSERT_OK(region->Reset(true));  // generation 1
    SHMALLOC_ASSERT_OK(region->Allocate(Args(kSession, 100, 1, true), Alive));
  }
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Open(dir_.path(), "persist");
  SHMALLOC_ASSERT_OK(region);
  const v1::RegionStats stats = (*region)->Stats();
  EXPECT_EQ(stats.live_allocations(), 1u);
  EXPECT_EQ(stats.detached_allocations(), 1u);
  EXPECT_EQ(stats.generation(), 1u);
  ASSERT_EQ(stats.size_histogram_size(), 1);
  EXPECT_EQ(stats.size_histogram(0).count(), 1u);
  const uint64_t offsets[] = {offset};
  SHMALLOC_EXPECT_OK((*region)->Free(offsets));
}

INSTANTIATE_TEST_SUITE_P(
    FreeingStrategies, OwnedRegionTest,
    ::testing::Values(v1::STRATEGY_POOL, v1::STRATEGY_BUDDY, v1::STRATEGY_SLAB,
                      v1::STRATEGY_FREE_LIST),
    [](const auto& info) { return v1::Strategy_Name(info.param); });

TEST(RegionBatchTest, BuddyBatchFailingPartWayChangesOnlyTheFailureCount) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Create(dir.path(), Request("b", v1::STRATEGY_BUDDY));
  SHMALLOC_ASSERT_OK(region);
  absl::StatusOr<AllocateResult> all =
      (*region)->Allocate(Args(kSession, 64 << 10, 16), Alive);
  SHMALLOC_ASSERT_OK(all);
  // Free one 128 KiB pair and three lone 64 KiB blocks: 320 KiB free, the
  // largest block 128 KiB, so two 128 KiB extents pass every bound and the
  // second one fails.
  std::vector<uint64_t> offsets;
  for (int i : {0, 1, 4, 6, 8}) offsets.push_back(all->extents[i].offset);
  SHMALLOC_ASSERT_OK((*region)->Free(offsets));
  v1::RegionStats before = (*region)->Stats();
  EXPECT_THAT((*region)->Allocate(Args(kSession, 128 << 10, 2), Alive),
              StatusIs(absl::StatusCode::kResourceExhausted));
  before.set_failed_allocations(before.failed_allocations() + 1);
  EXPECT_EQ((*region)->Stats().SerializeAsString(), before.SerializeAsString());
}

TEST(RegionBatchTest, BatchOverTheFreeSpaceIsRefusedAndCountedOnce) {
  TempDir dir;
  for (v1::Strategy strategy :
       {v1::STRATEGY_ARENA, v1::STRATEGY_POOL, v1::STRATEGY_BUDDY,
        v1::STRATEGY_SLAB, v1::STRATEGY_FREE_LIST}) {
    absl::StatusOr<std::unique_ptr<Region>> region = Region::Create(
        dir.path(), Request(absl::StrCat("s", strategy), strategy));
    SHMALLOC_ASSERT_OK(region);
    v1::RegionStats before = (*region)->Stats();
    EXPECT_THAT((*region)->Allocate(Args(kSession, 256, 5000), Alive),
                StatusIs(absl::StatusCode::kResourceExhausted))
        << v1::Strategy_Name(strategy);
    before.set_failed_allocations(before.failed_allocations() + 1);
    EXPECT_EQ((*region)->Stats().SerializeAsString(),
              before.SerializeAsString())
        << v1::Strategy_Name(strategy);
  }
}

TEST(RegionArenaTest, BatchIsOneContiguousBumpAndFreeIsRefused) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Create(dir.path(), Request("a", v1::STRATEGY_ARENA));
  SHMALLOC_ASSERT_OK(region);
  AllocateArgs args = Args(kSession, 100, 3);
  args.alignment = 64;
  absl::StatusOr<AllocateResult> a = (*region)->Allocate(args, Alive);
  SHMALLOC_ASSERT_OK(a);
  ASSERT_THAT(a->extents, SizeIs(3));
  EXPECT_EQ(a->extents[1].offset - a->extents[0].offset, 128u);
  EXPECT_EQ(a->extents[2].offset - a->extents[1].offset, 128u);
  const uint64_t offsets[] = {a->extents[0].offset};
  EXPECT_THAT((*region)->Free(offsets),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ((*region)->Stats().sessions_size(), 0);
}

TEST(RegionOpenTest, AScribbledDataHeaderIsRewrittenFromTheMetaFile) {
  TempDir dir;
  {
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Create(dir.path(), Request("c", v1::STRATEGY_BUDDY));
    SHMALLOC_ASSERT_OK(region);
  }
  const std::string data = dir.File(DataFileName("c"));
  {
    absl::StatusOr<MappedFile> file = MappedFile::Open(data);
    SHMALLOC_ASSERT_OK(file);
    auto* seg = reinterpret_cast<SegmentHeader*>(file->data());
    std::memset(file->data(), 0xff, 8);  // the magic
    seg->heap_end = uint64_t{1} << 60;   // what a client could write
    seg->block_size = 0;
  }
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Open(dir.path(), "c");
  SHMALLOC_ASSERT_OK(region);
  EXPECT_EQ((*region)->Describe().heap_end(), kHeapBegin + (1 << 20));
  absl::StatusOr<MappedFile> file = MappedFile::Open(data);
  SHMALLOC_ASSERT_OK(file);
  const auto* seg = reinterpret_cast<const SegmentHeader*>(file->data());
  EXPECT_EQ(seg->magic, kSegmentMagic);
  EXPECT_EQ(seg->heap_end, kHeapBegin + (1 << 20));
  EXPECT_EQ(seg->block_size, 64u);
}

TEST(RegionOpenTest, ACorruptMetaFileIsDataLossAndLeftUntouched) {
  TempDir dir;
  {
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Create(dir.path(), Request("c", v1::STRATEGY_BUDDY));
    SHMALLOC_ASSERT_OK(region);
  }
  const std::string meta = dir.File(MetaFileName("c"));
  {
    absl::StatusOr<MappedFile> file = MappedFile::Open(meta);
    SHMALLOC_ASSERT_OK(file);
    std::memset(file->data() + 16, 0xff, 8);  // heap_bytes
  }
  EXPECT_THAT(Region::Open(dir.path(), "c"),
              StatusIs(absl::StatusCode::kDataLoss));
  absl::StatusOr<MappedFile> file = MappedFile::Open(meta);
  SHMALLOC_ASSERT_OK(file);
  EXPECT_EQ(static_cast<unsigned char>(file->data()[16]), 0xffu);
}

TEST(RegionOpenTest, MissingRegionIsNotFound) {
  TempDir dir;
  EXPECT_THAT(Region::Open(dir.path(), "none"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(RegionCreateTest, BadRequestsAreInvalidArgumentAndLeaveNoFiles) {
  TempDir dir;
  v1::CreateRegionRequest no_strategy = Request("x", v1::STRATEGY_BUDDY);
  no_strategy.clear_strategy();
  v1::CreateRegionRequest no_size = Request("x", v1::STRATEGY_BUDDY, 0);
  v1::CreateRegionRequest pool = Request("x", v1::STRATEGY_POOL);
  pool.set_block_size(0);
  v1::CreateRegionRequest bad_name = Request("../x", v1::STRATEGY_BUDDY);
  for (const auto& request : {no_strategy, no_size, pool, bad_name}) {
    EXPECT_THAT(Region::Create(dir.path(), request),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << request.ShortDebugString();
  }
  EXPECT_THAT(ListDirectory(dir.path()),
              shmalloc::testing::IsOkAndHolds(ElementsAre()));
}

}  // namespace
}  // namespace shmalloc::server
