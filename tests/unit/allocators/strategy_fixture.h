// Builds any strategy over a small heap with its metadata in a std::vector,
// for the contract suite, the differential harness and the relocation test.
#ifndef TESTS_UNIT_ALLOCATORS_STRATEGY_FIXTURE_H_
#define TESTS_UNIT_ALLOCATORS_STRATEGY_FIXTURE_H_

#include <cstddef>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/factory.h"
#include "gtest/gtest.h"

namespace shmalloc::testing {

inline constexpr Strategy kAllStrategies[] = {Strategy::kArena, Strategy::kPool,
                                              Strategy::kBuddy, Strategy::kSlab,
                                              Strategy::kFreeList};

// The geometry used for `strategy` in the shared suites: a heap of
// `heap_bytes` starting at 4096 (offset 0 is never an allocation).
inline AllocatorOptions TestOptions(Strategy strategy,
                                    uint64_t heap_bytes = 1 << 20) {
  AllocatorOptions options;
  options.strategy = strategy;
  options.begin = 4096;
  options.end = 4096 + heap_bytes;
  options.block_size = 64;  // POOL
  options.min_block = 64;   // BUDDY
  return options;
}

// The largest size a single allocation of `strategy` may ask for in tests.
inline uint64_t MaxTestSize(const AllocatorOptions& options) {
  switch (options.strategy) {
    case Strategy::kPool:
      return options.block_size;
    case Strategy::kSlab:
      return options.size_classes.empty() ? 16384 : options.size_classes.back();
    default:
      return 64 * 1024;
  }
}

// An allocator and the metadata bytes it lives in.
struct StrategyUnderTest {
  std::vector<std::byte> meta;
  std::unique_ptr<OffsetAllocator> allocator;
};

inline StrategyUnderTest MakeStrategy(const AllocatorOptions& options) {
  StrategyUnderTest s;
  auto bytes = MetadataBytes(options);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  if (!bytes.ok()) return s;
  s.meta.resize(*bytes);
  auto allocator = CreateAllocator(s.meta, options);
  EXPECT_TRUE(allocator.ok()) << allocator.status();
  if (allocator.ok()) s.allocator = std::move(*allocator);
  return s;
}

// Every field, so "stats unchanged" means exactly that.
inline bool SameStats(const AllocatorStats& a, const AllocatorStats& b) {
  return a.capacity_bytes == b.capacity_bytes && a.used_bytes == b.used_bytes &&
         a.free_bytes == b.free_bytes &&
         a.requested_bytes == b.requested_bytes &&
         a.live_allocations == b.live_allocations &&
         a.peak_used_bytes == b.peak_used_bytes &&
         a.failed_allocations == b.failed_allocations &&
         a.largest_free_bytes == b.largest_free_bytes &&
         a.fragmentation == b.fragmentation &&
         a.internal_fragmentation == b.internal_fragmentation;
}

inline std::string DescribeStats(const AllocatorStats& s) {
  return "capacity=" + std::to_string(s.capacity_bytes) +
         " used=" + std::to_string(s.used_bytes) +
         " free=" + std::to_string(s.free_bytes) +
         " requested=" + std::to_string(s.requested_bytes) +
         " live=" + std::to_string(s.live_allocations) +
         " peak=" + std::to_string(s.peak_used_bytes) +
         " failed=" + std::to_string(s.failed_allocations) +
         " largest_free=" + std::to_string(s.largest_free_bytes);
}

inline std::string StrategyParamName(
    const ::testing::TestParamInfo<Strategy>& info) {
  return std::string(StrategyName(info.param));
}

}  // namespace shmalloc::testing

#endif  // TESTS_UNIT_ALLOCATORS_STRATEGY_FIXTURE_H_
