#include "shmalloc/arena.h"

#include <algorithm>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "allocators/arena.h"
#include "common/segment_header.h"
#include "shmalloc/region.h"

namespace shmalloc::client {
namespace internal {

thread_local constinit ArenaChunk tls_arena_chunks[kArenaChunkSlots]
    __attribute__((tls_model("initial-exec"))) = {};

}  // namespace internal
namespace {

// The slot the slow path evicts next when every slot is taken (round robin).
thread_local constinit uint32_t tls_next_victim = 0;

// The first page of an extent arena holds its metadata; bump space follows.
constexpr uint64_t kExtentMetaBytes = kHeapBeginGranule;
// Chunks and large requests move the shared cursor in multiples of this, so
// chunk claims never leave padding on it.
constexpr uint64_t kClaimGranule = 64;

// Live Arenas by id, so a thread that evicts another Arena's chunk from its
// slot can retire it into that Arena's figures (or drop it when gone).
struct Registry {
  absl::Mutex mu;
  absl::flat_hash_map<uint64_t, Arena*> arenas ABSL_GUARDED_BY(mu);
  uint64_t next_id ABSL_GUARDED_BY(mu) = 1;
};
Registry& GetRegistry() {
  static Registry* registry = new Registry();
  return *registry;
}

absl::Status ValidateOptions(const ArenaOptions& options) {
  if (options.chunk_bytes < kClaimGranule ||
      options.chunk_bytes % kClaimGranule != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("ArenaOptions::chunk_bytes must be a multiple of ",
                     kClaimGranule, ", got ", options.chunk_bytes));
  }
  return absl::OkStatus();
}

}  // namespace

Arena::Arena(std::shared_ptr<Region> region,
             std::unique_ptr<shmalloc::Arena> cursor, uint64_t extent_offset,
             bool owns_extent, ArenaOptions options)
    : region_(std::move(region)),
      cursor_(std::move(cursor)),
      base_(region_->base()),
      begin_(cursor_->begin()),
      end_(cursor_->end()),
      extent_offset_(extent_offset),
      owns_extent_(owns_extent),
      options_(options) {
  std::byte* meta =
      extent_offset_ == 0 ? base_ + kArenaMetaOffset : base_ + extent_offset_;
  shared_epoch_ = &reinterpret_cast<ArenaMeta*>(meta)->epoch;
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  const uint64_t id = r.next_id++;
  id_.store(id, std::memory_order_relaxed);
  r.arenas[id] = this;
}

void Arena::Renumber() {
  Registry& r = GetRegistry();
  absl::MutexLock lock(&r.mu);
  r.arenas.erase(id_.load(std::memory_order_relaxed));
  const uint64_t id = r.next_id++;
  id_.store(id, std::memory_order_relaxed);
  r.arenas[id] = this;
}

Arena::~Arena() {
  {
    Registry& r = GetRegistry();
    absl::MutexLock lock(&r.mu);
    r.arenas.erase(id_.load(std::memory_order_relaxed));
  }
  if (owns_extent_ && !options_.detached) {
    region_->Free(extent_offset_).IgnoreError();
  }
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Create(
    std::shared_ptr<Region> region, ArenaOptions options) {
  if (region == nullptr) return absl::InvalidArgumentError("null region");
  absl::Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  if (region->strategy() == Strategy::kArena) {
    std::span<std::byte> meta(region->base() + kArenaMetaOffset,
                              kArenaMetaBytes);
    absl::StatusOr<std::unique_ptr<shmalloc::Arena>> cursor =
        shmalloc::Arena::Attach(meta);
    if (!cursor.ok()) return cursor.status();
    // The bounds come from the shared header, which any client can write:
    // they must lie in the heap of this mapping (the daemon's geometry,
    // checked against the file's size at OpenRegion). shmalloc::Arena keeps
    // them from now on, so later scribbles do not move them.
    if ((*cursor)->begin() < region->heap_begin() ||
        (*cursor)->end() > region->heap_end() ||
        (*cursor)->begin() >= (*cursor)->end()) {
      return absl::DataLossError(absl::StrCat(
          "ARENA region '", region->name(),
          "': the shared metadata describes [", (*cursor)->begin(), ", ",
          (*cursor)->end(), "), not inside the heap [", region->heap_begin(),
          ", ", region->heap_end(), ") as mapped here"));
    }
    return std::unique_ptr<Arena>(
        new Arena(std::move(region), *std::move(cursor), 0, false, options));
  }
  if (options.capacity_bytes <= kExtentMetaBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ArenaOptions::capacity_bytes must exceed ", kExtentMetaBytes, " on a ",
        std::string(StrategyName(region->strategy())), " region, got ",
        options.capacity_bytes));
  }
  absl::StatusOr<std::vector<Extent>> extent = region->AllocateExtents(
      options.capacity_bytes, 1,
      {.alignment = kHeapBeginGranule, .detached = options.detached});
  if (!extent.ok()) return extent.status();
  const Extent e = extent->front();
  AllocatorOptions arena_options;
  arena_options.strategy = shmalloc::Strategy::kArena;
  arena_options.begin = e.offset + kExtentMetaBytes;
  arena_options.end = e.offset + e.size_bytes;
  absl::StatusOr<std::unique_ptr<shmalloc::Arena>> cursor =
      shmalloc::Arena::Create(
          std::span<std::byte>(region->base() + e.offset, kExtentMetaBytes),
          arena_options);
  if (!cursor.ok()) {
    region->Free(e.offset).IgnoreError();
    return cursor.status();
  }
  return std::unique_ptr<Arena>(new Arena(std::move(region), *std::move(cursor),
                                          e.offset, true, options));
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Open(
    std::shared_ptr<Region> region, uint64_t offset, ArenaOptions options) {
  if (region == nullptr) return absl::InvalidArgumentError("null region");
  absl::Status valid = ValidateOptions(options);
  if (!valid.ok()) return valid;
  if (offset % kHeapBeginGranule != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena offset ", offset, " is not page-aligned"));
  }
  absl::StatusOr<std::span<std::byte>> meta =
      region->Span(offset, kExtentMetaBytes);
  if (!meta.ok()) return meta.status();
  absl::StatusOr<std::unique_ptr<shmalloc::Arena>> cursor =
      shmalloc::Arena::Attach(*meta);
  if (!cursor.ok()) return cursor.status();
  if ((*cursor)->begin() != offset + kExtentMetaBytes ||
      (*cursor)->end() > region->heap_end() ||
      (*cursor)->end() <= (*cursor)->begin()) {
    return absl::DataLossError(absl::StrCat(
        "arena metadata at offset ", offset, " describes [", (*cursor)->begin(),
        ", ", (*cursor)->end(), "), not space after it"));
  }
  options.detached = false;
  return std::unique_ptr<Arena>(
      new Arena(std::move(region), *std::move(cursor), offset, false, options));
}

absl::StatusOr<uint64_t> Arena::Direct(uint64_t size, uint64_t alignment) {
  absl::StatusOr<shmalloc::Extent> e = cursor_->Allocate(size, alignment);
  if (!e.ok()) {
    if (absl::IsResourceExhausted(e.status())) {
      failed_allocations_.fetch_add(1, std::memory_order_relaxed);
    }
    return e.status();
  }
  claimed_bytes_.fetch_add(size, std::memory_order_relaxed);
  handed_out_bytes_.fetch_add(size, std::memory_order_relaxed);
  direct_allocations_.fetch_add(1, std::memory_order_relaxed);
  return e->offset;
}

void Arena::Retire(internal::ArenaChunk& c) {
  const uint64_t leftover = c.end - c.cursor;
  handed_out_bytes_.fetch_add(options_.chunk_bytes - leftover,
                              std::memory_order_relaxed);
  leftover_bytes_.fetch_add(leftover, std::memory_order_relaxed);
}

void Arena::Evict(internal::ArenaChunk& c) {
  const uint64_t id = id_.load(std::memory_order_relaxed);
  if (c.arena_id == id) {
    if (c.epoch == CurrentEpoch()) Retire(c);  // else stale: dropped
  } else if (c.arena_id != 0) {
    Registry& r = GetRegistry();
    absl::MutexLock lock(&r.mu);
    auto it = r.arenas.find(c.arena_id);
    if (it != r.arenas.end() && it->second->CurrentEpoch() == c.epoch) {
      it->second->Retire(c);
    }
  }
  c = {};
}

void* Arena::AllocateSlow(uint64_t size, uint64_t alignment) noexcept {
  absl::StatusOr<uint64_t> at = Slow(size, alignment);
  return at.ok() ? base_ + *at : nullptr;
}

absl::StatusOr<uint64_t> Arena::Slow(uint64_t size, uint64_t alignment) {
  if (alignment == 0) alignment = kDefaultAlignment;
  if (size == 0 || !IsPowerOfTwo(alignment) || alignment > kMaxAlignment) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arena allocate: size must be > 0 and alignment a power of two <= ",
        kMaxAlignment, " (size ", size, ", alignment ", alignment, ")"));
  }
  if (options_.mode == ArenaOptions::Mode::kDirect) {
    return Direct(size, alignment);
  }
  if (size > options_.chunk_bytes) {
    // Large requests keep the shared cursor on the claim granule.
    return Direct(AlignUp(size, kClaimGranule),
                  std::max(alignment, kClaimGranule));
  }
  // Chunks hold addresses (base_ is page-aligned, so address alignment is
  // offset alignment); offsets are returned.
  const auto address0 = reinterpret_cast<uint64_t>(base_);
  const uint64_t id = id_.load(std::memory_order_relaxed);
  internal::ArenaChunk* slots = internal::tls_arena_chunks;
  const uint64_t home_index = id & (internal::kArenaChunkSlots - 1);
  internal::ArenaChunk& home = slots[home_index];
  const uint64_t epoch = CurrentEpoch();
  if (home.arena_id != id) {
    // Displaced by an Arena whose id collides: bring this Arena's chunk
    // back home (the other one takes its place) instead of claiming anew.
    for (uint64_t i = 0; i < internal::kArenaChunkSlots; ++i) {
      if (slots[i].arena_id == id) {
        std::swap(slots[i], home);
        break;
      }
    }
    if (home.arena_id != id && home.arena_id != 0) {
      // Keep the occupant's chunk in another slot: an empty one, else the
      // next victim's (retired into its Arena's figures).
      internal::ArenaChunk* spare = nullptr;
      for (uint64_t i = 0; i < internal::kArenaChunkSlots; ++i) {
        if (i != home_index && slots[i].arena_id == 0) {
          spare = &slots[i];
          break;
        }
      }
      if (spare == nullptr) {
        uint64_t victim = tls_next_victim++ % internal::kArenaChunkSlots;
        if (victim == home_index) {
          victim = (victim + 1) % internal::kArenaChunkSlots;
        }
        spare = &slots[victim];
        Evict(*spare);
      }
      *spare = home;
      home = {};
    }
  }
  if (home.arena_id == id) {
    if (home.epoch == epoch) {
      const uint64_t at = AlignUp(home.cursor, alignment);
      if (at <= home.end && size <= home.end - at) {
        home.cursor = at + size;
        return at - address0;
      }
    }
    Evict(home);  // full (its tail becomes leftover) or stale
  }
  // cursor_->Allocate checks the shared cursor against [begin, end] (one
  // branch) before it claims: a damaged cursor is DATA_LOSS, never a chunk.
  absl::StatusOr<shmalloc::Extent> chunk =
      cursor_->Allocate(options_.chunk_bytes, kClaimGranule);
  if (!chunk.ok()) {
    // Damaged: never a claim. Otherwise too little left for a chunk (or a
    // chunk larger than the arena): the request alone may still fit.
    if (absl::IsDataLoss(chunk.status())) return chunk.status();
    return Direct(AlignUp(size, kClaimGranule),
                  std::max(alignment, kClaimGranule));
  }
  claimed_bytes_.fetch_add(options_.chunk_bytes, std::memory_order_relaxed);
  chunks_.fetch_add(1, std::memory_order_relaxed);
  home = {id, epoch, address0 + chunk->offset,
          address0 + chunk->offset + options_.chunk_bytes};
  const uint64_t at = AlignUp(home.cursor, alignment);
  if (at <= home.end && size <= home.end - at) {
    home.cursor = at + size;
    return at - address0;
  }
  // A large alignment did not fit in the fresh chunk: go direct, keep it.
  return Direct(AlignUp(size, kClaimGranule),
                std::max(alignment, kClaimGranule));
}

absl::StatusOr<uint64_t> Arena::Allocate(uint64_t size, uint64_t alignment) {
  if (alignment == 0) alignment = kDefaultAlignment;
  if (size == 0 || !IsPowerOfTwo(alignment) || alignment > kMaxAlignment) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arena allocate: size must be > 0 and alignment a power of two <= ",
        kMaxAlignment, " (size ", size, ", alignment ", alignment, ")"));
  }
  if (size > end_ - begin_) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena allocate: ", size, " bytes exceed the capacity ",
                     end_ - begin_));
  }
  if (void* p = TryChunk(size, alignment)) {
    return static_cast<uint64_t>(static_cast<std::byte*>(p) - base_);
  }
  absl::StatusOr<uint64_t> at = Slow(size, alignment);
  if (absl::IsResourceExhausted(at.status())) {
    return absl::ResourceExhaustedError(
        absl::StrCat("arena in region '", region_->name(), "' is full: ", size,
                     " bytes requested, ", end_ - begin_, " capacity (",
                     at.status().message(), ")"));
  }
  return at;
}

void Arena::Flush() {
  const uint64_t id = id_.load(std::memory_order_relaxed);
  for (internal::ArenaChunk& c : internal::tls_arena_chunks) {
    if (c.arena_id == id) Evict(c);
  }
}

Arena::Marker Arena::Mark() const {
  shmalloc::Arena::Marker m = cursor_->Mark();
  return {m.offset, m.epoch};
}

absl::Status Arena::Rewind(Marker marker) {
  absl::Status s = cursor_->Rewind({marker.offset, marker.epoch});
  if (!s.ok()) return s;
  Renumber();
  return absl::OkStatus();
}

absl::Status Arena::Reset() {
  if (extent_offset_ == 0) {
    // Arena::Reset's contract is quiescence: the caller vouches for it.
    absl::StatusOr<RegionInfo> info = region_->Reset(/*force=*/true);
    if (!info.ok()) return info.status();
  } else {
    cursor_->Reset();
  }
  Renumber();
  for (std::atomic<uint64_t>* counter :
       {&claimed_bytes_, &handed_out_bytes_, &leftover_bytes_, &chunks_,
        &direct_allocations_, &failed_allocations_}) {
    counter->store(0, std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

ArenaStats Arena::Stats() const {
  const AllocatorStats shared = cursor_->Stats();
  ArenaStats s;
  s.capacity_bytes = shared.capacity_bytes;
  s.used_bytes = shared.used_bytes;
  s.claimed_bytes = claimed_bytes_.load(std::memory_order_relaxed);
  s.handed_out_bytes = handed_out_bytes_.load(std::memory_order_relaxed);
  s.leftover_bytes = leftover_bytes_.load(std::memory_order_relaxed);
  s.open_chunk_bytes = s.claimed_bytes - s.handed_out_bytes - s.leftover_bytes;
  s.chunks = chunks_.load(std::memory_order_relaxed);
  s.direct_allocations = direct_allocations_.load(std::memory_order_relaxed);
  s.failed_allocations = failed_allocations_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace shmalloc::client
