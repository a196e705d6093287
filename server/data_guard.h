// The daemon's protection against a data file truncated or grown under it.
//
// A region's data file is mapped by every client (mode 0660, its group), so
// any of them can ftruncate it. Touching a page of a MAP_SHARED mapping past
// the file's end raises SIGBUS, which would kill shmallocd and every region
// with it (review item H1). docs/design/trust.md has the choice; in short:
//
//   - The daemon never reads a non-ARENA data file on the request path: its
//     truth is the meta file (mode 0600, daemon only). It writes the data
//     header only at Open/Create/Reset (PublishSegment), guarded.
//   - ARENA regions keep their cursor in the data file (clients bump it
//     without RPCs), so the daemon must touch it: every such access runs
//     under GuardSigbus, a per-thread sigsetjmp with a process-wide SIGBUS
//     handler that siglongjmps back only when the fault happened inside a
//     guarded call (any other SIGBUS still kills the process, as before).
//   - Every locked region operation first compares the file's size with the
//     geometry (DataFileWatch::Check, one fstat); a wrong size, or a fault,
//     marks the region DAMAGED for good: DATA_LOSS for every call until an
//     operator deletes it or resets it with force (which re-creates it).
//
// Why not a sealed memfd (F_SEAL_SHRINK | F_SEAL_GROW): regions must outlive
// the daemon (restart without losing data), so they are named files in the
// shm directory, and a named tmpfs file cannot be sealed; a memfd would also
// have to reach clients as a descriptor (SCM_RIGHTS), which gRPC does not
// carry.
//
// Thread-safety: GuardSigbus is thread-safe (per-thread state); a
// DataFileWatch is thread-safe; GuardedAllocator is as thread-safe as the
// allocator it wraps.
#ifndef SERVER_DATA_GUARD_H_
#define SERVER_DATA_GUARD_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "allocators/allocator.h"
#include "server/shm_file.h"

namespace shmalloc::server {

// Runs `access` and returns true, or returns false when it raised SIGBUS
// (the access is abandoned at the faulting instruction). `access` must only
// load and store to shared memory: no lock taken, no object with a
// destructor alive in its frames at a load or store that may fault (they
// are abandoned, not unwound). Nests. Installs the handler on first use.
bool GuardSigbus(absl::FunctionRef<void()> access);

// How many guarded accesses faulted since the process started (tests,
// logs). Thread-safe.
uint64_t GuardedSigbusCount();

// Watches one region's data file: its size against the geometry, and the
// faults of guarded accesses to its mapping.
class DataFileWatch {
 public:
  // `file` must have been opened with keep_fd and outlive the watch.
  DataFileWatch(const MappedFile* file, uint64_t expected_size);

  // OK when the file still has the expected size and nothing faulted;
  // otherwise DATA_LOSS naming the cause (and damaged() from then on).
  // One fstat.
  [[nodiscard]] absl::Status Check();

  // Runs `access` (see GuardSigbus) on the mapping; DATA_LOSS when it
  // faulted, or when Check fails first (then `access` does not run).
  [[nodiscard]] absl::Status Guard(absl::FunctionRef<void()> access);

  // True once the file was found the wrong size or an access faulted.
  bool damaged() const { return damaged_.load(std::memory_order_acquire); }
  // Why (empty while not damaged).
  std::string reason() const;

 private:
  absl::Status Damage(std::string reason);

  const MappedFile* file_;
  const uint64_t expected_size_;
  std::atomic<bool> damaged_{false};
  mutable absl::Mutex mu_;
  std::string reason_ ABSL_GUARDED_BY(mu_);
};

// An allocator whose metadata lies in a client-writable data file (ARENA):
// every call checks the file's size first and runs guarded. Stats of a
// damaged file read as a full region.
class GuardedAllocator final : public OffsetAllocator {
 public:
  GuardedAllocator(std::unique_ptr<OffsetAllocator> inner,
                   DataFileWatch* watch);

  [[nodiscard]] absl::StatusOr<Extent> Allocate(uint64_t size,
                                                uint64_t alignment) override;
  [[nodiscard]] absl::Status Free(uint64_t offset) override;
  [[nodiscard]] absl::StatusOr<uint64_t> SizeOf(uint64_t offset) const override;
  void Reset() override;
  AllocatorStats Stats() const override;
  [[nodiscard]] absl::Status CheckInvariants() const override;
  Strategy strategy() const override { return inner_->strategy(); }
  uint64_t begin() const override { return inner_->begin(); }
  uint64_t end() const override { return inner_->end(); }

 private:
  std::unique_ptr<OffsetAllocator> inner_;
  DataFileWatch* watch_;  // not owned
};

}  // namespace shmalloc::server

#endif  // SERVER_DATA_GUARD_H_
