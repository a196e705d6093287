// The allocator benchmarks' workloads, written once over any "subject".
//
// A subject wraps one allocator behind a common shape:
//   using Handle = ...;                       // pointer or offset; !h =
//   failure explicit S(const Geometry&);              // a fresh, empty
//   allocator Handle Allocate(uint64_t size);           // 16-byte aligned (the
//   malloc default) std::byte* Data(Handle);                  // where the
//   object lives void Free(Handle, uint64_t size); Footprint
//   Measure(std::span<const Handle>, ...);  // mixed-workload figures
// and optionally `void Reset()` (frees everything at once; Arena) and
// `static constexpr bool kShared` (one instance serves several threads).
//
// Every workload writes one byte into every object it allocates: offset
// allocators never touch the heap themselves, malloc does, so a comparison
// that did not touch memory would flatter the offset allocators.
//
// Workloads (times are wall-clock medians of --benchmark_repetitions runs):
//   Pair      allocate 64 B, write a byte, free it; ns per pair.
//   AllocOnly allocate 64 B and write a byte; every kAllocOnlyObjects
//             allocations the subject is Reset (amortised, and included).
//   Batch     allocate 1,000,000 x 64 B (writing each), then free them all in
//             allocation order, or Reset; counter per_obj = time per object.
//             One untimed round warms the subject up first.
//   Mixed     ~10,000 live objects of log-uniform random sizes in
//             [16 B, kMax]; each op frees a random live object and allocates
//             a new random size in its place (one op = one free + one
//             allocate). Sizes and victims come from a table pre-generated
//             with a fixed seed (printed in the context), so every subject
//             replays the same sequence and the RNG is not timed.
//   Mixed, untouched  the same without the byte written into each new
//             object in the steady state.
#ifndef BENCH_ALLOCATORS_WORKLOADS_H_
#define BENCH_ALLOCATORS_WORKLOADS_H_

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace shmalloc::bench {

inline constexpr uint64_t kObjectBytes = 64;
inline constexpr uint64_t kBatchObjects = 1'000'000;
inline constexpr uint64_t kAllocOnlyObjects = 4096;  // 256 KiB, stays in L2
inline constexpr uint64_t kMixedLive = 10'000;
inline constexpr uint64_t kMixedMin = 16;
inline constexpr uint64_t kMixedOps = 1 << 20;  // replayed cyclically

// The seed of the mixed workload's table; main() may override it from
// SHMALLOC_BENCH_SEED before any benchmark runs, and prints it.
inline uint64_t& MixedSeed() {
  static uint64_t seed = 20240601;
  return seed;
}

// What a subject must manage for one workload.
struct Geometry {
  uint64_t heap_bytes = 0;   // bytes of heap the workload may need
  uint64_t block_bytes = 0;  // fixed object size (0: mixed sizes)
  uint64_t max_objects = 0;  // most objects live at once
};

inline constexpr Geometry kPairGeometry{64 << 20, kObjectBytes, 1 << 20};
inline constexpr Geometry kBatchGeometry{64 << 20, kObjectBytes, 1 << 20};
inline constexpr Geometry kAllocOnlyGeometry{kAllocOnlyObjects * kObjectBytes,
                                             kObjectBytes, kAllocOnlyObjects};
inline constexpr Geometry kMixedGeometry{256 << 20, 0, 1 << 16};

// Figures a subject reports at the end of the mixed workload; < 0 = unknown.
struct Footprint {
  double used_bytes = -1;     // bytes reserved for the live objects
  double free_bytes = -1;     // bytes still free in a fixed-size heap
  double largest_bytes = -1;  // largest single allocation that succeeds now
};

inline void Touch(std::byte* p) { *reinterpret_cast<volatile char*>(p) = 1; }

template <class S>
concept HasReset = requires(S s) {
  s.Reset();
};

// Returns the largest n <= hi for which s.Allocate(n) succeeds (freeing it
// again), by binary search; assumes that a smaller request never fails
// where a larger one succeeds.
template <class S>
uint64_t LargestThatSucceeds(S& s, uint64_t hi) {
  uint64_t lo = 0;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo + 1) / 2;
    if (auto h = s.Allocate(mid)) {
      s.Free(h, mid);
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

template <class S>
void BM_Pair(benchmark::State& state) {
  S s(kPairGeometry);
  for (auto _ : state) {
    auto h = s.Allocate(kObjectBytes);
    if (!h) {
      state.SkipWithError("allocation failed");
      break;
    }
    Touch(s.Data(h));
    s.Free(h, kObjectBytes);
  }
}

// The pair on one instance shared by all of the benchmark's threads.
template <class S>
struct SharedInstance {
  static inline std::unique_ptr<S> instance;
  static void Setup(const benchmark::State&) {
    instance = std::make_unique<S>(kPairGeometry);
  }
  static void Teardown(const benchmark::State&) { instance.reset(); }
};

template <class S>
void BM_PairShared(benchmark::State& state) {
  S& s = *SharedInstance<S>::instance;
  for (auto _ : state) {
    auto h = s.Allocate(kObjectBytes);
    if (!h) {
      state.SkipWithError("allocation failed");
      break;
    }
    Touch(s.Data(h));
    s.Free(h, kObjectBytes);
  }
}

template <class S>
void BM_AllocOnly(benchmark::State& state) {
  S s(kAllocOnlyGeometry);
  uint64_t n = 0;
  for (auto _ : state) {
    auto h = s.Allocate(kObjectBytes);
    if (!h) {
      state.SkipWithError("allocation failed");
      break;
    }
    Touch(s.Data(h));
    if (++n == kAllocOnlyObjects) {
      s.Reset();
      n = 0;
    }
  }
}

template <class S>
void BM_Batch(benchmark::State& state) {
  S s(kBatchGeometry);
  std::vector<typename S::Handle> handles(kBatchObjects);
  auto batch = [&] {
    for (auto& h : handles) {
      h = s.Allocate(kObjectBytes);
      if (!h) return false;
      Touch(s.Data(h));
    }
    if constexpr (HasReset<S>) {
      s.Reset();
    } else {
      for (auto h : handles) s.Free(h, kObjectBytes);
    }
    return true;
  };
  // One untimed round first: every subject starts with its memory faulted
  // in (what it gives back to the OS between rounds is its own cost).
  if (!batch()) {
    state.SkipWithError("allocation failed");
    return;
  }
  for (auto _ : state) {
    if (!batch()) {
      state.SkipWithError("allocation failed");
      return;
    }
  }
  state.counters["per_obj"] = benchmark::Counter(
      kBatchObjects, benchmark::Counter::kIsIterationInvariantRate |
                         benchmark::Counter::kInvert);
}

// One step of the mixed workload: replace live[victim] by `size` bytes.
struct MixedOp {
  uint32_t victim;
  uint32_t size;
};

// Returns a log-uniform size in [kMixedMin, max]: 2^u, u uniform in
// [log2 kMixedMin, log2 max], rounded down to a whole byte.
inline uint32_t LogUniformSize(std::mt19937_64& rng, uint64_t max) {
  std::uniform_real_distribution<double> u(std::log2(double(kMixedMin)),
                                           std::log2(double(max) + 1));
  const uint64_t size = uint64_t(std::exp2(u(rng)));
  return uint32_t(std::min(std::max(size, kMixedMin), max));
}

// The pre-generated table for sizes up to `max`: the first kMixedLive entries
// prefill the live set (victim = slot), the next kMixedOps are the steady
// state.
inline const std::vector<MixedOp>& MixedTable(uint64_t max) {
  static std::map<uint64_t, std::vector<MixedOp>> tables;
  auto& t = tables[max];
  if (t.empty()) {
    std::mt19937_64 rng(MixedSeed() ^ max);
    std::uniform_int_distribution<uint32_t> victim(0, kMixedLive - 1);
    t.reserve(kMixedLive + kMixedOps);
    for (uint32_t i = 0; i < kMixedLive; ++i) {
      t.push_back({i, LogUniformSize(rng, max)});
    }
    for (uint64_t i = 0; i < kMixedOps; ++i) {
      t.push_back({victim(rng), LogUniformSize(rng, max)});
    }
  }
  return t;
}

// kTouch = false leaves out the byte written into each new object in the
// steady state: what remains is the allocator's own work (its metadata, and
// for malloc-style allocators the headers they keep in the heap).
template <class S, uint64_t kMax, bool kTouch = true>
void BM_Mixed(benchmark::State& state) {
  S s(kMixedGeometry);
  const std::vector<MixedOp>& table = MixedTable(kMax);
  std::vector<typename S::Handle> live(kMixedLive);
  std::vector<uint32_t> sizes(kMixedLive);
  for (uint32_t i = 0; i < kMixedLive; ++i) {
    live[i] = s.Allocate(table[i].size);
    if (!live[i]) {
      state.SkipWithError("prefill allocation failed");
      return;
    }
    Touch(s.Data(live[i]));
    sizes[i] = table[i].size;
  }
  const MixedOp* ops = table.data() + kMixedLive;
  uint64_t i = 0;
  for (auto _ : state) {
    const MixedOp op = ops[i];
    i = (i + 1) & (kMixedOps - 1);
    s.Free(live[op.victim], sizes[op.victim]);
    auto h = s.Allocate(op.size);
    if (!h) {
      state.SkipWithError("steady-state allocation failed");
      live[op.victim] = {};
      break;
    }
    if constexpr (kTouch) Touch(s.Data(h));
    live[op.victim] = h;
    sizes[op.victim] = op.size;
  }
  double requested = 0;
  for (uint32_t size : sizes) requested += size;
  const Footprint f = s.Measure(std::span<const typename S::Handle>(live));
  if (f.used_bytes >= 0) {
    state.counters["in_use/req"] = f.used_bytes / requested;
    state.counters["int_frag"] = 1 - requested / f.used_bytes;
  }
  if (f.free_bytes > 0 && f.largest_bytes >= 0) {
    state.counters["largest/free"] = f.largest_bytes / f.free_bytes;
    state.counters["free_MiB"] = f.free_bytes / (1 << 20);
  }
  for (uint32_t k = 0; k < kMixedLive; ++k) {
    if (live[k]) s.Free(live[k], sizes[k]);
  }
}

}  // namespace shmalloc::bench

#endif  // BENCH_ALLOCATORS_WORKLOADS_H_
