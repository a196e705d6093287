#include "client/block_cache_core.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace shmalloc::client::internal {

thread_local ThreadCacheSlot tls_block_caches[kThreadCacheSlots]
    __attribute__((tls_model("initial-exec")));

namespace {

// Hands a thread's caches back when the thread exits, if the cache is alive.
struct ThreadExitHook {
  struct Entry {
    uint64_t id;
    std::weak_ptr<BlockCacheCore> core;
    BlockCacheCore::ThreadCache* cache;
  };
  std::vector<Entry> entries;
  ~ThreadExitHook() {
    for (Entry& e : entries) {
      if (std::shared_ptr<BlockCacheCore> core = e.core.lock()) {
        core->ReleaseThreadCache(e.cache);
      }
    }
  }
};
thread_local ThreadExitHook tls_exit_hook;

std::atomic<uint64_t> next_cache_id{1};

// The daemon's default SLAB classes: 16, 32, ..., 16 KiB.
std::vector<uint64_t> DefaultSlabClasses() {
  std::vector<uint64_t> classes;
  for (uint64_t c = 16; c <= 16384; c *= 2) classes.push_back(c);
  return classes;
}

// Blocks per Free RPC when flushing.
constexpr size_t kFlushBatch = 4096;

}  // namespace

BlockCacheCore::BlockCacheCore(std::shared_ptr<Region> region,
                               BlockCacheOptions options,
                               std::vector<uint64_t> class_sizes)
    : region_(std::move(region)),
      options_(options),
      class_sizes_(std::move(class_sizes)),
      id_(next_cache_id.fetch_add(1, std::memory_order_relaxed)) {
  for (size_t i = 0; i < class_sizes_.size(); ++i) {
    central_.push_back(std::make_unique<Central>());
  }
}

absl::StatusOr<std::shared_ptr<BlockCacheCore>> BlockCacheCore::Create(
    std::shared_ptr<Region> region, const BlockCacheOptions& options) {
  if (region == nullptr) return absl::InvalidArgumentError("null region");
  if (options.batch == 0 || options.batch > 65536 ||
      options.thread_capacity < options.batch ||
      options.central_capacity < options.batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BlockCacheOptions: need 1 <= batch <= 65536 and thread_capacity, "
        "central_capacity >= batch (batch ",
        options.batch, ", thread_capacity ", options.thread_capacity,
        ", central_capacity ", options.central_capacity, ")"));
  }
  std::vector<uint64_t> classes;
  switch (region->strategy()) {
    case Strategy::kPool:
      classes = {region->info().block_size};
      break;
    case Strategy::kSlab:
      classes = region->info().size_classes.empty()
                    ? DefaultSlabClasses()
                    : region->info().size_classes;
      std::sort(classes.begin(), classes.end());
      break;
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "a BlockCache needs a POOL or SLAB region; '", region->name(),
          "' is ", std::string(StrategyName(region->strategy()))));
  }
  if (classes.empty() || classes.front() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("region '", region->name(), "' reports no block size"));
  }
  return std::shared_ptr<BlockCacheCore>(
      new BlockCacheCore(std::move(region), options, std::move(classes)));
}

BlockCacheCore::ThreadCache* BlockCacheCore::GetThreadCacheSlow() {
  ThreadCacheSlot& slot = tls_block_caches[id_ & (kThreadCacheSlots - 1)];
  std::vector<ThreadExitHook::Entry>& entries = tls_exit_hook.entries;
  for (const ThreadExitHook::Entry& e : entries) {
    if (e.id == id_) {
      slot = {id_, e.cache};
      return e.cache;
    }
  }
  ThreadCache* tc;
  {
    absl::MutexLock lock(&threads_mu_);
    if (!orphans_.empty()) {
      tc = orphans_.back();
      orphans_.pop_back();
    } else {
      threads_.push_back(std::make_unique<ThreadCache>());
      tc = threads_.back().get();
      tc->classes.resize(class_sizes_.size());
      for (std::vector<uint64_t>& list : tc->classes) {
        list.reserve(options_.thread_capacity + 1);
      }
    }
  }
  std::erase_if(
      entries, [](const ThreadExitHook::Entry& e) { return e.core.expired(); });
  entries.push_back({id_, weak_from_this(), tc});
  slot = {id_, tc};
  return tc;
}

absl::StatusOr<uint64_t> BlockCacheCore::Refill(std::vector<uint64_t>& list,
                                                int c) {
  {
    Central& central = *central_[c];
    absl::MutexLock lock(&central.mu);
    const size_t n = std::min<size_t>(options_.batch, central.blocks.size());
    list.insert(list.end(), central.blocks.end() - n, central.blocks.end());
    central.blocks.resize(central.blocks.size() - n);
  }
  if (list.empty()) {
    const uint64_t size = class_sizes_[c];
    // The largest power of two dividing the block size, at most 16: a pool
    // refuses alignments above its blocks'.
    const uint64_t alignment = std::min<uint64_t>(16, size & -size);
    absl::StatusOr<std::vector<Extent>> extents = region_->AllocateExtents(
        size, options_.batch, {.alignment = alignment});
    allocate_rpcs_.fetch_add(1, std::memory_order_relaxed);
    if (!extents.ok() && absl::IsResourceExhausted(extents.status()) &&
        options_.batch > 1) {
      // All or nothing: the region may still hold fewer than a batch.
      extents = region_->AllocateExtents(size, 1, {.alignment = alignment});
      allocate_rpcs_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!extents.ok()) return extents.status();
    blocks_from_daemon_.fetch_add(extents->size(), std::memory_order_relaxed);
    for (auto it = extents->rbegin(); it != extents->rend(); ++it) {
      list.push_back(it->offset);
    }
  }
  const uint64_t offset = list.back();
  list.pop_back();
  return offset;
}

absl::Status BlockCacheCore::Drain(std::vector<uint64_t>& list, int c) {
  std::vector<uint64_t> to_daemon;
  {
    Central& central = *central_[c];
    absl::MutexLock lock(&central.mu);
    // The oldest blocks leave; the most recently freed stay hot here.
    central.blocks.insert(central.blocks.end(), list.begin(),
                          list.begin() + options_.batch);
    if (central.blocks.size() > options_.central_capacity) {
      const size_t n =
          central.blocks.size() - options_.central_capacity + options_.batch;
      const size_t take = std::min(n, central.blocks.size());
      to_daemon.assign(central.blocks.begin(), central.blocks.begin() + take);
      central.blocks.erase(central.blocks.begin(),
                           central.blocks.begin() + take);
    }
  }
  list.erase(list.begin(), list.begin() + options_.batch);
  if (to_daemon.empty()) return absl::OkStatus();
  return FreeToDaemon(to_daemon);
}

absl::Status BlockCacheCore::FreeToDaemon(
    const std::vector<uint64_t>& offsets) {
  free_rpcs_.fetch_add(1, std::memory_order_relaxed);
  absl::Status s = region_->Free(offsets);
  if (s.ok()) {
    blocks_to_daemon_.fetch_add(offsets.size(), std::memory_order_relaxed);
    return s;
  }
  if (!absl::IsFailedPrecondition(s) && !absl::IsInvalidArgument(s)) {
    return s;  // e.g. UNAVAILABLE: the daemon reclaims with the session
  }
  // All or nothing: find the offsets the daemon refuses, free the rest.
  uint64_t rejected = 0;
  absl::Status first_error;
  for (uint64_t offset : offsets) {
    free_rpcs_.fetch_add(1, std::memory_order_relaxed);
    absl::Status one = region_->Free(offset);
    if (one.ok()) {
      blocks_to_daemon_.fetch_add(1, std::memory_order_relaxed);
    } else {
      ++rejected;
      if (first_error.ok()) first_error = one;
    }
  }
  rejected_frees_.fetch_add(rejected, std::memory_order_relaxed);
  if (rejected == 0) return absl::OkStatus();
  return absl::Status(
      first_error.code(),
      absl::StrCat("BlockCache: the daemon refused ", rejected,
                   " freed block(s), first: ", first_error.message()));
}

void BlockCacheCore::ReleaseThreadCache(ThreadCache* tc) {
  for (size_t c = 0; c < tc->classes.size(); ++c) {
    std::vector<uint64_t>& list = tc->classes[c];
    if (list.empty()) continue;
    Central& central = *central_[c];
    absl::MutexLock lock(&central.mu);
    central.blocks.insert(central.blocks.end(), list.begin(), list.end());
    list.clear();
  }
  absl::MutexLock lock(&threads_mu_);
  orphans_.push_back(tc);
}

absl::Status BlockCacheCore::Flush() {
  std::vector<uint64_t> all;
  {
    absl::MutexLock lock(&threads_mu_);
    for (const std::unique_ptr<ThreadCache>& tc : threads_) {
      for (std::vector<uint64_t>& list : tc->classes) {
        all.insert(all.end(), list.begin(), list.end());
        list.clear();
      }
    }
  }
  for (const std::unique_ptr<Central>& central : central_) {
    absl::MutexLock lock(&central->mu);
    all.insert(all.end(), central->blocks.begin(), central->blocks.end());
    central->blocks.clear();
  }
  absl::Status result;
  for (size_t i = 0; i < all.size(); i += kFlushBatch) {
    const size_t n = std::min(kFlushBatch, all.size() - i);
    absl::Status s = FreeToDaemon(
        std::vector<uint64_t>(all.begin() + i, all.begin() + i + n));
    if (result.ok()) result = s;
  }
  return result;
}

BlockCacheStats BlockCacheCore::Stats() const {
  BlockCacheStats s;
  s.allocate_rpcs = allocate_rpcs_.load(std::memory_order_relaxed);
  s.free_rpcs = free_rpcs_.load(std::memory_order_relaxed);
  s.blocks_from_daemon = blocks_from_daemon_.load(std::memory_order_relaxed);
  s.blocks_to_daemon = blocks_to_daemon_.load(std::memory_order_relaxed);
  s.rejected_frees = rejected_frees_.load(std::memory_order_relaxed);
  {
    absl::MutexLock lock(&threads_mu_);
    s.thread_caches = threads_.size();
    for (const std::unique_ptr<ThreadCache>& tc : threads_) {
      for (const std::vector<uint64_t>& list : tc->classes) {
        s.cached_blocks += list.size();
      }
    }
  }
  for (const std::unique_ptr<Central>& central : central_) {
    absl::MutexLock lock(&central->mu);
    s.cached_blocks += central->blocks.size();
  }
  return s;
}

absl::Status BlockCacheCore::NoClass(uint64_t size) const {
  return absl::InvalidArgumentError(absl::StrCat(
      "BlockCache on region '", region_->name(), "': no block class holds ",
      size, " bytes (largest ", class_sizes_.back(), ")"));
}

absl::Status BlockCacheCore::OutOfRange(uint64_t offset) const {
  return absl::InvalidArgumentError(
      absl::StrCat("BlockCache on region '", region_->name(), "': offset ",
                   offset, " is outside the heap [", region_->heap_begin(),
                   ", ", region_->heap_end(), ")"));
}

}  // namespace shmalloc::client::internal
