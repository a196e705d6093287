// pool_hammer: hammers one Pool from several threads for a while and proves,
// at the end, that no block was lost and none was handed out twice.
//
//   pool_hammer [--threads=N] [--seconds=S | --pairs=P] [--blocks=B]
//               [--hold=H] [--block_size=BYTES]
//
// Each thread repeatedly allocates up to H blocks, then frees them. A shadow
// array records each block's owner with an atomic exchange: taking a block
// whose shadow entry is not empty is a duplicate, releasing one we do not own
// is a loss of ownership. At the end every block must be free: the pool's
// free stack plus uncarved blocks must count exactly B, live must be 0, and
// CheckInvariants must pass. Exit status 0 only then.
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "allocators/pool.h"

namespace {

struct HammerFlags {
  int threads = 2;
  double seconds = 5;
  uint64_t pairs = 0;  // total over all threads; overrides --seconds
  uint64_t blocks = 64;
  uint64_t hold = 4;
  uint64_t block_size = 64;
};

bool ParseFlags(int argc, char** argv, HammerFlags& f) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      const size_t n = std::strlen(name);
      return arg.compare(0, n, name) == 0 ? arg.c_str() + n : nullptr;
    };
    if (const char* v = value("--threads=")) {
      f.threads = std::atoi(v);
    } else if (const char* v = value("--seconds=")) {
      f.seconds = std::atof(v);
    } else if (const char* v = value("--pairs=")) {
      f.pairs = std::strtoull(v, nullptr, 10);
    } else if (const char* v = value("--blocks=")) {
      f.blocks = std::strtoull(v, nullptr, 10);
    } else if (const char* v = value("--hold=")) {
      f.hold = std::strtoull(v, nullptr, 10);
    } else if (const char* v = value("--block_size=")) {
      f.block_size = std::strtoull(v, nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--threads=N] [--seconds=S | --pairs=P] "
                   "[--blocks=B] [--hold=H] [--block_size=BYTES]\n",
                   argv[0]);
      return false;
    }
  }
  return f.threads >= 1 && f.hold >= 1 && f.blocks >= 1;
}

struct alignas(64) ThreadCounts {
  uint64_t pairs = 0;
  uint64_t exhausted = 0;
  uint64_t duplicates = 0;
  uint64_t lost_ownership = 0;
  uint64_t errors = 0;
};

}  // namespace

int main(int argc, char** argv) {
  HammerFlags f;
  if (!ParseFlags(argc, argv, f)) return 2;
  std::printf(
      "pool_hammer: threads=%d %s=%g blocks=%llu hold=%llu block_size=%llu\n",
      f.threads, f.pairs ? "pairs" : "seconds",
      f.pairs ? static_cast<double>(f.pairs) : f.seconds,
      static_cast<unsigned long long>(f.blocks),
      static_cast<unsigned long long>(f.hold),
      static_cast<unsigned long long>(f.block_size));

  shmalloc::AllocatorOptions options;
  options.strategy = shmalloc::Strategy::kPool;
  options.begin = 4096;
  options.end = options.begin + f.blocks * f.block_size;
  options.block_size = f.block_size;
  absl::StatusOr<uint64_t> meta_bytes = shmalloc::Pool::MetadataBytes(options);
  if (!meta_bytes.ok()) {
    std::fprintf(stderr, "%s\n", meta_bytes.status().ToString().c_str());
    return 2;
  }
  std::vector<uint64_t> meta((*meta_bytes + 7) / 8);
  auto created = shmalloc::Pool::Create(
      std::as_writable_bytes(std::span<uint64_t>(meta)), options);
  if (!created.ok()) {
    std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
    return 2;
  }
  shmalloc::Pool& pool = **created;
  // owner[i] = thread id + 1 while block i is held, 0 otherwise.
  std::vector<std::atomic<uint32_t>> owner(f.blocks);
  std::vector<ThreadCounts> counts(f.threads);
  std::atomic<bool> stop{false};
  std::barrier start(f.threads + 1);
  const uint64_t pairs_per_thread = f.pairs ? f.pairs / f.threads : 0;

  auto worker = [&](int t) {
    ThreadCounts c;
    const uint32_t me = static_cast<uint32_t>(t) + 1;
    std::vector<uint64_t> held;
    held.reserve(f.hold);
    start.arrive_and_wait();
    while (pairs_per_thread ? c.pairs < pairs_per_thread
                            : !stop.load(std::memory_order_relaxed)) {
      for (uint64_t k = 0; k < f.hold; ++k) {
        absl::StatusOr<shmalloc::Extent> e = pool.Allocate(f.block_size, 0);
        if (!e.ok()) {
          if (e.status().code() == absl::StatusCode::kResourceExhausted) {
            ++c.exhausted;
          } else {
            ++c.errors;
          }
          break;
        }
        const uint64_t index = (e->offset - options.begin) / f.block_size;
        // relaxed: the pool's own acquire/release orders the hand-over; the
        // exchange only needs atomicity to catch a duplicate.
        if (owner[index].exchange(me, std::memory_order_relaxed) != 0) {
          ++c.duplicates;
        }
        held.push_back(e->offset);
      }
      while (!held.empty()) {
        const uint64_t offset = held.back();
        held.pop_back();
        const uint64_t index = (offset - options.begin) / f.block_size;
        if (owner[index].exchange(0, std::memory_order_relaxed) != me) {
          ++c.lost_ownership;
        }
        if (pool.Free(offset).ok()) {
          ++c.pairs;
        } else {
          ++c.errors;
        }
      }
    }
    counts[t] = c;
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < f.threads; ++t) threads.emplace_back(worker, t);
  start.arrive_and_wait();
  const auto t0 = std::chrono::steady_clock::now();
  if (!f.pairs) {
    std::this_thread::sleep_for(std::chrono::duration<double>(f.seconds));
    stop.store(true, std::memory_order_relaxed);
  }
  for (std::thread& th : threads) th.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();

  ThreadCounts total;
  for (const ThreadCounts& c : counts) {
    total.pairs += c.pairs;
    total.exhausted += c.exhausted;
    total.duplicates += c.duplicates;
    total.lost_ownership += c.lost_ownership;
    total.errors += c.errors;
  }
  const absl::StatusOr<uint64_t> free_blocks = pool.CountFreeBlocks();
  const shmalloc::AllocatorStats stats = pool.Stats();
  const absl::Status invariants = pool.CheckInvariants();
  const uint64_t lost = free_blocks.ok() ? f.blocks - *free_blocks : f.blocks;
  std::printf(
      "pool_hammer: pairs=%llu in %.2f s (%.1f ns/pair/thread, %.2f M "
      "pairs/s)\n",
      static_cast<unsigned long long>(total.pairs), elapsed,
      elapsed * 1e9 * f.threads / static_cast<double>(total.pairs),
      static_cast<double>(total.pairs) / elapsed / 1e6);
  std::printf(
      "pool_hammer: exhausted=%llu duplicates=%llu lost_ownership=%llu "
      "errors=%llu live=%llu free_blocks=%llu/%llu lost=%llu "
      "failed_allocations=%llu invariants=%s\n",
      static_cast<unsigned long long>(total.exhausted),
      static_cast<unsigned long long>(total.duplicates),
      static_cast<unsigned long long>(total.lost_ownership),
      static_cast<unsigned long long>(total.errors),
      static_cast<unsigned long long>(stats.live_allocations),
      static_cast<unsigned long long>(free_blocks.value_or(0)),
      static_cast<unsigned long long>(f.blocks),
      static_cast<unsigned long long>(lost),
      static_cast<unsigned long long>(stats.failed_allocations),
      invariants.ToString().c_str());
  const bool ok = total.duplicates == 0 && total.lost_ownership == 0 &&
                  total.errors == 0 && stats.live_allocations == 0 &&
                  lost == 0 && invariants.ok() &&
                  stats.failed_allocations == total.exhausted;
  std::printf("pool_hammer: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
