// Writes the checked-in seed corpora of tests/fuzz/corpus/: for attach_fuzz,
// valid metadata of every strategy (fresh, partly used, after frees) behind a
// selector byte; for ops_fuzz, a geometry and a deterministic operation
// sequence per strategy. Usage: make_seeds <corpus dir>. Deterministic, so
// re-running it after a layout change rewrites the same names.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "allocators/factory.h"
#include "tests/fuzz/fuzz_common.h"

namespace shmalloc::fuzz {
namespace {

bool Write(const std::string& path, const std::vector<uint8_t>& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  return std::fclose(f) == 0 && ok;
}

int Main(const std::string& dir) {
  int written = 0;
  std::mt19937_64 rng(1);
  for (int si = 0; si < 5; ++si) {
    const Strategy strategy = kStrategies[si];
    const std::string name(StrategyName(strategy));
    // Geometry bytes as DecodeOptions reads them: begin, pages, tail, param.
    const std::vector<std::vector<uint8_t>> geometries = {
        {0, 15, 0, 135}, {1, 3, 2, 140}, {0, 0, 0, 129}};
    for (size_t g = 0; g < geometries.size(); ++g) {
      Reader in(geometries[g].data(), geometries[g].size());
      const AllocatorOptions options = DecodeOptions(strategy, in);
      absl::StatusOr<uint64_t> bytes = MetadataBytes(options);
      if (!bytes.ok()) continue;
      // attach_fuzz: metadata after 0, 5 and 40 allocations (half freed).
      for (int n : {0, 5, 40}) {
        MetaBuffer meta(*bytes);
        auto a = CreateAllocator(meta.span(), options);
        if (!a.ok()) break;
        std::vector<uint64_t> live;
        for (int i = 0; i < n; ++i) {
          auto e = (*a)->Allocate(1 + rng() % 200, 0);
          if (e.ok()) live.push_back(e->offset);
        }
        for (size_t i = 0; i < live.size(); i += 2) (void)(*a)->Free(live[i]);
        std::vector<uint8_t> seed{static_cast<uint8_t>(si)};
        const auto* p = reinterpret_cast<const uint8_t*>(meta.span().data());
        seed.insert(seed.end(), p, p + *bytes);
        written += Write(dir + "/attach_fuzz/" + name + "-g" +
                             std::to_string(g) + "-n" + std::to_string(n),
                         seed);
      }
      // ops_fuzz: strategy, geometry, then 300 random operation bytes.
      std::vector<uint8_t> ops{static_cast<uint8_t>(si)};
      ops.insert(ops.end(), geometries[g].begin(), geometries[g].end());
      for (int i = 0; i < 300; ++i) ops.push_back(static_cast<uint8_t>(rng()));
      written +=
          Write(dir + "/ops_fuzz/" + name + "-g" + std::to_string(g), ops);
    }
  }
  std::printf("make_seeds: wrote %d files under %s\n", written, dir.c_str());
  return written > 0 ? 0 : 1;
}

}  // namespace
}  // namespace shmalloc::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  return shmalloc::fuzz::Main(argv[1]);
}
