// The head of a region's meta file (<shm_dir>/shmalloc-NAME.meta, mode 0600,
// read and written by shmallocd alone): the region's geometry as it was
// created (the daemon's truth; the data file's SegmentHeader is a published
// copy rewritten from it), its quota, the figures the allocator does not keep
// (size histogram, refusals), the recent request ids, and where the other
// parts of the file lie: the allocator's metadata (absent for ARENA regions,
// whose allocator metadata lives in the data file's SegmentHeader::arena_meta
// so clients can bump-allocate on it), the owner records and the undo log.
//
// Byte layout (little-endian; kRegionMetaHeaderBytes = 4096):
//   0     magic                    u64   kRegionMetaMagic, written last
//   8     layout_version           u32   kRegionMetaLayoutVersion
//   12    strategy                 u32   shmalloc::Strategy
//   16    heap_bytes               u64   heap size asked for (data file - 4096)
//   24    block_size               u64   POOL block / BUDDY min block, else 0
//   32    quota_bytes_per_session  u64   0 = no quota
//   40    allocator_meta_offset    u64   kRegionMetaHeaderBytes, 0 for ARENA
//   48    allocator_meta_bytes     u64   from MetadataBytes(); 0 for ARENA
//   56    size_class_count         u32   SLAB classes stored below
//   60    reserved0                u32   zero
//   64    size_classes             u64[64]  SLAB size classes, ascending
//   576   histogram                u64[65]  live allocations per size bucket
//   1096  refused_allocations      u64   batches refused and rolled back
//   1104  generation               u64   bumped by every reset (authoritative)
//   1112  incarnation              u64   random, fixed at creation
//   1120  state                    u32   kMetaReady / kMetaDeleting
//   1124  pending_reset            u32   1 while a reset is being applied
//   1128  owner_offset             u64   where the OwnerStore area starts
//   1136  owner_bytes              u64   its size (0 for ARENA)
//   1144  log_offset               u64   where the UndoLog area starts
//   1152  log_bytes                u64   its size
//   1160  max_batch                u64   extents one transaction can log
//   1168  request_next             u64   next slot of `requests` to write
//   1176  allocator_param          u64   FREE_LIST max_extents asked for
//   1184  peak_base_bytes          u64   max peak before the last reset
//   1192  failed_base              u64   failures counted before resets
//   1200  huge_kind                u32   HugeKind: 0 = data file in shm_dir,
//                                        1 hugetlbfs / 2 tmpfs-thp = in
//                                        huge_dir
//   1204  reserved1                u32   zero
//   1208  reserved2                u64   zero
//   1216  requests                 RequestRecord[32]  recent Free, Adopt (and
//   ARENA
//                                        Allocate) outcomes by request id
//   2752  reserved3                to 4096
//   4096  allocator metadata       allocator_meta_bytes (non-ARENA)
//   ...   owner store              owner_bytes, 8-byte aligned
//   ...   undo log                 log_bytes, 8-byte aligned; last
//
// Invariants: file size == log_offset + log_bytes; the three areas are
// disjoint and in this order; size_class_count <= kMaxSizeClasses;
// sum(histogram) == allocator live allocations == owner records (non-ARENA:
// every allocation goes through the daemon); outside a transaction the undo
// log is empty and pending_reset == 0.
// Thread-safety: guarded by the owning Region's mutex.
#ifndef SERVER_REGION_META_H_
#define SERVER_REGION_META_H_

#include <bit>
#include <cstddef>
#include <cstdint>

namespace shmalloc::server {

inline constexpr uint64_t kRegionMetaMagic = 0x324d474552534853ULL;  // SHSREGM2
// Version 1 (no owner records, no undo log) is refused with a message.
inline constexpr uint32_t kRegionMetaLayoutVersion = 2;
inline constexpr uint64_t kRegionMetaHeaderBytes = 4096;
inline constexpr uint32_t kMaxSizeClasses = 64;
inline constexpr uint32_t kHistogramBuckets = 65;  // log2 upper bound 0..64
inline constexpr uint32_t kRequestRecords = 32;
inline constexpr uint32_t kMetaReady = 1;
inline constexpr uint32_t kMetaDeleting = 2;

// One remembered outcome: a Free (freed_bytes in `a`), an Adopt (all zero)
// or an ARENA Allocate (offset in `a`, size in `b`, count in `c`, stride in
// `d`).
struct RequestRecord {
  uint64_t session_id;    // 0 = empty slot
  uint64_t request_hash;  // hash of the request id
  uint64_t a, b, c, d;    // the outcome, as above
};
static_assert(sizeof(RequestRecord) == 48);

struct RegionMetaHeader {
  uint64_t magic;                    // kRegionMetaMagic once fully written
  uint32_t layout_version;           // kRegionMetaLayoutVersion
  uint32_t strategy;                 // a shmalloc::Strategy value
  uint64_t heap_bytes;               // heap size, bytes
  uint64_t block_size;               // POOL block / BUDDY min block, else 0
  uint64_t quota_bytes_per_session;  // 0 = no quota
  uint64_t allocator_meta_offset;    // where allocator metadata starts
  uint64_t allocator_meta_bytes;     // its size, bytes
  uint32_t size_class_count;         // entries used in size_classes
  uint32_t reserved0;                // zero
  uint64_t size_classes[kMaxSizeClasses];   // SLAB classes, bytes
  uint64_t histogram[kHistogramBuckets];    // live allocations per bucket
  uint64_t refused_allocations;             // counted in failed_allocations
  uint64_t generation;                      // bumped by every reset
  uint64_t incarnation;                     // random, fixed at creation
  uint32_t state;                           // kMetaReady / kMetaDeleting
  uint32_t pending_reset;                   // 1 while a reset is applied
  uint64_t owner_offset;                    // OwnerStore area
  uint64_t owner_bytes;                     // its size
  uint64_t log_offset;                      // UndoLog area
  uint64_t log_bytes;                       // its size
  uint64_t max_batch;                       // extents one transaction logs
  uint64_t request_next;                    // next requests slot to write
  uint64_t allocator_param;                 // FREE_LIST max_extents (0 = auto)
  uint64_t peak_base_bytes;                 // peak before the last reset
  uint64_t failed_base;                     // failures before resets
  uint32_t huge_kind;                       // HugeKind (huge_pages.h)
  uint32_t reserved1;                       // zero
  uint64_t reserved2;                       // zero
  RequestRecord requests[kRequestRecords];  // recent outcomes
  std::byte reserved3[kRegionMetaHeaderBytes - 2752];  // zero
};

static_assert(sizeof(RegionMetaHeader) == kRegionMetaHeaderBytes);
static_assert(offsetof(RegionMetaHeader, size_classes) == 64);
static_assert(offsetof(RegionMetaHeader, histogram) == 576);
static_assert(offsetof(RegionMetaHeader, refused_allocations) == 1096);
static_assert(offsetof(RegionMetaHeader, generation) == 1104);
static_assert(offsetof(RegionMetaHeader, state) == 1120);
static_assert(offsetof(RegionMetaHeader, owner_offset) == 1128);
static_assert(offsetof(RegionMetaHeader, max_batch) == 1160);
static_assert(offsetof(RegionMetaHeader, huge_kind) == 1200);
static_assert(offsetof(RegionMetaHeader, requests) == 1216);
static_assert(offsetof(RegionMetaHeader, reserved3) == 2752);
static_assert(std::endian::native == std::endian::little);

// Returns the histogram bucket of a reserved size: the smallest b with
// size <= 2^b (bucket 0 holds size 1; size 0 is put there too).
inline constexpr uint32_t SizeBucket(uint64_t size) {
  return size <= 1 ? 0 : 64 - std::countl_zero(size - 1);
}
static_assert(SizeBucket(1) == 0 && SizeBucket(2) == 1 && SizeBucket(3) == 2);
static_assert(SizeBucket(4096) == 12 && SizeBucket(4097) == 13);
static_assert(SizeBucket(~0ULL) == 64);

}  // namespace shmalloc::server

#endif  // SERVER_REGION_META_H_
