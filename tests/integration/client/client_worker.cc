// client_worker: the other process of the client integration tests. Talks to
// the test on stdin/stdout, one line per message.
//
//   client_worker produce TARGET REGION COUNT SEED
//       Allocates COUNT detached buffers of varied sizes, fills each with the
//       pattern of its index, prints "OFFSET SIZE SEED" per buffer, then
//       "done".
//   client_worker arena TARGET REGION MODE THREADS ITERS ARENA_OFFSET
//       MODE is direct or chunked; ARENA_OFFSET 0 = the region's own cursor.
//       Prints "ready", waits for "go", then THREADS threads each allocate
//       ITERS objects (sizes multiples of 16), fill and later verify them.
//       Prints "ok SUM_SIZES CLAIMED" or "fail WHY".
//   client_worker cache TARGET REGION THREADS ITERS EXIT
//       THREADS threads allocate and free through one BlockCache; EXIT clean
//       frees everything and destroys the cache, then prints "ok FROM TO"
//       (blocks from / to the daemon); EXIT hold prints "holding N" and
//       waits for stdin to close (to be SIGKILLed).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "shmalloc/arena.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "tests/integration/client/child_process.h"

namespace {

using namespace shmalloc::client;  // NOLINT: a test program

[[noreturn]] void Fail(const std::string& why) {
  std::cout << "fail " << why << std::endl;
  std::exit(1);
}

template <typename T>
T Check(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) Fail(absl::StrCat(what, ": ", v.status().ToString()));
  return *std::move(v);
}

std::shared_ptr<Region> Open(const std::string& target,
                             const std::string& region,
                             std::unique_ptr<Client>& client) {
  client = Check(Client::Connect({.target = target}), "Connect");
  return Check(client->OpenRegion(region), "OpenRegion");
}

// Size of buffer i of the hand-off: mostly small, some large.
uint64_t HandoffSize(std::mt19937_64& rng, int i) {
  if (i % 97 == 0) return 64 * 1024 + rng() % (192 * 1024);
  return 1 + rng() % 4096;
}

int Produce(char** argv) {
  std::unique_ptr<Client> client;
  std::shared_ptr<Region> region = Open(argv[2], argv[3], client);
  const int count = std::atoi(argv[4]);
  std::mt19937_64 rng(std::strtoull(argv[5], nullptr, 10));
  for (int i = 0; i < count; ++i) {
    const uint64_t size = HandoffSize(rng, i);
    Allocation a =
        Check(region->Allocate(size, {.detached = true}), "Allocate");
    shmalloc::testing::FillPattern(a.data(), size, i);
    std::cout << a.offset() << " " << size << " " << i << "\n";
    if (i % 64 == 0) std::cout.flush();
  }
  std::cout << "done" << std::endl;
  return 0;
}

int RunArena(char** argv) {
  std::unique_ptr<Client> client;
  std::shared_ptr<Region> region = Open(argv[2], argv[3], client);
  ArenaOptions options;
  options.mode = std::string(argv[4]) == "direct"
                     ? ArenaOptions::Mode::kDirect
                     : ArenaOptions::Mode::kChunked;
  const int threads = std::atoi(argv[5]);
  const int iters = std::atoi(argv[6]);
  const uint64_t offset = std::strtoull(argv[7], nullptr, 10);
  std::unique_ptr<Arena> arena =
      offset == 0 ? Check(Arena::Create(region, options), "Arena::Create")
                  : Check(Arena::Open(region, offset, options), "Arena::Open");
  std::cout << "ready" << std::endl;
  std::string go;
  if (!std::getline(std::cin, go) || go != "go") Fail("no go");
  std::vector<uint64_t> sums(threads, 0);
  std::vector<std::string> errors(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(getpid() * 1000 + t);
      std::vector<std::pair<void*, uint64_t>> mine;
      for (int i = 0; i < iters; ++i) {
        const uint64_t size = 16 * (1 + rng() % 32);
        void* p = arena->TryAllocate(size, 16);
        if (p == nullptr) {
          errors[t] = "exhausted";
          break;
        }
        const uint64_t seed =
            (uint64_t(getpid()) << 40) ^ (uint64_t(t) << 32) ^ i;
        shmalloc::testing::FillPattern(p, size, seed);
        mine.emplace_back(p, size);
        sums[t] += size;
      }
      for (size_t i = 0; i < mine.size() && errors[t].empty(); ++i) {
        const uint64_t seed =
            (uint64_t(getpid()) << 40) ^ (uint64_t(t) << 32) ^ i;
        if (shmalloc::testing::FindPatternMismatch(mine[i].first,
                                                   mine[i].second, seed) >= 0) {
          errors[t] = absl::StrCat("overwritten allocation ", i);
        }
      }
      arena->Flush();
    });
  }
  for (std::thread& w : workers) w.join();
  uint64_t sum = 0;
  for (int t = 0; t < threads; ++t) {
    if (!errors[t].empty()) Fail(errors[t]);
    sum += sums[t];
  }
  std::cout << "ok " << sum << " " << arena->Stats().claimed_bytes << std::endl;
  return 0;
}

int RunCache(char** argv) {
  std::unique_ptr<Client> client;
  std::shared_ptr<Region> region = Open(argv[2], argv[3], client);
  const int threads = std::atoi(argv[4]);
  const int iters = std::atoi(argv[5]);
  const bool clean = std::string(argv[6]) == "clean";
  std::unique_ptr<BlockCache> cache =
      Check(BlockCache::Create(
                region,
                {.batch = 32, .thread_capacity = 64, .central_capacity = 128}),
            "BlockCache::Create");
  const uint64_t block = region->info().block_size;
  std::vector<std::vector<uint64_t>> held(threads);
  std::vector<std::string> errors(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < iters && errors[t].empty(); ++i) {
        if (held[t].size() < 200 && (held[t].empty() || rng() % 2 == 0)) {
          absl::StatusOr<uint64_t> b = cache->Allocate(block);
          if (!b.ok()) {
            errors[t] = b.status().ToString();
            break;
          }
          shmalloc::testing::FillPattern(region->ToPointer(*b), block, *b);
          held[t].push_back(*b);
        } else {
          const size_t k = rng() % held[t].size();
          const uint64_t b = held[t][k];
          if (shmalloc::testing::FindPatternMismatch(region->ToPointer(b),
                                                     block, b) >= 0) {
            errors[t] = absl::StrCat("block ", b, " overwritten");
          }
          held[t][k] = held[t].back();
          held[t].pop_back();
          absl::Status s = cache->Free(b, block);
          if (!s.ok()) errors[t] = s.ToString();
        }
      }
      if (clean) {
        for (uint64_t b : held[t]) {
          absl::Status s = cache->Free(b, block);
          if (!s.ok()) errors[t] = s.ToString();
        }
        held[t].clear();
      }
    });
  }
  for (std::thread& w : workers) w.join();
  for (const std::string& e : errors) {
    if (!e.empty()) Fail(e);
  }
  if (clean) {
    absl::Status s = cache->Flush();
    if (!s.ok()) Fail(s.ToString());
    BlockCacheStats stats = cache->Stats();
    cache.reset();
    std::cout << "ok " << stats.blocks_from_daemon << " "
              << stats.blocks_to_daemon << std::endl;
    return 0;
  }
  uint64_t n = 0;
  for (auto& h : held) n += h.size();
  std::cout << "holding " << n << " " << cache->Stats().cached_blocks
            << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "produce" && argc == 6) return Produce(argv);
  if (mode == "arena" && argc == 8) return RunArena(argv);
  if (mode == "cache" && argc == 7) return RunCache(argv);
  std::cerr << "usage: see client_worker.cc\n";
  return 2;
}
