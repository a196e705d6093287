// Two real processes hand off buffers through shared memory: the producer
// (client_worker produce) allocates detached, writes, and sends offset+size
// over a pipe; this process maps the region, verifies byte for byte, frees.
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

}  // namespace
}  // namespace shmalloc::testing
