// How the `shmalloc` CLI shows regions and statistics: aligned tables for
// people, JSON for scripts, and the frames of `shmalloc watch`.
//
// The JSON documents use the proto field names of shmalloc.v1 (snake_case),
// integers as numbers and strategies as their CLI names ("free_list"):
//   stats:   {"uptime_ms", "sessions", "sessions_opened", "region_count",
//             "regions": [RegionStats...], "rpcs": [{"method", "calls",
//             "errors": {"NOT_FOUND": n}}]}
//   regions: {"regions": [Region...]}
//
// Thread-safety: pure functions.
#ifndef CLIENT_CLI_STATS_FORMAT_H_
#define CLIENT_CLI_STATS_FORMAT_H_

#include <map>
#include <string>
#include <vector>

#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::cli {

// Returns "free_list" etc. for a proto strategy.
std::string StrategyText(int strategy);

// Who holds an allocation, for people: the client name; "NAME (ended)" for
// a session that has ended; "session ID (ended)" once its name is forgotten.
std::string SessionText(uint64_t session_id, const std::string& client_name,
                        bool ended);

// `shmalloc regions list`: NAME STRATEGY SIZE HEAP BLOCK GEN DATA_FILE.
std::string FormatRegions(const v1::ListRegionsResponse& regions);
std::string RegionsToJson(const v1::ListRegionsResponse& regions);
// One region, as `regions create` and `regions reset` print it.
std::string FormatRegion(const v1::Region& region);

// `shmalloc stats`: a daemon summary line and one row per region.
std::string FormatStats(const v1::Stats& stats);
// `shmalloc stats REGION`: the summary, then every figure of the (single)
// region, its sessions and its size histogram.
std::string FormatRegionDetail(const v1::Stats& stats);
// `pretty`: indented over many lines; else one line (for `watch --json`).
std::string StatsToJson(const v1::Stats& stats, bool pretty = true);

// One frame of `shmalloc watch`: per region a used/free bar `bar_width`
// characters wide, fragmentation, live allocations and sessions, and, for a
// region in `used_history` (its used bytes over the last samples, oldest
// first), a sparkline of them.
std::string FormatWatchFrame(
    const v1::Stats& stats, const std::string& target, int interval_ms,
    int bar_width,
    const std::map<std::string, std::vector<uint64_t>>& used_history = {});

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_STATS_FORMAT_H_
