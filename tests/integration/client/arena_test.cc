// The hot-path Arena across processes: threads of two client_worker
// processes bump-allocate on one shared cursor (the ARENA region's, or an
// extent arena's), each writing and later checking its own pattern, so any
// overlap shows as a mismatch; the final cursor is checked against what both
// processes report.
#include "shmalloc/arena.h"

#include <functional>
#include <memory_resource>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "shmalloc/memory_resource.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using ArenaTest = ClientTest;

struct WorkerResult {
  uint64_t sum = 0;
  uint64_t claimed = 0;
};

// Runs two arena workers on `region`, releases them together, and returns
// what each reported.
std::vector<WorkerResult> RunTwoWorkers(
    const std::string& target, const std::string& region,
    const std::string& mode, uint64_t arena_offset,
    std::function<
        std::unique_ptr<ChildProcess>(const std::vector<std::string>&)>
        start) {
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(start({"arena", target, region, mode, "2", "20000",
                             std::to_string(arena_offset)}));
    if (workers.back() == nullptr) return {};
  }
  for (auto& w : workers) {
    absl::StatusOr<std::string> line = w->ReadLine();
    EXPECT_THAT(line, IsOkAndHolds(::testing::Eq("ready")));
  }
  for (auto& w : workers) SHMALLOC_EXPECT_OK(w->WriteLine("go"));
  std::vector<WorkerResult> results;
  for (auto& w : workers) {
    absl::StatusOr<std::string> line = w->ReadLine();
    EXPECT_THAT(line, IsOk());
    if (!line.ok()) return {};
    std::istringstream in(*line);
    std::string word;
    WorkerResult r;
    in >> word >> r.sum >> r.claimed;
    EXPECT_EQ(word, "ok") << *line;
    results.push_back(r);
    SHMALLOC_EXPECT_OK(w->WaitForSuccess());
  }
  return results;
}

TEST_F(ArenaTest, TwoProcessesDirectModeNoOverlapAndCursorIsSumOfSizes) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 64 << 20);
  ASSERT_NE(region, nullptr);
  std::vector<WorkerResult> r = RunTwoWorkers(
      daemon_->target(), "arena", "direct", 0,
      [this](const std::vector<std::string>& a) { return Worker(a); });
  ASSERT_EQ(r.size(), 2u);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena = sc::Arena::Create(region);
  ASSERT_THAT(arena, IsOk());
  // Every size is a multiple of 16 at alignment 16: no padding.
  EXPECT_EQ((*arena)->Stats().used_bytes, r[0].sum + r[1].sum);
  EXPECT_EQ(r[0].claimed, r[0].sum);
  EXPECT_EQ(r[1].claimed, r[1].sum);
  EXPECT_EQ(StatsOf("arena").used_bytes, r[0].sum + r[1].sum);
}

TEST_F(ArenaTest, TwoProcessesChunkedModeCursorIsClaimedBytes) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 64 << 20);
  ASSERT_NE(region, nullptr);
  std::vector<WorkerResult> r = RunTwoWorkers(
      daemon_->target(), "arena", "chunked", 0,
      [this](const std::vector<std::string>& a) { return Worker(a); });
  ASSERT_EQ(r.size(), 2u);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena = sc::Arena::Create(region);
  ASSERT_THAT(arena, IsOk());
  const uint64_t used = (*arena)->Stats().used_bytes;
  EXPECT_EQ(used, r[0].claimed + r[1].claimed);
  EXPECT_GE(used, r[0].sum + r[1].sum);
  std::printf("chunked: handed out %llu of %llu claimed bytes\n",
              static_cast<unsigned long long>(r[0].sum + r[1].sum),
              static_cast<unsigned long long>(used));
}

TEST_F(ArenaTest, ExtentArenaIsSharedByTwoProcesses) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("general", sc::Strategy::kFreeList, 64 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
      sc::Arena::Create(region, {.capacity_bytes = 48 << 20});
  ASSERT_THAT(arena, IsOk());
  EXPECT_EQ(StatsOf("general").live_allocations, 1u);
  std::vector<WorkerResult> r = RunTwoWorkers(
      daemon_->target(), "general", "chunked", (*arena)->offset(),
      [this](const std::vector<std::string>& a) { return Worker(a); });
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ((*arena)->Stats().used_bytes, r[0].claimed + r[1].claimed);
  arena->reset();  // frees the extent
  EXPECT_EQ(StatsOf("general").live_allocations, 0u);
}

TEST_F(ArenaTest, ChunkedStatsAddUp) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 8 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
      sc::Arena::Create(region, {.chunk_bytes = 4096});
  ASSERT_THAT(arena, IsOk());
  sc::Arena& a = **arena;
  for (int i = 0; i < 1000; ++i)
    ASSERT_NE(a.TryAllocate(24 + i % 100), nullptr);
  ASSERT_NE(a.TryAllocate(100000), nullptr);  // larger than a chunk: direct
  a.Flush();
  const sc::ArenaStats s = a.Stats();
  EXPECT_EQ(s.used_bytes, s.claimed_bytes);
  EXPECT_EQ(s.claimed_bytes, s.handed_out_bytes + s.leftover_bytes);
  EXPECT_EQ(s.open_chunk_bytes, 0u);
  EXPECT_EQ(s.direct_allocations, 1u);
  EXPECT_GT(s.chunks, 0u);
}

TEST_F(ArenaTest, ExhaustionIsNullOrResourceExhausted) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("small", sc::Strategy::kArena, 1 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena = sc::Arena::Create(region);
  ASSERT_THAT(arena, IsOk());
  int n = 0;
  while ((*arena)->TryAllocate(1000) != nullptr) ++n;
  EXPECT_GT(n, 900);  // chunk tails are used by direct allocations
  EXPECT_THAT((*arena)->Allocate(1000),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT((*arena)->Allocate(0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT((*arena)->Allocate(8, 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_GT((*arena)->Stats().failed_allocations, 0u);
}

TEST_F(ArenaTest, ResetGoesThroughTheDaemonAndBumpsGeneration) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 4 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
      sc::Arena::Create(region, {.mode = sc::ArenaOptions::Mode::kDirect});
  ASSERT_THAT(arena, IsOk());
  const uint64_t gen = region->generation();
  absl::StatusOr<uint64_t> first = (*arena)->Allocate(64);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT((*arena)->Allocate(64), IsOk());
  SHMALLOC_ASSERT_OK((*arena)->Reset());
  EXPECT_EQ((*arena)->Stats().used_bytes, 0u);
  EXPECT_THAT(region->CheckGeneration(gen),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT((*arena)->Allocate(64), IsOkAndHolds(::testing::Eq(*first)));
}

TEST_F(ArenaTest, ResetMakesChunksStale) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 4 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena = sc::Arena::Create(region);
  ASSERT_THAT(arena, IsOk());
  ASSERT_THAT((*arena)->Allocate(64), IsOk());
  SHMALLOC_ASSERT_OK((*arena)->Reset());
  // The thread's old chunk is stale: the next allocation claims a new one
  // from the rewound cursor.
  absl::StatusOr<uint64_t> next = (*arena)->Allocate(64);
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(*next, (*arena)->begin());
  EXPECT_EQ((*arena)->Stats().used_bytes, (*arena)->options().chunk_bytes);
}

TEST_F(ArenaTest, MarkAndRewindReleaseLaterAllocations) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 4 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena =
      sc::Arena::Create(region, {.mode = sc::ArenaOptions::Mode::kDirect});
  ASSERT_THAT(arena, IsOk());
  ASSERT_THAT((*arena)->Allocate(100), IsOk());
  const sc::Arena::Marker m = (*arena)->Mark();
  absl::StatusOr<uint64_t> a = (*arena)->Allocate(4000);
  ASSERT_THAT(a, IsOk());
  SHMALLOC_ASSERT_OK((*arena)->Rewind(m));
  EXPECT_THAT((*arena)->Allocate(4000), IsOkAndHolds(::testing::Eq(*a)));
  SHMALLOC_ASSERT_OK((*arena)->Rewind(m));
  SHMALLOC_ASSERT_OK((*arena)->Reset());
  EXPECT_THAT((*arena)->Rewind(m),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(ArenaTest, OpenOfNoArenaIsDataLoss) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("general", sc::Strategy::kFreeList, 4 << 20);
  ASSERT_NE(region, nullptr);
  EXPECT_THAT(sc::Arena::Open(region, region->heap_begin()),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(sc::Arena::Open(region, region->heap_end()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(sc::Arena::Create(region),  // no capacity given
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ArenaTest, PmrVectorLivesInSharedMemory) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("arena", sc::Strategy::kArena, 8 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<std::unique_ptr<sc::Arena>> arena = sc::Arena::Create(region);
  ASSERT_THAT(arena, IsOk());
  sc::ArenaResource resource(**arena);
  std::pmr::vector<int> v(&resource);
  for (int i = 0; i < 10000; ++i) v.push_back(i);
  EXPECT_THAT(region->ToOffset(v.data()), IsOk());
  EXPECT_EQ(v[9999], 9999);
  std::pmr::vector<char> too_big(&resource);
  EXPECT_THROW(too_big.resize(16 << 20), std::bad_alloc);
}

}  // namespace
}  // namespace shmalloc::testing
