#include "server/region.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/region_name.h"

namespace shmalloc::server {

Region::Region(std::string shm_dir, std::string name, MappedFile data,
               MappedFile meta, std::span<std::byte> allocator_meta,
               std::unique_ptr<OffsetAllocator> allocator)
    : shm_dir_(std::move(shm_dir)),
      name_(std::move(name)),
      strategy_(allocator->strategy()),
      data_(std::move(data)),
      meta_(std::move(meta)),
      allocator_meta_(allocator_meta),
      allocator_(std::move(allocator)) {}

Region::~Region() {
  absl::MutexLock lock(&mu_);
  allocator_.reset();  // Holds pointers into the mappings.
}

absl::Status Region::CheckAlive() const {
  if (deleted_) {
    return absl::NotFoundError(absl::StrCat("region ", name_, " was deleted"));
  }
  return absl::OkStatus();
}

void Region::RollBack(const std::vector<Extent>& extents) {
  for (const Extent& extent : extents) {
    const absl::Status status = allocator_->Free(extent.offset);
    SHMALLOC_CHECK(status.ok()) << "region " << name_ << ": rolling back "
                                << extent.offset << ": " << status;
  }
}

void Region::FreeKnown(uint64_t offset, uint64_t size_bytes) {
  const absl::Status status = allocator_->Free(offset);
  SHMALLOC_CHECK(status.ok())
      << "region " << name_ << ": freeing " << offset << ": " << status;
  uint64_t& bucket = meta()->histogram[SizeBucket(size_bytes)];
  if (bucket > 0) --bucket;
}

absl::StatusOr<uint64_t> Region::Free(std::span<const uint64_t> offsets) {
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  if (strategy_ == Strategy::kArena) {
    return absl::FailedPreconditionError(absl::StrCat(
        "region ", name_, " is an ARENA: it frees only as a whole (reset it)"));
  }
  std::vector<uint64_t> sorted(offsets.begin(), offsets.end());
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end());
      dup != sorted.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("offset ", *dup, " appears more than once"));
  }
  std::vector<uint64_t> sizes;
  sizes.reserve(offsets.size());
  for (uint64_t offset : offsets) {
    SHMALLOC_ASSIGN_OR_RETURN(const uint64_t size, allocator_->SizeOf(offset));
    sizes.push_back(size);
  }
  uint64_t freed = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    FreeKnown(offsets[i], sizes[i]);
    owners_.Remove(offsets[i]);
    freed += sizes[i];
  }
  return freed;
}

void Region::ResetLocked() {
  allocator_->Reset();
  owners_.Clear();
  std::fill(std::begin(meta()->histogram), std::end(meta()->histogram), 0);
  segment()->generation.fetch_add(1, std::memory_order_acq_rel);
}

absl::Status Region::Reset(bool force) {
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  if (strategy_ != Strategy::kArena && !force) {
    const uint64_t live = allocator_->Stats().live_allocations;
    if (live > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("region ", name_, " has ", live, " live allocations (",
                       owners_.owned_allocations(), " owned by sessions, ",
                       live - std::min(live, owners_.owned_allocations()),
                       " detached); reset with force to free them"));
    }
  }
  ResetLocked();
  return absl::OkStatus();
}

absl::Status Region::MarkDeleted(bool force) {
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  if (!force) {
    const AllocatorStats stats = allocator_->Stats();
    if (strategy_ == Strategy::kArena && stats.used_bytes > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("ARENA region ", name_, " has ", stats.used_bytes,
                       " bytes allocated; delete with force"));
    }
    if (stats.live_allocations > 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("region ", name_, " has ", stats.live_allocations,
                       " live allocations; delete with force"));
    }
  }
  deleted_ = true;
  owners_.Clear();
  return absl::OkStatus();
}

absl::Status Region::UnlinkFiles() const {
  absl::Status data = UnlinkFile(data_.path());
  absl::Status meta = UnlinkFile(meta_.path());
  return data.ok() ? meta : data;
}

uint64_t Region::ReleaseSession(uint64_t session_id) {
  absl::MutexLock lock(&mu_);
  if (deleted_) return 0;
  const auto taken = owners_.TakeSession(session_id);
  for (const auto& [offset, owner] : taken) FreeKnown(offset, owner.size_bytes);
  return taken.size();
}

v1::Region Region::Describe() const {
  const SegmentHeader* seg = segment();
  const RegionMetaHeader* header = meta();  // read-only fields only
  v1::Region region;
  region.set_name(name_);
  region.set_strategy(static_cast<v1::Strategy>(strategy_));
  region.set_size_bytes(seg->size_bytes);
  region.set_block_size(seg->block_size);
  region.set_data_file(DataFileName(name_));
  region.set_generation(seg->generation.load(std::memory_order_acquire));
  region.set_heap_begin(seg->heap_begin);
  region.set_heap_end(seg->heap_end);
  for (uint32_t i = 0; i < header->size_class_count; ++i) {
    region.add_size_classes(header->size_classes[i]);
  }
  region.set_quota_bytes_per_session(header->quota_bytes_per_session);
  return region;
}

v1::RegionStats Region::Stats() const {
  absl::MutexLock lock(&mu_);
  const AllocatorStats a = allocator_->Stats();
  v1::RegionStats stats;
  stats.set_name(name_);
  stats.set_strategy(static_cast<v1::Strategy>(strategy_));
  stats.set_capacity_bytes(a.capacity_bytes);
  stats.set_used_bytes(a.used_bytes);
  stats.set_free_bytes(a.free_bytes);
  stats.set_peak_used_bytes(a.peak_used_bytes);
  stats.set_live_allocations(a.live_allocations);
  stats.set_failed_allocations(a.failed_allocations +
                               meta()->refused_allocations);
  stats.set_largest_free_bytes(a.largest_free_bytes);
  stats.set_fragmentation(a.fragmentation);
  stats.set_internal_fragmentation(a.internal_fragmentation);
  stats.set_requested_bytes(a.requested_bytes);
  const uint64_t owned = owners_.owned_allocations();
  stats.set_detached_allocations(a.live_allocations -
                                 std::min(a.live_allocations, owned));
  stats.set_detached_bytes(a.used_bytes -
                           std::min(a.used_bytes, owners_.owned_bytes()));
  auto shares = owners_.Shares();
  std::sort(shares.begin(), shares.end(),
            [](const auto& x, const auto& y) { return x.first < y.first; });
  for (const auto& [id, share] : shares) {
    v1::SessionUsage* usage = stats.add_sessions();
    usage->set_session_id(id);
    usage->set_used_bytes(share.used_bytes);
    usage->set_live_allocations(share.live_allocations);
  }
  for (uint32_t b = 0; b < kHistogramBuckets; ++b) {
    if (const uint64_t n = meta()->histogram[b]; n > 0) {
      v1::HistogramBucket* bucket = stats.add_size_histogram();
      bucket->set_log2_upper(b);
      bucket->set_count(n);
    }
  }
  stats.set_generation(segment()->generation.load(std::memory_order_acquire));
  return stats;
}

absl::Status Region::Sync() const {
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(data_.Sync());
  return meta_.Sync();
}

bool Region::Matches(const v1::CreateRegionRequest& request) const {
  const v1::Region region = Describe();
  if (region.strategy() != request.strategy() ||
      region.heap_end() - region.heap_begin() != request.size_bytes() ||
      region.quota_bytes_per_session() != request.quota_bytes_per_session()) {
    return false;
  }
  if (request.strategy() == v1::STRATEGY_POOL &&
      region.block_size() != request.block_size()) {
    return false;
  }
  if (request.strategy() == v1::STRATEGY_BUDDY && request.block_size() != 0 &&
      region.block_size() != request.block_size()) {
    return false;
  }
  return true;
}

}  // namespace shmalloc::server
