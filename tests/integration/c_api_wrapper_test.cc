// Runs the C program c_api_test (C_API_TEST_PATH: compiled as C, linked
// only against libshmalloc_c) against a real daemon, then checks from the
// outside what it must have left behind: one detached allocation in region
// "c-frames" that outlived its session, and nothing else.
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/integration/subprocess.h"
#include "tests/testing/status_matchers.h"

#ifndef C_API_TEST_PATH
#error "C_API_TEST_PATH must name the c_api_test binary"
#endif

namespace shmalloc::testing {
namespace {

using ::testing::HasSubstr;

class CApiTest : public DaemonTest {};

TEST_F(CApiTest, CProgramPassesAndLeavesOnlyItsDetachedAllocation) {
  ProcessOptions options;
  options.env["SHMALLOC_SOCKET"] = daemon_->socket_path();
  options.deadline = absl::Seconds(60);
  absl::StatusOr<ProcessResult> r = RunProcess({C_API_TEST_PATH}, options);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->exit_code, 0) << "stdout:\n"
                             << r->out << "\nstderr:\n"
                             << r->err;
  EXPECT_THAT(r->out, HasSubstr("checks passed"));

  PollResult settled = PollStats(
      stub(),
      [](const v1::Stats& s) {
        for (const v1::RegionStats& region : s.regions()) {
          if (region.name() == "c-frames") {
            return region.live_allocations() == 1 &&
                   region.detached_allocations() == 1;
          }
        }
        return false;
      },
      absl::Seconds(5));
  EXPECT_TRUE(settled.done) << settled.stats.DebugString();
  absl::StatusOr<v1::RegionStats> frames = GetRegionStats(stub(), "c-frames");
  ASSERT_THAT(frames, IsOk());
  EXPECT_EQ(frames->detached_bytes(), 4096u);
  EXPECT_THAT(frames->sessions(), ::testing::IsEmpty());
}

}  // namespace
}  // namespace shmalloc::testing
