// Arena: a lock-free bump allocator over the offset range [begin, end).
//
// Allocate moves one shared cursor forward with a single compare-and-swap; no
// allocation can be freed on its own. Space comes back only as a whole, with
// Reset(), or by rewinding the cursor to a Marker taken earlier (a stack
// allocator, as in the seed). This is the strategy behind ARENA regions: the
// daemon places the metadata in the data file's segment header
// (common/segment_header.h, at kArenaMetaOffset) and every client that maps the
// region attaches to it and bump-allocates without any RPC.
//
// Byte layout of the metadata span (little-endian; 192 bytes; the span must be
// 8-byte aligned and should be 64-byte aligned so each line below is one cache
// line):
//   0    MetaHeader           64 bytes; strategy kArena, param 0
//   64   cursor               atomic u64: next free offset, in [begin, end]
//   72   reserved             u64[7], zero (the cursor owns its cache line)
//   128  peak_used_bytes      atomic u64: max(cursor - begin) folded in by
//                             Reset and Rewind
//   136  failed_allocations   atomic u64: RESOURCE_EXHAUSTED answers
//   144  epoch                atomic u64: bumped by every Reset
//   152  layout_version       u32: kArenaLayoutVersion
//   156  reserved             u32 + u64[4], zero
//
// Invariants (at quiescent points):
//   begin <= cursor <= end
//   used_bytes == cursor - begin          (alignment padding counts as used)
//   used_bytes + free_bytes == capacity_bytes == end - begin
//   largest_free_bytes == free_bytes      (fragmentation == 0)
//   peak_used_bytes == max(peak_used_bytes field, used_bytes) <= capacity
//   every extent handed out since the last Reset/Rewind lies in
//   [begin, cursor) and no two overlap (the cursor only grows between them).
//
// What Stats() cannot know: the arena does not count individual allocations,
// because a counter would be a second atomic read-modify-write on the hot path
// (about 6 ns here, doubling the cost of Allocate). Therefore
//   live_allocations == 0        always ("not tracked", not "none live");
//   requested_bytes == used_bytes (padding is indistinguishable from data), so
//   internal_fragmentation == 0.
//
// Trust: in an ARENA region the metadata lies in the data file, which every
// client maps writable, so the cursor may hold anything. Every function that
// reads it checks begin <= cursor <= end on the value it loaded (one
// predictable branch) and treats anything else as damage: Allocate and Rewind
// return DATA_LOSS and change nothing (no CAS), Stats and Mark read the arena
// as full, Reset rewinds it without folding the bad value into the peak. No
// extent outside [begin, end) is ever returned, whatever the metadata holds
// (begin and end are cached at Create/Attach, so scribbling the header's
// bounds afterwards has no effect on this view). DATA_LOSS rather than
// RESOURCE_EXHAUSTED: the arena is damaged, not full, and callers that only
// want "no memory" treat every non-OK answer alike.
//
// Reset order (matters when clients claim chunks while the daemon resets,
// which it cannot prevent): the cursor is rewound first, then the epoch is
// bumped with release; readers load the epoch with acquire (epoch(), Mark)
// before they touch the cursor. A claim that sees the new epoch therefore
// sees the rewound cursor, and a claim that raced with the Reset is at worst
// tagged with the old epoch, i.e. stale and discarded, never an old-space
// chunk that passes as current (tests/stress/arena_reset_stress.cc).
//
// Thread-safety: Allocate, Mark, Stats, Free, SizeOf and CheckInvariants are
// thread-safe and lock-free, also across processes sharing the metadata.
// Reset and Rewind require that no other thread allocates concurrently (they
// declare every extent above the new cursor dead, which only the caller can
// know).
#ifndef ALLOCATORS_ARENA_H_
#define ALLOCATORS_ARENA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/allocator.h"

namespace shmalloc {

inline constexpr uint32_t kArenaLayoutVersion = 1;

// The arena's metadata, exactly as it lies in the span. Offsets and counters
// only, so a byte copy of it is a valid arena at any address.
struct ArenaMeta {
  MetaHeader header;                         // strategy kArena
  std::atomic<uint64_t> cursor;              // next free offset
  uint64_t reserved0[7];                     // zero; pads the cursor line
  std::atomic<uint64_t> peak_used_bytes;     // folded in by Reset/Rewind
  std::atomic<uint64_t> failed_allocations;  // RESOURCE_EXHAUSTED count
  std::atomic<uint64_t> epoch;               // bumped by Reset
  uint32_t layout_version;                   // kArenaLayoutVersion
  uint32_t reserved1;                        // zero
  uint64_t reserved2[4];                     // zero
};
static_assert(sizeof(ArenaMeta) == 192);
static_assert(alignof(ArenaMeta) == 8);
static_assert(offsetof(ArenaMeta, cursor) == 64);
static_assert(offsetof(ArenaMeta, peak_used_bytes) == 128);
static_assert(offsetof(ArenaMeta, failed_allocations) == 136);
static_assert(offsetof(ArenaMeta, epoch) == 144);
static_assert(offsetof(ArenaMeta, layout_version) == 152);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t));

class Arena final : public OffsetAllocator {
 public:
  // A saved cursor position. `epoch` ties it to one Reset period, so a marker
  // taken before a Reset cannot rewind the arena after it.
  struct Marker {
    uint64_t offset = 0;  // the cursor when Mark() was called
    uint64_t epoch = 0;   // the arena's reset epoch at that time
    friend bool operator==(const Marker&, const Marker&) = default;
  };

  // Returns the metadata bytes an arena needs (sizeof(ArenaMeta), always <=
  // kArenaMetaBytes). INVALID_ARGUMENT when the range is bad (see
  // ValidateRange) or options.strategy is neither kArena nor kUnspecified.
  // Thread-safe.
  static absl::StatusOr<uint64_t> MetadataBytes(
      const AllocatorOptions& options);

  // Formats `meta` as an empty arena over [options.begin, options.end) and
  // returns a view of it. INVALID_ARGUMENT for bad options, a span smaller
  // than MetadataBytes(options) (the message names both sizes) or a span not
  // 8-byte aligned. On error `meta` is not written.
  // REQUIRES: nobody else uses `meta` during the call. Not thread-safe.
  static absl::StatusOr<std::unique_ptr<Arena>> Create(
      std::span<std::byte> meta, const AllocatorOptions& options);

  // Re-opens an arena formatted by Create, possibly at another address or in
  // another process. DATA_LOSS when the header is not an arena's or an
  // invariant does not hold; INVALID_ARGUMENT when `meta` is not 8-byte
  // aligned. Never writes `meta`. Thread-safe.
  static absl::StatusOr<std::unique_ptr<Arena>> Attach(
      std::span<std::byte> meta);

  // Rewrites `meta` from `options` alone, whatever it holds (the daemon's
  // ResetRegion: the metadata lies in memory every client can write, so a
  // reset must not trust it): the cursor first (begin), then every header
  // and layout word, the peak clamped to the capacity, and last the epoch
  // bumped (release), so markers and chunks of before are stale. The epoch
  // keeps counting (it never goes back, whatever a client wrote). Same
  // errors as Create. Restartable: run again after a crash at any store, it
  // ends in a formatted, empty arena.
  // REQUIRES: no concurrent Allocate (chunks claimed meanwhile are stale).
  static absl::StatusOr<std::unique_ptr<Arena>> Reformat(
      std::span<std::byte> meta, const AllocatorOptions& options);

  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Reserves `size` bytes at the next multiple of `alignment` (0 =
  // kDefaultAlignment) and returns {offset, size}. INVALID_ARGUMENT for size
  // 0, size > capacity, or a bad alignment; RESOURCE_EXHAUSTED when the rest
  // of the arena is too small (counted in failed_allocations); DATA_LOSS when
  // the shared cursor is outside [begin, end] (damaged metadata; not
  // counted, no CAS). State unchanged on error. A returned extent always
  // lies in [begin, end). Exactly one atomic read-modify-write on success.
  // Thread-safe; lock-free.
  [[nodiscard]] absl::StatusOr<Extent> Allocate(uint64_t size,
                                                uint64_t alignment) override;

  // Always fails: INVALID_ARGUMENT for an offset outside [begin, end),
  // otherwise FAILED_PRECONDITION ("arena frees only as a whole: reset or
  // rewind"). Changes nothing. Thread-safe; lock-free.
  [[nodiscard]] absl::Status Free(uint64_t offset) override;

  // Always fails: INVALID_ARGUMENT outside [begin, end), otherwise
  // UNIMPLEMENTED (the arena keeps no per-extent sizes). Thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> SizeOf(uint64_t offset) const override;

  // Returns the current cursor as a Marker for Rewind; a damaged cursor
  // (outside [begin, end]) reads as end. Thread-safe; lock-free.
  Marker Mark() const;

  // Moves the cursor back to `marker`, releasing everything allocated since
  // Mark() returned it. INVALID_ARGUMENT when marker.offset is outside
  // [begin, end]; FAILED_PRECONDITION when it is above the cursor (already
  // rewound past it) or from an earlier epoch (taken before a Reset);
  // DATA_LOSS when the shared cursor is outside [begin, end] (only Reset
  // repairs that). State unchanged on error. Rewinding to the cursor itself is
  // OK and a no-op. REQUIRES: no concurrent Allocate, Rewind or Reset. Not
  // thread-safe.
  [[nodiscard]] absl::Status Rewind(Marker marker);

  // Releases everything: cursor = begin, then epoch + 1 (release; old
  // markers and chunks tagged with the old epoch become invalid). Peak and
  // failure counters are kept; a damaged cursor is not folded into the peak,
  // so Reset also repairs a scribbled cursor.
  // REQUIRES: no concurrent Allocate, Rewind or Reset. Not thread-safe.
  void Reset() override;

  // Returns a snapshot; see the header comment for live_allocations and
  // requested_bytes. A damaged cursor reads as a full arena (used ==
  // capacity, free == 0). Thread-safe; lock-free.
  AllocatorStats Stats() const override;

  // Returns OK when the header is an arena's and begin <= cursor <= end and
  // peak <= capacity; otherwise DATA_LOSS (header) or INTERNAL. O(1).
  // Thread-safe (the checked figures are monotonic between Resets).
  [[nodiscard]] absl::Status CheckInvariants() const override;

  Strategy strategy() const override { return Strategy::kArena; }
  uint64_t begin() const override { return begin_; }
  uint64_t end() const override { return end_; }
  // Returns the reset epoch (number of Resets since Create). acquire: a
  // caller that sees epoch N and then reads the cursor sees Reset N's
  // rewind or later. Thread-safe; lock-free.
  uint64_t epoch() const;

  // Test hook: Reset calls `hook` between its two stores (after the cursor
  // is rewound, before the epoch is bumped), process-wide; nullptr turns it
  // off. It lets a test hold that window open while other threads claim,
  // as a descheduled daemon thread would (tests/stress/arena_reset_stress.cc).
  // REQUIRES: no concurrent Reset while it is being set. Not thread-safe.
  static void SetResetWindowHookForTesting(void (*hook)());

 private:
  Arena(ArenaMeta* meta, uint64_t begin, uint64_t end)
      : meta_(meta), begin_(begin), end_(end) {}

  absl::StatusOr<Extent> AllocateSlow(uint64_t size, uint64_t alignment);
  // Returns true when begin_ <= cursor <= end_ (one compare: below begin_
  // the difference wraps to more than the capacity).
  bool CursorIsValid(uint64_t cursor) const {
    return cursor - begin_ <= end_ - begin_;
  }
  // Returns the DATA_LOSS status for a cursor outside [begin_, end_].
  absl::Status CorruptCursorError(uint64_t cursor) const;

  ArenaMeta* meta_;  // points into the caller's span
  uint64_t begin_;   // cached from meta_->header
  uint64_t end_;     // cached from meta_->header
};

}  // namespace shmalloc

#endif  // ALLOCATORS_ARENA_H_
