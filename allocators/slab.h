// Slab: size-class allocation over the offset range [begin, end).
//
// The range is cut into M = (end - begin) / kSlabBytes slabs of 64 KiB (the
// tail is never handed out). A request goes to the smallest size class that
// holds it and whose natural alignment (the largest power of two dividing the
// class size, capped by AlignmentOf(begin): objects lie at begin +
// slab * 64 KiB + j * size) meets the requested alignment; none does for an
// alignment above that (INVALID_ARGUMENT). Each class keeps a list of its
// partially used slabs; when it has none, it takes a free slab, and a slab
// whose last object is freed goes back to the free slabs, for any class to
// reuse. Within a slab, objects are carved lazily (a bump index `carved`) and
// freed objects form an index free list. Allocate, Free and SizeOf are O(1). A
// class does not borrow from a larger class when it has no room
// (RESOURCE_EXHAUSTED instead).
//
// Sizes above the largest class are INVALID_ARGUMENT: large sizes belong in a
// BUDDY or FREE_LIST region.
//
// Metadata layout (little-endian; offsets from the span start, which must be
// 8-byte aligned; C classes, M slabs, E = kSlabBytes / smallest class):
//   0                   MetaHeader        64 B   param = kSlabBytes
//   64                  SlabState         64 B
//   128                 SlabClass[C]      24 B each
//   128 + 24C           SlabDesc[M]       16 B each
//   128 + 24C + 16M     entry[M][E]       u16 each, per object of each slab
//   AlignUp(.. + 2ME, 8) end (== MetadataBytes)
// entry: bit 15 (kSlabLive) set = live object, bits 0..14 = class size -
// requested size; clear = free object, bits 0..14 = next free object in the
// slab or kSlabNilObject. Entries at index >= carved are meaningless.
//
// Invariants (CheckInvariants verifies all of them):
//   8 <= size[0] < size[1] < ... < size[C-1] <= 32768, each a multiple of 8
//   a slab is free (class == kSlabNoClass, on the free-slab list, counted in
//   free_slabs) or belongs to class c with 1 <= live <= carved <= cap(c),
//   cap(c) = kSlabBytes / size[c]
//   live == #entries with kLive in [0, carved); the slab's free list visits
//   exactly the carved - live other entries, ending in kSlabNilObject
//   a class slab is on its class's (doubly linked) partial list iff live < cap
//   SlabClass.slabs == #slabs of the class; live_objects == sum of their live
//   used_bytes == sum over classes of size * live_objects
//   requested_bytes == sum over live objects of (size - slack)
//   live_allocations == sum of live_objects;  peak_used_bytes >= used_bytes
//   largest_free_bytes == size[C-1] if free_slabs > 0, else the largest size
//   of a class with a partial slab, else 0 (what Allocate(size, 1) could
//   return right now)
//
// Crash atomicity: Allocate and Free Touch() every metadata word before they
// store to it, so with an undo log set (set_undo_log) and a transaction open
// a crash at any store rolls back to the state before the operation. One
// operation logs at most kMaxLoggedWordsPerOp words. Reset is not logged (the
// daemon runs it with no transaction open) but restartable: it stores only
// values fixed by the geometry and reads nothing it stores, so a Reset cut
// short at any store and run again gives the bytes one Reset gives. (Its
// stores are Touch()ed too, only so that a test can stop it at each one.)
//
// Thread-safety: not thread-safe; the daemon holds a per-region lock.
#ifndef ALLOCATORS_SLAB_H_
#define ALLOCATORS_SLAB_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/allocator.h"

namespace shmalloc {

inline constexpr uint64_t kSlabBytes = 64 * 1024;
inline constexpr uint64_t kSlabMaxClassBytes = 32 * 1024;
inline constexpr uint64_t kSlabMaxClasses = 64;
inline constexpr uint32_t kSlabLayoutVersion = 1;   // bump on any change below
inline constexpr uint16_t kSlabLive = 0x8000;       // entry: a live object
inline constexpr uint16_t kSlabLowMask = 0x7fff;    // entry: slack or next
inline constexpr uint16_t kSlabNilObject = 0x7fff;  // entry/free_head: none
inline constexpr uint16_t kSlabNoClass = 0xffff;    // SlabDesc.cls: free slab
inline constexpr uint32_t kSlabNilSlab = 0xffffffff;  // list link: none
inline constexpr uint64_t kSlabStateOffset = sizeof(MetaHeader);
inline constexpr uint64_t kSlabClassesOffset = kSlabStateOffset + 64;

// The mutable figures of a Slab, right after the MetaHeader.
struct SlabState {
  uint32_t layout_version;      // kSlabLayoutVersion
  uint32_t num_classes;         // C
  uint32_t num_slabs;           // M
  uint32_t entries_per_slab;    // E = kSlabBytes / size[0]
  uint32_t free_slab_head;      // first free slab or kSlabNilSlab
  uint32_t free_slabs;          // length of the free-slab list
  uint64_t used_bytes;          // sum of class sizes of live objects
  uint64_t requested_bytes;     // sum of requested sizes of live objects
  uint64_t live_allocations;    // live objects
  uint64_t peak_used_bytes;     // max used_bytes since creation
  uint64_t failed_allocations;  // RESOURCE_EXHAUSTED answers
};
static_assert(sizeof(SlabState) == 64);
static_assert(offsetof(SlabState, used_bytes) == 24);
static_assert(kSlabClassesOffset == kSlabStateOffset + sizeof(SlabState));

// One size class.
struct SlabClass {
  uint32_t size;          // object bytes, a multiple of 8
  uint32_t partial_head;  // first slab with a free object, or kSlabNilSlab
  uint32_t slabs;         // slabs owned by this class
  uint32_t reserved;      // zero
  uint64_t live_objects;  // live objects of this class
};
static_assert(sizeof(SlabClass) == 24);
static_assert(alignof(SlabClass) == 8);

// One slab.
struct SlabDesc {
  uint16_t cls;        // class index, or kSlabNoClass for a free slab
  uint16_t live;       // live objects
  uint32_t prev;       // previous slab in its list, or kSlabNilSlab
  uint32_t next;       // next slab in its list, or kSlabNilSlab
  uint16_t free_head;  // first free carved object, or kSlabNilObject
  uint16_t carved;     // objects ever handed out since assignment
};
static_assert(sizeof(SlabDesc) == 16);
static_assert(offsetof(SlabDesc, free_head) == 12);

// Per-class figures, for monitoring.
struct SlabClassStats {
  uint64_t class_bytes = 0;       // object size
  uint64_t objects_per_slab = 0;  // kSlabBytes / class_bytes
  uint64_t slabs = 0;             // slabs owned by the class
  uint64_t live_objects = 0;      // live objects of the class
};

class Slab final : public OffsetAllocator {
 public:
  // The most distinct 8-byte metadata words one Allocate or one Free stores
  // to, i.e. what its transaction logs (a batch of n operations logs at most
  // n times this; the daemon sizes a region's undo log from it). Words are
  // SlabState {free_slab_head|free_slabs, used, requested, live, peak,
  // failed}, SlabClass {size|partial_head, slabs, live_objects}, SlabDesc
  // {cls|live|prev, next|free_head|carved} and one word of entries.
  //   Allocate taking a free slab: state.free_slab_head, the next free
  //   slab's prev, the slab's 2 words, class partial_head, class slabs (6);
  //   the object: its entry word (the slab's words again) (1); then class
  //   live_objects, used, requested, live, peak (5): 12. (It never fills a
  //   fresh slab: every class holds >= 2 objects.) From a partial slab: the
  //   slab's 2 words, the entry, partial_head and the next partial slab's
  //   prev when the slab fills, live_objects and 4 counters: 10. Failing: 1.
  //   Free: the entry, the slab's 2 words (3); giving the slab back: its
  //   partial-list neighbours' links or partial_head (2), class slabs (1),
  //   the first free slab's prev and free_slab_head (2); live_objects, used,
  //   requested, live (4): 12.
  static constexpr uint64_t kMaxLoggedWordsPerOp = 12;

  // Returns the metadata bytes Create needs for `options` (begin, end,
  // size_classes; empty = 16, 32, ..., 16384). INVALID_ARGUMENT for a bad
  // range, classes that are not ascending multiples of 8 in [8, 32768] (at
  // most 64), or a range smaller than one slab. Thread-safe.
  static absl::StatusOr<uint64_t> MetadataBytes(
      const AllocatorOptions& options);

  // Returns INVALID_ARGUMENT unless `sizes` are 1 to kSlabMaxClasses strictly
  // ascending multiples of 8 in [8, kSlabMaxClassBytes]. Thread-safe.
  static absl::Status ValidateSizeClasses(const std::vector<uint64_t>& sizes);

  // Formats `meta` for an empty slab allocator and returns a view of it.
  // INVALID_ARGUMENT as for MetadataBytes, or when `meta` is smaller than
  // MetadataBytes(options) (the message names both sizes) or not 8-byte
  // aligned; `meta` is unchanged on error.
  // REQUIRES: `meta` outlives the returned object. Not thread-safe.
  static absl::StatusOr<std::unique_ptr<Slab>> Create(
      std::span<std::byte> meta, const AllocatorOptions& options);

  // Re-opens metadata written by Create, possibly copied to another address.
  // Returns DATA_LOSS when the header is not slab metadata, its geometry is
  // inconsistent or CheckInvariants fails; INVALID_ARGUMENT when `meta` is
  // not 8-byte aligned. Never modifies `meta`.
  // REQUIRES: `meta` outlives the returned object. Not thread-safe.
  static absl::StatusOr<std::unique_ptr<Slab>> Attach(
      std::span<std::byte> meta);

  // Returns an object of the smallest fitting class (Extent.size_bytes is the
  // class size). INVALID_ARGUMENT for size 0, a bad alignment, a size above
  // the largest class, or no class both large and aligned enough;
  // RESOURCE_EXHAUSTED when the class has no free object and no slab is free
  // (counted). State unchanged on error. Not thread-safe.
  [[nodiscard]] absl::StatusOr<Extent> Allocate(uint64_t size,
                                                uint64_t alignment) override;

  // Frees the live object starting at `offset`. INVALID_ARGUMENT outside
  // [begin, end); FAILED_PRECONDITION when `offset` is not the start of a
  // live object. State unchanged on error. Not thread-safe.
  [[nodiscard]] absl::Status Free(uint64_t offset) override;

  // Returns the class size of the live object at `offset`; errors as for
  // Free. Not thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> SizeOf(uint64_t offset) const override;

  // Frees every object and slab; peak and failure counters are kept. O(M).
  // Not logged in the undo log; restartable (see the file comment). Not
  // thread-safe.
  void Reset() override;

  // Returns the current figures. O(C). Not thread-safe.
  AllocatorStats Stats() const override;

  // Returns per-class figures, smallest class first. O(C). Not thread-safe.
  std::vector<SlabClassStats> ClassStats() const;

  // Returns OK when every invariant in the file comment holds, DATA_LOSS for
  // a bad header, otherwise INTERNAL naming the first broken one. O(M * E).
  // Not thread-safe.
  [[nodiscard]] absl::Status CheckInvariants() const override;

  Strategy strategy() const override { return Strategy::kSlab; }
  uint64_t begin() const override { return begin_; }
  uint64_t end() const override { return end_; }

 private:
  Slab(std::span<std::byte> meta, uint64_t begin, uint64_t end,
       uint32_t num_classes, uint32_t num_slabs, uint32_t entries_per_slab);

  SlabState& state() const;
  uint16_t* entries(uint32_t slab) const;
  void PushFront(uint32_t& head, uint32_t slab);
  void Unlink(uint32_t& head, uint32_t slab);
  // Returns the slab and object index of the live object at `offset`.
  absl::StatusOr<std::pair<uint32_t, uint32_t>> FindLive(uint64_t offset) const;
  void InitSlabs();

  std::span<std::byte> meta_;
  uint64_t begin_;
  uint64_t end_;
  uint32_t num_classes_;
  uint32_t num_slabs_;
  uint32_t entries_per_slab_;
  SlabClass* classes_;  // into meta_
  SlabDesc* slabs_;     // into meta_
  uint16_t* entries_;   // into meta_
};

}  // namespace shmalloc

#endif  // ALLOCATORS_SLAB_H_
