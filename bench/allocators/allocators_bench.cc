// allocators_bench: shmalloc's strategies side by side with glibc, jemalloc,
// mimalloc, Boost.Interprocess, iceoryx's MemPool and a bare fetch_add, on
// the workloads of workloads.h. How to run it and the results on the
// reference machine: bench/README.md.
//
// Benchmark names are <workload>/<subject>; the mixed workloads' counters:
//   in_use/req    bytes reserved for the live objects / bytes requested
//   int_frag      1 - requested / reserved (internal fragmentation)
//   largest/free  largest allocation that still succeeds / free bytes
//                 (fixed heaps only: strategies and Boost)
// Environment: SHMALLOC_BENCH_SEED overrides the mixed workload's seed.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "bench/allocators/peers.h"
#include "bench/allocators/strategies.h"
#include "bench/allocators/workloads.h"

namespace shmalloc::bench {
namespace {

constexpr uint64_t k64K = 64 * 1024;
constexpr uint64_t k16K = 16 * 1024;

template <class S>
void Register(const std::string& name, void (*fn)(benchmark::State&)) {
  benchmark::RegisterBenchmark(name.c_str(), fn);
}

template <class S>
void RegisterPair(const std::string& subject) {
  Register<S>("pair_64B/" + subject, BM_Pair<S>);
}

template <class S>
void RegisterBatch(const std::string& subject) {
  Register<S>("batch_1M_64B/" + subject, BM_Batch<S>);
}

template <class S>
void RegisterMixed(const std::string& subject) {
  Register<S>("mixed_16B-64KiB/" + subject, BM_Mixed<S, k64K>);
}

template <class S>
void RegisterMixedUntouched(const std::string& subject) {
  Register<S>("mixed_16B-64KiB_untouched/" + subject, BM_Mixed<S, k64K, false>);
}

template <class S>
void RegisterMixed16K(const std::string& subject) {
  Register<S>("mixed_16B-16KiB/" + subject, BM_Mixed<S, k16K>);
}

template <class S>
void RegisterPairThreads(const std::string& subject) {
  benchmark::RegisterBenchmark(("pair_64B_shared/" + subject).c_str(),
                               BM_PairShared<S>)
      ->Setup(SharedInstance<S>::Setup)
      ->Teardown(SharedInstance<S>::Teardown)
      ->Threads(1)
      ->Threads(2)
      ->UseRealTime();
}

void RegisterAll() {
  // The hot path: Arena allocate vs the floor it is built on.
  Register<FetchAddFloor>("alloc_64B/fetch_add_floor",
                          BM_AllocOnly<FetchAddFloor>);
  Register<ArenaSubject>("alloc_64B/arena", BM_AllocOnly<ArenaSubject>);

  // (a) 64-byte allocate + free pair.
  RegisterPair<FetchAddFloor>("fetch_add_floor");
  RegisterPair<PoolSubject>("pool");
  RegisterPair<SlabSubject>("slab");
  RegisterPair<BuddySubject>("buddy");
  RegisterPair<FreeListSubject>("free_list");
  // The daemon's path: every Allocate / Free one undo-log transaction.
  RegisterPair<PoolLoggedSubject>("pool_logged");
  RegisterPair<FreeListLoggedSubject>("free_list_logged");
  RegisterPair<GlibcSubject>("glibc");
  RegisterPair<JemallocSubject>("jemalloc");
  RegisterPair<MimallocSubject>("mimalloc");
  RegisterPair<IceoryxSubject>("iceoryx_mempool");
  RegisterPair<BoostSubject>("boost_interprocess");

  // The pair with one allocator shared by two threads (lock-free ones).
  RegisterPairThreads<FetchAddFloor>("fetch_add_floor");
  RegisterPairThreads<PoolSubject>("pool");
  RegisterPairThreads<IceoryxSubject>("iceoryx_mempool");

  // (b) 1,000,000 x 64 B, then free all (Arena and the floor: reset).
  RegisterBatch<FetchAddFloor>("fetch_add_floor_reset");
  RegisterBatch<ArenaSubject>("arena_reset");
  RegisterBatch<PoolSubject>("pool");
  RegisterBatch<SlabSubject>("slab");
  RegisterBatch<BuddySubject>("buddy");
  RegisterBatch<FreeListSubject>("free_list");
  RegisterBatch<GlibcSubject>("glibc");
  RegisterBatch<JemallocSubject>("jemalloc");
  RegisterBatch<MimallocSubject>("mimalloc");
  RegisterBatch<IceoryxSubject>("iceoryx_mempool");
  RegisterBatch<BoostSubject>("boost_interprocess");

  // (c) random sizes, ~10,000 live, free random + allocate.
  RegisterMixed<ReuseFloor>("reuse_floor");
  RegisterMixed<FreeListReplay<k64K>>("free_list_replay");
  RegisterMixed<FreeListSubject>("free_list");
  RegisterMixed<FreeListLoggedSubject>("free_list_logged");
  RegisterMixed<BuddySubject>("buddy");
  RegisterMixed<GlibcSubject>("glibc");
  RegisterMixed<JemallocSubject>("jemalloc");
  RegisterMixed<MimallocSubject>("mimalloc");
  RegisterMixed<BoostSubject>("boost_interprocess");
  // The FreeList's time taken apart: the same workload with no byte written
  // into the new objects (free_list_replay above is the bytes alone).
  RegisterMixedUntouched<FreeListSubject>("free_list");
  RegisterMixedUntouched<GlibcSubject>("glibc");
  RegisterMixedUntouched<MimallocSubject>("mimalloc");
  RegisterMixedUntouched<BoostSubject>("boost_interprocess");
  // Slab's classes stop at 16 KiB: the same workload capped there.
  RegisterMixed16K<ReuseFloor>("reuse_floor");
  RegisterMixed16K<SlabSubject>("slab");
  RegisterMixed16K<FreeListSubject>("free_list");
  RegisterMixed16K<BuddySubject>("buddy");
  RegisterMixed16K<GlibcSubject>("glibc");
  RegisterMixed16K<JemallocSubject>("jemalloc");
  RegisterMixed16K<MimallocSubject>("mimalloc");
  RegisterMixed16K<BoostSubject>("boost_interprocess");
}

}  // namespace
}  // namespace shmalloc::bench

int main(int argc, char** argv) {
  using namespace shmalloc::bench;
  if (const char* seed = std::getenv("SHMALLOC_BENCH_SEED")) {
    MixedSeed() = std::strtoull(seed, nullptr, 0);
  }
  benchmark::AddCustomContext("mixed_seed", std::to_string(MixedSeed()));
  benchmark::AddCustomContext("mixed_sizes",
                              "log-uniform 2^U(4, log2(max+1)), ~10000 live");
  benchmark::AddCustomContext("process_malloc", GlobalMallocProvider());
  RegisterAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
