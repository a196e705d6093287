// One shared-memory region: its two files, its allocator and who owns what.
//
// Region NAME is <shm_dir>/shmalloc-NAME.data (SegmentHeader, then the heap
// at kHeapBegin; mode 0660; clients map it) and <shm_dir>/shmalloc-NAME.meta
// (RegionMetaHeader, then the allocator metadata; mode 0600; daemon only).
// ARENA regions keep their allocator metadata in SegmentHeader::arena_meta
// instead, so clients bump-allocate on it without any RPC.
//
// Every operation takes the region's mutex: Buddy, Slab and FreeList are not
// thread-safe, and the owner table and histogram must move in step with the
// allocator. Every operation is all or nothing: on error the allocator, the
// owner table and the histogram are as before. A refusal for lack of space
// counts once in failed_allocations; a batch is first checked against a
// bound on the free bytes, so only a batch that passes the bound and then
// fails on fragmentation can leave the allocator's peak raised by its
// rolled-back part.
//
// Invariants (under the mutex, outside an operation):
//   owners.owned_allocations() <= allocator live_allocations (non-ARENA)
//   sum(meta histogram) == allocator live_allocations           (non-ARENA)
//   every owner record names a live allocation start
//
// Thread-safety: thread-safe.
#ifndef SERVER_REGION_H_
#define SERVER_REGION_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "allocators/allocator.h"
#include "common/segment_header.h"
#include "server/owner_table.h"
#include "server/region_meta.h"
#include "server/shm_file.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

// What one Allocate call asks for (already past the daemon-wide limits).
struct AllocateArgs {
  uint64_t session_id = 0;  // the asking session; non-zero
  uint64_t size = 0;        // bytes per extent
  uint64_t alignment = 0;   // 0 = kDefaultAlignment
  uint32_t count = 1;       // extents; >= 1
  bool detached = false;    // no owner record
};

struct AllocateResult {
  std::vector<Extent> extents;
  uint64_t generation = 0;
};

class Region {
 public:
  // Creates the region's files in `shm_dir` and formats them for `request`
  // (name, strategy, heap size, block size, size classes, quota). Returns
  // INVALID_ARGUMENT (bad name, strategy, sizes or strategy options),
  // ALREADY_EXISTS (a file of that name exists), RESOURCE_EXHAUSTED (the
  // mount is too small). On error no file is left behind.
  // REQUIRES: the caller has checked daemon-wide limits.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Region>> Create(
      const std::string& shm_dir, const v1::CreateRegionRequest& request);

  // Re-attaches region `name` from its files: checks both headers, the
  // geometry and the allocator's invariants. Returns NOT_FOUND (no files),
  // DATA_LOSS or FAILED_PRECONDITION (a file that does not validate). Never
  // writes a file that does not validate.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Region>> Open(
      const std::string& shm_dir, const std::string& name);

  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  // Allocates args.count extents of args.size bytes, recorded as owned by
  // args.session_id unless detached (ARENA: never recorded). All or nothing.
  // Returns INVALID_ARGUMENT (size 0 or larger than the heap, bad alignment,
  // a size the strategy cannot serve), RESOURCE_EXHAUSTED (region full or
  // the session's quota), NOT_FOUND (region deleted, or `session_alive`
  // says no: it is asked under the region lock, so a session that is closing
  // cannot gain allocations after its release). Thread-safe.
  [[nodiscard]] absl::StatusOr<AllocateResult> Allocate(
      const AllocateArgs& args, absl::FunctionRef<bool()> session_alive);

  // Frees every offset, whoever owns it, and returns the bytes released.
  // All or nothing: every offset is checked first. FAILED_PRECONDITION (ARENA
  // region, duplicates, not a live allocation start), INVALID_ARGUMENT
  // (outside the heap), NOT_FOUND (region deleted). Thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> Free(
      std::span<const uint64_t> offsets);

  // Frees everything and bumps the generation. FAILED_PRECONDITION when
  // allocations are live and !force (never for ARENA); NOT_FOUND when the
  // region was deleted. Thread-safe.
  [[nodiscard]] absl::Status Reset(bool force);

  // Marks the region deleted (every later operation is NOT_FOUND) and drops
  // its owner records; the caller then unlinks the files. FAILED_PRECONDITION
  // when allocations are live (ARENA: a non-zero cursor) and !force;
  // NOT_FOUND when already deleted. Thread-safe.
  [[nodiscard]] absl::Status MarkDeleted(bool force);

  // Removes both files (after MarkDeleted). Returns the first error; tries
  // both. Thread-safe.
  [[nodiscard]] absl::Status UnlinkFiles() const;

  // Frees every allocation `session_id` owns here; returns how many.
  // Thread-safe.
  uint64_t ReleaseSession(uint64_t session_id);

  // Returns the region's description. Thread-safe.
  v1::Region Describe() const;

  // Returns the region's figures; SessionUsage entries carry ids only (the
  // caller fills client names). Thread-safe.
  v1::RegionStats Stats() const;

  // Writes both mappings back (msync). Thread-safe.
  [[nodiscard]] absl::Status Sync() const;

  // Returns true when `request` describes this region's geometry (used to
  // warn when the config asks for a region that exists with another shape).
  bool Matches(const v1::CreateRegionRequest& request) const;

  const std::string& name() const { return name_; }
  Strategy strategy() const { return strategy_; }

 private:
  Region(std::string shm_dir, std::string name, MappedFile data,
         MappedFile meta, std::span<std::byte> allocator_meta,
         std::unique_ptr<OffsetAllocator> allocator);

  SegmentHeader* segment() const {
    return reinterpret_cast<SegmentHeader*>(data_.data());
  }
  RegionMetaHeader* meta() const {
    return reinterpret_cast<RegionMetaHeader*>(meta_.data());
  }
  // Heap bytes; from the read-only part of the segment header.
  uint64_t capacity() const {
    return segment()->heap_end - segment()->heap_begin;
  }

  absl::StatusOr<AllocateResult> AllocateArena(const AllocateArgs& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Live allocations the daemon made (sum of the histogram).
  uint64_t HistogramLive() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees `extents` (just allocated, not recorded anywhere yet).
  void RollBack(const std::vector<Extent>& extents)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees one recorded allocation of `size_bytes`; CHECK-fails on error.
  void FreeKnown(uint64_t offset, uint64_t size_bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ResetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAlive() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string shm_dir_;
  const std::string name_;
  const Strategy strategy_;
  MappedFile data_;  // constant mapping; header fields guarded below
  MappedFile meta_;  // constant mapping; its contents guarded by mu_
  // The allocator's metadata (in meta_, or in data_ for ARENA); snapshotted
  // to undo a batch exactly.
  const std::span<std::byte> allocator_meta_;

  mutable absl::Mutex mu_;
  std::unique_ptr<OffsetAllocator> allocator_ ABSL_PT_GUARDED_BY(mu_);
  OwnerTable owners_ ABSL_GUARDED_BY(mu_);
  bool deleted_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace shmalloc::server

#endif  // SERVER_REGION_H_
