// std::pmr::memory_resource adapters, so standard containers can live in
// shared memory:
//   ArenaResource       bump allocation on an Arena; deallocate is a no-op
//                       (the arena frees as a whole).
//   RegionResource      one daemon allocation per do_allocate, one Free per
//                       do_deallocate (an RPC each: for large, long-lived
//                       buffers).
//   BlockCacheResource  blocks from a BlockCache (POOL / SLAB regions).
// do_allocate throws std::bad_alloc on any failure (pmr's contract); a
// failed do_deallocate is dropped. Containers store raw pointers, so a
// container built on these is usable only in the process that built it; hand
// offsets, not containers, to other processes.
//
// Thread-safety: as the underlying object (Arena and BlockCache: thread-safe;
// RegionResource: thread-safe). The resource must outlive its users, and the
// Arena / BlockCache must outlive the resource.
#ifndef CLIENT_INCLUDE_SHMALLOC_MEMORY_RESOURCE_H_
#define CLIENT_INCLUDE_SHMALLOC_MEMORY_RESOURCE_H_

#include <cstddef>
#include <memory>
#include <memory_resource>

#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/region.h"

namespace shmalloc::client {

class ArenaResource final : public std::pmr::memory_resource {
 public:
  explicit ArenaResource(Arena& arena) : arena_(arena) {}
  Arena& arena() const { return arena_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes,
                     std::size_t alignment) override {}
  bool do_is_equal(
      const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  Arena& arena_;
};

class RegionResource final : public std::pmr::memory_resource {
 public:
  explicit RegionResource(std::shared_ptr<Region> region)
      : region_(std::move(region)) {}
  const std::shared_ptr<Region>& region() const { return region_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes,
                     std::size_t alignment) override;
  bool do_is_equal(
      const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  std::shared_ptr<Region> region_;
};

class BlockCacheResource final : public std::pmr::memory_resource {
 public:
  explicit BlockCacheResource(BlockCache& cache) : cache_(cache) {}
  BlockCache& cache() const { return cache_; }

 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override;
  void do_deallocate(void* p, std::size_t bytes,
                     std::size_t alignment) override;
  bool do_is_equal(
      const std::pmr::memory_resource& other) const noexcept override {
    return this == &other;
  }

  BlockCache& cache_;
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_MEMORY_RESOURCE_H_
