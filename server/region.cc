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
               MappedFile meta)
    : shm_dir_(std::move(shm_dir)),
      name_(std::move(name)),
      data_(std::move(data)),
      meta_(std::move(meta)),
      watch_(std::make_unique<DataFileWatch>(&data_, data_.size())) {}

Region::~Region() {
  absl::MutexLock lock(&mu_);
  allocator_.reset();  // Holds pointers into the mappings.
  owners_.reset();
  log_.reset();
}

absl::Status Region::CheckAlive() const {
  if (deleted_) {
    return absl::NotFoundError(absl::StrCat("region ", name_, " was deleted"));
  }
  // One fstat: a data file truncated or grown by a client makes the region
  // DAMAGED before anything touches its mapping (data_guard.h).
  return watch_->Check();
}

absl::Status Region::Reset(bool force) {
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  const AllocatorStats before = allocator_->Stats();
  if (strategy_ == Strategy::kArena && !force && before.used_bytes > 0) {
    // Clients may hold chunks and pointers into it: only the caller can
    // know they are done (a damaged cursor reads as a full arena here).
    return absl::FailedPreconditionError(absl::StrCat(
        "ARENA region ", name_, " has ", before.used_bytes,
        " bytes allocated; reset with force once no client uses them"));
  }
  if (strategy_ != Strategy::kArena && !force && before.live_allocations > 0) {
    const uint64_t owned = owners_->owned_allocations();
    return absl::FailedPreconditionError(absl::StrCat(
        "region ", name_, " has ", before.live_allocations,
        " live allocations (", owned, " owned by sessions, ",
        before.live_allocations - std::min(before.live_allocations, owned),
        " detached); reset with force to free them"));
  }
  // The undo half: one transaction marks the reset pending, bumps the
  // generation and keeps the figures a re-format would lose. The redo half
  // (ApplyReset) is idempotent, and Open finishes it after a crash.
  RegionMetaHeader* h = meta();
  log_->Begin();
  Touch(&h->generation);
  ++h->generation;
  Touch(&h->pending_reset);
  h->pending_reset = 1;
  if (strategy_ != Strategy::kArena) {
    Touch(&h->peak_base_bytes);
    h->peak_base_bytes = std::max(h->peak_base_bytes, before.peak_used_bytes);
    Touch(&h->failed_base);
    h->failed_base += before.failed_allocations;
  }
  log_->Commit();
  return ApplyReset();
}

absl::Status Region::MarkDeleted(bool force) {
  absl::MutexLock lock(&mu_);
  if (absl::Status s = CheckAlive(); !s.ok()) {
    // A DAMAGED region is deleted with force (its data is not looked at).
    if (!force || !absl::IsDataLoss(s)) return s;
  } else if (!force) {
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
  // One store: from here a crash before both unlinks finish is completed at
  // the next start (Classify says kDeleting).
  meta()->state = kMetaDeleting;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  deleted_ = true;
  return absl::OkStatus();
}

absl::Status Region::UnlinkFiles() const {
  // The data file first: a lone meta file that says DELETING is finished at
  // start, a lone data file is never removed without an operator.
  absl::Status data = UnlinkFile(data_.path());
  absl::Status meta = UnlinkFile(meta_.path());
  return data.ok() ? meta : data;
}

std::vector<uint64_t> Region::SessionIds() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> ids;
  if (!owners_.has_value()) return ids;
  for (const auto& [id, share] : owners_->Shares()) ids.push_back(id);
  return ids;
}

std::vector<std::pair<uint64_t, OwnerInfo>> Region::Allocations() const {
  absl::MutexLock lock(&mu_);
  if (!owners_.has_value()) return {};
  return owners_->All();
}

v1::Region Region::Describe() const {
  const RegionMetaHeader* header = meta();
  v1::Region region;
  region.set_name(name_);
  region.set_strategy(static_cast<v1::Strategy>(strategy_));
  region.set_size_bytes(kHeapBegin + capacity_);
  region.set_block_size(header->block_size);
  region.set_data_file(DataFileName(name_));
  region.set_data_dir(data_dir_);
  switch (huge_kind_) {
    case HugeKind::kHugetlbfs:
      region.set_huge_pages(v1::HUGE_PAGES_HUGETLBFS);
      break;
    case HugeKind::kTmpfsThp:
      region.set_huge_pages(v1::HUGE_PAGES_TMPFS_THP);
      break;
    default:
      region.set_huge_pages(v1::HUGE_PAGES_NONE);
  }
  {
    absl::MutexLock lock(&mu_);
    region.set_generation(header->generation);
  }
  region.set_heap_begin(kHeapBegin);
  region.set_heap_end(kHeapBegin + capacity_);
  for (uint32_t i = 0; i < header->size_class_count; ++i) {
    region.add_size_classes(header->size_classes[i]);
  }
  region.set_quota_bytes_per_session(header->quota_bytes_per_session);
  if (absl::Status s = watch_->Check(); !s.ok()) {
    region.set_state(v1::REGION_STATE_DAMAGED);
    region.set_state_detail(std::string(s.message()));
  } else {
    region.set_state(v1::REGION_STATE_READY);
  }
  region.set_incarnation(header->incarnation);
  region.set_max_batch(header->max_batch);
  region.set_max_live_allocations(
      header->owner_bytes == 0
          ? 0
          : (header->owner_bytes - sizeof(OwnerStoreHeader)) /
                sizeof(OwnerRecord));
  return region;
}

v1::RegionStats Region::Stats() const {
  absl::MutexLock lock(&mu_);
  v1::RegionStats stats;
  stats.set_name(name_);
  stats.set_strategy(static_cast<v1::Strategy>(strategy_));
  const RegionMetaHeader* h = meta();
  if (!watch_->Check().ok()) {
    // DAMAGED: the registry stops listing it; report nothing but its size.
    stats.set_capacity_bytes(capacity_);
    stats.set_generation(h->generation);
    return stats;
  }
  const AllocatorStats a = allocator_->Stats();
  stats.set_capacity_bytes(a.capacity_bytes);
  stats.set_used_bytes(a.used_bytes);
  stats.set_free_bytes(a.free_bytes);
  stats.set_peak_used_bytes(std::max(a.peak_used_bytes, h->peak_base_bytes));
  stats.set_live_allocations(a.live_allocations);
  stats.set_failed_allocations(a.failed_allocations + h->failed_base +
                               h->refused_allocations);
  stats.set_largest_free_bytes(a.largest_free_bytes);
  stats.set_fragmentation(a.fragmentation);
  stats.set_internal_fragmentation(a.internal_fragmentation);
  stats.set_requested_bytes(a.requested_bytes);
  if (owners_.has_value()) {
    stats.set_detached_allocations(owners_->detached_allocations());
    stats.set_detached_bytes(owners_->detached_bytes());
    // A session's usage is what its end reclaims; its detached allocations
    // count against its quota but are nobody's once made.
    for (const auto& [id, share] : owners_->Shares()) {
      if (share.owned_allocations == 0) continue;
      v1::SessionUsage* usage = stats.add_sessions();
      usage->set_session_id(id);
      usage->set_used_bytes(share.owned_bytes);
      usage->set_live_allocations(share.owned_allocations);
    }
  } else {
    // ARENA: everything is bumped directly by clients, owned by nobody.
    stats.set_detached_allocations(a.live_allocations);
    stats.set_detached_bytes(a.used_bytes);
  }
  for (uint32_t b = 0; b < kHistogramBuckets; ++b) {
    if (const uint64_t n = h->histogram[b]; n > 0) {
      v1::HistogramBucket* bucket = stats.add_size_histogram();
      bucket->set_log2_upper(b);
      bucket->set_count(n);
    }
  }
  stats.set_generation(h->generation);
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
