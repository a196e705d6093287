#include "client/block_cache_core.h"

#include <pthread.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/segment_header.h"

namespace shmalloc::client::internal {

thread_local constinit BlockCacheSlot tls_block_caches[kBlockCacheSlots]
    __attribute__((tls_model("initial-exec"))) = {};

namespace {

// The caches a thread has used, handed back when the thread exits (to the
// caches still alive). The hand-back runs as a pthread key destructor, not
// as a thread_local object's: glibc runs key destructors after every
// thread_local destructor of the thread, so a thread_local object that frees
// into a BlockCache from its destructor (one constructed before the thread
// first used the cache is destroyed after a thread_local hook would be)
// still finds this thread's caches. A key destructor that uses a cache again
// registers anew, and glibc runs the key's destructor once more.
// The main thread runs no key destructors at exit(); ~BlockCache's Flush
// returns every thread's blocks.
struct ThreadCaches {
  struct Entry {
    uint64_t id;
    std::weak_ptr<BlockCacheCore> core;
    BlockCacheCore::ThreadCache* cache;
  };
  std::vector<Entry> entries;
};
constinit thread_local ThreadCaches* tls_thread_caches = nullptr;

void ReleaseThreadCaches(void* arg) {
  // No hit path of this thread may use a ThreadCache another thread can
  // adopt from now on.
  for (BlockCacheSlot& slot : tls_block_caches) slot = {};
  tls_thread_caches = nullptr;
  std::unique_ptr<ThreadCaches> caches(static_cast<ThreadCaches*>(arg));
  for (ThreadCaches::Entry& e : caches->entries) {
    if (std::shared_ptr<BlockCacheCore> core = e.core.lock()) {
      core->ReleaseThreadCache(e.cache);
    }
  }
}

pthread_key_t ThreadCachesKey() {
  static const pthread_key_t key = [] {
    pthread_key_t k;
    // Fails only when the process has used up its PTHREAD_KEYS_MAX keys.
    SHMALLOC_CHECK(pthread_key_create(&k, &ReleaseThreadCaches) == 0)
        << "BlockCache: pthread_key_create failed";
    return k;
  }();
  return key;
}

ThreadCaches& CurrentThreadCaches() {
  if (tls_thread_caches == nullptr) {
    auto caches = std::make_unique<ThreadCaches>();
    SHMALLOC_CHECK(pthread_setspecific(ThreadCachesKey(), caches.get()) == 0)
        << "BlockCache: pthread_setspecific failed";
    tls_thread_caches = caches.release();
  }
  return *tls_thread_caches;
}

std::atomic<uint64_t> next_cache_id{1};

// The daemon's default SLAB classes: 16, 32, ..., 16 KiB.
std::vector<uint64_t> DefaultSlabClasses() {
  std::vector<uint64_t> classes;
  for (uint64_t c = 16; c <= 16384; c *= 2) classes.push_back(c);
  return classes;
}

// Blocks per Free RPC when flushing.
constexpr size_t kFlushBatch = 4096;
// Classes a map entry can name (Tag keeps c + 1 in 8 bits).
constexpr size_t kMaxClasses = 255;

}  // namespace

BlockCacheCore::BlockCacheCore(std::shared_ptr<Region> region,
                               BlockCacheOptions options,
                               std::vector<uint64_t> class_sizes,
                               uint64_t granule)
    : region_(std::move(region)),
      options_(options),
      class_sizes_(std::move(class_sizes)),
      id_(next_cache_id.fetch_add(1, std::memory_order_relaxed)),
      base_(region_->base()),
      heap_begin_(region_->heap_begin()),
      heap_end_(region_->heap_end()),
      granule_(granule),
      granule_shift_(std::has_single_bit(granule) ? std::countr_zero(granule)
                                                  : -1),
      // One entry per granule; calloc of a large size maps zero pages
      // lazily, so only the entries of blocks actually handed out cost
      // memory.
      owned_(static_cast<uint16_t*>(std::calloc(
          (heap_end_ - heap_begin_) / granule + 1, sizeof(uint16_t)))),
      generation_word_(&reinterpret_cast<const SegmentHeader*>(region_->base())
                            ->generation) {
  for (size_t i = 0; i < class_sizes_.size(); ++i) {
    central_.push_back(std::make_unique<Central>());
  }
}

BlockCacheCore::~BlockCacheCore() { std::free(owned_); }

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
  uint64_t granule = 0;
  switch (region->strategy()) {
    case Strategy::kPool:
      classes = {region->info().block_size};
      // Blocks start at heap_begin + i * block_size.
      granule = region->info().block_size;
      break;
    case Strategy::kSlab:
      classes = region->info().size_classes.empty()
                    ? DefaultSlabClasses()
                    : region->info().size_classes;
      std::sort(classes.begin(), classes.end());
      // Objects start at slab + j * class size, slabs at a multiple of a
      // power of two >= 4096: the largest power of two dividing every class
      // (at most 4096) divides every object's distance from heap_begin.
      granule = 4096;
      for (uint64_t c : classes) {
        if (c != 0) granule = std::min(granule, c & -c);
      }
      break;
    default:
      return absl::FailedPreconditionError(absl::StrCat(
          "a BlockCache needs a POOL or SLAB region; '", region->name(),
          "' is ", std::string(StrategyName(region->strategy()))));
  }
  if (classes.empty() || classes.front() == 0 || classes.size() > kMaxClasses) {
    return absl::FailedPreconditionError(absl::StrCat(
        "region '", region->name(), "' reports ", classes.size(),
        " block sizes, the smallest ", classes.empty() ? 0 : classes.front(),
        "; a BlockCache serves 1 to ", kMaxClasses, ", none 0"));
  }
  std::shared_ptr<BlockCacheCore> core(new BlockCacheCore(
      std::move(region), options, std::move(classes), granule));
  if (core->owned_ == nullptr) {
    return absl::ResourceExhaustedError(
        "BlockCache: no memory for the ownership map");
  }
  return core;
}

BlockCacheCore::ThreadCache* BlockCacheCore::GetThreadCacheSlow() {
  std::vector<ThreadCaches::Entry>& entries = CurrentThreadCaches().entries;
  for (const ThreadCaches::Entry& e : entries) {
    if (e.id == id_) {
      FillSlot(e.cache);
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
      const size_t room = size_t{options_.thread_capacity} + 1;
      tc->storage = std::make_unique<uint64_t[]>(room * class_sizes_.size());
      tc->classes.resize(class_sizes_.size());
      for (size_t c = 0; c < tc->classes.size(); ++c) {
        tc->classes[c] = {.data = tc->storage.get() + c * room,
                          .size = 0,
                          .limit = options_.thread_capacity};
      }
      const uint64_t gen = Generation();
      tc->generation.store(gen == kPoisoned ? kPoisonedThread : gen,
                           std::memory_order_relaxed);
    }
  }
  std::erase_if(entries,
                [](const ThreadCaches::Entry& e) { return e.core.expired(); });
  entries.push_back({id_, weak_from_this(), tc});
  FillSlot(tc);
  return tc;
}

void BlockCacheCore::FillSlot(ThreadCache* tc) {
  // The inline hit paths index the map by a shift: with a granule that is
  // not a power of two they stay off (class0_size 0) and every call takes
  // the core's paths.
  const bool inline_hits = granule_shift_ >= 0;
  tls_block_caches[id_ & (kBlockCacheSlots - 1)] = {
      .cache_id = id_,
      .class0_size = inline_hits ? class_sizes_[0] : 0,
      .list0 = tc->classes.data(),
      .generation = &tc->generation,
      .region_generation = generation_word_.load(std::memory_order_relaxed),
      .owned = owned_,
      .base = base_,
      .heap_begin = heap_begin_,
      .heap_bytes = heap_end_ - heap_begin_,
      .shift = inline_hits ? static_cast<uint64_t>(granule_shift_) : 0,
      .thread_cache = tc,
  };
}

void* BlockCacheCore::TryAllocateSlow(uint64_t size) noexcept {
  absl::StatusOr<uint64_t> offset = Allocate(size);
  return offset.ok() ? base_ + *offset : nullptr;
}

absl::Status BlockCacheCore::FreeSlow(uint64_t offset, uint64_t size) {
  const int c = ClassOf(size);
  if (c < 0) return NoClass(size);
  if (offset < heap_begin_ || offset >= heap_end_) return OutOfRange(offset);
  const uint64_t rel = offset - heap_begin_;
  const uint64_t index = Index(offset);
  const uint64_t gen = Generation();
  std::atomic_ref<uint16_t> owned = Owned(index);
  // Handed out by this cache, in this generation, in this class: else a
  // double free, a foreign or misaligned offset, a wrong size or a stale
  // block, refused (never re-issued).
  if (owned.load(std::memory_order_relaxed) != Tag(gen, c) ||
      index * granule_ != rel) [[unlikely]] {
    return RefuseFree(offset, size, c, gen);
  }
  owned.store(0, std::memory_order_relaxed);
  ThreadCache* tc = GetThreadCache();
  if (tc->generation.load(std::memory_order_relaxed) != gen) [[unlikely]] {
    DropStale(tc, gen);
  }
  BlockList& list = tc->classes[c];
  list.data[list.size++] = offset;  // room for limit + 1
  if (list.size > list.limit) return Drain(list, c, gen);
  return absl::OkStatus();
}

void BlockCacheCore::DropStale(ThreadCache* tc, uint64_t gen) {
  uint64_t dropped = 0;
  for (BlockList& list : tc->classes) {
    dropped += list.size;
    list.size = 0;
  }
  stale_blocks_.fetch_add(dropped, std::memory_order_relaxed);
  // Never out of kPoisonedThread (CheckIncarnation may store it concurrently).
  uint64_t seen = tc->generation.load(std::memory_order_relaxed);
  while (seen != kPoisonedThread && !tc->generation.compare_exchange_weak(
                                        seen, gen, std::memory_order_relaxed)) {
  }
}

absl::Status BlockCacheCore::CheckIncarnation() {
  absl::Status s = region_->CheckIncarnation();
  if (!s.ok()) {
    generation_word_.store(&poisoned_, std::memory_order_relaxed);
    // The hit paths compare the region's word with their ThreadCache's
    // generation: a poisoned ThreadCache never matches it.
    absl::MutexLock lock(&threads_mu_);
    for (const std::unique_ptr<ThreadCache>& tc : threads_) {
      tc->generation.store(kPoisonedThread, std::memory_order_relaxed);
    }
  }
  return s;
}

absl::StatusOr<uint64_t> BlockCacheCore::AllocateSlow(ThreadCache* tc, int c,
                                                      uint64_t gen) {
  if (gen == kPoisoned) {
    return absl::FailedPreconditionError(absl::StrCat(
        "stale: BlockCache on region '", region_->name(),
        "': the region was deleted and re-created; make a new cache"));
  }
  if (tc->generation.load(std::memory_order_relaxed) != gen) {
    DropStale(tc, gen);
  }
  return Refill(tc, c, gen);
}

absl::StatusOr<uint64_t> BlockCacheCore::Refill(ThreadCache* tc, int c,
                                                uint64_t gen) {
  BlockList& list = tc->classes[c];
  {
    Central& central = *central_[c];
    absl::MutexLock lock(&central.mu);
    if (central.generation != gen) {
      stale_blocks_.fetch_add(central.blocks.size(), std::memory_order_relaxed);
      central.blocks.clear();
      central.generation = gen;
    }
    // The list is empty here (a hit would have served), batch <= limit.
    const size_t n = std::min<size_t>(options_.batch, central.blocks.size());
    std::copy(central.blocks.end() - static_cast<std::ptrdiff_t>(n),
              central.blocks.end(), list.data + list.size);
    list.size += static_cast<uint32_t>(n);
    central.blocks.resize(central.blocks.size() - n);
  }
  if (list.size == 0) {
    const uint64_t size = class_sizes_[c];
    // The largest power of two dividing the block size, at most 16: a pool
    // refuses alignments above its blocks'.
    const uint64_t alignment = std::min<uint64_t>(16, size & -size);
    uint64_t allocated_in = 0;
    // AllocateExtents checks the incarnation around the RPC and every
    // extent against the mapping (DATA_LOSS).
    absl::StatusOr<std::vector<Extent>> extents = region_->AllocateExtents(
        size, options_.batch, {.alignment = alignment}, &allocated_in);
    allocate_rpcs_.fetch_add(1, std::memory_order_relaxed);
    if (!extents.ok() && absl::IsResourceExhausted(extents.status()) &&
        options_.batch > 1) {
      // All or nothing: the region may still hold fewer than a batch.
      extents = region_->AllocateExtents(size, 1, {.alignment = alignment},
                                         &allocated_in);
      allocate_rpcs_.fetch_add(1, std::memory_order_relaxed);
    }
    if (!extents.ok()) {
      if (absl::IsFailedPrecondition(extents.status())) {
        CheckIncarnation().IgnoreError();  // poisons when re-created
      }
      return extents.status();
    }
    blocks_from_daemon_.fetch_add(extents->size(), std::memory_order_relaxed);
    for (const Extent& e : *extents) {
      if (e.size_bytes < size || (e.offset - heap_begin_) % granule_ != 0) {
        return absl::DataLossError(absl::StrCat(
            "BlockCache on region '", region_->name(),
            "': the daemon's block [", e.offset, ", +", e.size_bytes,
            ") is not a ", size, "-byte block of this region"));
      }
    }
    if (allocated_in != gen) {
      // Reset while the cache was refilling: these blocks are the new
      // generation's, whatever the thread's lists held is not.
      DropStale(tc, allocated_in);
    }
    for (auto it = extents->rbegin(); it != extents->rend(); ++it) {
      list.data[list.size++] = it->offset;
    }
    gen = allocated_in;
  }
  const uint64_t offset = list.data[--list.size];
  Owned(Index(offset)).store(Tag(gen, c), std::memory_order_relaxed);
  return offset;
}

absl::Status BlockCacheCore::Drain(BlockList& list, int c, uint64_t gen) {
  std::vector<uint64_t> to_daemon;
  {
    Central& central = *central_[c];
    absl::MutexLock lock(&central.mu);
    if (central.generation != gen) {
      stale_blocks_.fetch_add(central.blocks.size(), std::memory_order_relaxed);
      central.blocks.clear();
      central.generation = gen;
    }
    // The oldest blocks leave; the most recently freed stay hot here.
    central.blocks.insert(central.blocks.end(), list.data,
                          list.data + options_.batch);
    if (central.blocks.size() > options_.central_capacity) {
      const size_t n =
          central.blocks.size() - options_.central_capacity + options_.batch;
      const size_t take = std::min(n, central.blocks.size());
      to_daemon.assign(central.blocks.begin(), central.blocks.begin() + take);
      central.blocks.erase(central.blocks.begin(),
                           central.blocks.begin() + take);
    }
  }
  std::copy(list.data + options_.batch, list.data + list.size, list.data);
  list.size -= options_.batch;
  if (to_daemon.empty()) return absl::OkStatus();
  return FreeToDaemon(to_daemon, gen);
}

absl::Status BlockCacheCore::FreeToDaemon(const std::vector<uint64_t>& offsets,
                                          uint64_t generation) {
  if (generation != Generation() || generation == kPoisoned) {
    // Reset since (the daemon freed them with everything else) or
    // re-created (poisoned): never sent, so they cannot free someone else's
    // blocks even where the daemon could not tell (generation 0).
    stale_blocks_.fetch_add(offsets.size(), std::memory_order_relaxed);
    return absl::OkStatus();
  }
  free_rpcs_.fetch_add(1, std::memory_order_relaxed);
  absl::Status s = region_->Free(offsets, generation);
  if (s.ok()) {
    blocks_to_daemon_.fetch_add(offsets.size(), std::memory_order_relaxed);
    return s;
  }
  if (!absl::IsFailedPrecondition(s) && !absl::IsInvalidArgument(s)) {
    return s;  // e.g. UNAVAILABLE: the daemon reclaims with the session
  }
  if (!CheckIncarnation().ok() || generation != Generation()) {
    stale_blocks_.fetch_add(offsets.size(), std::memory_order_relaxed);
    return s;  // stale: every offset would be refused alike
  }
  // All or nothing: find the offsets the daemon refuses, free the rest.
  uint64_t rejected = 0;
  absl::Status first_error;
  for (uint64_t offset : offsets) {
    free_rpcs_.fetch_add(1, std::memory_order_relaxed);
    absl::Status one = region_->Free(offset, generation);
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

absl::Status BlockCacheCore::RefuseFree(uint64_t offset, uint64_t size, int c,
                                        uint64_t gen) {
  refused_frees_.fetch_add(1, std::memory_order_relaxed);
  const std::string where =
      absl::StrCat("BlockCache on region '", region_->name(), "': Free(",
                   offset, ", ", size, ")");
  if (gen == kPoisoned) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, " refused: stale: the region was deleted and re-created"));
  }
  const uint64_t rel = offset - heap_begin_;
  const uint64_t index = Index(offset);
  if (index * granule_ != rel) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, " refused: not the start of a block this cache handed out"));
  }
  const uint16_t entry = Owned(index).load(std::memory_order_relaxed);
  if (entry == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        where,
        " refused: not handed out by this cache now (a double free, or a "
        "block of another cache, process or session)"));
  }
  if ((entry >> 8) != (Tag(gen, c) >> 8)) {
    return absl::FailedPreconditionError(
        absl::StrCat(where,
                     " refused: stale: handed out before the region was reset "
                     "(it is at generation ",
                     gen, ")"));
  }
  const int owner_class = (entry & 0xff) - 1;
  return absl::InvalidArgumentError(
      absl::StrCat(where, " refused: the block is of the ",
                   class_sizes_[static_cast<size_t>(owner_class)],
                   "-byte class, ", size, " bytes are of the ",
                   class_sizes_[static_cast<size_t>(c)], "-byte class"));
}

void BlockCacheCore::ReleaseThreadCache(ThreadCache* tc) {
  // threads_mu_ first (then each central's mutex, the order Flush never
  // inverts): Flush and Stats read these lists under threads_mu_.
  absl::MutexLock threads_lock(&threads_mu_);
  const uint64_t gen = Generation();
  const bool current =
      tc->generation.load(std::memory_order_relaxed) == gen && gen != kPoisoned;
  for (size_t c = 0; c < tc->classes.size(); ++c) {
    BlockList& list = tc->classes[c];
    if (list.size == 0) continue;
    if (!current) {
      stale_blocks_.fetch_add(list.size, std::memory_order_relaxed);
      list.size = 0;
      continue;
    }
    Central& central = *central_[c];
    absl::MutexLock lock(&central.mu);
    if (central.generation != gen) {
      stale_blocks_.fetch_add(central.blocks.size(), std::memory_order_relaxed);
      central.blocks.clear();
      central.generation = gen;
    }
    central.blocks.insert(central.blocks.end(), list.data,
                          list.data + list.size);
    list.size = 0;
  }
  orphans_.push_back(tc);
}

absl::Status BlockCacheCore::Flush() {
  const uint64_t gen = Generation();
  std::vector<uint64_t> all;
  uint64_t stale = 0;
  {
    absl::MutexLock lock(&threads_mu_);
    for (const std::unique_ptr<ThreadCache>& tc : threads_) {
      const bool current =
          tc->generation.load(std::memory_order_relaxed) == gen &&
          gen != kPoisoned;
      for (BlockList& list : tc->classes) {
        if (current) {
          all.insert(all.end(), list.data, list.data + list.size);
        } else {
          stale += list.size;
        }
        list.size = 0;
      }
    }
  }
  for (const std::unique_ptr<Central>& central : central_) {
    absl::MutexLock lock(&central->mu);
    if (central->generation == gen) {
      all.insert(all.end(), central->blocks.begin(), central->blocks.end());
    } else {
      stale += central->blocks.size();
    }
    central->blocks.clear();
  }
  stale_blocks_.fetch_add(stale, std::memory_order_relaxed);
  absl::Status result;
  for (size_t i = 0; i < all.size(); i += kFlushBatch) {
    const size_t n = std::min(kFlushBatch, all.size() - i);
    absl::Status s = FreeToDaemon(
        std::vector<uint64_t>(all.begin() + i, all.begin() + i + n), gen);
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
  s.refused_frees = refused_frees_.load(std::memory_order_relaxed);
  s.stale_blocks = stale_blocks_.load(std::memory_order_relaxed);
  {
    absl::MutexLock lock(&threads_mu_);
    s.thread_caches = threads_.size();
    for (const std::unique_ptr<ThreadCache>& tc : threads_) {
      for (const BlockList& list : tc->classes) {
        s.cached_blocks += list.size;
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
