// The client against a real daemon: connection and session, the RPC
// wrappers, region mapping, Allocation handles and the Region pmr adapter.
#include <cstring>
#include <memory_resource>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "shmalloc/memory_resource.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using ::testing::HasSubstr;
using ClientApiTest = ClientTest;

TEST_F(ClientApiTest, ConnectOpensASessionAndLearnsTheShmDir) {
  EXPECT_NE(client_->session_id(), 0u);
  EXPECT_EQ(client_->shm_dir(), daemon_->shm_dir());
  EXPECT_EQ(client_->target(), daemon_->target());
  SHMALLOC_EXPECT_OK(client_->SessionStatus());
  absl::StatusOr<sc::DaemonStats> stats = client_->GetStats();
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->sessions, 1u);
}

TEST_F(ClientApiTest, SocketPathTargetAndEnvironmentAreHonoured) {
  absl::StatusOr<std::unique_ptr<sc::Client>> by_path =
      sc::Client::Connect({.target = daemon_->socket_path()});
  ASSERT_THAT(by_path, IsOk());
  EXPECT_EQ((*by_path)->target(), daemon_->target());
  setenv("SHMALLOC_SOCKET", daemon_->socket_path().c_str(), 1);
  absl::StatusOr<std::unique_ptr<sc::Client>> by_env = sc::Client::Connect();
  unsetenv("SHMALLOC_SOCKET");
  ASSERT_THAT(by_env, IsOk());
  EXPECT_EQ((*by_env)->target(), daemon_->target());
}

TEST_F(ClientApiTest, RegionLifecycleThroughTheWrappers) {
  absl::StatusOr<sc::RegionInfo> info = client_->CreateRegion(
      {.name = "r1", .strategy = sc::Strategy::kBuddy, .size_bytes = 1 << 20});
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->strategy, sc::Strategy::kBuddy);
  EXPECT_LT(info->heap_begin, info->heap_end);
  absl::Status dup = client_
                         ->CreateRegion({.name = "r1",
                                         .strategy = sc::Strategy::kBuddy,
                                         .size_bytes = 1 << 20})
                         .status();
  EXPECT_THAT(dup, StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(std::string(dup.message()), HasSubstr("CreateRegion: "));
  EXPECT_THAT(client_->GetRegion("nope"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(client_->CreateRegion({.name = "Bad/Name",
                                     .strategy = sc::Strategy::kBuddy,
                                     .size_bytes = 1 << 20}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  absl::StatusOr<std::vector<sc::RegionInfo>> all = client_->ListRegions();
  ASSERT_THAT(all, IsOk());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().name, "r1");
  absl::StatusOr<std::vector<sc::Extent>> raw =
      client_->Allocate("r1", 100, 3, {});
  ASSERT_THAT(raw, IsOk());
  ASSERT_EQ(raw->size(), 3u);
  std::vector<uint64_t> offsets;
  for (const sc::Extent& e : *raw) offsets.push_back(e.offset);
  EXPECT_THAT(client_->Free("r1", offsets), IsOk());
  SHMALLOC_EXPECT_OK(client_->DeleteRegion("r1"));
  EXPECT_THAT(client_->GetRegion("r1"), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(ClientApiTest, OpenRegionMapsTheDataFile) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("map", sc::Strategy::kFreeList, 1 << 20);
  ASSERT_NE(region, nullptr);
  EXPECT_EQ(region->name(), "map");
  EXPECT_EQ(region->generation(), region->info().generation);
  // A second mapping (lazy) sees what the first writes.
  absl::StatusOr<std::shared_ptr<sc::Region>> again =
      client_->OpenRegion("map", {.populate = false});
  ASSERT_THAT(again, IsOk());
  absl::StatusOr<sc::Allocation> a = region->Allocate(64);
  ASSERT_THAT(a, IsOk());
  std::memcpy(a->data(), "hello", 6);
  EXPECT_STREQ(static_cast<const char*>((*again)->ToPointer(a->offset())),
               "hello");
  EXPECT_THAT(region->ToOffset(a->data()),
              IsOkAndHolds(::testing::Eq(a->offset())));
}

TEST_F(ClientApiTest, AlignedOffsetsAreAlignedAddressesInEveryMapping) {
  // The daemon aligns offsets; a DMA or GPU staging buffer needs the
  // address aligned. Every mapping starts on a kMaxAlignment (2 MiB)
  // boundary, so both agree, in this mapping and in a second one.
  std::shared_ptr<sc::Region> region =
      MakeRegion("align", sc::Strategy::kFreeList, 16 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::shared_ptr<sc::Region>> again =
      client_->OpenRegion("align", {.populate = false});
  ASSERT_THAT(again, IsOk());
  for (uint64_t alignment = 4096; alignment <= sc::kMaxAlignment;
       alignment *= 8) {
    absl::StatusOr<sc::Allocation> a =
        region->Allocate(100, {.alignment = alignment});
    ASSERT_THAT(a, IsOk()) << alignment;
    EXPECT_EQ(a->offset() % alignment, 0u) << alignment;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data()) % alignment, 0u)
        << alignment;
    EXPECT_EQ(reinterpret_cast<uintptr_t>((*again)->ToPointer(a->offset())) %
                  alignment,
              0u)
        << alignment;
  }
}

TEST_F(ClientApiTest, AllocationFreesOnDestructionUnlessDetachedOrReleased) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 1 << 20, 64);
  ASSERT_NE(region, nullptr);
  {
    absl::StatusOr<sc::Allocation> a = region->Allocate(64);
    ASSERT_THAT(a, IsOk());
    EXPECT_TRUE(a->owning());
    EXPECT_EQ(StatsOf("pool").live_allocations, 1u);
    sc::Allocation moved = *std::move(a);
    EXPECT_FALSE(a->valid());
    EXPECT_TRUE(moved.valid());
  }
  EXPECT_EQ(StatsOf("pool").live_allocations, 0u);
  uint64_t detached_offset = 0, released_offset = 0;
  {
    absl::StatusOr<sc::Allocation> d = region->Allocate(64, {.detached = true});
    ASSERT_THAT(d, IsOk());
    EXPECT_FALSE(d->owning());
    detached_offset = d->offset();
    absl::StatusOr<sc::Allocation> r = region->Allocate(64);
    ASSERT_THAT(r, IsOk());
    released_offset = r->Release().offset;
    EXPECT_FALSE(r->valid());
  }
  const sc::RegionStats s = StatsOf("pool");
  EXPECT_EQ(s.live_allocations, 2u);
  EXPECT_EQ(s.detached_allocations, 1u);
  SHMALLOC_EXPECT_OK(
      region->Free(std::vector<uint64_t>{detached_offset, released_offset}));
  EXPECT_EQ(StatsOf("pool").live_allocations, 0u);
}

TEST_F(ClientApiTest, AllocateBatchIsAllOrNothing) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 64 * 100, 64);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::vector<sc::Allocation>> batch =
      region->AllocateBatch(64, 60);
  ASSERT_THAT(batch, IsOk());
  EXPECT_EQ(batch->size(), 60u);
  EXPECT_THAT(region->AllocateBatch(64, 60),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(StatsOf("pool").live_allocations, 60u);
  batch->clear();
  EXPECT_EQ(StatsOf("pool").live_allocations, 0u);
}

TEST_F(ClientApiTest, SessionEndFreesOwnedAllocationsOnly) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 1 << 20, 64);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  ASSERT_THAT((*other)->Allocate("pool", 64, 5, {}), IsOk());
  ASSERT_THAT((*other)->Allocate("pool", 64, 2, {.detached = true}), IsOk());
  EXPECT_EQ(StatsOf("pool").live_allocations, 7u);
  other->reset();  // ends its session
  PollResult r = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.regions_size() == 1 && s.regions(0).live_allocations() == 2;
      },
      absl::Seconds(10));
  EXPECT_TRUE(r.done) << r.stats.DebugString();
}

TEST_F(ClientApiTest, RegionResourceAllocatesThroughTheDaemon) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("general", sc::Strategy::kFreeList, 4 << 20);
  ASSERT_NE(region, nullptr);
  sc::RegionResource resource(region);
  {
    std::pmr::vector<double> v(&resource);
    v.resize(100000);
    EXPECT_THAT(region->ToOffset(v.data()), IsOk());
    EXPECT_EQ(StatsOf("general").live_allocations, 1u);
    std::pmr::vector<char> huge(&resource);
    EXPECT_THROW(huge.resize(64 << 20), std::bad_alloc);
  }
  EXPECT_EQ(StatsOf("general").live_allocations, 0u);
}

}  // namespace
}  // namespace shmalloc::testing
