// Buddy: a binary buddy allocator over the offset range [begin, end).
//
// Blocks are min_block * 2^k bytes (order k), naturally aligned relative to
// begin. Allocate takes the block of the smallest order that holds both the
// size and the alignment, splitting a larger free block as needed; Free
// merges a block with its buddy for as long as the buddy is free too. Both are
// O(log n): the state is a complete binary tree with one byte per node, where
// node i (1-based, heap order; children 2i and 2i+1) of order o covers the
// min blocks [s, s + 2^o), s = (i - 2^(D - o)) * 2^o.
//
// The range need not be a power of two: the tree has 2^D >= N leaves and the
// leaves >= N are permanently unavailable, so the free space is covered by the
// maximal aligned power-of-two blocks. The tail of (end - begin) % min_block
// bytes is never handed out (it counts as free but not allocatable, so it
// shows up as fragmentation).
//
// Metadata layout (little-endian; every offset from the start of the span,
// which must be 8-byte aligned):
//   0            MetaHeader          64 B   param = min_block
//   64           BuddyState          64 B   see the struct
//   128          node[2^(D+1)]       u8     node[0] unused; see "node byte"
//   R            requested[N]        u32    R = AlignUp(128 + 2^(D+1), 8)
//   R + 4N       end (== MetadataBytes)
// Node byte: bit 7 (kAllocated) = a live block starts exactly at this node;
// bits 0..6 = 1 + order of the largest free block inside the node's subtree,
// 0 when there is none. An allocated node stores exactly kAllocated.
// requested[]: for a live block at min block s of order o, requested[s] is
// the low 32 bits of (requested size - 1); for o >= 1, requested[s + 1] holds
// the high 32 bits (min_block <= 2^32 makes order-0 sizes fit in 32 bits).
//
// Invariants (CheckInvariants verifies all of them):
//   N = (end - begin) / min_block >= 1;  2^(D-1) < N <= 2^D  (D = 0 if N = 1)
//   leaf 2^D + s, s >= N:  node == 0
//   a node below an allocated node holds its "fully free" value 1 + order
//   (allocation leaves descendants untouched; that is what makes it O(log n))
//   other leaves: node == 1 (free)
//   other inner nodes i of order o, with l, r the low bits of the children:
//     node[i] == (l == o && r == o) ? o + 1 : max(l, r)
//   live_allocations == #allocated nodes
//   used_bytes == sum of min_block * 2^o over allocated nodes
//   requested_bytes == sum of requested sizes, each in [1, block size]
//   peak_used_bytes >= used_bytes;  used_bytes <= end - begin
//   largest_free_bytes == min_block * 2^(node[1] - 1) (0 when node[1] == 0)
//
// Thread-safety: not thread-safe; the daemon holds a per-region lock.
#ifndef ALLOCATORS_BUDDY_H_
#define ALLOCATORS_BUDDY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/allocator.h"

namespace shmalloc {

inline constexpr uint64_t kBuddyDefaultMinBlock = 64;
inline constexpr uint32_t kBuddyLayoutVersion = 1;  // bump on any change below

// The mutable figures of a Buddy, right after the MetaHeader.
struct BuddyState {
  uint32_t layout_version;      // kBuddyLayoutVersion
  uint32_t depth;               // D: the tree has 2^D leaves
  uint64_t min_block;           // bytes in an order-0 block
  uint64_t num_blocks;          // N: usable min blocks
  uint64_t used_bytes;          // sum of live block sizes
  uint64_t requested_bytes;     // sum of live requested sizes
  uint64_t live_allocations;    // live blocks
  uint64_t peak_used_bytes;     // max used_bytes since creation
  uint64_t failed_allocations;  // RESOURCE_EXHAUSTED answers
};
static_assert(sizeof(BuddyState) == 64);
static_assert(alignof(BuddyState) == 8);
static_assert(offsetof(BuddyState, min_block) == 8);
static_assert(offsetof(BuddyState, failed_allocations) == 56);

class Buddy final : public OffsetAllocator {
 public:
  // Returns the metadata bytes Create needs for `options` (begin, end,
  // min_block; 0 = kBuddyDefaultMinBlock). INVALID_ARGUMENT when the range is
  // invalid, min_block is not a power of two in [16, 2^32], the range holds no
  // min block, or it holds more than 2^31. Thread-safe.
  static absl::StatusOr<uint64_t> MetadataBytes(
      const AllocatorOptions& options);

  // Formats `meta` for an empty buddy over [options.begin, options.end) and
  // returns a view of it. INVALID_ARGUMENT as for MetadataBytes, or when
  // `meta` is smaller than MetadataBytes(options) (the message names both
  // sizes) or not 8-byte aligned; `meta` is unchanged on error.
  // REQUIRES: `meta` outlives the returned object. Not thread-safe.
  static absl::StatusOr<std::unique_ptr<Buddy>> Create(
      std::span<std::byte> meta, const AllocatorOptions& options);

  // Re-opens metadata written by Create, possibly copied to another address.
  // Returns DATA_LOSS when the header is not buddy metadata, its geometry is
  // inconsistent or CheckInvariants fails; INVALID_ARGUMENT when `meta` is
  // not 8-byte aligned. Never modifies `meta`.
  // REQUIRES: `meta` outlives the returned object. Not thread-safe.
  static absl::StatusOr<std::unique_ptr<Buddy>> Attach(
      std::span<std::byte> meta);

  // Returns a block of min_block * 2^k bytes, the smallest that is >= size and
  // >= alignment (so it is aligned relative to begin, and absolutely for an
  // alignment <= AlignmentOf(begin)). INVALID_ARGUMENT for size 0, a bad
  // alignment, an alignment above AlignmentOf(begin) or a size above the
  // largest block of the range;
  // RESOURCE_EXHAUSTED when no block is free (counted). State unchanged on
  // error. Not thread-safe.
  [[nodiscard]] absl::StatusOr<Extent> Allocate(uint64_t size,
                                                uint64_t alignment) override;

  // Frees the live block starting at `offset` and merges it with free
  // buddies. INVALID_ARGUMENT outside [begin, end); FAILED_PRECONDITION when
  // `offset` is not the start of a live block. State unchanged on error.
  // Not thread-safe.
  [[nodiscard]] absl::Status Free(uint64_t offset) override;

  // Returns the block size of the live block at `offset`; errors as for Free.
  // Not thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> SizeOf(uint64_t offset) const override;

  // Frees every block; peak and failure counters are kept. O(N).
  // Restartable: cut short at any store and run again, it gives the state
  // one uninterrupted Reset gives. Not logged (run it outside a transaction).
  // Not thread-safe.
  void Reset() override;

  // Returns the current figures. O(1). Not thread-safe.
  AllocatorStats Stats() const override;

  // Returns OK when every invariant in the file comment holds, DATA_LOSS for
  // a bad header, otherwise INTERNAL naming the first broken one. O(N), and
  // allocates O(N) temporary bytes. Not thread-safe.
  [[nodiscard]] absl::Status CheckInvariants() const override;

  Strategy strategy() const override { return Strategy::kBuddy; }
  uint64_t begin() const override { return begin_; }
  uint64_t end() const override { return end_; }
  uint64_t min_block() const { return min_block_; }

 private:
  Buddy(std::span<std::byte> meta, uint64_t begin, uint64_t end,
        uint64_t min_block, uint32_t depth, uint64_t num_blocks);

  BuddyState& state() const;
  uint32_t Order(uint64_t node) const;    // order of `node`
  uint64_t Start(uint64_t node) const;    // first min block of `node`
  uint8_t Combined(uint64_t node) const;  // its value from its children
  void Recompute(uint64_t node);          // stores Combined(node)
  // Stores to the metadata, each after a Touch (logged in a transaction);
  // SetNode skips a store of the value already there.
  void SetNode(uint64_t node, uint8_t value);
  void SetCounter(uint64_t& counter, uint64_t value);
  void FixAncestors(uint64_t node);  // Recompute up to the root
  uint64_t GetRequested(uint64_t start, uint32_t order) const;
  void SetRequested(uint64_t start, uint32_t order, uint64_t requested);
  // Returns the allocated node whose block starts at `offset`.
  absl::StatusOr<uint64_t> FindLive(uint64_t offset) const;
  void InitTree();

  std::span<std::byte> meta_;
  uint64_t begin_;
  uint64_t end_;
  uint64_t min_block_;
  uint32_t depth_;
  uint64_t num_blocks_;
  uint8_t* nodes_;       // into meta_
  uint32_t* requested_;  // into meta_
};

}  // namespace shmalloc

#endif  // ALLOCATORS_BUDDY_H_
