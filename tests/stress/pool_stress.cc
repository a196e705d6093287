// Concurrency stress for Pool: threads start on a barrier and allocate, fill
// the block with their own pattern in a real heap buffer, verify it and free
// it; every operation is counted, and the end proves that no block was lost
// or handed out twice. Run under ThreadSanitizer, it also checks that the
// free list's memory orders hand each block's bytes from one owner to the
// next without a data race.
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

#include "allocators/pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/stress/stress_flags.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc {
namespace {

using ::shmalloc::stress::Flags;
using ::shmalloc::stress::IterationsOr;
using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;

constexpr uint64_t kBegin = 4096;

// A pool plus the heap its offsets point into.
struct Fixture {
  Fixture(uint64_t block_size, uint64_t blocks) {
    AllocatorOptions options;
    options.strategy = Strategy::kPool;
    options.begin = kBegin;
    options.end = kBegin + block_size * blocks;
    options.block_size = block_size;
    meta.resize((*Pool::MetadataBytes(options) + 7) / 8);
    pool = *Pool::Create(std::as_writable_bytes(std::span<uint64_t>(meta)),
                         options);
    heap.resize(options.end);
  }
  std::byte* at(uint64_t offset) { return heap.data() + offset; }
  std::vector<uint64_t> meta;
  std::unique_ptr<Pool> pool;
  std::vector<std::byte> heap;  // stands for the shared-memory heap
};

struct Counts {
  uint64_t allocated = 0;
  uint64_t freed = 0;
  uint64_t exhausted = 0;
  uint64_t bad_frees_rejected = 0;
  uint64_t corrupted = 0;  // a block we held was written by someone else
  uint64_t errors = 0;     // any unexpected status
};

// Fills the block with a pattern unique to (thread, sequence).
void Fill(std::byte* p, uint64_t size, uint64_t tag) {
  for (uint64_t i = 0; i < size; i += 8) std::memcpy(p + i, &tag, 8);
}
bool Holds(const std::byte* p, uint64_t size, uint64_t tag) {
  for (uint64_t i = 0; i < size; i += 8) {
    uint64_t v;
    std::memcpy(&v, p + i, 8);
    if (v != tag) return false;
  }
  return true;
}

TEST(PoolStressTest, ThreadsAllocateFillVerifyAndFreeWithoutLossOrDuplicates) {
  const int threads = Flags().threads;
  const uint64_t iterations = IterationsOr(100000);
  constexpr uint64_t kBlockSize = 64;
  constexpr int kMaxHeld = 4;
  // Fewer blocks than threads could hold, so exhaustion happens too.
  const uint64_t blocks = static_cast<uint64_t>(threads) * kMaxHeld * 3 / 4;
  std::printf("pool_stress: threads=%d iterations=%llu seed=%llu blocks=%llu\n",
              threads, static_cast<unsigned long long>(iterations),
              static_cast<unsigned long long>(Flags().seed),
              static_cast<unsigned long long>(blocks));
  Fixture f(kBlockSize, blocks);
  std::vector<Counts> counts(threads);
  std::barrier start(threads);

  auto worker = [&](int t) {
    Counts& c = counts[t];
    std::mt19937_64 rng(Flags().seed * 1000003 + t);
    struct Held {
      uint64_t offset;
      uint64_t tag;
    };
    std::vector<Held> held;
    start.arrive_and_wait();
    for (uint64_t i = 0; i < iterations; ++i) {
      const bool allocate =
          held.empty() || (held.size() < kMaxHeld && (rng() & 1));
      if (allocate) {
        absl::StatusOr<Extent> e = f.pool->Allocate(1 + rng() % kBlockSize, 0);
        if (e.ok()) {
          ++c.allocated;
          const uint64_t tag = (uint64_t(t) << 48) | i;
          Fill(f.at(e->offset), kBlockSize, tag);
          held.push_back({e->offset, tag});
        } else if (e.status().code() == absl::StatusCode::kResourceExhausted) {
          ++c.exhausted;
        } else {
          ++c.errors;
        }
        continue;
      }
      const size_t k = rng() % held.size();
      const Held h = held[k];
      held[k] = held.back();
      held.pop_back();
      if (!Holds(f.at(h.offset), kBlockSize, h.tag)) ++c.corrupted;
      if ((i & 7) == 0) {  // an interior free must fail and change nothing
        if (f.pool->Free(h.offset + 8).code() ==
            absl::StatusCode::kFailedPrecondition) {
          ++c.bad_frees_rejected;
        } else {
          ++c.errors;
        }
      }
      if (f.pool->Free(h.offset).ok()) {
        ++c.freed;
      } else {
        ++c.errors;
      }
    }
    for (const Held& h : held) {
      if (!Holds(f.at(h.offset), kBlockSize, h.tag)) ++c.corrupted;
      if (f.pool->Free(h.offset).ok()) {
        ++c.freed;
      } else {
        ++c.errors;
      }
    }
  };
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t) pool_threads.emplace_back(worker, t);
  for (std::thread& th : pool_threads) th.join();

  Counts total;
  for (const Counts& c : counts) {
    total.allocated += c.allocated;
    total.freed += c.freed;
    total.exhausted += c.exhausted;
    total.bad_frees_rejected += c.bad_frees_rejected;
    total.corrupted += c.corrupted;
    total.errors += c.errors;
  }
  std::printf(
      "pool_stress: allocated=%llu freed=%llu exhausted=%llu "
      "bad_frees_rejected=%llu corrupted=%llu errors=%llu\n",
      static_cast<unsigned long long>(total.allocated),
      static_cast<unsigned long long>(total.freed),
      static_cast<unsigned long long>(total.exhausted),
      static_cast<unsigned long long>(total.bad_frees_rejected),
      static_cast<unsigned long long>(total.corrupted),
      static_cast<unsigned long long>(total.errors));
  EXPECT_EQ(total.errors, 0u);
  EXPECT_EQ(total.corrupted, 0u);
  EXPECT_EQ(total.allocated, total.freed);
  EXPECT_GT(total.allocated, 0u);
  const AllocatorStats s = f.pool->Stats();
  EXPECT_EQ(s.live_allocations, 0u);
  EXPECT_EQ(s.used_bytes, 0u);
  EXPECT_EQ(s.failed_allocations, total.exhausted);
  EXPECT_LE(s.peak_used_bytes, blocks * kBlockSize);
  EXPECT_THAT(f.pool->CountFreeBlocks(), IsOkAndHolds(blocks));
  EXPECT_THAT(f.pool->CheckInvariants(), IsOk());
  // Every block can be handed out exactly once more.
  std::vector<bool> seen(blocks);
  for (uint64_t i = 0; i < blocks; ++i) {
    absl::StatusOr<Extent> e = f.pool->Allocate(kBlockSize, 0);
    ASSERT_THAT(e, IsOk());
    const uint64_t index = (e->offset - kBegin) / kBlockSize;
    EXPECT_FALSE(seen[index]) << index;
    seen[index] = true;
  }
  EXPECT_THAT(f.pool->Allocate(1, 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(PoolStressTest, OfRacingFreesOfOneBlockExactlyOneSucceeds) {
  const int threads = Flags().threads;
  const uint64_t rounds = IterationsOr(100000) / 50;
  std::printf("pool_stress: threads=%d rounds=%llu\n", threads,
              static_cast<unsigned long long>(rounds));
  Fixture f(64, 4);
  std::atomic<uint64_t> target{0};
  std::atomic<uint64_t> successes{0};
  std::atomic<uint64_t> rejected{0};
  std::atomic<uint64_t> other{0};
  std::barrier sync(threads, [&]() noexcept {
    // Runs once per phase, between the frees: next round's block.
    absl::StatusOr<Extent> e = f.pool->Allocate(8, 8);
    target.store(e.ok() ? e->offset : 0, std::memory_order_relaxed);
  });
  auto worker = [&] {
    sync.arrive_and_wait();  // the completion step allocates round 0's block
    for (uint64_t r = 0; r < rounds; ++r) {
      const absl::Status s =
          f.pool->Free(target.load(std::memory_order_relaxed));
      if (s.ok()) {
        successes.fetch_add(1, std::memory_order_relaxed);
      } else if (s.code() == absl::StatusCode::kFailedPrecondition) {
        rejected.fetch_add(1, std::memory_order_relaxed);
      } else {
        other.fetch_add(1, std::memory_order_relaxed);
      }
      sync.arrive_and_wait();
    }
  };
  std::vector<std::thread> pool_threads;
  for (int t = 0; t < threads; ++t) pool_threads.emplace_back(worker);
  for (std::thread& th : pool_threads) th.join();
  // The last completion step allocated one more block; free it.
  ASSERT_THAT(f.pool->Free(target.load(std::memory_order_relaxed)), IsOk());
  EXPECT_EQ(successes.load(), rounds);
  EXPECT_EQ(rejected.load(), rounds * (threads - 1));
  EXPECT_EQ(other.load(), 0u);
  EXPECT_EQ(f.pool->Stats().live_allocations, 0u);
  EXPECT_THAT(f.pool->CountFreeBlocks(), IsOkAndHolds(4u));
  EXPECT_THAT(f.pool->CheckInvariants(), IsOk());
}

}  // namespace
}  // namespace shmalloc

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!shmalloc::stress::ParseStressFlags(argc, argv)) return 2;
  return RUN_ALL_TESTS();
}
