// Region::Allocate: single and batch allocation, all or nothing.
#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/batch_fit.h"
#include "server/region.h"

namespace shmalloc::server {

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

  // Sizes are <= capacity < 2^52 and count < 2^32: no overflow in u128.
  using u128 = unsigned __int128;
  const bool owned = !args.detached;
  const uint64_t quota = owned ? meta()->quota_bytes_per_session : 0;
  const SessionShare share =
      quota > 0 ? owners_.Share(args.session_id) : SessionShare{};
  auto quota_error = [&] {
    return absl::ResourceExhaustedError(absl::StrCat(
        "session ", args.session_id, " would exceed its quota of ", quota,
        " bytes in region ", name_, " (it holds ", share.used_bytes, ")"));
  };
  if (quota > 0 && share.used_bytes + u128{args.size} * count > quota) {
    return quota_error();
  }

  BatchShape shape;
  shape.size = args.size;
  shape.alignment = alignment;
  shape.count = count;
  shape.block_size = segment()->block_size;
  shape.pool_live = strategy_ == Strategy::kPool ? HistogramLive() : 0;
  const BatchFit fit =
      count > 1 ? ClassifyBatch(*allocator_, shape) : BatchFit::kFits;
  if (fit == BatchFit::kCannotFit) {
    ++meta()->refused_allocations;  // A refusal for lack of space.
    return absl::ResourceExhaustedError(
        absl::StrCat(count, " extents of ", args.size,
                     " bytes do not fit the free space of region ", name_));
  }
  // When the batch might fail part-way, or rounding might cross the quota,
  // keep the metadata bytes: restoring them undoes the attempt exactly (the
  // allocator keeps all its state there), peak included.
  const bool quota_risky =
      quota > 0 &&
      share.used_bytes + u128{ReservedUpperBound(*allocator_, shape)} * count >
          quota;
  std::vector<std::byte> snapshot;
  if (fit == BatchFit::kUncertain || quota_risky) {
    snapshot.assign(allocator_meta_.begin(), allocator_meta_.end());
  }
  auto undo =
      [&](const std::vector<Extent>& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (snapshot.empty()) {
          RollBack(done);
        } else {
          std::copy(snapshot.begin(), snapshot.end(), allocator_meta_.begin());
        }
      };

  AllocateResult result;
  result.extents.reserve(count);
  u128 reserved = 0;
  for (uint32_t i = 0; i < count; ++i) {
    absl::StatusOr<Extent> extent = allocator_->Allocate(args.size, alignment);
    if (!extent.ok()) {
      undo(result.extents);
      // A restore also took back the allocator's count of this refusal.
      if (!snapshot.empty() && absl::IsResourceExhausted(extent.status())) {
        ++meta()->refused_allocations;
      }
      return extent.status();
    }
    reserved += extent->size_bytes;
    result.extents.push_back(*extent);
  }
  if (quota > 0 && share.used_bytes + reserved > quota) {
    undo(result.extents);  // Rounding up crossed the quota.
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

uint64_t Region::HistogramLive() const {
  uint64_t live = 0;
  for (uint64_t n : meta()->histogram) live += n;
  return live;
}

absl::StatusOr<AllocateResult> Region::AllocateArena(const AllocateArgs& args) {
  // One bump for the whole batch keeps it all or nothing even while clients
  // bump the same cursor: extent i starts at offset + i * stride.
  const uint64_t stride = AlignUp(args.size, args.alignment);
  const unsigned __int128 total =
      static_cast<unsigned __int128>(stride) * (args.count - 1) + args.size;
  if (total > capacity()) {
    ++meta()->refused_allocations;  // A refusal for lack of space.
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

}  // namespace shmalloc::server
