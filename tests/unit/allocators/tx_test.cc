// Crash atomicity of the allocators' metadata under the undo log, for every
// strategy that logs (Pool, Buddy, Slab, FreeList; Arena's Allocate is one
// compare-and-swap and is not logged):
//   WriteSetIsLogged: every word an operation changes was logged first, and
//     Abort restores the metadata byte for byte.
//   CrashAtEveryPointRecoversToBeforeOrAfter: a forked child is killed
//     (_exit via UndoLog's crash hook) at every crash point of one
//     operation; recovery gives exactly the state before it, or after it when
//     the crash came after the commit store.
//   ResetIsRestartable: Reset is stopped at every store and run again; the
//   result is byte for byte that of one uninterrupted Reset.
// Real processes and a real MAP_SHARED mapping (tx_harness.h); randomized
// parts print their seed (SHMALLOC_SEED overrides it).
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "allocators/allocator.h"
#include "allocators/slab.h"
#include "allocators/undo_log.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"
#include "tests/unit/allocators/tx_harness.h"

namespace shmalloc::testing {
namespace {

constexpr int kCrashExit = 42;  // the exit code of a child stopped at k
constexpr int kBadChild = 3;    // the child saw something unexpected
constexpr uint64_t kNeverCrash = std::numeric_limits<uint64_t>::max();

// Small geometries: every crash point costs a fork, a recovery and an
// O(metadata) invariant check. `tiny` for Reset, whose stores are O(blocks).
AllocatorOptions TxOptions(Strategy strategy, bool tiny = false) {
  switch (strategy) {
    case Strategy::kPool:  // 256 (tiny: 64) blocks of 64
      return TestOptions(strategy, tiny ? 4 << 10 : 16 << 10);
    case Strategy::kBuddy:  // 2048 (tiny: 512) min blocks of 64
      return TestOptions(strategy, tiny ? 32 << 10 : 128 << 10);
    case Strategy::kSlab:
      return TestOptions(strategy, (tiny ? 4 : 8) * kSlabBytes);
    case Strategy::kFreeList: {
      AllocatorOptions o = TestOptions(strategy, 64 << 10);
      o.max_extents = tiny ? 64 : 256;
      return o;
    }
    default:
      return TestOptions(strategy);
  }
}

// The largest request of the random operations.
uint64_t MaxOpSize(Strategy strategy) {
  switch (strategy) {
    case Strategy::kPool:
      return 64;
    case Strategy::kSlab:
      return 256;  // five classes: the slabs are not all taken at once
    default:
      return 2048;
  }
}

enum class OpKind { kAlloc, kFree, kBatchAlloc, kBatchAllocFails, kBatchFree };

std::string OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kAlloc:
      return "alloc";
    case OpKind::kFree:
      return "free";
    case OpKind::kBatchAlloc:
      return "batch alloc";
    case OpKind::kBatchAllocFails:
      return "batch alloc failing part-way";
    case OpKind::kBatchFree:
      return "batch free";
  }
  return "?";
}

struct Op {
  OpKind kind = OpKind::kAlloc;
  uint64_t size = 0;
  uint64_t alignment = 0;
  uint32_t count = 0;
  std::vector<uint64_t> offsets;  // kFree: one; kBatchFree: several
};

struct OpResult {
  absl::Status status;
  std::vector<Extent> extents;  // allocated, when OK
};

OpResult RunOp(OffsetAllocator& a, const Op& op) {
  OpResult r;
  switch (op.kind) {
    case OpKind::kAlloc: {
      absl::StatusOr<Extent> e = a.Allocate(op.size, op.alignment);
      r.status = e.status();
      if (e.ok()) r.extents.push_back(*e);
      break;
    }
    case OpKind::kFree:
      r.status = a.Free(op.offsets.at(0));
      break;
    case OpKind::kBatchAlloc:
    case OpKind::kBatchAllocFails: {
      absl::StatusOr<std::vector<Extent>> e =
          a.AllocateBatch(op.size, op.alignment, op.count);
      r.status = e.status();
      if (e.ok()) r.extents = *e;
      break;
    }
    case OpKind::kBatchFree:
      r.status = a.FreeBatch(op.offsets).status();
      break;
  }
  return r;
}

// Applies a committed result to the caller's list of live offsets.
void ApplyResult(const Op& op, const OpResult& r, std::vector<uint64_t>& live) {
  if (!r.status.ok()) return;
  for (const Extent& e : r.extents) live.push_back(e.offset);
  for (uint64_t off : op.offsets) {
    live.erase(std::find(live.begin(), live.end(), off));
  }
}

// Picks `n` distinct live offsets at random.
std::vector<uint64_t> PickLive(const std::vector<uint64_t>& live, size_t n,
                               std::mt19937_64& rng) {
  std::vector<uint64_t> copy = live;
  std::shuffle(copy.begin(), copy.end(), rng);
  copy.resize(std::min(n, copy.size()));
  return copy;
}

uint64_t RandomSize(Strategy strategy, std::mt19937_64& rng) {
  return std::uniform_int_distribution<uint64_t>(1, MaxOpSize(strategy))(rng);
}

// A batch that surely exhausts the region: more blocks of the largest size
// than the whole heap holds.
Op ExhaustingBatch(const OffsetAllocator& a, Strategy strategy) {
  Op op;
  op.kind = OpKind::kBatchAllocFails;
  op.size = MaxOpSize(strategy);
  op.count = static_cast<uint32_t>((a.end() - a.begin()) / op.size + 2);
  return op;
}

// The words that changed between `before` and `after` but are not logged.
std::vector<uint64_t> UnloggedWords(const std::vector<std::byte>& before,
                                    const std::vector<std::byte>& after,
                                    const absl::flat_hash_set<uint64_t>& log) {
  std::vector<uint64_t> missing;
  for (uint64_t w : DifferingWords(before, after)) {
    if (!log.contains(w)) missing.push_back(w);
  }
  return missing;
}

std::string Words(const std::vector<uint64_t>& words) {
  std::string s;
  for (size_t i = 0; i < words.size() && i < 16; ++i) {
    absl::StrAppend(&s, i ? ", " : "", words[i]);
  }
  if (words.size() > 16) absl::StrAppend(&s, ", ... (", words.size(), ")");
  return s;
}

class TxTest : public ::testing::TestWithParam<Strategy> {
 protected:
  void SetUp() override {
    seed_ = TestSeed();
    std::cout << "seed " << seed_ << " (SHMALLOC_SEED=" << seed_
              << " reproduces)\n";
    rng_.seed(seed_);
    auto region = TxRegion::Create(TxOptions(GetParam()), 1 << 16);
    ASSERT_THAT(region, IsOk());
    region_ = std::move(*region);
    ASSERT_TRUE(mailbox_.ok());
  }

  OffsetAllocator& allocator() { return region_->allocator(); }
  std::string name() const { return std::string(StrategyName(GetParam())); }

  // A random state with live and freed extents (unlogged, as the test's
  // starting point). Returns the live offsets.
  std::vector<uint64_t> PrepareMixed() {
    std::vector<uint64_t> live;
    for (int i = 0; i < 24; ++i) {
      absl::StatusOr<Extent> e =
          allocator().Allocate(RandomSize(GetParam(), rng_), 0);
      if (e.ok()) live.push_back(e->offset);
    }
    for (uint64_t off : PickLive(live, live.size() / 3, rng_)) {
      EXPECT_THAT(allocator().Free(off), IsOk());
      live.erase(std::find(live.begin(), live.end(), off));
    }
    EXPECT_THAT(allocator().CheckInvariants(), IsOk());
    return live;
  }

  // Fills the heap with blocks of `size` until Allocate fails, then frees
  // the last three: a batch of `size` then succeeds part-way and fails.
  void PrepareNearlyFull(uint64_t size) {
    std::vector<uint64_t> live;
    for (;;) {
      absl::StatusOr<Extent> e = allocator().Allocate(size, 0);
      if (!e.ok()) {
        EXPECT_THAT(e, StatusIs(absl::StatusCode::kResourceExhausted));
        break;
      }
      live.push_back(e->offset);
    }
    ASSERT_GE(live.size(), 3u);
    for (int i = 0; i < 3; ++i) {
      EXPECT_THAT(allocator().Free(live.back()), IsOk());
      live.pop_back();
    }
  }

  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unique_ptr<TxRegion> region_;
  // Child -> parent figures (crash points passed, ...), shared over fork.
  SharedMapping mailbox_{4096};
  uint64_t* box() { return reinterpret_cast<uint64_t*>(mailbox_.data()); }
};

TEST_P(TxTest, WriteSetIsLogged) {
  std::vector<uint64_t> live;
  int failing_batches = 0;
  for (int step = 0; step < 300 && !HasFailure(); ++step) {
    Op op;
    const int dice = std::uniform_int_distribution<int>(0, 99)(rng_);
    if (step % 50 == 49) {
      op = ExhaustingBatch(allocator(), GetParam());
    } else if (live.empty() || dice < 35) {
      op.kind = OpKind::kAlloc;
      op.size = RandomSize(GetParam(), rng_);
      // Alignments above the natural one are legal for some strategies.
      op.alignment = uint64_t{1}
                     << std::uniform_int_distribution<int>(0, 6)(rng_);
      if (GetParam() == Strategy::kPool) op.alignment = 0;
    } else if (dice < 60) {
      op.kind = OpKind::kFree;
      op.offsets = PickLive(live, 1, rng_);
    } else if (dice < 80) {
      op.kind = OpKind::kBatchAlloc;
      op.size = RandomSize(GetParam(), rng_);
      op.count = std::uniform_int_distribution<uint32_t>(1, 8)(rng_);
    } else {
      op.kind = OpKind::kBatchFree;
      op.offsets = PickLive(
          live, std::uniform_int_distribution<size_t>(1, 6)(rng_), rng_);
    }
    SCOPED_TRACE(absl::StrCat("step ", step, ": ", OpName(op.kind), " size ",
                              op.size, " count ", op.count, " seed ", seed_));
    const std::vector<std::byte> before = region_->Snapshot();
    region_->log().Begin();
    const OpResult first = RunOp(allocator(), op);
    const std::vector<std::byte> after = region_->Snapshot();
    const std::vector<uint64_t> missing =
        UnloggedWords(before, after, region_->LoggedOffsets());
    EXPECT_TRUE(missing.empty())
        << name() << " " << OpName(op.kind) << " (" << first.status
        << ") changed words it did not log, at metadata offsets "
        << Words(missing);
    region_->log().Abort();
    EXPECT_EQ(DescribeDifference(before, region_->Snapshot()), "")
        << "Abort did not restore the metadata";
    EXPECT_THAT(allocator().CheckInvariants(), IsOk());
    if (op.kind == OpKind::kBatchAllocFails) {
      EXPECT_THAT(first.status, StatusIs(absl::StatusCode::kResourceExhausted));
      ++failing_batches;
    }
    // Redo: the same bytes give the same answer (no hidden state in the
    // instance), committed as the daemon's InTransaction would.
    region_->log().Begin();
    const OpResult redo = RunOp(allocator(), op);
    EXPECT_EQ(redo.status.code(), first.status.code());
    EXPECT_EQ(redo.extents, first.extents);
    EXPECT_EQ(DescribeDifference(after, region_->Snapshot()), "")
        << "the redo wrote different bytes";
    if (redo.status.ok()) {
      region_->log().Commit();
      ApplyResult(op, redo, live);
    } else {
      region_->log().Abort();
      EXPECT_EQ(DescribeDifference(before, region_->Snapshot()), "");
    }
    EXPECT_THAT(allocator().CheckInvariants(), IsOk());
  }
  EXPECT_GT(failing_batches, 0);
}

// In a transaction FreeBatch frees as it checks (Pool in one pass of plain
// stores): a bad offset part-way, a duplicate included, fails and the
// Abort restores every word.
TEST_P(TxTest, ABatchFreeFailingPartWayRollsBack) {
  const std::vector<uint64_t> live = PrepareMixed();
  ASSERT_GE(live.size(), 3u);
  const std::vector<std::vector<uint64_t>> bad = {
      {live[0], live[1], live[0]},  // a duplicate after two good ones
      {live[2], live[1] + 8},       // an interior offset
  };
  for (const std::vector<uint64_t>& offsets : bad) {
    SCOPED_TRACE(absl::StrCat(name(), " seed ", seed_));
    const std::vector<std::byte> before = region_->Snapshot();
    region_->log().Begin();
    absl::StatusOr<uint64_t> freed = allocator().FreeBatch(offsets);
    EXPECT_FALSE(freed.ok());
    EXPECT_GT(region_->log().length(), 0u) << "nothing was freed first";
    region_->log().Abort();
    EXPECT_EQ(DescribeDifference(before, region_->Snapshot()), "");
    EXPECT_THAT(allocator().CheckInvariants(), IsOk());
  }
}

TEST_P(TxTest, CrashAtEveryPointRecoversToBeforeOrAfter) {
  for (OpKind kind : {OpKind::kAlloc, OpKind::kFree, OpKind::kBatchAlloc,
                      OpKind::kBatchAllocFails, OpKind::kBatchFree}) {
    if (HasFailure()) return;
    SCOPED_TRACE(absl::StrCat(name(), " ", OpName(kind), " seed ", seed_));
    auto fresh = TxRegion::Create(TxOptions(GetParam()), 1 << 14);
    ASSERT_THAT(fresh, IsOk());
    region_ = std::move(*fresh);
    Op op;
    op.kind = kind;
    if (kind == OpKind::kBatchAllocFails) {
      op.size = MaxOpSize(GetParam()) / 2;
      op.count = 8;
      PrepareNearlyFull(op.size);
    } else {
      const std::vector<uint64_t> live = PrepareMixed();
      ASSERT_GE(live.size(), 4u);
      op.size = RandomSize(GetParam(), rng_);
      if (kind == OpKind::kBatchAlloc) op.count = 5;
      if (kind == OpKind::kFree) op.offsets = PickLive(live, 1, rng_);
      if (kind == OpKind::kBatchFree) op.offsets = PickLive(live, 4, rng_);
    }
    const std::vector<std::byte> all_before = region_->SnapshotAll();
    const std::vector<std::byte> before = region_->Snapshot();

    // Dry run: how many crash points the operation passes, and its result.
    box()[0] = box()[1] = box()[2] = 0;
    ASSERT_EQ(RunInChild([&] {
                UndoLog::SetCrashPoint(kNeverCrash, kCrashExit);
                region_->log().Begin();
                const OpResult r = RunOp(allocator(), op);
                box()[2] = region_->log().length();
                if (r.status.ok()) {
                  region_->log().Commit();
                } else {
                  region_->log().Abort();
                }
                box()[0] = UndoLog::CrashPointsPassed();
                box()[1] = r.status.ok() ? 1 : 2;
              }),
              0);
    const uint64_t points = box()[0];
    const bool committed = box()[1] == 1;
    const std::vector<std::byte> after = region_->Snapshot();
    if (kind == OpKind::kBatchAllocFails) {
      ASSERT_FALSE(committed) << "the batch was meant to fail";
      EXPECT_GT(box()[2], 0u) << "the failing batch changed nothing first";
      EXPECT_EQ(DescribeDifference(before, after), "");
    } else {
      ASSERT_TRUE(committed) << "the operation was meant to succeed";
    }
    ASSERT_GT(points, 0u) << "the operation passed no crash point";

    for (uint64_t k = 1; k <= points + 1 && !HasFailure(); ++k) {
      SCOPED_TRACE(absl::StrCat("crash point ", k, " of ", points));
      ASSERT_THAT(region_->RestoreAll(all_before), IsOk());
      const int code = RunInChild([&] {
        UndoLog::SetCrashPoint(k, kCrashExit);
        region_->log().Begin();
        const OpResult r = RunOp(allocator(), op);
        if (r.status.ok() != committed) _exit(kBadChild);
        if (r.status.ok()) {
          region_->log().Commit();
        } else {
          region_->log().Abort();
        }
      });
      ASSERT_EQ(code, k <= points ? kCrashExit : 0);
      // The restart: re-open the log, roll back, re-attach (which checks
      // every invariant).
      absl::StatusOr<uint64_t> undone = region_->Reattach();
      ASSERT_THAT(undone, IsOk());
      EXPECT_THAT(allocator().CheckInvariants(), IsOk());
      // Only the last crash point lies after the commit store.
      const bool expect_after = committed && k >= points;
      EXPECT_EQ(DescribeDifference(expect_after ? after : before,
                                   region_->Snapshot()),
                "")
          << "recovered state is not the state "
          << (expect_after ? "after" : "before") << " the operation";
      if (expect_after) {
        EXPECT_EQ(*undone, 0u);
        continue;
      }
      // From the recovered state the operation runs again to the same end.
      region_->log().Begin();
      const OpResult r = RunOp(allocator(), op);
      if (r.status.ok()) {
        region_->log().Commit();
      } else {
        region_->log().Abort();
      }
      EXPECT_EQ(r.status.ok(), committed);
      EXPECT_EQ(DescribeDifference(after, region_->Snapshot()), "")
          << "the operation re-run after recovery ended elsewhere";
    }
    std::cout << name() << " " << OpName(kind) << ": " << points
              << " crash points\n";
  }
}

TEST_P(TxTest, ResetIsRestartable) {
  auto tiny = TxRegion::Create(TxOptions(GetParam(), /*tiny=*/true), 1 << 14);
  ASSERT_THAT(tiny, IsOk());
  region_ = std::move(*tiny);
  PrepareMixed();
  // A failed allocation, so the counters Reset must keep are not zero.
  ASSERT_THAT(
      RunOp(allocator(), ExhaustingBatch(allocator(), GetParam())).status,
      StatusIs(absl::StatusCode::kResourceExhausted));
  const std::vector<std::byte> all_before = region_->SnapshotAll();
  const std::vector<std::byte> before = region_->Snapshot();
  allocator().Reset();
  ASSERT_THAT(allocator().CheckInvariants(), IsOk());
  const std::vector<std::byte> clean = region_->Snapshot();
  ASSERT_NE(DescribeDifference(before, clean), "") << "Reset changed nothing";

  // Count Reset's crash points: a transaction is opened only so that the
  // Touch before each of Reset's stores is a crash point (Reset itself is
  // never logged by the daemon). It is never committed or aborted.
  ASSERT_THAT(region_->RestoreAll(all_before), IsOk());
  box()[0] = 0;
  ASSERT_EQ(RunInChild([&] {
              UndoLog::SetCrashPoint(kNeverCrash, kCrashExit);
              region_->log().Begin();
              allocator().Reset();
              box()[0] = UndoLog::CrashPointsPassed();
            }),
            0);
  const uint64_t points = box()[0];
  EXPECT_EQ(DescribeDifference(clean, region_->Snapshot()), "")
      << "Reset under an open log wrote different bytes";
  const std::vector<uint64_t> missing =
      UnloggedWords(before, region_->Snapshot(), region_->LoggedOffsets());
  ASSERT_TRUE(missing.empty())
      << name() << " Reset stores without a Touch first (so no crash point "
      << "stops it there), at metadata offsets " << Words(missing);
  ASSERT_GT(points, 0u);

  for (uint64_t k = 1; k <= points && !HasFailure(); ++k) {
    SCOPED_TRACE(absl::StrCat("crash point ", k, " of ", points));
    ASSERT_THAT(region_->RestoreAll(all_before), IsOk());
    ASSERT_EQ(RunInChild([&] {
                UndoLog::SetCrashPoint(k, kCrashExit);
                region_->log().Begin();
                allocator().Reset();
              }),
              kCrashExit);
    // Interrupt the re-run too, at a random point (a crash during the
    // restart), on a freshly formatted log (the first child's entries are
    // left in it: they are not part of the allocator's state).
    const uint64_t k2 =
        std::uniform_int_distribution<uint64_t>(1, points)(rng_);
    const int code = RunInChild([&] {
      absl::StatusOr<UndoLog> log =
          UndoLog::Format(region_->base(), region_->log_area());
      if (!log.ok()) _exit(kBadChild);
      allocator().set_undo_log(&*log);
      UndoLog::SetCrashPoint(k2, kCrashExit);
      log->Begin();
      allocator().Reset();
    });
    ASSERT_TRUE(code == kCrashExit || code == 0) << "exit " << code;
    // The restart: Reset again, unlogged, on the same view (a half-reset
    // state need not pass Attach's invariant check).
    allocator().Reset();
    EXPECT_EQ(DescribeDifference(clean, region_->Snapshot()), "")
        << "Reset cut short at crash point " << k << " (and the re-run at "
        << k2 << ") then run again differs from one Reset";
    EXPECT_THAT(allocator().CheckInvariants(), IsOk());
  }
  std::cout << name() << " reset: " << points << " crash points\n";
}

INSTANTIATE_TEST_SUITE_P(Logged, TxTest,
                         ::testing::Values(Strategy::kPool, Strategy::kBuddy,
                                           Strategy::kSlab,
                                           Strategy::kFreeList),
                         StrategyParamName);

}  // namespace
}  // namespace shmalloc::testing
