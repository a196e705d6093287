#include "allocators/slab.h"

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

AllocatorOptions Options(uint64_t bytes, std::vector<uint64_t> classes = {}) {
  AllocatorOptions o;
  o.strategy = Strategy::kSlab;
  o.begin = kBegin;
  o.end = kBegin + bytes;
  o.size_classes = std::move(classes);
  return o;
}

// A slab allocator together with the metadata it lives in.
struct Fixture {
  explicit Fixture(const AllocatorOptions& options) {
    absl::StatusOr<uint64_t> bytes = Slab::MetadataBytes(options);
    EXPECT_THAT(bytes, IsOk());
    meta.resize(*bytes);
    absl::StatusOr<std::unique_ptr<Slab>> s = Slab::Create(meta, options);
    EXPECT_THAT(s, IsOk());
    slab = *std::move(s);
  }
  std::vector<std::byte> meta;
  std::unique_ptr<Slab> slab;
};

// Every field, through the shared suites' comparison.
void ExpectSameStats(const AllocatorStats& a, const AllocatorStats& b) {
  EXPECT_TRUE(testing::SameStats(a, b))
      << "before: " << testing::DescribeStats(a)
      << "\nafter:  " << testing::DescribeStats(b);
}

TEST(SlabTest, MetadataSpanTooSmallIsInvalidArgumentNamingBothSizes) {
  const AllocatorOptions options = Options(1 << 20);
  const uint64_t need = *Slab::MetadataBytes(options);
  std::vector<std::byte> meta(need - 1);
  absl::StatusOr<std::unique_ptr<Slab>> s = Slab::Create(meta, options);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(s.status().message(), HasSubstr(std::to_string(need - 1)));
  EXPECT_THAT(s.status().message(), HasSubstr(std::to_string(need)));
}

TEST(SlabTest, BadSizeClassesAreInvalidArgument) {
  for (const std::vector<uint64_t>& bad : std::vector<std::vector<uint64_t>>{
           {12}, {0}, {64, 32}, {32, 32}, {65536}, std::vector<uint64_t>(65)}) {
    EXPECT_THAT(Slab::MetadataBytes(Options(1 << 20, bad)),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(Slab::MetadataBytes(Options(kSlabBytes - 8)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SlabTest, AllocateUsesTheSmallestFittingClass) {
  Fixture f(Options(1 << 20));
  EXPECT_THAT(f.slab->Allocate(1, 1), IsOkAndHolds(Eq(Extent{kBegin, 16})));
  EXPECT_THAT(f.slab->Allocate(16, 1),
              IsOkAndHolds(Eq(Extent{kBegin + 16, 16})));
  absl::StatusOr<Extent> e = f.slab->Allocate(17, 1);
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->size_bytes, 32u);
  EXPECT_EQ(e->offset, kBegin + kSlabBytes);  // a second slab, for class 32
  EXPECT_THAT(f.slab->SizeOf(e->offset), IsOkAndHolds(Eq(32u)));
  const AllocatorStats s = f.slab->Stats();
  EXPECT_EQ(s.used_bytes, 64u);
  EXPECT_EQ(s.requested_bytes, 34u);
  EXPECT_EQ(s.live_allocations, 3u);
  EXPECT_EQ(s.largest_free_bytes, 16384u);
  const std::vector<SlabClassStats> classes = f.slab->ClassStats();
  ASSERT_EQ(classes.size(), 11u);
  EXPECT_EQ(classes[0].class_bytes, 16u);
  EXPECT_EQ(classes[0].objects_per_slab, 4096u);
  EXPECT_EQ(classes[0].slabs, 1u);
  EXPECT_EQ(classes[0].live_objects, 2u);
  EXPECT_EQ(classes[1].live_objects, 1u);
  EXPECT_THAT(f.slab->CheckInvariants(), IsOk());
}

TEST(SlabTest, ExhaustionIsResourceExhaustedAndCounted) {
  Fixture f(Options(2 * kSlabBytes, {64, 1024}));
  for (int i = 0; i < 1024; ++i) ASSERT_THAT(f.slab->Allocate(64, 0), IsOk());
  ASSERT_THAT(f.slab->Allocate(1000, 0), IsOk());  // takes the second slab
  AllocatorStats before = f.slab->Stats();
  EXPECT_EQ(before.largest_free_bytes, 1024u);
  EXPECT_THAT(f.slab->Allocate(64, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  AllocatorStats after = f.slab->Stats();
  EXPECT_EQ(after.failed_allocations, 1u);
  after.failed_allocations = before.failed_allocations;
  ExpectSameStats(before, after);
  for (int i = 0; i < 63; ++i) ASSERT_THAT(f.slab->Allocate(1024, 0), IsOk());
  EXPECT_EQ(f.slab->Stats().largest_free_bytes, 0u);
  EXPECT_EQ(f.slab->Stats().free_bytes, 0u);
  EXPECT_THAT(f.slab->CheckInvariants(), IsOk());
}

TEST(SlabTest, EveryAlignmentUpToTheBeginsIsHonoured) {
  // begin 4096: objects are 4 KiB-aligned at most; more is refused.
  Fixture f(Options(64 * kSlabBytes));
  for (uint64_t a = 1; a <= kHeapBeginGranule; a *= 2) {
    for (uint64_t size : {1, 24, 100, 4097}) {
      absl::StatusOr<Extent> e = f.slab->Allocate(size, a);
      ASSERT_THAT(e, IsOk());
      EXPECT_EQ(e->offset % a, 0u) << "alignment " << a << " size " << size;
      EXPECT_GE(e->size_bytes, std::max(size, a));
      ASSERT_THAT(f.slab->CheckInvariants(), IsOk());
    }
  }
  EXPECT_THAT(f.slab->Allocate(8, 3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  for (uint64_t a = 2 * kHeapBeginGranule; a <= 2 * kMaxAlignment; a *= 2) {
    EXPECT_THAT(f.slab->Allocate(8, a),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << a;
  }
}

TEST(SlabTest, AlignedBeginGivesTheClassesTheirNaturalAlignment) {
  // begin 2 MiB: the 16 KiB class is 16 KiB-aligned; nothing holds more.
  AllocatorOptions options = Options(64 * kSlabBytes);
  options.begin = kMaxAlignment;
  options.end = options.begin + 64 * kSlabBytes;
  Fixture f(options);
  for (uint64_t a = 1; a <= 16384; a *= 2) {
    absl::StatusOr<Extent> e = f.slab->Allocate(100, a);
    ASSERT_THAT(e, IsOk());
    EXPECT_EQ(e->offset % a, 0u) << "alignment " << a;
  }
  EXPECT_THAT(f.slab->Allocate(8, 32768),
              StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(f.slab->CheckInvariants(), IsOk());
}

TEST(SlabTest, AlignmentPicksANaturallyAlignedClassOrFails) {
  Fixture f(Options(8 * kSlabBytes, {24, 40, 48, 96}));
  absl::StatusOr<Extent> e = f.slab->Allocate(20, 16);  // 24, 40: only 8
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->size_bytes, 48u);
  EXPECT_THAT(f.slab->Allocate(20, 32),
              IsOkAndHolds(Eq(Extent{kBegin + kSlabBytes, 96})));
  EXPECT_THAT(f.slab->Allocate(20, 64),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(f.slab->CheckInvariants(), IsOk());
}

TEST(SlabTest, EveryKindOfBadFreeChangesNothing) {
  Fixture f(Options(4 * kSlabBytes + 100, {16, 48}));
  const Extent a = *f.slab->Allocate(40, 0);
  const Extent b = *f.slab->Allocate(40, 0);
  const Extent freed = *f.slab->Allocate(40, 0);
  ASSERT_THAT(f.slab->Free(freed.offset), IsOk());
  const AllocatorStats before = f.slab->Stats();
  const std::vector<std::pair<uint64_t, absl::StatusCode>> bad = {
      {0, absl::StatusCode::kInvalidArgument},
      {kBegin - 16, absl::StatusCode::kInvalidArgument},
      {f.slab->end(), absl::StatusCode::kInvalidArgument},
      {a.offset + 16, absl::StatusCode::kFailedPrecondition},  // interior
      {b.offset + 8, absl::StatusCode::kFailedPrecondition},   // misaligned
      {freed.offset, absl::StatusCode::kFailedPrecondition},   // double
      {a.offset + 48 * 10, absl::StatusCode::kFailedPrecondition},  // uncarved
      {a.offset + 48 * 1365, absl::StatusCode::kFailedPrecondition},  // slack
      {kBegin + kSlabBytes,
       absl::StatusCode::kFailedPrecondition},  // free slab
      {kBegin + 4 * kSlabBytes, absl::StatusCode::kFailedPrecondition},  // tail
  };
  for (const auto& [offset, code] : bad) {
    EXPECT_THAT(f.slab->Free(offset), StatusIs(code)) << offset;
    EXPECT_THAT(f.slab->SizeOf(offset), StatusIs(code)) << offset;
    ExpectSameStats(before, f.slab->Stats());
    ASSERT_THAT(f.slab->CheckInvariants(), IsOk());
  }
}

TEST(SlabTest, EmptySlabsReturnToTheFreePoolForOtherClasses) {
  Fixture f(Options(kSlabBytes, {16, 16384}));
  std::vector<uint64_t> small;
  for (int i = 0; i < 4096; ++i)
    small.push_back(f.slab->Allocate(16, 0)->offset);
  EXPECT_THAT(f.slab->Allocate(16384, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  std::mt19937_64 rng(3);
  std::shuffle(small.begin(), small.end(), rng);
  for (uint64_t offset : small) ASSERT_THAT(f.slab->Free(offset), IsOk());
  ASSERT_THAT(f.slab->CheckInvariants(), IsOk());
  const AllocatorStats s = f.slab->Stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.largest_free_bytes, 16384u);
  EXPECT_EQ(f.slab->ClassStats()[0].slabs, 0u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_THAT(f.slab->Allocate(16384, 0),
                IsOkAndHolds(Eq(Extent{kBegin + 16384u * i, 16384})));
  }
  EXPECT_THAT(f.slab->CheckInvariants(), IsOk());
}

TEST(SlabTest, SmallestAndLargestSizes) {
  Fixture f(Options(2 * kSlabBytes + 4096));
  EXPECT_THAT(f.slab->Allocate(0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  absl::StatusOr<Extent> big = f.slab->Allocate(16385, 0);
  EXPECT_THAT(big, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(big.status().message(), HasSubstr("BUDDY"));
  EXPECT_THAT(f.slab->Allocate(~uint64_t{0}, 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(f.slab->Allocate(1, 1), IsOkAndHolds(Eq(Extent{kBegin, 16})));
  EXPECT_THAT(f.slab->Allocate(16384, 0),
              IsOkAndHolds(Eq(Extent{kBegin + kSlabBytes, 16384})));
  EXPECT_THAT(f.slab->CheckInvariants(), IsOk());
}

TEST(SlabTest, AttachOnGarbageIsDataLoss) {
  std::vector<std::byte> zeros(4096);
  EXPECT_THAT(Slab::Attach(zeros), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<std::byte> noise(4096);
  std::mt19937 rng(7);
  for (std::byte& b : noise) b = static_cast<std::byte>(rng());
  EXPECT_THAT(Slab::Attach(noise), StatusIs(absl::StatusCode::kDataLoss));
  Fixture f(Options(4 * kSlabBytes));
  ASSERT_THAT(f.slab->Allocate(100, 0), IsOk());
  std::vector<std::byte> corrupt = f.meta;  // live_allocations += 1
  corrupt[sizeof(MetaHeader) + offsetof(SlabState, live_allocations)] =
      std::byte{2};
  EXPECT_THAT(Slab::Attach(corrupt), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<std::byte> classes = f.meta;  // class sizes no longer ascend
  classes[sizeof(MetaHeader) + sizeof(SlabState)] = std::byte{0xff};
  EXPECT_THAT(Slab::Attach(classes), StatusIs(absl::StatusCode::kDataLoss));
  std::vector<std::byte> truncated(f.meta.begin(), f.meta.end() - 8);
  EXPECT_THAT(Slab::Attach(truncated), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SlabTest, MemcpyOfMetadataAttachesAndContinues) {
  Fixture f(Options(16 * kSlabBytes));
  std::vector<Extent> live;
  for (uint64_t size : {10, 100, 1000, 10000, 100}) {
    live.push_back(*f.slab->Allocate(size, 0));
  }
  ASSERT_THAT(f.slab->Free(live[1].offset), IsOk());
  std::vector<std::byte> copy(f.meta.size());
  std::memcpy(copy.data(), f.meta.data(), f.meta.size());
  const AllocatorStats before = f.slab->Stats();
  f.slab.reset();
  std::fill(f.meta.begin(), f.meta.end(), std::byte{0xee});
  absl::StatusOr<std::unique_ptr<Slab>> s = Slab::Attach(copy);
  ASSERT_THAT(s, IsOk());
  ExpectSameStats(before, (*s)->Stats());
  EXPECT_THAT((*s)->SizeOf(live[3].offset), IsOkAndHolds(Eq(16384u)));
  EXPECT_THAT((*s)->Free(live[1].offset),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT((*s)->Free(live[3].offset), IsOk());
  EXPECT_THAT((*s)->Allocate(5000, 0), IsOk());
  EXPECT_THAT((*s)->CheckInvariants(), IsOk());
}

TEST(SlabTest, ResetFreesEverythingButKeepsPeakAndFailures) {
  Fixture f(Options(kSlabBytes, {32768}));
  ASSERT_THAT(f.slab->Allocate(32768, 0), IsOk());
  ASSERT_THAT(f.slab->Allocate(32768, 0), IsOk());
  EXPECT_THAT(f.slab->Allocate(8, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  f.slab->Reset();
  const AllocatorStats s = f.slab->Stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.requested_bytes, 0u);
  EXPECT_EQ(s.largest_free_bytes, 32768u);
  EXPECT_EQ(s.peak_used_bytes, 65536u);
  EXPECT_EQ(s.failed_allocations, 1u);
  EXPECT_THAT(f.slab->CheckInvariants(), IsOk());
  EXPECT_THAT(f.slab->Allocate(32768, 0), IsOk());
}

TEST(SlabTest, RandomOperationsNeverOverlapAndKeepInvariants) {
  Fixture f(Options(6 * kSlabBytes + 4096, {8, 24, 64, 200, 1024, 4096}));
  std::mt19937_64 rng(99);
  std::map<uint64_t, uint64_t> live;   // offset -> class size
  std::map<uint64_t, uint64_t> asked;  // offset -> requested
  uint64_t requested = 0;
  for (int i = 0; i < 4000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t size = 1 + rng() % (rng() % 4 == 0 ? 4096 : 200);
      const uint64_t align = uint64_t{1} << (rng() % 4);
      absl::StatusOr<Extent> e = f.slab->Allocate(size, align);
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
      ASSERT_THAT(f.slab->Free(it->first), IsOk());
      requested -= asked[it->first];
      live.erase(it);
    }
    ASSERT_THAT(f.slab->CheckInvariants(), IsOk());
    ASSERT_EQ(f.slab->Stats().live_allocations, live.size());
    ASSERT_EQ(f.slab->Stats().requested_bytes, requested);
  }
}

}  // namespace
}  // namespace shmalloc
