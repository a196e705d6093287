// std::pmr containers allocate from any strategy through OffsetMemoryResource,
// and the memory they get lies inside the heap the strategy manages.
#include "allocators/memory_resource.h"

#include <memory>
#include <memory_resource>
#include <new>
#include <string>
#include <vector>

#include "allocators/allocator.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/allocators/strategy_fixture.h"

namespace shmalloc {
namespace {

using ::shmalloc::testing::IsOk;

class MemoryResourceTest : public ::testing::TestWithParam<Strategy> {
 protected:
  void SetUp() override {
    options_ = testing::TestOptions(GetParam(), 8 << 20);
    // Pool blocks must fit the vector's growth; slab classes cap at 16 KiB.
    options_.block_size = 16384;
    s_ = testing::MakeStrategy(options_);
    ASSERT_NE(s_.allocator, nullptr);
    // Page-aligned like a real mapping, so offset alignment is pointer
    // alignment.
    heap_.reset(new (std::align_val_t{4096}) std::byte[options_.end]);
  }

  struct AlignedDelete {
    void operator()(std::byte* p) const {
      ::operator delete[](p, std::align_val_t{4096});
    }
  };

  bool InHeap(const void* p, size_t bytes) const {
    const auto* b = static_cast<const std::byte*>(p);
    return b >= heap_.get() + options_.begin &&
           b + bytes <= heap_.get() + options_.end;
  }

  AllocatorOptions options_;
  testing::StrategyUnderTest s_;
  std::unique_ptr<std::byte[], AlignedDelete> heap_;
};

TEST_P(MemoryResourceTest, PmrVectorAllocatesInsideTheHeap) {
  OffsetMemoryResource resource(s_.allocator.get(), heap_.get());
  {
    std::pmr::vector<uint64_t> v(&resource);
    for (uint64_t i = 0; i < 1000; ++i) v.push_back(i * i);
    ASSERT_TRUE(InHeap(v.data(), v.size() * sizeof(uint64_t)));
    for (uint64_t i = 0; i < 1000; ++i) ASSERT_EQ(v[i], i * i);
    EXPECT_GT(s_.allocator->Stats().used_bytes, 0u);
  }
  if (GetParam() != Strategy::kArena) {
    // Every growth step was handed back.
    EXPECT_EQ(s_.allocator->Stats().used_bytes, 0u);
  }
  EXPECT_THAT(s_.allocator->CheckInvariants(), IsOk());
}

TEST_P(MemoryResourceTest, PmrStringsAndAlignmentWork) {
  OffsetMemoryResource resource(s_.allocator.get(), heap_.get());
  std::pmr::vector<std::pmr::string> names(&resource);
  for (int i = 0; i < 100; ++i) {
    names.emplace_back(std::string(40 + i, static_cast<char>('a' + i % 26)));
  }
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(InHeap(names[i].data(), names[i].size()));
    ASSERT_EQ(names[i].size(), 40u + i);
  }
  void* p = resource.allocate(256, 256);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
  resource.deallocate(p, 256, 256);
}

TEST_P(MemoryResourceTest, ExhaustionThrowsBadAlloc) {
  OffsetMemoryResource resource(s_.allocator.get(), heap_.get());
  EXPECT_THROW(
      {
        for (;;) resource.allocate(16384, 16);
      },
      std::bad_alloc);
}

TEST_P(MemoryResourceTest, ResourcesAreEqualOnlyOverTheSameAllocatorAndBase) {
  OffsetMemoryResource a(s_.allocator.get(), heap_.get());
  OffsetMemoryResource b(s_.allocator.get(), heap_.get());
  OffsetMemoryResource c(s_.allocator.get(), heap_.get() + 64);
  EXPECT_TRUE(a.is_equal(b));
  EXPECT_FALSE(a.is_equal(c));
  EXPECT_FALSE(a.is_equal(*std::pmr::new_delete_resource()));
}

INSTANTIATE_TEST_SUITE_P(AllStrategies, MemoryResourceTest,
                         ::testing::ValuesIn(testing::kAllStrategies),
                         testing::StrategyParamName);

}  // namespace
}  // namespace shmalloc
