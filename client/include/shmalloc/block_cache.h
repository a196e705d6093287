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
// Invariants (quiescent, no reset): blocks held by this cache + blocks
// handed to callers == blocks_from_daemon - blocks_to_daemon; every cached
// offset is a live allocation of this session in the daemon.
//
// Fencing and trust: the cache remembers which blocks it handed out (one map
// entry per block: class and generation), so Free refuses, without
// re-issuing anything, a double free, an offset it did not hand out (another
// cache's, process's or session's), and a size of another class. Cached
// blocks carry the region's generation: after a ResetRegion the cache drops
// them (the reset freed them) and Free refuses blocks handed out before it
// (FAILED_PRECONDITION "stale"); drains send the generation, so the daemon
// refuses them too. A region deleted and re-created since the cache was made
// is found at the next refill or drain, and from then on every call is
// FAILED_PRECONDITION (make a new cache on a newly opened Region). Every
// block from the daemon is checked against the mapping (DATA_LOSS).
// Limit: a block the cache handed out again after a reset looks current, so
// a Free of the pre-reset handle of that same block is not caught.
//
// Thread-safety: Allocate and Free are thread-safe; a thread touches only its
// own cache except when it moves a batch to or from the central list (a
// mutex) or the daemon (an RPC). Flush, Stats and the destructor REQUIRE no
// concurrent Allocate/Free; a thread that used the cache may exit at any
// time (its exit hook and Flush serialise on one mutex), and may still use
// the cache from its thread_local destructors: the hook that hands the
// thread's blocks back runs after them. The BlockCache must outlive its use.
#ifndef CLIENT_INCLUDE_SHMALLOC_BLOCK_CACHE_H_
#define CLIENT_INCLUDE_SHMALLOC_BLOCK_CACHE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace shmalloc::client {

class Region;

namespace internal {
class BlockCacheCore;  // client/block_cache_core.h

// One thread's list of cached offsets of one class (in its ThreadCache).
struct BlockList {
  uint64_t* data;  // room for limit + 1 offsets
  uint32_t size;
  uint32_t limit;  // thread_capacity: Free's hit path pushes below it
};

// The hit paths' view of one thread's cache of one BlockCache, flat in
// thread-local storage so an allocate or free is a few loads off one
// thread-local slot (no chain through the BlockCache, its core and the
// thread's cache). Only class 0 (the POOL's class, a SLAB's smallest) has an
// inline hit path; the other classes take one call. Filled by the slow path
// (GetThreadCacheSlow) and cleared when the thread exits.
//   generation:  the ThreadCache's generation (of every block in its lists);
//                it is poisoned once the region was found re-created, so a
//                poisoned cache never hits.
//   region_generation: the segment header's generation word, written by the
//                daemon on ResetRegion (any process).
//   owned:       the cache's ownership map (client memory, never shared):
//                OwnedTag(generation, class) while handed out, else 0.
//   class0_size: sizes 1..class0_size are class 0; 0 = no inline hit path.
struct alignas(64) BlockCacheSlot {
  uint64_t cache_id;  // 0 = empty
  uint64_t class0_size;
  BlockList* list0;
  const std::atomic<uint64_t>* generation;
  const std::atomic<uint64_t>* region_generation;
  uint16_t* owned;
  std::byte* base;      // the mapping's address
  uint64_t heap_begin;  // offset of the heap
  uint64_t heap_bytes;
  uint64_t shift;      // log2 of the granule of `owned`
  void* thread_cache;  // the BlockCacheCore::ThreadCache (slow paths)
};
inline constexpr uint64_t kBlockCacheSlots = 4;
// constinit (zero-initialised, defined in block_cache_core.cc): reached
// through the thread pointer, no TLS init wrapper call.
extern thread_local constinit BlockCacheSlot tls_block_caches[kBlockCacheSlots]
    __attribute__((tls_model("initial-exec")));

// The ownership map's entry of a block handed out in `generation`, class c:
// the generation's low 7 bits (a block held across 128 resets aliases), bit
// 15 only for the poisoned generation, so a poisoned cache matches no entry.
inline uint16_t OwnedTag(uint64_t generation, uint64_t c) {
  const uint64_t g = (generation & 0x7f) | ((generation >> 56) & 0x80);
  return static_cast<uint16_t>((g << 8) | (c + 1));
}
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
  uint64_t refused_frees = 0;       // Free calls refused here (double, foreign,
                                    // wrong class, stale)
  uint64_t stale_blocks = 0;  // cached blocks dropped: the region was reset
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
  // (RESOURCE_EXHAUSTED, UNAVAILABLE, DATA_LOSS for a block outside the
  // mapping, FAILED_PRECONDITION once the region was deleted and re-created).
  // Thread-safe.
  absl::StatusOr<uint64_t> Allocate(uint64_t size);
  // Returns the address of a block as Allocate, nullptr on any error.
  // Thread-safe. The hit path (class 0, the thread's list not empty, no
  // reset since it was filled) is inline: one load of the region's shared
  // generation word per call stays, because a ResetRegion in another process
  // frees every cached block at once and the daemon may hand them to someone
  // else before this thread's next refill (see docs/design/trust.md).
  void* TryAllocate(uint64_t size) noexcept {
    const internal::BlockCacheSlot& s =
        internal::tls_block_caches[id_ & (internal::kBlockCacheSlots - 1)];
    if (s.cache_id == id_ && size - 1 < s.class0_size) [[likely]] {
      internal::BlockList* list = s.list0;
      const uint64_t gen = s.region_generation->load(std::memory_order_acquire);
      const uint32_t n = list->size;
      if (s.generation->load(std::memory_order_relaxed) == gen && n != 0)
          [[likely]] {
        const uint64_t offset = list->data[n - 1];
        list->size = n - 1;
        std::atomic_ref<uint16_t>(s.owned[(offset - s.heap_begin) >> s.shift])
            .store(internal::OwnedTag(gen, 0), std::memory_order_relaxed);
        return s.base + offset;
      }
    }
    return TryAllocateSlow(size);
  }
  // Takes back the block at `offset`, allocated with `size` (any size of the
  // same class) by this cache. INVALID_ARGUMENT when offset is outside the
  // heap, size fits no class or is of another class than the block's;
  // FAILED_PRECONDITION when this cache did not hand the block out (double
  // free, foreign offset) or handed it out before a reset (stale), or the
  // region was re-created: refused and counted in refused_frees, nothing
  // re-issued. Errors of a drain RPC. A block the daemon refuses on drain is
  // counted in rejected_frees. Thread-safe.
  absl::Status Free(uint64_t offset, uint64_t size);
  // Frees the block at `p` (an address from TryAllocate). The hit path
  // (class 0, handed out by this cache in this generation per the ownership
  // map, room on the thread's list) is inline; every refusal is the slow
  // path's.
  absl::Status Free(void* p, uint64_t size) {
    const internal::BlockCacheSlot& s =
        internal::tls_block_caches[id_ & (internal::kBlockCacheSlots - 1)];
    if (s.cache_id == id_ && size - 1 < s.class0_size) [[likely]] {
      const uint64_t offset =
          reinterpret_cast<uintptr_t>(p) - reinterpret_cast<uintptr_t>(s.base);
      const uint64_t rel = offset - s.heap_begin;
      const uint64_t index = rel >> s.shift;
      if (rel < s.heap_bytes && (index << s.shift) == rel) [[likely]] {
        std::atomic_ref<uint16_t> owned(s.owned[index]);
        const uint64_t gen =
            s.region_generation->load(std::memory_order_acquire);
        internal::BlockList* list = s.list0;
        const uint32_t n = list->size;
        if (owned.load(std::memory_order_relaxed) ==
                internal::OwnedTag(gen, 0) &&
            s.generation->load(std::memory_order_relaxed) == gen &&
            n < list->limit) [[likely]] {
          owned.store(0, std::memory_order_relaxed);
          list->data[n] = offset;
          list->size = n + 1;
          return absl::OkStatus();
        }
      }
    }
    return FreeSlow(p, size);
  }

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
  void* TryAllocateSlow(uint64_t size) noexcept;
  absl::Status FreeSlow(void* p, uint64_t size);

  uint64_t id_;  // core_->id(): the key of the thread-local slot
  std::shared_ptr<internal::BlockCacheCore> core_;
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_BLOCK_CACHE_H_
