#include "client/proto_convert.h"

namespace shmalloc::client::internal {

RegionInfo FromProto(const v1::Region& r) {
  RegionInfo info;
  info.name = r.name();
  info.strategy = static_cast<Strategy>(r.strategy());
  info.size_bytes = r.size_bytes();
  info.block_size = r.block_size();
  info.data_file = r.data_file();
  info.generation = r.generation();
  info.heap_begin = r.heap_begin();
  info.heap_end = r.heap_end();
  info.size_classes.assign(r.size_classes().begin(), r.size_classes().end());
  info.quota_bytes_per_session = r.quota_bytes_per_session();
  info.incarnation = r.incarnation();
  info.huge_pages = r.huge_pages() == v1::HUGE_PAGES_HUGETLBFS ||
                    r.huge_pages() == v1::HUGE_PAGES_TMPFS_THP;
  info.data_dir = r.data_dir();
  return info;
}

RegionStats FromProto(const v1::RegionStats& s) {
  RegionStats stats;
  stats.name = s.name();
  stats.strategy = static_cast<Strategy>(s.strategy());
  stats.capacity_bytes = s.capacity_bytes();
  stats.used_bytes = s.used_bytes();
  stats.free_bytes = s.free_bytes();
  stats.peak_used_bytes = s.peak_used_bytes();
  stats.live_allocations = s.live_allocations();
  stats.failed_allocations = s.failed_allocations();
  stats.largest_free_bytes = s.largest_free_bytes();
  stats.fragmentation = s.fragmentation();
  stats.internal_fragmentation = s.internal_fragmentation();
  stats.requested_bytes = s.requested_bytes();
  stats.detached_allocations = s.detached_allocations();
  stats.detached_bytes = s.detached_bytes();
  for (const v1::SessionUsage& u : s.sessions()) {
    stats.sessions.push_back({u.session_id(), u.client_name(), u.used_bytes(),
                              u.live_allocations()});
  }
  stats.generation = s.generation();
  return stats;
}

DaemonStats FromProto(const v1::Stats& s) {
  DaemonStats stats;
  for (const v1::RegionStats& r : s.regions()) {
    stats.regions.push_back(FromProto(r));
  }
  stats.sessions = s.sessions();
  stats.region_count = s.region_count();
  stats.uptime_ms = s.uptime_ms();
  stats.sessions_opened = s.sessions_opened();
  stats.sessions_orphaned = s.sessions_orphaned();
  stats.sessions_resumed = s.sessions_resumed();
  stats.sessions_reclaimed = s.sessions_reclaimed();
  return stats;
}

v1::CreateRegionRequest ToProto(const CreateRegionOptions& options) {
  v1::CreateRegionRequest request;
  request.set_name(options.name);
  request.set_strategy(static_cast<v1::Strategy>(options.strategy));
  request.set_size_bytes(options.size_bytes);
  request.set_block_size(options.block_size);
  for (uint64_t c : options.size_classes) request.add_size_classes(c);
  request.set_quota_bytes_per_session(options.quota_bytes_per_session);
  if (options.huge_pages) request.set_huge_pages(v1::HUGE_PAGES_REQUIRED);
  return request;
}

std::vector<Extent> ExtentsOf(const v1::AllocateResponse& response) {
  std::vector<Extent> extents;
  if (!response.offsets().empty()) {
    extents.reserve(response.offsets_size());
    for (uint64_t offset : response.offsets()) {
      extents.push_back({offset, response.extent_size_bytes()});
    }
    return extents;
  }
  extents.reserve(response.extents_size());
  for (const v1::Extent& e : response.extents()) {
    extents.push_back({e.offset(), e.size_bytes()});
  }
  return extents;
}

}  // namespace shmalloc::client::internal
