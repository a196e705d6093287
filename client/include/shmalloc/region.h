// shmalloc::client::Region: one region's data file mapped read-write
// (MAP_SHARED) into this process, plus the daemon calls that act on it.
//
// Offsets are bytes from the start of the data file and mean the same in
// every process that maps the region; ToPointer/ToOffset convert, with bounds
// checks: an offset outside [heap_begin, heap_end) never becomes a pointer.
//
// Invariants: base() maps exactly info().size_bytes bytes; the segment header
// at base() had the right magic, layout version, size and name when opened;
// heap_begin() < heap_end() == size_bytes().
//
// A reset (ResetRegion) bumps the generation in the segment header: keep the
// generation an allocation was made in (Allocation::generation()) and call
// CheckGeneration before trusting an old offset. A region deleted while
// mapped stays mapped here (the memory is valid until the Region goes away);
// daemon calls on it return NOT_FOUND. A region deleted and re-created under
// the same name is another region (another incarnation): every call of this
// Region that sends or receives offsets (Allocate*, Free, and so Allocation,
// Arena and BlockCache) answers FAILED_PRECONDITION ("stale: region ... was
// deleted and re-created") instead, never an offset of the new region
// through the old mapping nor a Free of the new region's blocks: Allocate and
// Free carry the incarnation mapped here and the daemon refuses another one
// under the region lock (no syscall here); Adopt and the BlockCache's paths
// without an RPC compare the data file in the shm directory with the file
// mapped here (CheckIncarnation).
//
// Trust: the daemon's extents are checked against this mapping (the heap
// bounds the daemon described, which OpenRegion checked against the file's
// size): an extent outside [heap_begin, heap_end) is DATA_LOSS, never a
// pointer. The segment header is client-writable; only generation() is read
// from it after the open, and only as a hint (the daemon's Free checks the
// generation it keeps itself).
//
// Lifetime: shared (std::shared_ptr) by Allocations, Arenas and BlockCaches
// made from it; the mapping and the session last until the last of them.
// Thread-safety: every method is thread-safe.
#ifndef CLIENT_INCLUDE_SHMALLOC_REGION_H_
#define CLIENT_INCLUDE_SHMALLOC_REGION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "shmalloc/allocation.h"
#include "shmalloc/client.h"
#include "shmalloc/types.h"

namespace shmalloc::client {

class Region : public std::enable_shared_from_this<Region> {
 public:
  ~Region();  // unmaps
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  // Returns the region as described when it was opened.
  const RegionInfo& info() const { return info_; }
  const std::string& name() const { return info_.name; }
  Strategy strategy() const { return info_.strategy; }
  uint64_t size_bytes() const { return info_.size_bytes; }
  uint64_t heap_begin() const { return info_.heap_begin; }
  uint64_t heap_end() const { return info_.heap_end; }
  // Returns the incarnation the daemon described when the region was opened.
  uint64_t incarnation() const { return info_.incarnation; }
  // Returns the address of offset 0 (the segment header) in this process.
  std::byte* base() const { return base_; }

  // Returns the current generation, read from the shared segment header.
  // Thread-safe; lock-free.
  uint64_t generation() const;
  // Returns OK when the region's generation is still `generation`, otherwise
  // FAILED_PRECONDITION ("stale: region was reset"). Thread-safe; lock-free.
  absl::Status CheckGeneration(uint64_t generation) const;
  // Returns OK while the region's data file in the shm directory is the file
  // mapped here (or is gone: the daemon then answers NOT_FOUND), otherwise
  // FAILED_PRECONDITION ("stale: region was deleted and re-created"). One
  // stat(2). Thread-safe.
  absl::Status CheckIncarnation() const;
  // Returns OK when [offset, offset + size) is a non-empty range inside
  // [heap_begin, heap_end) of this mapping, otherwise DATA_LOSS naming
  // `what` (an extent from the daemon or the shared memory that is not in
  // the heap means damaged metadata, not a caller's mistake). Thread-safe.
  absl::Status CheckExtent(uint64_t offset, uint64_t size,
                           std::string_view what) const {
    if (offset >= info_.heap_begin && offset < info_.heap_end && size > 0 &&
        size <= info_.heap_end - offset) [[likely]] {
      return absl::OkStatus();
    }
    return BadExtent(offset, size, what);
  }

  // Returns the address of `offset`, or nullptr when offset is outside
  // [heap_begin, heap_end). Thread-safe; lock-free.
  void* ToPointer(uint64_t offset) const {
    return offset >= info_.heap_begin && offset < info_.heap_end
               ? base_ + offset
               : nullptr;
  }
  // Returns the offset of `p`. INVALID_ARGUMENT when p does not point into
  // the heap of this mapping. Thread-safe; lock-free.
  absl::StatusOr<uint64_t> ToOffset(const void* p) const;
  // Returns the bytes [offset, offset + size). INVALID_ARGUMENT unless they
  // lie inside [heap_begin, heap_end) and size > 0. Thread-safe; lock-free.
  absl::StatusOr<std::span<std::byte>> Span(uint64_t offset,
                                            uint64_t size) const;

  // Allocates `size` bytes through the daemon (one RPC). The handle frees it
  // on destruction unless options.detached or Release(). INVALID_ARGUMENT,
  // RESOURCE_EXHAUSTED, NOT_FOUND (region deleted), UNAVAILABLE,
  // FAILED_PRECONDITION (region deleted and re-created since it was opened),
  // DATA_LOSS (the daemon answered an extent outside this mapping's heap). On
  // an ARENA region allocate with options.detached (an arena frees only as a
  // whole: the handle's Free would be FAILED_PRECONDITION) or, faster, an
  // Arena.
  absl::StatusOr<Allocation> Allocate(uint64_t size,
                                      const AllocateOptions& options = {});
  // Allocates `count` blocks of `size` bytes in one RPC; all or nothing.
  // Errors as Allocate.
  absl::StatusOr<std::vector<Allocation>> AllocateBatch(
      uint64_t size, uint32_t count, const AllocateOptions& options = {});
  // Allocates without RAII: the caller frees with Free. Errors as Allocate.
  // `generation`, when not null, receives the region generation the daemon
  // allocated in (pass it to Free).
  absl::StatusOr<std::vector<Extent>> AllocateExtents(
      uint64_t size, uint32_t count, const AllocateOptions& options = {},
      uint64_t* generation = nullptr);
  // Frees live allocations (any session's), all or nothing; one logical RPC,
  // fenced by the daemon (FAILED_PRECONDITION when re-created),
  // resent with the same request id when its outcome was lost in a daemon
  // restart, so never applied twice. `generation`: the one they were
  // allocated in (a reset since makes it FAILED_PRECONDITION); 0 =
  // unchecked. FAILED_PRECONDITION (not a live allocation start,
  // duplicates, ARENA region, stale generation), INVALID_ARGUMENT (out of
  // range), NOT_FOUND.
  absl::Status Free(uint64_t offset, uint64_t generation = 0);
  absl::Status Free(std::span<const uint64_t> offsets, uint64_t generation = 0);

  // Takes ownership of live DETACHED allocations (another process allocated
  // them with options.detached and handed the offsets over): afterwards this
  // session owns them, so the daemon frees them when it ends (the process
  // exits or is killed) and counts them in its quota. All or nothing; one
  // logical RPC (AdoptAllocations), resent with the same request id after a
  // lost outcome. `generation` as in Free. FAILED_PRECONDITION (an
  // allocation some session owns — adopting would steal it —, not a live
  // allocation start, duplicates, ARENA region, stale generation, region
  // re-created), INVALID_ARGUMENT (out of range), RESOURCE_EXHAUSTED
  // (quota), NOT_FOUND.
  absl::Status Adopt(uint64_t offset, uint64_t generation = 0);
  absl::Status Adopt(std::span<const uint64_t> offsets,
                     uint64_t generation = 0);
  // Adopts `extent` (Adopt above) and returns an owning handle over it:
  // the handle frees it when destroyed, and the session's end frees it if
  // the handle never does. Errors as Adopt, and INVALID_ARGUMENT (an
  // extent not inside this mapping's heap; nothing is adopted then).
  absl::StatusOr<Allocation> AdoptAllocation(const Extent& extent,
                                             uint64_t generation = 0);

  // Returns the region's figures (GetStats). NOT_FOUND when deleted.
  absl::StatusOr<RegionStats> Stats() const;
  // Resets the region through the daemon (ResetRegion) and returns its new
  // description. FAILED_PRECONDITION when it has live allocations and
  // !force. Outstanding offsets become stale (CheckGeneration fails).
  absl::StatusOr<RegionInfo> Reset(bool force = false);

  // The shared session (for Arena, BlockCache and the C API).
  const std::shared_ptr<internal::Connection>& connection() const {
    return connection_;
  }

  // Used by Client::OpenRegion; validates nothing. Not for users.
  Region(std::shared_ptr<internal::Connection> connection, RegionInfo info,
         std::byte* base);

 private:
  std::shared_ptr<internal::Connection> connection_;
  RegionInfo info_;
  absl::Status BadExtent(uint64_t offset, uint64_t size,
                         std::string_view what) const;

  std::byte* base_;   // mapping of info_.size_bytes bytes
  std::string path_;  // the data file in this process's view of the shm dir
  uint64_t file_dev_ = 0;  // st_dev and st_ino of the mapped file when the
  uint64_t file_ino_ = 0;  // Region was made; 0 = unknown (check skipped)
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_REGION_H_
