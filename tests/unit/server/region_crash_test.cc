// Exhaustive crash points for every daemon-side operation on a region.
//
// For each strategy and each operation (allocate, batch allocate, a batch
// that fails part-way, free, batch free, adopt, forced reset, a session's
// release),
// from a prepared state with owned and detached allocations of two sessions:
// the operation is run in a forked child that _exit()s at its k-th crash
// point (allocators/undo_log.h: every logged store, the commit, and the steps
// of a reset's redo half), for k = 1, 2, ... until the child finishes. After
// each crash the parent re-opens the region from its files (Open rolls back
// or finishes, and checks the allocator's invariants and every owner record)
// and requires its state to equal exactly the state before the operation or
// the state after it. The files are restored from a byte copy before each k.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "allocators/undo_log.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/region.h"
#include "server/region_name.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;

constexpr uint64_t kA = 7;  // sessions
constexpr uint64_t kB = 9;
constexpr int kCrashed = 42;
bool Alive() { return true; }

v1::CreateRegionRequest Request(v1::Strategy strategy) {
  v1::CreateRegionRequest request;
  request.set_name("crash");
  request.set_strategy(strategy);
  request.set_size_bytes(128 * 1024);
  if (strategy == v1::STRATEGY_POOL) request.set_block_size(512);
  if (strategy == v1::STRATEGY_BUDDY) request.set_block_size(256);
  if (strategy == v1::STRATEGY_SLAB) {
    for (uint64_t c : {256, 16384}) request.add_size_classes(c);
  }
  return request;
}

AllocateArgs Args(uint64_t session, uint64_t size, uint32_t count,
                  bool detached = false, uint64_t request = 0) {
  AllocateArgs args;
  args.session_id = session;
  args.size = size;
  args.count = count;
  args.detached = detached;
  args.request_hash = request;
  return args;
}

// Everything the daemon decides with, as one comparable string: the stats
// (figures, per-session shares, histogram, generation) and every owner
// record but its timestamp.
std::string State(const Region& region) {
  v1::RegionStats stats = region.Stats();
  std::string state = stats.SerializeAsString();
  for (const auto& [offset, info] : region.Allocations()) {
    absl::StrAppend(&state, "|", offset, ":", info.size_bytes, ":",
                    info.requested_bytes, ":", info.session_id, ":",
                    info.detached, ":", info.request_hash);
  }
  return state;
}

struct Op {
  std::string name;
  std::function<void(Region&, const std::vector<uint64_t>& live)> run;
};

class RegionCrashTest : public ::testing::TestWithParam<v1::Strategy> {
 protected:
  std::string DataPath() const { return dir_.File(DataFileName("crash")); }
  std::string MetaPath() const { return dir_.File(MetaFileName("crash")); }

  // Creates the region and the prepared state; returns its live offsets.
  std::vector<uint64_t> Prepare() {
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Create(dir_.path(), Request(GetParam()));
    EXPECT_THAT(region, IsOk());
    std::vector<uint64_t> live;
    for (const AllocateArgs& args :
         {Args(kA, 200, 3), Args(kB, 200, 2), Args(kA, 100, 2, true)}) {
      absl::StatusOr<AllocateResult> r = (*region)->Allocate(args, Alive);
      EXPECT_THAT(r, IsOk());
      for (const Extent& e : r->extents) live.push_back(e.offset);
    }
    return live;
  }

  void Save() {
    std::filesystem::copy_file(
        DataPath(), dir_.File("data.bak"),
        std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(
        MetaPath(), dir_.File("meta.bak"),
        std::filesystem::copy_options::overwrite_existing);
  }
  void Restore() {
    std::filesystem::copy_file(
        dir_.File("data.bak"), DataPath(),
        std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(
        dir_.File("meta.bak"), MetaPath(),
        std::filesystem::copy_options::overwrite_existing);
  }

  std::string OpenState() {
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Open(dir_.path(), "crash");
    EXPECT_THAT(region, IsOk());
    return region.ok() ? State(**region) : "";
  }

  // Runs `op` in a child that crashes at point k (0: never). Returns the
  // child's exit status.
  int RunChild(const Op& op, const std::vector<uint64_t>& live, uint64_t k) {
    const pid_t pid = fork();
    if (pid == 0) {
      absl::StatusOr<std::unique_ptr<Region>> region =
          Region::Open(dir_.path(), "crash");
      if (!region.ok()) _exit(3);
      UndoLog::SetCrashPoint(k, kCrashed);
      op.run(**region, live);
      _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // Crashes `op` at every point; returns how many points were covered.
  uint64_t CrashEverywhere(const Op& op, const std::vector<uint64_t>& live) {
    Save();
    const std::string before = OpenState();
    Restore();
    EXPECT_EQ(RunChild(op, live, 0), 0) << op.name;
    const std::string after = OpenState();
    EXPECT_NE(before, after) << op.name << " changed nothing";
    uint64_t k = 1;
    for (;; ++k) {
      Restore();
      const int exit_code = RunChild(op, live, k);
      if (exit_code == 0) break;
      EXPECT_EQ(exit_code, kCrashed) << op.name << " at point " << k;
      const std::string recovered = OpenState();
      EXPECT_TRUE(recovered == before || recovered == after)
          << op.name << ": crash point " << k
          << " recovered to neither the state before nor after";
      // Recovery itself must be stable: opening again changes nothing.
      EXPECT_EQ(OpenState(), recovered) << op.name << " at point " << k;
      if (::testing::Test::HasFailure()) break;
    }
    Restore();
    return k - 1;
  }

  TempDir dir_;
};

TEST_P(RegionCrashTest, EveryCrashPointRecoversToBeforeOrAfter) {
  const std::vector<uint64_t> live = Prepare();
  ASSERT_EQ(live.size(), 7u);
  const std::vector<Op> ops = {
      {"alloc",
       [](Region& r, const std::vector<uint64_t>&) {
         (void)r.Allocate(Args(kB, 300, 1, false, 11), Alive);
       }},
      {"batch alloc",
       [](Region& r, const std::vector<uint64_t>&) {
         (void)r.Allocate(Args(kA, 200, 6), Alive);
       }},
      // Five big extents where four fit: fails at the fifth, rolled back,
      // counted once. (A POOL has one owner record per block, so a batch
      // that does not fit is refused before the allocator is asked.)
      {"batch alloc failing part-way",
       [](Region& r, const std::vector<uint64_t>&) {
         (void)r.Allocate(
             Args(kB, r.strategy() == Strategy::kSlab ? 16000 : 30000,
                  r.strategy() == Strategy::kBuddy ? 4 : 5),
             Alive);
       }},
      {"free",
       [](Region& r, const std::vector<uint64_t>& l) {
         (void)r.Free(std::span<const uint64_t>(&l[0], 1), FreeArgs{kA, 0, 21});
       }},
      {"batch free",
       [](Region& r, const std::vector<uint64_t>& l) {
         const std::vector<uint64_t> some = {l[1], l[3], l[5]};
         (void)r.Free(some);
       }},
      // A's two detached extents become B's (owned, B's share and quota).
      {"adopt",
       [](Region& r, const std::vector<uint64_t>& l) {
         const std::vector<uint64_t> detached = {l[5], l[6]};
         (void)r.Adopt(detached, AdoptArgs{kB, 0, 31}, Alive);
       }},
      // A session adopting its own detached extent.
      {"adopt own",
       [](Region& r, const std::vector<uint64_t>& l) {
         (void)r.Adopt(std::span<const uint64_t>(&l[6], 1), AdoptArgs{kA},
                       Alive);
       }},
      {"reset",
       [](Region& r, const std::vector<uint64_t>&) { (void)r.Reset(true); }},
      {"session release",
       [](Region& r, const std::vector<uint64_t>&) {
         (void)r.ReleaseSession(kA);
       }},
  };
  const std::string strategy = v1::Strategy_Name(GetParam());
  for (const Op& op : ops) {
    if (GetParam() == v1::STRATEGY_POOL &&
        op.name == "batch alloc failing part-way") {
      continue;
    }
    const uint64_t points = CrashEverywhere(op, live);
    std::cout << strategy << " " << op.name << ": " << points
              << " crash points covered\n";
    EXPECT_GT(points, 0u) << op.name;
    if (HasFailure()) return;
  }
}

TEST_P(RegionCrashTest, RetriedRequestIdsReturnTheFirstOutcome) {
  Prepare();
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Open(dir_.path(), "crash");
  ASSERT_THAT(region, IsOk());
  absl::StatusOr<AllocateResult> first =
      (*region)->Allocate(Args(kB, 300, 2, false, 77), Alive);
  ASSERT_THAT(first, IsOk());
  const std::string state = State(**region);
  region->reset();
  // Across a restart (a re-open from the files) too.
  region = Region::Open(dir_.path(), "crash");
  ASSERT_THAT(region, IsOk());
  absl::StatusOr<AllocateResult> again =
      (*region)->Allocate(Args(kB, 300, 2, false, 77), Alive);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->extents, first->extents);
  EXPECT_EQ(State(**region), state);

  const std::vector<uint64_t> offsets = {first->extents[0].offset};
  absl::StatusOr<uint64_t> freed =
      (*region)->Free(offsets, FreeArgs{kB, 0, 78});
  ASSERT_THAT(freed, IsOk());
  const std::string after_free = State(**region);
  region->reset();
  region = Region::Open(dir_.path(), "crash");
  ASSERT_THAT(region, IsOk());
  absl::StatusOr<uint64_t> freed_again =
      (*region)->Free(offsets, FreeArgs{kB, 0, 78});
  ASSERT_THAT(freed_again, IsOk());
  EXPECT_EQ(*freed_again, *freed);
  EXPECT_EQ(State(**region), after_free);
}

// Adopt: detached extents become the adopter's (its end frees them, the
// allocator's does not); every refusal changes nothing; a retry with the
// same request id, across a re-open too, is OK and changes nothing.
TEST_P(RegionCrashTest, AdoptMovesOwnershipAllOrNothing) {
  const std::vector<uint64_t> live = Prepare();
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Open(dir_.path(), "crash");
  ASSERT_THAT(region, IsOk());
  Region& r = **region;
  const std::string before = State(r);
  const uint64_t gen = r.Describe().generation();
  auto refused = [&](std::vector<uint64_t> offsets, AdoptArgs args,
                     absl::StatusCode code, bool alive = true) {
    const absl::Status status =
        r.Adopt(offsets, args, [alive] { return alive; });
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_EQ(State(r), before) << status;
  };
  // An owned extent (B's), among detached ones: nothing moves.
  refused({live[5], live[3]}, AdoptArgs{kA},
          absl::StatusCode::kFailedPrecondition);
  refused({live[5], live[5]}, AdoptArgs{kB},
          absl::StatusCode::kFailedPrecondition);
  refused({live[5] + 8}, AdoptArgs{kB}, absl::StatusCode::kFailedPrecondition);
  refused({1}, AdoptArgs{kB}, absl::StatusCode::kInvalidArgument);
  refused({live[5]}, AdoptArgs{kB, gen + 1},
          absl::StatusCode::kFailedPrecondition);
  refused({live[5]}, AdoptArgs{kB}, absl::StatusCode::kNotFound,
          /*alive=*/false);
  refused(std::vector<uint64_t>(r.max_batch() + 1, live[5]), AdoptArgs{kB},
          absl::StatusCode::kInvalidArgument);

  const std::vector<uint64_t> detached = {live[5], live[6]};
  ASSERT_THAT(r.Adopt(detached, AdoptArgs{kB, gen, 55}, Alive), IsOk());
  for (uint64_t offset : detached) {
    bool found = false;
    for (const auto& [o, info] : r.Allocations()) {
      if (o != offset) continue;
      found = true;
      EXPECT_EQ(info.session_id, kB);
      EXPECT_FALSE(info.detached);
    }
    EXPECT_TRUE(found);
  }
  const std::string adopted = State(r);
  region->reset();
  region = Region::Open(dir_.path(), "crash");
  ASSERT_THAT(region, IsOk());
  EXPECT_EQ(State(**region), adopted);
  // The retry is OK and changes nothing; without its id it is refused (no
  // longer detached).
  EXPECT_THAT((*region)->Adopt(detached, AdoptArgs{kB, gen, 55}, Alive),
              IsOk());
  EXPECT_EQ(State(**region), adopted);
  EXPECT_EQ((*region)->Adopt(detached, AdoptArgs{kB}, Alive).code(),
            absl::StatusCode::kFailedPrecondition);
  // A's end frees its three owned extents only; B's frees its two and the
  // two it adopted.
  EXPECT_EQ((*region)->ReleaseSession(kA), 3u);
  EXPECT_EQ((*region)->ReleaseSession(kB), 4u);
  EXPECT_TRUE((*region)->Allocations().empty());
}

// The quota counts what a session adopts: a session whose next extent of a
// size is refused cannot adopt one of that size either (nothing changes);
// an empty session can.
TEST_P(RegionCrashTest, AdoptOverQuotaIsRefused) {
  v1::CreateRegionRequest request = Request(GetParam());
  request.set_quota_bytes_per_session(2048);
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Create(dir_.path(), request);
  ASSERT_THAT(region, IsOk());
  Region& r = **region;
  for (int i = 0;; ++i) {
    ASSERT_LT(i, 100);
    absl::StatusOr<AllocateResult> more = r.Allocate(Args(kB, 200, 1), Alive);
    if (!more.ok()) {
      ASSERT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
      break;
    }
  }
  absl::StatusOr<AllocateResult> handed =
      r.Allocate(Args(kA, 200, 1, true), Alive);
  ASSERT_THAT(handed, IsOk());
  const std::vector<uint64_t> offsets = {handed->extents[0].offset};
  const std::string before = State(r);
  const absl::Status status = r.Adopt(offsets, AdoptArgs{kB}, Alive);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(State(r), before);
  EXPECT_THAT(r.Adopt(offsets, AdoptArgs{13}, Alive), IsOk());
}

INSTANTIATE_TEST_SUITE_P(
    Strategies, RegionCrashTest,
    ::testing::Values(v1::STRATEGY_POOL, v1::STRATEGY_BUDDY, v1::STRATEGY_SLAB,
                      v1::STRATEGY_FREE_LIST),
    [](const auto& info) { return v1::Strategy_Name(info.param); });

// ARENA: a forced reset (a transaction that bumps the generation and marks
// the reset pending, then the re-format of the shared metadata from the meta
// file's geometry, Arena::Reformat) recovers at every crash point, and a
// scribbled arena header does not stop Open from finishing it.
using ArenaCrashTest = RegionCrashTest;

TEST_P(ArenaCrashTest, ForcedResetRecoversAtEveryCrashPoint) {
  const std::vector<uint64_t> live = Prepare();
  const Op reset = {"arena reset", [](Region& r, const std::vector<uint64_t>&) {
                      (void)r.Reset(true);
                    }};
  const uint64_t points = CrashEverywhere(reset, live);
  std::cout << "STRATEGY_ARENA reset: " << points << " crash points covered\n";
  EXPECT_GT(points, 2u);
}

INSTANTIATE_TEST_SUITE_P(Arena, ArenaCrashTest,
                         ::testing::Values(v1::STRATEGY_ARENA));

}  // namespace
}  // namespace shmalloc::server
