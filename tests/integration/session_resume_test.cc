// Sessions survive the daemon: a SIGTERM or SIGKILL of shmallocd orphans
// its sessions instead of freeing them; the client resumes with its token
// within limits.session_grace_ms and still owns its allocations; an orphan
// nobody resumes is reclaimed after the grace period; a client whose stream
// ends while the daemon runs is reclaimed at once; the token is required.
//
// Waiting is by polling GetStats with a deadline, never a fixed sleep.
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

constexpr absl::Duration kPollDeadline = absl::Seconds(10);

const v1::SessionUsage* FindUsage(const v1::Stats& stats, uint64_t id) {
  for (const v1::RegionStats& r : stats.regions()) {
    for (const v1::SessionUsage& u : r.sessions()) {
      if (u.session_id() == id) return &u;
    }
  }
  return nullptr;
}

class SessionResumeTest : public DaemonTest {
 protected:
  // A long grace: the resume tests must never race the reaper.
  DaemonOptions Options() const override {
    return {.config_text = "limits { session_grace_ms: 60000 }\n",
            .extra_flags = {}};
  }

  // Opens a session holding 3 owned + 1 detached allocations in "r".
  void OpenWithAllocations() {
    ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_FREE_LIST), IsOk());
    absl::StatusOr<std::unique_ptr<Session>> s = Session::Open(stub(), "keep");
    ASSERT_THAT(s, IsOk());
    session_ = *std::move(s);
    EXPECT_EQ(session_->token().size(), 16u);
    EXPECT_FALSE(session_->first_event().resumed());
    EXPECT_EQ(session_->first_event().session_grace_ms(), 60000u);
    EXPECT_NE(session_->first_event().daemon_incarnation(), 0u);
    absl::StatusOr<v1::AllocateResponse> owned =
        Allocate(stub(), *session_, "r", 256, 3);
    ASSERT_THAT(owned, IsOk());
    owned_ = Offsets(*owned);
    ASSERT_THAT(Allocate(stub(), *session_, "r", 256, 1, /*detached=*/true),
                IsOk());
  }

  // After a restart: the session is an orphan, resumes with its token, and
  // still owns its 3 allocations, which it can free.
  void ExpectResumes(uint64_t old_incarnation) {
    absl::StatusOr<v1::Stats> stats = GetStats(stub());
    ASSERT_THAT(stats, IsOk());
    EXPECT_EQ(stats->sessions(), 0u);
    EXPECT_EQ(stats->sessions_orphaned(), 1u);
    EXPECT_EQ(stats->regions(0).live_allocations(), 4u);

    const std::string token = session_->token();
    const uint64_t id = session_->id();
    session_.reset();  // the old stream is dead anyway
    absl::StatusOr<std::unique_ptr<Session>> resumed =
        Session::Resume(stub(), token);
    ASSERT_THAT(resumed, IsOk());
    EXPECT_EQ((*resumed)->id(), id);
    EXPECT_EQ((*resumed)->token(), token);
    EXPECT_TRUE((*resumed)->first_event().resumed());
    EXPECT_NE((*resumed)->first_event().daemon_incarnation(), old_incarnation);

    stats = GetStats(stub());
    ASSERT_THAT(stats, IsOk());
    EXPECT_EQ(stats->sessions(), 1u);
    EXPECT_EQ(stats->sessions_orphaned(), 0u);
    EXPECT_EQ(stats->sessions_resumed(), 1u);
    // Needs persistent owner records (the lead's part): until then the
    // owned allocations come back detached.
    const v1::SessionUsage* usage = FindUsage(*stats, id);
    ASSERT_NE(usage, nullptr) << stats->DebugString();
    // >= : the detached allocation may count in the session's usage too
    // (quota). Ownership itself is proven below: closing frees exactly them.
    EXPECT_GE(usage->live_allocations(), 3u);
    EXPECT_EQ(usage->client_name(), "keep");
    // Allocating and freeing in it works with the token.
    absl::StatusOr<v1::AllocateResponse> more =
        Allocate(stub(), **resumed, "r", 64, 2);
    ASSERT_THAT(more, IsOk());
    EXPECT_THAT(Free(stub(), **resumed, "r", {more->extents(0).offset()}),
                IsOk());
    // Resuming it again while attached is refused.
    EXPECT_THAT(Session::Resume(stub(), token),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    // Its stream ending while the daemon runs reclaims it at once: the 3
    // allocations from before the restart and the new one, so they were
    // still owned; the detached one stays.
    (*resumed)->Close();
    PollResult closed = PollStats(
        stub(),
        [](const v1::Stats& s) {
          return s.sessions() == 0 && s.regions(0).live_allocations() == 1;
        },
        kPollDeadline);
    EXPECT_TRUE(closed.done) << closed.stats.DebugString();
  }

  std::unique_ptr<Session> session_;
  std::vector<uint64_t> owned_;
};

TEST_F(SessionResumeTest, SigtermOrphansAndTheTokenResumesAfterRestart) {
  OpenWithAllocations();
  const uint64_t incarnation = session_->first_event().daemon_incarnation();
  SHMALLOC_ASSERT_OK(daemon_->Restart());
  ExpectResumes(incarnation);
}

TEST_F(SessionResumeTest, SigkillOrphansAndTheTokenResumesAfterRestart) {
  OpenWithAllocations();
  const uint64_t incarnation = session_->first_event().daemon_incarnation();
  SHMALLOC_ASSERT_OK(daemon_->Kill());
  SHMALLOC_ASSERT_OK(daemon_->Start());
  ExpectResumes(incarnation);
}

TEST_F(SessionResumeTest, WrongOrMissingTokenIsPermissionDenied) {
  OpenWithAllocations();
  v1::AllocateRequest request;
  request.set_session_id(session_->id());
  request.set_region("r");
  request.set_size_bytes(64);
  EXPECT_THAT(Allocate(stub(), request),
              StatusIs(absl::StatusCode::kPermissionDenied));
  request.set_session_token(std::string(16, '\x01'));
  EXPECT_THAT(Allocate(stub(), request),
              StatusIs(absl::StatusCode::kPermissionDenied));
  v1::FreeRequest free;
  free.set_session_id(session_->id());
  free.set_region("r");
  free.add_offsets(owned_[0]);
  EXPECT_THAT(Free(stub(), free),
              StatusIs(absl::StatusCode::kPermissionDenied));
  // Nothing changed.
  absl::StatusOr<v1::RegionStats> r = GetRegionStats(stub(), "r");
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->live_allocations(), 4u);
}

TEST_F(SessionResumeTest, StreamEndingWhileTheDaemonRunsIsReclaimedAtOnce) {
  OpenWithAllocations();
  const std::string token = session_->token();
  session_->Close();
  PollResult closed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 0 && s.regions(0).live_allocations() == 1;
      },
      kPollDeadline);
  ASSERT_TRUE(closed.done) << closed.stats.DebugString();
  EXPECT_EQ(closed.stats.sessions_orphaned(), 0u);
  EXPECT_THAT(Session::Resume(stub(), token),
              StatusIs(absl::StatusCode::kNotFound));
}

class SessionGraceTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    return {.config_text = "limits { session_grace_ms: 300 }\n",
            .extra_flags = {}};
  }
};

TEST_F(SessionGraceTest, AnOrphanNotResumedIsReclaimedAfterTheGrace) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_POOL), IsOk());
  absl::StatusOr<std::unique_ptr<Session>> s = Session::Open(stub(), "gone");
  ASSERT_THAT(s, IsOk());
  ASSERT_THAT(Allocate(stub(), **s, "r", 64, 5), IsOk());
  ASSERT_THAT(Allocate(stub(), **s, "r", 64, 2, /*detached=*/true), IsOk());
  const std::string token = (*s)->token();
  SHMALLOC_ASSERT_OK(daemon_->Kill());
  s->reset();
  SHMALLOC_ASSERT_OK(daemon_->Start());
  PollResult reclaimed = PollStats(
      stub(),
      [](const v1::Stats& st) {
        return st.sessions_reclaimed() == 1 && st.sessions_orphaned() == 0;
      },
      kPollDeadline);
  ASSERT_TRUE(reclaimed.done) << reclaimed.stats.DebugString();
  // Only the detached allocations stay.
  EXPECT_EQ(reclaimed.stats.regions(0).live_allocations(), 2u);
  EXPECT_EQ(reclaimed.stats.regions(0).detached_allocations(), 2u);
  EXPECT_THAT(Session::Resume(stub(), token),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace shmalloc::testing
