// shmalloc's own strategies as benchmark subjects (see workloads.h).
//
// Each subject formats a fresh allocator of the concrete class (all are
// `final`, so calls are direct, as in the daemon's per-strategy code) over
// [kHeapBegin, kHeapBegin + heap_bytes) of a real mapped heap, with its
// metadata in a second mapping, and turns offsets into pointers to write
// the benchmark's byte. Requests pass alignment 16 (kDefaultAlignment,
// malloc's) explicitly.
//
// Thread-safety: as the strategy (Arena and Pool are lock-free).
#ifndef BENCH_ALLOCATORS_STRATEGIES_H_
#define BENCH_ALLOCATORS_STRATEGIES_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <span>
#include <vector>

#include "allocators/allocator.h"
#include "allocators/arena.h"
#include "allocators/buddy.h"
#include "allocators/free_list.h"
#include "allocators/pool.h"
#include "allocators/slab.h"
#include "allocators/undo_log.h"
#include "bench/allocators/heap.h"
#include "bench/allocators/workloads.h"

namespace shmalloc::bench {

inline constexpr uint64_t kBenchHeapBegin = 4096;  // as the segment header

[[noreturn]] inline void Die(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "bench: %s: %s\n", what, status.ToString().c_str());
  std::abort();
}

// kLogged: the daemon's path. An undo log (allocators/undo_log.h) is
// formatted over the metadata and every Allocate / Free is one transaction
// on it (Begin, the call, Commit), so every metadata store is logged first,
// as in shmallocd; Pool then takes its in-transaction path (plain logged
// stores instead of read-modify-writes).
template <class X, Strategy kStrategy, bool kLogged = false>
class OffsetSubject {
 public:
  using Handle = uint64_t;
  // Passed explicitly: malloc's alignment, and the value 0 (= default) means.
  static constexpr uint64_t kAlignment = kDefaultAlignment;

  explicit OffsetSubject(const Geometry& g) {
    AllocatorOptions options;
    options.strategy = kStrategy;
    options.begin = kBenchHeapBegin;
    options.end = kBenchHeapBegin + g.heap_bytes;
    if constexpr (kStrategy == Strategy::kPool) {
      options.block_size = g.block_bytes;
    }
    if constexpr (kStrategy == Strategy::kFreeList) {
      // Room for every live object plus as many free gaps between them.
      options.max_extents = 2 * g.max_objects + 1024;
    }
    absl::StatusOr<uint64_t> meta_bytes = X::MetadataBytes(options);
    if (!meta_bytes.ok()) Die("MetadataBytes", meta_bytes.status());
    Buffer& meta = CachedBuffer("meta", *meta_bytes);
    auto created = X::Create(meta.span().first(*meta_bytes), options);
    if (!created.ok()) Die("Create", created.status());
    allocator_ = *std::move(created);
    heap_ = CachedBuffer("heap", options.end).data();
    if constexpr (kLogged) {
      Buffer& area = CachedBuffer("undo", UndoLogBytes(kLogEntries));
      absl::StatusOr<UndoLog> log =
          UndoLog::Format(meta.span().first(*meta_bytes),
                          area.span().first(UndoLogBytes(kLogEntries)));
      if (!log.ok()) Die("UndoLog::Format", log.status());
      log_ = std::make_unique<UndoLog>(*std::move(log));
      allocator_->set_undo_log(log_.get());
    }
  }

  Handle Allocate(uint64_t size) {
    if constexpr (kLogged) log_->Begin();
    absl::StatusOr<Extent> extent = allocator_->Allocate(size, kAlignment);
    if constexpr (kLogged) {
      if (extent.ok()) {
        log_->Commit();
      } else {
        log_->Abort();
      }
    }
    return extent.ok() ? extent->offset : 0;
  }
  std::byte* Data(Handle h) { return heap_ + h; }
  void Free(Handle h, uint64_t) {
    // The status is checked so the compiler cannot drop its construction;
    // a failure would be a strategy bug, and aborts the run.
    if constexpr (kLogged) log_->Begin();
    absl::Status status = allocator_->Free(h);
    if (!status.ok()) [[unlikely]]
      Die("Free", status);
    if constexpr (kLogged) log_->Commit();
  }
  void Reset() requires(kStrategy == Strategy::kArena) { allocator_->Reset(); }

  // used / free from Stats(); largest by binary search on Allocate, checked
  // against Stats().largest_free_bytes by the reader of the output.
  Footprint Measure(std::span<const Handle>) {
    const AllocatorStats stats = allocator_->Stats();
    Footprint f;
    f.used_bytes = double(stats.used_bytes);
    f.free_bytes = double(stats.free_bytes);
    f.largest_bytes = double(LargestThatSucceeds(*this, stats.free_bytes));
    return f;
  }

  X& allocator() { return *allocator_; }

 private:
  // Entries of the bench's log: far more than one operation logs.
  static constexpr uint64_t kLogEntries = 4096;

  std::unique_ptr<X> allocator_;
  std::byte* heap_ = nullptr;
  std::unique_ptr<UndoLog> log_;  // kLogged only
};

using ArenaSubject = OffsetSubject<Arena, Strategy::kArena>;
using PoolSubject = OffsetSubject<Pool, Strategy::kPool>;
using BuddySubject = OffsetSubject<Buddy, Strategy::kBuddy>;
using SlabSubject = OffsetSubject<Slab, Strategy::kSlab>;
using FreeListSubject = OffsetSubject<FreeList, Strategy::kFreeList>;
using PoolLoggedSubject = OffsetSubject<Pool, Strategy::kPool, true>;
using FreeListLoggedSubject =
    OffsetSubject<FreeList, Strategy::kFreeList, true>;

// The FreeList's own placement with none of its work: a floor row for the
// mixed workload, not an allocator. The first time it is built for a table it
// runs a FreeList through that table's prefill and one cycle of its steady
// state, recording every offset handed out; Allocate then replays those
// offsets in the order BM_Mixed asks for them (its steady state cycles the
// table with the same period) and Free does nothing. What remains is the
// loop, the table and the byte written at exactly the addresses the FreeList
// chose, so mixed/free_list minus this row is the FreeList's own cost.
template <uint64_t kMax>
class FreeListReplay {
 public:
  using Handle = uint64_t;
  explicit FreeListReplay(const Geometry& g) : offsets_(Recorded(g)) {
    heap_ = CachedBuffer("heap", kBenchHeapBegin + g.heap_bytes).data();
  }
  Handle Allocate(uint64_t) {
    const Handle h = offsets_[next_];
    if (++next_ == offsets_.size()) next_ = kMixedLive;
    return h;
  }
  std::byte* Data(Handle h) { return heap_ + h; }
  void Free(Handle, uint64_t) {}
  Footprint Measure(std::span<const Handle>) { return {}; }

 private:
  static const std::vector<uint64_t>& Recorded(const Geometry& g) {
    static const std::vector<uint64_t> offsets = [&] {
      const std::vector<MixedOp>& table = MixedTable(kMax);
      FreeListSubject s(g);
      std::vector<uint64_t> out;
      out.reserve(table.size());
      std::vector<uint64_t> live(kMixedLive);
      for (uint64_t i = 0; i < table.size(); ++i) {
        if (i >= kMixedLive) s.Free(live[table[i].victim], 0);
        const uint64_t h = s.Allocate(table[i].size);
        if (h == 0) {
          std::fprintf(stderr, "bench: FreeListReplay: allocation failed\n");
          std::abort();
        }
        live[table[i].victim] = h;
        out.push_back(h);
      }
      return out;
    }();
    return offsets;
  }

  const std::vector<uint64_t>& offsets_;
  std::byte* heap_ = nullptr;
  size_t next_ = 0;
};

}  // namespace shmalloc::bench

#endif  // BENCH_ALLOCATORS_STRATEGIES_H_
