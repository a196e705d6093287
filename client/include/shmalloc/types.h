// Plain value types of the shmalloc client API: strategies, extents, region
// descriptions and statistics. They mirror the messages of
// proto/shmalloc/v1/shmalloc.proto field for field, so users of the client
// library need no generated headers.
//
// Thread-safety: plain values; the usual rules for value types.
#ifndef CLIENT_INCLUDE_SHMALLOC_TYPES_H_
#define CLIENT_INCLUDE_SHMALLOC_TYPES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shmalloc::client {

// How a region allocates. Values match shmalloc.v1.Strategy.
enum class Strategy : uint32_t {
  kUnspecified = 0,
  kArena = 1,     // lock-free bump; frees only as a whole (ResetRegion)
  kPool = 2,      // fixed-size blocks of block_size bytes
  kBuddy = 3,     // power-of-two blocks, split and merged
  kSlab = 4,      // size classes, each served from slabs
  kFreeList = 5,  // general sizes, good fit with coalescing
};

// Returns "arena", "pool", "buddy", "slab", "free_list" or "unspecified".
std::string_view StrategyName(Strategy strategy);

// The alignment the daemon applies when a request says 0, and the largest a
// request may ask for (2 MiB; every power of two up to it passes the
// argument check). ARENA and FREE_LIST regions honour all of them; BUDDY,
// POOL and SLAB honour up to the alignment of the heap's begin (4 KiB in
// today's layout) and of their block or class size, and answer
// INVALID_ARGUMENT above it (docs/architecture.md, "Alignment"). An offset
// aligned to A is an address aligned to A when the mapping's base is.
inline constexpr uint64_t kDefaultAlignment = 16;
inline constexpr uint64_t kMaxAlignment = uint64_t{1} << 21;
// The heap's begin, and the extents the client Arena carves its metadata
// page from, are multiples of this (a page).
inline constexpr uint64_t kHeapBeginGranule = 4096;

// One allocation inside a region's data file.
struct Extent {
  uint64_t offset = 0;      // bytes from the start of the data file; never 0
  uint64_t size_bytes = 0;  // bytes reserved (>= requested)
  friend bool operator==(const Extent&, const Extent&) = default;
};

// What CreateRegion needs. Mirrors shmalloc.v1.CreateRegionRequest.
struct CreateRegionOptions {
  std::string name{};                          // [a-z0-9][a-z0-9_.-]{0,62}
  Strategy strategy = Strategy::kUnspecified;  // required
  uint64_t size_bytes = 0;                     // heap size in bytes, > 0
  uint64_t block_size = 0;               // POOL block size; BUDDY min block
  std::vector<uint64_t> size_classes{};  // SLAB classes; empty = defaults
  uint64_t quota_bytes_per_session = 0;  // 0 = no quota
  // Data file on the daemon's --huge_dir (hugetlbfs or huge tmpfs); without
  // one, FAILED_PRECONDITION. The heap is rounded up to whole huge pages.
  bool huge_pages = false;
};

// A region as the daemon describes it. Mirrors shmalloc.v1.Region.
struct RegionInfo {
  std::string name;
  Strategy strategy = Strategy::kUnspecified;
  uint64_t size_bytes = 0;  // size of the data file (header + heap)
  uint64_t block_size = 0;  // POOL block size; BUDDY smallest block; else 0
  std::string data_file;    // base name of the data file in the shm dir
  uint64_t generation = 0;  // bumped by every ResetRegion
  uint64_t heap_begin = 0;  // first allocatable offset
  uint64_t heap_end = 0;    // one past the last allocatable offset
  std::vector<uint64_t> size_classes;    // SLAB size classes, bytes
  uint64_t quota_bytes_per_session = 0;  // 0 = no quota
  // Random, fixed at creation: a region deleted and re-created under the
  // same name has another incarnation (never 0 for a region the daemon
  // describes).
  uint64_t incarnation = 0;
  bool huge_pages = false;  // its data file is on huge pages
  // The daemon's directory of data_file; "" = the shm directory. A client
  // whose view differs (a container) sets $SHMALLOC_HUGE_DIR.
  std::string data_dir{};
};

// One session's share of a region. Mirrors shmalloc.v1.SessionUsage.
struct SessionUsage {
  uint64_t session_id = 0;
  std::string client_name;
  uint64_t used_bytes = 0;
  uint64_t live_allocations = 0;
};

// A region's figures. Mirrors shmalloc.v1.RegionStats.
struct RegionStats {
  std::string name;
  Strategy strategy = Strategy::kUnspecified;
  uint64_t capacity_bytes = 0;  // heap bytes
  uint64_t used_bytes = 0;      // reserved by live allocations
  uint64_t free_bytes = 0;      // capacity - used
  uint64_t peak_used_bytes = 0;
  uint64_t live_allocations = 0;
  uint64_t failed_allocations = 0;    // refused for lack of space
  uint64_t largest_free_bytes = 0;    // largest allocation possible now
  double fragmentation = 0;           // 1 - largest_free / free, in [0, 1]
  double internal_fragmentation = 0;  // 1 - requested / used
  uint64_t requested_bytes = 0;       // sum of sizes asked for
  uint64_t detached_allocations = 0;
  uint64_t detached_bytes = 0;
  std::vector<SessionUsage> sessions;
  uint64_t generation = 0;
};

// The daemon's figures. Mirrors shmalloc.v1.Stats (without per-RPC counts).
struct DaemonStats {
  std::vector<RegionStats> regions;
  uint64_t sessions = 0;  // open sessions
  uint64_t region_count = 0;
  uint64_t uptime_ms = 0;
  uint64_t sessions_opened = 0;  // since the daemon started
  // Sessions whose client has not come back since a daemon restart (or a
  // broken stream); each waits session_grace_ms to be resumed.
  uint64_t sessions_orphaned = 0;
  uint64_t sessions_resumed = 0;    // since the daemon started
  uint64_t sessions_reclaimed = 0;  // orphans not resumed in time, since start
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_TYPES_H_
