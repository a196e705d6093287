// The head of a region's meta file (<shm_dir>/shmalloc-NAME.meta, mode 0600,
// read and written by shmallocd alone): the region's geometry as it was
// created, its quota, and figures the allocator does not keep (the size
// histogram), followed by the allocator's metadata (absent for ARENA regions,
// whose allocator metadata lives in the data file's SegmentHeader::arena_meta
// so clients can bump-allocate on it).
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
//   1096  refused_allocations      u64   batches refused for lack of space
//                                        before the allocator was asked
//   1104  reserved                 to 4096
//   4096  allocator metadata       allocator_meta_bytes (non-ARENA)
//
// Invariants: file size == allocator_meta_offset + allocator_meta_bytes (or
// kRegionMetaHeaderBytes for ARENA); size_class_count <= kMaxSizeClasses;
// sum(histogram) == allocator live allocations (non-ARENA: every allocation
// goes through the daemon; ARENA keeps no histogram, clients bump directly).
// Thread-safety: guarded by the owning Region's mutex.
#ifndef SERVER_REGION_META_H_
#define SERVER_REGION_META_H_

#include <bit>
#include <cstddef>
#include <cstdint>

namespace shmalloc::server {

inline constexpr uint64_t kRegionMetaMagic = 0x314d474552534853ULL;  // SHSREGM1
inline constexpr uint32_t kRegionMetaLayoutVersion = 1;
inline constexpr uint64_t kRegionMetaHeaderBytes = 4096;
inline constexpr uint32_t kMaxSizeClasses = 64;
inline constexpr uint32_t kHistogramBuckets = 65;  // log2 upper bound 0..64

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
  uint64_t size_classes[kMaxSizeClasses];  // SLAB classes, bytes
  uint64_t histogram[kHistogramBuckets];   // live allocations per bucket
  uint64_t refused_allocations;            // counted in failed_allocations
  std::byte reserved1[kRegionMetaHeaderBytes - 1104];  // zero
};

static_assert(sizeof(RegionMetaHeader) == kRegionMetaHeaderBytes);
static_assert(offsetof(RegionMetaHeader, size_classes) == 64);
static_assert(offsetof(RegionMetaHeader, histogram) == 576);
static_assert(offsetof(RegionMetaHeader, refused_allocations) == 1096);
static_assert(offsetof(RegionMetaHeader, reserved1) == 1104);

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
