// The randomized differential harness shared by all strategies: a reference
// model of live extents is kept beside the strategy; after every operation no
// two live extents overlap, all lie in range and are aligned, and the
// strategy's stats agree with the model. Bad frees are mixed in and must be
// refused with the state unchanged.
//
// Seed and length: SHMALLOC_SEED (default: time-based, always printed) and
// SHMALLOC_OPS (default 100000 per strategy). Rerun a failure with the seed
// it printed.
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "allocators/allocator.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::DescribeStats;
using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::SameStats;
using ::shmalloc::testing::StatusIs;

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::strtoull(value, nullptr, 10) : fallback;
}

struct Live {
  uint64_t reserved;
  uint64_t requested;
};

class DifferentialTest : public ::testing::TestWithParam<Strategy> {
 protected:
  void SetUp() override {
    seed_ = EnvOr("SHMALLOC_SEED", std::random_device{}());
    ops_ = EnvOr("SHMALLOC_OPS", 100000);
    std::cout << "differential " << StrategyName(GetParam())
              << ": SHMALLOC_SEED=" << seed_ << " SHMALLOC_OPS=" << ops_
              << std::endl;
    RecordProperty("seed", std::to_string(seed_));
    options_ = testing::TestOptions(GetParam(), 4 << 20);
    s_ = testing::MakeStrategy(options_);
    ASSERT_NE(s_.allocator, nullptr);
    rng_.seed(seed_);
  }

  OffsetAllocator& a() { return *s_.allocator; }
  bool is_arena() const { return GetParam() == Strategy::kArena; }

  uint64_t RandomSize() {
    const uint64_t max = testing::MaxTestSize(options_);
    // Log-uniform: many small requests, some large ones, as real heaps see.
    std::uniform_real_distribution<double> exponent(0, std::log2(max));
    return std::max<uint64_t>(1,
                              static_cast<uint64_t>(std::exp2(exponent(rng_))));
  }

  uint64_t RandomAlignment() {
    // Mostly the default; sometimes anything up to a page; rarely anything
    // up to kMaxAlignment (2 MiB: one such offset fits this 4 MiB heap).
    if (rng_() % 8 != 0) return 0;
    if (rng_() % 8 != 0) return uint64_t{1} << (rng_() % 13);
    return uint64_t{1} << (rng_() % (std::countr_zero(kMaxAlignment) + 1));
  }

  // Checks a fresh extent against the model, then adds it.
  void Admit(const Extent& extent, uint64_t size, uint64_t alignment) {
    const uint64_t align = alignment == 0 ? kDefaultAlignment : alignment;
    ASSERT_GE(extent.offset, options_.begin);
    ASSERT_LE(extent.offset + extent.size_bytes, options_.end);
    ASSERT_EQ(extent.offset % align, 0u) << "alignment " << align;
    ASSERT_GE(extent.size_bytes, size);
    auto next = live_.lower_bound(extent.offset);
    if (next != live_.end()) {
      ASSERT_LE(extent.offset + extent.size_bytes, next->first)
          << "overlaps the extent at " << next->first;
    }
    if (next != live_.begin()) {
      auto prev = std::prev(next);
      ASSERT_LE(prev->first + prev->second.reserved, extent.offset)
          << "overlaps the extent at " << prev->first;
    }
    live_[extent.offset] = {extent.size_bytes, size};
    reserved_ += extent.size_bytes;
    requested_ += size;
  }

  void CheckStatsAgainstModel() {
    const AllocatorStats stats = a().Stats();
    ASSERT_EQ(stats.capacity_bytes, options_.end - options_.begin);
    ASSERT_EQ(stats.used_bytes + stats.free_bytes, stats.capacity_bytes);
    ASSERT_LE(stats.largest_free_bytes, stats.free_bytes);
    ASSERT_GE(stats.peak_used_bytes, stats.used_bytes);
    ASSERT_GE(stats.fragmentation, 0.0);
    ASSERT_LE(stats.fragmentation, 1.0);
    if (is_arena()) {
      // An arena's cursor also covers alignment padding between extents.
      ASSERT_GE(stats.used_bytes, reserved_);
      return;
    }
    ASSERT_EQ(stats.live_allocations, live_.size()) << DescribeStats(stats);
    ASSERT_EQ(stats.used_bytes, reserved_) << DescribeStats(stats);
    ASSERT_EQ(stats.requested_bytes, requested_) << DescribeStats(stats);
  }

  void DoAllocate() {
    const uint64_t size = RandomSize();
    const uint64_t alignment = RandomAlignment();
    auto extent = a().Allocate(size, alignment);
    if (extent.ok()) {
      Admit(*extent, size, alignment);
      return;
    }
    // Refusals must be for a reason the contract allows.
    ASSERT_TRUE(absl::IsResourceExhausted(extent.status()) ||
                absl::IsInvalidArgument(extent.status()))
        << extent.status();
    // ARENA and FREE_LIST honour every alignment up to kMaxAlignment.
    if (GetParam() == Strategy::kArena || GetParam() == Strategy::kFreeList) {
      ASSERT_FALSE(absl::IsInvalidArgument(extent.status()))
          << extent.status() << " alignment " << alignment;
    }
    if (is_arena() && absl::IsResourceExhausted(extent.status())) DoReset();
  }

  void DoFree() {
    if (live_.empty() || is_arena()) return;
    auto it = live_.begin();
    std::advance(it, static_cast<std::ptrdiff_t>(rng_() % live_.size()));
    ASSERT_THAT(a().Free(it->first), IsOk());
    reserved_ -= it->second.reserved;
    requested_ -= it->second.requested;
    live_.erase(it);
  }

  // A free the contract must refuse: double, interior or never allocated.
  void DoBadFree() {
    uint64_t offset;
    if (!live_.empty() && rng_() % 2 == 0) {
      auto it = live_.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(rng_() % live_.size()));
      if (it->second.reserved < 2) return;
      offset = it->first + 1 + rng_() % (it->second.reserved - 1);
    } else {
      offset = options_.begin + rng_() % (options_.end - options_.begin);
      if (live_.contains(offset)) return;
    }
    const AllocatorStats before = a().Stats();
    absl::Status status = a().Free(offset);
    ASSERT_THAT(status, StatusIs(absl::StatusCode::kFailedPrecondition))
        << "offset " << offset;
    ASSERT_TRUE(SameStats(before, a().Stats()));
  }

  // largest_free_bytes must be a promise: an allocation of that size works.
  void CheckLargestFreeIsAllocatable() {
    const AllocatorStats stats = a().Stats();
    if (stats.largest_free_bytes == 0 || is_arena()) return;
    auto extent = a().Allocate(stats.largest_free_bytes, 1);
    ASSERT_THAT(extent, IsOk()) << DescribeStats(stats);
    ASSERT_THAT(a().Free(extent->offset), IsOk());
  }

  void DoReset() {
    a().Reset();
    live_.clear();
    reserved_ = requested_ = 0;
  }

  void Run() {
    for (uint64_t op = 0; op < ops_; ++op) {
      const uint32_t dice = rng_() % 100;
      // Drift between filling up and draining so exhaustion is reached too.
      const bool filling = (op / 20000) % 2 == 0;
      if (dice < (filling ? 60u : 40u)) {
        DoAllocate();
      } else if (dice < 97) {
        DoFree();
      } else if (dice < 99) {
        DoBadFree();
      } else if (rng_() % 50 == 0) {
        DoReset();
      }
      if (HasFatalFailure()) {
        ADD_FAILURE() << "at op " << op << " (SHMALLOC_SEED=" << seed_ << ")";
        return;
      }
      CheckStatsAgainstModel();
      if (op % 97 == 0) {
        // CheckInvariants walks all metadata: every 97th op keeps 100k ops
        // fast under sanitizers while still catching corruption close to
        // where it happens.
        ASSERT_THAT(a().CheckInvariants(), IsOk())
            << "at op " << op << " (SHMALLOC_SEED=" << seed_ << ")";
        CheckLargestFreeIsAllocatable();
      }
      if (HasFatalFailure()) {
        ADD_FAILURE() << "at op " << op << " (SHMALLOC_SEED=" << seed_ << ")";
        return;
      }
    }
    ASSERT_THAT(a().CheckInvariants(), IsOk());
    while (!live_.empty() && !is_arena()) DoFree();
    if (!is_arena()) EXPECT_EQ(a().Stats().used_bytes, 0u);
    // The strategies that merge free space must end with one free extent
    // (pools and slabs hand out fixed sizes, so theirs is one object).
    if (GetParam() == Strategy::kBuddy || GetParam() == Strategy::kFreeList) {
      const AllocatorStats stats = a().Stats();
      EXPECT_EQ(stats.largest_free_bytes, stats.capacity_bytes)
          << "free space did not coalesce back into one extent";
    }
  }

  uint64_t seed_ = 0;
  uint64_t ops_ = 0;
  AllocatorOptions options_;
  testing::StrategyUnderTest s_;
  std::mt19937_64 rng_;
  std::map<uint64_t, Live> live_;
  uint64_t reserved_ = 0;
  uint64_t requested_ = 0;
};

TEST_P(DifferentialTest, RandomOperationsAgreeWithTheModel) { Run(); }

INSTANTIATE_TEST_SUITE_P(AllStrategies, DifferentialTest,
                         ::testing::ValuesIn(testing::kAllStrategies),
                         testing::StrategyParamName);

}  // namespace
}  // namespace shmalloc
