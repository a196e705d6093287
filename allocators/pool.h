// Pool: a lock-free allocator of fixed-size blocks over [begin, end).
//
// Block i covers [begin + i * block_size, begin + (i + 1) * block_size), for
// i < block_count = (end - begin) / block_size (a shorter tail is never
// used). Free blocks form an index Treiber stack in the metadata; its head is
// one 64-bit word {index, tag} whose tag is bumped by every pop, so a stale
// compare-and-swap can never succeed (docs/design/pool_free_list.md has the
// ABA argument). Blocks never handed out since Create/Reset are not on the
// stack: they are carved in index order from a second counter, `carved`,
// when the stack is empty. That keeps Create and Reset O(1) in the stack and
// gives the peak for free: a block is carved only when every carved block is
// live, so in any sequential history max(live) == max(carved).
//
// Every block has one 64-bit slot, both its allocation state and its link:
//   slot == kPoolAllocatedBit | requested   the block is live; `requested` is
//                                           the size asked for (1..block_size)
//   slot <  kPoolAllocatedBit               the block is free; on the stack
//                                           the low 32 bits are the next index
//                                           (kPoolNullIndex ends the stack)
// Free flips allocated -> free with one compare-and-swap on the slot, so of
// two racing frees of the same block exactly one succeeds, and any other bad
// free (double, interior, misaligned, out of range, never allocated) changes
// nothing. Keeping the link in the same word costs nothing extra: Free must
// write the link anyway, and one slot touches one cache line.
//
// Byte layout of the metadata span (little-endian; 8-byte aligned, ideally
// 64; 192 + 8 * block_count bytes):
//   0    MetaHeader          64 bytes; strategy kPool, param = block_size
//   64   head                atomic u64: bits 0-31 top index, 32-63 pop tag
//   72   carved              atomic u64: blocks [0, carved) were handed out
//                            at least once since Create/Reset
//   80   reserved            u64[6], zero (head and carved own the line)
//   128  peak_blocks         atomic u64: max(carved) folded in by Reset
//   136  failed_allocations  atomic u64: RESOURCE_EXHAUSTED answers
//   144  block_count         u64: (end - begin) / block_size, < 2^32 - 1
//   152  layout_version      u32: kPoolLayoutVersion
//   156  reserved            u32, zero
//   160  live_allocations    atomic u64: allocated slots (layout 2)
//   168  requested_bytes     atomic u64: sum of their requested sizes
//                            (layout 2)
//   176  reserved            u64[2], zero
//   192  slots               atomic u64[block_count], as above
//
// Invariants (at quiescent points):
//   carved <= block_count; slot[i] is free for every i >= carved
//   the stack from head visits distinct indices < carved whose slots are
//   free, and exactly carved - live of them
//   live == #{i < carved : slot[i] is allocated}
//   used_bytes == live * block_size; used_bytes + free_bytes == capacity
//   requested_bytes == sum of the requested sizes in allocated slots
//   peak_used_bytes == max(peak_blocks, carved) * block_size >= used_bytes
//   (layout 2) live_allocations and requested_bytes equal the two sums above
//
// Cost of the figures: Stats() is O(1). Allocate and Free each update the
// two counters with a relaxed read-modify-write (about 6 ns each on this
// machine), so Stats() under the daemon's region lock never walks the
// slots (review item M5: a pool of 2^31 blocks took seconds per Stats).
// Layout 1 (before the counters) is still attached: Stats() then counts the
// allocated slots, O(carved), until UpgradeCounters() stores the counters
// and the layout becomes 2 (the daemon does this in a transaction at Open).
// Each figure is exact at a quiescent point; under concurrency peak may
// exceed the true maximum by the number of threads that saw an empty stack
// while a free was in flight.
//
// Thread-safety: Allocate, Free, SizeOf and Stats are thread-safe and
// lock-free, also across processes sharing the metadata. Reset,
// CheckInvariants and CountFreeBlocks require quiescence.
#ifndef ALLOCATORS_POOL_H_
#define ALLOCATORS_POOL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/allocator.h"

namespace shmalloc {

inline constexpr uint32_t kPoolLayoutVersion = 2;
// The layout before live_allocations / requested_bytes (still attached).
inline constexpr uint32_t kPoolLegacyLayoutVersion = 1;
inline constexpr uint32_t kPoolNullIndex = 0xffffffffu;     // ends the stack
inline constexpr uint64_t kPoolMaxBlocks = kPoolNullIndex;  // exclusive
inline constexpr uint64_t kPoolAllocatedBit = uint64_t{1} << 63;

// The pool's fixed metadata; `block_count` slots (std::atomic<uint64_t>)
// follow it directly. Offsets and indices only.
struct PoolMeta {
  MetaHeader header;                         // strategy kPool, param block_size
  std::atomic<uint64_t> head;                // {index:32 low, tag:32 high}
  std::atomic<uint64_t> carved;              // blocks ever carved since reset
  uint64_t reserved0[6];                     // zero; pads the head line
  std::atomic<uint64_t> peak_blocks;         // folded in by Reset
  std::atomic<uint64_t> failed_allocations;  // RESOURCE_EXHAUSTED count
  uint64_t block_count;                      // number of slots that follow
  uint32_t layout_version;                   // kPoolLayoutVersion
  uint32_t reserved1;                        // zero
  std::atomic<uint64_t> live_allocations;    // allocated slots (layout 2)
  std::atomic<uint64_t> requested_bytes;     // their requests (layout 2)
  uint64_t reserved2[2];                     // zero
};
static_assert(sizeof(PoolMeta) == 192);
static_assert(alignof(PoolMeta) == 8);
static_assert(offsetof(PoolMeta, head) == 64);
static_assert(offsetof(PoolMeta, carved) == 72);
static_assert(offsetof(PoolMeta, peak_blocks) == 128);
static_assert(offsetof(PoolMeta, failed_allocations) == 136);
static_assert(offsetof(PoolMeta, block_count) == 144);
static_assert(offsetof(PoolMeta, layout_version) == 152);
static_assert(offsetof(PoolMeta, live_allocations) == 160);
static_assert(offsetof(PoolMeta, requested_bytes) == 168);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t));

class Pool final : public OffsetAllocator {
 public:
  // Returns 192 + 8 * block_count. INVALID_ARGUMENT for a bad range (see
  // ValidateRange), options.strategy neither kPool nor kUnspecified, a
  // block_size that is not a multiple of 8 (or is 0), a range smaller than
  // one block, or more than 2^32 - 2 blocks. Thread-safe.
  static absl::StatusOr<uint64_t> MetadataBytes(
      const AllocatorOptions& options);

  // Formats `meta` as an empty pool over [options.begin, options.end) and
  // returns a view of it. INVALID_ARGUMENT for bad options, a span smaller
  // than MetadataBytes(options) (the message names both sizes) or not 8-byte
  // aligned. On error `meta` is not written. O(1) + zeroing the slots.
  // REQUIRES: nobody else uses `meta` during the call. Not thread-safe.
  static absl::StatusOr<std::unique_ptr<Pool>> Create(
      std::span<std::byte> meta, const AllocatorOptions& options);

  // Re-opens a pool formatted by Create, possibly at another address or in
  // another process. DATA_LOSS when the header is not a pool's or any
  // invariant fails; INVALID_ARGUMENT when `meta` is not 8-byte aligned.
  // Never writes `meta`. O(block_count).
  // REQUIRES: quiescence (no concurrent Allocate/Free on the metadata).
  static absl::StatusOr<std::unique_ptr<Pool>> Attach(
      std::span<std::byte> meta);

  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Pops a free block and returns {offset, block_size}. `alignment` 0 means
  // min(kDefaultAlignment, natural_alignment()). INVALID_ARGUMENT for size 0,
  // size > block_size, or an alignment that is not a power of two <=
  // natural_alignment(); RESOURCE_EXHAUSTED when every block is live
  // (counted in failed_allocations). State unchanged on error. Outside a
  // transaction: one atomic read-modify-write on the stack plus two on the
  // counters; thread-safe, lock-free. In a transaction on the undo log (the
  // daemon, under the region lock, which excludes every other Allocate and
  // Free): plain logged stores, no read-modify-write.
  [[nodiscard]] absl::StatusOr<Extent> Allocate(uint64_t size,
                                                uint64_t alignment) override;

  // Returns the live block starting at `offset` to the pool. INVALID_ARGUMENT
  // for an offset outside [begin, end); FAILED_PRECONDITION for an offset
  // that is not a block start (interior, misaligned, in the unused tail) or
  // whose block is not live (double free, never allocated). State unchanged
  // on error; of two racing frees of one block exactly one succeeds. Outside
  // a transaction: two atomic read-modify-writes plus two on the counters;
  // thread-safe, lock-free. In a transaction: plain logged stores.
  [[nodiscard]] absl::Status Free(uint64_t offset) override;

  // In a transaction (the caller's lock excludes every other Allocate and
  // Free): pops `count` blocks, or pushes every offset, in one pass with
  // plain stores, each logged, and the counters and the head stored once.
  // Outside one: OffsetAllocator's (lock-free, one call per block). Errors
  // as Allocate / Free; on error the caller aborts the transaction.
  [[nodiscard]] absl::StatusOr<std::vector<Extent>> AllocateBatch(
      uint64_t size, uint64_t alignment, uint32_t count) override;
  [[nodiscard]] absl::StatusOr<uint64_t> FreeBatch(
      std::span<const uint64_t> offsets) override;

  // Returns block_size for a live block's start; INVALID_ARGUMENT /
  // FAILED_PRECONDITION as for Free. Thread-safe; lock-free.
  [[nodiscard]] absl::StatusOr<uint64_t> SizeOf(uint64_t offset) const override;

  // Frees every block: the stack becomes empty (the head keeps its tag) and
  // every block uncarved. Peak and failure counters are kept. O(carved).
  // Restartable: cut short at any store and run again, it gives the state
  // one uninterrupted Reset gives. Not logged (run it outside a transaction).
  // REQUIRES: no concurrent Allocate/Free. Not thread-safe.
  void Reset() override;

  // Returns a snapshot; O(1) (O(carved) for a layout-1 pool not yet
  // upgraded; see the header comment). Thread-safe; lock-free; exact at
  // quiescent points.
  AllocatorStats Stats() const override;

  // Layout 1: true until UpgradeCounters() runs.
  bool NeedsCounterUpgrade() const override { return !counted_; }
  // Counts the allocated slots once, stores live_allocations and
  // requested_bytes, then layout 2 (every store Touch()ed). O(carved).
  // REQUIRES: no concurrent Allocate/Free.
  void UpgradeCounters() override;

  // Returns OK when every invariant above holds, DATA_LOSS for a bad header,
  // INTERNAL naming the first broken invariant otherwise. O(block_count).
  // REQUIRES: no concurrent Allocate/Free.
  [[nodiscard]] absl::Status CheckInvariants() const override;

  // Returns how many blocks Allocate could hand out now: the stack's length
  // (walked) plus the uncarved blocks. INTERNAL when the stack is broken (a
  // cycle, an index out of range, a live block on it). O(block_count).
  // REQUIRES: no concurrent Allocate/Free.
  [[nodiscard]] absl::StatusOr<uint64_t> CountFreeBlocks() const;

  Strategy strategy() const override { return Strategy::kPool; }
  uint64_t begin() const override { return begin_; }
  uint64_t end() const override { return end_; }
  uint64_t block_size() const { return block_size_; }
  uint64_t block_count() const { return block_count_; }
  // The largest alignment every block has: the largest power of two dividing
  // both block_size and begin, capped at kMaxAlignment.
  uint64_t natural_alignment() const { return natural_alignment_; }

 private:
  Pool(PoolMeta* meta, uint64_t block_size);

  absl::StatusOr<Extent> AllocateSlow(uint64_t size, uint64_t alignment);
  // In a transaction (the caller's lock excludes every other Allocate and
  // Free): pops or carves one block with plain logged stores, no
  // read-modify-write. `index` / `head`: the head's index and word, read by
  // the caller; kPoolNullIndex means carve (REQUIRES: carved < count).
  absl::StatusOr<Extent> AllocateLocked(uint64_t size);
  Extent PopLocked(uint64_t size, uint64_t index, uint64_t head);
  // Adds to the counters (layout 2) with plain logged stores; a negative
  // amount is passed as its two's complement. REQUIRES: a transaction.
  void AddCountersLocked(uint64_t live, uint64_t requested);
  // Hands out the next never-used block, marked live with `size`; returns
  // its index, or kPoolNullIndex when every block has been carved.
  uint64_t Carve(uint64_t size);
  // Maps `offset` to a block index, or returns the error Free reports.
  absl::StatusOr<uint64_t> BlockIndex(uint64_t offset) const;
  absl::Status BadOffset(uint64_t offset) const;
  std::atomic<uint64_t>& slot(uint64_t index) const { return slots_[index]; }
  // Adds one allocation of `requested` bytes to the counters (layout 2).
  void CountAllocate(uint64_t requested);
  // Counts the allocated slots: {live, requested}. O(carved).
  std::pair<uint64_t, uint64_t> WalkCounters() const;

  PoolMeta* meta_;                // points into the caller's span
  std::atomic<uint64_t>* slots_;  // meta_ + 1, block_count_ entries
  uint64_t begin_;                // cached from the header
  uint64_t end_;                  // cached from the header
  uint64_t block_size_;           // header.param
  uint64_t block_count_;          // meta_->block_count
  uint64_t natural_alignment_;    // AlignmentOf(block_size), AlignmentOf(begin)
  uint64_t default_alignment_;    // min(kDefaultAlignment, natural)
  // offset -> index without a division: block_size = odd << shift;
  // x = offset - begin is a block start iff (x & low_mask) == 0 and
  // index = (x >> shift) * odd_inverse (mod 2^64) < block_count.
  uint64_t shift_;
  uint64_t low_mask_;
  uint64_t odd_inverse_;
  bool counted_;  // layout 2: the counters are kept
};

}  // namespace shmalloc

#endif  // ALLOCATORS_POOL_H_
