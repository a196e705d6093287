// The daemon side of the trust boundary with a real daemon and a real
// misbehaving client process (misbehaving_client, fork/exec'd): a region's
// data file truncated or grown, its ARENA metadata scribbled, too many
// WatchStats streams. Each case checks that the daemon stays up, that other
// regions keep serving, that no extent lies outside the heap, that the
// refused operation gets the status DESIGN.md names, and that state is
// unchanged where it must be.
#include <signal.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/segment_header.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/integration/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

using ::testing::HasSubstr;

// Runs misbehaving_client with `args`; expects exit status 0.
void Misbehave(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MISBEHAVING_CLIENT_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<ProcessResult> run = RunProcess(argv);
  ASSERT_THAT(run, IsOk());
  ASSERT_EQ(run->exit_code, 0) << run->err;
}

void ExpectInHeap(const v1::AllocateResponse& response,
                  const v1::Region& region) {
  for (const v1::Extent& e : response.extents()) {
    EXPECT_GE(e.offset(), region.heap_begin());
    EXPECT_LE(e.offset() + e.size_bytes(), region.heap_end());
  }
}

bool DaemonAlive(const DaemonProcess& daemon) {
  return kill(daemon.pid(), 0) == 0;
}

struct FileCase {
  v1::Strategy strategy;
  bool grow;  // grow the data file instead of truncating it
};

class DataFileTest : public DaemonTest,
                     public ::testing::WithParamInterface<FileCase> {};

// A client changes the size of one region's data file. The daemon stays up,
// that region becomes DAMAGED (DATA_LOSS for Allocate, listed DAMAGED), the
// other region keeps serving, and a forced reset brings it back.
TEST_P(DataFileTest, WrongSizeDamagesOnlyThatRegion) {
  const FileCase c = GetParam();
  absl::StatusOr<v1::Region> victim =
      CreateRegion(stub(), "victim", c.strategy);
  ASSERT_THAT(victim, IsOk());
  absl::StatusOr<v1::Region> other =
      CreateRegion(stub(), "other", v1::STRATEGY_FREE_LIST);
  ASSERT_THAT(other, IsOk());
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  ASSERT_THAT(Allocate(stub(), **session, "victim", 64, 4), IsOk());
  absl::StatusOr<v1::AllocateResponse> kept =
      Allocate(stub(), **session, "other", 1000, 3);
  ASSERT_THAT(kept, IsOk());

  const std::string size =
      c.grow ? absl::StrCat(victim->size_bytes() + (1 << 20)) : "4096";
  Misbehave({"truncate", daemon_->RegionFile("victim"), size});

  // Stats of everything first: for ARENA it is what touches the mapping.
  absl::StatusOr<v1::Stats> all = GetStats(stub());
  ASSERT_THAT(all, IsOk());
  ASSERT_TRUE(DaemonAlive(*daemon_));
  EXPECT_THAT(Allocate(stub(), **session, "victim", 64, 1),
              StatusIs(absl::StatusCode::kDataLoss));
  absl::StatusOr<v1::Region> damaged = GetRegion(stub(), "victim");
  ASSERT_THAT(damaged, IsOk());
  EXPECT_EQ(damaged->state(), v1::REGION_STATE_DAMAGED);
  EXPECT_THAT(damaged->state_detail(),
              HasSubstr(c.grow ? "grown" : "truncated"));
  EXPECT_THAT(GetStats(stub(), "victim"),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(DeleteRegion(stub(), "victim"),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ResetRegion(stub(), "victim"),
              StatusIs(absl::StatusCode::kDataLoss));
  absl::StatusOr<v1::ListRegionsResponse> list = ListRegions(stub());
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->regions_size(), 2);
  for (const v1::Region& r : list->regions()) {
    EXPECT_EQ(r.state(), r.name() == "victim" ? v1::REGION_STATE_DAMAGED
                                              : v1::REGION_STATE_READY)
        << r.name();
  }

  // The other region is untouched and keeps serving.
  absl::StatusOr<v1::RegionStats> other_stats = GetRegionStats(stub(), "other");
  ASSERT_THAT(other_stats, IsOk());
  EXPECT_EQ(other_stats->live_allocations(), 3u);
  absl::StatusOr<v1::AllocateResponse> more =
      Allocate(stub(), **session, "other", 500, 5);
  ASSERT_THAT(more, IsOk());
  ExpectInHeap(*more, *other);
  ASSERT_THAT(Free(stub(), **session, "other", Offsets(*kept)), IsOk());

  // Recovery: a forced reset creates the region again from its geometry.
  absl::StatusOr<v1::Region> again = ResetRegion(stub(), "victim", true);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->state(), v1::REGION_STATE_READY);
  EXPECT_EQ(again->size_bytes(), victim->size_bytes());
  absl::StatusOr<v1::AllocateResponse> fresh =
      Allocate(stub(), **session, "victim", 64, 4);
  ASSERT_THAT(fresh, IsOk());
  ExpectInHeap(*fresh, *again);
  EXPECT_TRUE(DaemonAlive(*daemon_));
}

// A forced reset is what finds the damage: it re-creates the region at once.
TEST_P(DataFileTest, ForcedResetOfAFreshlyDamagedRegionRecreatesIt) {
  const FileCase c = GetParam();
  absl::StatusOr<v1::Region> victim =
      CreateRegion(stub(), "victim", c.strategy);
  ASSERT_THAT(victim, IsOk());
  Misbehave({"truncate", daemon_->RegionFile("victim"),
             c.grow ? absl::StrCat(victim->size_bytes() * 2) : "0"});
  absl::StatusOr<v1::Region> again = ResetRegion(stub(), "victim", true);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->state(), v1::REGION_STATE_READY);
  EXPECT_NE(again->incarnation(), victim->incarnation());
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  absl::StatusOr<v1::AllocateResponse> fresh =
      Allocate(stub(), **session, "victim", 64, 2);
  ASSERT_THAT(fresh, IsOk());
  ExpectInHeap(*fresh, *again);
}

// A DAMAGED region is deleted with force (and only with force).
TEST_P(DataFileTest, DamagedRegionIsDeletedWithForce) {
  const FileCase c = GetParam();
  absl::StatusOr<v1::Region> victim =
      CreateRegion(stub(), "victim", c.strategy);
  ASSERT_THAT(victim, IsOk());
  Misbehave({"truncate", daemon_->RegionFile("victim"),
             c.grow ? absl::StrCat(victim->size_bytes() * 2) : "0"});
  // Nothing asked the daemon yet: the delete is what finds it.
  EXPECT_THAT(DeleteRegion(stub(), "victim"),
              StatusIs(absl::StatusCode::kDataLoss));
  ASSERT_THAT(DeleteRegion(stub(), "victim", true), IsOk());
  EXPECT_THAT(GetRegion(stub(), "victim"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(daemon_->ShmDirFiles(),
              ::testing::Not(::testing::Contains(HasSubstr("victim"))));
  EXPECT_TRUE(DaemonAlive(*daemon_));
}

INSTANTIATE_TEST_SUITE_P(Files, DataFileTest,
                         ::testing::Values(FileCase{v1::STRATEGY_ARENA, false},
                                           FileCase{v1::STRATEGY_ARENA, true},
                                           FileCase{v1::STRATEGY_POOL, false},
                                           FileCase{v1::STRATEGY_POOL, true},
                                           FileCase{v1::STRATEGY_FREE_LIST,
                                                    false}),
                         [](const auto& info) {
                           return absl::StrCat(
                               v1::Strategy_Name(info.param.strategy),
                               info.param.grow ? "_grown" : "_truncated");
                         });

// A region that was truncated while the daemon was down is DAMAGED at start
// (never a crash), and the others are served.
TEST(DataFileRestartTest, TruncatedWhileStoppedIsDamagedAtStart) {
  DaemonProcess daemon;
  ASSERT_THAT(daemon.Start(), IsOk());
  ASSERT_THAT(CreateRegion(daemon.stub(), "victim", v1::STRATEGY_ARENA),
              IsOk());
  ASSERT_THAT(CreateRegion(daemon.stub(), "other", v1::STRATEGY_POOL), IsOk());
  ASSERT_THAT(daemon.Stop(), IsOk());
  Misbehave({"truncate", daemon.RegionFile("victim"), "100"});
  ASSERT_THAT(daemon.Start(), IsOk());
  absl::StatusOr<v1::Region> damaged = GetRegion(daemon.stub(), "victim");
  ASSERT_THAT(damaged, IsOk());
  EXPECT_EQ(damaged->state(), v1::REGION_STATE_DAMAGED);
  absl::StatusOr<std::unique_ptr<Session>> session =
      Session::Open(daemon.stub());
  ASSERT_THAT(session, IsOk());
  EXPECT_THAT(Allocate(daemon.stub(), **session, "other", 64, 2), IsOk());
  (*session)->Close();
  EXPECT_THAT(daemon.Stop(), IsOk());
}

// A client scribbles the ARENA header: begin, end, magic and cursor. The
// daemon's allocations are refused (DATA_LOSS, never an extent outside the
// heap); ResetRegion without force is refused; with force the metadata is
// re-formatted from the daemon's geometry and allocation works again.
TEST_F(DaemonTest, ScribbledArenaHeaderIsRepairedByForcedReset) {
  absl::StatusOr<v1::Region> arena =
      CreateRegion(stub(), "arena", v1::STRATEGY_ARENA);
  ASSERT_THAT(arena, IsOk());
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  ASSERT_THAT(Allocate(stub(), **session, "arena", 100, 2), IsOk());
  const std::string data = daemon_->RegionFile("arena");
  const uint64_t meta = kArenaMetaOffset;
  Misbehave({"poke", data, absl::StrCat(meta + 0), "1"});         // magic
  Misbehave({"poke", data, absl::StrCat(meta + 16), "8"});        // begin
  Misbehave({"poke", data, absl::StrCat(meta + 24), "1000000"});  // end
  Misbehave({"poke", data, absl::StrCat(meta + 64),
             absl::StrCat(uint64_t{1} << 62)});  // cursor
  EXPECT_THAT(Allocate(stub(), **session, "arena", 100, 1),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ResetRegion(stub(), "arena"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  absl::StatusOr<v1::Region> reset = ResetRegion(stub(), "arena", true);
  ASSERT_THAT(reset, IsOk());
  EXPECT_EQ(reset->generation(), arena->generation() + 1);
  absl::StatusOr<v1::AllocateResponse> fresh =
      Allocate(stub(), **session, "arena", 100, 3);
  ASSERT_THAT(fresh, IsOk());
  ExpectInHeap(*fresh, *reset);
  EXPECT_EQ(fresh->extents(0).offset(), reset->heap_begin());
  // The re-formatted metadata also survives a restart.
  (*session)->Close();
  ASSERT_THAT(daemon_->Restart(), IsOk());
  absl::StatusOr<v1::Region> reopened = GetRegion(stub(), "arena");
  ASSERT_THAT(reopened, IsOk());
  EXPECT_EQ(reopened->state(), v1::REGION_STATE_READY);
}

// limits.max_watchers caps concurrent WatchStats streams: one more is
// RESOURCE_EXHAUSTED; a stream that ends frees its place.
class WatcherCapTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    return DaemonOptions{.config_text = "limits { max_watchers: 2 }\n",
                         .extra_flags = {}};
  }
};

struct Watch {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::Stats>> reader;
  v1::Stats first;
  bool got_first = false;
};

std::unique_ptr<Watch> StartWatch(v1::Allocator::Stub& stub) {
  auto w = std::make_unique<Watch>();
  v1::WatchStatsRequest request;
  request.set_interval_ms(10);
  w->context.set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(20));
  w->reader = stub.WatchStats(&w->context, request);
  w->got_first = w->reader->Read(&w->first);
  return w;
}

TEST_F(WatcherCapTest, OneWatcherPastTheCapIsResourceExhausted) {
  ASSERT_THAT(CreateRegion(stub(), "pool", v1::STRATEGY_POOL), IsOk());
  std::unique_ptr<Watch> a = StartWatch(stub());
  std::unique_ptr<Watch> b = StartWatch(stub());
  ASSERT_TRUE(a->got_first);
  ASSERT_TRUE(b->got_first);
  std::unique_ptr<Watch> c = StartWatch(stub());
  EXPECT_FALSE(c->got_first);
  const grpc::Status refused = c->reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_watchers"));
  // The watchers do not stall the region: allocations are served.
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  for (int i = 0; i < 50; ++i) {
    ASSERT_THAT(Allocate(stub(), **session, "pool", 64, 16), IsOk());
  }
  // Ending one frees a place (the daemon counts it down in OnDone, after
  // the client saw the stream end: wait for that, bounded).
  a->context.TryCancel();
  (void)a->reader->Finish();
  bool admitted = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!admitted && absl::Now() < deadline) {
    std::unique_ptr<Watch> d = StartWatch(stub());
    admitted = d->got_first;
    d->context.TryCancel();
    (void)d->reader->Finish();
  }
  EXPECT_TRUE(admitted);
  b->context.TryCancel();
  (void)b->reader->Finish();
}

// 100 watchers (limit raised) at the shortest interval: every stream gets
// updates and sees the region change, and Allocate is served meanwhile.
class ManyWatchersTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    return DaemonOptions{.config_text = "limits { max_watchers: 128 }\n",
                         .extra_flags = {}};
  }
};

uint64_t LiveIn(const v1::Stats& stats, const std::string& region) {
  for (const v1::RegionStats& r : stats.regions()) {
    if (r.name() == region) return r.live_allocations();
  }
  return ~uint64_t{0};
}

TEST_F(ManyWatchersTest, HundredWatchersAllGetUpdatesWhileAllocateWorks) {
  ASSERT_THAT(CreateRegion(stub(), "pool", v1::STRATEGY_POOL), IsOk());
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < 100; ++i) {
    watches.push_back(StartWatch(stub()));
    ASSERT_TRUE(watches.back()->got_first) << "watcher " << i;
    EXPECT_EQ(LiveIn(watches.back()->first, "pool"), 0u);
  }
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  for (int i = 0; i < 50; ++i) {
    ASSERT_THAT(Allocate(stub(), **session, "pool", 64, 1), IsOk()) << i;
  }
  // Each stream goes on ticking until it shows the 50 allocations (bounded
  // by the stream's deadline).
  for (size_t i = 0; i < watches.size(); ++i) {
    v1::Stats next;
    bool seen = false;
    while (!seen && watches[i]->reader->Read(&next)) {
      seen = LiveIn(next, "pool") == 50;
    }
    EXPECT_TRUE(seen) << "watcher " << i;
  }
  for (auto& w : watches) {
    w->context.TryCancel();
    (void)w->reader->Finish();
  }
}

// Allocate and Free carry the incarnation of the region the client mapped;
// the daemon refuses another one (FAILED_PRECONDITION) with nothing
// allocated or freed, so the client library needs no stat() of the data
// file per call. 0 is unchecked (older clients, grpcurl).
TEST_F(DaemonTest, AnotherIncarnationIsRefusedWithNothingChanged) {
  absl::StatusOr<v1::Region> first =
      CreateRegion(stub(), "again", v1::STRATEGY_POOL);
  ASSERT_THAT(first, IsOk());
  const uint64_t old_incarnation = first->incarnation();
  ASSERT_NE(old_incarnation, 0u);
  absl::StatusOr<std::unique_ptr<Session>> session = Session::Open(stub());
  ASSERT_THAT(session, IsOk());
  auto allocate = [&](uint64_t incarnation) {
    v1::AllocateRequest q;
    q.set_session_id((*session)->id());
    q.set_session_token((*session)->token());
    q.set_region("again");
    q.set_size_bytes(64);
    q.set_incarnation(incarnation);
    return Allocate(stub(), q);
  };
  auto free = [&](uint64_t offset, uint64_t incarnation) {
    v1::FreeRequest q;
    q.set_session_id((*session)->id());
    q.set_session_token((*session)->token());
    q.set_region("again");
    q.add_offsets(offset);
    q.set_incarnation(incarnation);
    return Free(stub(), q);
  };
  auto live = [&] {
    absl::StatusOr<v1::RegionStats> s = GetRegionStats(stub(), "again");
    return s.ok() ? s->live_allocations() : ~uint64_t{0};
  };
  absl::StatusOr<v1::AllocateResponse> mine = allocate(old_incarnation);
  ASSERT_THAT(mine, IsOk());
  ASSERT_THAT(allocate(0), IsOk());  // unchecked
  EXPECT_EQ(live(), 2u);
  const absl::Status refused = allocate(old_incarnation + 2).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("re-created"));
  EXPECT_THAT(free(Offsets(*mine)[0], old_incarnation + 2),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(live(), 2u);

  // Deleted and re-created: the old incarnation is refused in the new
  // region, even for an offset this session owns there.
  ASSERT_THAT(DeleteRegion(stub(), "again", /*force=*/true), IsOk());
  absl::StatusOr<v1::Region> second =
      CreateRegion(stub(), "again", v1::STRATEGY_POOL);
  ASSERT_THAT(second, IsOk());
  ASSERT_NE(second->incarnation(), old_incarnation);
  EXPECT_THAT(allocate(old_incarnation),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(live(), 0u);
  absl::StatusOr<v1::AllocateResponse> fresh = allocate(second->incarnation());
  ASSERT_THAT(fresh, IsOk());
  EXPECT_THAT(free(Offsets(*fresh)[0], old_incarnation),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(live(), 1u);
  EXPECT_THAT(free(Offsets(*fresh)[0], second->incarnation()), IsOk());
  EXPECT_EQ(live(), 0u);
}

// limits.max_sessions_per_peer: a process (known by the kernel's
// credentials of its connection, not by what it declares) cannot take every
// session; another process still gets its own; an ended session frees its
// place.
class PeerLimitTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    return DaemonOptions{.config_text = "limits { max_sessions_per_peer: 3 }\n",
                         .extra_flags = {}};
  }
};

TEST_F(PeerLimitTest, OneProcessCannotTakeEverySession) {
  std::vector<std::unique_ptr<Session>> mine;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::unique_ptr<Session>> s = Session::Open(stub());
    ASSERT_THAT(s, IsOk()) << i;
    mine.push_back(*std::move(s));
  }
  // Over several connections too: the peer is the process.
  auto other_channel = daemon_->NewChannel();
  auto other_stub = v1::Allocator::NewStub(other_channel);
  absl::Status refused = Session::Open(*other_stub).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(std::string(refused.message()),
              HasSubstr("max_sessions_per_peer"));
  // Nothing was opened by the refusal.
  absl::StatusOr<v1::Stats> stats = GetStats(stub());
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(stats->sessions(), 3u);
  EXPECT_EQ(stats->sessions_opened(), 3u);
  // Another process gets its own three, and no more.
  absl::StatusOr<ProcessResult> hog = RunProcess(
      {MISBEHAVING_CLIENT_PATH, "sessions", daemon_->socket_path(), "10"});
  ASSERT_THAT(hog, IsOk());
  ASSERT_EQ(hog->exit_code, 0) << hog->err;
  EXPECT_THAT(hog->out, HasSubstr("opened 3\n"));
  EXPECT_THAT(
      hog->out,
      HasSubstr(absl::StrCat(
          "refused ", static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED))));
  // The sessions still work.
  ASSERT_THAT(CreateRegion(stub(), "pool", v1::STRATEGY_POOL), IsOk());
  EXPECT_THAT(Allocate(stub(), *mine[0], "pool", 64, 1), IsOk());
  // Ending one frees a place (counted down when the daemon sees the stream
  // end: bounded retry).
  mine.pop_back();
  bool admitted = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!admitted && absl::Now() < deadline) {
    absl::StatusOr<std::unique_ptr<Session>> s = Session::Open(stub());
    if (s.ok()) {
      admitted = true;
      mine.push_back(*std::move(s));
    } else {
      ASSERT_THAT(s.status(), StatusIs(absl::StatusCode::kResourceExhausted));
    }
  }
  EXPECT_TRUE(admitted);
}

}  // namespace
}  // namespace shmalloc::testing
