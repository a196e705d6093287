// Restart: a clean stop (SIGTERM, exit 0) and a start on the same shm_dir.
// Detached allocations and the bytes written into them survive, the stats
// show them and they free normally afterwards; the sessions that were open
// at the stop are orphaned (session_resume_test resumes them) and, not
// resumed, reclaimed after limits.session_grace_ms (short here).
#include <google/protobuf/util/message_differencer.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

using ::google::protobuf::util::MessageDifferencer;

std::byte PatternByte(uint64_t offset, size_t i) {
  return static_cast<std::byte>((offset * 7 + i * 13 + 1) & 0xff);
}

void WritePattern(MappedFile& map, const v1::Extent& e, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) {
    map.data()[e.offset() + i] = PatternByte(e.offset(), i);
  }
}

bool HasPattern(const MappedFile& map, const v1::Extent& e, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) {
    if (map.data()[e.offset() + i] != PatternByte(e.offset(), i)) return false;
  }
  return true;
}

constexpr absl::Duration kReclaimDeadline = absl::Seconds(10);

class RestartTest : public DaemonTest,
                    public ::testing::WithParamInterface<v1::Strategy> {
 protected:
  DaemonOptions Options() const override {
    return {.config_text = "limits { session_grace_ms: 100 }\n",
            .extra_flags = {}};
  }
};

TEST_P(RestartTest, DetachedAllocationsAndTheirBytesSurviveACleanRestart) {
  constexpr uint64_t kSize = 64;
  absl::StatusOr<v1::Region> region = CreateRegion(stub(), "r", GetParam());
  ASSERT_THAT(region, IsOk());
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Open(stub(), "before");
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<v1::AllocateResponse> detached =
      Allocate(stub(), **session, "r", kSize, 5, /*detached=*/true);
  ASSERT_THAT(detached, IsOk());
  absl::StatusOr<v1::AllocateResponse> owned =
      Allocate(stub(), **session, "r", kSize, 7);
  ASSERT_THAT(owned, IsOk());
  uint64_t detached_bytes = 0;
  {
    absl::StatusOr<std::unique_ptr<MappedFile>> map =
        MappedFile::Map(daemon_->RegionFile("r"));
    ASSERT_THAT(map, IsOk());
    for (const v1::Extent& e : detached->extents()) {
      WritePattern(**map, e, kSize);
      detached_bytes += e.size_bytes();
    }
  }
  absl::StatusOr<v1::RegionStats> before = GetRegionStats(stub(), "r");
  ASSERT_THAT(before, IsOk());
  EXPECT_EQ(before->live_allocations(), 12u);

  // Stop with the session still open: the daemon orphans it and exits 0;
  // nobody resumes it, so the owned allocations go after the grace period.
  SHMALLOC_ASSERT_OK(daemon_->Restart());
  session->reset();
  PollResult reclaimed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions_reclaimed() == 1 && s.regions_size() == 1 &&
               s.regions(0).live_allocations() == 5;
      },
      kReclaimDeadline);
  ASSERT_TRUE(reclaimed.done) << reclaimed.stats.DebugString();

  absl::StatusOr<v1::Region> again = GetRegion(stub(), "r");
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(*again, *region))
      << again->DebugString() << " vs " << region->DebugString();
  absl::StatusOr<v1::Stats> stats = GetStats(stub());
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->sessions(), 0u);
  ASSERT_EQ(stats->regions_size(), 1);
  const v1::RegionStats& r = stats->regions(0);
  EXPECT_EQ(r.live_allocations(), 5u);
  EXPECT_EQ(r.detached_allocations(), 5u);
  EXPECT_EQ(r.detached_bytes(), detached_bytes);
  EXPECT_EQ(r.used_bytes(), detached_bytes);
  EXPECT_EQ(r.requested_bytes(), 5 * kSize);
  EXPECT_EQ(r.capacity_bytes(), before->capacity_bytes());
  EXPECT_EQ(r.sessions_size(), 0);

  absl::StatusOr<std::unique_ptr<MappedFile>> map =
      MappedFile::Map(daemon_->RegionFile("r"));
  ASSERT_THAT(map, IsOk());
  for (const v1::Extent& e : detached->extents()) {
    EXPECT_TRUE(HasPattern(**map, e, kSize)) << "at offset " << e.offset();
  }

  absl::StatusOr<std::unique_ptr<Session>> after =
      Session::Open(stub(), "after");
  ASSERT_THAT(after, IsOk());
  // The owned allocations were reclaimed with their orphaned session.
  EXPECT_THAT(Free(stub(), **after, "r", {owned->extents(0).offset()}),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  absl::StatusOr<v1::FreeResponse> freed =
      Free(stub(), **after, "r", Offsets(*detached));
  ASSERT_THAT(freed, IsOk());
  EXPECT_EQ(freed->freed_bytes(), detached_bytes);
  absl::StatusOr<v1::RegionStats> empty = GetRegionStats(stub(), "r");
  ASSERT_THAT(empty, IsOk());
  EXPECT_EQ(empty->used_bytes(), 0u);
  EXPECT_EQ(empty->live_allocations(), 0u);
  // And the region allocates as before.
  EXPECT_THAT(Allocate(stub(), **after, "r", kSize, 100), IsOk());
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, RestartTest,
    ::testing::Values(v1::STRATEGY_POOL, v1::STRATEGY_BUDDY, v1::STRATEGY_SLAB,
                      v1::STRATEGY_FREE_LIST),
    [](const ::testing::TestParamInfo<v1::Strategy>& info) {
      return v1::Strategy_Name(info.param);
    });

class ArenaRestartTest : public DaemonTest {};

TEST_F(ArenaRestartTest, ArenaCursorAndBytesSurviveACleanRestart) {
  absl::StatusOr<v1::Region> region =
      CreateRegion(stub(), "arena", v1::STRATEGY_ARENA);
  ASSERT_THAT(region, IsOk());
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<v1::AllocateResponse> a =
      Allocate(stub(), **session, "arena", 256, 4);
  ASSERT_THAT(a, IsOk());
  {
    absl::StatusOr<std::unique_ptr<MappedFile>> map =
        MappedFile::Map(daemon_->RegionFile("arena"));
    ASSERT_THAT(map, IsOk());
    for (const v1::Extent& e : a->extents()) WritePattern(**map, e, 256);
  }
  absl::StatusOr<v1::RegionStats> before = GetRegionStats(stub(), "arena");
  ASSERT_THAT(before, IsOk());
  session->reset();

  SHMALLOC_ASSERT_OK(daemon_->Restart());
  absl::StatusOr<v1::RegionStats> after = GetRegionStats(stub(), "arena");
  ASSERT_THAT(after, IsOk());
  EXPECT_EQ(after->used_bytes(), before->used_bytes());
  absl::StatusOr<std::unique_ptr<MappedFile>> map =
      MappedFile::Map(daemon_->RegionFile("arena"));
  ASSERT_THAT(map, IsOk());
  for (const v1::Extent& e : a->extents()) {
    EXPECT_TRUE(HasPattern(**map, e, 256)) << "at offset " << e.offset();
  }
  // New allocations continue after the old ones.
  session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<v1::AllocateResponse> next =
      Allocate(stub(), **session, "arena", 256);
  ASSERT_THAT(next, IsOk());
  EXPECT_GE(next->extents(0).offset(),
            a->extents(3).offset() + a->extents(3).size_bytes());
}

class StopTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    return {.config_text = "limits { session_grace_ms: 100 }\n",
            .extra_flags = {}};
  }
};

TEST_F(StopTest, SigtermOrphansOpenSessionsEndsStreamsAndExitsPromptly) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_FREE_LIST), IsOk());
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<Session>> s =
        Session::Open(stub(), absl::StrCat("open-at-stop-", i));
    ASSERT_THAT(s, IsOk());
    ASSERT_THAT(Allocate(stub(), **s, "r", 128, 4), IsOk());
    sessions.push_back(*std::move(s));
  }
  grpc::ClientContext watch_context;
  v1::WatchStatsRequest watch_request;
  watch_request.set_interval_ms(20);
  std::unique_ptr<grpc::ClientReader<v1::Stats>> watch =
      stub().WatchStats(&watch_context, watch_request);
  v1::Stats update;
  ASSERT_TRUE(watch->Read(&update));

  // The daemon's own drain deadline is seconds long; ending its streams is
  // its job, so nothing should have to wait for that deadline.
  const absl::Time start = absl::Now();
  SHMALLOC_ASSERT_OK(daemon_->Stop());
  const absl::Duration took = absl::Now() - start;
  std::printf("stop with 3 sessions and a watch took %s\n",
              absl::FormatDuration(took).c_str());
  EXPECT_LT(took, absl::Seconds(2));
  while (watch->Read(&update)) {
  }
  (void)watch->Finish();
  sessions.clear();

  // The sessions were orphaned, not freed; unresumed, they are reclaimed
  // after the (short) grace period.
  SHMALLOC_ASSERT_OK(daemon_->Start());
  PollResult reclaimed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions_reclaimed() == 3 && s.regions_size() == 1 &&
               s.regions(0).live_allocations() == 0;
      },
      kReclaimDeadline);
  ASSERT_TRUE(reclaimed.done) << reclaimed.stats.DebugString();
  EXPECT_EQ(reclaimed.stats.regions(0).used_bytes(), 0u);
}

TEST_F(StopTest, StartsAgainAfterSigkillLeftItsSocketBehind) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_POOL), IsOk());
  SHMALLOC_ASSERT_OK(daemon_->Kill());
  ASSERT_TRUE(std::filesystem::exists(daemon_->socket_path()))
      << "expected a crash to leave the socket file";
  SHMALLOC_ASSERT_OK(daemon_->Start());
  // It serves again, and the region files it left are re-attached.
  absl::StatusOr<v1::ListRegionsResponse> list = ListRegions(stub());
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->regions_size(), 1);
  EXPECT_EQ(list->regions(0).name(), "r");
}

// The default configuration (deploy/shmallocd.textproto) fits Docker's
// default 64 MiB /dev/shm: the files the daemon reserves for its demo
// regions, owner records, undo logs and session files included.
class DefaultConfigTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    std::ifstream in(SHMALLOC_SOURCE_DIR "/deploy/shmallocd.textproto");
    std::string text((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
    return {.config_text = text, .extra_flags = {}};
  }
};

TEST_F(DefaultConfigTest, FitsDockersDefault64MiBShm) {
  absl::StatusOr<v1::ListRegionsResponse> list = ListRegions(stub());
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->regions_size(), 5);
  uint64_t reserved = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(daemon_->shm_dir())) {
    struct stat st;
    ASSERT_EQ(stat(entry.path().c_str(), &st), 0) << entry.path();
    reserved += static_cast<uint64_t>(st.st_blocks) * 512;
    std::printf("%-32s %10llu bytes reserved\n",
                entry.path().filename().c_str(),
                static_cast<unsigned long long>(st.st_blocks) * 512);
  }
  std::printf("in all: %llu bytes\n",
              static_cast<unsigned long long>(reserved));
  EXPECT_LE(reserved, uint64_t{64} << 20);
}

}  // namespace
}  // namespace shmalloc::testing
