// The undo-log bounds Slab and FreeList promise: one Allocate or one Free
// logs at most kMaxLoggedWordsPerOp distinct words (so the daemon can size a
// region's log as max_batch * that + slack), every word it changes is logged,
// and Abort restores the metadata byte for byte. Randomized (the seed is
// printed; SHMALLOC_SEED overrides it), with operations chosen to reach the
// worst cases: FreeList splits with an alignment gap and a rest, merges on
// both sides, and fills and drains its hash table (where the former rehash
// rewrote the whole table in one operation); Slab takes and gives back slabs.
// The fork-based crash-point tests over every strategy are in tx_test.cc.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "allocators/allocator.h"
#include "allocators/free_list.h"
#include "allocators/slab.h"
#include "allocators/undo_log.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"

namespace shmalloc::testing {
namespace {

uint64_t Seed() {
  if (const char* env = std::getenv("SHMALLOC_SEED"); env != nullptr) {
    return std::strtoull(env, nullptr, 0);
  }
  return std::random_device{}() | (uint64_t{std::random_device{}()} << 32);
}

// A strategy whose metadata is logged in an undo log kept in its own buffer.
class Logged {
 public:
  explicit Logged(const AllocatorOptions& options, uint64_t log_entries)
      : s_(MakeStrategy(options)), area_(UndoLogBytes(log_entries) / 8) {
    absl::StatusOr<UndoLog> log = UndoLog::Format(
        s_.meta, std::as_writable_bytes(std::span<uint64_t>(area_)));
    EXPECT_THAT(log, IsOk());
    log_.emplace(std::move(*log));
    s_.allocator->set_undo_log(&*log_);
  }

  OffsetAllocator& a() { return *s_.allocator; }

  // Runs `op` in a transaction and checks what it logged: every changed word
  // is logged, no more than `bound` words, and Abort restores every byte;
  // then runs it again and commits. Returns the words logged.
  template <typename Op>
  uint64_t Check(uint64_t bound, Op&& op, const std::string& what) {
    const std::vector<std::byte> before = s_.meta;
    log_->Begin();
    op();
    const uint64_t logged = log_->length();
    EXPECT_LE(logged, bound) << what;
    const std::vector<uint64_t> offsets = LoggedOffsets();
    for (uint64_t w = 0; w + 8 <= before.size(); w += 8) {
      if (std::memcmp(before.data() + w, s_.meta.data() + w, 8) != 0) {
        EXPECT_TRUE(std::find(offsets.begin(), offsets.end(), w) !=
                    offsets.end())
            << what << ": word " << w << " changed but was not logged";
      }
    }
    log_->Abort();
    EXPECT_TRUE(before == s_.meta) << what << ": Abort did not restore";
    log_->Begin();
    op();
    log_->Commit();
    return logged;
  }

 private:
  std::vector<uint64_t> LoggedOffsets() const {
    const auto* entries = reinterpret_cast<const UndoLogEntry*>(
        reinterpret_cast<const std::byte*>(area_.data()) + kUndoLogHeaderBytes);
    std::vector<uint64_t> out;
    for (uint64_t i = 0; i < log_->length(); ++i) {
      out.push_back(entries[i].offset);
    }
    return out;
  }

  StrategyUnderTest s_;
  std::vector<uint64_t> area_;  // the log area, 8-byte aligned
  std::optional<UndoLog> log_;
};

struct Maxima {
  uint64_t alloc = 0;
  uint64_t free = 0;
};

// Random Allocate/Free, each checked by Logged::Check. Sizes up to
// `max_size`, alignments up to `max_align`; `free_share` percent of steps
// free a random live extent.
Maxima RandomOps(Logged& l, uint64_t bound, uint64_t max_size,
                 uint64_t max_align, int free_share, int steps,
                 std::mt19937_64& rng) {
  Maxima m;
  std::vector<uint64_t> live;
  for (int step = 0; step < steps && !::testing::Test::HasFailure(); ++step) {
    const bool do_free = !live.empty() && std::uniform_int_distribution<int>(
                                              0, 99)(rng) < free_share;
    if (do_free) {
      const size_t i =
          std::uniform_int_distribution<size_t>(0, live.size() - 1)(rng);
      const uint64_t off = live[i];
      live[i] = live.back();
      live.pop_back();
      m.free = std::max(
          m.free, l.Check(
                      bound, [&] { EXPECT_THAT(l.a().Free(off), IsOk()); },
                      absl::StrCat("step ", step, " free ", off)));
    } else {
      const uint64_t size =
          std::uniform_int_distribution<uint64_t>(1, max_size)(rng);
      const uint64_t align = uint64_t{1} << std::uniform_int_distribution<int>(
                                 0, std::countr_zero(max_align))(rng);
      absl::StatusOr<Extent> e;
      m.alloc = std::max(
          m.alloc,
          l.Check(
              bound, [&] { e = l.a().Allocate(size, align); },
              absl::StrCat("step ", step, " alloc ", size, " align ", align)));
      if (e.ok()) live.push_back(e->offset);
      EXPECT_THAT(l.a().CheckInvariants(), IsOk());
    }
  }
  EXPECT_THAT(l.a().CheckInvariants(), IsOk());
  return m;
}

class TxBoundTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = Seed();
    std::cout << "seed " << seed_ << " (SHMALLOC_SEED=" << seed_
              << " reproduces)\n";
    rng_.seed(seed_);
  }
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(TxBoundTest, SlabOpsLogAtMostTheBound) {
  AllocatorOptions o = TestOptions(Strategy::kSlab, 16 * kSlabBytes);
  o.size_classes = {16, 48, 256, 4096, 32768};  // 32768: 2 objects a slab
  Logged l(o, 1024);
  const Maxima m =
      RandomOps(l, Slab::kMaxLoggedWordsPerOp, 32768, 64, 45, 3000, rng_);
  std::cout << "slab: most words logged by one Allocate " << m.alloc
            << ", one Free " << m.free << " (bound "
            << Slab::kMaxLoggedWordsPerOp << ")\n";
  // The worst cases are common here: a fresh slab from the middle of the
  // free list, and a slab given back.
  EXPECT_EQ(std::max(m.alloc, m.free), Slab::kMaxLoggedWordsPerOp);
}

TEST_F(TxBoundTest, FreeListOpsLogAtMostTheBound) {
  AllocatorOptions o = TestOptions(Strategy::kFreeList, 1 << 20);
  o.max_extents = 2048;
  Logged l(o, 1024);
  const Maxima m =
      RandomOps(l, FreeList::kMaxLoggedWordsPerOp, 4096, 4096, 45, 4000, rng_);
  std::cout << "free_list: most words logged by one Allocate " << m.alloc
            << ", one Free " << m.free << " (bound "
            << FreeList::kMaxLoggedWordsPerOp << ")\n";
  EXPECT_GT(m.alloc, 25u) << "no split with both a gap and a rest";
  EXPECT_GT(m.free, 20u) << "no merge on both sides";
}

// Filling the table to max_extents live extents and draining it again: every
// operation stays within the bound (the former resizing rehash rewrote the
// whole table inside one Allocate or Free).
TEST_F(TxBoundTest, FreeListFillAndDrainStaysBounded) {
  AllocatorOptions o = TestOptions(Strategy::kFreeList, 1 << 20);
  o.max_extents = 1024;
  Logged l(o, 1024);
  std::vector<uint64_t> live;
  for (;;) {
    absl::StatusOr<Extent> e;
    l.Check(
        FreeList::kMaxLoggedWordsPerOp, [&] { e = l.a().Allocate(16, 0); },
        "fill");
    if (!e.ok()) break;
    live.push_back(e->offset);
  }
  EXPECT_EQ(live.size(), o.max_extents - 1);  // one extent stays free
  std::shuffle(live.begin(), live.end(), rng_);
  for (uint64_t off : live) {
    l.Check(
        FreeList::kMaxLoggedWordsPerOp,
        [&] { EXPECT_THAT(l.a().Free(off), IsOk()); }, "drain");
    if (HasFailure()) break;
  }
  EXPECT_THAT(l.a().CheckInvariants(), IsOk());
  EXPECT_EQ(l.a().Stats().live_allocations, 0u);
}

}  // namespace
}  // namespace shmalloc::testing
