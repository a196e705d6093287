// shmalloc::client::BlockCache: a per-client cache of daemon blocks for POOL
// and SLAB regions, so an allocate+free pair costs nanoseconds instead of two
// RPCs. tcmalloc's transfer-cache idea across a process boundary:
//
//   thread cache (per thread, per size class, no locks)
//        ^ v   batches of `batch` blocks
//   central lists (per size class, one mutex each)
//        ^ v   Allocate(count = batch) / Free(batch offsets): one RPC each
//   shmallocd (owns the region; knows this session owns every cached block)
//
// Every block stays allocated to this session in the daemon while cached, so
// a SIGKILLed client's blocks are reclaimed with its session; a clean
// destruction (or Flush) returns them all with Free RPCs.
//
// Invariants (quiescent): blocks held by this cache + blocks handed to
// callers == blocks_from_daemon - blocks_to_daemon; every cached offset is a
// live allocation of this session in the daemon.
//
// Thread-safety: Allocate and Free are thread-safe; a thread touches only its
// own cache except when it moves a batch to or from the central list (a
// mutex) or the daemon (an RPC). Flush, Stats and the destructor REQUIRE no
// concurrent Allocate/Free. The BlockCache must outlive its use.
#ifndef CLIENT_INCLUDE_SHMALLOC_BLOCK_CACHE_H_
#define CLIENT_INCLUDE_SHMALLOC_BLOCK_CACHE_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shmalloc::client {

class Region;

namespace internal {
class BlockCacheCore;  // client/block_cache_core.h
}  // namespace internal

struct BlockCacheOptions {
  uint32_t batch = 64;               // blocks per refill / drain, >= 1
  uint32_t thread_capacity = 256;    // per thread and class, >= batch
  uint32_t central_capacity = 1024;  // per class before freeing to the daemon
};

struct BlockCacheStats {
  uint64_t allocate_rpcs = 0;       // batch Allocate calls to the daemon
  uint64_t free_rpcs = 0;           // batch Free calls to the daemon
  uint64_t blocks_from_daemon = 0;  // blocks received
  uint64_t blocks_to_daemon = 0;    // blocks returned
  uint64_t cached_blocks = 0;       // held in thread and central lists
  uint64_t thread_caches = 0;       // threads that have used this cache
  uint64_t rejected_frees = 0;      // offsets the daemon refused on drain
};

class BlockCache {
 public:
  // Returns a cache over a POOL or SLAB region. FAILED_PRECONDITION for any
  // other strategy, INVALID_ARGUMENT for bad options.
  static absl::StatusOr<std::unique_ptr<BlockCache>> Create(
      std::shared_ptr<Region> region, BlockCacheOptions options = {});

  // Returns every cached block to the daemon (errors are dropped; use Flush
  // to see them). REQUIRES: no concurrent Allocate/Free.
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // Returns the offset of a block of at least `size` bytes (POOL: <=
  // block_size; SLAB: the smallest class that fits). INVALID_ARGUMENT when
  // no class fits or size is 0; errors of the refill RPC
  // (RESOURCE_EXHAUSTED, UNAVAILABLE). Thread-safe.
  absl::StatusOr<uint64_t> Allocate(uint64_t size);
  // Returns the address of a block as Allocate, nullptr on any error.
  // Thread-safe.
  void* TryAllocate(uint64_t size) noexcept;
  // Takes back the block at `offset`, allocated with `size` (any size of the
  // same class) by this cache. INVALID_ARGUMENT when offset is outside the
  // heap or size fits no class; errors of a drain RPC. A block the daemon
  // refuses on drain is counted in rejected_frees. Thread-safe.
  absl::Status Free(uint64_t offset, uint64_t size);
  // Frees the block at `p` (an address from TryAllocate).
  absl::Status Free(void* p, uint64_t size);

  // Returns every cached block (every thread's and the central lists') to
  // the daemon. Errors of the Free RPCs. REQUIRES: no concurrent use.
  absl::Status Flush();
  // Returns the figures above. REQUIRES: no concurrent use for exact counts.
  BlockCacheStats Stats() const;
  // Returns the block size serving `size`, or 0 when none does.
  uint64_t ClassSize(uint64_t size) const;
  const std::shared_ptr<Region>& region() const;

 private:
  explicit BlockCache(std::shared_ptr<internal::BlockCacheCore> core);

  std::shared_ptr<internal::BlockCacheCore> core_;
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_BLOCK_CACHE_H_
