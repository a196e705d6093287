// One shared-memory region: its two files, its allocator and who owns what.
//
// Region NAME is <shm_dir>/shmalloc-NAME.data (SegmentHeader, then the heap
// at kHeapBegin; mode 0660; clients map it) and <shm_dir>/shmalloc-NAME.meta
// (RegionMetaHeader, the allocator metadata, the owner records and the undo
// log; mode 0600; daemon only). ARENA regions keep their allocator metadata
// in SegmentHeader::arena_meta instead, so clients bump-allocate on it
// without any RPC.
//
// Durability: every change to the meta file is one transaction on the
// region's undo log (allocators/undo_log.h): an allocation or a batch, a
// free or a batch, an adopt or a batch, one chunk of a session's release.
// Open rolls back an interrupted one, so after kill -9 at any store the
// region is exactly as before or after the operation. A reset is a redo
// operation instead: one transaction marks it pending (and bumps the
// generation), then the metadata is re-formatted; Open finishes a pending
// reset.
// docs/design/durability.md has the argument.
//
// The daemon's truth is the meta file: geometry, generation and incarnation
// are read from it (cached here); the data file's header is a copy the
// daemon rewrites at Open and never reads for decisions.
//
// Every operation takes the region's mutex: Buddy, Slab and FreeList are not
// thread-safe, and the owner records and histogram move with the allocator
// in one transaction.
//
// Invariants (under the mutex, outside an operation):
//   owner records == allocator live_allocations (non-ARENA)
//   sum(meta histogram) == allocator live_allocations (non-ARENA)
//   every owner record names a live allocation start; the undo log is empty
//
// Thread-safety: thread-safe.
#ifndef SERVER_REGION_H_
#define SERVER_REGION_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "allocators/allocator.h"
#include "allocators/undo_log.h"
#include "common/segment_header.h"
#include "server/data_guard.h"
#include "server/huge_pages.h"
#include "server/owner_store.h"
#include "server/region_meta.h"
#include "server/shm_file.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

// What one Allocate call asks for (already past the daemon-wide limits).
struct AllocateArgs {
  uint64_t session_id = 0;    // the asking session; non-zero
  uint64_t size = 0;          // bytes per extent
  uint64_t alignment = 0;     // 0 = kDefaultAlignment
  uint32_t count = 1;         // extents; >= 1
  bool detached = false;      // survives the session (its record says so)
  uint64_t request_hash = 0;  // StableHash64(request_id); 0 = none
  uint64_t incarnation = 0;   // the caller's; another is stale; 0 = unchecked
};

struct AllocateResult {
  std::vector<Extent> extents;
  uint64_t generation = 0;
  bool replayed = false;  // the outcome of an earlier call with the same id
};

// What one Free call asks for besides the offsets.
struct FreeArgs {
  uint64_t session_id = 0;    // the asking session
  uint64_t generation = 0;    // the offsets' generation; 0 = unchecked
  uint64_t request_hash = 0;  // StableHash64(request_id); 0 = none
  uint64_t incarnation = 0;   // the caller's; another is stale; 0 = unchecked
};

// What one Adopt call asks for besides the offsets.
struct AdoptArgs {
  uint64_t session_id = 0;    // the adopting session; non-zero
  uint64_t generation = 0;    // the offsets' generation; 0 = unchecked
  uint64_t request_hash = 0;  // StableHash64(request_id); 0 = none
};

class Region {
 public:
  // Creates the region's files in `shm_dir` and formats them for `request`
  // (name, strategy, heap size, block size, size classes, quota). Returns
  // INVALID_ARGUMENT (bad name, strategy, sizes or strategy options),
  // ALREADY_EXISTS (a file of that name exists), RESOURCE_EXHAUSTED (the
  // mount is too small). With `max_file_bytes` != 0, INVALID_ARGUMENT when
  // both files together (heap, data header and every metadata area) would
  // be larger: the daemon's max_region_bytes counts the metadata too, so a
  // POOL of 8-byte blocks cannot cost many times its heap. On error no file
  // is left behind.
  // A request with huge_pages puts the data file in `huge` (the daemon's
  // --huge_dir; its meta file stays in shm_dir), rounds the data file up to
  // whole huge pages (the heap gets the extra bytes) and records the kind in
  // the meta file; FAILED_PRECONDITION when `huge` is null (the message says
  // what to mount) or is not the kind asked for.
  // REQUIRES: the caller has checked the other daemon-wide limits.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Region>> Create(
      const std::string& shm_dir, const v1::CreateRegionRequest& request,
      uint64_t max_file_bytes = 0, const HugePageDir* huge = nullptr);

  // What a look at the meta file alone says about region `name`'s files.
  enum class FileState {
    kNoMeta,      // no meta file (a lone data file: not ours to remove)
    kUnreadable,  // a meta file that cannot be opened or is too small
    kIncomplete,  // created but never completed (no magic): remove both
    kDeleting,    // a delete that did not finish: remove both
    kComplete,    // a region to Open
  };
  // Returns the state of region `name`'s files in `shm_dir`. Thread-safe.
  static FileState Classify(const std::string& shm_dir,
                            const std::string& name);

  // Returns the CreateRegionRequest region `name`'s meta header records
  // (layout version 1 or 2: the geometry fields are where both put them).
  // DATA_LOSS when the header is unreadable. Thread-safe.
  static absl::StatusOr<v1::CreateRegionRequest> RecordedRequest(
      const std::string& shm_dir, const std::string& name);

  // Re-attaches region `name` from its files: rolls back an interrupted
  // transaction, finishes an interrupted reset, checks the meta header, the
  // geometry, the allocator's invariants and the owner records, and rewrites
  // the data file's header from the meta file. Returns NOT_FOUND (no files),
  // DATA_LOSS or FAILED_PRECONDITION (a file that does not validate; the
  // message says which and why), PERMISSION_DENIED (a file not owned by the
  // daemon's uid, hard-linked, or with a mode wider than meta 0600 / data
  // 0660: see MappedFile::Open).
  // A region whose meta file records huge pages opens its data file in
  // `huge`; FAILED_PRECONDITION when `huge` is null or of another kind (the
  // daemon was started without the --huge_dir it was created with).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Region>> Open(
      const std::string& shm_dir, const std::string& name,
      const HugePageDir* huge = nullptr);

  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  // Allocates args.count extents of args.size bytes, recorded as made by
  // args.session_id (detached or owned; ARENA: never recorded). All or
  // nothing, one transaction. With a request_hash the session already used
  // here, returns that call's extents again (replayed) instead. Returns
  // INVALID_ARGUMENT (size 0 or larger than the heap, bad alignment, a size
  // the strategy cannot serve, a batch over max_batch()), RESOURCE_EXHAUSTED
  // (region full, the session's quota — detached bytes count — or no owner
  // record left), FAILED_PRECONDITION (args.incarnation is another
  // region's: deleted and re-created since the caller mapped it), NOT_FOUND
  // (region deleted, or `session_alive` says no: it is asked under the region
  // lock, so a session that is closing cannot gain allocations after its
  // release). State unchanged on error. Thread-safe.
  [[nodiscard]] absl::StatusOr<AllocateResult> Allocate(
      const AllocateArgs& args, absl::FunctionRef<bool()> session_alive);

  // Frees every offset, whoever owns it, and returns the bytes released.
  // All or nothing, one transaction: every offset is checked first. With a
  // request_hash the session already used for a Free here, returns that
  // call's figure again without freeing. FAILED_PRECONDITION (ARENA region,
  // duplicates, not a live allocation start, a stale args.generation or
  // args.incarnation), INVALID_ARGUMENT (outside the heap, more than
  // max_batch() offsets), NOT_FOUND (region deleted). State unchanged on
  // error. Thread-safe.
  [[nodiscard]] absl::StatusOr<uint64_t> Free(std::span<const uint64_t> offsets,
                                              const FreeArgs& args = {});

  // Makes every offset, each a live DETACHED allocation, owned by
  // args.session_id: freed at its end, counted in its share and quota
  // (server/region_adopt.cc). All or nothing, one transaction. With a
  // request_hash the session already used for an Adopt here, returns OK
  // again without changing anything. FAILED_PRECONDITION (ARENA region,
  // duplicates, not a live allocation start, an allocation a session owns,
  // a stale args.generation), INVALID_ARGUMENT (outside the heap, more than
  // max_batch() offsets), RESOURCE_EXHAUSTED (the session's quota),
  // NOT_FOUND (region deleted, or `session_alive` says no: asked under the
  // region lock, like Allocate), DATA_LOSS (damaged). State unchanged on
  // error. Thread-safe.
  [[nodiscard]] absl::Status Adopt(std::span<const uint64_t> offsets,
                                   const AdoptArgs& args,
                                   absl::FunctionRef<bool()> session_alive);

  // Frees everything and bumps the generation. FAILED_PRECONDITION when
  // allocations are live (ARENA: the cursor is not at the heap's start, or
  // is damaged) and !force; NOT_FOUND when the region was deleted. ARENA:
  // the shared metadata is re-formatted from the meta file's geometry
  // (Arena::Reformat), never trusted. Thread-safe.
  [[nodiscard]] absl::Status Reset(bool force);

  // Marks the region deleted (every later operation is NOT_FOUND; the meta
  // file says DELETING, so a crash before the unlink is finished at start);
  // the caller then unlinks the files. FAILED_PRECONDITION
  // when allocations are live (ARENA: a non-zero cursor) and !force;
  // NOT_FOUND when already deleted. Thread-safe.
  [[nodiscard]] absl::Status MarkDeleted(bool force);

  // Removes both files (after MarkDeleted). Returns the first error; tries
  // both. Thread-safe.
  [[nodiscard]] absl::Status UnlinkFiles() const;

  // Frees every allocation `session_id` owns here (not its detached ones);
  // returns how many. One transaction per max_batch() of them, so a crash
  // part-way leaves the rest owned and a later call finishes. Thread-safe.
  uint64_t ReleaseSession(uint64_t session_id);

  // Returns the ids of every session with an owner record here. Thread-safe.
  std::vector<uint64_t> SessionIds() const;

  // Returns every live allocation with its record, ordered by offset
  // (empty for ARENA). Thread-safe.
  std::vector<std::pair<uint64_t, OwnerInfo>> Allocations() const;

  // The largest batch (Allocate count, Free offsets) one transaction takes.
  uint64_t max_batch() const { return max_batch_; }

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

  // True once the data file was found truncated or grown (or faulted): every
  // call but Describe, Delete(force) is then DATA_LOSS, Describe says
  // DAMAGED, and the registry quarantines the region (data_guard.h).
  bool damaged() const { return watch_->damaged(); }
  std::string damage_reason() const { return watch_->reason(); }

  const std::string& name() const { return name_; }
  Strategy strategy() const { return strategy_; }
  // Heap bytes (from the meta file).
  uint64_t capacity() const { return capacity_; }

 private:
  Region(std::string shm_dir, std::string name, MappedFile data,
         MappedFile meta);
  // Opens the log, rolls back, finishes a pending reset, attaches the
  // allocator and the owner store, and republishes the data header.
  absl::Status Attach();

  SegmentHeader* segment() const {
    return reinterpret_cast<SegmentHeader*>(data_.data());
  }
  RegionMetaHeader* meta() const {
    return reinterpret_cast<RegionMetaHeader*>(meta_.data());
  }
  // Logs the meta-file word at `word` before a store to it.
  void Touch(const void* word) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    log_->Touch(word);
  }

  absl::StatusOr<AllocateResult> AllocateArena(const AllocateArgs& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The remembered outcome of (session, request), or null.
  const RequestRecord* FindRequest(uint64_t session_id,
                                   uint64_t request_hash) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Remembers an outcome (logged; inside the caller's transaction).
  void RememberRequest(const RequestRecord& record)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts one refusal for lack of space, in a transaction of its own (the
  // attempt's own count was rolled back with it).
  void CountRefusal() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-formats the allocator, owner records and histogram (the redo half of
  // a reset; restartable) and publishes the generation.
  absl::Status ApplyReset() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Rewrites the data file's header from the meta file (guarded: DATA_LOSS
  // when the data file is the wrong size or faults).
  absl::Status PublishSegment() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckAlive() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FAILED_PRECONDITION when `incarnation` (a caller's, 0 = unchecked) is
  // not this region's: the caller mapped a region of this name that was
  // deleted since. Replaces a stat() of the data file per call client side.
  absl::Status CheckIncarnation(uint64_t incarnation) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string shm_dir_;
  const std::string name_;
  MappedFile data_;  // constant mapping; clients may write any of it
  MappedFile meta_;  // constant mapping; its contents guarded by mu_
  // The data file's size and faults (set in the constructor; thread-safe).
  std::unique_ptr<DataFileWatch> watch_;
  // Cached from the meta header at Open (the daemon's truth).
  Strategy strategy_ = Strategy::kUnspecified;
  uint64_t capacity_ = 0;                 // heap bytes
  uint64_t max_batch_ = 0;                // extents one transaction logs
  std::span<std::byte> allocator_meta_;   // in meta_, or data_ for ARENA
  HugeKind huge_kind_ = HugeKind::kNone;  // from the meta header
  std::string data_dir_;                  // "" = shm_dir_; else huge_dir

  mutable absl::Mutex mu_;
  std::unique_ptr<UndoLog> log_ ABSL_PT_GUARDED_BY(mu_);
  std::unique_ptr<OffsetAllocator> allocator_ ABSL_PT_GUARDED_BY(mu_);
  std::optional<OwnerStore> owners_ ABSL_GUARDED_BY(mu_);  // non-ARENA
  bool deleted_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace shmalloc::server

#endif  // SERVER_REGION_H_
