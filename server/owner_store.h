// OwnerStore: who holds each live allocation of one region, kept in the
// region's meta file so it survives the daemon (kill -9 included).
//
// One record per live allocation the daemon handed out (session-owned or
// detached; ARENA regions keep none: clients bump their cursor directly).
// Records are stored in a fixed array in the meta file; every change is made
// inside the region's metadata transaction (UndoLog::Touch before each
// store), so a record and the allocator change it describes commit or roll
// back together. The lookups (offset -> record, session -> records, session
// + request id -> records) are derived data in the daemon's heap, rebuilt
// from the array at Open: a crash can never leave them inconsistent.
//
// Byte layout of the area (little-endian; 64 + 64 * capacity bytes):
//   0   magic       u64  kOwnerStoreMagic
//   8   capacity    u64  records the array holds (max live allocations)
//   16  live        u64  records in use
//   24  carved      u64  records [0, carved) were used at least once since
//                        Format/Clear; records >= carved are free whatever
//                        they hold (that keeps Format and Clear O(1))
//   32  free_head   u64  index + 1 of the first free record below carved
//                        (0 = none); free records link through next_free
//   40  reserved    u64[3], zero
//   64  records     OwnerRecord[capacity]
//
// Invariants: live <= carved <= capacity; the free chain from free_head
// visits exactly carved - live distinct records < carved, each without
// kOwnerInUse; every in-use record has a distinct offset.
// Thread-safety: not thread-safe; the owning Region's mutex guards it.
#ifndef SERVER_OWNER_STORE_H_
#define SERVER_OWNER_STORE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "allocators/allocator.h"
#include "allocators/undo_log.h"

namespace shmalloc::server {

inline constexpr uint64_t kOwnerStoreMagic = 0x3152454e574f4853ULL;  // SHOWNER1
inline constexpr uint64_t kOwnerInUse = 1;     // OwnerRecord::flags
inline constexpr uint64_t kOwnerDetached = 2;  // OwnerRecord::flags
// Distinct words one Add or Remove changes (for sizing the undo log).
inline constexpr uint64_t kOwnerWordsPerOp = 12;

struct OwnerRecord {
  uint64_t offset;           // allocation start in the data file
  uint64_t size_bytes;       // reserved by the allocator
  uint64_t requested_bytes;  // asked for
  uint64_t session_id;       // the session that allocated it (never 0)
  uint64_t allocated_at_ms;  // unix time, milliseconds
  uint64_t request_hash;     // hash of the AllocateRequest.request_id; 0 = none
  uint64_t flags;            // kOwnerInUse | kOwnerDetached
  uint64_t next_free;        // free chain: index + 1 of the next free record
};
static_assert(sizeof(OwnerRecord) == 64);

struct OwnerStoreHeader {
  uint64_t magic;        // kOwnerStoreMagic
  uint64_t capacity;     // records
  uint64_t live;         // records in use
  uint64_t carved;       // high-water mark since Format/Clear
  uint64_t free_head;    // index + 1, 0 = none
  uint64_t reserved[3];  // zero
};
static_assert(sizeof(OwnerStoreHeader) == 64);

// What a caller records for one allocation.
struct OwnerInfo {
  uint64_t session_id = 0;
  uint64_t size_bytes = 0;
  uint64_t requested_bytes = 0;
  uint64_t allocated_at_ms = 0;
  uint64_t request_hash = 0;
  bool detached = false;
};

// One session's totals in a region. used_bytes and live_allocations count
// everything the session allocated and nobody freed, detached included (the
// quota counts those); owned_* only what the session's end reclaims.
struct SessionShare {
  uint64_t used_bytes = 0;
  uint64_t live_allocations = 0;
  uint64_t owned_bytes = 0;
  uint64_t owned_allocations = 0;
};

// How the daemon finds a record by offset. With a granule (POOL: the block
// size, BUDDY: the smallest block), live allocations start at least a
// granule apart in [begin, end), so (offset - begin) / granule is a slot of
// a flat array: no hashing on the allocate / free path. Without one (or
// when the array would be much larger than the records), a hash map.
struct OffsetIndex {
  uint64_t begin = 0;
  uint64_t granule = 0;  // 0 = hash map
  uint64_t end = 0;
};

class OwnerStore {
 public:
  // Returns the bytes of an area for `capacity` records.
  static constexpr uint64_t Bytes(uint64_t capacity) {
    return sizeof(OwnerStoreHeader) + sizeof(OwnerRecord) * capacity;
  }

  // Formats `area` (zero-filled, 8-byte aligned) as an empty store and
  // returns it. INVALID_ARGUMENT when the area is smaller than Bytes(1).
  static absl::StatusOr<OwnerStore> Format(std::span<std::byte> area,
                                           UndoLog* log,
                                           OffsetIndex index = {});

  // Re-opens a store and rebuilds the lookups. DATA_LOSS when a counter,
  // the free chain or a record does not validate (every index is checked
  // before use). O(carved).
  static absl::StatusOr<OwnerStore> Open(std::span<std::byte> area,
                                         UndoLog* log, OffsetIndex index = {});

  OwnerStore(OwnerStore&&) = default;
  OwnerStore& operator=(OwnerStore&&) = default;

  // Records `offset`. REQUIRES: free_records() > 0; `offset` has no record;
  // info.session_id != 0. Logged.
  void Add(uint64_t offset, const OwnerInfo& info);

  // Records every extent for one owner (info.size_bytes is ignored: each
  // extent's own size is recorded), as one pass: one session lookup, the
  // header words stored once. REQUIRES: free_records() >= extents.size();
  // no extent has a record; info.session_id != 0. Logged (each record's
  // words in one log append: a record is fresh in its transaction).
  void AddBatch(std::span<const Extent> extents, const OwnerInfo& info);

  // Removes the record of `offset` and returns it (nullopt when none).
  // Logged.
  std::optional<OwnerInfo> Remove(uint64_t offset);

  // Removes the records of every offset and calls on_removed(size_bytes)
  // for each. REQUIRES: every offset has a record, no offset twice (the
  // allocator's FreeBatch checked them). Logged; the header words are
  // stored once.
  void RemoveBatch(std::span<const uint64_t> offsets,
                   absl::FunctionRef<void(uint64_t size_bytes)> on_removed);

  // Hands the records of every offset to `session_id`: each becomes owned
  // by it (not detached; its request hash is cleared, so neither session's
  // retry replays it), and moves from its former session's share to this
  // one's. REQUIRES: every offset has a record, no offset twice;
  // session_id != 0. Logged (session_id, request_hash and flags of each
  // record); the header is not changed.
  void Adopt(std::span<const uint64_t> offsets, uint64_t session_id);

  // Returns the record of `offset`, or nullopt.
  std::optional<OwnerInfo> Find(uint64_t offset) const;

  // Returns the offsets `session_id` owns (not detached), in no order.
  std::vector<uint64_t> OwnedBy(uint64_t session_id) const;

  // Returns the offsets recorded with (session_id, request_hash), in the
  // order they were added (empty when none).
  std::vector<uint64_t> FindRequest(uint64_t session_id,
                                    uint64_t request_hash) const;

  // Returns every live record as (offset, info), ordered by offset.
  std::vector<std::pair<uint64_t, OwnerInfo>> All() const;

  // Calls fn(offset, size_bytes) for every live record, in array order
  // (no copy, no sort: what Open's cross-check of 10^6 records needs).
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    const OwnerRecord* r = records();
    for (uint64_t i = 0, n = header()->carved; i < n; ++i) {
      if ((r[i].flags & kOwnerInUse) != 0) fn(r[i].offset, r[i].size_bytes);
    }
  }

  // Returns the totals of `session_id`, and of every session with records.
  SessionShare Share(uint64_t session_id) const;
  std::vector<std::pair<uint64_t, SessionShare>> Shares() const;

  // Drops every record: three header words, not logged; restartable (a
  // crash during Clear is finished by calling it again).
  void Clear();

  uint64_t capacity() const { return header()->capacity; }
  uint64_t live() const { return header()->live; }
  uint64_t free_records() const { return capacity() - live(); }
  uint64_t owned_allocations() const { return owned_allocations_; }
  uint64_t owned_bytes() const { return owned_bytes_; }
  uint64_t detached_allocations() const { return live() - owned_allocations_; }
  uint64_t detached_bytes() const { return recorded_bytes_ - owned_bytes_; }

 private:
  // The lookups are intrusive lists over record indices (index + 1; 0 =
  // none), so indexing a record costs no allocation and no hashing beyond
  // one session (and request) lookup per batch.
  struct Links {
    uint32_t prev = 0;  // the session's owned (not detached) records
    uint32_t next = 0;
    uint32_t req_prev = 0;  // the records of the same (session, request)
    uint32_t req_next = 0;
  };
  struct RequestList {
    uint32_t head = 0;  // oldest
    uint32_t tail = 0;  // newest
  };
  struct SessionIndex {
    SessionShare share;
    uint32_t owned_head = 0;
    absl::flat_hash_map<uint64_t, RequestList> requests;  // request hash
  };

  OwnerStore(std::span<std::byte> area, UndoLog* log, OffsetIndex index);
  OwnerStoreHeader* header() const {
    return reinterpret_cast<OwnerStoreHeader*>(area_.data());
  }
  OwnerRecord* records() const {
    return reinterpret_cast<OwnerRecord*>(area_.data() +
                                          sizeof(OwnerStoreHeader));
  }
  void Touch(const void* word) const {
    if (log_ != nullptr) log_->Touch(word);
  }
  // Returns the record index of `offset`, or -1.
  int64_t Lookup(uint64_t offset) const;
  // Adds record `index` (in use) to the lookups of session `s`.
  void Index(uint32_t index, SessionIndex& s);
  // Removes record `index` from the lookups of session `s`.
  void Unindex(uint32_t index, SessionIndex& s);
  // Makes room in links_ for record `index`.
  void Reserve(uint64_t index) {
    if (index >= links_.size()) {
      links_.resize(std::max<uint64_t>(index + 1, 2 * links_.size()));
    }
  }

  std::span<std::byte> area_;
  UndoLog* log_;
  OffsetIndex index_;
  std::vector<uint32_t> dense_;  // slot -> record index + 1 (granule mode)
  absl::flat_hash_map<uint64_t, uint32_t> by_offset_;  // hash mode
  std::vector<Links> links_;                           // per record index
  absl::flat_hash_map<uint64_t, SessionIndex> sessions_;
  uint64_t owned_allocations_ = 0;
  uint64_t owned_bytes_ = 0;
  uint64_t recorded_bytes_ = 0;
};

}  // namespace shmalloc::server

#endif  // SERVER_OWNER_STORE_H_
