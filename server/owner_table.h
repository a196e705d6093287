// Which session owns which allocation of one region.
//
// Holds a record offset -> {session, reserved size, requested size} for every
// session-owned allocation, and per session the set of its offsets plus its
// totals. Detached allocations (and everything an ARENA hands out) have no
// record: they are the allocator's live allocations minus these. The table is
// in-memory only; after a restart every surviving allocation is detached,
// which is right because a clean stop ends every session first.
//
// Invariants:
//   owned_allocations() == number of records
//   owned_bytes() == sum of size_bytes over records
//   for each session s: Share(s).live_allocations == |offsets of s|,
//                       Share(s).used_bytes == sum of their size_bytes
//
// Thread-safety: not thread-safe; the owning Region's mutex guards it.
#ifndef SERVER_OWNER_TABLE_H_
#define SERVER_OWNER_TABLE_H_

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

namespace shmalloc::server {

// The owner record of one allocation.
struct Owner {
  uint64_t session_id = 0;       // never 0
  uint64_t size_bytes = 0;       // reserved by the allocator
  uint64_t requested_bytes = 0;  // asked for
};

// One session's totals in a region.
struct SessionShare {
  uint64_t used_bytes = 0;        // reserved bytes it owns
  uint64_t requested_bytes = 0;   // bytes it asked for
  uint64_t live_allocations = 0;  // allocations it owns
};

class OwnerTable {
 public:
  // Records that `offset` belongs to `owner.session_id`.
  // REQUIRES: `offset` has no record; owner.session_id != 0.
  void Add(uint64_t offset, const Owner& owner);

  // Removes the record of `offset` and returns it; nullopt when there was
  // none (a detached allocation). Not thread-safe.
  std::optional<Owner> Remove(uint64_t offset);

  // Removes every record of `session_id` and returns them (offset, owner),
  // in no particular order. Not thread-safe.
  std::vector<std::pair<uint64_t, Owner>> TakeSession(uint64_t session_id);

  // Returns the totals of `session_id` (zeros when it owns nothing).
  SessionShare Share(uint64_t session_id) const;

  // Returns every session owning something here, with its totals.
  std::vector<std::pair<uint64_t, SessionShare>> Shares() const;

  // Drops every record (a forced reset or delete freed them all).
  void Clear();

  uint64_t owned_allocations() const { return owners_.size(); }
  uint64_t owned_bytes() const { return owned_bytes_; }

 private:
  struct SessionEntry {
    SessionShare share;
    absl::flat_hash_set<uint64_t> offsets;
  };

  absl::flat_hash_map<uint64_t, Owner> owners_;           // offset -> owner
  absl::flat_hash_map<uint64_t, SessionEntry> sessions_;  // id -> entry
  uint64_t owned_bytes_ = 0;
};

}  // namespace shmalloc::server

#endif  // SERVER_OWNER_TABLE_H_
