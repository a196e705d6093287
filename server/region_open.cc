// Region::Create and Region::Open: formatting and validating the two files.
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "allocators/factory.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/region.h"
#include "server/region_name.h"

namespace shmalloc::server {
namespace {

constexpr mode_t kDataMode = 0660;
constexpr mode_t kMetaMode = 0600;
constexpr uint64_t kBuddyDefaultMinBlock = 64;
// Far below any mount, far above any sane region; keeps offsets from
// overflowing. The daemon's configured limit is checked by the caller.
constexpr uint64_t kMaxHeapBytes = uint64_t{1} << 52;

std::vector<uint64_t> DefaultSizeClasses() {
  std::vector<uint64_t> classes;
  for (uint64_t c = 16; c <= 16384; c *= 2) classes.push_back(c);
  return classes;
}

// Turns a request into allocator options (with defaults made explicit).
absl::StatusOr<AllocatorOptions> OptionsFor(
    const v1::CreateRegionRequest& request) {
  AllocatorOptions options;
  const int strategy = request.strategy();
  if (strategy < static_cast<int>(Strategy::kArena) ||
      strategy > static_cast<int>(Strategy::kFreeList)) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy must be one of ARENA, POOL, BUDDY, SLAB, "
                     "FREE_LIST (got ",
                     strategy, ")"));
  }
  options.strategy = static_cast<Strategy>(strategy);
  if (request.size_bytes() == 0) {
    return absl::InvalidArgumentError("size_bytes must be > 0");
  }
  if (request.size_bytes() > kMaxHeapBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_bytes ", request.size_bytes(), " is too large"));
  }
  options.begin = kHeapBegin;
  options.end = kHeapBegin + request.size_bytes();
  switch (options.strategy) {
    case Strategy::kPool:
      if (request.block_size() == 0) {
        return absl::InvalidArgumentError("POOL regions need a block_size");
      }
      options.block_size = request.block_size();
      break;
    case Strategy::kBuddy:
      options.min_block = request.block_size() == 0 ? kBuddyDefaultMinBlock
                                                    : request.block_size();
      break;
    case Strategy::kSlab:
      if (request.size_classes_size() > static_cast<int>(kMaxSizeClasses)) {
        return absl::InvalidArgumentError(
            absl::StrCat("at most ", kMaxSizeClasses, " size classes"));
      }
      options.size_classes.assign(request.size_classes().begin(),
                                  request.size_classes().end());
      if (options.size_classes.empty()) {
        options.size_classes = DefaultSizeClasses();
      }
      break;
    default:
      break;
  }
  return options;
}

uint64_t BlockSizeOf(const AllocatorOptions& options) {
  if (options.strategy == Strategy::kPool) return options.block_size;
  if (options.strategy == Strategy::kBuddy) return options.min_block;
  return 0;
}

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Region>> Region::Create(
    const std::string& shm_dir, const v1::CreateRegionRequest& request) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(request.name()));
  SHMALLOC_ASSIGN_OR_RETURN(AllocatorOptions options, OptionsFor(request));
  SHMALLOC_ASSIGN_OR_RETURN(const uint64_t allocator_bytes,
                            MetadataBytes(options));
  const bool arena = options.strategy == Strategy::kArena;
  if (arena && allocator_bytes > kArenaMetaBytes) {
    return absl::InternalError(absl::StrCat("arena metadata needs ",
                                            allocator_bytes, " bytes, only ",
                                            kArenaMetaBytes, " fit"));
  }
  const std::string data_path = JoinPath(shm_dir, DataFileName(request.name()));
  const std::string meta_path = JoinPath(shm_dir, MetaFileName(request.name()));
  const uint64_t data_bytes = options.end;
  const uint64_t meta_bytes =
      kRegionMetaHeaderBytes + (arena ? 0 : allocator_bytes);

  absl::StatusOr<MappedFile> data =
      MappedFile::Create(data_path, data_bytes, kDataMode);
  if (absl::IsAlreadyExists(data.status())) {
    return absl::AlreadyExistsError(absl::StrCat(
        "region ", request.name(), " already exists (", data_path, ")"));
  }
  if (!data.ok()) return data.status();
  absl::StatusOr<MappedFile> meta =
      MappedFile::Create(meta_path, meta_bytes, kMetaMode);
  if (!meta.ok()) {
    (void)UnlinkFile(data_path);
    if (absl::IsAlreadyExists(meta.status())) {
      return absl::AlreadyExistsError(absl::StrCat(
          "region ", request.name(), " already exists (", meta_path, ")"));
    }
    return meta.status();
  }
  auto remove_files = [&](absl::Status status) {
    data->Unmap();
    meta->Unmap();
    (void)UnlinkFile(data_path);
    (void)UnlinkFile(meta_path);
    return status;
  };

  // Both files are fresh zero pages: fill every field, magic last.
  auto* segment = reinterpret_cast<SegmentHeader*>(data->data());
  segment->layout_version = kSegmentLayoutVersion;
  segment->strategy = static_cast<uint32_t>(options.strategy);
  segment->size_bytes = data_bytes;
  segment->heap_begin = kHeapBegin;
  segment->heap_end = data_bytes;
  segment->block_size = BlockSizeOf(options);
  segment->generation.store(0, std::memory_order_relaxed);
  std::memcpy(segment->name, request.name().data(), request.name().size());

  auto* header = reinterpret_cast<RegionMetaHeader*>(meta->data());
  header->layout_version = kRegionMetaLayoutVersion;
  header->strategy = static_cast<uint32_t>(options.strategy);
  header->heap_bytes = request.size_bytes();
  header->block_size = BlockSizeOf(options);
  header->quota_bytes_per_session = request.quota_bytes_per_session();
  header->allocator_meta_offset = arena ? 0 : kRegionMetaHeaderBytes;
  header->allocator_meta_bytes = arena ? 0 : allocator_bytes;
  header->size_class_count = static_cast<uint32_t>(options.size_classes.size());
  for (size_t i = 0; i < options.size_classes.size(); ++i) {
    header->size_classes[i] = options.size_classes[i];
  }

  const std::span<std::byte> allocator_span =
      arena ? std::span<std::byte>(segment->arena_meta, kArenaMetaBytes)
            : meta->bytes().subspan(kRegionMetaHeaderBytes, allocator_bytes);
  absl::StatusOr<std::unique_ptr<OffsetAllocator>> allocator =
      CreateAllocator(allocator_span, options);
  if (!allocator.ok()) return remove_files(allocator.status());

  // Publish: whoever sees a magic sees every field before it.
  std::atomic_thread_fence(std::memory_order_release);
  header->magic = kRegionMetaMagic;
  std::atomic_thread_fence(std::memory_order_release);
  segment->magic = kSegmentMagic;
  if (absl::Status s = meta->Sync(); !s.ok()) return remove_files(s);
  if (absl::Status s = data->Sync(); !s.ok()) return remove_files(s);
  return std::unique_ptr<Region>(
      new Region(shm_dir, request.name(), *std::move(data), *std::move(meta),
                 allocator_span, *std::move(allocator)));
}

absl::StatusOr<std::unique_ptr<Region>> Region::Open(const std::string& shm_dir,
                                                     const std::string& name) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  const std::string data_path = JoinPath(shm_dir, DataFileName(name));
  const std::string meta_path = JoinPath(shm_dir, MetaFileName(name));
  SHMALLOC_ASSIGN_OR_RETURN(MappedFile data, MappedFile::Open(data_path));
  SHMALLOC_ASSIGN_OR_RETURN(MappedFile meta, MappedFile::Open(meta_path));

  if (data.size() <= kHeapBegin) return Corrupt(data_path, "too small");
  const auto* segment = reinterpret_cast<const SegmentHeader*>(data.data());
  if (segment->magic != kSegmentMagic) {
    return Corrupt(data_path,
                   "no segment magic (not a shmalloc data file, or "
                   "its creation did not finish)");
  }
  if (segment->layout_version != kSegmentLayoutVersion) {
    return Corrupt(
        data_path,
        absl::StrCat("segment layout version ", segment->layout_version,
                     ", this build reads ", kSegmentLayoutVersion));
  }
  if (segment->heap_begin != kHeapBegin || segment->size_bytes != data.size() ||
      segment->heap_end != data.size()) {
    return Corrupt(data_path, "segment geometry does not match the file size");
  }
  if (std::strncmp(segment->name, name.c_str(), kRegionNameBytes) != 0) {
    return Corrupt(data_path, "segment header names another region");
  }

  if (meta.size() < kRegionMetaHeaderBytes) {
    return Corrupt(meta_path, "too small");
  }
  const auto* header = reinterpret_cast<const RegionMetaHeader*>(meta.data());
  if (header->magic != kRegionMetaMagic ||
      header->layout_version != kRegionMetaLayoutVersion) {
    return Corrupt(meta_path, "no region meta magic or another layout version");
  }
  if (header->strategy != segment->strategy ||
      header->heap_bytes != data.size() - kHeapBegin ||
      header->size_class_count > kMaxSizeClasses) {
    return Corrupt(meta_path, "meta header does not match the data file");
  }
  const bool arena =
      segment->strategy == static_cast<uint32_t>(Strategy::kArena);
  std::span<std::byte> allocator_span;
  if (arena) {
    allocator_span = std::span<std::byte>(
        reinterpret_cast<SegmentHeader*>(data.data())->arena_meta,
        kArenaMetaBytes);
  } else {
    if (header->allocator_meta_offset != kRegionMetaHeaderBytes ||
        header->allocator_meta_offset + header->allocator_meta_bytes !=
            meta.size()) {
      return Corrupt(meta_path, "allocator metadata does not fit the file");
    }
    allocator_span = meta.bytes().subspan(header->allocator_meta_offset,
                                          header->allocator_meta_bytes);
  }
  absl::StatusOr<std::unique_ptr<OffsetAllocator>> allocator =
      AttachAllocator(allocator_span);
  if (!allocator.ok()) {
    return absl::DataLossError(absl::StrCat(arena ? data_path : meta_path, ": ",
                                            allocator.status().message()));
  }
  if (static_cast<uint32_t>((*allocator)->strategy()) != segment->strategy ||
      (*allocator)->begin() != kHeapBegin ||
      (*allocator)->end() != segment->heap_end) {
    return Corrupt(meta_path, "allocator range does not match the data file");
  }
  return std::unique_ptr<Region>(new Region(shm_dir, name, std::move(data),
                                            std::move(meta), allocator_span,
                                            *std::move(allocator)));
}

}  // namespace shmalloc::server
