// shmalloc::client::Arena: the hot path. A lock-free bump allocator in shared
// memory, shared by the threads of this process and of other processes; no
// RPC and no syscall per allocation.
//
// Where the shared cursor lives:
//   - ARENA region: the cursor in the segment header (the allocators'
//     Arena metadata at SegmentHeader::arena_meta). Every process that maps
//     the region allocates on it.
//   - any other region: one extent taken from the daemon (Create). Its first
//     page holds the Arena metadata (cursor, bounds, epoch) and the rest is
//     bump space; another process attaches with Open(region, offset()).
//
// Chunked mode (default): a thread claims a chunk (chunk_bytes, default 64
// KiB) from the shared cursor with one atomic operation and bumps privately
// inside it without atomics; a request larger than a chunk goes straight to
// the shared cursor. Unused chunk tails are the price and are counted
// (ArenaStats::leftover_bytes). Direct mode: every allocation is one atomic
// operation on the shared cursor (exact cursors, e.g. for tests).
//
// Invariants (quiescent, summed over every process's Arena on the same
// cursor, no Rewind):
//   used_bytes == sum(claimed_bytes)
//   claimed_bytes == handed_out_bytes + leftover_bytes + open_chunk_bytes
// and no two allocations made since the last Reset overlap.
//
// Epochs: each thread's chunk is tagged with the shared reset epoch and this
// Arena's id; a Reset bumps the epoch (every process's chunks go stale) and
// a Reset or Rewind gives this Arena a fresh id (this process's chunks go
// stale). Rewind does not reach other processes' chunks: in chunked mode
// rewind only when no other process allocates on the same cursor.
//
// Trust: the shared cursor lies in memory every process that maps the region
// can write. Bounds [begin, end) are checked against this process's mapping
// when the Arena is made (Create and Open; DATA_LOSS if they do not fit), and
// every chunk or direct claim is checked on the cursor value it used (one
// predictable branch, in shmalloc::Arena::Allocate): a cursor outside
// [begin, end] is DATA_LOSS from Allocate and nullptr from TryAllocate,
// never a pointer outside the mapping. The inline fast path only bumps
// inside a chunk that passed that check.
//
// Lifetime of an extent arena (M10): the extent belongs to its creator's
// session unless created detached. When the creator's Arena is destroyed or
// its session ends, the daemon frees the extent and may hand it to someone
// else; Arenas that Open()ed it elsewhere are not told. Share an extent arena
// across processes only when created with ArenaOptions::detached (then free
// it explicitly with Region::Free when every user is done), or while the
// creator provably outlives every opener.
//
// Figures: claimed_bytes counts what this Arena moved the shared cursor by,
// except alignment padding in front of direct-mode allocations (chunks and
// large requests keep the cursor on a 64-byte granule, so with alignments
// <= 64 there is none).
//
// Thread-safety: Allocate, TryAllocate, Mark, Flush and Stats are thread-safe
// and lock-free; the slow path takes a process-local mutex only when it
// evicts another Arena's chunk from a thread's full table of 8 slots.
// Reset and Rewind REQUIRE that no thread of any process allocates
// concurrently. The Arena must outlive its use by every thread.
#ifndef CLIENT_INCLUDE_SHMALLOC_ARENA_H_
#define CLIENT_INCLUDE_SHMALLOC_ARENA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shmalloc/types.h"

namespace shmalloc {
class Arena;  // allocators/arena.h: the shared cursor
}  // namespace shmalloc

namespace shmalloc::client {

class Region;

namespace internal {
// One thread's chunk of one Arena: [cursor, end) is private to the thread.
struct ArenaChunk {
  uint64_t arena_id;  // Arena::id_ of the owner; 0 = empty
  uint64_t epoch;     // the shared reset epoch when claimed
  uint64_t cursor;    // address (not offset) of the next free byte
  uint64_t end;       // address one past the chunk
};
// Per thread: an Arena's chunk normally sits in its home slot (id & 7),
// which the inline fast path checks; the slow path looks in the other slots
// before claiming a chunk, and moves a displaced chunk there instead of
// retiring it, so Arenas whose ids collide keep their chunks (review M8).
inline constexpr uint64_t kArenaChunkSlots = 8;
// constinit (zero-initialised, defined in arena.cc): code that includes this
// header sees that no dynamic initialisation exists, so it reaches the array
// through the thread pointer directly, with no call to a TLS init wrapper.
extern thread_local constinit ArenaChunk tls_arena_chunks[kArenaChunkSlots]
    __attribute__((tls_model("initial-exec")));
}  // namespace internal

struct ArenaOptions {
  enum class Mode { kChunked, kDirect };
  Mode mode = Mode::kChunked;
  // Bytes a thread claims at once; a multiple of 64, >= 64.
  uint64_t chunk_bytes = 64 << 10;
  // Create on a non-ARENA region: bytes to take from the daemon (> 4096; the
  // first page holds the metadata). Ignored on ARENA regions and by Open.
  uint64_t capacity_bytes = 0;
  // Create on a non-ARENA region: take the extent detached, so it outlives
  // this session; then nobody frees it but an explicit Region::Free.
  bool detached = false;
};

// This Arena's figures (other processes keep their own), except
// capacity_bytes and used_bytes, which are read from the shared cursor.
struct ArenaStats {
  uint64_t capacity_bytes = 0;    // bump space: end - begin
  uint64_t used_bytes = 0;        // shared cursor - begin, every process
  uint64_t claimed_bytes = 0;     // taken from the shared cursor by this Arena
  uint64_t handed_out_bytes = 0;  // in retired chunks and direct allocations,
                                  // alignment padding included
  uint64_t leftover_bytes = 0;    // unused tails of retired chunks
  uint64_t open_chunk_bytes = 0;  // in chunks threads still hold
  uint64_t chunks = 0;            // chunks claimed
  uint64_t direct_allocations = 0;  // allocations on the shared cursor
  uint64_t failed_allocations = 0;  // refused for lack of space
};

class Arena {
 public:
  // A saved shared-cursor position for Rewind, tied to one reset epoch.
  struct Marker {
    uint64_t offset = 0;
    uint64_t epoch = 0;
  };

  // Returns an Arena on `region`: the segment header's cursor for an ARENA
  // region, else a fresh extent of options.capacity_bytes from the daemon
  // (owned by this session unless options.detached; this Arena frees it on
  // destruction unless detached). INVALID_ARGUMENT for bad options,
  // RESOURCE_EXHAUSTED when the daemon has no room, DATA_LOSS when the
  // metadata is not an arena's or its bounds are not inside the region's
  // heap as mapped here, errors of Region::Allocate.
  static absl::StatusOr<std::unique_ptr<Arena>> Create(
      std::shared_ptr<Region> region, ArenaOptions options = {});
  // Attaches to an arena another process created in `region` at `offset`
  // (its offset()); the caller does not own the extent. INVALID_ARGUMENT
  // when offset is out of range, DATA_LOSS when no arena is there.
  static absl::StatusOr<std::unique_ptr<Arena>> Open(
      std::shared_ptr<Region> region, uint64_t offset,
      ArenaOptions options = {});

  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Returns the address of `size` bytes aligned to `alignment` (a power of
  // two <= kMaxAlignment), or nullptr when the arena is exhausted or the
  // arguments are bad (size 0, bad alignment). The hot path: inline, no
  // atomic operation while the thread's chunk has room.
  // Thread-safe; lock-free.
  void* TryAllocate(uint64_t size,
                    uint64_t alignment = kDefaultAlignment) noexcept;
  // Returns the offset of `size` bytes aligned to `alignment` (0 = 16).
  // INVALID_ARGUMENT (size 0, bad alignment, size > capacity),
  // RESOURCE_EXHAUSTED, DATA_LOSS (the shared cursor was found outside
  // [begin, end]: damaged metadata; only a Reset repairs it).
  // Thread-safe; lock-free.
  absl::StatusOr<uint64_t> Allocate(uint64_t size,
                                    uint64_t alignment = kDefaultAlignment);

  // Retires the calling thread's chunk (its tail becomes leftover), so this
  // thread's figures in Stats() are exact. Thread-safe; lock-free.
  void Flush();
  // Returns the shared cursor now. Allocations made after it (from chunks
  // claimed after it) are released by Rewind. Thread-safe; lock-free.
  Marker Mark() const;
  // Moves the shared cursor back to `marker` and makes this process's chunks
  // stale. FAILED_PRECONDITION for a marker from before a Reset or above the
  // cursor; INVALID_ARGUMENT out of range. State unchanged on error.
  // REQUIRES: no concurrent allocation in any process. Not thread-safe.
  absl::Status Rewind(Marker marker);
  // Releases everything and zeroes this Arena's figures: on an ARENA region
  // through the daemon (ResetRegion, which bumps the region's generation),
  // else locally. Errors of Region::Reset.
  // REQUIRES: no concurrent allocation in any process. Not thread-safe.
  absl::Status Reset();

  // Returns the figures above. Thread-safe; lock-free.
  ArenaStats Stats() const;

  // Returns the address / offset conversions of the region.
  void* ToPointer(uint64_t offset) const { return base_ + offset; }
  // Returns the extent's offset (pass it to Open in another process); 0 on
  // an ARENA region, where the arena is the region itself.
  uint64_t offset() const { return extent_offset_; }
  // Returns the bump space [begin, end).
  uint64_t begin() const { return begin_; }
  uint64_t end() const { return end_; }
  const std::shared_ptr<Region>& region() const { return region_; }
  const ArenaOptions& options() const { return options_; }

 private:
  Arena(std::shared_ptr<Region> region, std::unique_ptr<shmalloc::Arena> cursor,
        uint64_t extent_offset, bool owns_extent, ArenaOptions options);

  // acquire on the shared epoch: pairs with shmalloc::Arena::Reset's release
  // (cursor rewound before the epoch bump), so a chunk claimed after this
  // load with the new epoch comes from post-reset space (review item M7).
  // One load: local invalidation (Rewind) changes id_ instead.
  uint64_t CurrentEpoch() const {
    return shared_epoch_->load(std::memory_order_acquire);
  }
  // The bump inside the calling thread's chunk in its home slot; nullptr
  // when that misses (no chunk, stale, full, bad arguments).
  void* TryChunk(uint64_t size, uint64_t alignment) noexcept;
  void* AllocateSlow(uint64_t size, uint64_t alignment) noexcept;
  absl::StatusOr<uint64_t> Slow(uint64_t size, uint64_t alignment);
  absl::StatusOr<uint64_t> Direct(uint64_t size, uint64_t alignment);
  void Retire(internal::ArenaChunk& chunk);
  // Retires (or drops, when stale or its Arena is gone) a chunk of any Arena
  // and empties the slot.
  void Evict(internal::ArenaChunk& chunk);
  // Gives this Arena a fresh id, so every chunk of this process is stale.
  void Renumber();

  std::shared_ptr<Region> region_;
  std::unique_ptr<shmalloc::Arena> cursor_;    // the shared cursor
  const std::atomic<uint64_t>* shared_epoch_;  // bumped by every Reset
  std::byte* base_;                            // region_->base()
  // Unique in this process, never reused, != 0; changed by Reset and Rewind
  // (which require quiescence), read relaxed by the fast path.
  std::atomic<uint64_t> id_{0};
  uint64_t begin_;  // bump space
  uint64_t end_;
  uint64_t extent_offset_;  // 0 on an ARENA region
  bool owns_extent_;        // free the extent on destruction
  ArenaOptions options_;
  std::atomic<uint64_t> claimed_bytes_{0};
  std::atomic<uint64_t> handed_out_bytes_{0};
  std::atomic<uint64_t> leftover_bytes_{0};
  std::atomic<uint64_t> chunks_{0};
  std::atomic<uint64_t> direct_allocations_{0};
  std::atomic<uint64_t> failed_allocations_{0};
};

inline void* Arena::TryChunk(uint64_t size, uint64_t alignment) noexcept {
  const uint64_t id = id_.load(std::memory_order_relaxed);
  internal::ArenaChunk& c =
      internal::tls_arena_chunks[id & (internal::kArenaChunkSlots - 1)];
  // alignment - 1 < kMaxAlignment with no common bits: a power of two.
  if (c.arena_id == id && alignment - 1 < kMaxAlignment &&
      (alignment & (alignment - 1)) == 0 && c.epoch == CurrentEpoch()) {
    // Addresses: every mapping starts on a kMaxAlignment boundary
    // (client/shm_mapping.cc), so aligning the address aligns the offset.
    const uint64_t at = (c.cursor + alignment - 1) & ~(alignment - 1);
    // size - 1 wraps for size 0, sending it to the slow path.
    if (at <= c.end && size - 1 < c.end - at) {
      c.cursor = at + size;
      return reinterpret_cast<void*>(at);  // NOLINT(performance-no-int-to-ptr)
    }
  }
  return nullptr;
}

inline void* Arena::TryAllocate(uint64_t size, uint64_t alignment) noexcept {
  // TryChunk's body again, so the hit returns without testing for nullptr.
  const uint64_t id = id_.load(std::memory_order_relaxed);
  internal::ArenaChunk& c =
      internal::tls_arena_chunks[id & (internal::kArenaChunkSlots - 1)];
  if (c.arena_id == id && alignment - 1 < kMaxAlignment &&
      (alignment & (alignment - 1)) == 0 && c.epoch == CurrentEpoch()) {
    const uint64_t at = (c.cursor + alignment - 1) & ~(alignment - 1);
    if (at <= c.end && size - 1 < c.end - at) {
      c.cursor = at + size;
      return reinterpret_cast<void*>(at);  // NOLINT(performance-no-int-to-ptr)
    }
  }
  return AllocateSlow(size, alignment);
}

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_ARENA_H_
