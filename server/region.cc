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
               MappedFile meta, std::unique_ptr<OffsetAllocator> allocator)
    : shm_dir_(std::move(shm_dir)),
      name_(std::move(name)),
      strategy_(allocator->strategy()),
      data_(std::move(data)),
      meta_(std::move(meta)),
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

absl::StatusOr<AllocateResult> Region::Allocate(
    const AllocateArgs& args, absl::FunctionRef<bool()> session_alive) {
  uint64_t alignment = args.alignment;
  SHMALLOC_RETURN_IF_ERROR(ValidateAllocateArgs(args.size, alignment));
  if (args.size > capacity()) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_bytes ", args.size, " exceeds the heap of region ",
                     name_, " (", capacity(), " bytes)"));
  }
  const uint32_t count = std::max<uint32_t>(args.count, 1);
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  if (!session_alive()) {
    return absl::NotFoundError(
        absl::StrCat("session ", args.session_id, " is not open"));
  }
  if (strategy_ == Strategy::kArena) {
    AllocateArgs arena_args = args;
    arena_args.alignment = alignment;
    arena_args.count = count;
    return AllocateArena(arena_args);
  }
  const bool owned = !args.detached;
  const uint64_t quota = meta()->quota_bytes_per_session;
  const SessionShare share =
      owned && quota > 0 ? owners_.Share(args.session_id) : SessionShare{};
  // Sizes are <= capacity < 2^52 and count <= 2^32: no overflow in u128.
  auto over_quota = [&](unsigned __int128 more) {
    return owned && quota > 0 && share.used_bytes + more > quota;
  };
  auto quota_error = [&] {
    return absl::ResourceExhaustedError(absl::StrCat(
        "session ", args.session_id, " would exceed its quota of ", quota,
        " bytes in region ", name_, " (it holds ", share.used_bytes, ")"));
  };
  if (over_quota(static_cast<unsigned __int128>(args.size) * count)) {
    return quota_error();
  }

  AllocateResult result;
  result.extents.reserve(count);
  unsigned __int128 reserved = 0;
  for (uint32_t i = 0; i < count; ++i) {
    absl::StatusOr<Extent> extent = allocator_->Allocate(args.size, alignment);
    if (!extent.ok()) {
      RollBack(result.extents);
      return extent.status();
    }
    reserved += extent->size_bytes;
    result.extents.push_back(*extent);
  }
  if (over_quota(reserved)) {  // Rounding up may cross it.
    RollBack(result.extents);
    return quota_error();
  }
  for (const Extent& extent : result.extents) {
    ++meta()->histogram[SizeBucket(extent.size_bytes)];
    if (owned) {
      owners_.Add(extent.offset,
                  Owner{args.session_id, extent.size_bytes, args.size});
    }
  }
  result.generation = segment()->generation.load(std::memory_order_acquire);
  return result;
}

absl::StatusOr<AllocateResult> Region::AllocateArena(const AllocateArgs& args) {
  // One bump for the whole batch keeps it all or nothing even while clients
  // bump the same cursor: extent i starts at offset + i * stride.
  const uint64_t stride = AlignUp(args.size, args.alignment);
  const unsigned __int128 total =
      static_cast<unsigned __int128>(stride) * (args.count - 1) + args.size;
  if (total > capacity()) {
    return absl::ResourceExhaustedError(
        absl::StrCat(args.count, " extents of ", args.size,
                     " bytes do not fit region ", name_));
  }
  SHMALLOC_ASSIGN_OR_RETURN(
      const Extent block,
      allocator_->Allocate(static_cast<uint64_t>(total), args.alignment));
  AllocateResult result;
  result.extents.reserve(args.count);
  for (uint32_t i = 0; i < args.count; ++i) {
    result.extents.push_back(Extent{block.offset + i * stride, args.size});
  }
  result.generation = segment()->generation.load(std::memory_order_acquire);
  return result;
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
  stats.set_failed_allocations(a.failed_allocations);
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
