#include "shmalloc/memory_resource.h"

#include <new>

namespace shmalloc::client {

void* ArenaResource::do_allocate(std::size_t bytes, std::size_t alignment) {
  // pmr allows 0-byte requests; the arena does not.
  void* p = arena_.TryAllocate(bytes == 0 ? 1 : bytes, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

void* RegionResource::do_allocate(std::size_t bytes, std::size_t alignment) {
  absl::StatusOr<std::vector<Extent>> extents = region_->AllocateExtents(
      bytes == 0 ? 1 : bytes, 1, {.alignment = alignment});
  if (!extents.ok()) throw std::bad_alloc();
  return region_->ToPointer(extents->front().offset);
}

void RegionResource::do_deallocate(void* p, std::size_t bytes,
                                   std::size_t alignment) {
  absl::StatusOr<uint64_t> offset = region_->ToOffset(p);
  if (offset.ok()) region_->Free(*offset).IgnoreError();
}

void* BlockCacheResource::do_allocate(std::size_t bytes,
                                      std::size_t alignment) {
  const std::size_t size = bytes == 0 ? 1 : bytes;
  void* p = cache_.TryAllocate(size);
  if (p == nullptr) throw std::bad_alloc();
  if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0) {
    cache_.Free(p, size).IgnoreError();
    throw std::bad_alloc();
  }
  return p;
}

void BlockCacheResource::do_deallocate(void* p, std::size_t bytes,
                                       std::size_t alignment) {
  cache_.Free(p, bytes == 0 ? 1 : bytes).IgnoreError();
}

}  // namespace shmalloc::client
