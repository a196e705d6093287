#include "server/core.h"

#include "absl/random/random.h"
#include "common/status_macros.h"

namespace shmalloc::server {

uint64_t Core::NewIncarnation() {
  absl::BitGen gen;
  return absl::Uniform<uint64_t>(absl::IntervalClosed, gen, 1, ~uint64_t{0});
}

uint64_t EndSession(Core& core, uint64_t id) {
  if (!core.sessions.BeginClose(id)) return 0;
  return ReclaimSession(core, id);
}

uint64_t ReclaimSession(Core& core, uint64_t id) {
  const uint64_t freed = core.regions.ReleaseSession(id);
  core.sessions.Remove(id);
  return freed;
}

absl::StatusOr<v1::Stats> CollectStats(const Core& core,
                                       std::string_view region) {
  v1::Stats stats;
  std::vector<std::shared_ptr<Region>> regions;
  if (region.empty()) {
    regions = core.regions.List();
  } else {
    SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> one,
                              core.regions.Get(region));
    regions.push_back(std::move(one));
  }
  for (const std::shared_ptr<Region>& r : regions) {
    v1::RegionStats* region_stats = stats.add_regions();
    *region_stats = r->Stats();
    for (v1::SessionUsage& usage : *region_stats->mutable_sessions()) {
      SessionLabel label = core.sessions.Label(usage.session_id());
      usage.set_client_name(std::move(label.client_name));
      usage.set_session_ended(label.ended);
    }
  }
  stats.set_sessions(core.sessions.open());
  stats.set_sessions_opened(core.sessions.opened_total());
  stats.set_sessions_orphaned(core.sessions.orphaned());
  stats.set_sessions_resumed(core.sessions.resumed_total());
  stats.set_sessions_reclaimed(core.sessions.reclaimed_total());
  stats.set_region_count(core.regions.size());
  stats.set_uptime_ms(static_cast<uint64_t>(
      absl::ToInt64Milliseconds(absl::Now() - core.started)));
  core.metrics.Fill(stats);
  return stats;
}

}  // namespace shmalloc::server
