#include "allocators/allocator.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace shmalloc {

std::string_view StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kArena:
      return "arena";
    case Strategy::kPool:
      return "pool";
    case Strategy::kBuddy:
      return "buddy";
    case Strategy::kSlab:
      return "slab";
    case Strategy::kFreeList:
      return "free_list";
    case Strategy::kUnspecified:
      break;
  }
  return "unspecified";
}

void FillFragmentation(AllocatorStats& stats) {
  stats.fragmentation =
      stats.free_bytes == 0
          ? 0.0
          : 1.0 - static_cast<double>(stats.largest_free_bytes) /
                      static_cast<double>(stats.free_bytes);
  stats.internal_fragmentation =
      stats.used_bytes == 0 ? 0.0
                            : 1.0 - static_cast<double>(stats.requested_bytes) /
                                        static_cast<double>(stats.used_bytes);
}

absl::Status ValidateAllocateArgs(uint64_t size, uint64_t& alignment) {
  if (size == 0) return absl::InvalidArgumentError("size must be > 0");
  if (alignment == 0) alignment = kDefaultAlignment;
  if (!IsPowerOfTwo(alignment) || alignment > kMaxAlignment) {
    return absl::InvalidArgumentError(absl::StrCat(
        "alignment ", alignment, " is not a power of two <= ", kMaxAlignment));
  }
  return absl::OkStatus();
}

absl::Status ValidateOffsetInRange(uint64_t offset, uint64_t begin,
                                   uint64_t end) {
  if (offset < begin || offset >= end) {
    return absl::InvalidArgumentError(absl::StrCat(
        "offset ", offset, " is outside the heap [", begin, ", ", end, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateRange(const AllocatorOptions& options) {
  if (options.begin == 0 || options.begin % kHeapBeginGranule != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("begin ", options.begin,
                     " must be a positive multiple of ", kHeapBeginGranule));
  }
  if (options.end <= options.begin) {
    return absl::InvalidArgumentError(absl::StrCat(
        "end ", options.end, " must be greater than begin ", options.begin));
  }
  return absl::OkStatus();
}

absl::Status ValidateMetaHeader(std::span<const std::byte> meta,
                                Strategy expected) {
  if (meta.size() < sizeof(MetaHeader)) {
    return absl::DataLossError(absl::StrCat("metadata span of ", meta.size(),
                                            " bytes is smaller than a header"));
  }
  MetaHeader header;
  std::memcpy(&header, meta.data(), sizeof(header));
  if (header.magic != kMetaMagic) {
    return absl::DataLossError("metadata has no shmalloc magic");
  }
  if (header.layout_version != kMetaLayoutVersion) {
    return absl::DataLossError(
        absl::StrCat("metadata layout version ", header.layout_version,
                     ", this build reads ", kMetaLayoutVersion));
  }
  if (header.strategy != static_cast<uint32_t>(expected)) {
    return absl::DataLossError(
        absl::StrCat("metadata is for strategy ", header.strategy,
                     ", expected ", std::string(StrategyName(expected))));
  }
  if (header.meta_bytes > meta.size()) {
    return absl::DataLossError(
        absl::StrCat("metadata was created with ", header.meta_bytes,
                     " bytes but only ", meta.size(), " are mapped"));
  }
  if (header.begin == 0 || header.end <= header.begin) {
    return absl::DataLossError("metadata records an empty or invalid range");
  }
  return absl::OkStatus();
}

}  // namespace shmalloc

namespace shmalloc {

absl::StatusOr<std::vector<Extent>> OffsetAllocator::AllocateBatch(
    uint64_t size, uint64_t alignment, uint32_t count) {
  std::vector<Extent> extents;
  extents.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    absl::StatusOr<Extent> extent = Allocate(size, alignment);
    if (!extent.ok()) return extent.status();
    extents.push_back(*extent);
  }
  return extents;
}

absl::StatusOr<uint64_t> OffsetAllocator::FreeBatch(
    std::span<const uint64_t> offsets) {
  if (InTransaction()) {
    // Inside a transaction the caller's Abort undoes a batch that fails
    // part-way, so no pre-pass: a duplicate, or anything not live, fails
    // its own Free (a duplicate's second Free finds the block free).
    uint64_t freed = 0;
    for (uint64_t offset : offsets) {
      absl::StatusOr<uint64_t> size = SizeOf(offset);
      if (!size.ok()) return size.status();
      SHMALLOC_RETURN_IF_ERROR(Free(offset));
      freed += *size;
    }
    return freed;
  }
  std::vector<uint64_t> sorted(offsets.begin(), offsets.end());
  std::sort(sorted.begin(), sorted.end());
  if (auto dup = std::adjacent_find(sorted.begin(), sorted.end());
      dup != sorted.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("offset ", *dup, " appears more than once"));
  }
  uint64_t freed = 0;
  for (uint64_t offset : offsets) {
    absl::StatusOr<uint64_t> size = SizeOf(offset);
    if (!size.ok()) return size.status();
    freed += *size;
  }
  for (uint64_t offset : offsets) {
    const absl::Status status = Free(offset);
    if (!status.ok()) return status;  // SizeOf said live: cannot happen.
  }
  return freed;
}

}  // namespace shmalloc
