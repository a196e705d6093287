#include "allocators/pool.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <new>
#include <tuple>
#include <vector>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace shmalloc {
namespace {

constexpr uint64_t kIndexMask = 0xffffffffULL;
constexpr uint64_t kTagMask = ~kIndexMask;
constexpr uint64_t kTagOne = uint64_t{1} << 32;

static_assert(kPoolMaxBlocks <= kIndexMask, "indices must fit in 32 bits");

absl::Status CheckSpanAlignment(std::span<const std::byte> meta) {
  if (reinterpret_cast<uintptr_t>(meta.data()) % alignof(PoolMeta) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool metadata must be ", alignof(PoolMeta), "-byte aligned"));
  }
  return absl::OkStatus();
}

// Returns the block count for a valid block size and range, or the error.
absl::StatusOr<uint64_t> BlockCount(uint64_t begin, uint64_t end,
                                    uint64_t block_size) {
  if (block_size == 0 || block_size % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pool block_size ", block_size, " must be a positive multiple of 8"));
  }
  const uint64_t count = (end - begin) / block_size;
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool range of ", end - begin, " bytes holds no block of ",
                     block_size, " bytes"));
  }
  if (count >= kPoolMaxBlocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool would have ", count, " blocks; at most ",
                     kPoolMaxBlocks - 1, " are supported"));
  }
  return count;
}

uint64_t MetaBytesFor(uint64_t block_count) {
  return sizeof(PoolMeta) + block_count * sizeof(std::atomic<uint64_t>);
}

}  // namespace

absl::StatusOr<uint64_t> Pool::MetadataBytes(const AllocatorOptions& options) {
  if (options.strategy != Strategy::kPool &&
      options.strategy != Strategy::kUnspecified) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool cannot be created for strategy ",
                     std::string(StrategyName(options.strategy))));
  }
  SHMALLOC_RETURN_IF_ERROR(ValidateRange(options));
  SHMALLOC_ASSIGN_OR_RETURN(
      uint64_t count,
      BlockCount(options.begin, options.end, options.block_size));
  return MetaBytesFor(count);
}

Pool::Pool(PoolMeta* meta, uint64_t block_size)
    : meta_(meta),
      slots_(reinterpret_cast<std::atomic<uint64_t>*>(meta + 1)),
      begin_(meta->header.begin),
      end_(meta->header.end),
      block_size_(block_size),
      block_count_(meta->block_count),
      counted_(meta->layout_version >= kPoolLayoutVersion) {
  // Blocks start at begin + i * block_size: aligned to both.
  natural_alignment_ =
      std::min(AlignmentOf(block_size), AlignmentOf(meta->header.begin));
  default_alignment_ = std::min(kDefaultAlignment, natural_alignment_);
  shift_ = static_cast<uint64_t>(std::countr_zero(block_size));
  low_mask_ = (uint64_t{1} << shift_) - 1;
  const uint64_t odd = block_size >> shift_;
  // Newton's iteration for the inverse of an odd number modulo 2^64: `odd`
  // is its own inverse to 3 bits, and every step doubles the correct bits.
  uint64_t inverse = odd;
  for (int i = 0; i < 5; ++i) inverse *= 2 - odd * inverse;
  odd_inverse_ = inverse;
}

absl::StatusOr<std::unique_ptr<Pool>> Pool::Create(
    std::span<std::byte> meta, const AllocatorOptions& options) {
  SHMALLOC_ASSIGN_OR_RETURN(uint64_t needed, MetadataBytes(options));
  if (meta.size() < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("pool metadata span of ", meta.size(),
                     " bytes is smaller than the ", needed, " bytes needed"));
  }
  SHMALLOC_RETURN_IF_ERROR(CheckSpanAlignment(meta));

  std::memset(meta.data(), 0, needed);
  auto* m = new (meta.data()) PoolMeta{};
  const uint64_t count = (options.end - options.begin) / options.block_size;
  auto* slots = reinterpret_cast<std::atomic<uint64_t>*>(m + 1);
  for (uint64_t i = 0; i < count; ++i) {
    new (&slots[i]) std::atomic<uint64_t>(kPoolNullIndex);  // free, uncarved
  }
  m->header.layout_version = kMetaLayoutVersion;
  m->header.strategy = static_cast<uint32_t>(Strategy::kPool);
  m->header.begin = options.begin;
  m->header.end = options.end;
  m->header.meta_bytes = needed;
  m->header.param = options.block_size;
  m->head.store(kPoolNullIndex, std::memory_order_relaxed);
  m->carved.store(0, std::memory_order_relaxed);
  m->peak_blocks.store(0, std::memory_order_relaxed);
  m->failed_allocations.store(0, std::memory_order_relaxed);
  m->live_allocations.store(0, std::memory_order_relaxed);
  m->requested_bytes.store(0, std::memory_order_relaxed);
  m->block_count = count;
  m->layout_version = kPoolLayoutVersion;
  // The magic goes last: a reader that sees it sees a formatted pool.
  std::atomic_ref<uint64_t>(m->header.magic)
      .store(kMetaMagic, std::memory_order_release);
  return absl::WrapUnique(new Pool(m, options.block_size));
}

absl::StatusOr<std::unique_ptr<Pool>> Pool::Attach(std::span<std::byte> meta) {
  SHMALLOC_RETURN_IF_ERROR(ValidateMetaHeader(meta, Strategy::kPool));
  SHMALLOC_RETURN_IF_ERROR(CheckSpanAlignment(meta));
  if (meta.size() < sizeof(PoolMeta)) {
    return absl::DataLossError(
        absl::StrCat("pool metadata span of ", meta.size(),
                     " bytes is smaller than ", sizeof(PoolMeta)));
  }
  auto* m = reinterpret_cast<PoolMeta*>(meta.data());
  if (m->layout_version != kPoolLayoutVersion &&
      m->layout_version != kPoolLegacyLayoutVersion) {
    return absl::DataLossError(absl::StrCat(
        "pool layout version ", m->layout_version, ", this build reads ",
        kPoolLegacyLayoutVersion, " and ", kPoolLayoutVersion));
  }
  absl::StatusOr<uint64_t> count =
      BlockCount(m->header.begin, m->header.end, m->header.param);
  if (!count.ok() || *count != m->block_count ||
      MetaBytesFor(*count) > meta.size() ||
      m->header.begin % kHeapBeginGranule) {
    return absl::DataLossError(absl::StrCat(
        "pool metadata geometry is inconsistent: begin ", m->header.begin,
        ", end ", m->header.end, ", block_size ", m->header.param,
        ", block_count ", m->block_count, ", span ", meta.size(), " bytes"));
  }
  auto pool = absl::WrapUnique(new Pool(m, m->header.param));
  if (absl::Status s = pool->CheckInvariants(); !s.ok()) {
    return absl::DataLossError(
        absl::StrCat("pool metadata is corrupt: ", s.message()));
  }
  return pool;
}

absl::StatusOr<Extent> Pool::Allocate(uint64_t size, uint64_t alignment) {
  // Fast path: 0 < size <= block_size, alignment a power of two <= the
  // natural alignment. Anything else is validated by AllocateSlow, which
  // names the problem.
  if (alignment == 0) alignment = default_alignment_;
  if (size - 1 >= block_size_ || alignment - 1 >= natural_alignment_ ||
      (alignment & (alignment - 1)) != 0) {
    return AllocateSlow(size, alignment);
  }
  // acquire: pairs with the release of the push that made this index the
  // top, so its slot (the link) and the previous owner's writes to the block
  // happen-before our reads and our new owner's writes.
  if (InTransaction()) return AllocateLocked(size);
  uint64_t head = meta_->head.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t index = head & kIndexMask;
    if (index == kPoolNullIndex) {
      const uint64_t fresh = Carve(size);
      if (fresh != kPoolNullIndex) {
        CountAllocate(size);
        return Extent{begin_ + fresh * block_size_, block_size_};
      }
      // Everything is carved. A free may have pushed since we saw the stack
      // empty; if the stack is still empty at this load, "no block free" is
      // true at this instant (carved stays block_count until Reset), so
      // failing is linearisable.
      head = meta_->head.load(std::memory_order_acquire);
      if ((head & kIndexMask) != kPoolNullIndex) continue;
      // relaxed: a statistic.
      Touch(&meta_->failed_allocations);
      meta_->failed_allocations.fetch_add(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(absl::StrCat(
          "all ", block_count_, " blocks of ", block_size_, " bytes are live"));
    }
    // relaxed: the acquire above ordered it after the push that wrote it. If
    // the block is popped meanwhile this may read anything, but then the
    // tag has moved on and the compare-and-swap below fails.
    const uint64_t next = slot(index).load(std::memory_order_relaxed);
    // Recomputed from `head` on every iteration: a new tag from the head we
    // actually compare against (the iceoryx 2.0.3 bug was a stale tag).
    const uint64_t desired =
        ((head + kTagOne) & kTagMask) | (next & kIndexMask);
    // acquire on success and failure: see the load above. Touch (here and
    // before every other store) logs the old word when a transaction is
    // open; otherwise it is one predictable branch.
    Touch(&meta_->head);
    if (meta_->head.compare_exchange_weak(head, desired,
                                          std::memory_order_acquire,
                                          std::memory_order_acquire)) {
      // relaxed: we own the block now; Free's compare-and-swap on this slot
      // reads the latest value whatever the order.
      Touch(&slot(index));
      slot(index).store(kPoolAllocatedBit | size, std::memory_order_relaxed);
      CountAllocate(size);
      return Extent{begin_ + index * block_size_, block_size_};
    }
  }
}

Extent Pool::PopLocked(uint64_t size, uint64_t index, uint64_t head) {
  // relaxed: as in AllocateBatch (the transaction's lock orders us after
  // every other Allocate/Free; the release store of the head publishes).
  if (index != kPoolNullIndex) {
    const uint64_t next = slot(index).load(std::memory_order_relaxed);
    Touch(&meta_->head);
    meta_->head.store(((head + kTagOne) & kTagMask) | (next & kIndexMask),
                      std::memory_order_release);
  } else {
    index = meta_->carved.load(std::memory_order_relaxed);
    Touch(&meta_->carved);
    meta_->carved.store(index + 1, std::memory_order_relaxed);
  }
  Touch(&slot(index));
  slot(index).store(kPoolAllocatedBit | size, std::memory_order_relaxed);
  AddCountersLocked(1, size);
  return Extent{begin_ + index * block_size_, block_size_};
}

absl::StatusOr<Extent> Pool::AllocateLocked(uint64_t size) {
  // The caller's lock excludes every other Allocate/Free, so no
  // read-modify-write is needed: plain logged stores, as AllocateBatch.
  const uint64_t head = meta_->head.load(std::memory_order_relaxed);
  const uint64_t index = head & kIndexMask;
  if (index == kPoolNullIndex &&
      meta_->carved.load(std::memory_order_relaxed) >= block_count_) {
    Touch(&meta_->failed_allocations);
    meta_->failed_allocations.store(
        meta_->failed_allocations.load(std::memory_order_relaxed) + 1,
        std::memory_order_relaxed);
    return absl::ResourceExhaustedError(absl::StrCat(
        "all ", block_count_, " blocks of ", block_size_, " bytes are live"));
  }
  return PopLocked(size, index, head);
}

void Pool::AddCountersLocked(uint64_t live, uint64_t requested) {
  if (!counted_) return;
  // relaxed: under the transaction's lock; Stats() reads them relaxed.
  Touch(&meta_->live_allocations);
  meta_->live_allocations.store(
      meta_->live_allocations.load(std::memory_order_relaxed) + live,
      std::memory_order_relaxed);
  Touch(&meta_->requested_bytes);
  meta_->requested_bytes.store(
      meta_->requested_bytes.load(std::memory_order_relaxed) + requested,
      std::memory_order_relaxed);
}

void Pool::CountAllocate(uint64_t requested) {
  if (!counted_) return;
  // relaxed: statistics; exact at quiescent points.
  Touch(&meta_->live_allocations);
  meta_->live_allocations.fetch_add(1, std::memory_order_relaxed);
  Touch(&meta_->requested_bytes);
  meta_->requested_bytes.fetch_add(requested, std::memory_order_relaxed);
}

uint64_t Pool::Carve(uint64_t size) {
  // relaxed: fresh blocks have had no owner since Create/Reset, so there is
  // nothing to synchronise with; the RMW alone makes each index unique.
  uint64_t carved = meta_->carved.load(std::memory_order_relaxed);
  while (carved < block_count_) {
    Touch(&meta_->carved);
    if (meta_->carved.compare_exchange_weak(carved, carved + 1,
                                            std::memory_order_relaxed,
                                            std::memory_order_relaxed)) {
      Touch(&slot(carved));
      slot(carved).store(kPoolAllocatedBit | size, std::memory_order_relaxed);
      return carved;
    }
  }
  return kPoolNullIndex;
}

absl::StatusOr<Extent> Pool::AllocateSlow(uint64_t size, uint64_t alignment) {
  SHMALLOC_RETURN_IF_ERROR(ValidateAllocateArgs(size, alignment));
  if (size > block_size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "size ", size, " exceeds the pool's block size of ", block_size_));
  }
  if (alignment > natural_alignment_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "alignment ", alignment, " exceeds the pool's block alignment of ",
        natural_alignment_, " (block size ", block_size_, ")"));
  }
  return Allocate(size, alignment);
}

absl::Status Pool::BadOffset(uint64_t offset) const {
  SHMALLOC_RETURN_IF_ERROR(ValidateOffsetInRange(offset, begin_, end_));
  const uint64_t x = offset - begin_;
  if (x / block_size_ >= block_count_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "offset ", offset, " lies in the pool's unused tail (no block)"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "offset ", offset, " is not a block start (", x % block_size_,
      " bytes into block ", x / block_size_, ")"));
}

absl::StatusOr<uint64_t> Pool::BlockIndex(uint64_t offset) const {
  // For offset < begin, x wraps to >= 2^64 - begin > block_count *
  // block_size, so the index test below rejects it too (see pool.h).
  const uint64_t x = offset - begin_;
  const uint64_t index = (x >> shift_) * odd_inverse_;
  if ((x & low_mask_) != 0 || index >= block_count_) return BadOffset(offset);
  return index;
}

absl::Status Pool::Free(uint64_t offset) {
  SHMALLOC_ASSIGN_OR_RETURN(const uint64_t index, BlockIndex(offset));
  std::atomic<uint64_t>& s = slot(index);
  if (InTransaction()) {
    // Plain logged stores under the caller's lock, as FreeBatch.
    const uint64_t state = s.load(std::memory_order_relaxed);
    if ((state & kPoolAllocatedBit) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("offset ", offset, " (block ", index,
                       ") is not live: double free or never allocated"));
    }
    const uint64_t head = meta_->head.load(std::memory_order_relaxed);
    Touch(&s);
    s.store(head & kIndexMask, std::memory_order_relaxed);
    Touch(&meta_->head);
    meta_->head.store((head & kTagMask) | index, std::memory_order_release);
    // Unsigned wrap-around subtracts.
    AddCountersLocked(0 - uint64_t{1}, 0 - (state & ~kPoolAllocatedBit));
    return absl::OkStatus();
  }
  // relaxed loads: both values are only guesses that the compare-and-swaps
  // below confirm.
  uint64_t state = s.load(std::memory_order_relaxed);
  uint64_t head = meta_->head.load(std::memory_order_relaxed);
  // Flip allocated -> free (holding the link). The RMW is what makes one of
  // two racing frees fail. relaxed: the release push below publishes it.
  Touch(&s);
  do {
    if ((state & kPoolAllocatedBit) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("offset ", offset, " (block ", index,
                       ") is not live: double free or never allocated"));
    }
  } while (!s.compare_exchange_weak(state, head & kIndexMask,
                                    std::memory_order_relaxed,
                                    std::memory_order_relaxed));
  // Push. The tag is kept: only pops change a slot that is on the stack, and
  // each pop bumps it. release: publishes the link and the caller's writes
  // to the block to the thread that pops it.
  Touch(&meta_->head);
  while (!meta_->head.compare_exchange_weak(head, (head & kTagMask) | index,
                                            std::memory_order_release,
                                            std::memory_order_relaxed)) {
    // relaxed: we own the slot until the push succeeds (every other writer
    // needs it allocated); the release above publishes this store. The
    // repeated Touch is free (logged once) but keeps a crash point before
    // every store.
    Touch(&s);
    s.store(head & kIndexMask, std::memory_order_relaxed);
  }
  if (counted_) {
    // relaxed: statistics. `state` is the allocated value the flip replaced.
    Touch(&meta_->live_allocations);
    meta_->live_allocations.fetch_sub(1, std::memory_order_relaxed);
    Touch(&meta_->requested_bytes);
    meta_->requested_bytes.fetch_sub(state & ~kPoolAllocatedBit,
                                     std::memory_order_relaxed);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Extent>> Pool::AllocateBatch(uint64_t size,
                                                        uint64_t alignment,
                                                        uint32_t count) {
  uint64_t a = alignment == 0 ? default_alignment_ : alignment;
  if (!InTransaction() || size - 1 >= block_size_ ||
      a - 1 >= natural_alignment_ || (a & (a - 1)) != 0) {
    return OffsetAllocator::AllocateBatch(size, alignment, count);
  }
  std::vector<Extent> extents;
  extents.reserve(count);
  // relaxed throughout: the transaction's lock orders us after every other
  // Allocate/Free; the release store of the head below publishes the slots.
  uint64_t head = meta_->head.load(std::memory_order_relaxed);
  uint64_t carved = meta_->carved.load(std::memory_order_relaxed);
  const uint64_t carved_before = carved;
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t index = head & kIndexMask;
    if (index != kPoolNullIndex) {
      // Pop: the next link, and a new tag as every pop gives.
      const uint64_t next = slot(index).load(std::memory_order_relaxed);
      head = ((head + kTagOne) & kTagMask) | (next & kIndexMask);
    } else if (carved < block_count_) {
      index = carved++;
    } else {
      // The caller aborts: nothing stored here stands.
      return absl::ResourceExhaustedError(absl::StrCat(
          "all ", block_count_, " blocks of ", block_size_, " bytes are live"));
    }
    Touch(&slot(index));
    slot(index).store(kPoolAllocatedBit | size, std::memory_order_relaxed);
    extents.push_back(Extent{begin_ + index * block_size_, block_size_});
  }
  if (carved != carved_before) {
    Touch(&meta_->carved);
    meta_->carved.store(carved, std::memory_order_relaxed);
  }
  Touch(&meta_->head);
  meta_->head.store(head, std::memory_order_release);
  AddCountersLocked(count, size * count);
  return extents;
}

absl::StatusOr<uint64_t> Pool::FreeBatch(std::span<const uint64_t> offsets) {
  if (!InTransaction()) return OffsetAllocator::FreeBatch(offsets);
  // relaxed: as in AllocateBatch.
  uint64_t head = meta_->head.load(std::memory_order_relaxed);
  uint64_t requested = 0;
  for (uint64_t offset : offsets) {
    SHMALLOC_ASSIGN_OR_RETURN(const uint64_t index, BlockIndex(offset));
    std::atomic<uint64_t>& s = slot(index);
    const uint64_t state = s.load(std::memory_order_relaxed);
    if ((state & kPoolAllocatedBit) == 0) {  // a duplicate lands here too
      return absl::FailedPreconditionError(
          absl::StrCat("offset ", offset, " (block ", index,
                       ") is not live: double free or never allocated"));
    }
    requested += state & ~kPoolAllocatedBit;
    // Push: the slot holds the link; the tag is kept (only pops bump it).
    Touch(&s);
    s.store(head & kIndexMask, std::memory_order_relaxed);
    head = (head & kTagMask) | index;
  }
  Touch(&meta_->head);
  meta_->head.store(head, std::memory_order_release);
  AddCountersLocked(0 - uint64_t{offsets.size()}, 0 - requested);
  return block_size_ * offsets.size();
}

absl::StatusOr<uint64_t> Pool::SizeOf(uint64_t offset) const {
  SHMALLOC_ASSIGN_OR_RETURN(const uint64_t index, BlockIndex(offset));
  // relaxed: a snapshot of the state.
  if ((slot(index).load(std::memory_order_relaxed) & kPoolAllocatedBit) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("offset ", offset, " (block ", index, ") is not live"));
  }
  return block_size_;
}

void Pool::Reset() {
  // relaxed throughout: REQUIRES quiescence; the caller's synchronisation
  // orders this against later operations.
  //
  // Restartable: a crash at any store, then Reset again, ends in the state
  // one uninterrupted Reset gives. Every store is a function of `carved` and
  // `peak_blocks` that a re-run recomputes the same way: the peak is folded
  // first (max is idempotent), the slots are cleared while `carved` still
  // says how many, and `carved` is zeroed last, so a re-run after it only
  // repeats stores of the values already there. For that reason the head
  // keeps its tag: bumping it would be done twice by a re-run, and no bump
  // is needed, since under quiescence no pop holds a stale head to defeat.
  // The Touch calls are no-ops outside a transaction (Reset is run outside
  // one); a test opens one only to count crash points and stop Reset at
  // each store.
  const uint64_t carved = meta_->carved.load(std::memory_order_relaxed);
  if (carved > meta_->peak_blocks.load(std::memory_order_relaxed)) {
    Touch(&meta_->peak_blocks);
    meta_->peak_blocks.store(carved, std::memory_order_relaxed);
  }
  for (uint64_t i = 0; i < carved; ++i) {
    Touch(&slot(i));
    slot(i).store(kPoolNullIndex, std::memory_order_relaxed);
  }
  const uint64_t head = meta_->head.load(std::memory_order_relaxed);
  Touch(&meta_->head);
  meta_->head.store((head & kTagMask) | kPoolNullIndex,
                    std::memory_order_relaxed);
  Touch(&meta_->carved);
  meta_->carved.store(0, std::memory_order_relaxed);
  // Constants: a re-run stores the same values.
  if (counted_) {
    if (meta_->live_allocations.load(std::memory_order_relaxed) != 0) {
      Touch(&meta_->live_allocations);
      meta_->live_allocations.store(0, std::memory_order_relaxed);
    }
    if (meta_->requested_bytes.load(std::memory_order_relaxed) != 0) {
      Touch(&meta_->requested_bytes);
      meta_->requested_bytes.store(0, std::memory_order_relaxed);
    }
  }
}

std::pair<uint64_t, uint64_t> Pool::WalkCounters() const {
  // relaxed: a snapshot; exact only at quiescent points.
  const uint64_t carved =
      std::min(meta_->carved.load(std::memory_order_relaxed), block_count_);
  uint64_t live = 0;
  uint64_t requested = 0;
  for (uint64_t i = 0; i < carved; ++i) {
    const uint64_t v = slot(i).load(std::memory_order_relaxed);
    if (v & kPoolAllocatedBit) {
      ++live;
      requested += v & ~kPoolAllocatedBit;
    }
  }
  return {live, requested};
}

void Pool::UpgradeCounters() {
  if (counted_) return;
  // relaxed: REQUIRES quiescence. The layout word goes last, so a crash
  // before it (with no transaction open) leaves a layout-1 pool whose
  // reserved words the next upgrade overwrites.
  const auto [live, requested] = WalkCounters();
  Touch(&meta_->live_allocations);
  meta_->live_allocations.store(live, std::memory_order_relaxed);
  Touch(&meta_->requested_bytes);
  meta_->requested_bytes.store(requested, std::memory_order_relaxed);
  Touch(&meta_->layout_version);
  meta_->layout_version = kPoolLayoutVersion;
  counted_ = true;
}

AllocatorStats Pool::Stats() const {
  // relaxed: a monitoring snapshot; exact only at quiescent points.
  const uint64_t carved =
      std::min(meta_->carved.load(std::memory_order_relaxed), block_count_);
  uint64_t live = 0;
  uint64_t requested = 0;
  if (counted_) [[likely]] {
    // O(1). Clamped: the counters are read at different instants, so under
    // concurrency they may disagree by the operations in flight.
    live = std::min(meta_->live_allocations.load(std::memory_order_relaxed),
                    block_count_);
    requested = std::min(meta_->requested_bytes.load(std::memory_order_relaxed),
                         live * block_size_);
  } else {
    std::tie(live, requested) = WalkCounters();
  }
  AllocatorStats s;
  s.capacity_bytes = end_ - begin_;
  s.used_bytes = live * block_size_;
  s.free_bytes = s.capacity_bytes - s.used_bytes;
  s.requested_bytes = requested;
  s.live_allocations = live;
  s.peak_used_bytes =
      std::max(meta_->peak_blocks.load(std::memory_order_relaxed), carved) *
      block_size_;
  s.failed_allocations =
      meta_->failed_allocations.load(std::memory_order_relaxed);
  s.largest_free_bytes = live < block_count_ ? block_size_ : 0;
  FillFragmentation(s);
  // Every free block serves every request a pool accepts: no free byte is
  // ever stranded, whatever largest_free / free says.
  s.fragmentation = 0;
  return s;
}

absl::StatusOr<uint64_t> Pool::CountFreeBlocks() const {
  // relaxed throughout: REQUIRES quiescence.
  const uint64_t carved = meta_->carved.load(std::memory_order_relaxed);
  if (carved > block_count_) {
    return absl::InternalError(absl::StrCat(
        "pool carved ", carved, " exceeds block_count ", block_count_));
  }
  std::vector<bool> seen(carved);
  uint64_t length = 0;
  uint64_t index = meta_->head.load(std::memory_order_relaxed) & kIndexMask;
  while (index != kPoolNullIndex) {
    if (index >= carved) {
      return absl::InternalError(absl::StrCat("pool free stack holds index ",
                                              index, " >= carved ", carved,
                                              " after ", length, " entries"));
    }
    if (seen[index]) {
      return absl::InternalError(
          absl::StrCat("pool free stack has a cycle at index ", index));
    }
    seen[index] = true;
    const uint64_t v = slot(index).load(std::memory_order_relaxed);
    if (v & kPoolAllocatedBit) {
      return absl::InternalError(
          absl::StrCat("pool free stack holds live block ", index));
    }
    ++length;
    index = v & kIndexMask;
  }
  return length + (block_count_ - carved);
}

absl::Status Pool::CheckInvariants() const {
  SHMALLOC_RETURN_IF_ERROR(ValidateMetaHeader(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(meta_),
                                 MetaBytesFor(block_count_)),
      Strategy::kPool));
  SHMALLOC_ASSIGN_OR_RETURN(const uint64_t free_blocks, CountFreeBlocks());
  // relaxed throughout: REQUIRES quiescence.
  const uint64_t carved = meta_->carved.load(std::memory_order_relaxed);
  uint64_t live = 0;
  for (uint64_t i = 0; i < block_count_; ++i) {
    const uint64_t v = slot(i).load(std::memory_order_relaxed);
    if ((v & kPoolAllocatedBit) == 0) {
      if (i < carved || v == kPoolNullIndex) continue;
      return absl::InternalError(absl::StrCat(
          "pool uncarved block ", i, " has slot ", v, ", expected null"));
    }
    if (i >= carved) {
      return absl::InternalError(absl::StrCat(
          "pool block ", i, " is live but not carved (carved ", carved, ")"));
    }
    const uint64_t requested = v & ~kPoolAllocatedBit;
    if (requested == 0 || requested > block_size_) {
      return absl::InternalError(absl::StrCat(
          "pool block ", i, " records a request of ", requested, " bytes"));
    }
    ++live;
  }
  if (counted_) {
    const auto [walked_live, walked_requested] = WalkCounters();
    const uint64_t kept =
        meta_->live_allocations.load(std::memory_order_relaxed);
    const uint64_t kept_requested =
        meta_->requested_bytes.load(std::memory_order_relaxed);
    if (kept != walked_live || kept_requested != walked_requested) {
      return absl::InternalError(
          absl::StrCat("pool counters say ", kept, " live / ", kept_requested,
                       " requested bytes, the slots ", walked_live, " / ",
                       walked_requested));
    }
  }
  if (free_blocks + live != block_count_) {
    return absl::InternalError(absl::StrCat(
        "pool has ", free_blocks, " free and ", live, " live blocks of ",
        block_count_, ": blocks lost or duplicated"));
  }
  const uint64_t peak = meta_->peak_blocks.load(std::memory_order_relaxed);
  if (peak > block_count_) {
    return absl::InternalError(
        absl::StrCat("pool peak of ", peak, " blocks exceeds ", block_count_));
  }
  return absl::OkStatus();
}

}  // namespace shmalloc
