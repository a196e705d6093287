// Predicting, before touching an allocator, whether a batch of equal
// allocations fits — so a batch that cannot fit is refused without moving
// even the allocator's peak, and the daemon knows when it must snapshot the
// metadata to undo a batch exactly.
//
//   POOL   exact: count <= free blocks (every pool allocation goes through
//          the daemon, so its live count comes from the daemon's histogram).
//   SLAB   exact: free objects of the serving class plus free slabs times
//          objects per slab (Slab::ClassStats).
//   BUDDY  fits when count * block <= the largest free block (each block
//          splits into that many); cannot fit when count * block > free.
//   FREE_LIST  fits when count * 2 * upper bound <= the largest free extent
//          (the factor 2 covers the good-fit bin rounding); cannot fit when
//          count * rounded size > free.
// Anything between is kUncertain.
//
// Thread-safety: pure functions over a quiescent allocator (the caller holds
// the region lock).
#ifndef SERVER_BATCH_FIT_H_
#define SERVER_BATCH_FIT_H_

#include <cstdint>

#include "allocators/allocator.h"

namespace shmalloc::server {

enum class BatchFit { kFits, kCannotFit, kUncertain };

// What the classification needs besides the allocator.
struct BatchShape {
  uint64_t size = 0;        // bytes per extent, > 0
  uint64_t alignment = 0;   // effective alignment (power of two)
  uint64_t count = 0;       // extents, >= 1
  uint64_t block_size = 0;  // POOL block / BUDDY min block (segment header)
  uint64_t pool_live = 0;   // POOL: live blocks (the daemon's count)
};

// Returns how a batch of `shape` relates to the free space of `allocator`
// (any strategy but ARENA, which the daemon batches in one bump).
BatchFit ClassifyBatch(const OffsetAllocator& allocator,
                       const BatchShape& shape);

// Returns an upper bound on the bytes one extent of `shape` reserves.
uint64_t ReservedUpperBound(const OffsetAllocator& allocator,
                            const BatchShape& shape);

}  // namespace shmalloc::server

#endif  // SERVER_BATCH_FIT_H_
