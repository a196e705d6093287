// Dependent random cache-line reads over a table of W bytes, k per op, with
// and without one byte written per op at the offsets a FreeList hands out in
// the mixed workload (replayed): what one dependent metadata read costs at a
// given metadata footprint. See README.md here.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "bench/allocators/strategies.h"

using namespace shmalloc::bench;
using Clock = std::chrono::steady_clock;

int main() {
  const std::vector<MixedOp>& table = MixedTable(64 << 10);
  FreeListSubject s(kMixedGeometry);
  std::vector<uint64_t> live(kMixedLive);
  for (uint32_t i = 0; i < kMixedLive; ++i) live[i] = s.Allocate(table[i].size);
  const MixedOp* ops = table.data() + kMixedLive;
  const uint64_t n = 4 * kMixedOps;
  std::vector<uint64_t> offsets;
  offsets.reserve(n);
  for (uint64_t k = 0; k < n; ++k) {
    const MixedOp op = ops[k & (kMixedOps - 1)];
    s.Free(live[op.victim], 0);
    live[op.victim] = s.Allocate(op.size);
    offsets.push_back(live[op.victim]);
  }
  std::byte* heap = s.Data(0);
  for (uint64_t w :
       {uint64_t{256} << 10, uint64_t{1} << 20, uint64_t{2} << 20}) {
    const uint64_t lines = w / 64;
    // One random cycle through every line of the table.
    std::vector<uint32_t> order(lines);
    for (uint32_t i = 0; i < lines; ++i) order[i] = i;
    std::mt19937 rng(1);
    std::shuffle(order.begin(), order.end(), rng);
    std::vector<uint64_t> t(lines * 8);
    for (uint64_t i = 0; i < lines; ++i) {
      t[order[i] * 8] = order[(i + 1) % lines];
    }
    for (int touch = 0; touch < 2; ++touch) {
      for (int k : {1, 2, 4, 8}) {
        uint64_t p = 0;
        const Clock::time_point start = Clock::now();
        for (uint64_t i = 0; i < n; ++i) {
          for (int j = 0; j < k; ++j) p = t[p * 8];
          if (touch) *reinterpret_cast<volatile char*>(heap + offsets[i]) = 1;
        }
        const double ns =
            std::chrono::duration<double, std::nano>(Clock::now() - start)
                .count() /
            double(n);
        // p is printed so the chase cannot be optimised away.
        std::printf(
            "table %4lu KiB, heap write %s, %d reads/op: %6.1f ns/op "
            "[%lu]\n",
            (unsigned long)(w >> 10), touch ? "yes" : "no ", k, ns,
            (unsigned long)(p & 1));
      }
    }
  }
  return 0;
}
