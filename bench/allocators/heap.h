// Real memory behind the benchmarks' offset allocators.
//
// shmalloc's strategies never touch the heap; the benchmarks do (one byte
// per allocated object), so the heap is a real buffer: an anonymous
// MAP_SHARED mapping (shmem-backed pages, like a /dev/shm region), populated
// and written once up front so no benchmark pays for first-touch page faults
// that the malloc peers (warmed up the same way) have long since paid. Mappings
// are cached by role and reused across the many calls Google Benchmark makes to
// one benchmark function.
//
// Thread-safety: Buffer is not thread-safe; CachedBuffer may be called from
// the benchmark's setup code only (before the timed loop).
#ifndef BENCH_ALLOCATORS_HEAP_H_
#define BENCH_ALLOCATORS_HEAP_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <span>
#include <string>

namespace shmalloc::bench {

// One anonymous MAP_SHARED|MAP_POPULATE mapping; aborts if mmap fails (a
// benchmark cannot run without its heap).
class Buffer {
 public:
  explicit Buffer(uint64_t bytes) : size_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) {
      std::perror("bench: mmap");
      std::abort();
    }
    data_ = static_cast<std::byte*>(p);
    // MAP_POPULATE maps the guest's pages, but on a VM whose memory the host
    // backs lazily (this machine: ~20 us per first touch) only a write makes
    // a page really resident. Write one byte per page, once.
    for (uint64_t i = 0; i < bytes; i += 4096) {
      reinterpret_cast<volatile char*>(data_)[i] = 0;
    }
  }
  ~Buffer() { munmap(data_, size_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  std::span<std::byte> span() const { return {data_, size_}; }

 private:
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

// Returns a mapping of at least `bytes` for `role` ("heap", "meta", ...),
// reusing the previous one when it is big enough. The contents are whatever
// the previous user left: strategies format their metadata on Create.
inline Buffer& CachedBuffer(const std::string& role, uint64_t bytes) {
  static std::map<std::string, std::unique_ptr<Buffer>> cache;
  auto& slot = cache[role];
  if (!slot || slot->size() < bytes) {
    slot.reset();  // unmap first: heaps are hundreds of MiB
    slot = std::make_unique<Buffer>(bytes);
  }
  return *slot;
}

}  // namespace shmalloc::bench

#endif  // BENCH_ALLOCATORS_HEAP_H_
