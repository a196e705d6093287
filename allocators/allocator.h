// The strategy contract shared by every shmalloc allocator.
//
// An allocator manages the offset range [begin, end) of a heap it never
// dereferences: it only does bookkeeping. All of its state lives in a
// caller-provided metadata span (`std::span<std::byte>`), laid out with
// indices and offsets only — never raw pointers — so the daemon can place the
// metadata in a shared-memory file, and a byte-for-byte copy of the metadata at
// another address (another mapping, another process, a restarted daemon) keeps
// working after `Attach`.
//
// Every metadata span starts with a `MetaHeader`, which records the strategy
// and geometry, so `AttachAllocator` (factory.h) can re-open any of them.
//
// Invariants (every strategy, checked by CheckInvariants()):
//   used_bytes + free_bytes == capacity_bytes
//   largest_free_bytes <= free_bytes
//   live_allocations == number of extents handed out and not yet freed
//   peak_used_bytes >= used_bytes
//   every live extent lies in [begin, end), is aligned as requested, and no
//   two live extents overlap; offset 0 is never handed out (begin > 0).
//
// Errors: Allocate and Free return a Status and leave the state unchanged on
// error. A Free of anything that is not the start of a live allocation
// (double free, interior offset, out of range, misaligned, never allocated)
// is an error, never corruption.
//
// Thread-safety: per strategy, stated in its header. Arena and Pool are
// lock-free; Buddy, Slab and FreeList are not thread-safe (the daemon holds a
// per-region lock around them).
#ifndef ALLOCATORS_ALLOCATOR_H_
#define ALLOCATORS_ALLOCATOR_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/undo_log.h"

namespace shmalloc {

// Values match shmalloc.v1.Strategy in the proto, so conversions are casts.
enum class Strategy : uint32_t {
  kUnspecified = 0,
  kArena = 1,
  kPool = 2,
  kBuddy = 3,
  kSlab = 4,
  kFreeList = 5,
};

// Returns "arena", "pool", "buddy", "slab", "free_list" or "unspecified".
std::string_view StrategyName(Strategy strategy);

// The largest alignment any request may ask for (2 MiB: DMA and GPU staging
// buffers, huge pages); every power of two up to it is accepted by the
// argument check (0 means kDefaultAlignment), anything else is
// INVALID_ARGUMENT. Alignment is of the offset (the heap's file offset; an
// address is aligned alike when the mapping's base is). What each strategy
// honours (an alignment above it is INVALID_ARGUMENT, state unchanged):
//   ARENA, FREE_LIST  every alignment up to kMaxAlignment (padding / splitting
//                     the unaligned head off as a free extent);
//   BUDDY             up to the largest block, and up to AlignmentOf(begin):
//                     blocks are aligned to their size relative to begin;
//   POOL, SLAB        up to min(AlignmentOf(block or class size),
//                     AlignmentOf(begin)) (slabs: also kSlabBytes).
// The heap's begin is only required to be a multiple of kHeapBeginGranule,
// so a region header need not waste 2 MiB; a layout wanting BUDDY / POOL /
// SLAB alignment above 4 KiB places begin on a larger power of two.
inline constexpr uint64_t kMaxAlignment = uint64_t{1} << 21;
inline constexpr uint64_t kDefaultAlignment = 16;
// `begin` of every strategy's range is a positive multiple of this.
inline constexpr uint64_t kHeapBeginGranule = 4096;

// One allocation: `size_bytes` is what the allocator reserved for it (at least
// the requested size: a pool block, a buddy power of two, a rounded size).
struct Extent {
  uint64_t offset = 0;      // bytes from the start of the heap's file; never 0
  uint64_t size_bytes = 0;  // bytes reserved, >= requested
  friend bool operator==(const Extent&, const Extent&) = default;
};

// A snapshot of an allocator's figures. Counters are exact for single-threaded
// strategies; for lock-free ones each field is exact at a quiescent point.
struct AllocatorStats {
  uint64_t capacity_bytes = 0;  // end - begin
  uint64_t used_bytes = 0;  // bytes reserved by live extents (+ arena padding)
  uint64_t free_bytes = 0;  // capacity_bytes - used_bytes
  uint64_t requested_bytes = 0;   // sum of sizes asked for by live allocations
  uint64_t live_allocations = 0;  // extents handed out and not freed
  uint64_t peak_used_bytes = 0;   // max used_bytes since creation or reset
  uint64_t failed_allocations = 0;  // Allocate calls that returned an error
                                    // because no space was left
  uint64_t largest_free_bytes = 0;  // largest single extent Allocate(size, 1)
                                    // could return right now
  // External fragmentation: 1 - largest_free_bytes / free_bytes, in [0, 1];
  // fixed-unit strategies define it by what a free byte can still serve:
  // Pool 0 (every free block serves every request), Slab 1 - bytes in
  // wholly free slabs / free_bytes.
  // 0 when free_bytes == 0. 0 means all free space is one usable extent.
  double fragmentation = 0;
  // Internal fragmentation: 1 - requested_bytes / used_bytes (0 when nothing
  // is used): the share of reserved bytes nobody asked for (buddy rounding,
  // pool blocks larger than the request, arena padding).
  double internal_fragmentation = 0;
};

// Computes both fragmentation ratios of `stats` from its byte counts.
void FillFragmentation(AllocatorStats& stats);

// Region geometry and strategy parameters; what Create needs besides the spans.
struct AllocatorOptions {
  Strategy strategy = Strategy::kUnspecified;
  uint64_t begin = 0;  // first offset managed; > 0, multiple of
                       // kHeapBeginGranule
  uint64_t end = 0;    // one past the last offset managed; > begin
  // POOL: the fixed block size (a multiple of 8, >= 8). SLAB: ignored.
  uint64_t block_size = 0;
  // BUDDY: the smallest block (power of two >= 16; default 64).
  uint64_t min_block = 0;
  // SLAB: ascending size classes (each a multiple of 8); empty = defaults
  // (16, 32, 64, ..., 16 KiB). Larger sizes are INVALID_ARGUMENT.
  std::vector<uint64_t> size_classes;
  // FREE_LIST: how many extents (live + free) the metadata can describe;
  // 0 = (end - begin) / 1024, at least 1024 (about 5 % of the heap in
  // metadata; regions of many tiny objects should set it higher).
  uint64_t max_extents = 0;
};

// The head of every metadata span. Layout (little-endian, 64 bytes):
//   0  magic           u64   kMetaMagic
//   8  layout_version  u32   kMetaLayoutVersion
//   12 strategy        u32   Strategy
//   16 begin           u64
//   24 end             u64
//   32 meta_bytes      u64   size of the span it was created in
//   40 param           u64   block_size / min_block / max_extents
//   48 reserved        u64[2]
struct MetaHeader {
  uint64_t magic;           // kMetaMagic, written last on creation
  uint32_t layout_version;  // kMetaLayoutVersion
  uint32_t strategy;        // a Strategy value
  uint64_t begin;           // first managed offset
  uint64_t end;             // one past the last managed offset
  uint64_t meta_bytes;      // span size at creation; Attach requires >= this
  uint64_t param;           // strategy parameter (see above)
  uint64_t reserved[2];     // zero
};
static_assert(sizeof(MetaHeader) == 64);
static_assert(offsetof(MetaHeader, strategy) == 12);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

inline constexpr uint64_t kMetaMagic = 0x314154454d4c4853ULL;  // "SHLMETA1"
inline constexpr uint32_t kMetaLayoutVersion = 1;

// The interface every strategy implements. Instances hold only a view of the
// metadata span (and cached constants); all state lives in the span.
class OffsetAllocator {
 public:
  virtual ~OffsetAllocator() = default;

  // Reserves an extent of at least `size` bytes whose offset is a multiple of
  // `alignment` (0 = kDefaultAlignment). Returns INVALID_ARGUMENT for size 0,
  // a size no extent of this strategy can hold, or an alignment that is not
  // a power of two <= kMaxAlignment (or that the strategy cannot honour, e.g.
  // above a pool's block alignment); RESOURCE_EXHAUSTED when no space is
  // left (counted in failed_allocations). State unchanged on error.
  [[nodiscard]] virtual absl::StatusOr<Extent> Allocate(uint64_t size,
                                                        uint64_t alignment) = 0;

  // Releases the live extent starting at `offset`. Returns INVALID_ARGUMENT
  // for an offset outside [begin, end); FAILED_PRECONDITION for an offset
  // that is not the start of a live allocation (double free, interior,
  // misaligned, never allocated) or for a strategy that cannot free single
  // extents (Arena). State unchanged on error.
  [[nodiscard]] virtual absl::Status Free(uint64_t offset) = 0;

  // Returns the reserved size of the live extent starting at `offset`;
  // INVALID_ARGUMENT / FAILED_PRECONDITION as for Free. Arena: UNIMPLEMENTED.
  [[nodiscard]] virtual absl::StatusOr<uint64_t> SizeOf(
      uint64_t offset) const = 0;

  // Frees every live extent at once (peak and failure counters are kept).
  // REQUIRES: no concurrent Allocate/Free.
  virtual void Reset() = 0;

  // Returns a snapshot of the figures above.
  virtual AllocatorStats Stats() const = 0;

  // True when the metadata predates the counters Stats() now reads in O(1)
  // (a Pool of layout 1, a FreeList without its largest-free word): Stats()
  // then walks the metadata as it used to, until UpgradeCounters() runs.
  virtual bool NeedsCounterUpgrade() const { return false; }

  // Computes the O(1) counters by one walk of the metadata and stores them
  // (each store logged through the undo log, so run it in a transaction:
  // a crash rolls it back and the next Open does it again). No-op when
  // NeedsCounterUpgrade() is false. REQUIRES: no concurrent Allocate/Free.
  virtual void UpgradeCounters() {}

  // Returns OK when the metadata satisfies every invariant of the strategy,
  // otherwise INTERNAL (or DATA_LOSS for a bad header) naming the broken one.
  // REQUIRES: no concurrent Allocate/Free. O(metadata size).
  [[nodiscard]] virtual absl::Status CheckInvariants() const = 0;

  virtual Strategy strategy() const = 0;
  virtual uint64_t begin() const = 0;
  virtual uint64_t end() const = 0;

  // Logs every metadata store of later Allocate/Free calls in `log` while a
  // transaction is open on it (null: no logging). Reset is never logged: it
  // is restartable instead (run again after a crash at any store, it ends in
  // the state one uninterrupted Reset gives). Not thread-safe.
  void set_undo_log(UndoLog* log) { undo_ = log; }

  // Allocates `count` extents of `size` bytes each, all or nothing. On error
  // the extents allocated so far are still in the metadata: the caller rolls
  // them back by aborting the open transaction. Returns the first error of
  // Allocate. REQUIRES: a transaction is open on the undo log.
  // A strategy may override it (and FreeBatch) with a pass that relies on
  // the transaction's exclusion (Pool: plain stores instead of one atomic
  // read-modify-write per block), keeping every store logged.
  [[nodiscard]] virtual absl::StatusOr<std::vector<Extent>> AllocateBatch(
      uint64_t size, uint64_t alignment, uint32_t count);

  // Frees every offset, all or nothing, and returns the bytes released;
  // INVALID_ARGUMENT / FAILED_PRECONDITION as for Free (duplicates are
  // FAILED_PRECONDITION). Outside a transaction every offset is checked with
  // SizeOf first and the state is unchanged on error; inside one the
  // offsets are freed as they are checked and the caller rolls a failed
  // batch back by aborting (as for AllocateBatch).
  [[nodiscard]] virtual absl::StatusOr<uint64_t> FreeBatch(
      std::span<const uint64_t> offsets);

 protected:
  // True while a transaction is open on the undo log: the caller holds its
  // owner's lock (no concurrent Allocate/Free) and aborts on error.
  bool InTransaction() const { return undo_ != nullptr && undo_->open(); }
  // Logs the metadata word at `word` before a store to it.
  void Touch(const void* word) const {
    if (undo_ != nullptr) undo_->Touch(word);
  }
  // Logs every metadata word of [addr, addr + bytes) before stores to them.
  void TouchRange(const void* addr, uint64_t bytes) const {
    if (undo_ != nullptr) undo_->TouchRange(addr, bytes);
  }

 private:
  UndoLog* undo_ = nullptr;
};

// Shared argument checks, so every strategy reports the same codes.
// Returns INVALID_ARGUMENT unless size > 0 and alignment is 0 or a power of
// two <= kMaxAlignment; `alignment` is replaced by its effective value.
absl::Status ValidateAllocateArgs(uint64_t size, uint64_t& alignment);
// Returns INVALID_ARGUMENT unless begin <= offset < end.
absl::Status ValidateOffsetInRange(uint64_t offset, uint64_t begin,
                                   uint64_t end);
// Validates options common to all strategies: begin > 0, begin a multiple of
// kHeapBeginGranule, end > begin.
absl::Status ValidateRange(const AllocatorOptions& options);
// Validates `meta` as a MetaHeader of `expected` strategy (DATA_LOSS on a bad
// magic, version, strategy or a span smaller than recorded).
absl::Status ValidateMetaHeader(std::span<const std::byte> meta,
                                Strategy expected);

inline constexpr bool IsPowerOfTwo(uint64_t x) { return x && !(x & (x - 1)); }
inline constexpr uint64_t AlignUp(uint64_t x, uint64_t a) {
  return (x + a - 1) & ~(a - 1);
}
// The largest power of two dividing x (x > 0), capped at kMaxAlignment; for
// x == 0, kMaxAlignment (0 is a multiple of everything).
inline constexpr uint64_t AlignmentOf(uint64_t x) {
  const uint64_t low = x & (0 - x);
  return low == 0 || low > kMaxAlignment ? kMaxAlignment : low;
}

}  // namespace shmalloc

#endif  // ALLOCATORS_ALLOCATOR_H_
