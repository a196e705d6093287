#include "shmalloc/region.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/connection.h"
#include "client/proto_convert.h"
#include "client/shm_mapping.h"
#include "common/segment_header.h"
#include "common/status_macros.h"

namespace shmalloc::client {

Region::Region(std::shared_ptr<internal::Connection> connection,
               RegionInfo info, std::byte* base)
    : connection_(std::move(connection)), info_(std::move(info)), base_(base) {
  if (connection_ != nullptr && !info_.data_file.empty()) {
    path_ = internal::DataFilePath(connection_->shm_dir(), info_.data_dir,
                                   info_.data_file);
    struct stat st = {};
    if (::stat(path_.c_str(), &st) == 0) {
      file_dev_ = st.st_dev;
      file_ino_ = st.st_ino;
    }
  }
}

Region::~Region() { internal::UnmapFile(base_, info_.size_bytes); }

uint64_t Region::generation() const {
  return reinterpret_cast<const SegmentHeader*>(base_)->generation.load(
      std::memory_order_acquire);
}

absl::Status Region::CheckGeneration(uint64_t generation) const {
  const uint64_t now = this->generation();
  if (now == generation) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "stale: region '", info_.name, "' was reset (offset from generation ",
      generation, ", region is at generation ", now, ")"));
}

absl::Status Region::CheckIncarnation() const {
  if (file_ino_ == 0) return absl::OkStatus();
  struct stat st = {};
  // Gone: the daemon answers NOT_FOUND for the name (unless it is re-created
  // meanwhile, which the next call sees).
  if (::stat(path_.c_str(), &st) != 0) return absl::OkStatus();
  if (st.st_dev == file_dev_ && st.st_ino == file_ino_) [[likely]] {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "stale: region '", info_.name, "' (incarnation ", info_.incarnation,
      ") was deleted and re-created since this process mapped it; open it "
      "again"));
}

absl::Status Region::BadExtent(uint64_t offset, uint64_t size,
                               std::string_view what) const {
  return absl::DataLossError(absl::StrCat(
      std::string(what), " [", offset, ", +", size,
      ") is not inside the heap [", info_.heap_begin, ", ", info_.heap_end,
      ") of region '", info_.name, "' as mapped in this process"));
}

absl::StatusOr<uint64_t> Region::ToOffset(const void* p) const {
  const auto* b = static_cast<const std::byte*>(p);
  if (b < base_ + info_.heap_begin || b >= base_ + info_.heap_end) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pointer ", absl::Hex(reinterpret_cast<uintptr_t>(p)),
        " is not inside the heap of region '", info_.name, "' mapped at ",
        absl::Hex(reinterpret_cast<uintptr_t>(base_))));
  }
  return static_cast<uint64_t>(b - base_);
}

absl::StatusOr<std::span<std::byte>> Region::Span(uint64_t offset,
                                                  uint64_t size) const {
  if (size == 0 || offset < info_.heap_begin || offset >= info_.heap_end ||
      size > info_.heap_end - offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("bytes [", offset, ", +", size,
                     ") are not inside the heap [", info_.heap_begin, ", ",
                     info_.heap_end, ") of region '", info_.name, "'"));
  }
  return std::span<std::byte>(base_ + offset, size);
}

absl::StatusOr<std::vector<Extent>> Region::AllocateExtents(
    uint64_t size, uint32_t count, const AllocateOptions& options,
    uint64_t* generation) {
  v1::AllocateRequest request;
  request.set_region(info_.name);
  request.set_size_bytes(size);
  request.set_alignment(options.alignment);
  request.set_count(count);
  request.set_detached(options.detached);
  // The incarnation fence, without a stat() of the data file per call: the
  // daemon refuses (FAILED_PRECONDITION, nothing allocated) when the region
  // of this name is no longer the one this process mapped, and it checks
  // under the region lock, so a re-create while the call is in flight
  // cannot hand back the new region's extents either.
  request.set_incarnation(info_.incarnation);
  v1::AllocateResponse response;
  absl::Status s = connection_->Allocate(std::move(request), &response);
  if (!s.ok()) return s;
  if (generation != nullptr) *generation = response.generation();
  const uint32_t expected = std::max<uint32_t>(count, 1);
  std::vector<Extent> extents = internal::ExtentsOf(response);
  if (extents.size() != expected) {
    return absl::DataLossError(absl::StrCat(
        "Allocate on region '", info_.name, "': asked for ", expected,
        " extents, the daemon answered ", extents.size()));
  }
  for (const Extent& e : extents) {
    // Never a pointer outside this mapping, whatever the daemon (or a
    // damaged region) answers.
    SHMALLOC_RETURN_IF_ERROR(
        CheckExtent(e.offset, e.size_bytes, "the daemon's extent"));
    if (e.size_bytes < size) {
      return absl::DataLossError(absl::StrCat(
          "Allocate on region '", info_.name, "': extent at ", e.offset,
          " has ", e.size_bytes, " bytes, ", size, " were asked for"));
    }
  }
  return extents;
}

absl::StatusOr<Allocation> Region::Allocate(uint64_t size,
                                            const AllocateOptions& options) {
  absl::StatusOr<std::vector<Allocation>> batch =
      AllocateBatch(size, 1, options);
  if (!batch.ok()) return batch.status();
  return std::move(batch->front());
}

absl::StatusOr<std::vector<Allocation>> Region::AllocateBatch(
    uint64_t size, uint32_t count, const AllocateOptions& options) {
  // The daemon says which generation it allocated in; Free sends it back so
  // a region reset since makes that Free FAILED_PRECONDITION.
  uint64_t gen = 0;
  absl::StatusOr<std::vector<Extent>> extents =
      AllocateExtents(size, count, options, &gen);
  if (!extents.ok()) return extents.status();
  std::vector<Allocation> out;
  out.reserve(extents->size());
  for (const Extent& e : *extents) {
    out.emplace_back(shared_from_this(), e, gen, !options.detached);
  }
  return out;
}

absl::Status Region::Free(uint64_t offset, uint64_t generation) {
  return Free(std::span<const uint64_t>(&offset, 1), generation);
}

absl::Status Region::Free(std::span<const uint64_t> offsets,
                          uint64_t generation) {
  v1::FreeRequest request;
  request.set_region(info_.name);
  request.mutable_offsets()->Add(offsets.begin(), offsets.end());
  request.set_generation(generation);
  request.set_incarnation(info_.incarnation);  // fenced by the daemon
  v1::FreeResponse response;
  return connection_->Free(std::move(request), &response);
}

absl::Status Region::Adopt(uint64_t offset, uint64_t generation) {
  return Adopt(std::span<const uint64_t>(&offset, 1), generation);
}

absl::Status Region::Adopt(std::span<const uint64_t> offsets,
                           uint64_t generation) {
  SHMALLOC_RETURN_IF_ERROR(CheckIncarnation());
  v1::AdoptRequest request;
  request.set_region(info_.name);
  request.mutable_offsets()->Add(offsets.begin(), offsets.end());
  request.set_generation(generation);
  v1::AdoptResponse response;
  return connection_->Adopt(std::move(request), &response);
}

absl::StatusOr<Allocation> Region::AdoptAllocation(const Extent& extent,
                                                   uint64_t generation) {
  // Checked here first: nothing is adopted for a handle this mapping
  // could not serve.
  SHMALLOC_RETURN_IF_ERROR(Span(extent.offset, extent.size_bytes).status());
  SHMALLOC_RETURN_IF_ERROR(Adopt(extent.offset, generation));
  return Allocation(shared_from_this(), extent, generation, /*owning=*/true);
}

absl::StatusOr<RegionStats> Region::Stats() const {
  v1::GetStatsRequest request;
  request.set_region(info_.name);
  v1::Stats response;
  absl::Status s = connection_->Call(&v1::Allocator::Stub::GetStats, "GetStats",
                                     request, &response);
  if (!s.ok()) return s;
  for (const v1::RegionStats& r : response.regions()) {
    if (r.name() == info_.name) return internal::FromProto(r);
  }
  return absl::NotFoundError(
      absl::StrCat("GetStats: no figures for region '", info_.name, "'"));
}

absl::StatusOr<RegionInfo> Region::Reset(bool force) {
  v1::ResetRegionRequest request;
  request.set_name(info_.name);
  request.set_force(force);
  v1::Region response;
  absl::Status s =
      connection_->Call(&v1::Allocator::Stub::ResetRegion, "ResetRegion",
                        request, &response, internal::Resend::kNever);
  if (!s.ok()) return s;
  return internal::FromProto(response);
}

}  // namespace shmalloc::client
