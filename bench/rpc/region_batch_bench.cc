// region_batch_bench: the daemon's own cost of a batch, without gRPC.
//
// Creates one region in a temporary directory on tmpfs (Region::Create, the
// daemon's code: undo log, owner records, histogram) and times, for each
// strategy given, rounds of Region::Allocate(count = --batch, one session,
// optional request id) followed by Region::Free of the offsets, each one
// transaction as in shmallocd. Reports the thread's CPU time per offset
// allocated and freed (CLOCK_THREAD_CPUTIME_ID, so a loaded machine changes
// it less than wall time), median of --repetitions runs of --rounds rounds.
// Compare with rpc_load's "srv ns/off": the rest is gRPC and protobuf.
//
// Not thread-safe; single-threaded by design.
#include <time.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "server/region.h"
#include "shmalloc/v1/shmalloc.pb.h"

ABSL_FLAG(uint32_t, batch, 1000, "Extents per Allocate (and per Free)");
ABSL_FLAG(uint32_t, rounds, 200, "Allocate+Free rounds per repetition");
ABSL_FLAG(uint32_t, repetitions, 5, "Repetitions (the median is reported)");
ABSL_FLAG(std::vector<std::string>, strategies,
          std::vector<std::string>({"pool", "buddy", "slab", "free_list"}),
          "Strategies to run");
ABSL_FLAG(bool, request_ids, false, "Give every Allocate and Free an id");

namespace {

namespace v1 = ::shmalloc::v1;
using ::shmalloc::server::AllocateArgs;
using ::shmalloc::server::FreeArgs;
using ::shmalloc::server::Region;

double ThreadCpuNs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

v1::Strategy StrategyOf(const std::string& name) {
  if (name == "pool") {
    return v1::STRATEGY_POOL;
  }
  if (name == "buddy") {
    return v1::STRATEGY_BUDDY;
  }
  if (name == "slab") {
    return v1::STRATEGY_SLAB;
  }
  if (name == "free_list") {
    return v1::STRATEGY_FREE_LIST;
  }
  return v1::STRATEGY_UNSPECIFIED;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const uint32_t batch = absl::GetFlag(FLAGS_batch);
  const uint32_t rounds = absl::GetFlag(FLAGS_rounds);
  const uint32_t reps = std::max<uint32_t>(1, absl::GetFlag(FLAGS_repetitions));
  const bool ids = absl::GetFlag(FLAGS_request_ids);
  std::string dir = "/dev/shm/shmalloc-region-batch-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  std::printf(
      "region_batch_bench: batch %u, %u rounds x %u repetitions, "
      "request ids %s; CPU ns per offset allocated and freed\n",
      batch, rounds, reps, ids ? "on" : "off");
  std::printf("%-10s %10s %10s %10s\n", "strategy", "median", "min", "max");
  int status = 0;
  uint64_t next_id = 1;
  for (const std::string& name : absl::GetFlag(FLAGS_strategies)) {
    const v1::Strategy strategy = StrategyOf(name);
    if (strategy == v1::STRATEGY_UNSPECIFIED) {
      std::fprintf(stderr, "unknown strategy %s\n", name.c_str());
      return 2;
    }
    v1::CreateRegionRequest create;
    create.set_name("bench-" + name);
    create.set_strategy(strategy);
    create.set_size_bytes(uint64_t{64} << 20);
    if (strategy == v1::STRATEGY_POOL) {
      create.set_block_size(64);
    }
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Create(dir, create);
    if (!region.ok()) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(),
                   region.status().ToString().c_str());
      return 1;
    }
    std::vector<double> per_offset;
    for (uint32_t rep = 0; rep < reps && status == 0; ++rep) {
      const double t0 = ThreadCpuNs();
      for (uint32_t r = 0; r < rounds; ++r) {
        AllocateArgs args;
        args.session_id = 7;
        args.size = 64;
        args.count = batch;
        if (ids) {
          args.request_hash = next_id++;
        }
        absl::StatusOr<shmalloc::server::AllocateResult> a =
            (*region)->Allocate(args, [] { return true; });
        if (!a.ok()) {
          std::fprintf(stderr, "%s: Allocate: %s\n", name.c_str(),
                       a.status().ToString().c_str());
          status = 1;
          break;
        }
        std::vector<uint64_t> offsets;
        offsets.reserve(a->extents.size());
        for (const auto& e : a->extents) {
          offsets.push_back(e.offset);
        }
        FreeArgs free_args;
        free_args.session_id = 7;
        if (ids) {
          free_args.request_hash = next_id++;
        }
        absl::StatusOr<uint64_t> freed = (*region)->Free(offsets, free_args);
        if (!freed.ok()) {
          std::fprintf(stderr, "%s: Free: %s\n", name.c_str(),
                       freed.status().ToString().c_str());
          status = 1;
          break;
        }
      }
      per_offset.push_back((ThreadCpuNs() - t0) /
                           (static_cast<double>(rounds) * batch));
    }
    std::sort(per_offset.begin(), per_offset.end());
    if (!per_offset.empty()) {
      std::printf("%-10s %10.1f %10.1f %10.1f\n", name.c_str(),
                  per_offset[per_offset.size() / 2], per_offset.front(),
                  per_offset.back());
    }
    region->reset();  // the directory is removed below
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return status;
}
