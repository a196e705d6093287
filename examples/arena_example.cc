// arena_example: the hot path. Threads bump-allocate small objects on an
// ARENA region through shmalloc::client::Arena (no RPC, no syscall per
// allocation: a thread claims a 64 KiB chunk with one atomic operation and
// bumps privately inside it), then a std::pmr::vector grows on the same
// arena through ArenaResource.
//
//   arena_example [--region=arena-demo] [--threads=4] [--objects=50000]
//                 [--region_size=16M] [--socket=PATH]
//
// The region is created when absent and reset at the start and the end (an
// ARENA region frees only as a whole).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory_resource>
#include <numeric>
#include <thread>
#include <vector>

#include "example_util.h"
#include "shmalloc/arena.h"
#include "shmalloc/client.h"
#include "shmalloc/memory_resource.h"
#include "shmalloc/region.h"

namespace {

constexpr char kUsage[] =
    "usage: arena_example [--region=arena-demo] [--threads=4] "
    "[--objects=50000] [--region_size=16M] [--socket=PATH]";

[[noreturn]] void Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "arena_example: %s: %s\n", what,
               status.ToString().c_str());
  std::exit(1);
}

struct Object {  // what each thread allocates: 32 bytes
  uint64_t thread;
  uint64_t index;
  uint64_t check;
  uint64_t pad;
};

}  // namespace

int main(int argc, char** argv) {
  auto flags = examples::ParseFlags(
      argc, argv, "region threads objects region_size socket", kUsage);
  const std::string name = examples::Flag(flags, "region", "arena-demo");
  const int threads = std::stoi(examples::Flag(flags, "threads", "4"));
  const uint64_t objects = examples::FlagBytes(flags, "objects", 50000);

  shmalloc::client::ConnectOptions options;
  options.target = examples::Flag(flags, "socket", "");
  auto client = shmalloc::client::Client::Connect(options);
  if (!client.ok()) Fail("connect", client.status());
  shmalloc::client::CreateRegionOptions create;
  create.name = name;
  create.strategy = shmalloc::client::Strategy::kArena;
  create.size_bytes = examples::FlagBytes(flags, "region_size", 16 << 20);
  if (auto r = (*client)->CreateRegion(create);
      !r.ok() && !absl::IsAlreadyExists(r.status())) {
    Fail("create region", r.status());
  }
  auto region = (*client)->OpenRegion(name);
  if (!region.ok()) Fail("open region", region.status());

  // The arena is the region's shared cursor; start from empty.
  auto arena = shmalloc::client::Arena::Create(*region);
  if (!arena.ok()) Fail("arena", arena.status());
  if (absl::Status s = (*arena)->Reset(); !s.ok()) Fail("reset", s);

  // 1. Threads allocate and fill objects, each keeping its pointers.
  std::vector<std::vector<Object*>> mine(threads);
  std::vector<double> thread_ns(threads);  // each thread's own loop time
  std::atomic<bool> go{false};
  std::atomic<uint64_t> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      mine[t].reserve(objects);
      while (!go.load(std::memory_order_acquire)) {
      }
      const auto begin = std::chrono::steady_clock::now();
      for (uint64_t i = 0; i < objects; ++i) {
        auto* o = static_cast<Object*>(
            (*arena)->TryAllocate(sizeof(Object), alignof(Object)));
        if (o == nullptr) {
          failures.fetch_add(1, std::memory_order_relaxed);
          break;
        }
        *o = {static_cast<uint64_t>(t), i, t * 1000003ull + i, 0};
        mine[t].push_back(o);
      }
      thread_ns[t] = std::chrono::duration<double, std::nano>(
                         std::chrono::steady_clock::now() - begin)
                         .count();
      (*arena)->Flush();  // retire this thread's chunk: exact figures
    });
  }
  go.store(true, std::memory_order_release);
  for (std::thread& w : workers) w.join();

  // 2. Nothing was handed out twice: every object still holds its values.
  uint64_t total = 0;
  for (int t = 0; t < threads; ++t) {
    for (uint64_t i = 0; i < mine[t].size(); ++i) {
      const Object& o = *mine[t][i];
      if (o.thread != static_cast<uint64_t>(t) || o.index != i ||
          o.check != t * 1000003ull + i) {
        std::fprintf(stderr, "arena_example: object %d/%llu overwritten\n", t,
                     static_cast<unsigned long long>(i));
        return 1;
      }
    }
    total += mine[t].size();
  }
  // Wall time of each thread's loop (it includes time descheduled when
  // there are more threads than cores).
  const double ns = std::accumulate(thread_ns.begin(), thread_ns.end(), 0.0);
  std::printf(
      "arena_example: %d threads allocated %llu objects of %zu bytes, %.1f ns "
      "per object per thread (a store into each included), %llu failed\n",
      threads, static_cast<unsigned long long>(total), sizeof(Object),
      ns / std::max<uint64_t>(total, 1),
      static_cast<unsigned long long>(failures.load()));

  // 3. A standard container in shared memory, through a pmr resource.
  shmalloc::client::ArenaResource resource(**arena);
  std::pmr::vector<uint64_t> values(&resource);
  for (uint64_t i = 0; i < 100000; ++i) values.push_back(i);
  const uint64_t sum = std::accumulate(values.begin(), values.end(), 0ull);
  auto offset = (*region)->ToOffset(values.data());
  if (!offset.ok()) Fail("the vector is not in the region", offset.status());
  std::printf(
      "arena_example: std::pmr::vector of %zu values (sum %llu) lives at "
      "offset %llu of region '%s'\n",
      values.size(), static_cast<unsigned long long>(sum),
      static_cast<unsigned long long>(*offset), name.c_str());

  const shmalloc::client::ArenaStats stats = (*arena)->Stats();
  std::printf(
      "arena_example: arena used %llu of %llu bytes in %llu chunks "
      "(%llu bytes of chunk tails left over)\n",
      static_cast<unsigned long long>(stats.used_bytes),
      static_cast<unsigned long long>(stats.capacity_bytes),
      static_cast<unsigned long long>(stats.chunks),
      static_cast<unsigned long long>(stats.leftover_bytes));

  values = std::pmr::vector<uint64_t>(&resource);  // drop it before the reset
  if (absl::Status s = (*arena)->Reset(); !s.ok()) Fail("reset", s);
  return failures.load() == 0 ? 0 : 1;
}
