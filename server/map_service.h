// The fragmentation map (GetRegionMap) and the leak report's paging
// (ListAllocations) as pure functions over a snapshot of a region: its
// description, its figures and its owner records. server/service.cc takes
// the snapshot from a Region (Describe, Stats, Allocations) and calls these;
// the unit tests feed known layouts.
//
// The map is the allocator's view rounded to reserved sizes: every owner
// record is a USED extent [offset, offset + size_bytes); every gap between
// them inside [heap_begin, heap_end) is FREE; [0, heap_begin) is the
// segment header (METADATA). ARENA regions keep no records: their map is
// one USED run [heap_begin, heap_begin + used_bytes) and FREE after.
//
// Invariants of a map: runs tile [0, heap_end) in offset order with no two
// adjacent runs of the same (kind, session, detached); buckets tile it too;
// used_bytes + free_bytes + heap_begin == heap_end.
//
// Page tokens are opaque to clients (web-safe base64) and carry the
// request's filter, the region to continue in with its generation and
// incarnation, and the offset of the next allocation to return, so a
// region reset or re-created between two pages makes the token stale
// instead of skipping or repeating allocations silently.
//
// Thread-safety: every function is thread-safe (no shared state).
#ifndef SERVER_MAP_SERVICE_H_
#define SERVER_MAP_SERVICE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "server/owner_store.h"
#include "server/session_table.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

inline constexpr uint32_t kDefaultPageSize = 1000;
inline constexpr uint32_t kMaxPageSize = 10000;
inline constexpr uint32_t kMaxMapBuckets = 4096;
inline constexpr uint64_t kMaxMapRuns = 100000;

// What the map and the listing need to know about one region. Take
// `description` before `allocations`: a reset in between then shows as a
// stale page token on the next page rather than going unnoticed.
struct RegionSnapshot {
  v1::Region description;  // Region::Describe()
  v1::RegionStats stats;   // Region::Stats() (ARENA: used_bytes, live)
  std::vector<std::pair<uint64_t, OwnerInfo>> allocations;  // by offset
};

// Returns who a session id is: its client name ("" when unknown) and
// whether it has ended (SessionTable::Label).
using ClientNameFn = absl::FunctionRef<SessionLabel(uint64_t)>;

// Returns the map of `snapshot`: runs when `buckets` == 0, else
// min(buckets, heap_end) equal slices of [0, heap_end). INVALID_ARGUMENT
// when buckets > kMaxMapBuckets, or runs are asked of a layout with more
// than kMaxMapRuns runs ("ask for buckets"); INTERNAL when the records
// overlap or leave the heap (the region's invariants say they never do).
[[nodiscard]] absl::StatusOr<v1::RegionMap> BuildRegionMap(
    const RegionSnapshot& snapshot, uint32_t buckets, ClientNameFn client_name);

// Where a page of ListAllocations continues.
struct PageToken {
  std::string filter_region;   // ListAllocationsRequest.region
  uint64_t older_than_ms = 0;  // ListAllocationsRequest.older_than_ms
  std::string region;          // the region of the next allocation
  uint64_t generation = 0;     // that region's generation then
  uint64_t incarnation = 0;    // that region's incarnation then
  uint64_t offset = 0;         // the next allocation's offset
};

// Returns the opaque form of `token`.
std::string EncodePageToken(const PageToken& token);

// Returns the token `text` encodes. INVALID_ARGUMENT when it is not one.
[[nodiscard]] absl::StatusOr<PageToken> DecodePageToken(std::string_view text);

// How ListAllocationsPage reaches the regions.
struct RegionSource {
  // The regions the request covers, ordered by name (one for a named
  // region; every READY region for "").
  std::vector<std::string> names;
  // Returns the snapshot of region `name`; the request fails with its error
  // for a named region, and a region that vanished (NOT_FOUND) or is
  // DAMAGED (DATA_LOSS) is skipped when listing every region.
  absl::FunctionRef<absl::StatusOr<RegionSnapshot>(const std::string&)> load;
  // Returns how many allocations region `name` lists (0 for ARENA) without
  // copying them: the estimate of total_size for regions not loaded.
  absl::FunctionRef<uint64_t(const std::string&)> live_count;
};

// Returns one page of `request` at unix time `now_ms`. Every matching
// allocation is returned exactly once over the pages while no region is
// reset; allocations made or freed between pages may or may not appear.
// INVALID_ARGUMENT (page_size over kMaxPageSize; a malformed page_token,
// one from another request, or a stale one: its region was reset or
// re-created since), or the error `source.load` returns for a named region.
[[nodiscard]] absl::StatusOr<v1::ListAllocationsResponse> ListAllocationsPage(
    const v1::ListAllocationsRequest& request, const RegionSource& source,
    ClientNameFn client_name, uint64_t now_ms);

}  // namespace shmalloc::server

#endif  // SERVER_MAP_SERVICE_H_
