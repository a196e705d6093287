// FreeList: a general-size, good-fit allocator with immediate coalescing
// (TLSF-like), over the offset range [begin, end) of a heap it never touches.
//
// Every extent of the heap, free or live, is described by one node of a fixed
// node table in the metadata span; nodes are chained by address (so a freed
// extent merges with free neighbours at once) and free nodes also sit in one
// of 64 x 16 segregated size bins with two-level bitmaps (O(1) search for a
// bin that surely fits). A chained hash table maps a live extent's offset to
// its node, so Free and SizeOf are O(1) expected and reject every bad offset:
// hash_slots >= 2 * max_extents bucket heads, and a live node's link fields
// (its bin links while free) chain it into its bucket. The table has a fixed
// size, so the load stays <= 1/2 without ever resizing.
//
// Why chaining and no resize: every Allocate and Free is one undo-log
// transaction whose log is bounded, so an operation may store only O(1)
// words. The former design (linear probing over an active prefix that was
// rehashed between loads 1/8 and 1/2) rewrote the whole table in one
// operation now and then, and its backward-shift deletion moves as many
// slots as the cluster is long. With doubly linked bucket chains an insert
// stores 3 words and an erase 3, whatever the chains hold; a long chain
// costs only reads. Keeping the table derived (not logged, rebuilt at
// Attach) was rejected because an in-process Abort would leave it stale.
// What is lost is cache residency of a small active prefix: a lookup now
// reads one random bucket of the full table.
//
// Sizes are rounded up to kGranule = 16 bytes; every extent starts on a
// granule. Alignments above 16 (up to kMaxAlignment) are honoured by splitting
// the unaligned head of a free extent off as a free extent of its own.
//
// Metadata byte layout (little-endian; all positions relative to the span):
//   0            MetaHeader        64 B   param = max_extents
//   64           FreeListControl   4,456 B  counters, bitmaps, bin heads
//   nodes_offset Node[max_extents] 40 B each (64-aligned)
//   hash_offset  uint32_t[hash_slots]  bucket head: node index or kNil
//                                      (64-aligned)
//   total        = hash_offset + 4 * hash_slots  (== MetadataBytes)
//
// Invariants (CheckInvariants verifies each one):
//   address chain from head_node: offsets begin = o_0 < o_1 < ... < o_k,
//     o_{i+1} == o_i + size_i, o_k + size_k == end, tail_node == node k;
//   no two address-adjacent nodes are both kFree   (coalescing is complete);
//   #kFree + #kLive == chain length; #kUnused == length of the unused list;
//   #kFree + #kLive + #kUnused == max_extents;
//   node n kFree  <=> n is in bin BinOf(size_n / kGranule), exactly once;
//   bin_head[f][s] != kNil <=> bit s of sl_bitmap[f]; sl_bitmap[f] != 0 <=>
//     bit f of fl_bitmap;
//   node n kLive  <=> n is in the chain of bucket HomeSlot(offset_n), exactly
//     once (doubly linked by link_prev/link_next, kNil-terminated); the
//     chains hold exactly the live nodes; 2^hash_bits == hash_slots;
//   used_bytes == sum of size over kLive; requested_bytes == sum of
//     (size - slack) over kLive; live_allocations == #kLive;
//   peak_used_bytes >= used_bytes; slack < 2 * kGranule;
//   largest_free == max size over kFree (0 when none), when kept
//     (counters_version == kFreeListCountersVersion).
//
// largest_free: an insert into a bin raises it; removing a node of that size
// marks it stale for the rest of the operation; an insert of at least the
// old size makes it exact again (a Free's merged extent always does), else
// the operation ends by walking the highest non-empty bin (only an Allocate
// that took the largest extent does, and FindFit already reads that bin).
//
// Crash atomicity: Allocate and Free Touch() every metadata word before they
// store to it, so with an undo log set (set_undo_log) and a transaction open
// a crash at any store rolls back to the state before the operation. One
// operation logs at most FreeList::kMaxLoggedWordsPerOp words. Reset is not
// logged (the daemon runs it with no transaction open) but restartable: it
// stores only values fixed by the geometry and reads back only what it stored
// itself, so a Reset cut short at any store and run again gives the bytes one
// Reset gives. (Its stores are Touch()ed too, only so that a test can stop it
// at each one; fields already holding their value are not stored.)
//
// Thread-safety: not thread-safe; the daemon holds a per-region lock.
#ifndef ALLOCATORS_FREE_LIST_H_
#define ALLOCATORS_FREE_LIST_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/allocator.h"

namespace shmalloc {
namespace free_list_internal {

inline constexpr uint32_t kNil = 0xFFFFFFFFu;  // "no node" / empty hash slot
inline constexpr uint64_t kGranule = 16;       // size and offset granularity
inline constexpr uint32_t kSlBits = 4;         // log2(second-level bins)
inline constexpr uint32_t kSlCount = 1u << kSlBits;
inline constexpr uint32_t kFlCount = 64;  // first-level bins (covers 2^64 B)
// Largest accepted max_extents: indices are uint32_t and the hash table holds
// at least twice as many slots, still addressable by a uint32_t.
inline constexpr uint64_t kMaxExtentsLimit = (uint64_t{1} << 31) - 1;
// Free extents examined in a bin that may hold blocks too small (the request's
// own bin) before moving on to a bin whose blocks all fit: good fit, bounded.
// (The highest non-empty bin is scanned whole, so that RESOURCE_EXHAUSTED and
// largest_free_bytes are exact: O(extents in that bin), reads only.)
inline constexpr uint32_t kScanLimit = 16;

enum NodeState : uint32_t {
  kUnused = 0,  // on the unused-node list, describes nothing
  kFree = 1,    // a free extent, in its size bin
  kLive = 2,    // an allocation, in the hash table
};

// One extent descriptor. 40 bytes.
struct Node {
  uint64_t offset;     // first heap offset of the extent, multiple of kGranule
  uint64_t size;       // bytes (multiple of kGranule except the tail extent)
  uint32_t prev_addr;  // node of the extent just below, kNil at begin
  uint32_t next_addr;  // node of the extent just above, kNil at end
  uint32_t link_prev;  // kFree: previous node in its bin; kLive: previous
                       // node in its hash bucket; kNil at the head
  uint32_t link_next;  // kFree: next node in its bin; kLive: next node in its
                       // hash bucket; kUnused: next unused; kNil at the end
  uint32_t state;      // a NodeState
  uint32_t slack;      // kLive: size - requested bytes; otherwise 0
};
static_assert(sizeof(Node) == 40);
static_assert(alignof(Node) == 8);
static_assert(offsetof(Node, prev_addr) == 16);
static_assert(offsetof(Node, state) == 32);

// The allocator's mutable state, right after the MetaHeader. 4,456 bytes.
struct FreeListControl {
  uint64_t max_extents;          // nodes in the node table (== header.param)
  uint64_t hash_slots;           // power of two >= 2 * max_extents
  uint64_t nodes_offset;         // byte position of the node table in the span
  uint64_t hash_offset;          // byte position of the hash table in the span
  uint64_t used_bytes;           // sum of sizes of kLive nodes
  uint64_t requested_bytes;      // sum of (size - slack) of kLive nodes
  uint64_t live_allocations;     // number of kLive nodes
  uint64_t peak_used_bytes;      // max used_bytes since creation
  uint64_t failed_allocations;   // Allocate calls that ran out of space/nodes
  uint64_t free_extents;         // number of kFree nodes
  uint64_t fl_bitmap;            // bit f set <=> sl_bitmap[f] != 0
  uint32_t head_node;            // node whose offset == begin
  uint32_t tail_node;            // node whose offset + size == end
  uint32_t unused_head;          // first kUnused node, kNil when none
  uint32_t hash_bits;            // log2(hash_slots)
  uint32_t sl_bitmap[kFlCount];  // bit s set <=> bin_head[f][s] != kNil
  uint32_t bin_head[kFlCount][kSlCount];  // first kFree node per bin or kNil
  // Added in the padding before the node table (files made before them hold
  // zeros there): the size of the largest kFree node, kept by every
  // Allocate/Free so Stats() is O(1); valid when counters_version is
  // kFreeListCountersVersion, 0 = not kept yet (Stats() walks the top bin
  // until UpgradeCounters()).
  uint64_t largest_free;
  uint64_t counters_version;
  uint64_t reserved;  // zero
};
inline constexpr uint64_t kFreeListCountersVersion = 1;
static_assert(sizeof(FreeListControl) == 4480);
static_assert(offsetof(FreeListControl, largest_free) == 4456);
static_assert(offsetof(FreeListControl, head_node) == 88);
static_assert(offsetof(FreeListControl, sl_bitmap) == 104);
static_assert(offsetof(FreeListControl, bin_head) == 360);
// The node table stays where files made before largest_free put it.
static_assert(sizeof(MetaHeader) + sizeof(FreeListControl) == 4544);

inline constexpr uint64_t kControlOffset = sizeof(MetaHeader);

// A size bin: first level ~ log2(granules), second level its next kSlBits
// bits. Extents of g granules live in BinOf(g); below kSlCount granules every
// size has its own bin.
struct BinIndex {
  uint32_t fl;  // first level, < kFlCount
  uint32_t sl;  // second level, < kSlCount
};
inline BinIndex BinOf(uint64_t granules) {
  if (granules < kSlCount) return {0, static_cast<uint32_t>(granules)};
  const uint32_t lg = 63 - std::countl_zero(granules);
  return {lg - (kSlBits - 1),
          static_cast<uint32_t>(granules >> (lg - kSlBits)) & (kSlCount - 1)};
}

}  // namespace free_list_internal

class FreeList final : public OffsetAllocator {
 public:
  // The most distinct 8-byte metadata words one Allocate or one Free stores
  // to, i.e. what its transaction logs (a batch of n operations logs at most
  // n times this; the daemon sizes a region's undo log from it). A node is 5
  // words {offset, size, prev_addr|next_addr, link_prev|link_next,
  // state|slack}; the control words are the counters, fl_bitmap,
  // head_node|tail_node, unused_head, and one word each of sl_bitmap and
  // bin_head per bin touched.
  //   Allocate that splits both an alignment gap g and a rest r off node n
  //   (the worst case): the 5 words of each of n, g and r (15); the node
  //   below g and the node above r, one address word each, or the
  //   head|tail word (2); n's old bin: its neighbours' links or bin_head
  //   and sl_bitmap (2); the old heads of g's and r's bins (2) and those
  //   bins' bin_head and sl_bitmap words (4); fl_bitmap, free_extents,
  //   unused_head (3); n's bucket word and the old bucket head's links (2);
  //   used, requested, live, peak (4): 34.
  //   Free that merges with both neighbours, p below and x above: n's and
  //   x's 5 words (they become unused) and p's 4 (its offset stays) (14);
  //   n's bucket neighbours' links or the bucket word (2); p's and x's old
  //   bins (2 + 2); the node above x, one word, or head|tail (1); the old
  //   head of p's new bin, its bin_head and sl_bitmap words (3); fl_bitmap,
  //   free_extents, unused_head (3); used, requested, live (3): 30.
  //   A failing Allocate: 1 (failed_allocations).
  //   Both: + largest_free (1).
  static constexpr uint64_t kMaxLoggedWordsPerOp = 35;

  // Returns the metadata bytes `options` needs (layout above): about
  // 48 B per extent descriptor. INVALID_ARGUMENT for a bad range, a
  // capacity below 16 bytes, or max_extents above 2^31 - 1.
  // Thread-safe.
  static absl::StatusOr<uint64_t> MetadataBytes(
      const AllocatorOptions& options);

  // Formats `meta` as an empty allocator over [options.begin, options.end)
  // whose whole capacity is one free extent, and returns a view of it.
  // INVALID_ARGUMENT for bad options (as MetadataBytes, or a strategy other
  // than kFreeList / kUnspecified), a span smaller than MetadataBytes (the
  // message names both sizes) or a span not 8-byte aligned; `meta` is
  // unchanged on error. Thread-safe for distinct spans.
  static absl::StatusOr<std::unique_ptr<FreeList>> Create(
      std::span<std::byte> meta, const AllocatorOptions& options);

  // Re-opens metadata written by Create, possibly copied to another address.
  // DATA_LOSS when the header is not FreeList metadata, its geometry does not
  // fit the span, or CheckInvariants fails (the message names the broken
  // invariant); INVALID_ARGUMENT for a span not 8-byte aligned. Never writes
  // to `meta`. Thread-safe for distinct spans.
  static absl::StatusOr<std::unique_ptr<FreeList>> Attach(
      std::span<std::byte> meta);

  // Reserves round_up(size, 16) bytes (up to 31 more for the heap's tail)
  // at an offset that is a multiple of `alignment` (0 = 16), taking a good
  // fit among the free extents and splitting off what is left. Returns the
  // extent; INVALID_ARGUMENT for size 0, size > capacity or a bad alignment;
  // RESOURCE_EXHAUSTED when no free extent fits or no extent descriptor is
  // left for a split (the message names max_extents); both counted in
  // failed_allocations. State otherwise unchanged on error. O(1) typical.
  // Not thread-safe.
  [[nodiscard]] absl::StatusOr<Extent> Allocate(uint64_t size,
                                                uint64_t alignment) override;

  // Releases the live extent starting at `offset` and merges it with free
  // neighbours. INVALID_ARGUMENT for an offset outside [begin, end);
  // FAILED_PRECONDITION when `offset` is not the start of a live extent
  // (double free, interior, misaligned, never allocated). State unchanged on
  // error. O(1). Not thread-safe.
  [[nodiscard]] absl::Status Free(uint64_t offset) override;

  // Returns the reserved size of the live extent at `offset`; errors as for
  // Free. Not thread-safe against Allocate/Free.
  [[nodiscard]] absl::StatusOr<uint64_t> SizeOf(uint64_t offset) const override;

  // Frees every live extent: the capacity becomes one free extent again.
  // peak_used_bytes and failed_allocations are kept. O(max_extents +
  // hash_slots). Not logged in the undo log; restartable (see the file
  // comment). Not thread-safe.
  void Reset() override;

  // Returns a snapshot; O(1) (largest_free_bytes is kept in the metadata;
  // metadata from before it: a scan of the highest non-empty bin until
  // UpgradeCounters). Not thread-safe against Allocate/Free.
  AllocatorStats Stats() const override;

  bool NeedsCounterUpgrade() const override {
    return control_->counters_version !=
           free_list_internal::kFreeListCountersVersion;
  }
  // Stores largest_free from one scan of the top bin, then counters_version
  // (both Touch()ed). Not thread-safe against Allocate/Free.
  void UpgradeCounters() override;

  // Returns OK when every invariant in the header comment holds, otherwise
  // INTERNAL naming the first broken one (DATA_LOSS for a bad header).
  // Safe on arbitrary bytes: every index is bounds-checked before use.
  // O(max_extents + hash_slots). Not thread-safe against Allocate/Free.
  [[nodiscard]] absl::Status CheckInvariants() const override;

  Strategy strategy() const override { return Strategy::kFreeList; }
  uint64_t begin() const override { return begin_; }
  uint64_t end() const override { return end_; }
  // Returns the number of extent descriptors (live + free) available.
  uint64_t max_extents() const { return max_extents_; }

 private:
  using Node = free_list_internal::Node;
  using Control = free_list_internal::FreeListControl;

  explicit FreeList(std::span<std::byte> meta);

  // Formats the nodes, bins and hash table as one free extent; keeps peak and
  // failure counters. Never Touch()es (Reset is not logged) and restartable:
  // see the file comment.
  void Format();
  void InsertInBin(uint32_t n);
  void RemoveFromBin(uint32_t n);
  // The largest kFree size, by a scan of the highest non-empty bin.
  uint64_t ScanLargestFree() const;
  // Makes largest_free exact again after an operation that left it stale.
  void SettleLargestFree();
  uint32_t PopUnused();
  void PushUnused(uint32_t n);
  // Returns the node whose free extent will hold `size` at `alignment`, or
  // kNil.
  uint32_t FindFit(uint64_t size, uint64_t alignment) const;
  // Returns the live node whose extent starts at `offset`, or kNil.
  uint32_t FindLive(uint64_t offset) const;
  // Chains node n into / out of its bucket (3 words stored each).
  void HashInsert(uint32_t n);
  void HashErase(uint32_t n);
  uint64_t HomeSlot(uint64_t offset) const;
  // Caches the active table's mask and shift from the control block.
  void LoadHashGeometry();
  absl::Status CheckChainAndCounters() const;
  absl::Status CheckBins() const;
  absl::Status CheckHash() const;

  std::span<std::byte> meta_;
  Control* control_;  // in meta_
  Node* nodes_;       // in meta_, max_extents_ entries
  uint32_t* slots_;   // in meta_, hash_slots entries
  uint64_t begin_;
  uint64_t end_;
  uint64_t max_extents_;
  uint64_t hash_mask_;   // 2^hash_bits - 1
  uint32_t hash_shift_;  // 64 - hash_bits
  // Within one Allocate/Free: the node holding largest_free left the bins
  // and no node of at least that size has come back yet.
  bool largest_stale_ = false;
};

}  // namespace shmalloc

#endif  // ALLOCATORS_FREE_LIST_H_
