// The peers shmalloc's strategies are measured against, as benchmark
// subjects (see workloads.h for the subject shape).
//
// glibc, jemalloc and mimalloc live in one process: Debian's libjemalloc and
// libmimalloc both export an unprefixed malloc/free, and whichever the
// dynamic linker finds first becomes the process's malloc (main() prints
// which; mimalloc even exports __libc_malloc). So glibc and jemalloc are
// called through pointers to the malloc/free of libc.so.6 and
// libjemalloc.so.2 themselves (dlsym on each library's handle), mimalloc
// through mi_malloc/mi_free.
//
// Boost.Interprocess is a real managed_shared_memory segment in /dev/shm
// (rbtree_best_fit, with its interprocess mutex), created once per size and
// pre-faulted. iceoryx is iox::mepoo::MemPool over a posix::Allocator (its
// bump allocator) on plain mapped memory: fixed 64-byte chunks only.
//
// Thread-safety: as the wrapped allocator (Boost and MemPool are shared by
// all threads; the mallocs have per-thread caches).
#ifndef BENCH_ALLOCATORS_PEERS_H_
#define BENCH_ALLOCATORS_PEERS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <utility>

#include "bench/allocators/heap.h"
#include "bench/allocators/workloads.h"

extern "C" {
void* mi_malloc(size_t size);  // mimalloc's own names
void mi_free(void* p);
size_t mi_usable_size(const void* p);
}

namespace shmalloc::bench {

// ---------------------------------------------------------------- mallocs

// One malloc implementation's entry points, looked up with dlsym in its own
// shared object, so they are that library's whoever owns `malloc`.
struct MallocTable {
  void* (*malloc)(size_t);
  void (*free)(void*);
  size_t (*usable_size)(void*);
};

// Returns the table of `library` ("libc.so.6", "libjemalloc.so.2"), which
// must already be loaded; aborts otherwise.
const MallocTable& MallocTableOf(const char* library);

// A malloc called through its table. `kLibrary` names the shared object.
template <const char* kLibrary>
class DlMallocSubject {
 public:
  using Handle = void*;
  explicit DlMallocSubject(const Geometry&) : t_(MallocTableOf(kLibrary)) {}
  Handle Allocate(uint64_t size) { return t_.malloc(size); }
  std::byte* Data(Handle h) { return static_cast<std::byte*>(h); }
  void Free(Handle h, uint64_t) { t_.free(h); }
  // used = sum of the library's malloc_usable_size.
  Footprint Measure(std::span<const Handle> live) {
    Footprint f;
    f.used_bytes = 0;
    for (Handle h : live) f.used_bytes += double(t_.usable_size(h));
    return f;
  }

 private:
  const MallocTable& t_;
};

inline constexpr char kGlibcLibrary[] = "libc.so.6";
inline constexpr char kJemallocLibrary[] = "libjemalloc.so.2";
// glibc 2.36's ptmalloc (tcache on).
using GlibcSubject = DlMallocSubject<kGlibcLibrary>;
// jemalloc 5.3's malloc/free (their fast paths; mallocx/dallocx are slower).
using JemallocSubject = DlMallocSubject<kJemallocLibrary>;

// mimalloc 2.0 through mi_malloc/mi_free (exported under these names only
// by mimalloc, so called directly).
class MimallocSubject {
 public:
  using Handle = void*;
  explicit MimallocSubject(const Geometry&) {}
  Handle Allocate(uint64_t size) { return mi_malloc(size); }
  std::byte* Data(Handle h) { return static_cast<std::byte*>(h); }
  void Free(Handle h, uint64_t) { mi_free(h); }
  // used = sum of mi_usable_size.
  Footprint Measure(std::span<const Handle> live) {
    Footprint f;
    f.used_bytes = 0;
    for (Handle h : live) f.used_bytes += double(mi_usable_size(h));
    return f;
  }
};

// Returns the file name of the library that provides the process's `malloc`.
std::string GlobalMallocProvider();

// ---------------------------------------------------------- shared memory

// boost::interprocess::managed_shared_memory (rbtree_best_fit + mutex).
class BoostSubject {
 public:
  using Handle = void*;
  explicit BoostSubject(const Geometry& g);
  ~BoostSubject();
  Handle Allocate(uint64_t size);
  std::byte* Data(Handle h) { return static_cast<std::byte*>(h); }
  void Free(Handle h, uint64_t size);
  // used = segment bytes in use beyond the empty segment's own overhead.
  Footprint Measure(std::span<const Handle> live);

  struct Segment;

 private:
  Segment* segment_;
};

// iceoryx 2.0.3 iox::mepoo::MemPool: fixed chunks of Geometry::block_bytes.
class IceoryxSubject {
 public:
  using Handle = void*;
  explicit IceoryxSubject(const Geometry& g);
  ~IceoryxSubject();
  Handle Allocate(uint64_t size);
  std::byte* Data(Handle h) { return static_cast<std::byte*>(h); }
  void Free(Handle h, uint64_t size);
  Footprint Measure(std::span<const Handle>) { return {}; }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// ------------------------------------------------------------------ floor

// The floor: one bare std::atomic<uint64_t> cursor on its own cache line of
// a MAP_SHARED page. Allocate = fetch_add(size), Free = fetch_sub(size)
// (so a pair costs two atomic read-modify-writes, the least any shared
// allocator can do), Reset = store(0). Objects live in a real heap.
class FetchAddFloor {
 public:
  using Handle = uint64_t;
  static constexpr uint64_t kBegin = 4096;  // offset 0 is never handed out
  explicit FetchAddFloor(const Geometry& g)
      : cursor_(new (CachedBuffer("floor", 4096).data())
                    std::atomic<uint64_t>(kBegin)),
        heap_(CachedBuffer("heap", kBegin + g.heap_bytes).data()) {}
  Handle Allocate(uint64_t size) {
    return cursor_->fetch_add(size, std::memory_order_relaxed);
  }
  std::byte* Data(Handle h) { return heap_ + h; }
  void Free(Handle, uint64_t size) {
    cursor_->fetch_sub(size, std::memory_order_relaxed);
  }
  void Reset() { cursor_->store(kBegin, std::memory_order_relaxed); }
  Footprint Measure(std::span<const Handle>) { return {}; }

 private:
  std::atomic<uint64_t>* cursor_;
  std::byte* heap_;
};

// The mixed workload's floor; not an allocator. Allocate hands back the
// address the last Free released (LIFO, whatever its size; a bump pointer
// when nothing was freed), so it writes exactly where an allocator that
// reuses the victim's space in place would: what remains is the loop, the
// table and the byte written into a random one of ~10,000 objects spread
// over ~80 MiB (a cache and TLB miss). Footprint figures are meaningless.
class ReuseFloor {
 public:
  using Handle = uint64_t;
  static constexpr uint64_t kBegin = 4096;
  explicit ReuseFloor(const Geometry& g)
      : heap_(CachedBuffer("heap", kBegin + g.heap_bytes).data()),
        end_(kBegin + g.heap_bytes) {}
  Handle Allocate(uint64_t size) {
    if (last_freed_ != 0) return std::exchange(last_freed_, 0);
    if (end_ - cursor_ < size) return 0;
    return std::exchange(cursor_, cursor_ + AlignUp16(size));
  }
  std::byte* Data(Handle h) { return heap_ + h; }
  void Free(Handle h, uint64_t) { last_freed_ = h; }
  Footprint Measure(std::span<const Handle>) { return {}; }

 private:
  static uint64_t AlignUp16(uint64_t x) { return (x + 15) & ~uint64_t{15}; }
  std::byte* heap_;
  uint64_t end_;
  uint64_t cursor_ = kBegin;
  uint64_t last_freed_ = 0;
};

}  // namespace shmalloc::bench

#endif  // BENCH_ALLOCATORS_PEERS_H_
