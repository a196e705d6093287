#include "allocators/arena.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "common/segment_header.h"
#include "common/status_macros.h"

namespace shmalloc {
namespace {

static_assert(sizeof(ArenaMeta) <= kArenaMetaBytes,
              "arena metadata must fit in the segment header");
static_assert(kArenaMetaOffset % alignof(ArenaMeta) == 0);

// See Arena::SetResetWindowHookForTesting.
std::atomic<void (*)()> reset_window_hook{nullptr};

absl::Status ValidateArenaOptions(const AllocatorOptions& options) {
  if (options.strategy != Strategy::kArena &&
      options.strategy != Strategy::kUnspecified) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena cannot be created for strategy ",
                     std::string(StrategyName(options.strategy))));
  }
  return ValidateRange(options);
}

absl::Status CheckSpanAlignment(std::span<const std::byte> meta) {
  if (reinterpret_cast<uintptr_t>(meta.data()) % alignof(ArenaMeta) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "arena metadata must be ", alignof(ArenaMeta), "-byte aligned"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<uint64_t> Arena::MetadataBytes(const AllocatorOptions& options) {
  SHMALLOC_RETURN_IF_ERROR(ValidateArenaOptions(options));
  return sizeof(ArenaMeta);
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Create(
    std::span<std::byte> meta, const AllocatorOptions& options) {
  SHMALLOC_ASSIGN_OR_RETURN(uint64_t needed, MetadataBytes(options));
  if (meta.size() < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena metadata span of ", meta.size(),
                     " bytes is smaller than the ", needed, " bytes needed"));
  }
  SHMALLOC_RETURN_IF_ERROR(CheckSpanAlignment(meta));

  std::memset(meta.data(), 0, needed);
  auto* m = new (meta.data()) ArenaMeta{};
  m->header.layout_version = kMetaLayoutVersion;
  m->header.strategy = static_cast<uint32_t>(Strategy::kArena);
  m->header.begin = options.begin;
  m->header.end = options.end;
  m->header.meta_bytes = needed;
  m->header.param = 0;
  m->cursor.store(options.begin, std::memory_order_relaxed);
  m->peak_used_bytes.store(0, std::memory_order_relaxed);
  m->failed_allocations.store(0, std::memory_order_relaxed);
  m->epoch.store(0, std::memory_order_relaxed);
  m->layout_version = kArenaLayoutVersion;
  // The magic goes last: a reader that sees it sees a formatted arena.
  std::atomic_ref<uint64_t>(m->header.magic)
      .store(kMetaMagic, std::memory_order_release);
  return absl::WrapUnique(new Arena(m, options.begin, options.end));
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Reformat(
    std::span<std::byte> meta, const AllocatorOptions& options) {
  SHMALLOC_ASSIGN_OR_RETURN(uint64_t needed, MetadataBytes(options));
  if (meta.size() < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("arena metadata span of ", meta.size(),
                     " bytes is smaller than the ", needed, " bytes needed"));
  }
  SHMALLOC_RETURN_IF_ERROR(CheckSpanAlignment(meta));
  auto* m = reinterpret_cast<ArenaMeta*>(meta.data());
  // The cursor first, the epoch last (release): see Reset.
  m->cursor.store(options.begin, std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(m->header.magic)
      .store(kMetaMagic, std::memory_order_relaxed);
  m->header.layout_version = kMetaLayoutVersion;
  m->header.strategy = static_cast<uint32_t>(Strategy::kArena);
  m->header.begin = options.begin;
  m->header.end = options.end;
  m->header.meta_bytes = needed;
  m->header.param = 0;
  std::fill(std::begin(m->header.reserved), std::end(m->header.reserved), 0);
  std::fill(std::begin(m->reserved0), std::end(m->reserved0), 0);
  m->reserved1 = 0;
  std::fill(std::begin(m->reserved2), std::end(m->reserved2), 0);
  m->layout_version = kArenaLayoutVersion;
  const uint64_t capacity = options.end - options.begin;
  if (m->peak_used_bytes.load(std::memory_order_relaxed) > capacity) {
    m->peak_used_bytes.store(capacity, std::memory_order_relaxed);
  }
  m->epoch.fetch_add(1, std::memory_order_release);
  return absl::WrapUnique(new Arena(m, options.begin, options.end));
}

absl::StatusOr<std::unique_ptr<Arena>> Arena::Attach(
    std::span<std::byte> meta) {
  SHMALLOC_RETURN_IF_ERROR(ValidateMetaHeader(meta, Strategy::kArena));
  SHMALLOC_RETURN_IF_ERROR(CheckSpanAlignment(meta));
  if (meta.size() < sizeof(ArenaMeta)) {
    return absl::DataLossError(
        absl::StrCat("arena metadata span of ", meta.size(),
                     " bytes is smaller than ", sizeof(ArenaMeta)));
  }
  auto* m = reinterpret_cast<ArenaMeta*>(meta.data());
  if (m->layout_version != kArenaLayoutVersion) {
    return absl::DataLossError(
        absl::StrCat("arena layout version ", m->layout_version,
                     ", this build reads ", kArenaLayoutVersion));
  }
  auto arena = absl::WrapUnique(new Arena(m, m->header.begin, m->header.end));
  if (absl::Status s = arena->CheckInvariants(); !s.ok()) {
    return absl::DataLossError(
        absl::StrCat("arena metadata is corrupt: ", s.message()));
  }
  return arena;
}

absl::StatusOr<Extent> Arena::Allocate(uint64_t size, uint64_t alignment) {
  // Fast path: 0 < size <= capacity and alignment a power of two <=
  // kMaxAlignment (padding on the cursor honours any of them).
  // Anything else goes through the slow path, which names the problem.
  if (alignment == 0) alignment = kDefaultAlignment;
  if (size - 1 >= end_ - begin_ || alignment - 1 >= kMaxAlignment ||
      (alignment & (alignment - 1)) != 0) {
    return AllocateSlow(size, alignment);
  }
  const uint64_t mask = alignment - 1;
  // relaxed: the cursor publishes no data; it only partitions the range, and
  // every read-modify-write sees the latest value in its modification order,
  // which is all that makes extents disjoint. Callers publish what they write
  // into an extent through their own synchronisation.
  uint64_t cursor = meta_->cursor.load(std::memory_order_relaxed);
  for (;;) {
    // The cursor lies in memory every client can write: one unsigned compare
    // rejects a cursor below begin_ (wraps to a huge difference) or above
    // end_. Without it end_ - cursor wraps, the bounds test below passes and
    // the CAS hands out an extent past end_ or at offset 0 (see the header).
    if (!CursorIsValid(cursor)) [[unlikely]] {
      return CorruptCursorError(cursor);
    }
    const uint64_t padding = (0 - cursor) & mask;
    // begin_ <= cursor <= end_ (checked above), so end_ - cursor cannot wrap,
    // and start + size <= end_.
    if (end_ - cursor < padding || end_ - cursor - padding < size) {
      // relaxed: a statistic, read only for Stats().
      meta_->failed_allocations.fetch_add(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(
          absl::StrCat("arena has ", end_ - cursor, " bytes left, ", size,
                       " requested at ", "alignment ", alignment));
    }
    const uint64_t start = cursor + padding;
    // On failure `cursor` is reloaded, re-validated and the extent recomputed
    // from it.
    if (meta_->cursor.compare_exchange_weak(cursor, start + size,
                                            std::memory_order_relaxed,
                                            std::memory_order_relaxed)) {
      return Extent{start, size};
    }
  }
}

absl::Status Arena::CorruptCursorError(uint64_t cursor) const {
  return absl::DataLossError(
      absl::StrCat("arena cursor ", cursor, " is outside [", begin_, ", ", end_,
                   "]: the shared metadata is damaged; Reset repairs it"));
}

absl::StatusOr<Extent> Arena::AllocateSlow(uint64_t size, uint64_t alignment) {
  SHMALLOC_RETURN_IF_ERROR(ValidateAllocateArgs(size, alignment));
  if (size > end_ - begin_) {
    return absl::InvalidArgumentError(
        absl::StrCat("size ", size, " exceeds the arena's capacity of ",
                     end_ - begin_, " bytes"));
  }
  return Allocate(size, alignment);
}

absl::Status Arena::Free(uint64_t offset) {
  SHMALLOC_RETURN_IF_ERROR(ValidateOffsetInRange(offset, begin_, end_));
  return absl::FailedPreconditionError(
      "arena frees only as a whole: reset or rewind");
}

absl::StatusOr<uint64_t> Arena::SizeOf(uint64_t offset) const {
  SHMALLOC_RETURN_IF_ERROR(ValidateOffsetInRange(offset, begin_, end_));
  return absl::UnimplementedError("arena keeps no per-extent sizes");
}

Arena::Marker Arena::Mark() const {
  // acquire on the epoch, and the epoch first: Reset stores the cursor before
  // it bumps the epoch (release), so a marker carrying the new epoch also
  // carries a cursor from after that Reset. A marker pairing the old epoch
  // with a new cursor is refused by Rewind (epoch mismatch), which is safe.
  const uint64_t epoch = meta_->epoch.load(std::memory_order_acquire);
  // relaxed: a marker is only meaningful to the thread that later rewinds to
  // it, and Rewind/Reset are not concurrent with allocation.
  const uint64_t cursor = meta_->cursor.load(std::memory_order_relaxed);
  // A corrupt cursor reads as a full arena (see Stats); Rewind refuses to
  // act on a corrupt cursor anyway.
  return Marker{CursorIsValid(cursor) ? cursor : end_, epoch};
}

absl::Status Arena::Rewind(Marker marker) {
  if (marker.offset < begin_ || marker.offset > end_) {
    return absl::InvalidArgumentError(absl::StrCat("marker ", marker.offset,
                                                   " is outside the arena [",
                                                   begin_, ", ", end_, "]"));
  }
  // relaxed throughout: REQUIRES no concurrent allocation (see header).
  const uint64_t epoch = meta_->epoch.load(std::memory_order_relaxed);
  if (marker.epoch != epoch) {
    return absl::FailedPreconditionError(
        absl::StrCat("marker is from epoch ", marker.epoch,
                     " but the arena was reset since (epoch ", epoch, ")"));
  }
  const uint64_t cursor = meta_->cursor.load(std::memory_order_relaxed);
  if (!CursorIsValid(cursor)) [[unlikely]] {
    return CorruptCursorError(cursor);  // only Reset repairs it
  }
  if (marker.offset > cursor) {
    return absl::FailedPreconditionError(
        absl::StrCat("marker ", marker.offset, " is above the cursor ", cursor,
                     " (already rewound past it)"));
  }
  const uint64_t used = cursor - begin_;
  if (used > meta_->peak_used_bytes.load(std::memory_order_relaxed)) {
    meta_->peak_used_bytes.store(used, std::memory_order_relaxed);
  }
  meta_->cursor.store(marker.offset, std::memory_order_relaxed);
  return absl::OkStatus();
}

void Arena::Reset() {
  // relaxed loads/stores on cursor and peak: REQUIRES no concurrent
  // allocation (see header). A corrupt cursor is not folded into the peak
  // (that would make the peak exceed capacity and the region fail Attach
  // for ever); Reset is what repairs it.
  const uint64_t cursor = meta_->cursor.load(std::memory_order_relaxed);
  if (CursorIsValid(cursor)) {
    const uint64_t used = cursor - begin_;
    if (used > meta_->peak_used_bytes.load(std::memory_order_relaxed)) {
      meta_->peak_used_bytes.store(used, std::memory_order_relaxed);
    }
  }
  // Cursor first, then the epoch with release. The daemon cannot enforce the
  // quiescence this function requires, so the order matters when a client
  // claims a chunk concurrently: it loads the epoch (acquire) and then CASes
  // the cursor. If it sees the new epoch it synchronises with this release,
  // so its CAS reads begin_ or later and its chunk is in post-reset space; if
  // it sees the old epoch its chunk is tagged stale and dropped. The opposite
  // order let a chunk carved from pre-reset space carry the new epoch, and
  // later claims from begin_ overlapped it (review item M7;
  // tests/stress/arena_reset_stress.cc).
  meta_->cursor.store(begin_, std::memory_order_relaxed);
  // relaxed: the hook is set once by a test before any thread resets.
  if (void (*hook)() = reset_window_hook.load(std::memory_order_relaxed)) {
    hook();  // a descheduled Reset, made certain (tests only)
  }
  meta_->epoch.fetch_add(1, std::memory_order_release);
}

AllocatorStats Arena::Stats() const {
  AllocatorStats s;
  // relaxed: independent counters; exact only at quiescent points.
  uint64_t cursor = meta_->cursor.load(std::memory_order_relaxed);
  // A corrupt cursor reads as a full arena, so the figures stay consistent
  // (used + free == capacity, peak <= capacity); CheckInvariants names it.
  if (!CursorIsValid(cursor)) [[unlikely]]
    cursor = end_;
  s.capacity_bytes = end_ - begin_;
  s.used_bytes = cursor - begin_;
  s.free_bytes = end_ - cursor;
  s.requested_bytes = s.used_bytes;  // not tracked; see header
  s.live_allocations = 0;            // not tracked; see header
  s.peak_used_bytes = std::max(
      meta_->peak_used_bytes.load(std::memory_order_relaxed), s.used_bytes);
  s.failed_allocations =
      meta_->failed_allocations.load(std::memory_order_relaxed);
  s.largest_free_bytes = s.free_bytes;
  FillFragmentation(s);
  return s;
}

absl::Status Arena::CheckInvariants() const {
  SHMALLOC_RETURN_IF_ERROR(ValidateMetaHeader(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(meta_),
                                 sizeof(ArenaMeta)),
      Strategy::kArena));
  if (meta_->header.begin % kHeapBeginGranule != 0) {
    return absl::InternalError(absl::StrCat("arena begin ", meta_->header.begin,
                                            " is not a multiple of ",
                                            kHeapBeginGranule));
  }
  // relaxed: see Stats().
  const uint64_t cursor = meta_->cursor.load(std::memory_order_relaxed);
  if (cursor < begin_ || cursor > end_) {
    return absl::InternalError(absl::StrCat(
        "arena cursor ", cursor, " is outside [", begin_, ", ", end_, "]"));
  }
  const uint64_t peak = meta_->peak_used_bytes.load(std::memory_order_relaxed);
  if (peak > end_ - begin_) {
    return absl::InternalError(
        absl::StrCat("arena peak ", peak, " exceeds capacity ", end_ - begin_));
  }
  return absl::OkStatus();
}

void Arena::SetResetWindowHookForTesting(void (*hook)()) {
  reset_window_hook.store(hook, std::memory_order_relaxed);
}

uint64_t Arena::epoch() const {
  // acquire: pairs with Reset's release, so a caller that sees the new epoch
  // and then reads or CASes the cursor sees the rewound cursor (or later).
  return meta_->epoch.load(std::memory_order_acquire);
}

}  // namespace shmalloc
