// internal::BlockCacheCore: the state behind shmalloc::client::BlockCache
// (see block_cache.h for the design). Shared with the thread-exit hook of
// every thread that used it (by weak_ptr), so a thread that exits returns its
// blocks to the central lists if the cache still exists.
//
// Invariants: every offset in a thread list or central list of class c is a
// live allocation of this session of class_sizes_[c] bytes; a ThreadCache is
// used by at most one thread at a time (its owner, or none after the owner
// exited, until another thread adopts it).
// Thread-safety: Allocate/Free thread-safe (see block_cache.h); Flush and
// Stats REQUIRE quiescence.
#ifndef CLIENT_BLOCK_CACHE_CORE_H_
#define CLIENT_BLOCK_CACHE_CORE_H_

#include <atomic>
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
  // One thread's lists, one per size class; only its owner touches them.
  struct ThreadCache {
    std::vector<std::vector<uint64_t>> classes;
  };

  // Returns a core over a POOL or SLAB region (see BlockCache::Create).
  static absl::StatusOr<std::shared_ptr<BlockCacheCore>> Create(
      std::shared_ptr<Region> region, const BlockCacheOptions& options);
  ~BlockCacheCore() = default;

  // Returns the class index serving `size`, or -1.
  int ClassOf(uint64_t size) const {
    if (size == 0) return -1;
    for (size_t i = 0; i < class_sizes_.size(); ++i) {
      if (size <= class_sizes_[i]) return static_cast<int>(i);
    }
    return -1;
  }
  uint64_t class_size(int c) const { return class_sizes_[c]; }

  // The fast paths (see BlockCache::Allocate / Free).
  absl::StatusOr<uint64_t> Allocate(uint64_t size) {
    const int c = ClassOf(size);
    if (c < 0) return NoClass(size);
    std::vector<uint64_t>& list = GetThreadCache()->classes[c];
    if (!list.empty()) {
      const uint64_t offset = list.back();
      list.pop_back();
      return offset;
    }
    return Refill(list, c);
  }
  absl::Status Free(uint64_t offset, uint64_t size) {
    const int c = ClassOf(size);
    if (c < 0) return NoClass(size);
    if (offset < region_->heap_begin() || offset >= region_->heap_end()) {
      return OutOfRange(offset);
    }
    std::vector<uint64_t>& list = GetThreadCache()->classes[c];
    list.push_back(offset);
    if (list.size() > options_.thread_capacity) return Drain(list, c);
    return absl::OkStatus();
  }

  // Returns every cached block to the daemon. REQUIRES quiescence.
  absl::Status Flush();
  BlockCacheStats Stats() const;
  // Moves `tc`'s blocks to the central lists and lets another thread adopt
  // it. Called when its thread exits.
  void ReleaseThreadCache(ThreadCache* tc);

  const std::shared_ptr<Region>& region() const { return region_; }
  uint64_t id() const { return id_; }

 private:
  struct Central {
    absl::Mutex mu;
    std::vector<uint64_t> blocks ABSL_GUARDED_BY(mu);
  };

  BlockCacheCore(std::shared_ptr<Region> region, BlockCacheOptions options,
                 std::vector<uint64_t> class_sizes);

  ThreadCache* GetThreadCache();
  ThreadCache* GetThreadCacheSlow();
  absl::StatusOr<uint64_t> Refill(std::vector<uint64_t>& list, int c);
  absl::Status Drain(std::vector<uint64_t>& list, int c);
  // Frees `offsets` (all of class c) through the daemon, isolating offsets
  // it refuses when a batch fails.
  absl::Status FreeToDaemon(const std::vector<uint64_t>& offsets);
  absl::Status NoClass(uint64_t size) const;
  absl::Status OutOfRange(uint64_t offset) const;

  std::shared_ptr<Region> region_;
  BlockCacheOptions options_;
  std::vector<uint64_t> class_sizes_;  // ascending
  uint64_t id_;                        // unique in this process, never 0
  std::vector<std::unique_ptr<Central>> central_;  // one per class

  mutable absl::Mutex threads_mu_;
  std::vector<std::unique_ptr<ThreadCache>> threads_
      ABSL_GUARDED_BY(threads_mu_);
  std::vector<ThreadCache*> orphans_ ABSL_GUARDED_BY(threads_mu_);

  std::atomic<uint64_t> allocate_rpcs_{0};
  std::atomic<uint64_t> free_rpcs_{0};
  std::atomic<uint64_t> blocks_from_daemon_{0};
  std::atomic<uint64_t> blocks_to_daemon_{0};
  std::atomic<uint64_t> rejected_frees_{0};
};

// One thread's direct-mapped lookup: cache id -> its ThreadCache.
struct ThreadCacheSlot {
  uint64_t cache_id;
  BlockCacheCore::ThreadCache* cache;
};
inline constexpr uint64_t kThreadCacheSlots = 4;
extern thread_local ThreadCacheSlot tls_block_caches[kThreadCacheSlots]
    __attribute__((tls_model("initial-exec")));

inline BlockCacheCore::ThreadCache* BlockCacheCore::GetThreadCache() {
  ThreadCacheSlot& slot = tls_block_caches[id_ & (kThreadCacheSlots - 1)];
  if (slot.cache_id == id_) return slot.cache;
  return GetThreadCacheSlow();
}

}  // namespace shmalloc::client::internal

#endif  // CLIENT_BLOCK_CACHE_CORE_H_
