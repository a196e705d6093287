// Concurrency stress for Arena: in every round, threads start on a barrier
// and bump-allocate random sizes and alignments until the arena is full,
// filling each extent in a real heap buffer with their own byte; then one
// thread checks that every extent is in range, aligned, disjoint from all
// others and still holds its owner's byte, that the cursor accounts for every
// byte, and resets the arena for the next round. Every operation is counted.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "allocators/arena.h"
#include "common/segment_header.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/stress/stress_flags.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc {
namespace {

using ::shmalloc::stress::Flags;
using ::shmalloc::stress::IterationsOr;
using ::shmalloc::testing::IsOk;

constexpr uint64_t kBegin = 4096;
constexpr uint64_t kCapacity = 1 << 20;

struct Owned {
  Extent extent;
  uint64_t alignment;
  int owner;
};

TEST(ArenaStressTest, ThreadsFillTheArenaWithDisjointAlignedExtents) {
  const int threads = Flags().threads;
  const uint64_t rounds = IterationsOr(40);
  std::printf("arena_stress: threads=%d rounds=%llu seed=%llu capacity=%llu\n",
              threads, static_cast<unsigned long long>(rounds),
              static_cast<unsigned long long>(Flags().seed),
              static_cast<unsigned long long>(kCapacity));
  alignas(64) static std::byte meta[kArenaMetaBytes];
  AllocatorOptions options;
  options.strategy = Strategy::kArena;
  options.begin = kBegin;
  options.end = kBegin + kCapacity;
  absl::StatusOr<std::unique_ptr<Arena>> created =
      Arena::Create(std::span<std::byte>(meta), options);
  ASSERT_THAT(created, IsOk());
  Arena& arena = **created;
  std::vector<std::byte> heap(options.end);  // stands for the shared heap
  std::vector<std::vector<Owned>> owned(threads);
  std::vector<uint64_t> allocated(threads), exhausted(threads), errors(threads);
  uint64_t bad_rounds = 0;
  uint64_t checked_extents = 0;

  // Runs once per round, while every worker waits: verify, then reset.
  auto check_and_reset = [&]() noexcept {
    std::vector<Owned> all;
    for (auto& v : owned) {
      all.insert(all.end(), v.begin(), v.end());
      v.clear();
    }
    std::sort(all.begin(), all.end(), [](const Owned& a, const Owned& b) {
      return a.extent.offset < b.extent.offset;
    });
    bool ok = true;
    uint64_t bytes = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      const Extent& e = all[i].extent;
      bytes += e.size_bytes;
      ok &= e.offset >= kBegin && e.offset + e.size_bytes <= options.end;
      ok &= e.offset % all[i].alignment == 0;
      if (i > 0) {
        const Extent& prev = all[i - 1].extent;
        ok &= prev.offset + prev.size_bytes <= e.offset;
      }
      const std::byte mark = static_cast<std::byte>(all[i].owner + 1);
      for (uint64_t b = 0; b < e.size_bytes; ++b) {
        ok &= heap[e.offset + b] == mark;
      }
    }
    const AllocatorStats s = arena.Stats();
    ok &= bytes <= s.used_bytes;
    ok &= s.used_bytes + s.free_bytes == s.capacity_bytes;
    ok &= arena.CheckInvariants().ok();
    if (!ok) ++bad_rounds;
    checked_extents += all.size();
    arena.Reset();
  };
  std::barrier sync(threads, check_and_reset);

  auto worker = [&](int t) {
    std::mt19937_64 rng(Flags().seed * 1000003 + t);
    const std::byte mark = static_cast<std::byte>(t + 1);
    // The first phase only lines threads up (its check sees nothing).
    sync.arrive_and_wait();
    for (uint64_t r = 0; r < rounds; ++r) {
      for (;;) {
        const uint64_t size = 1 + rng() % 512;
        const uint64_t alignment = uint64_t{1} << (rng() % 13);  // 1..4096
        absl::StatusOr<Extent> e = arena.Allocate(size, alignment);
        if (e.ok()) {
          ++allocated[t];
          std::memset(heap.data() + e->offset, static_cast<int>(mark),
                      e->size_bytes);
          owned[t].push_back({*e, alignment, t});
        } else if (e.status().code() == absl::StatusCode::kResourceExhausted) {
          ++exhausted[t];
          break;  // full for this thread; others finish their last bytes
        } else {
          ++errors[t];
          break;
        }
      }
      sync.arrive_and_wait();
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) workers.emplace_back(worker, t);
  for (std::thread& th : workers) th.join();

  uint64_t total_allocated = 0, total_exhausted = 0, total_errors = 0;
  for (int t = 0; t < threads; ++t) {
    total_allocated += allocated[t];
    total_exhausted += exhausted[t];
    total_errors += errors[t];
  }
  std::printf(
      "arena_stress: allocated=%llu exhausted=%llu errors=%llu "
      "checked=%llu bad_rounds=%llu\n",
      static_cast<unsigned long long>(total_allocated),
      static_cast<unsigned long long>(total_exhausted),
      static_cast<unsigned long long>(total_errors),
      static_cast<unsigned long long>(checked_extents),
      static_cast<unsigned long long>(bad_rounds));
  EXPECT_EQ(total_errors, 0u);
  EXPECT_EQ(bad_rounds, 0u);
  EXPECT_EQ(checked_extents, total_allocated);
  EXPECT_EQ(total_exhausted, rounds * threads);
  const AllocatorStats s = arena.Stats();
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.failed_allocations, total_exhausted);
  EXPECT_GT(s.peak_used_bytes, kCapacity - 8192);
  EXPECT_EQ(arena.epoch(), rounds + 1);
  EXPECT_THAT(arena.CheckInvariants(), IsOk());
}

}  // namespace
}  // namespace shmalloc

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!shmalloc::stress::ParseStressFlags(argc, argv)) return 2;
  return RUN_ALL_TESTS();
}
