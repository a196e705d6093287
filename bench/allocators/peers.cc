#include "bench/allocators/peers.h"

#include <dlfcn.h>
#include <unistd.h>

#include <boost/interprocess/managed_shared_memory.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "iceoryx_hoofs/internal/posix_wrapper/shared_memory_object/allocator.hpp"
#include "iceoryx_posh/internal/mepoo/mem_pool.hpp"

namespace shmalloc::bench {

// ---------------------------------------------------------------- mallocs

const MallocTable& MallocTableOf(const char* library) {
  static std::map<std::string, MallocTable> tables;
  auto it = tables.find(library);
  if (it != tables.end()) return it->second;
  void* lib = dlopen(library, RTLD_NOW | RTLD_NOLOAD);
  MallocTable t{};
  if (lib != nullptr) {
    t.malloc = reinterpret_cast<void* (*)(size_t)>(dlsym(lib, "malloc"));
    t.free = reinterpret_cast<void (*)(void*)>(dlsym(lib, "free"));
    t.usable_size =
        reinterpret_cast<size_t (*)(void*)>(dlsym(lib, "malloc_usable_size"));
  }
  if (t.malloc == nullptr || t.free == nullptr || t.usable_size == nullptr) {
    std::fprintf(stderr, "bench: no malloc/free/malloc_usable_size in %s\n",
                 library);
    std::abort();
  }
  return tables.emplace(library, t).first->second;
}

std::string GlobalMallocProvider() {
  Dl_info info{};
  void* fn = dlsym(RTLD_DEFAULT, "malloc");
  if (fn == nullptr || dladdr(fn, &info) == 0 || info.dli_fname == nullptr) {
    return "unknown";
  }
  std::string name = info.dli_fname;
  return name.substr(name.find_last_of('/') + 1);
}

// ------------------------------------------------------------------ boost

namespace bip = boost::interprocess;

// One /dev/shm segment per size, created once, pre-faulted, removed at exit.
struct BoostSubject::Segment {
  explicit Segment(uint64_t bytes)
      : name("shmalloc-bench-" + std::to_string(getpid()) + "-" +
             std::to_string(bytes)),
        remover(name),
        shm(bip::create_only, name.c_str(), bytes) {
    baseline_used = shm.get_size() - shm.get_free_memory();
    // Touch every page once, as the mapped heap of the offset allocators is.
    uint64_t n = shm.get_free_memory();
    void* p = nullptr;
    while (n > 0 && (p = shm.allocate(n, std::nothrow)) == nullptr) n -= 4096;
    if (p != nullptr) {
      std::memset(p, 0, n);
      shm.deallocate(p);
    }
  }
  struct Remover {
    explicit Remover(const std::string& n) : name(n) {
      bip::shared_memory_object::remove(name.c_str());
    }
    ~Remover() { bip::shared_memory_object::remove(name.c_str()); }
    std::string name;
  };
  std::string name;
  Remover remover;  // declared before shm: removes the name after unmapping
  bip::managed_shared_memory shm;
  uint64_t baseline_used = 0;
};

BoostSubject::BoostSubject(const Geometry& g) {
  // 64-byte objects cost 80 bytes in rbtree_best_fit (a 16-byte header).
  const uint64_t bytes = g.block_bytes != 0
                             ? g.max_objects * (g.block_bytes + 32) + (1 << 20)
                             : g.heap_bytes + (1 << 20);
  static std::map<uint64_t, std::unique_ptr<Segment>> segments;
  auto& slot = segments[bytes];
  if (!slot) slot = std::make_unique<Segment>(bytes);
  segment_ = slot.get();
  if (!segment_->shm.all_memory_deallocated()) {
    std::fprintf(stderr, "bench: boost segment not empty at start\n");
    std::abort();
  }
}

BoostSubject::~BoostSubject() = default;

BoostSubject::Handle BoostSubject::Allocate(uint64_t size) {
  return segment_->shm.allocate(size, std::nothrow);
}

void BoostSubject::Free(Handle h, uint64_t) { segment_->shm.deallocate(h); }

Footprint BoostSubject::Measure(std::span<const Handle>) {
  auto& shm = segment_->shm;
  Footprint f;
  f.free_bytes = double(shm.get_free_memory());
  f.used_bytes =
      double(shm.get_size() - shm.get_free_memory() - segment_->baseline_used);
  f.largest_bytes = double(LargestThatSucceeds(*this, shm.get_free_memory()));
  return f;
}

// ---------------------------------------------------------------- iceoryx

struct IceoryxSubject::Impl {
  explicit Impl(const Geometry& g)
      : chunks(static_cast<uint32_t>(g.max_objects)),
        management_buffer(CachedBuffer(
            "iox_management",
            iox::mepoo::MemPool::freeList_t::requiredIndexMemorySize(chunks) +
                4096)),
        chunk_buffer(CachedBuffer("iox_chunks", g.max_objects * g.block_bytes)),
        management(management_buffer.data(), management_buffer.size()),
        chunk_memory(chunk_buffer.data(), chunk_buffer.size()),
        pool(static_cast<uint32_t>(g.block_bytes), chunks, management,
             chunk_memory) {}
  uint32_t chunks;
  Buffer& management_buffer;
  Buffer& chunk_buffer;
  iox::posix::Allocator management;
  iox::posix::Allocator chunk_memory;
  iox::mepoo::MemPool pool;
};

IceoryxSubject::IceoryxSubject(const Geometry& g)
    : impl_(std::make_unique<Impl>(g)) {}

IceoryxSubject::~IceoryxSubject() = default;

IceoryxSubject::Handle IceoryxSubject::Allocate(uint64_t) {
  return impl_->pool.getChunk();
}

void IceoryxSubject::Free(Handle h, uint64_t) { impl_->pool.freeChunk(h); }

}  // namespace shmalloc::bench
