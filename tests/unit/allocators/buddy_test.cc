#include "allocators/buddy.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;
using ::testing::Eq;
using ::testing::HasSubstr;

constexpr uint64_t kBegin = 4096;

AllocatorOptions Options(uint64_t bytes, uint64_t min_block = 0) {
  AllocatorOptions o;
  o.strategy = Strategy::kBuddy;
  o.begin = kBegin;
  o.end = kBegin + bytes;
  o.min_block = min_block;
  return o;
}

// A buddy together with the metadata it lives in.
struct Fixture {
  explicit Fixture(const AllocatorOptions& options) {
    absl::StatusOr<uint64_t> bytes = Buddy::MetadataBytes(options);
    EXPECT_THAT(bytes, IsOk());
    meta.resize(*bytes);
    absl::StatusOr<std::unique_ptr<Buddy>> b = Buddy::Create(meta, options);
    EXPECT_THAT(b, IsOk());
    buddy = *std::move(b);
  }
  std::vector<std::byte> meta;
  std::unique_ptr<Buddy> buddy;
};

// Every field, through the shared suites' comparison.
void ExpectSameStats(const AllocatorStats& a, const AllocatorStats& b) {
  EXPECT_TRUE(testing::SameStats(a, b))
      << "before: " << testing::DescribeStats(a)
      << "\nafter:  " << testing::DescribeStats(b);
}

TEST(BuddyTest, MetadataSpanTooSmallIsInvalidArgumentNamingBothSizes) {
  const AllocatorOptions options = Options(1 << 20);
  const uint64_t need = *Buddy::MetadataBytes(options);
  std::vector<std::byte> meta(need - 1);
  absl::StatusOr<std::unique_ptr<Buddy>> b = Buddy::Create(meta, options);
  EXPECT_THAT(b, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(b.status().message(), HasSubstr(std::to_string(need - 1)));
  EXPECT_THAT(b.status().message(), HasSubstr(std::to_string(need)));
}

TEST(BuddyTest, BadOptionsAreInvalidArgument) {
  EXPECT_THAT(Buddy::MetadataBytes(Options(1 << 20, 48)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Buddy::MetadataBytes(Options(1 << 20, 8)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Buddy::MetadataBytes(Options(32, 64)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  AllocatorOptions unaligned = Options(1 << 20);
  unaligned.begin = 100;
  EXPECT_THAT(Buddy::MetadataBytes(unaligned),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BuddyTest, AllocateRoundsUpToAPowerOfTwoBlock) {
  Fixture f(Options(1 << 20));
  EXPECT_THAT(f.buddy->Allocate(1, 1), IsOkAndHolds(Eq(Extent{kBegin, 64})));
  absl::StatusOr<Extent> e = f.buddy->Allocate(65, 1);
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->size_bytes, 128u);
  EXPECT_THAT(f.buddy->SizeOf(e->offset), IsOkAndHolds(Eq(128u)));
  const AllocatorStats s = f.buddy->Stats();
  EXPECT_EQ(s.used_bytes, 192u);
  EXPECT_EQ(s.requested_bytes, 66u);
  EXPECT_EQ(s.live_allocations, 2u);
  EXPECT_GT(s.internal_fragmentation, 0.6);
  EXPECT_THAT(f.buddy->CheckInvariants(), IsOk());
}

TEST(BuddyTest, ExhaustionIsResourceExhaustedAndCounted) {
  Fixture f(Options(64 * 1024, 64));
  for (int i = 0; i < 1024; ++i) ASSERT_THAT(f.buddy->Allocate(64, 0), IsOk());
  const AllocatorStats before = f.buddy->Stats();
  EXPECT_EQ(before.free_bytes, 0u);
  EXPECT_EQ(before.largest_free_bytes, 0u);
  EXPECT_THAT(f.buddy->Allocate(1, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  AllocatorStats after = f.buddy->Stats();
  EXPECT_EQ(after.failed_allocations, before.failed_allocations + 1);
  after.failed_allocations = before.failed_allocations;
  ExpectSameStats(before, after);
  EXPECT_THAT(f.buddy->CheckInvariants(), IsOk());
}

TEST(BuddyTest, EveryAlignmentUpToTheBeginsIsHonoured) {
  // begin 4096: blocks are aligned to their size relative to begin, so
  // absolutely up to 4 KiB; more is INVALID_ARGUMENT, nothing changed.
  Fixture f(Options(1 << 22, 16));
  for (uint64_t a = 1; a <= kHeapBeginGranule; a *= 2) {
    for (uint64_t size : {1, 17, 100, 4097}) {
      absl::StatusOr<Extent> e = f.buddy->Allocate(size, a);
      ASSERT_THAT(e, IsOk());
      EXPECT_EQ(e->offset % a, 0u) << "alignment " << a << " size " << size;
      EXPECT_GE(e->size_bytes, std::max(size, a));
      ASSERT_THAT(f.buddy->CheckInvariants(), IsOk());
    }
  }
  EXPECT_THAT(f.buddy->Allocate(8, 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  const AllocatorStats before = f.buddy->Stats();
  for (uint64_t a = 2 * kHeapBeginGranule; a <= 2 * kMaxAlignment; a *= 2) {
    EXPECT_THAT(f.buddy->Allocate(8, a),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << a;
  }
  ExpectSameStats(before, f.buddy->Stats());
}

TEST(BuddyTest, EveryAlignmentUpTo2MiBIsHonouredFromAnAlignedBegin) {
  AllocatorOptions options = Options(16 << 20, 64);
  options.begin = kMaxAlignment;
  options.end = options.begin + (16 << 20);
  Fixture f(options);
  for (uint64_t a = 1; a <= kMaxAlignment; a *= 2) {
    for (uint64_t size : {1, 100, 4097}) {
      absl::StatusOr<Extent> e = f.buddy->Allocate(size, a);
      ASSERT_THAT(e, IsOk());
      EXPECT_EQ(e->offset % a, 0u) << "alignment " << a << " size " << size;
      ASSERT_THAT(f.buddy->Free(e->offset), IsOk());
    }
  }
  ASSERT_THAT(f.buddy->CheckInvariants(), IsOk());
  EXPECT_THAT(f.buddy->Allocate(8, 2 * kMaxAlignment),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BuddyTest, EveryKindOfBadFreeChangesNothing) {
  Fixture f(Options(64 * 1024 + 100, 64));
  const Extent big = *f.buddy->Allocate(256, 0);
  const Extent small = *f.buddy->Allocate(64, 0);
  const Extent freed = *f.buddy->Allocate(64, 0);
  ASSERT_THAT(f.buddy->Free(freed.offset), IsOk());
  const AllocatorStats before = f.buddy->Stats();
  const std::vector<std::pair<uint64_t, absl::StatusCode>> bad = {
      {0, absl::StatusCode::kInvalidArgument},
      {kBegin - 64, absl::StatusCode::kInvalidArgument},
      {f.buddy->end(), absl::StatusCode::kInvalidArgument},
      {big.offset + 64, absl::StatusCode::kFailedPrecondition},   // interior
      {big.offset + 128, absl::StatusCode::kFailedPrecondition},  // interior
      {small.offset + 8, absl::StatusCode::kFailedPrecondition},  // misaligned
      {freed.offset, absl::StatusCode::kFailedPrecondition},      // double
      {kBegin + 32 * 1024, absl::StatusCode::kFailedPrecondition},  // never
      {kBegin + 1025 * 64, absl::StatusCode::kFailedPrecondition},  // tail
  };
  for (const auto& [offset, code] : bad) {
    EXPECT_THAT(f.buddy->Free(offset), StatusIs(code)) << offset;
    EXPECT_THAT(f.buddy->SizeOf(offset), StatusIs(code)) << offset;
    ExpectSameStats(before, f.buddy->Stats());
    ASSERT_THAT(f.buddy->CheckInvariants(), IsOk());
  }
}

TEST(BuddyTest, FreeMergesBuddiesBackIntoOneBlock) {
  Fixture f(Options(1 << 20, 64));
  std::mt19937_64 rng(42);
  std::vector<uint64_t> live;
  for (int i = 0; i < 300; ++i) {
    absl::StatusOr<Extent> e = f.buddy->Allocate(1 + rng() % 3000, 0);
    if (e.ok()) live.push_back(e->offset);
  }
  EXPECT_LT(f.buddy->Stats().largest_free_bytes, uint64_t{1} << 20);
  std::shuffle(live.begin(), live.end(), rng);
  for (uint64_t offset : live) {
    ASSERT_THAT(f.buddy->Free(offset), IsOk());
    ASSERT_THAT(f.buddy->CheckInvariants(), IsOk());
  }
  const AllocatorStats s = f.buddy->Stats();
  EXPECT_EQ(s.largest_free_bytes, s.capacity_bytes);
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.fragmentation, 0.0);
  EXPECT_THAT(f.buddy->Allocate(1 << 20, 0),
              IsOkAndHolds(Eq(Extent{kBegin, 1 << 20})));
}

TEST(BuddyTest, NonPowerOfTwoRangeIsCoveredByMaximalAlignedBlocks) {
  Fixture f(Options(7 * 4096 + 50, 64));  // 16 KiB + 8 KiB + 4 KiB + tail
  EXPECT_EQ(f.buddy->Stats().largest_free_bytes, 16384u);
  EXPECT_THAT(f.buddy->Allocate(32768, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(f.buddy->Allocate(16384, 0),
              IsOkAndHolds(Eq(Extent{kBegin, 16384})));
  EXPECT_THAT(f.buddy->Allocate(8192, 0),
              IsOkAndHolds(Eq(Extent{kBegin + 16384, 8192})));
  EXPECT_THAT(f.buddy->Allocate(4096, 4096),
              IsOkAndHolds(Eq(Extent{kBegin + 24576, 4096})));
  EXPECT_THAT(f.buddy->Allocate(1, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(f.buddy->Stats().free_bytes, 50u);  // the unusable tail
  EXPECT_THAT(f.buddy->CheckInvariants(), IsOk());
}

TEST(BuddyTest, SmallestAndLargestSizes) {
  Fixture f(Options(1 << 16, 16));
  EXPECT_THAT(f.buddy->Allocate(0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(f.buddy->Allocate((1 << 16) + 1, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(f.buddy->Allocate(~uint64_t{0}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(f.buddy->Allocate(1, 1), IsOkAndHolds(Eq(Extent{kBegin, 16})));
  f.buddy->Reset();
  EXPECT_THAT(f.buddy->Allocate(1 << 16, 0),
              IsOkAndHolds(Eq(Extent{kBegin, 1 << 16})));
  EXPECT_THAT(f.buddy->CheckInvariants(), IsOk());
}

TEST(BuddyTest, SingleBlockRangeWorks) {
  Fixture f(Options(64, 64));
  const Extent e = *f.buddy->Allocate(64, 0);
  EXPECT_EQ(e, (Extent{kBegin, 64}));
  EXPECT_THAT(f.buddy->Allocate(1, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(f.buddy->Free(e.offset), IsOk());
  EXPECT_THAT(f.buddy->CheckInvariants(), IsOk());
}

TEST(BuddyTest, AttachOnGarbageIsDataLoss) {
  std::vector<std::byte> zeros(4096);
  EXPECT_THAT(Buddy::Attach(zeros), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<std::byte> noise(4096);
  std::mt19937 rng(7);
  for (std::byte& b : noise) b = static_cast<std::byte>(rng());
  EXPECT_THAT(Buddy::Attach(noise), StatusIs(absl::StatusCode::kDataLoss));
  // A valid header over corrupted nodes is caught by CheckInvariants.
  Fixture f(Options(1 << 16));
  ASSERT_THAT(f.buddy->Allocate(100, 0), IsOk());
  std::vector<std::byte> corrupt = f.meta;
  corrupt[sizeof(MetaHeader) + sizeof(BuddyState) + 1] = std::byte{0x7f};
  EXPECT_THAT(Buddy::Attach(corrupt), StatusIs(absl::StatusCode::kDataLoss));
  // Truncated: smaller than the header records.
  std::vector<std::byte> truncated(f.meta.begin(), f.meta.end() - 8);
  EXPECT_THAT(Buddy::Attach(truncated), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(BuddyTest, MemcpyOfMetadataAttachesAndContinues) {
  Fixture f(Options(1 << 20, 64));
  std::vector<Extent> live;
  for (uint64_t size : {10, 100, 1000, 10000, 100000}) {
    live.push_back(*f.buddy->Allocate(size, 0));
  }
  ASSERT_THAT(f.buddy->Free(live[1].offset), IsOk());
  std::vector<std::byte> copy(f.meta.size());
  std::memcpy(copy.data(), f.meta.data(), f.meta.size());
  const AllocatorStats before = f.buddy->Stats();
  f.buddy.reset();
  std::fill(f.meta.begin(), f.meta.end(), std::byte{0xee});
  absl::StatusOr<std::unique_ptr<Buddy>> b = Buddy::Attach(copy);
  ASSERT_THAT(b, IsOk());
  ExpectSameStats(before, (*b)->Stats());
  EXPECT_THAT((*b)->SizeOf(live[3].offset), IsOkAndHolds(Eq(16384u)));
  EXPECT_THAT((*b)->Free(live[1].offset),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT((*b)->Free(live[3].offset), IsOk());
  EXPECT_THAT((*b)->Allocate(5000, 0), IsOk());
  EXPECT_THAT((*b)->CheckInvariants(), IsOk());
}

TEST(BuddyTest, MisalignedMetadataIsInvalidArgument) {
  const AllocatorOptions options = Options(1 << 16);
  std::vector<std::byte> meta(*Buddy::MetadataBytes(options) + 8);
  EXPECT_THAT(Buddy::Create(std::span(meta).subspan(1), options),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BuddyTest, ResetFreesEverythingButKeepsPeakAndFailures) {
  Fixture f(Options(4096, 64));
  ASSERT_THAT(f.buddy->Allocate(4096, 0), IsOk());
  EXPECT_THAT(f.buddy->Allocate(64, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  f.buddy->Reset();
  const AllocatorStats s = f.buddy->Stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.largest_free_bytes, 4096u);
  EXPECT_EQ(s.peak_used_bytes, 4096u);
  EXPECT_EQ(s.failed_allocations, 1u);
  EXPECT_THAT(f.buddy->CheckInvariants(), IsOk());
  EXPECT_THAT(f.buddy->Allocate(4096, 0), IsOk());
}

TEST(BuddyTest, RandomOperationsNeverOverlapAndKeepInvariants) {
  Fixture f(Options(3 * 65536 + 4096, 32));
  std::mt19937_64 rng(1234);
  std::map<uint64_t, uint64_t> live;  // offset -> size
  uint64_t requested = 0;
  std::map<uint64_t, uint64_t> asked;
  for (int i = 0; i < 3000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t size = 1 + rng() % (rng() % 4 == 0 ? 20000 : 300);
      const uint64_t align = uint64_t{1} << (rng() % 13);
      absl::StatusOr<Extent> e = f.buddy->Allocate(size, align);
      if (!e.ok()) {
        ASSERT_THAT(e, StatusIs(absl::StatusCode::kResourceExhausted));
        continue;
      }
      ASSERT_EQ(e->offset % align, 0u);
      auto next = live.lower_bound(e->offset);
      if (next != live.end()) {
        ASSERT_LE(e->offset + e->size_bytes, next->first);
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + prev->second, e->offset);
      }
      live[e->offset] = e->size_bytes;
      asked[e->offset] = size;
      requested += size;
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      ASSERT_THAT(f.buddy->Free(it->first), IsOk());
      requested -= asked[it->first];
      live.erase(it);
    }
    ASSERT_THAT(f.buddy->CheckInvariants(), IsOk());
    ASSERT_EQ(f.buddy->Stats().live_allocations, live.size());
    ASSERT_EQ(f.buddy->Stats().requested_bytes, requested);
  }
}

}  // namespace
}  // namespace shmalloc
