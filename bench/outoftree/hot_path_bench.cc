// hot_path_bench: the client library's hot paths measured the way a user's
// program links them (installed headers and library, its own compiler
// flags), against mimalloc and glibc in the same process and run.
//
//   alloc64   one 64-byte allocation + one 8-byte store into it (the store
//             links the object to the previous one, so malloc peers can be
//             freed untimed after the round). Working sets: "cache" = 512
//             objects (32 KiB) per thread per round, "large" = 262144
//             objects (16 MiB). Subjects: shmalloc Arena::TryAllocate
//             (chunked, on an ARENA region; rewound untimed between
//             rounds), mi_malloc, glibc malloc, and two floors: a shared
//             atomic fetch_add cursor and a thread-local bump pointer, each
//             over a plain buffer of the same size; and the bump pointer
//             with one acquire load of a shared word per allocation, compared
//             (what the Arena's per-call reset-epoch check costs: the load
//             makes the compiler keep the cursor in memory, review M7).
//   pair64    allocate(64) + one store + free, repeated: shmalloc
//             BlockCache::TryAllocate/Free on a POOL region (64-byte blocks)
//             vs mi_malloc/mi_free and glibc malloc/free, and the floor of
//             any offset cache: a thread-local vector of offsets, pop + push.
// Threads 1 and 2 (each thread its own loop; a round's time is the slower
// thread's). Figures: median ns per operation over the rounds, and the ratio
// to mimalloc in the same run.
//
// Usage: hot_path_bench [--quick] [--rounds=N]   (SHMALLOC_SOCKET: daemon)
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"

extern "C" {
void* mi_malloc(size_t size);
void mi_free(void* p);
}

namespace {

namespace sc = shmalloc::client;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kObject = 64;
constexpr uint64_t kCacheObjects = 512;     // 32 KiB per thread
constexpr uint64_t kLargeObjects = 262144;  // 16 MiB per thread

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "hot_path_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Die(std::string(what) + ": " + v.status().ToString());
  return *std::move(v);
}

// glibc's own malloc/free (mimalloc's library exports malloc too, and may
// have become the process's malloc): looked up in libc.so.6 itself.
struct Glibc {
  void* (*malloc)(size_t);
  void (*free)(void*);
};
Glibc LoadGlibc() {
  void* lib = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (lib == nullptr) Die("libc.so.6 not loaded");
  Glibc g;
  g.malloc = reinterpret_cast<void* (*)(size_t)>(dlsym(lib, "malloc"));
  g.free = reinterpret_cast<void (*)(void*)>(dlsym(lib, "free"));
  if (g.malloc == nullptr || g.free == nullptr) Die("dlsym libc malloc");
  return g;
}
const Glibc glibc = LoadGlibc();

// One subject of the alloc64 rows: Alloc is timed; Release (untimed, all
// threads quiescent) takes back the round's objects, a list linked through
// their first word.
struct AllocSubject {
  std::string name;
  std::function<void(int thread, void* list)> release;  // untimed
  std::function<void()> reset;                          // untimed, thread 0
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs `rounds` rounds of `objects` allocations per thread on `threads`
// threads; returns the median ns per allocation (slower thread per round).
template <typename Alloc>
double RunAlloc(const AllocSubject& s, Alloc alloc, int threads,
                uint64_t objects, int rounds) {
  std::vector<std::vector<double>> ns(threads);
  std::barrier sync(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t, alloc, objects] {
      for (int r = 0; r < rounds + 1; ++r) {  // round 0 warms up
        sync.arrive_and_wait();
        void* list = nullptr;
        const Clock::time_point start = Clock::now();
        for (uint64_t i = 0; i < objects; ++i) {
          void* p = alloc(t);
          if (p == nullptr) [[unlikely]]
            Die(s.name + ": allocation failed");
          *static_cast<void**>(p) = list;  // the one store
          list = p;
        }
        const Clock::time_point stop = Clock::now();
        if (r > 0) {
          ns[t].push_back(
              std::chrono::duration<double, std::nano>(stop - start).count() /
              static_cast<double>(objects));
        }
        sync.arrive_and_wait();
        if (s.release) s.release(t, list);
        sync.arrive_and_wait();
        if (t == 0 && s.reset) s.reset();
      }
    });
  }
  for (std::thread& th : pool) th.join();
  std::vector<double> slower(rounds);
  for (int r = 0; r < rounds; ++r) {
    for (int t = 0; t < threads; ++t) slower[r] = std::max(slower[r], ns[t][r]);
  }
  return Median(slower);
}

template <typename Pair>
double RunPair(Pair pair, int threads, uint64_t pairs, int rounds) {
  std::vector<std::vector<double>> ns(threads);
  std::barrier sync(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t, pair, pairs] {
      for (int r = 0; r < rounds + 1; ++r) {
        sync.arrive_and_wait();
        const Clock::time_point start = Clock::now();
        for (uint64_t i = 0; i < pairs; ++i) pair(i);
        const Clock::time_point stop = Clock::now();
        if (r > 0) {
          ns[t].push_back(
              std::chrono::duration<double, std::nano>(stop - start).count() /
              static_cast<double>(pairs));
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
  std::vector<double> slower(rounds);
  for (int r = 0; r < rounds; ++r) {
    for (int t = 0; t < threads; ++t) slower[r] = std::max(slower[r], ns[t][r]);
  }
  return Median(slower);
}

void FreeList(void* list, void (*release)(void*)) {
  while (list != nullptr) {
    void* next = *static_cast<void**>(list);
    release(list);
    list = next;
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int rounds = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg.rfind("--rounds=", 0) == 0) {
      rounds = std::atoi(arg.c_str() + 9);
    } else {
      Die("usage: hot_path_bench [--quick] [--rounds=N]");
    }
  }
  if (rounds <= 0) rounds = quick ? 3 : 21;
  const uint64_t pairs = quick ? 200000 : 2000000;

  std::unique_ptr<sc::Client> client =
      Check(sc::Client::Connect({}), "Connect");
  const std::string suffix = std::to_string(getpid());
  const std::string arena_name = "oot-arena-" + suffix;
  const std::string pool_name = "oot-pool-" + suffix;
  Check(client->CreateRegion({.name = arena_name,
                              .strategy = sc::Strategy::kArena,
                              .size_bytes = 96 << 20}),
        "CreateRegion arena");
  Check(client->CreateRegion({.name = pool_name,
                              .strategy = sc::Strategy::kPool,
                              .size_bytes = 16 << 20,
                              .block_size = kObject}),
        "CreateRegion pool");
  {
    std::shared_ptr<sc::Region> arena_region =
        Check(client->OpenRegion(arena_name), "OpenRegion arena");
    std::shared_ptr<sc::Region> pool_region =
        Check(client->OpenRegion(pool_name), "OpenRegion pool");
    std::unique_ptr<sc::Arena> arena =
        Check(sc::Arena::Create(arena_region), "Arena::Create");
    const sc::Arena::Marker start = arena->Mark();
    std::unique_ptr<sc::BlockCache> cache_owner =
        Check(sc::BlockCache::Create(pool_region), "BlockCache::Create");
    // Raw pointers captured by value, as a user's code would hold them.
    sc::Arena* const ap = arena.get();
    sc::BlockCache* const cache = cache_owner.get();

    // Floors over a plain buffer big enough for two threads' large set.
    const uint64_t floor_bytes = 2 * kLargeObjects * kObject;
    auto* floor = static_cast<std::byte*>(std::aligned_alloc(64, floor_bytes));
    std::memset(floor, 0, floor_bytes);
    std::atomic<uint64_t> shared_cursor{0};
    std::atomic<uint64_t> epoch_word{0};  // never changes; loaded per call
    struct alignas(64) Bump {
      uint64_t cursor = 0;
    };
    std::vector<Bump> bump(2);

    std::printf(
        "# hot_path_bench: median ns per operation over %d rounds; "
        "ratio = subject / mimalloc (same run)\n",
        rounds);
    std::printf("%-8s %-6s %-3s %-22s %9s %8s\n", "row", "set", "thr",
                "subject", "ns/op", "ratio");
    for (int threads : {1, 2}) {
      for (const auto& [set, objects] :
           {std::pair<const char*, uint64_t>{"cache", kCacheObjects},
            {"large", kLargeObjects}}) {
        const uint64_t per_thread = objects * kObject;
        AllocSubject arena_s{.name = "shmalloc Arena", .reset = [&] {
                               if (!arena->Rewind(start).ok()) Die("Rewind");
                             }};
        AllocSubject mi_s{.name = "mimalloc", .release = [](int, void* l) {
                            FreeList(l, mi_free);
                          }};
        AllocSubject glibc_s{
            .name = "glibc malloc",
            .release = [](int, void* l) { FreeList(l, glibc.free); }};
        AllocSubject fetch_s{.name = "floor: atomic fetch_add",
                             .reset = [&] { shared_cursor.store(0); }};
        AllocSubject bump_s{.name = "floor: thread-local bump", .reset = [&] {
                              for (Bump& b : bump) b.cursor = 0;
                            }};
        AllocSubject epoch_s{.name = "floor: bump + epoch load", .reset = [&] {
                               for (Bump& b : bump) b.cursor = 0;
                             }};
        const double mi = RunAlloc(
            mi_s, [](int) { return mi_malloc(kObject); }, threads, objects,
            rounds);
        const double ar = RunAlloc(
            arena_s, [ap](int) { return ap->TryAllocate(kObject); }, threads,
            objects, rounds);
        const double gl = RunAlloc(
            glibc_s, [](int) { return glibc.malloc(kObject); }, threads,
            objects, rounds);
        const double fa = RunAlloc(
            fetch_s,
            [floor, &shared_cursor](int) -> void* {
              return floor + shared_cursor.fetch_add(kObject,
                                                     std::memory_order_relaxed);
            },
            threads, objects, rounds);
        const double bu = RunAlloc(
            bump_s,
            [floor, per_thread, b = bump.data()](int t) -> void* {
              std::byte* p = floor + t * per_thread + b[t].cursor;
              b[t].cursor += kObject;
              return p;
            },
            threads, objects, rounds);
        const double be = RunAlloc(
            epoch_s,
            [floor, per_thread, b = bump.data(), &epoch_word](int t) -> void* {
              if (epoch_word.load(std::memory_order_acquire) != 0)
                  [[unlikely]] {
                return nullptr;
              }
              std::byte* p = floor + t * per_thread + b[t].cursor;
              b[t].cursor += kObject;
              return p;
            },
            threads, objects, rounds);
        for (const auto& [name, v] :
             {std::pair<const char*, double>{"shmalloc Arena", ar},
              {"mimalloc", mi},
              {"glibc malloc", gl},
              {"floor: atomic fetch_add", fa},
              {"floor: thread-local bump", bu},
              {"floor: bump + epoch load", be}}) {
          std::printf("%-8s %-6s %-3d %-22s %9.2f %8.2f\n", "alloc64", set,
                      threads, name, v, v / mi);
        }
      }
      const double mi = RunPair(
          [](uint64_t i) {
            auto* p = static_cast<uint64_t*>(mi_malloc(kObject));
            *static_cast<volatile uint64_t*>(p) = i;
            mi_free(p);
          },
          threads, pairs, rounds);
      const double bc = RunPair(
          [cache](uint64_t i) {
            void* p = cache->TryAllocate(kObject);
            if (p == nullptr) [[unlikely]]
              Die("BlockCache::TryAllocate");
            *static_cast<volatile uint64_t*>(p) = i;
            if (!cache->Free(p, kObject).ok()) [[unlikely]] {
              Die("BlockCache::Free");
            }
          },
          threads, pairs, rounds);
      const double gl = RunPair(
          [](uint64_t i) {
            auto* p = static_cast<uint64_t*>(glibc.malloc(kObject));
            *static_cast<volatile uint64_t*>(p) = i;
            glibc.free(p);
          },
          threads, pairs, rounds);
      // Floor of an offset cache: a thread's stack of offsets, pop + push,
      // with no class lookup, ownership map or generation check.
      const double st = RunPair(
          [floor](uint64_t i) {
            thread_local std::vector<uint64_t> stack = [] {
              std::vector<uint64_t> v(64);
              for (uint64_t k = 0; k < v.size(); ++k) v[k] = k * kObject;
              v.reserve(256);
              return v;
            }();
            const uint64_t off = stack.back();
            stack.pop_back();
            *reinterpret_cast<volatile uint64_t*>(floor + off) = i;
            stack.push_back(off);
          },
          threads, pairs, rounds);
      for (const auto& [name, v] :
           {std::pair<const char*, double>{"shmalloc BlockCache", bc},
            {"mimalloc", mi},
            {"glibc malloc", gl},
            {"floor: offset stack", st}}) {
        std::printf("%-8s %-6s %-3d %-22s %9.2f %8.2f\n", "pair64", "-",
                    threads, name, v, v / mi);
      }
      std::fflush(stdout);
    }
    std::free(floor);
    if (!cache->Flush().ok()) Die("BlockCache::Flush");
  }
  if (!client->DeleteRegion(arena_name, /*force=*/true).ok()) {
    Die("DeleteRegion arena");
  }
  if (!client->DeleteRegion(pool_name, /*force=*/true).ok()) {
    Die("DeleteRegion pool");
  }
  return 0;
}
