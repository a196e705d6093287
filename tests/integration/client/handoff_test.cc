// Two real processes hand off buffers through shared memory: the producer
// (client_worker produce) allocates detached, writes, and sends offset+size
// over a pipe; this process maps the region, verifies byte for byte, frees.
// And ownership moving with Region::Adopt / AdoptAllocation: adopted
// buffers are the adopting client's, freed when its session ends.
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using HandoffTest = ClientTest;

TEST_F(HandoffTest, TwoProcessesHandOffTenThousandBuffers) {
  constexpr int kBuffers = 10000;
  std::shared_ptr<sc::Region> region =
      MakeRegion("handoff", sc::Strategy::kFreeList, 64 << 20);
  ASSERT_NE(region, nullptr);
  std::unique_ptr<ChildProcess> producer = Worker(
      {"produce", daemon_->target(), "handoff", std::to_string(kBuffers), "7"});
  ASSERT_NE(producer, nullptr);
  int received = 0;
  uint64_t bytes = 0;
  for (;;) {
    absl::StatusOr<std::string> line = producer->ReadLine();
    ASSERT_THAT(line, IsOk());
    if (*line == "done") break;
    std::istringstream in(*line);
    uint64_t offset = 0, size = 0, seed = 0;
    ASSERT_TRUE(in >> offset >> size >> seed) << *line;
    absl::StatusOr<std::span<std::byte>> span = region->Span(offset, size);
    ASSERT_THAT(span, IsOk());
    ASSERT_EQ(FindPatternMismatch(span->data(), size, seed), -1)
        << "buffer " << seed << " at " << offset;
    SHMALLOC_ASSERT_OK(region->Free(offset));
    ++received;
    bytes += size;
  }
  EXPECT_EQ(received, kBuffers);
  SHMALLOC_EXPECT_OK(producer->WaitForSuccess());
  const sc::RegionStats stats = StatsOf("handoff");
  EXPECT_EQ(stats.used_bytes, 0u);
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_EQ(stats.detached_allocations, 0u);
  std::printf("handed off %d buffers, %llu bytes\n", received,
              static_cast<unsigned long long>(bytes));
}

TEST_F(HandoffTest, AdoptedBuffersAreFreedWhenTheAdoptingSessionEnds) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("adopt", sc::Strategy::kFreeList, 1 << 20);
  ASSERT_NE(region, nullptr);
  uint64_t generation = 0;
  absl::StatusOr<std::vector<sc::Extent>> handed =
      region->AllocateExtents(200, 3, {.detached = true}, &generation);
  ASSERT_THAT(handed, IsOk());
  {
    absl::StatusOr<std::unique_ptr<sc::Client>> consumer =
        sc::Client::Connect({.target = daemon_->target()});
    ASSERT_THAT(consumer, IsOk());
    absl::StatusOr<std::shared_ptr<sc::Region>> theirs =
        (*consumer)->OpenRegion("adopt");
    ASSERT_THAT(theirs, IsOk());
    absl::StatusOr<sc::Allocation> one =
        (*theirs)->AdoptAllocation((*handed)[0], generation);
    ASSERT_THAT(one, IsOk());
    EXPECT_TRUE(one->owning());
    const std::vector<uint64_t> rest = {(*handed)[1].offset,
                                        (*handed)[2].offset};
    SHMALLOC_ASSERT_OK((*theirs)->Adopt(rest, generation));
    sc::RegionStats stats = StatsOf("adopt");
    EXPECT_EQ(stats.live_allocations, 3u);
    EXPECT_EQ(stats.detached_allocations, 0u);
    // Owned now: adopting again would steal them, refused.
    EXPECT_EQ((*theirs)->Adopt(rest).code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(region->Adopt(rest).code(),
              absl::StatusCode::kFailedPrecondition);
    // Out of this mapping's heap: refused before any RPC.
    EXPECT_EQ(
        (*theirs)->AdoptAllocation({uint64_t{1} << 40, 16}).status().code(),
        absl::StatusCode::kInvalidArgument);
    SHMALLOC_ASSERT_OK(one->Free());
    EXPECT_EQ(StatsOf("adopt").live_allocations, 2u);
  }  // The consumer's session ends: the daemon frees the two it adopted.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  sc::RegionStats stats = StatsOf("adopt");
  while (stats.live_allocations != 0 && absl::Now() < deadline) {
    stats = StatsOf("adopt");
  }
  EXPECT_EQ(stats.live_allocations, 0u);
  EXPECT_EQ(stats.used_bytes, 0u);
}

}  // namespace
}  // namespace shmalloc::testing
