// internal::BlockCacheCore: the state behind shmalloc::client::BlockCache
// (see block_cache.h for the design). Shared with the thread-exit hook of
// every thread that used it (by weak_ptr), so a thread that exits returns its
// blocks to the central lists if the cache still exists.
//
// Invariants: every offset in a thread list or central list of class c was
// a live allocation of this session of class_sizes_[c] bytes in the list's
// generation (stale once the region's generation moves on); owned_[i] is
// Tag(g, c) exactly while the block at granule i was handed to a caller by
// Allocate in generation g (mod 128) and class c; a ThreadCache is used by
// at most one thread at a time (its owner, or none after the owner exited,
// until another thread adopts it).
// Thread-safety: Allocate/Free thread-safe (see block_cache.h); Flush and
// Stats REQUIRE quiescence.
#ifndef CLIENT_BLOCK_CACHE_CORE_H_
#define CLIENT_BLOCK_CACHE_CORE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/region.h"

namespace shmalloc::client::internal {

class BlockCacheCore : public std::enable_shared_from_this<BlockCacheCore> {
 public:
  // One thread's lists, one per size class; only its owner touches them
  // (and Flush / the exit hook under threads_mu_, see ReleaseThreadCache).
  // `generation`: the region generation every block in the lists was
  // allocated in.
  // `generation` is atomic because CheckIncarnation poisons every
  // ThreadCache (kPoisonedThread) from the thread that finds the region
  // re-created; its owner moves it only from a value other than that.
  struct ThreadCache {
    std::vector<BlockList> classes;  // never resized once made
    std::unique_ptr<uint64_t[]> storage;
    std::atomic<uint64_t> generation{0};
  };

  // Returns a core over a POOL or SLAB region (see BlockCache::Create).
  static absl::StatusOr<std::shared_ptr<BlockCacheCore>> Create(
      std::shared_ptr<Region> region, const BlockCacheOptions& options);
  ~BlockCacheCore();
  BlockCacheCore(const BlockCacheCore&) = delete;
  BlockCacheCore& operator=(const BlockCacheCore&) = delete;

  // Returns the class index serving `size`, or -1.
  int ClassOf(uint64_t size) const {
    if (size == 0) return -1;
    for (size_t i = 0; i < class_sizes_.size(); ++i) {
      if (size <= class_sizes_[i]) return static_cast<int>(i);
    }
    return -1;
  }
  uint64_t class_size(int c) const { return class_sizes_[c]; }

  // The fast paths (see BlockCache::Allocate / Free). One load of the
  // region's generation and one compare guard the cached blocks; one store
  // (Allocate) or one load, compare and store (Free) keep the ownership map.
  absl::StatusOr<uint64_t> Allocate(uint64_t size) {
    const int c = ClassOf(size);
    if (c < 0) return NoClass(size);
    ThreadCache* tc = GetThreadCache();
    const uint64_t gen = Generation();
    BlockList& list = tc->classes[c];
    if (tc->generation.load(std::memory_order_relaxed) == gen && list.size != 0)
        [[likely]] {
      const uint64_t offset = list.data[--list.size];
      Owned(Index(offset)).store(Tag(gen, c), std::memory_order_relaxed);
      return offset;
    }
    return AllocateSlow(tc, c, gen);
  }
  // TryAllocate without a StatusOr: the address, or nullptr on any error.
  // BlockCache::TryAllocate's inline hit path serves class 0; this serves
  // the other classes' hits with no further call (the miss is a tail call).
  void* TryAllocate(uint64_t size) noexcept {
    const int c = ClassOf(size);
    const BlockCacheSlot& slot = tls_block_caches[id_ & (kBlockCacheSlots - 1)];
    if (c >= 0 && slot.cache_id == id_) [[likely]] {
      const uint64_t gen = Generation();
      BlockList& list = slot.list0[c];
      if (slot.generation->load(std::memory_order_relaxed) == gen &&
          list.size != 0) [[likely]] {
        const uint64_t offset = list.data[--list.size];
        Owned(Index(offset)).store(Tag(gen, c), std::memory_order_relaxed);
        return base_ + offset;
      }
    }
    return TryAllocateSlow(size);
  }
  // Free's hit path (no call, see TryAllocate): a block this cache handed
  // out in this generation and class goes back on the thread's list while
  // the list has room. Everything else goes through FreeSlow, which refuses
  // (never re-issues) a double free, a foreign or misaligned offset, a wrong
  // size or a stale block, and drains a full list.
  absl::Status Free(uint64_t offset, uint64_t size) {
    const int c = ClassOf(size);
    const BlockCacheSlot& slot = tls_block_caches[id_ & (kBlockCacheSlots - 1)];
    if (c >= 0 && offset >= heap_begin_ && offset < heap_end_ &&
        slot.cache_id == id_) [[likely]] {
      const uint64_t index = Index(offset);
      const uint64_t gen = Generation();
      std::atomic_ref<uint16_t> owned = Owned(index);
      BlockList& list = slot.list0[c];
      if (owned.load(std::memory_order_relaxed) == Tag(gen, c) &&
          index * granule_ == offset - heap_begin_ &&
          slot.generation->load(std::memory_order_relaxed) == gen &&
          list.size < list.limit) [[likely]] {
        owned.store(0, std::memory_order_relaxed);
        list.data[list.size++] = offset;
        return absl::OkStatus();
      }
    }
    return FreeSlow(offset, size);
  }

  // Returns every cached block to the daemon. REQUIRES quiescence.
  absl::Status Flush();
  BlockCacheStats Stats() const;
  // Moves `tc`'s blocks to the central lists and lets another thread adopt
  // it. Called when its thread exits; takes threads_mu_, so it cannot race
  // with Flush or Stats (review L2).
  void ReleaseThreadCache(ThreadCache* tc);

  const std::shared_ptr<Region>& region() const { return region_; }
  std::byte* base() const { return base_; }
  uint64_t id() const { return id_; }

 private:
  struct Central {
    absl::Mutex mu;
    std::vector<uint64_t> blocks ABSL_GUARDED_BY(mu);
    uint64_t generation ABSL_GUARDED_BY(mu) = 0;  // of every block in it
  };

  BlockCacheCore(std::shared_ptr<Region> region, BlockCacheOptions options,
                 std::vector<uint64_t> class_sizes, uint64_t granule);

  // The region's generation as the segment header says (acquire), or
  // kPoisoned once the region was found deleted and re-created.
  uint64_t Generation() const {
    return generation_word_.load(std::memory_order_relaxed)
        ->load(std::memory_order_acquire);
  }
  // The map entry of a block handed out in `generation`, class c: the
  // generation's low 7 bits (a block held across 128 resets aliases), bit 15
  // only for kPoisoned, so a poisoned cache matches no entry.
  static uint16_t Tag(uint64_t generation, int c) {
    return OwnedTag(generation, static_cast<uint64_t>(c));
  }
  // Index of the map entry of `offset` (in the heap): granule_ is the
  // largest stride every block start is a multiple of.
  uint64_t Index(uint64_t offset) const {
    const uint64_t rel = offset - heap_begin_;
    return granule_shift_ >= 0 ? rel >> granule_shift_ : rel / granule_;
  }
  std::atomic_ref<uint16_t> Owned(uint64_t index) const {
    return std::atomic_ref<uint16_t>(owned_[index]);
  }

  ThreadCache* GetThreadCache();
  ThreadCache* GetThreadCacheSlow();
  // Points this thread's slot at `tc` (the hit paths' flat view).
  void FillSlot(ThreadCache* tc);
  [[gnu::noinline]] void* TryAllocateSlow(uint64_t size) noexcept;
  [[gnu::noinline]] absl::Status FreeSlow(uint64_t offset, uint64_t size);
  absl::StatusOr<uint64_t> AllocateSlow(ThreadCache* tc, int c, uint64_t gen);
  // Empties `tc`'s lists (blocks of an older generation: the reset freed
  // them) and moves it to `gen`.
  void DropStale(ThreadCache* tc, uint64_t gen);
  absl::StatusOr<uint64_t> Refill(ThreadCache* tc, int c, uint64_t gen);
  absl::Status Drain(BlockList& list, int c, uint64_t gen);
  // Frees `offsets` (allocated in `generation`) through the daemon,
  // isolating offsets it refuses when a batch fails. Blocks of a generation
  // the region has left are dropped (the reset freed them).
  absl::Status FreeToDaemon(const std::vector<uint64_t>& offsets,
                            uint64_t generation);
  // Region::CheckIncarnation; on failure the cache refuses everything from
  // then on (Generation() reads kPoisoned).
  absl::Status CheckIncarnation();
  absl::Status RefuseFree(uint64_t offset, uint64_t size, int c, uint64_t gen);
  absl::Status NoClass(uint64_t size) const;
  absl::Status OutOfRange(uint64_t offset) const;

  static constexpr uint64_t kPoisoned = ~uint64_t{0};
  // A poisoned ThreadCache's generation: equal to no Generation(), kPoisoned
  // included, so no hit path (inline or core) serves from it.
  static constexpr uint64_t kPoisonedThread = kPoisoned - 1;

  std::shared_ptr<Region> region_;
  BlockCacheOptions options_;
  std::vector<uint64_t> class_sizes_;  // ascending
  uint64_t id_;                        // unique in this process, never 0
  std::byte* base_;                    // region_->base()
  uint64_t heap_begin_;
  uint64_t heap_end_;
  uint64_t granule_;   // every block start - heap_begin is a multiple
  int granule_shift_;  // log2(granule_), or -1 when not a power of two
  uint16_t* owned_;    // one entry per granule: Tag() while handed out
                       // to a caller, 0 otherwise (calloc: lazy zero)
  std::vector<std::unique_ptr<Central>> central_;  // one per class

  std::atomic<const std::atomic<uint64_t>*> generation_word_;
  std::atomic<uint64_t> poisoned_{kPoisoned};

  mutable absl::Mutex threads_mu_;
  std::vector<std::unique_ptr<ThreadCache>> threads_
      ABSL_GUARDED_BY(threads_mu_);
  std::vector<ThreadCache*> orphans_ ABSL_GUARDED_BY(threads_mu_);

  std::atomic<uint64_t> allocate_rpcs_{0};
  std::atomic<uint64_t> free_rpcs_{0};
  std::atomic<uint64_t> blocks_from_daemon_{0};
  std::atomic<uint64_t> blocks_to_daemon_{0};
  std::atomic<uint64_t> rejected_frees_{0};
  std::atomic<uint64_t> refused_frees_{0};
  std::atomic<uint64_t> stale_blocks_{0};
};

inline BlockCacheCore::ThreadCache* BlockCacheCore::GetThreadCache() {
  BlockCacheSlot& slot = tls_block_caches[id_ & (kBlockCacheSlots - 1)];
  if (slot.cache_id == id_) [[likely]] {
    return static_cast<ThreadCache*>(slot.thread_cache);
  }
  return GetThreadCacheSlow();
}

}  // namespace shmalloc::client::internal

#endif  // CLIENT_BLOCK_CACHE_CORE_H_
