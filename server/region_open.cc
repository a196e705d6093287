// Region::Create, Region::Open and Attach: laying out, validating and
// recovering the two files (rolling back an interrupted transaction,
// finishing an interrupted reset).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "allocators/arena.h"
#include "allocators/buddy.h"
#include "allocators/factory.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/region.h"
#include "server/region_name.h"

namespace shmalloc::server {
namespace {

constexpr mode_t kDataMode = 0660;
constexpr mode_t kMetaMode = 0600;
// Far below any mount, far above any sane region; keeps offsets from
// overflowing. The daemon's configured limit is checked by the caller.
constexpr uint64_t kMaxHeapBytes = uint64_t{1} << 52;
// The most extents one transaction takes (AllocateRequest.count's limit).
constexpr uint64_t kMaxBatch = 65536;
// Owner records a region gets unless it asks: its natural count, at most
// this, and at most one per kDefaultHeapBytesPerLive bytes of heap (but at
// least kMinDefaultMaxLive). A record is 64 bytes of reserved shared memory,
// so a small-object region would otherwise carry records several times the
// size of its heap; a region that needs more asks (max_live_allocations).
constexpr uint64_t kDefaultMaxLive = uint64_t{1} << 20;
constexpr uint64_t kDefaultHeapBytesPerLive = 128;
constexpr uint64_t kMinDefaultMaxLive = 1024;
// Log entries beyond the per-extent bound: the region header's own words
// (histogram buckets, counters, the request ring) and the allocator's fixed
// words that every operation may touch once.
constexpr uint64_t kLogSlackEntries = 2048;

std::vector<uint64_t> DefaultSizeClasses() {
  std::vector<uint64_t> classes;
  for (uint64_t c = 16; c <= 16384; c *= 2) classes.push_back(c);
  return classes;
}

// Which pages a request asks for, given the daemon's huge-page directory.
absl::StatusOr<HugeKind> HugeKindFor(const v1::CreateRegionRequest& request,
                                     const HugePageDir* huge) {
  const v1::HugePages asked = request.huge_pages();
  if (asked == v1::HUGE_PAGES_UNSPECIFIED || asked == v1::HUGE_PAGES_NONE) {
    return HugeKind::kNone;
  }
  if (asked != v1::HUGE_PAGES_REQUIRED && asked != v1::HUGE_PAGES_HUGETLBFS &&
      asked != v1::HUGE_PAGES_TMPFS_THP) {
    return absl::InvalidArgumentError(
        absl::StrCat("huge_pages must be NONE, REQUIRED, HUGETLBFS or "
                     "TMPFS_THP (got ",
                     static_cast<int>(asked), ")"));
  }
  if (huge == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("region ", request.name(), " asks for huge pages, but ",
                     NoHugeDirMessage()));
  }
  if ((asked == v1::HUGE_PAGES_HUGETLBFS &&
       huge->kind != HugeKind::kHugetlbfs) ||
      (asked == v1::HUGE_PAGES_TMPFS_THP &&
       huge->kind != HugeKind::kTmpfsThp)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "region ", request.name(), " asks for ", v1::HugePages_Name(asked),
        ", but the daemon's huge_dir ", huge->dir, " is ",
        HugeKindName(huge->kind), " (ask HUGE_PAGES_REQUIRED for either)"));
  }
  return huge->kind;
}

// Turns a request into allocator options (with defaults made explicit). With
// `page_bytes` != 0 (a huge-page region) the data file (header + heap) is
// rounded up to a whole number of such pages, the heap taking the rest.
absl::StatusOr<AllocatorOptions> OptionsFor(
    const v1::CreateRegionRequest& request, uint64_t page_bytes = 0) {
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
  if (page_bytes != 0) options.end = AlignUp(options.end, page_bytes);
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

// The allocator options recorded in a meta header (to re-format on reset).
AllocatorOptions OptionsFromMeta(const RegionMetaHeader& h) {
  AllocatorOptions options;
  options.strategy = static_cast<Strategy>(h.strategy);
  options.begin = kHeapBegin;
  options.end = kHeapBegin + h.heap_bytes;
  if (options.strategy == Strategy::kPool) options.block_size = h.block_size;
  if (options.strategy == Strategy::kBuddy) options.min_block = h.block_size;
  options.size_classes.assign(h.size_classes,
                              h.size_classes + h.size_class_count);
  options.max_extents = h.allocator_param;
  return options;
}

// POOL and BUDDY allocations start a block apart: their owner records are
// found through a flat array (owner_store.h, OffsetIndex).
OffsetIndex OwnerIndexFor(const RegionMetaHeader& h) {
  const auto strategy = static_cast<Strategy>(h.strategy);
  if (strategy != Strategy::kPool && strategy != Strategy::kBuddy) return {};
  return {kHeapBegin, h.block_size, kHeapBegin + h.heap_bytes};
}

uint64_t BlockSizeOf(const AllocatorOptions& options) {
  if (options.strategy == Strategy::kPool) return options.block_size;
  if (options.strategy == Strategy::kBuddy) return options.min_block;
  return 0;
}

// How many allocations the strategy can hold at most.
uint64_t NaturalLive(const AllocatorOptions& o) {
  const uint64_t heap = o.end - o.begin;
  switch (o.strategy) {
    case Strategy::kPool:
      return heap / o.block_size;
    case Strategy::kBuddy:
      return heap / o.min_block;
    case Strategy::kSlab:
      return heap /
             *std::min_element(o.size_classes.begin(), o.size_classes.end());
    case Strategy::kFreeList:
      return o.max_extents != 0 ? o.max_extents
                                : std::max<uint64_t>(heap / 1024, 1024);
    default:
      return 0;
  }
}

// Distinct meta-file words one extent of a transaction can change: the
// allocator's bound, its owner record, its histogram bucket. Generous: the
// log costs file space only, never time.
uint64_t WordsPerExtent(const AllocatorOptions& o) {
  uint64_t allocator = 0;
  switch (o.strategy) {
    case Strategy::kPool:
      allocator = 8;
      break;
    case Strategy::kBuddy: {
      // A split or merge walks every level of the tree.
      const uint64_t levels =
          64 - std::countl_zero((o.end - o.begin) / o.min_block);
      allocator = 4 * levels + 16;
      break;
    }
    case Strategy::kSlab:
      allocator = 64;
      break;
    case Strategy::kFreeList:
      allocator = 64;
      break;
    default:
      allocator = 0;
  }
  return allocator + kOwnerWordsPerOp + 4;
}

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Region>> Region::Create(
    const std::string& shm_dir, const v1::CreateRegionRequest& request,
    uint64_t max_file_bytes, const HugePageDir* huge) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(request.name()));
  SHMALLOC_ASSIGN_OR_RETURN(const HugeKind huge_kind,
                            HugeKindFor(request, huge));
  SHMALLOC_ASSIGN_OR_RETURN(
      AllocatorOptions options,
      OptionsFor(request, huge_kind == HugeKind::kNone ? 0 : huge->page_bytes));
  SHMALLOC_ASSIGN_OR_RETURN(const uint64_t allocator_bytes,
                            MetadataBytes(options));
  const bool arena = options.strategy == Strategy::kArena;
  if (arena && allocator_bytes > kArenaMetaBytes) {
    return absl::InternalError(absl::StrCat("arena metadata needs ",
                                            allocator_bytes, " bytes, only ",
                                            kArenaMetaBytes, " fit"));
  }
  uint64_t max_live = 0;
  if (!arena) {
    const uint64_t natural = NaturalLive(options);
    max_live = request.max_live_allocations() != 0
                   ? request.max_live_allocations()
                   : std::min({natural, kDefaultMaxLive,
                               std::max(kMinDefaultMaxLive,
                                        (options.end - options.begin) /
                                            kDefaultHeapBytesPerLive)});
    if (max_live > natural) max_live = natural;
    if (max_live == 0) {
      return absl::InvalidArgumentError("the region can hold no allocation");
    }
  }
  if (request.max_batch() > kMaxBatch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batch is ", request.max_batch(), "; at most ", kMaxBatch));
  }
  const uint64_t max_batch =
      arena ? kMaxBatch
            : std::min(request.max_batch() != 0 ? uint64_t{request.max_batch()}
                                                : kMaxBatch,
                       max_live);
  const uint64_t owner_offset =
      AlignUp(kRegionMetaHeaderBytes + (arena ? 0 : allocator_bytes), 64);
  const uint64_t owner_bytes = arena ? 0 : OwnerStore::Bytes(max_live);
  const uint64_t log_offset = AlignUp(owner_offset + owner_bytes, 64);
  // A transaction logs a word at most once, so besides the per-extent bound
  // the log never needs more entries than the words it protects (the
  // header's are in the slack). Its file space is reserved shared memory:
  // without this bound a small region of small blocks would carry a log
  // many times its heap.
  const uint64_t log_entries =
      (arena ? 0
             : std::min(max_batch * WordsPerExtent(options),
                        (allocator_bytes + owner_bytes) / sizeof(uint64_t))) +
      kLogSlackEntries;
  const uint64_t log_bytes = UndoLogBytes(log_entries);
  const uint64_t meta_bytes = log_offset + log_bytes;

  const std::string data_dir =
      huge_kind == HugeKind::kNone ? shm_dir : huge->dir;
  const std::string data_path =
      JoinPath(data_dir, DataFileName(request.name()));
  const std::string meta_path = JoinPath(shm_dir, MetaFileName(request.name()));
  const uint64_t data_bytes = options.end;
  if (max_file_bytes != 0 && (data_bytes > max_file_bytes ||
                              meta_bytes > max_file_bytes - data_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "region ", request.name(), " needs ", data_bytes + meta_bytes,
        " bytes of files (", data_bytes, " data, ", meta_bytes,
        " metadata: allocator, owner records, undo log), over the daemon's "
        "limit max_region_bytes = ",
        max_file_bytes,
        "; use a smaller region, larger blocks or a lower "
        "max_live_allocations"));
  }

  // The meta file first: until its magic is written the region does not
  // exist, and a crash leaves files that Open calls incomplete.
  absl::StatusOr<MappedFile> meta =
      MappedFile::Create(meta_path, meta_bytes, kMetaMode);
  if (absl::IsAlreadyExists(meta.status())) {
    return absl::AlreadyExistsError(absl::StrCat(
        "region ", request.name(), " already exists (", meta_path, ")"));
  }
  if (!meta.ok()) return meta.status();
  absl::StatusOr<MappedFile> data =
      MappedFile::Create(data_path, data_bytes, kDataMode, /*keep_fd=*/true);
  if (!data.ok()) {
    meta->Unmap();
    (void)UnlinkFile(meta_path);
    if (absl::IsAlreadyExists(data.status())) {
      return absl::AlreadyExistsError(absl::StrCat(
          "region ", request.name(), " already exists (", data_path, ")"));
    }
    if (absl::IsResourceExhausted(data.status()) &&
        huge_kind == HugeKind::kHugetlbfs) {
      return absl::ResourceExhaustedError(absl::StrCat(
          data.status().message(),
          " (hugetlbfs: the pool has too few free huge pages for ",
          data_bytes / huge->page_bytes,
          "; see HugePages_Free in /proc/meminfo, reserve more with "
          "/proc/sys/vm/nr_hugepages)"));
    }
    return data.status();
  }
  auto remove_files = [&](absl::Status status) {
    data->Unmap();
    meta->Unmap();
    (void)UnlinkFile(data_path);
    (void)UnlinkFile(meta_path);
    return status;
  };

  // The meta file is a fresh zero file: fill every field, magic last.
  auto* header = reinterpret_cast<RegionMetaHeader*>(meta->data());
  header->layout_version = kRegionMetaLayoutVersion;
  header->strategy = static_cast<uint32_t>(options.strategy);
  header->heap_bytes = options.end - kHeapBegin;  // rounded for huge pages
  header->huge_kind = static_cast<uint32_t>(huge_kind);
  header->block_size = BlockSizeOf(options);
  header->quota_bytes_per_session = request.quota_bytes_per_session();
  header->allocator_meta_offset = arena ? 0 : kRegionMetaHeaderBytes;
  header->allocator_meta_bytes = arena ? 0 : allocator_bytes;
  header->size_class_count = static_cast<uint32_t>(options.size_classes.size());
  for (size_t i = 0; i < options.size_classes.size(); ++i) {
    header->size_classes[i] = options.size_classes[i];
  }
  absl::BitGen random;
  header->incarnation = absl::Uniform<uint64_t>(random) | 1;
  header->state = kMetaReady;
  header->owner_offset = owner_offset;
  header->owner_bytes = owner_bytes;
  header->log_offset = log_offset;
  header->log_bytes = log_bytes;
  header->max_batch = max_batch;
  header->allocator_param = options.max_extents;

  const std::span<std::byte> allocator_span =
      arena ? std::span<std::byte>(
                  reinterpret_cast<SegmentHeader*>(data->data())->arena_meta,
                  kArenaMetaBytes)
            : meta->bytes().subspan(kRegionMetaHeaderBytes, allocator_bytes);
  // ARENA: the data file already exists under its name (0660), so a
  // client could truncate it while it is formatted: guarded.
  absl::Status created = absl::OkStatus();
  if (!GuardSigbus([&] {
        created = CreateAllocator(allocator_span, options).status();
      })) {
    created = absl::DataLossError(
        absl::StrCat(data_path, " was truncated while it was formatted"));
  }
  if (!created.ok()) return remove_files(created);
  if (!arena) {
    absl::Status s =
        OwnerStore::Format(meta->bytes().subspan(owner_offset, owner_bytes),
                           nullptr)
            .status();
    if (!s.ok()) return remove_files(s);
  }
  if (absl::Status s =
          UndoLog::Format(meta->bytes(),
                          meta->bytes().subspan(log_offset, log_bytes))
              .status();
      !s.ok()) {
    return remove_files(s);
  }
  // Publish: whoever sees the magic sees every field before it.
  std::atomic_thread_fence(std::memory_order_release);
  header->magic = kRegionMetaMagic;

  std::unique_ptr<Region> region(
      new Region(shm_dir, request.name(), *std::move(data), *std::move(meta)));
  region->huge_kind_ = huge_kind;
  if (huge_kind != HugeKind::kNone) region->data_dir_ = data_dir;
  if (absl::Status s = region->Attach(); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("a region just created does not attach: ", s.message()));
  }
  if (absl::Status s = region->Sync(); !s.ok()) return s;
  return region;
}

Region::FileState Region::Classify(const std::string& shm_dir,
                                   const std::string& name) {
  const std::string meta_path = JoinPath(shm_dir, MetaFileName(name));
  absl::StatusOr<MappedFile> meta = MappedFile::Open(meta_path, kMetaMode);
  if (absl::IsNotFound(meta.status())) return FileState::kNoMeta;
  if (!meta.ok() || meta->size() < kRegionMetaHeaderBytes) {
    return FileState::kUnreadable;
  }
  const auto* h = reinterpret_cast<const RegionMetaHeader*>(meta->data());
  if (h->magic == 0) return FileState::kIncomplete;
  if (h->magic == kRegionMetaMagic &&
      h->layout_version == kRegionMetaLayoutVersion &&
      h->state == kMetaDeleting) {
    return FileState::kDeleting;
  }
  return FileState::kComplete;
}

absl::StatusOr<v1::CreateRegionRequest> Region::RecordedRequest(
    const std::string& shm_dir, const std::string& name) {
  const std::string meta_path = JoinPath(shm_dir, MetaFileName(name));
  SHMALLOC_ASSIGN_OR_RETURN(MappedFile meta,
                            MappedFile::Open(meta_path, kMetaMode));
  if (meta.size() < kRegionMetaHeaderBytes) {
    return Corrupt(meta_path, "too small to record a geometry");
  }
  const auto* h = reinterpret_cast<const RegionMetaHeader*>(meta.data());
  if ((h->magic != kRegionMetaMagic &&
       h->magic != 0x314d474552534853ULL) ||  // SHSREGM1
      h->size_class_count > kMaxSizeClasses) {
    return Corrupt(meta_path, "no readable geometry");
  }
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(static_cast<v1::Strategy>(h->strategy));
  request.set_size_bytes(h->heap_bytes);
  request.set_block_size(h->block_size);
  request.set_quota_bytes_per_session(h->quota_bytes_per_session);
  if (h->magic == kRegionMetaMagic && h->max_batch <= kMaxBatch) {
    request.set_max_batch(static_cast<uint32_t>(h->max_batch));
  }
  if (h->strategy == static_cast<uint32_t>(Strategy::kSlab)) {
    for (uint32_t i = 0; i < h->size_class_count; ++i) {
      request.add_size_classes(h->size_classes[i]);
    }
  }
  if (h->magic == kRegionMetaMagic) {
    if (h->huge_kind == static_cast<uint32_t>(HugeKind::kHugetlbfs)) {
      request.set_huge_pages(v1::HUGE_PAGES_HUGETLBFS);
    } else if (h->huge_kind == static_cast<uint32_t>(HugeKind::kTmpfsThp)) {
      request.set_huge_pages(v1::HUGE_PAGES_TMPFS_THP);
    }
  }
  SHMALLOC_RETURN_IF_ERROR(OptionsFor(request).status());
  return request;
}

absl::StatusOr<std::unique_ptr<Region>> Region::Open(const std::string& shm_dir,
                                                     const std::string& name,
                                                     const HugePageDir* huge) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  const std::string meta_path = JoinPath(shm_dir, MetaFileName(name));
  SHMALLOC_ASSIGN_OR_RETURN(MappedFile meta,
                            MappedFile::Open(meta_path, kMetaMode));
  if (meta.size() < kRegionMetaHeaderBytes) {
    return Corrupt(meta_path, "too small");
  }
  const auto* header = reinterpret_cast<const RegionMetaHeader*>(meta.data());
  if (header->magic == 0x314d474552534853ULL) {  // SHSREGM1
    return Corrupt(
        meta_path,
        "region meta layout version 1 (before owner records and "
        "the undo log); this build reads version 2 and does not "
        "migrate: ResetRegion(force) re-creates it with the same geometry "
        "(its contents are lost), DeleteRegion(force) removes it");
  }
  if (header->magic != kRegionMetaMagic ||
      header->layout_version != kRegionMetaLayoutVersion) {
    return Corrupt(meta_path,
                   absl::StrCat("no region meta magic or layout version ",
                                header->layout_version, " (this build reads ",
                                kRegionMetaLayoutVersion, ")"));
  }
  const bool arena =
      header->strategy == static_cast<uint32_t>(Strategy::kArena);
  if (header->strategy < static_cast<uint32_t>(Strategy::kArena) ||
      header->strategy > static_cast<uint32_t>(Strategy::kFreeList) ||
      header->heap_bytes == 0 || header->heap_bytes > kMaxHeapBytes ||
      header->size_class_count > kMaxSizeClasses) {
    return Corrupt(meta_path, "meta header geometry is invalid");
  }
  const uint64_t allocator_end =
      kRegionMetaHeaderBytes + (arena ? 0 : header->allocator_meta_bytes);
  if ((!arena && header->allocator_meta_offset != kRegionMetaHeaderBytes) ||
      header->owner_offset < allocator_end || header->owner_offset % 8 != 0 ||
      header->owner_bytes > meta.size() ||
      header->log_offset < header->owner_offset + header->owner_bytes ||
      header->log_offset % 8 != 0 ||
      header->log_offset + header->log_bytes != meta.size() ||
      header->max_batch == 0 || header->max_batch > kMaxBatch ||
      (!arena && header->owner_bytes == 0)) {
    return Corrupt(meta_path, "meta file areas do not fit the file");
  }
  const auto huge_kind = static_cast<HugeKind>(header->huge_kind);
  if (huge_kind != HugeKind::kNone && huge_kind != HugeKind::kHugetlbfs &&
      huge_kind != HugeKind::kTmpfsThp) {
    return Corrupt(meta_path,
                   absl::StrCat("unknown huge_kind ", header->huge_kind));
  }
  if (huge_kind != HugeKind::kNone &&
      (huge == nullptr || huge->kind != huge_kind)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "region ", name, " keeps its data file on ", HugeKindName(huge_kind),
        " huge pages, but this daemon's huge_dir is ",
        huge == nullptr
            ? std::string("not set")
            : absl::StrCat(huge->dir, " (", HugeKindName(huge->kind), ")"),
        ": start shmallocd with the --huge_dir the region was created with"));
  }
  const std::string data_dir =
      huge_kind == HugeKind::kNone ? shm_dir : huge->dir;
  const std::string data_path = JoinPath(data_dir, DataFileName(name));
  SHMALLOC_ASSIGN_OR_RETURN(MappedFile data,
                            MappedFile::Open(data_path, kDataMode,
                                             /*keep_fd=*/true));
  if (data.size() != kHeapBegin + header->heap_bytes) {
    return Corrupt(data_path,
                   absl::StrCat("data file has ", data.size(),
                                " bytes; the region's geometry says ",
                                kHeapBegin + header->heap_bytes));
  }
  std::unique_ptr<Region> region(
      new Region(shm_dir, name, std::move(data), std::move(meta)));
  region->huge_kind_ = huge_kind;
  if (huge_kind != HugeKind::kNone) region->data_dir_ = data_dir;
  SHMALLOC_RETURN_IF_ERROR(region->Attach());
  return region;
}

absl::Status Region::Attach() {
  absl::MutexLock lock(&mu_);
  const RegionMetaHeader* h = meta();
  const std::string meta_path = meta_.path();
  strategy_ = static_cast<Strategy>(h->strategy);
  capacity_ = h->heap_bytes;
  max_batch_ = h->max_batch;
  const bool arena = strategy_ == Strategy::kArena;
  allocator_meta_ =
      arena ? std::span<std::byte>(segment()->arena_meta, kArenaMetaBytes)
            : meta_.bytes().subspan(kRegionMetaHeaderBytes,
                                    h->allocator_meta_bytes);
  absl::StatusOr<UndoLog> log = UndoLog::Open(
      meta_.bytes(), meta_.bytes().subspan(h->log_offset, h->log_bytes));
  if (!log.ok()) return Corrupt(meta_path, log.status().message());
  log_ = std::make_unique<UndoLog>(*std::move(log));
  absl::StatusOr<uint64_t> undone = log_->Recover();
  if (!undone.ok()) return Corrupt(meta_path, undone.status().message());
  if (*undone > 0) {
    SHMALLOC_LOG(Info) << "region " << name_ << ": rolled back an interrupted "
                       << "transaction (" << *undone << " words)";
  }
  if (h->pending_reset != 0) {
    SHMALLOC_LOG(Info) << "region " << name_
                       << ": finishing an interrupted reset";
    SHMALLOC_RETURN_IF_ERROR(ApplyReset());
  }
  // ARENA metadata is in the data file: read it guarded.
  absl::StatusOr<std::unique_ptr<OffsetAllocator>> allocator =
      absl::UnknownError("not attached");
  SHMALLOC_RETURN_IF_ERROR(
      watch_->Guard([&] { allocator = AttachAllocator(allocator_meta_); }));
  if (!allocator.ok()) {
    return Corrupt(arena ? data_.path() : meta_path,
                   allocator.status().message());
  }
  if ((*allocator)->strategy() != strategy_ ||
      (*allocator)->begin() != kHeapBegin ||
      (*allocator)->end() != kHeapBegin + capacity_) {
    return Corrupt(meta_path, "allocator range does not match the region");
  }
  allocator_ = *std::move(allocator);
  // Every call on an ARENA's metadata checks the data file and runs guarded.
  if (arena) {
    allocator_ =
        std::make_unique<GuardedAllocator>(std::move(allocator_), watch_.get());
  }
  // ARENA metadata lives in the data file, outside the log's reach: its
  // Allocate is one compare-and-swap and needs no log.
  if (!arena) allocator_->set_undo_log(log_.get());
  if (!arena && allocator_->NeedsCounterUpgrade()) {
    // Metadata from before the O(1) counters: one walk stores them, in a
    // transaction (a crash rolls it back; the next Open does it again).
    log_->Begin();
    allocator_->UpgradeCounters();
    log_->Commit();
    SHMALLOC_LOG(Info) << "region " << name_
                       << ": allocator counters added to its metadata";
  }
  if (!arena) {
    absl::StatusOr<OwnerStore> owners =
        OwnerStore::Open(meta_.bytes().subspan(h->owner_offset, h->owner_bytes),
                         log_.get(), OwnerIndexFor(*h));
    if (!owners.ok()) return Corrupt(meta_path, owners.status().message());
    owners_.emplace(*std::move(owners));
    const uint64_t live = allocator_->Stats().live_allocations;
    if (owners_->live() != live) {
      return Corrupt(
          meta_path,
          absl::StrCat("owner records (", owners_->live(),
                       ") do not match live allocations (", live, ")"));
    }
    uint64_t bad_offset = 0;
    bool bad = false;
    // A plain pointer: the lambda runs under mu_, which the analysis cannot
    // see through it.
    const OffsetAllocator* allocator_view = allocator_.get();
    owners_->ForEach([&](uint64_t offset, uint64_t size_bytes) {
      if (bad) return;
      absl::StatusOr<uint64_t> size = allocator_view->SizeOf(offset);
      if (!size.ok() || *size != size_bytes) {
        bad = true;
        bad_offset = offset;
      }
    });
    if (bad) {
      return Corrupt(meta_path,
                     absl::StrCat("owner record of offset ", bad_offset,
                                  " names no live allocation"));
    }
  }
  SHMALLOC_RETURN_IF_ERROR(PublishSegment());
  return absl::OkStatus();
}

absl::Status Region::ApplyReset() {
  RegionMetaHeader* h = meta();
  if (strategy_ == Strategy::kArena) {
    // The arena's metadata is in the data file, which every client can
    // write: re-format it from the daemon's geometry instead of trusting
    // (or attaching) what is there. Cursor first, epoch last (Arena::Reset
    // explains the order); restartable, so Open finishes it after a crash.
    UndoLog::MarkCrashPoint();
    absl::StatusOr<std::unique_ptr<Arena>> arena =
        absl::UnknownError("not re-formatted");
    SHMALLOC_RETURN_IF_ERROR(watch_->Guard([&] {
      arena = Arena::Reformat(allocator_meta_, OptionsFromMeta(*h));
    }));
    SHMALLOC_RETURN_IF_ERROR(arena.status());
    if (allocator_ != nullptr) {
      allocator_ =
          std::make_unique<GuardedAllocator>(*std::move(arena), watch_.get());
    }
  } else {
    // Re-format from the daemon's geometry: idempotent, so a crash at any
    // store of it is finished by doing it again. The peak and failure
    // counters of before were folded into the header (peak_base_bytes,
    // failed_base) by the transaction that began the reset.
    UndoLog::MarkCrashPoint();
    SHMALLOC_ASSIGN_OR_RETURN(
        std::unique_ptr<OffsetAllocator> fresh,
        CreateAllocator(allocator_meta_, OptionsFromMeta(*h)));
    UndoLog::MarkCrashPoint();
    SHMALLOC_RETURN_IF_ERROR(
        OwnerStore::Format(
            meta_.bytes().subspan(h->owner_offset, h->owner_bytes), nullptr)
            .status());
    UndoLog::MarkCrashPoint();
    std::fill(std::begin(h->histogram), std::end(h->histogram), 0);
    UndoLog::MarkCrashPoint();
    if (allocator_ != nullptr) {
      fresh->set_undo_log(log_.get());
      allocator_ = std::move(fresh);
      absl::StatusOr<OwnerStore> owners = OwnerStore::Open(
          meta_.bytes().subspan(h->owner_offset, h->owner_bytes), log_.get(),
          OwnerIndexFor(*h));
      SHMALLOC_CHECK(owners.ok()) << owners.status();
      owners_.emplace(*std::move(owners));
    }
  }
  SHMALLOC_RETURN_IF_ERROR(PublishSegment());
  UndoLog::MarkCrashPoint();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  h->pending_reset = 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return absl::OkStatus();
}

absl::Status Region::PublishSegment() {
  const RegionMetaHeader* h = meta();
  SegmentHeader* seg = segment();
  // Plain stores into the client-writable data file: guarded (a client may
  // have truncated it).
  return watch_->Guard([&] {
    seg->layout_version = kSegmentLayoutVersion;
    seg->strategy = h->strategy;
    seg->size_bytes = kHeapBegin + h->heap_bytes;
    seg->heap_begin = kHeapBegin;
    seg->heap_end = kHeapBegin + h->heap_bytes;
    seg->block_size = h->block_size;
    seg->incarnation = h->incarnation;
    std::memset(seg->name, 0, kRegionNameBytes);
    std::memcpy(seg->name, name_.data(),
                std::min<size_t>(name_.size(), kRegionNameBytes - 1));
    seg->generation.store(h->generation, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_release);
    seg->magic = kSegmentMagic;
  });
}

}  // namespace shmalloc::server
