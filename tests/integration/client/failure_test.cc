// Failure modes of the client: each a clear error, never a hang or a crash.
// Daemon absent, daemon killed mid-run, region deleted under a client, stale
// offsets after a reset, bad offsets and pointers.
#include <signal.h>
#include <stdlib.h>

#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "shmalloc/arena.h"
#include "tests/integration/client/client_fixture.h"

namespace shmalloc::testing {
namespace {

using ::testing::HasSubstr;
using FailureTest = ClientTest;

TEST(ClientFailureTest, AbsentDaemonIsUnavailableInBoundedTime) {
  char dir[] = "/tmp/shmalloc-client-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<sc::Client>> c =
      sc::Client::Connect({.target = std::string(dir) + "/absent.sock",
                           .connect_timeout = absl::Seconds(1)});
  const absl::Duration took = absl::Now() - start;
  EXPECT_THAT(c, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("absent.sock"));
  EXPECT_LT(took, absl::Seconds(3));
  rmdir(dir);
}

TEST(ClientFailureTest, DaemonKilledMidRunGivesClearErrors) {
  DaemonProcess daemon;
  SHMALLOC_ASSERT_OK(daemon.Start());
  absl::StatusOr<std::unique_ptr<sc::Client>> c = sc::Client::Connect(
      {.target = daemon.target(), .rpc_timeout = absl::Seconds(2)});
  ASSERT_THAT(c, IsOk());
  sc::Client& client = **c;
  ASSERT_THAT(client.CreateRegion({.name = "pool",
                                   .strategy = sc::Strategy::kPool,
                                   .size_bytes = 1 << 20,
                                   .block_size = 64}),
              IsOk());
  absl::StatusOr<std::shared_ptr<sc::Region>> region =
      client.OpenRegion("pool");
  ASSERT_THAT(region, IsOk());
  absl::StatusOr<sc::Allocation> a = (*region)->Allocate(64);
  ASSERT_THAT(a, IsOk());

  kill(daemon.pid(), SIGKILL);
  const absl::Time start = absl::Now();
  absl::StatusOr<sc::Allocation> b = (*region)->Allocate(64);
  EXPECT_THAT(b, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  // The mapping stays valid: the memory is ours until the Region goes.
  std::memset(a->data(), 0xab, 64);
  // The session thread sees the stream end; from then on every call names it.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (client.SessionStatus().ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));  // polling a state, not syncing
  }
  EXPECT_THAT(client.SessionStatus(), StatusIs(absl::StatusCode::kUnavailable));
  absl::Status s = client.GetStats().status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(s.message()), HasSubstr("session"));
  // Destroying the handle tries a Free, which fails quietly.
}

TEST_F(FailureTest, RegionDeletedUnderAClient) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("doomed", sc::Strategy::kFreeList, 1 << 20);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<sc::Allocation> a = region->Allocate(1000);
  ASSERT_THAT(a, IsOk());
  absl::StatusOr<std::unique_ptr<sc::Client>> other =
      sc::Client::Connect({.target = daemon_->target()});
  ASSERT_THAT(other, IsOk());
  EXPECT_THAT((*other)->DeleteRegion("doomed"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  SHMALLOC_ASSERT_OK((*other)->DeleteRegion("doomed", /*force=*/true));

  absl::StatusOr<sc::Allocation> b = region->Allocate(1000);
  EXPECT_THAT(b, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(std::string(b.status().message()), HasSubstr("doomed"));
  EXPECT_THAT(a->Free(), StatusIs(absl::StatusCode::kNotFound));
  std::memset(a->data(), 1, 1000);  // still mapped here
  EXPECT_THAT(client_->OpenRegion("doomed"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(FailureTest, StaleOffsetAfterResetIsDetected) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 1 << 20, 256);
  ASSERT_NE(region, nullptr);
  absl::StatusOr<sc::Allocation> a = region->Allocate(256, {.detached = true});
  ASSERT_THAT(a, IsOk());
  SHMALLOC_EXPECT_OK(region->CheckGeneration(a->generation()));
  EXPECT_THAT(region->Reset(), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(region->Reset(/*force=*/true), IsOk());
  absl::Status stale = region->CheckGeneration(a->generation());
  EXPECT_THAT(stale, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(stale.message()), HasSubstr("stale"));
  EXPECT_THAT(a->Free(), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(StatsOf("pool").live_allocations, 0u);
}

TEST_F(FailureTest, BadOffsetsAndPointersNeverBecomeWild) {
  std::shared_ptr<sc::Region> region =
      MakeRegion("pool", sc::Strategy::kPool, 1 << 20, 64);
  ASSERT_NE(region, nullptr);
  EXPECT_EQ(region->ToPointer(0), nullptr);
  EXPECT_EQ(region->ToPointer(region->heap_begin() - 1), nullptr);
  EXPECT_EQ(region->ToPointer(region->heap_end()), nullptr);
  EXPECT_EQ(region->ToPointer(~0ULL), nullptr);
  EXPECT_NE(region->ToPointer(region->heap_begin()), nullptr);
  int local = 0;
  EXPECT_THAT(region->ToOffset(&local),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->ToOffset(region->base()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->Span(region->heap_end() - 1, 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->Span(region->heap_begin(), ~0ULL),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->Span(region->heap_begin(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(region->Free(region->heap_begin() + 1),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(FailureTest, WrongShmDirIsNotFoundWithAHint) {
  absl::StatusOr<std::unique_ptr<sc::Client>> c = sc::Client::Connect(
      {.target = daemon_->target(), .shm_dir = "/nonexistent-shm-dir"});
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ((*c)->shm_dir(), "/nonexistent-shm-dir");
  ASSERT_NE(MakeRegion("pool", sc::Strategy::kPool, 1 << 20, 64), nullptr);
  absl::StatusOr<std::shared_ptr<sc::Region>> r = (*c)->OpenRegion("pool");
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("SHMALLOC_SHM_DIR"));
}

}  // namespace
}  // namespace shmalloc::testing
