// A std::pmr::memory_resource over any OffsetAllocator plus the base address
// at which its heap is mapped: the C++ counterpart of the seed's GlobalAlloc
// section, so `std::pmr::vector<T> v(&resource)` allocates from a strategy.
//
// The resource turns offsets into pointers (base + offset) and back; it never
// owns the allocator or the memory. As pmr requires, do_allocate throws
// std::bad_alloc when the strategy refuses (the Status is logged in what()).
//
// Thread-safety: as the underlying allocator (Arena and Pool are lock-free;
// the others need external locking).
#ifndef ALLOCATORS_MEMORY_RESOURCE_H_
#define ALLOCATORS_MEMORY_RESOURCE_H_

#include <cstddef>
#include <memory_resource>

#include "allocators/allocator.h"

namespace shmalloc {

class OffsetMemoryResource : public std::pmr::memory_resource {
 public:
  // REQUIRES: `allocator` and the mapping at `base` outlive the resource;
  // `base` + offset is addressable for every offset in [begin, end).
  OffsetMemoryResource(OffsetAllocator* allocator, std::byte* base)
      : allocator_(allocator), base_(base) {}

  OffsetAllocator* allocator() const { return allocator_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes,
                     std::size_t alignment) override;
  bool do_is_equal(
      const std::pmr::memory_resource& other) const noexcept override;

  OffsetAllocator* allocator_;
  std::byte* base_;
};

}  // namespace shmalloc

#endif  // ALLOCATORS_MEMORY_RESOURCE_H_
