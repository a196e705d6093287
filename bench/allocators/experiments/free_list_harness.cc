// The harness of the FreeList experiments (see README.md here): the
// allocators_bench mixed workload (16 B-64 KiB, same table, same geometry),
// 8 x 2^20 ops after the prefill, timed as one block.
//
// Usage: free_list_harness touched|untouched
//   touched: one byte written into each new object, as allocators_bench.
// Prints ns per op, largest/free (end of run, and mean / minimum of one
// snapshot every 65,536 ops), the extents in use and the AnonHugePages of
// the process (for the huge_pages patch). MAXOBJ=N overrides the geometry's
// max_objects (max_extents = 2 N + 1024).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/allocators/strategies.h"

using namespace shmalloc::bench;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 2 || (std::string(argv[1]) != "touched" &&
                    std::string(argv[1]) != "untouched")) {
    std::fprintf(stderr, "usage: free_list_harness touched|untouched\n");
    return 2;
  }
  const bool touch = std::string(argv[1]) == "touched";
  const std::vector<MixedOp>& table = MixedTable(64 << 10);
  Geometry g = kMixedGeometry;
  if (const char* m = std::getenv("MAXOBJ")) g.max_objects = std::atoi(m);
  FreeListSubject s(g);
  std::vector<uint64_t> live(kMixedLive);
  for (uint32_t i = 0; i < kMixedLive; ++i) {
    live[i] = s.Allocate(table[i].size);
    Touch(s.Data(live[i]));
  }
  const MixedOp* ops = table.data() + kMixedLive;
  const uint64_t n = 8 * kMixedOps;
  double lf_sum = 0;
  double lf_min = 1;
  int lf_n = 0;
  const Clock::time_point start = Clock::now();
  for (uint64_t k = 0; k < n; ++k) {
    const MixedOp op = ops[k & (kMixedOps - 1)];
    s.Free(live[op.victim], 0);
    const uint64_t h = s.Allocate(op.size);
    if (h == 0) {
      std::fprintf(stderr, "allocation failed\n");
      return 1;
    }
    if (touch) Touch(s.Data(h));
    live[op.victim] = h;
    if ((k & 65535) == 65535) {  // O(1) Stats; ~0.1 % of the time
      const shmalloc::AllocatorStats st = s.allocator().Stats();
      const double lf = double(st.largest_free_bytes) / double(st.free_bytes);
      lf_sum += lf;
      lf_min = std::min(lf_min, lf);
      ++lf_n;
    }
  }
  const double ns =
      std::chrono::duration<double, std::nano>(Clock::now() - start).count() /
      double(n);
  const shmalloc::AllocatorStats st = s.allocator().Stats();
  const auto* c =
      reinterpret_cast<const shmalloc::free_list_internal::FreeListControl*>(
          CachedBuffer("meta", 0).data() +
          shmalloc::free_list_internal::kControlOffset);
  long huge_kb = 0;
  if (FILE* f = std::fopen("/proc/self/smaps_rollup", "r")) {
    char line[256];
    while (std::fgets(line, sizeof line, f)) {
      if (std::strncmp(line, "AnonHugePages:", 14) == 0) {
        huge_kb = std::atol(line + 14);
      }
    }
    std::fclose(f);
  }
  std::printf(
      "%s: %.1f ns/op; largest/free end %.4f, mean %.4f, min %.4f (%d "
      "snapshots); extents live %lu free %lu; AnonHugePages %ld kB\n",
      argv[1], ns, double(st.largest_free_bytes) / double(st.free_bytes),
      lf_sum / lf_n, lf_min, lf_n, (unsigned long)c->live_allocations,
      (unsigned long)c->free_extents, huge_kb);
  return 0;
}
