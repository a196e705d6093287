// The normal path of every RPC of shmalloc.v1.Allocator against the real
// shmallocd: regions of every strategy, sessions, single, batch and detached
// allocation, Free of many offsets, ResetRegion, GetStats, WatchStats, the
// grpc.health.v1 service, and bytes shared through the data file.
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/segment_header.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

using ::google::protobuf::util::MessageDifferencer;

constexpr uint64_t kHeapBytes = 1 << 20;
constexpr uint64_t kDefaultAlignment = 16;  // AllocateRequest.alignment 0

std::string StrategyLabel(v1::Strategy s) {
  std::string name = v1::Strategy_Name(s);  // "STRATEGY_FREE_LIST"
  name = name.substr(std::strlen("STRATEGY_"));
  std::transform(name.begin(), name.end(), name.begin(), ::tolower);
  return name;
}

std::string ParamName(const ::testing::TestParamInfo<v1::Strategy>& info) {
  return StrategyLabel(info.param);
}

// The strategies that free single allocations (every one but ARENA).
const std::vector<v1::Strategy> kFreeingStrategies = {
    v1::STRATEGY_POOL, v1::STRATEGY_BUDDY, v1::STRATEGY_SLAB,
    v1::STRATEGY_FREE_LIST};
const std::vector<v1::Strategy> kAllStrategies = {
    v1::STRATEGY_ARENA, v1::STRATEGY_POOL, v1::STRATEGY_BUDDY,
    v1::STRATEGY_SLAB, v1::STRATEGY_FREE_LIST};

// Expects the extents to lie in the region's heap and not to overlap.
void ExpectDisjointInHeap(const v1::AllocateResponse& response,
                          const v1::Region& region) {
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const v1::Extent& e : response.extents()) {
    EXPECT_GE(e.offset(), region.heap_begin());
    EXPECT_LE(e.offset() + e.size_bytes(), region.heap_end());
    spans.emplace_back(e.offset(), e.offset() + e.size_bytes());
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    EXPECT_LE(spans[i - 1].second, spans[i].first)
        << "extents overlap at offset " << spans[i].first;
  }
}

// The histogram bucket of a reserved size: sizes <= 2^bucket.
uint32_t Log2Upper(uint64_t size) {
  return size <= 1 ? 0 : 64 - std::countl_zero(size - 1);
}

class RpcTest : public DaemonTest {
 protected:
  std::unique_ptr<Session> OpenSessionOrDie(const std::string& name = "rpc") {
    absl::StatusOr<std::unique_ptr<Session>> session =
        Session::Open(stub(), name);
    EXPECT_THAT(session, IsOk());
    return session.ok() ? *std::move(session) : nullptr;
  }
};

class RegionLifecycleTest : public RpcTest,
                            public ::testing::WithParamInterface<v1::Strategy> {
};

TEST_P(RegionLifecycleTest, CreateGetListDeleteRoundTrip) {
  const std::string name = "r." + StrategyLabel(GetParam());
  absl::StatusOr<v1::Region> created =
      CreateRegion(stub(), name, GetParam(), kHeapBytes);
  ASSERT_THAT(created, IsOk());
  EXPECT_EQ(created->name(), name);
  EXPECT_EQ(created->strategy(), GetParam());
  EXPECT_EQ(created->data_file(), "shmalloc-" + name + ".data");
  EXPECT_EQ(created->heap_begin(), kHeapBegin);
  EXPECT_EQ(created->heap_end(), created->size_bytes());
  EXPECT_GE(created->heap_end() - created->heap_begin(), kHeapBytes);
  if (GetParam() == v1::STRATEGY_POOL) {
    EXPECT_EQ(created->block_size(), 64u);
  }

  // The data file: its size and its segment header.
  struct stat st;
  ASSERT_EQ(stat(daemon_->RegionFile(name).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), created->size_bytes());
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ASSERT_EQ(stat(daemon_->RegionFile(name, ".meta").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  {
    absl::StatusOr<std::unique_ptr<MappedFile>> map =
        MappedFile::Map(daemon_->RegionFile(name));
    ASSERT_THAT(map, IsOk());
    const auto* header = reinterpret_cast<const SegmentHeader*>((*map)->data());
    EXPECT_EQ(header->magic, kSegmentMagic);
    EXPECT_EQ(header->layout_version, kSegmentLayoutVersion);
    EXPECT_EQ(header->strategy, static_cast<uint32_t>(GetParam()));
    EXPECT_EQ(header->size_bytes, created->size_bytes());
    EXPECT_EQ(header->heap_begin, created->heap_begin());
    EXPECT_EQ(header->heap_end, created->heap_end());
    EXPECT_EQ(header->generation.load(), created->generation());
    EXPECT_STREQ(header->name, name.c_str());
  }

  absl::StatusOr<v1::Region> got = GetRegion(stub(), name);
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(*got, *created))
      << got->DebugString() << " vs " << created->DebugString();

  ASSERT_THAT(CreateRegion(stub(), "zz-second", v1::STRATEGY_FREE_LIST),
              IsOk());
  absl::StatusOr<v1::ListRegionsResponse> list = ListRegions(stub());
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->regions_size(), 2);
  EXPECT_TRUE(MessageDifferencer::Equals(list->regions(0), *created));
  EXPECT_EQ(list->regions(1).name(), "zz-second");

  SHMALLOC_ASSERT_OK(DeleteRegion(stub(), name));
  EXPECT_THAT(GetRegion(stub(), name), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(std::filesystem::exists(daemon_->RegionFile(name)));
  EXPECT_FALSE(std::filesystem::exists(daemon_->RegionFile(name, ".meta")));
  list = ListRegions(stub());
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->regions_size(), 1);
  EXPECT_EQ(list->regions(0).name(), "zz-second");
  // The name is free again.
  EXPECT_THAT(CreateRegion(stub(), name, GetParam(), kHeapBytes), IsOk());
}

INSTANTIATE_TEST_SUITE_P(Strategies, RegionLifecycleTest,
                         ::testing::ValuesIn(kAllStrategies), ParamName);

class AllocateFreeTest : public RpcTest,
                         public ::testing::WithParamInterface<v1::Strategy> {
 protected:
  void SetUp() override {
    RpcTest::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<v1::Region> region =
        CreateRegion(stub(), "heap", GetParam(), kHeapBytes);
    ASSERT_THAT(region, IsOk());
    region_ = *region;
    session_ = OpenSessionOrDie();
    ASSERT_NE(session_, nullptr);
  }
  void TearDown() override {
    session_.reset();
    RpcTest::TearDown();
  }

  v1::Region region_;
  std::unique_ptr<Session> session_;
};

TEST_P(AllocateFreeTest, SingleAllocationIsAlignedInTheHeapAndCounted) {
  absl::StatusOr<v1::AllocateResponse> a =
      Allocate(stub(), *session_, "heap", 48);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->extents_size(), 1);
  const v1::Extent e = a->extents(0);
  EXPECT_NE(e.offset(), 0u);
  EXPECT_EQ(e.offset() % kDefaultAlignment, 0u);
  EXPECT_GE(e.size_bytes(), 48u);
  ExpectDisjointInHeap(*a, region_);
  EXPECT_EQ(a->generation(), region_.generation());

  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->used_bytes(), e.size_bytes());
  EXPECT_EQ(stats->live_allocations(), 1u);
  EXPECT_EQ(stats->requested_bytes(), 48u);
  EXPECT_EQ(stats->used_bytes() + stats->free_bytes(), stats->capacity_bytes());
  EXPECT_GE(stats->peak_used_bytes(), e.size_bytes());
  EXPECT_EQ(stats->detached_allocations(), 0u);
  ASSERT_EQ(stats->sessions_size(), 1);
  EXPECT_EQ(stats->sessions(0).session_id(), session_->id());
  EXPECT_EQ(stats->sessions(0).client_name(), "rpc");
  EXPECT_EQ(stats->sessions(0).used_bytes(), e.size_bytes());
  EXPECT_EQ(stats->sessions(0).live_allocations(), 1u);

  absl::StatusOr<v1::FreeResponse> f =
      Free(stub(), *session_, "heap", {e.offset()});
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ(f->freed_bytes(), e.size_bytes());
  stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->used_bytes(), 0u);
  EXPECT_EQ(stats->live_allocations(), 0u);
  EXPECT_EQ(stats->free_bytes(), stats->capacity_bytes());
  EXPECT_GE(stats->peak_used_bytes(), e.size_bytes());
}

TEST_P(AllocateFreeTest, BatchOfThousandIsDisjointAndFreedInOneCall) {
  absl::StatusOr<v1::AllocateResponse> a =
      Allocate(stub(), *session_, "heap", 64, /*count=*/1000);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->extents_size(), 1000);
  ExpectDisjointInHeap(*a, region_);
  uint64_t reserved = 0;
  for (const v1::Extent& e : a->extents()) reserved += e.size_bytes();

  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_allocations(), 1000u);
  EXPECT_EQ(stats->used_bytes(), reserved);
  EXPECT_EQ(stats->requested_bytes(), 64u * 1000);
  uint64_t in_histogram = 0;
  for (const v1::HistogramBucket& b : stats->size_histogram()) {
    in_histogram += b.count();
  }
  EXPECT_EQ(in_histogram, 1000u);

  absl::StatusOr<v1::FreeResponse> f =
      Free(stub(), *session_, "heap", Offsets(*a));
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ(f->freed_bytes(), reserved);
  stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->used_bytes(), 0u);
  EXPECT_EQ(stats->live_allocations(), 0u);
  EXPECT_EQ(stats->peak_used_bytes(), reserved);
}

TEST_P(AllocateFreeTest, DetachedAllocationOutlivesItsSession) {
  absl::StatusOr<v1::AllocateResponse> owned =
      Allocate(stub(), *session_, "heap", 64, 3);
  ASSERT_THAT(owned, IsOk());
  absl::StatusOr<v1::AllocateResponse> detached =
      Allocate(stub(), *session_, "heap", 64, 2, /*detached=*/true);
  ASSERT_THAT(detached, IsOk());
  uint64_t detached_bytes = 0;
  for (const v1::Extent& e : detached->extents()) {
    detached_bytes += e.size_bytes();
  }
  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_allocations(), 5u);
  EXPECT_EQ(stats->detached_allocations(), 2u);
  EXPECT_EQ(stats->detached_bytes(), detached_bytes);
  ASSERT_EQ(stats->sessions_size(), 1);
  EXPECT_EQ(stats->sessions(0).live_allocations(), 3u);

  session_->Close();
  PollResult closed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 0 && s.regions(0).live_allocations() == 2;
      },
      absl::Seconds(1));
  ASSERT_TRUE(closed.done) << closed.stats.DebugString();
  const v1::RegionStats& after = closed.stats.regions(0);
  EXPECT_EQ(after.detached_allocations(), 2u);
  EXPECT_EQ(after.used_bytes(), detached_bytes);
  EXPECT_EQ(after.sessions_size(), 0);

  // Any session may free them, including a later one.
  std::unique_ptr<Session> later = OpenSessionOrDie("later");
  ASSERT_NE(later, nullptr);
  absl::StatusOr<v1::FreeResponse> f =
      Free(stub(), *later, "heap", Offsets(*detached));
  ASSERT_THAT(f, IsOk());
  EXPECT_EQ(f->freed_bytes(), detached_bytes);
  stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->used_bytes(), 0u);
  EXPECT_EQ(stats->detached_allocations(), 0u);
}

TEST_P(AllocateFreeTest, ForcedResetFreesEverythingAndBumpsGeneration) {
  ASSERT_THAT(Allocate(stub(), *session_, "heap", 64, 10), IsOk());
  ASSERT_THAT(Allocate(stub(), *session_, "heap", 64, 1, true), IsOk());
  absl::StatusOr<v1::Region> reset = ResetRegion(stub(), "heap", true);
  ASSERT_THAT(reset, IsOk());
  EXPECT_EQ(reset->generation(), region_.generation() + 1);
  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->used_bytes(), 0u);
  EXPECT_EQ(stats->live_allocations(), 0u);
  EXPECT_EQ(stats->detached_allocations(), 0u);
  EXPECT_EQ(stats->generation(), reset->generation());

  // An empty region resets without force, and the generation moves again.
  reset = ResetRegion(stub(), "heap");
  ASSERT_THAT(reset, IsOk());
  EXPECT_EQ(reset->generation(), region_.generation() + 2);
  EXPECT_THAT(GetRegion(stub(), "heap"),
              IsOkAndHolds(::testing::Property(&v1::Region::generation,
                                               region_.generation() + 2)));
  absl::StatusOr<std::unique_ptr<MappedFile>> map =
      MappedFile::Map(daemon_->RegionFile("heap"));
  ASSERT_THAT(map, IsOk());
  EXPECT_EQ(
      reinterpret_cast<const SegmentHeader*>((*map)->data())->generation.load(),
      region_.generation() + 2);
  absl::StatusOr<v1::AllocateResponse> a =
      Allocate(stub(), *session_, "heap", 64);
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->generation(), region_.generation() + 2);
}

// AllocateRequest.packed: offsets + one size instead of an Extent each,
// when every extent has the same size (else the extents, as unasked); the
// extents field stays the answer of a request that does not ask.
TEST_P(AllocateFreeTest, PackedAnswerHoldsTheSameExtentsAndReplays) {
  v1::AllocateRequest request;
  request.set_session_id(session_->id());
  request.set_session_token(session_->token());
  request.set_region("heap");
  request.set_size_bytes(48);
  request.set_count(100);
  request.set_packed(true);
  request.set_request_id("packed-batch");
  absl::StatusOr<v1::AllocateResponse> a = Allocate(stub(), request);
  ASSERT_THAT(a, IsOk());
  std::vector<uint64_t> offsets;
  if (a->offsets_size() > 0) {
    EXPECT_EQ(a->extents_size(), 0);
    EXPECT_GE(a->extent_size_bytes(), 48u);
    offsets.assign(a->offsets().begin(), a->offsets().end());
  } else {
    // Only FREE_LIST may hand out extents of different sizes.
    EXPECT_EQ(GetParam(), v1::STRATEGY_FREE_LIST);
    offsets = Offsets(*a);
  }
  ASSERT_EQ(offsets.size(), 100u);
  std::vector<uint64_t> sorted = offsets;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end());
  for (uint64_t offset : offsets) {
    EXPECT_GE(offset, region_.heap_begin());
    EXPECT_LT(offset, region_.heap_end());
  }
  // A retry with the same id answers the same offsets, in the same form.
  absl::StatusOr<v1::AllocateResponse> again = Allocate(stub(), request);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->offsets_size(), a->offsets_size());
  std::vector<uint64_t> replayed(again->offsets().begin(),
                                 again->offsets().end());
  if (replayed.empty()) replayed = Offsets(*again);
  EXPECT_EQ(replayed, offsets);
  // Unasked, the same kind of request is answered with extents.
  request.set_packed(false);
  request.set_request_id("");
  request.set_count(3);
  absl::StatusOr<v1::AllocateResponse> plain = Allocate(stub(), request);
  ASSERT_THAT(plain, IsOk());
  EXPECT_EQ(plain->extents_size(), 3);
  EXPECT_EQ(plain->offsets_size(), 0);
  EXPECT_EQ(plain->extent_size_bytes(), 0u);
  ASSERT_THAT(Free(stub(), *session_, "heap", offsets), IsOk());
  ASSERT_THAT(Free(stub(), *session_, "heap", Offsets(*plain)), IsOk());
  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "heap");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->live_allocations(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Strategies, AllocateFreeTest,
                         ::testing::ValuesIn(kFreeingStrategies), ParamName);

TEST_F(RpcTest, AlignmentUpToAPageIsHonoured) {
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  for (v1::Strategy s : {v1::STRATEGY_BUDDY, v1::STRATEGY_FREE_LIST}) {
    const std::string name = "align." + StrategyLabel(s);
    ASSERT_THAT(CreateRegion(stub(), name, s), IsOk());
    for (uint64_t alignment : {1, 8, 64, 256, 4096}) {
      SCOPED_TRACE(absl::StrCat(name, " alignment ", alignment));
      v1::AllocateRequest request;
      request.set_session_id(session->id());
      request.set_session_token(session->token());
      request.set_region(name);
      request.set_size_bytes(100);
      request.set_alignment(alignment);
      request.set_count(3);
      absl::StatusOr<v1::AllocateResponse> a = Allocate(stub(), request);
      ASSERT_THAT(a, IsOk());
      for (uint64_t offset : Offsets(*a)) EXPECT_EQ(offset % alignment, 0u);
    }
  }
}

TEST_F(RpcTest, AlignmentUpTo2MiBIsHonouredByArenaAndFreeList) {
  // kMaxAlignment is 2 MiB; the heap begins at 4 KiB, so FREE_LIST splits
  // the unaligned head off and ARENA pads its cursor. 4 MiB is
  // INVALID_ARGUMENT and allocates nothing.
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  constexpr uint64_t k2MiB = uint64_t{2} << 20;
  for (v1::Strategy s : {v1::STRATEGY_FREE_LIST, v1::STRATEGY_ARENA}) {
    const std::string name = "align2m." + StrategyLabel(s);
    ASSERT_THAT(CreateRegion(stub(), name, s, 16 << 20), IsOk());
    v1::AllocateRequest request;
    request.set_session_id(session->id());
    request.set_session_token(session->token());
    request.set_region(name);
    request.set_size_bytes(100);
    request.set_alignment(k2MiB);
    request.set_count(3);
    absl::StatusOr<v1::AllocateResponse> a = Allocate(stub(), request);
    ASSERT_THAT(a, IsOk()) << name;
    ASSERT_EQ(Offsets(*a).size(), 3u);
    for (uint64_t offset : Offsets(*a)) {
      EXPECT_EQ(offset % k2MiB, 0u) << name << " offset " << offset;
    }
    absl::StatusOr<v1::RegionStats> before = GetRegionStats(stub(), name);
    ASSERT_THAT(before, IsOk());
    request.set_alignment(2 * k2MiB);
    request.set_count(1);
    EXPECT_THAT(Allocate(stub(), request),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << name;
    absl::StatusOr<v1::RegionStats> after = GetRegionStats(stub(), name);
    ASSERT_THAT(after, IsOk());
    EXPECT_EQ(after->live_allocations(), before->live_allocations()) << name;
    EXPECT_EQ(after->used_bytes(), before->used_bytes()) << name;
  }
}

TEST_F(RpcTest, ZeroAlignmentAndZeroCountMeanTheDefaults) {
  // The proto: alignment 0 = 16, count 0 = one extent. (The list of
  // bad inputs names "alignment 0" and "count 0"; the contract makes them
  // valid defaults, and this test pins that.)
  ASSERT_THAT(CreateRegion(stub(), "d", v1::STRATEGY_FREE_LIST), IsOk());
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  v1::AllocateRequest request;
  request.set_session_id(session->id());
  request.set_session_token(session->token());
  request.set_region("d");
  request.set_size_bytes(24);
  request.set_alignment(0);
  request.set_count(0);
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<v1::AllocateResponse> a = Allocate(stub(), request);
    ASSERT_THAT(a, IsOk());
    ASSERT_EQ(a->extents_size(), 1);
    EXPECT_EQ(a->extents(0).offset() % kDefaultAlignment, 0u);
  }
}

TEST_F(RpcTest, ArenaAllocatesByRpcAndResetsOnlyWithForce) {
  absl::StatusOr<v1::Region> region =
      CreateRegion(stub(), "arena", v1::STRATEGY_ARENA);
  ASSERT_THAT(region, IsOk());
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<v1::AllocateResponse> a =
      Allocate(stub(), *session, "arena", 100, 10);
  ASSERT_THAT(a, IsOk());
  ASSERT_EQ(a->extents_size(), 10);
  ExpectDisjointInHeap(*a, *region);
  for (int i = 0; i < a->extents_size(); ++i) {
    EXPECT_EQ(a->extents(i).offset() % kDefaultAlignment, 0u);
    if (i > 0) {
      EXPECT_GT(a->extents(i).offset(), a->extents(i - 1).offset());
    }
  }
  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "arena");
  ASSERT_THAT(stats, IsOk());
  EXPECT_GE(stats->used_bytes(), 1000u);
  EXPECT_EQ(stats->used_bytes() + stats->free_bytes(), stats->capacity_bytes());
  // An arena's allocations belong to no session.
  EXPECT_EQ(stats->sessions_size(), 0);

  // Clients may still use what the cursor handed out: without force the
  // reset is refused and nothing moves.
  EXPECT_THAT(ResetRegion(stub(), "arena"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(GetRegionStats(stub(), "arena"), IsOk());
  EXPECT_EQ(GetRegionStats(stub(), "arena")->used_bytes(), stats->used_bytes());
  absl::StatusOr<v1::Region> reset = ResetRegion(stub(), "arena", true);
  ASSERT_THAT(reset, IsOk());
  EXPECT_EQ(reset->generation(), region->generation() + 1);
  stats = GetRegionStats(stub(), "arena");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->used_bytes(), 0u);
  // The cursor rewound: the next allocation starts where the first did.
  absl::StatusOr<v1::AllocateResponse> again =
      Allocate(stub(), *session, "arena", 100);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->extents(0).offset(), a->extents(0).offset());
  EXPECT_EQ(again->generation(), reset->generation());
}

TEST_F(RpcTest, OpenSessionGivesDistinctIdsAndTheShmDir) {
  std::unique_ptr<Session> a = OpenSessionOrDie("a");
  std::unique_ptr<Session> b = OpenSessionOrDie("b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a->id(), 0u);
  EXPECT_NE(b->id(), 0u);
  EXPECT_NE(a->id(), b->id());
  EXPECT_EQ(std::filesystem::canonical(a->first_event().shm_dir()),
            std::filesystem::canonical(daemon_->shm_dir()));
  absl::StatusOr<v1::Stats> stats = GetStats(stub());
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->sessions(), 2u);
  EXPECT_EQ(stats->sessions_opened(), 2u);
  b->Close();
  PollResult closed = PollStats(
      stub(), [](const v1::Stats& s) { return s.sessions() == 1; },
      absl::Seconds(1));
  EXPECT_TRUE(closed.done) << closed.stats.DebugString();
  EXPECT_EQ(closed.stats.sessions_opened(), 2u);
}

TEST_F(RpcTest, GetStatsReportsDaemonFiguresAndHistogram) {
  ASSERT_THAT(CreateRegion(stub(), "a", v1::STRATEGY_FREE_LIST), IsOk());
  ASSERT_THAT(CreateRegion(stub(), "b", v1::STRATEGY_BUDDY), IsOk());
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  std::map<uint32_t, uint64_t> expected_histogram;
  uint64_t used = 0;
  uint64_t requested = 0;
  for (uint64_t size : {1, 16, 100, 1000, 5000, 5000}) {
    absl::StatusOr<v1::AllocateResponse> a =
        Allocate(stub(), *session, "a", size);
    ASSERT_THAT(a, IsOk());
    ++expected_histogram[Log2Upper(a->extents(0).size_bytes())];
    used += a->extents(0).size_bytes();
    requested += size;
  }

  absl::StatusOr<v1::Stats> all = GetStats(stub());
  ASSERT_THAT(all, IsOk());
  EXPECT_EQ(all->region_count(), 2u);
  EXPECT_EQ(all->sessions(), 1u);
  ASSERT_EQ(all->regions_size(), 2);
  const v1::RegionStats& a = all->regions(0);
  EXPECT_EQ(a.name(), "a");
  EXPECT_EQ(a.strategy(), v1::STRATEGY_FREE_LIST);
  EXPECT_GT(a.capacity_bytes(), 0u);
  EXPECT_LE(a.capacity_bytes(), kHeapBytes + 4096);
  EXPECT_EQ(a.used_bytes(), used);
  EXPECT_EQ(a.requested_bytes(), requested);
  EXPECT_EQ(a.free_bytes(), a.capacity_bytes() - used);
  EXPECT_EQ(a.peak_used_bytes(), used);
  EXPECT_EQ(a.live_allocations(), 6u);
  EXPECT_EQ(a.failed_allocations(), 0u);
  EXPECT_GT(a.largest_free_bytes(), 0u);
  EXPECT_LE(a.largest_free_bytes(), a.free_bytes());
  EXPECT_GE(a.fragmentation(), 0.0);
  EXPECT_LE(a.fragmentation(), 1.0);
  EXPECT_NEAR(a.internal_fragmentation(),
              1.0 - static_cast<double>(requested) / used, 1e-9);
  std::map<uint32_t, uint64_t> histogram;
  for (const v1::HistogramBucket& b : a.size_histogram()) {
    if (b.count() > 0) histogram[b.log2_upper()] += b.count();
  }
  EXPECT_EQ(histogram, expected_histogram);
  const v1::RegionStats& b = all->regions(1);
  EXPECT_EQ(b.name(), "b");
  EXPECT_EQ(b.used_bytes(), 0u);
  EXPECT_EQ(b.free_bytes(), b.capacity_bytes());
  EXPECT_EQ(b.largest_free_bytes(), b.capacity_bytes());
  EXPECT_EQ(b.fragmentation(), 0.0);

  // One region by name; RPC counts; uptime moves forward.
  absl::StatusOr<v1::Stats> one = GetStats(stub(), "b");
  ASSERT_THAT(one, IsOk());
  ASSERT_EQ(one->regions_size(), 1);
  EXPECT_EQ(one->regions(0).name(), "b");
  EXPECT_GE(one->uptime_ms(), all->uptime_ms());
  bool saw_allocate = false;
  for (const v1::RpcCount& rpc : one->rpcs()) {
    if (rpc.method() != "Allocate") continue;
    saw_allocate = true;
    EXPECT_EQ(rpc.calls(), 6u);
    EXPECT_EQ(rpc.errors_size(), 0);
  }
  EXPECT_TRUE(saw_allocate) << one->DebugString();
}

TEST_F(RpcTest, WatchStatsDeliversUpdatesUntilCancelled) {
  ASSERT_THAT(CreateRegion(stub(), "w", v1::STRATEGY_POOL), IsOk());
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::WatchStatsRequest request;
  request.set_region("w");
  request.set_interval_ms(10);
  std::unique_ptr<grpc::ClientReader<v1::Stats>> reader =
      stub().WatchStats(&context, request);
  v1::Stats update;
  ASSERT_TRUE(reader->Read(&update)) << ToAbsl(reader->Finish());
  ASSERT_EQ(update.regions_size(), 1);
  EXPECT_EQ(update.regions(0).used_bytes(), 0u);

  // A change shows up in a later update.
  absl::StatusOr<v1::AllocateResponse> a = Allocate(stub(), *session, "w", 64);
  ASSERT_THAT(a, IsOk());
  int updates = 1;
  bool saw_allocation = false;
  while (!saw_allocation && reader->Read(&update)) {
    ++updates;
    ASSERT_EQ(update.regions_size(), 1);
    saw_allocation = update.regions(0).used_bytes() == 64;
  }
  EXPECT_TRUE(saw_allocation);
  EXPECT_GE(updates, 2);
  context.TryCancel();
  while (reader->Read(&update)) {
  }
  EXPECT_THAT(ToAbsl(reader->Finish()), StatusIs(absl::StatusCode::kCancelled));
  // The daemon still serves.
  EXPECT_THAT(GetStats(stub()), IsOk());
}

TEST_F(RpcTest, HealthCheckSaysServing) {
  // Debian ships no grpc.health.v1 stubs; call the method by name with a
  // hand-encoded HealthCheckRequest {service: ""} (zero bytes) and decode
  // HealthCheckResponse {status = 1: SERVING} from its wire fields.
  grpc::GenericStub generic(daemon_->channel());
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::Slice empty("", 0);
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check",
                               request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(ok);
  SHMALLOC_ASSERT_OK(ToAbsl(status));
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  google::protobuf::UnknownFieldSet fields;
  ASSERT_TRUE(fields.ParseFromString(bytes));
  ASSERT_EQ(fields.field_count(), 1);
  EXPECT_EQ(fields.field(0).number(), 1);
  EXPECT_EQ(fields.field(0).type(),
            google::protobuf::UnknownField::TYPE_VARINT);
  EXPECT_EQ(fields.field(0).varint(), 1u) << "1 = SERVING";
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(RpcTest, BytesWrittenThroughOneMappingAreReadThroughAnother) {
  ASSERT_THAT(CreateRegion(stub(), "shared", v1::STRATEGY_FREE_LIST), IsOk());
  std::unique_ptr<Session> session = OpenSessionOrDie();
  ASSERT_NE(session, nullptr);
  absl::StatusOr<v1::AllocateResponse> a =
      Allocate(stub(), *session, "shared", 4096, 2);
  ASSERT_THAT(a, IsOk());
  const v1::Extent e = a->extents(0);
  absl::StatusOr<std::unique_ptr<MappedFile>> writer =
      MappedFile::Map(daemon_->RegionFile("shared"));
  absl::StatusOr<std::unique_ptr<MappedFile>> reader =
      MappedFile::Map(daemon_->RegionFile("shared"));
  ASSERT_THAT(writer, IsOk());
  ASSERT_THAT(reader, IsOk());
  ASSERT_NE((*writer)->data(), (*reader)->data());
  ASSERT_LE(e.offset() + e.size_bytes(), (*writer)->size());
  std::vector<std::byte> pattern(4096);
  for (size_t i = 0; i < pattern.size(); ++i) {
    pattern[i] = static_cast<std::byte>((i * 131 + 7) & 0xff);
  }
  std::memcpy((*writer)->data() + e.offset(), pattern.data(), pattern.size());
  EXPECT_EQ(std::memcmp((*reader)->data() + e.offset(), pattern.data(),
                        pattern.size()),
            0);

  // The daemon never touches heap bytes: more allocation traffic, a free of
  // the neighbour, and the pattern is intact.
  absl::StatusOr<v1::AllocateResponse> more =
      Allocate(stub(), *session, "shared", 64, 500);
  ASSERT_THAT(more, IsOk());
  ASSERT_THAT(Free(stub(), *session, "shared", Offsets(*more)), IsOk());
  ASSERT_THAT(Free(stub(), *session, "shared", {a->extents(1).offset()}),
              IsOk());
  EXPECT_EQ(std::memcmp((*reader)->data() + e.offset(), pattern.data(),
                        pattern.size()),
            0);
}

}  // namespace
}  // namespace shmalloc::testing
