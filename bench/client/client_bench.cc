// client_bench: the client library's hot paths against a real shmallocd,
// side by side with their peers in one run (issue 4).
//
//   Arena/*          Arena::TryAllocate(32) + a one-byte store into each
//                    object; 1 and 2 threads sharing one chunked Arena on an
//                    ARENA region. Peers doing the same work: a bare
//                    std::atomic fetch_add on a MAP_SHARED cache line (the
//                    floor), glibc malloc (libc.so.6's own, through dlsym),
//                    mimalloc (mi_malloc). Allocation only; the mallocs'
//                    objects are freed after the timed loop.
//   Pair/*           allocate + free of one 64-byte block: BlockCache on a
//                    POOL region (1, 2 threads), the plain RPC pair
//                    (Region::AllocateExtents + Region::Free), iceoryx
//                    MemPool and Boost.Interprocess (bench/allocators/peers.h).
//   Handoff/*        a 1 MiB buffer from this process to a consumer process:
//                    the producer writes the first byte and sends the offset
//                    over a pipe; the consumer (forked before any gRPC
//                    thread exists, mapping the region's data file itself)
//                    turns it into a pointer, reads the first byte and sends
//                    it back. Against memcpy of 1 MiB. bytes_copied counter.
//
// The daemon is started once in main() (tests/integration/daemon_process:
// fork/exec, --ready_fd handshake, shm_dir on tmpfs) and stopped with
// SIGTERM + waitpid at the end; its exit status decides the exit code.
//
// Multi-threaded rows: Google Benchmark sums CPU time and iterations over
// threads, so the CPU column is CPU ns per operation per thread. Use the CPU
// column on a loaded machine: wall time there mostly measures the scheduler.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/allocators/peers.h"
#include "benchmark/benchmark.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "tests/integration/daemon_process.h"

namespace sc = ::shmalloc::client;
namespace sb = ::shmalloc::bench;

namespace {

constexpr uint64_t kObject = 32;  // Arena rows: bytes per object
constexpr uint64_t kBlock = 64;   // Pair rows: bytes per block
constexpr uint64_t kAllocsPerThread = 2'000'000;  // Arena rows, fixed
constexpr uint64_t kHandoffBytes = 1 << 20;

// Everything main() sets up before the benchmarks run.
struct World {
  std::unique_ptr<sc::Client> client;
  std::shared_ptr<sc::Region> arena_region;
  std::shared_ptr<sc::Region> pool_region;
  std::shared_ptr<sc::Region> handoff_region;
  std::unique_ptr<sc::Arena> arena;
  std::unique_ptr<sc::BlockCache> cache;
  int to_consumer = -1;    // pipe: offsets
  int from_consumer = -1;  // pipe: first bytes read
  pid_t consumer = -1;
};
World* world = nullptr;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "client_bench: %s failed\n", what);
    std::exit(1);
  }
}

// ------------------------------------------------------------------ Arena

void BM_Arena_ShmallocArena(benchmark::State& state) {
  sc::Arena& a = *world->arena;
  if (state.thread_index() == 0) Check(a.Reset().ok(), "Arena::Reset");
  for (auto _ : state) {
    auto* p = static_cast<volatile char*>(a.TryAllocate(kObject));
    if (p == nullptr) {
      state.SkipWithError("arena full");
      break;
    }
    *p = 1;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Arena_FetchAddFloor(benchmark::State& state) {
  static sb::FetchAddFloor floor(
      sb::Geometry{4 * kAllocsPerThread * kObject, kObject, 0});
  if (state.thread_index() == 0) floor.Reset();
  for (auto _ : state) {
    *reinterpret_cast<volatile char*>(floor.Data(floor.Allocate(kObject))) = 1;
  }
  state.SetItemsProcessed(state.iterations());
}

// malloc + store: the store links each object to the previous one (one
// store per object, as above), and the list is freed after the timed loop.
template <typename AllocFn, typename FreeFn>
void MallocRun(benchmark::State& state, AllocFn alloc, FreeFn release) {
  void* head = nullptr;
  for (auto _ : state) {
    void* p = alloc(kObject);
    *static_cast<void**>(p) = head;
    head = p;
  }
  while (head != nullptr) {
    void* next = *static_cast<void**>(head);
    release(head);
    head = next;
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Arena_GlibcMalloc(benchmark::State& state) {
  const sb::MallocTable& t = sb::MallocTableOf(sb::kGlibcLibrary);
  MallocRun(state, t.malloc, t.free);
}

void BM_Arena_Mimalloc(benchmark::State& state) {
  MallocRun(state, mi_malloc, mi_free);
}

// ------------------------------------------------------------------- Pair

void BM_Pair_BlockCache(benchmark::State& state) {
  sc::BlockCache& c = *world->cache;
  for (auto _ : state) {
    void* p = c.TryAllocate(kBlock);
    if (p == nullptr) {
      state.SkipWithError("BlockCache::TryAllocate");
      break;
    }
    benchmark::DoNotOptimize(p);
    if (!c.Free(p, kBlock).ok()) {
      state.SkipWithError("BlockCache::Free");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Pair_Rpc(benchmark::State& state) {
  sc::Region& r = *world->pool_region;
  for (auto _ : state) {
    absl::StatusOr<std::vector<sc::Extent>> e = r.AllocateExtents(kBlock, 1);
    if (!e.ok() || !r.Free(e->front().offset).ok()) {
      state.SkipWithError("RPC pair");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

template <typename Subject>
void PeerPair(benchmark::State& state) {
  static Subject subject(sb::kPairGeometry);
  for (auto _ : state) {
    auto h = subject.Allocate(kBlock);
    benchmark::DoNotOptimize(h);
    subject.Free(h, kBlock);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Pair_IceoryxMemPool(benchmark::State& state) {
  PeerPair<sb::IceoryxSubject>(state);
}
void BM_Pair_BoostInterprocess(benchmark::State& state) {
  PeerPair<sb::BoostSubject>(state);
}

// ---------------------------------------------------------------- Handoff

// The consumer process: maps the data file named by the first message, then
// for each 8-byte offset reads the first byte there and writes it back.
[[noreturn]] void ConsumerMain(int in, int out) {
  char path[4096] = {};
  uint32_t len = 0;
  if (read(in, &len, 4) != 4 || len >= sizeof(path) ||
      read(in, path, len) != ssize_t(len)) {
    _exit(2);
  }
  const int fd = open(path, O_RDWR | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) _exit(3);
  auto* base = static_cast<const volatile uint8_t*>(
      mmap(nullptr, st.st_size, PROT_READ, MAP_SHARED, fd, 0));
  if (base == MAP_FAILED) _exit(4);
  const uint8_t ack = 'A';
  if (write(out, &ack, 1) != 1) _exit(5);
  uint64_t offset = 0;
  while (read(in, &offset, 8) == 8) {
    if (offset >= uint64_t(st.st_size)) _exit(6);
    const uint8_t first = base[offset];
    if (write(out, &first, 1) != 1) _exit(7);
  }
  _exit(0);  // producer closed the pipe
}

void BM_Handoff_Offset1MiB(benchmark::State& state) {
  sc::Region& r = *world->handoff_region;
  absl::StatusOr<std::vector<sc::Extent>> e = r.AllocateExtents(
      kHandoffBytes, 1, {.alignment = 4096, .detached = false});
  Check(e.ok(), "hand-off Allocate");
  const uint64_t offset = e->front().offset;
  auto* p = static_cast<uint8_t*>(r.ToPointer(offset));
  std::memset(p, 0x5a, kHandoffBytes);  // the producer's payload, once
  uint64_t mismatches = 0;
  uint8_t tag = 0;
  for (auto _ : state) {
    p[0] = ++tag;  // producer writes ...
    Check(write(world->to_consumer, &offset, 8) == 8, "send offset");
    uint8_t seen = 0;  // ... consumer maps (once) and reads the first byte
    Check(read(world->from_consumer, &seen, 1) == 1, "consumer reply");
    mismatches += seen != tag;
  }
  Check(r.Free(offset).ok(), "hand-off Free");
  state.counters["bytes_copied"] = 0;
  state.counters["mismatches"] = double(mismatches);
  state.SetBytesProcessed(state.iterations() * kHandoffBytes);
}

void BM_Handoff_Memcpy1MiB(benchmark::State& state) {
  std::vector<uint8_t> src(kHandoffBytes, 0x5a), dst(kHandoffBytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), kHandoffBytes);
    benchmark::ClobberMemory();
  }
  state.counters["bytes_copied"] = double(kHandoffBytes);
  state.SetBytesProcessed(state.iterations() * kHandoffBytes);
}

// The hand-off's transport alone: the same pipe round trip, no shared memory.
void BM_Handoff_PipeRoundTripOnly(benchmark::State& state) {
  // Offset 0 is the segment header's first byte: always mapped.
  for (auto _ : state) {
    const uint64_t offset = 0;
    Check(write(world->to_consumer, &offset, 8) == 8, "send offset");
    uint8_t seen = 0;
    Check(read(world->from_consumer, &seen, 1) == 1, "consumer reply");
  }
}

}  // namespace

// Arena rows: a fixed count per thread, so 2 threads never run the region
// out (2 x 2M x 32 B = 128 MiB of a 256 MiB region).
#define SHMALLOC_ARENA_BENCH(fn)     \
  BENCHMARK(fn)                      \
      ->Iterations(kAllocsPerThread) \
      ->Threads(1)                   \
      ->Threads(2)                   \
      ->Repetitions(5)               \
      ->DisplayAggregatesOnly(true)
SHMALLOC_ARENA_BENCH(BM_Arena_ShmallocArena);
SHMALLOC_ARENA_BENCH(BM_Arena_FetchAddFloor);
SHMALLOC_ARENA_BENCH(BM_Arena_GlibcMalloc);
SHMALLOC_ARENA_BENCH(BM_Arena_Mimalloc);

#define SHMALLOC_PAIR_BENCH(fn) \
  BENCHMARK(fn)                 \
      ->MinTime(0.2)            \
      ->Threads(1)              \
      ->Threads(2)              \
      ->Repetitions(5)          \
      ->DisplayAggregatesOnly(true)
SHMALLOC_PAIR_BENCH(BM_Pair_BlockCache);
SHMALLOC_PAIR_BENCH(BM_Pair_IceoryxMemPool);
SHMALLOC_PAIR_BENCH(BM_Pair_BoostInterprocess);
BENCHMARK(BM_Pair_Rpc)
    ->MinTime(0.5)
    ->Threads(1)
    ->Threads(2)
    ->Repetitions(3)
    ->DisplayAggregatesOnly(true)
    ->UseRealTime();

BENCHMARK(BM_Handoff_Offset1MiB)
    ->MinTime(0.5)
    ->Repetitions(3)
    ->DisplayAggregatesOnly(true)
    ->UseRealTime();
BENCHMARK(BM_Handoff_PipeRoundTripOnly)
    ->MinTime(0.5)
    ->Repetitions(3)
    ->DisplayAggregatesOnly(true)
    ->UseRealTime();
BENCHMARK(BM_Handoff_Memcpy1MiB)
    ->MinTime(0.2)
    ->Repetitions(3)
    ->DisplayAggregatesOnly(true);

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  World w;
  world = &w;

  // The consumer first: fork before gRPC starts any thread.
  int down[2], up[2];
  Check(pipe2(down, O_CLOEXEC) == 0 && pipe2(up, O_CLOEXEC) == 0, "pipe");
  w.consumer = fork();
  if (w.consumer == 0) {
    close(down[1]);
    close(up[0]);
    ConsumerMain(down[0], up[1]);
  }
  close(down[0]);
  close(up[1]);
  w.to_consumer = down[1];
  w.from_consumer = up[0];

  // Region files on tmpfs, as deployed.
  std::string shm_dir = "/dev/shm/shmalloc-client-bench-XXXXXX";
  Check(mkdtemp(shm_dir.data()) != nullptr, "mkdtemp");
  auto daemon = std::make_unique<shmalloc::testing::DaemonProcess>(
      shmalloc::testing::DaemonOptions{
          .config_text = "", .extra_flags = {"--shm_dir=" + shm_dir}});
  Check(daemon->Start().ok(), "shmallocd start");
  auto client = sc::Client::Connect({.target = daemon->target(),
                                     .client_name = "client_bench",
                                     .shm_dir = shm_dir});
  Check(client.ok(), "Client::Connect");
  w.client = *std::move(client);
  auto make = [&](const char* name, sc::Strategy s, uint64_t size,
                  uint64_t block) {
    Check(w.client
              ->CreateRegion({.name = name,
                              .strategy = s,
                              .size_bytes = size,
                              .block_size = block})
              .ok(),
          "CreateRegion");
    auto r = w.client->OpenRegion(name);
    Check(r.ok(), "OpenRegion");
    // Write every page once: on these VMs a first write to a page costs
    // microseconds even after MAP_POPULATE.
    std::memset((*r)->base() + (*r)->heap_begin(), 0,
                (*r)->heap_end() - (*r)->heap_begin());
    return *r;
  };
  w.arena_region = make("arena", sc::Strategy::kArena, 256 << 20, 0);
  w.pool_region = make("pool", sc::Strategy::kPool, 64 << 20, kBlock);
  w.handoff_region = make("handoff", sc::Strategy::kBuddy, 8 << 20, 0);
  auto arena = sc::Arena::Create(w.arena_region);
  Check(arena.ok(), "Arena::Create");
  w.arena = *std::move(arena);
  auto cache = sc::BlockCache::Create(w.pool_region);
  Check(cache.ok(), "BlockCache::Create");
  w.cache = *std::move(cache);

  const std::string path = shm_dir + "/" + w.handoff_region->info().data_file;
  const uint32_t len = path.size();
  uint8_t ack = 0;
  Check(write(w.to_consumer, &len, 4) == 4 &&
            write(w.to_consumer, path.data(), len) == ssize_t(len) &&
            read(w.from_consumer, &ack, 1) == 1 && ack == 'A',
        "consumer start");

  benchmark::AddCustomContext("global malloc", sb::GlobalMallocProvider());
  benchmark::AddCustomContext("shmallocd pid", std::to_string(daemon->pid()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  // Stop everything this process started.
  close(w.to_consumer);
  int status = 0;
  waitpid(w.consumer, &status, 0);
  const bool consumer_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  w.cache.reset();  // drains to the daemon
  w.arena.reset();
  w.arena_region.reset();
  w.pool_region.reset();
  w.handoff_region.reset();
  for (const char* name : {"arena", "pool", "handoff"}) {
    w.client->DeleteRegion(name, /*force=*/true).IgnoreError();
  }
  w.client.reset();
  const absl::Status stopped = daemon->Stop();
  std::filesystem::remove_all(shm_dir);  // the daemon's files stay behind
  std::fprintf(stderr, "consumer exit ok: %s; shmallocd stop: %s\n",
               consumer_ok ? "yes" : "no", stopped.ToString().c_str());
  return consumer_ok && stopped.ok() ? 0 : 1;
}
