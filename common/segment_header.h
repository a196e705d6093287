// The segment header: page 0 of every region's data file
// (<shm_dir>/shmalloc-<name>.data), shared by shmallocd and every client that
// maps the region. The heap follows it at kHeapBegin.
//
// Byte layout (little-endian; 4096 bytes):
//   0     magic            u64   kSegmentMagic ("SHMALSEG"), written last
//   8     layout_version   u32   kSegmentLayoutVersion
//   12    strategy         u32   shmalloc::Strategy
//   16    size_bytes       u64   size of the data file
//   24    heap_begin       u64   == kHeapBegin
//   32    heap_end         u64   == size_bytes
//   40    block_size       u64   POOL block size, BUDDY min block, else 0
//   48    generation       atomic u64, bumped by every ResetRegion
//   56    incarnation      u64   random per region creation (the daemon's
//                                copy in the meta file is authoritative)
//   64    name             char[64], NUL-terminated region name
//   128   reserved         to 256
//   256   arena_meta       ARENA regions only: the Arena allocator's metadata
//                          (MetaHeader + cursor on its own cache line), so
//                          clients bump-allocate on it without any RPC.
//   4096  heap
//
// Invariants: heap_begin == kHeapBegin; heap_end == size_bytes;
// heap_end - heap_begin > 0; offsets handed out lie in [heap_begin, heap_end).
// Thread-safety: every field but `generation` (and the arena cursor) is
// written by the daemon before `magic`, then read-only for clients. Clients
// can write any byte of this page: the daemon keeps its own copy of every
// field in the meta file, never decides from this one, and rewrites it from
// its copy whenever it attaches the region.
#ifndef COMMON_SEGMENT_HEADER_H_
#define COMMON_SEGMENT_HEADER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmalloc {

inline constexpr uint64_t kSegmentMagic = 0x4745534c414d4853ULL;  // "SHMALSEG"
inline constexpr uint32_t kSegmentLayoutVersion = 1;
inline constexpr uint64_t kSegmentHeaderBytes = 4096;
inline constexpr uint64_t kHeapBegin = kSegmentHeaderBytes;
inline constexpr uint64_t kArenaMetaOffset = 256;
inline constexpr uint64_t kArenaMetaBytes =
    kSegmentHeaderBytes - kArenaMetaOffset;
inline constexpr uint64_t kRegionNameBytes = 64;

struct SegmentHeader {
  uint64_t magic;                    // kSegmentMagic once fully written
  uint32_t layout_version;           // kSegmentLayoutVersion
  uint32_t strategy;                 // a shmalloc::Strategy value
  uint64_t size_bytes;               // data file size
  uint64_t heap_begin;               // == kHeapBegin
  uint64_t heap_end;                 // == size_bytes
  uint64_t block_size;               // POOL block / BUDDY min block, else 0
  std::atomic<uint64_t> generation;  // bumped by ResetRegion
  uint64_t incarnation;              // random, fixed at creation
  char name[kRegionNameBytes];       // NUL-terminated region name
  std::byte reserved1[kArenaMetaOffset - 128];  // zero
  std::byte arena_meta[kArenaMetaBytes];        // ARENA metadata, else zero
};

static_assert(sizeof(SegmentHeader) == kSegmentHeaderBytes);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, strategy) == 12);
static_assert(offsetof(SegmentHeader, size_bytes) == 16);
static_assert(offsetof(SegmentHeader, heap_begin) == 24);
static_assert(offsetof(SegmentHeader, heap_end) == 32);
static_assert(offsetof(SegmentHeader, block_size) == 40);
static_assert(offsetof(SegmentHeader, generation) == 48);
static_assert(offsetof(SegmentHeader, incarnation) == 56);
static_assert(offsetof(SegmentHeader, name) == 64);
static_assert(offsetof(SegmentHeader, arena_meta) == kArenaMetaOffset);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

}  // namespace shmalloc

#endif  // COMMON_SEGMENT_HEADER_H_
