#include "server/map_service.h"

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;

constexpr uint64_t kBegin = 4096;
constexpr uint64_t kBlock = 256;

// Session 2 has ended (its name comes from the ended-session ring).
SessionLabel Name(uint64_t id) {
  return {id == 0 ? "" : absl::StrCat("c", id), id == 2};
}

RegionSnapshot Pool(const std::string& name, uint64_t blocks,
                    uint64_t generation = 0) {
  RegionSnapshot s;
  s.description.set_name(name);
  s.description.set_strategy(v1::STRATEGY_POOL);
  s.description.set_heap_begin(kBegin);
  s.description.set_heap_end(kBegin + blocks * kBlock);
  s.description.set_generation(generation);
  s.description.set_incarnation(77);
  return s;
}

void Own(RegionSnapshot& s, uint64_t block, uint64_t session,
         bool detached = false, uint64_t at_ms = 1000) {
  OwnerInfo info;
  info.session_id = session;
  info.size_bytes = kBlock;
  info.requested_bytes = kBlock - 6;
  info.allocated_at_ms = at_ms;
  info.detached = detached;
  s.allocations.emplace_back(kBegin + block * kBlock, info);
}

// (offset, length, kind, session) of every run.
struct RunView {
  uint64_t offset, length;
  v1::RunKind kind;
  uint64_t session;
  bool operator==(const RunView&) const = default;
};
std::ostream& operator<<(std::ostream& os, const RunView& r) {
  return os << "{" << r.offset << ", " << r.length << ", "
            << v1::RunKind_Name(r.kind) << ", " << r.session << "}";
}
std::vector<RunView> Runs(const v1::RegionMap& map) {
  std::vector<RunView> out;
  for (const v1::RegionRun& r : map.runs()) {
    out.push_back({r.offset(), r.length_bytes(), r.kind(), r.session_id()});
  }
  return out;
}

TEST(MapServiceTest, EveryOtherBlockFreedIsAlternatingRuns) {
  RegionSnapshot s = Pool("p", 6);
  Own(s, 0, 1);
  Own(s, 2, 1);
  Own(s, 4, 2);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 0, Name);
  ASSERT_THAT(map, IsOk());
  const uint64_t b = kBegin;
  EXPECT_THAT(Runs(*map),
              ::testing::ElementsAre(
                  RunView{0, b, v1::RUN_KIND_METADATA, 0},
                  RunView{b, kBlock, v1::RUN_KIND_USED, 1},
                  RunView{b + kBlock, kBlock, v1::RUN_KIND_FREE, 0},
                  RunView{b + 2 * kBlock, kBlock, v1::RUN_KIND_USED, 1},
                  RunView{b + 3 * kBlock, kBlock, v1::RUN_KIND_FREE, 0},
                  RunView{b + 4 * kBlock, kBlock, v1::RUN_KIND_USED, 2},
                  RunView{b + 5 * kBlock, kBlock, v1::RUN_KIND_FREE, 0}));
  EXPECT_EQ(map->runs(1).client_name(), "c1");
  EXPECT_EQ(map->runs(5).client_name(), "c2");
  EXPECT_FALSE(map->runs(1).session_ended());
  EXPECT_TRUE(map->runs(5).session_ended());
  EXPECT_EQ(map->used_bytes(), 3 * kBlock);
  EXPECT_EQ(map->free_bytes(), 3 * kBlock);
  EXPECT_EQ(map->free_runs(), 3u);
  EXPECT_EQ(map->largest_free_run_bytes(), kBlock);
  EXPECT_EQ(map->used_bytes() + map->free_bytes() + map->heap_begin(),
            map->heap_end());
  ASSERT_EQ(map->free_run_histogram_size(), 1);
  EXPECT_EQ(map->free_run_histogram(0).log2_upper(), 8u);  // 256 = 2^8
  EXPECT_EQ(map->free_run_histogram(0).count(), 3u);
  // The legend: most bytes first.
  ASSERT_EQ(map->sessions_size(), 2);
  EXPECT_EQ(map->sessions(0).session_id(), 1u);
  EXPECT_EQ(map->sessions(0).used_bytes(), 2 * kBlock);
  EXPECT_EQ(map->sessions(0).live_allocations(), 2u);
  EXPECT_EQ(map->sessions(0).client_name(), "c1");
  EXPECT_EQ(map->sessions(1).session_id(), 2u);
}

TEST(MapServiceTest, AdjacentRunsOfOneOwnerMergeAndDetachedStaysApart) {
  RegionSnapshot s = Pool("p", 5);
  Own(s, 0, 1);
  Own(s, 1, 1);
  Own(s, 2, 1, /*detached=*/true);
  Own(s, 3, 2);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 0, Name);
  ASSERT_THAT(map, IsOk());
  ASSERT_EQ(map->runs_size(), 5);
  EXPECT_EQ(map->runs(1).length_bytes(), 2 * kBlock);
  EXPECT_EQ(map->runs(1).allocations(), 2u);
  EXPECT_FALSE(map->runs(1).detached());
  EXPECT_EQ(map->runs(2).session_id(), 1u);
  EXPECT_TRUE(map->runs(2).detached());
  EXPECT_EQ(map->runs(3).session_id(), 2u);
  EXPECT_EQ(map->runs(4).kind(), v1::RUN_KIND_FREE);
}

TEST(MapServiceTest, EmptyPoolIsHeaderThenOneFreeRun) {
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(Pool("p", 4), 0, Name);
  ASSERT_THAT(map, IsOk());
  EXPECT_THAT(Runs(*map),
              ::testing::ElementsAre(
                  RunView{0, kBegin, v1::RUN_KIND_METADATA, 0},
                  RunView{kBegin, 4 * kBlock, v1::RUN_KIND_FREE, 0}));
  EXPECT_EQ(map->sessions_size(), 0);
}

TEST(MapServiceTest, ArenaIsOneUsedRunThenFree) {
  RegionSnapshot s = Pool("a", 8);
  s.description.set_strategy(v1::STRATEGY_ARENA);
  s.stats.set_used_bytes(3 * kBlock);
  s.stats.set_live_allocations(5);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 0, Name);
  ASSERT_THAT(map, IsOk());
  EXPECT_THAT(Runs(*map), ::testing::ElementsAre(
                              RunView{0, kBegin, v1::RUN_KIND_METADATA, 0},
                              RunView{kBegin, 3 * kBlock, v1::RUN_KIND_USED, 0},
                              RunView{kBegin + 3 * kBlock, 5 * kBlock,
                                      v1::RUN_KIND_FREE, 0}));
  EXPECT_EQ(map->runs(1).allocations(), 5u);
}

TEST(MapServiceTest, ArenaCursorPastTheEndIsClampedToTheHeap) {
  RegionSnapshot s = Pool("a", 2);
  s.description.set_strategy(v1::STRATEGY_ARENA);
  s.stats.set_used_bytes(1 << 30);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 0, Name);
  ASSERT_THAT(map, IsOk());
  EXPECT_EQ(map->used_bytes(), 2 * kBlock);
  EXPECT_EQ(map->free_bytes(), 0u);
}

TEST(MapServiceTest, BucketsHaveUsedFractionAndDominantOwner) {
  // heap_end = 4096 + 16 * 256 = 8192: 4 buckets of 2048 bytes.
  RegionSnapshot s = Pool("p", 16);
  for (uint64_t i = 0; i < 8; ++i) Own(s, i, i < 5 ? 1 : 2);  // [4096, 6144)
  Own(s, 15, 3);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 4, Name);
  ASSERT_THAT(map, IsOk());
  EXPECT_EQ(map->runs_size(), 0);
  ASSERT_EQ(map->buckets_size(), 4);
  EXPECT_EQ(map->buckets(0).metadata_bytes(), 2048u);
  EXPECT_EQ(map->buckets(0).used_bytes(), 0u);
  EXPECT_EQ(map->buckets(0).dominant_session_id(), 0u);
  EXPECT_EQ(map->buckets(1).metadata_bytes(), 2048u);
  EXPECT_EQ(map->buckets(2).offset(), 4096u);
  EXPECT_EQ(map->buckets(2).used_bytes(), 2048u);
  EXPECT_DOUBLE_EQ(map->buckets(2).used_fraction(), 1.0);
  EXPECT_EQ(map->buckets(2).dominant_session_id(), 1u);  // 5 blocks vs 3
  EXPECT_EQ(map->buckets(2).dominant_client_name(), "c1");
  EXPECT_EQ(map->buckets(3).used_bytes(), kBlock);
  EXPECT_DOUBLE_EQ(map->buckets(3).used_fraction(), 0.125);
  EXPECT_EQ(map->buckets(3).dominant_session_id(), 3u);
  uint64_t covered = 0;
  for (const v1::RegionBucket& b : map->buckets()) {
    EXPECT_EQ(b.offset(), covered);
    covered += b.length_bytes();
  }
  EXPECT_EQ(covered, map->heap_end());
}

TEST(MapServiceTest, UnevenBucketsTileTheFileAndRunsSplitAcrossThem) {
  RegionSnapshot s = Pool("p", 7);  // 4096 + 1792 = 5888 bytes
  for (uint64_t i = 0; i < 7; ++i) Own(s, i, 1 + i % 2);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 7, Name);
  ASSERT_THAT(map, IsOk());
  ASSERT_EQ(map->buckets_size(), 7);
  uint64_t covered = 0, used = 0, meta = 0;
  for (const v1::RegionBucket& b : map->buckets()) {
    EXPECT_EQ(b.offset(), covered);
    EXPECT_LE(b.used_bytes() + b.metadata_bytes(), b.length_bytes());
    covered += b.length_bytes();
    used += b.used_bytes();
    meta += b.metadata_bytes();
  }
  EXPECT_EQ(covered, 5888u);
  EXPECT_EQ(used, 7 * kBlock);
  EXPECT_EQ(meta, kBegin);
}

TEST(MapServiceTest, MoreBucketsThanBytesGivesOneBytePerBucket) {
  RegionSnapshot s = Pool("p", 0);
  s.description.set_heap_begin(0);
  s.description.set_heap_end(10);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 100, Name);
  ASSERT_THAT(map, IsOk());
  EXPECT_EQ(map->buckets_size(), 10);
}

TEST(MapServiceTest, BucketsOverTheLimitAreInvalidArgument) {
  EXPECT_THAT(BuildRegionMap(Pool("p", 4), kMaxMapBuckets + 1, Name),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MapServiceTest, RunsOfAHugeLayoutAskForBuckets) {
  // 50001 allocations with a gap after each: over 100000 runs.
  RegionSnapshot s = Pool("big", 2 * 50001);
  for (uint64_t i = 0; i < 50001; ++i) Own(s, 2 * i, 1);
  absl::StatusOr<v1::RegionMap> runs = BuildRegionMap(s, 0, Name);
  EXPECT_THAT(runs, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(runs.status().message()),
              ::testing::HasSubstr("ask for buckets"));
  absl::StatusOr<v1::RegionMap> buckets = BuildRegionMap(s, 4096, Name);
  ASSERT_THAT(buckets, IsOk());
  EXPECT_EQ(buckets->used_bytes(), 50001 * kBlock);
  EXPECT_EQ(buckets->free_runs(), 50001u);
}

TEST(MapServiceTest, OverlappingRecordsAreInternal) {
  RegionSnapshot s = Pool("p", 4);
  Own(s, 1, 1);
  s.allocations.emplace_back(kBegin + kBlock + 8, s.allocations[0].second);
  EXPECT_THAT(BuildRegionMap(s, 0, Name),
              StatusIs(absl::StatusCode::kInternal));
  RegionSnapshot out = Pool("p", 4);
  Own(out, 4, 1);  // one past the heap
  EXPECT_THAT(BuildRegionMap(out, 0, Name),
              StatusIs(absl::StatusCode::kInternal));
}

TEST(MapServiceTest, FreeRunHistogramBucketsByLog2) {
  RegionSnapshot s = Pool("p", 8);
  Own(s, 1, 1);  // free: block 0 (256), blocks 2..3 (512), 5..7 (768)
  Own(s, 4, 1);
  absl::StatusOr<v1::RegionMap> map = BuildRegionMap(s, 0, Name);
  ASSERT_THAT(map, IsOk());
  std::map<uint32_t, uint64_t> h;
  for (const v1::HistogramBucket& b : map->free_run_histogram()) {
    h[b.log2_upper()] = b.count();
  }
  EXPECT_EQ(h, (std::map<uint32_t, uint64_t>{{8, 1}, {9, 1}, {10, 1}}));
}

// --- ListAllocations paging -------------------------------------------------

class Regions {
 public:
  void Add(RegionSnapshot s) {
    const std::string name = s.description.name();
    snapshots_[name] = std::move(s);
  }
  RegionSnapshot& at(const std::string& name) { return snapshots_.at(name); }
  void Remove(const std::string& name) { snapshots_.erase(name); }

  absl::StatusOr<v1::ListAllocationsResponse> Page(
      const v1::ListAllocationsRequest& request, uint64_t now_ms = 10'000) {
    std::vector<std::string> names;
    if (request.region().empty()) {
      for (const auto& [name, s] : snapshots_) names.push_back(name);
    } else {
      names.push_back(request.region());
    }
    auto load = [&](const std::string& name) -> absl::StatusOr<RegionSnapshot> {
      auto it = snapshots_.find(name);
      if (it == snapshots_.end()) return absl::NotFoundError(name);
      return it->second;
    };
    auto live = [&](const std::string& name) -> uint64_t {
      auto it = snapshots_.find(name);
      return it == snapshots_.end() ? 0 : it->second.allocations.size();
    };
    const RegionSource source{names, load, live};
    return ListAllocationsPage(request, source, Name, now_ms);
  }

 private:
  std::map<std::string, RegionSnapshot> snapshots_;
};

Regions ThreeRegions() {
  Regions r;
  RegionSnapshot a = Pool("a", 20);
  for (uint64_t i = 0; i < 20; i += 2) Own(a, i, 1);  // 10
  RegionSnapshot b = Pool("b", 4);                    // none
  RegionSnapshot c = Pool("c", 30);
  for (uint64_t i = 0; i < 13; ++i) Own(c, i, 2 + i % 2, i % 3 == 0);  // 13
  r.Add(std::move(a));
  r.Add(std::move(b));
  r.Add(std::move(c));
  return r;
}

TEST(MapServiceTest, PagesOfSevenReturnEveryAllocationOnce) {
  Regions regions = ThreeRegions();
  v1::ListAllocationsRequest request;
  request.set_page_size(7);
  std::set<std::pair<std::string, uint64_t>> seen;
  int pages = 0;
  do {
    absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page(request);
    ASSERT_THAT(page, IsOk());
    EXPECT_LE(page->allocations_size(), 7);
    EXPECT_EQ(page->total_size(), 23u);
    for (const v1::Allocation& a : page->allocations()) {
      EXPECT_TRUE(seen.emplace(a.region(), a.offset()).second)
          << a.region() << " " << a.offset() << " twice";
      EXPECT_EQ(a.client_name(), Name(a.session_id()).client_name);
      EXPECT_EQ(a.session_ended(), Name(a.session_id()).ended);
      EXPECT_EQ(a.age_ms(), 9000u);
    }
    request.set_page_token(page->next_page_token());
    ++pages;
  } while (!request.page_token().empty());
  EXPECT_EQ(seen.size(), 23u);
  EXPECT_EQ(pages, 4);  // 7 + 7 + 7 + 2: no empty last page
}

TEST(MapServiceTest, ExactlyFullLastPageHasNoToken) {
  Regions regions;
  RegionSnapshot a = Pool("a", 7);
  for (uint64_t i = 0; i < 7; ++i) Own(a, i, 1);
  regions.Add(std::move(a));
  v1::ListAllocationsRequest request;
  request.set_page_size(7);
  absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page(request);
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->allocations_size(), 7);
  EXPECT_EQ(page->next_page_token(), "");
}

TEST(MapServiceTest, OlderThanFiltersByAge) {
  Regions regions;
  RegionSnapshot a = Pool("a", 4);
  Own(a, 0, 1, false, /*at_ms=*/1000);
  Own(a, 1, 1, false, /*at_ms=*/8000);
  Own(a, 2, 2, true, /*at_ms=*/5000);
  regions.Add(std::move(a));
  v1::ListAllocationsRequest request;
  request.set_older_than_ms(5000);  // now is 10000
  absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page(request);
  ASSERT_THAT(page, IsOk());
  ASSERT_EQ(page->allocations_size(), 2);
  EXPECT_EQ(page->allocations(0).age_ms(), 9000u);
  EXPECT_EQ(page->allocations(1).age_ms(), 5000u);
  EXPECT_TRUE(page->allocations(1).detached());
  EXPECT_EQ(page->total_size(), 2u);
}

TEST(MapServiceTest, AResetBetweenPagesMakesTheTokenStale) {
  Regions regions = ThreeRegions();
  v1::ListAllocationsRequest request;
  request.set_page_size(7);
  absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page(request);
  ASSERT_THAT(page, IsOk());
  request.set_page_token(page->next_page_token());
  regions.at("a").description.set_generation(1);
  absl::StatusOr<v1::ListAllocationsResponse> next = regions.Page(request);
  EXPECT_THAT(next, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(next.status().message()),
              ::testing::HasSubstr("page token is stale"));
  regions.at("a").description.set_generation(0);
  regions.at("a").description.set_incarnation(78);  // re-created
  EXPECT_THAT(regions.Page(request),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MapServiceTest, ADeletedRegionBetweenPagesIsSkipped) {
  Regions regions = ThreeRegions();
  v1::ListAllocationsRequest request;
  request.set_page_size(7);
  absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page(request);
  ASSERT_THAT(page, IsOk());
  request.set_page_token(page->next_page_token());
  regions.Remove("a");
  page = regions.Page(request);
  ASSERT_THAT(page, IsOk());
  ASSERT_GT(page->allocations_size(), 0);
  EXPECT_EQ(page->allocations(0).region(), "c");
}

TEST(MapServiceTest, BadRequestsAreInvalidArgument) {
  Regions regions = ThreeRegions();
  v1::ListAllocationsRequest request;
  request.set_page_size(kMaxPageSize + 1);
  EXPECT_THAT(regions.Page(request),
              StatusIs(absl::StatusCode::kInvalidArgument));
  request.set_page_size(0);
  request.set_page_token("not a token!");
  EXPECT_THAT(regions.Page(request),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A token from another request (older_than_ms differs).
  request.set_page_size(3);
  request.clear_page_token();
  absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page(request);
  ASSERT_THAT(page, IsOk());
  request.set_page_token(page->next_page_token());
  request.set_older_than_ms(1);
  EXPECT_THAT(regions.Page(request),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(MapServiceTest, DefaultPageSizeIsAThousand) {
  Regions regions;
  RegionSnapshot a = Pool("a", 1500);
  for (uint64_t i = 0; i < 1500; ++i) Own(a, i, 1);
  regions.Add(std::move(a));
  absl::StatusOr<v1::ListAllocationsResponse> page = regions.Page({});
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->allocations_size(), 1000);
  EXPECT_NE(page->next_page_token(), "");
}

TEST(MapServiceTest, ANamedRegionThatFailsToLoadFailsTheRequest) {
  Regions regions = ThreeRegions();
  v1::ListAllocationsRequest request;
  request.set_region("nope");
  EXPECT_THAT(regions.Page(request), StatusIs(absl::StatusCode::kNotFound));
}

TEST(MapServiceTest, TokensRoundTrip) {
  PageToken t;
  t.filter_region = "";
  t.older_than_ms = 600000;
  t.region = "r.1-x";
  t.generation = 3;
  t.incarnation = ~uint64_t{0};
  t.offset = 123456;
  absl::StatusOr<PageToken> back = DecodePageToken(EncodePageToken(t));
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->filter_region, t.filter_region);
  EXPECT_EQ(back->older_than_ms, t.older_than_ms);
  EXPECT_EQ(back->region, t.region);
  EXPECT_EQ(back->generation, t.generation);
  EXPECT_EQ(back->incarnation, t.incarnation);
  EXPECT_EQ(back->offset, t.offset);
}

}  // namespace
}  // namespace shmalloc::server
