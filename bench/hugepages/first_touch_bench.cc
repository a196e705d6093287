// first_touch_bench: what the first touch of a region's memory costs per MiB
// with ordinary 4 KiB pages and with huge pages (issue 11, item 5).
//
// For each page kind available, --runs times: create a fresh ARENA
// region whose data file is --mib MiB (CreateRegion reserves the file's
// pages: fallocate), map it through the client library without
// MAP_POPULATE, write one byte in every 4 KiB of the heap, unmap and delete
// it. Reported per MiB of data file, median of the runs:
//   create:   the CreateRegion RPC (file creation and reservation; hugetlbfs
//             zeroes its pages here)
//   touch:    the first write to every 4 KiB (page faults; tmpfs zeroes its
//             pages here, on first fault)
//   populate: a second mapping of the same region with MAP_POPULATE
//             (RegionOptions::populate, the library's default), no touches
//   total:    create + touch, what a new region costs before it is used
// Kinds:
//   normal     the daemon's shm_dir under --tmpdir (/dev/shm: tmpfs, 4 KiB)
//   tmpfs-thp  a tmpfs mounted huge=always (--thp_dir, or as root a private
//              mount in a temp dir, unmounted at the end)
//   hugetlbfs  a hugetlbfs (--hugetlbfs_dir, or as root a private mount with
//              /proc/sys/vm/nr_hugepages raised for the run and restored)
// A kind that cannot run says why on stdout (no silent skip).
//
// Usage: first_touch_bench [--mib=64] [--runs=9] [--tmpdir=/dev/shm]
//                          [--thp_dir=DIR] [--hugetlbfs_dir=DIR]
#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/huge_pages.h"

ABSL_FLAG(uint64_t, mib, 64, "data file size of each region, MiB (even)");
ABSL_FLAG(int, runs, 9, "fresh regions per kind (the median is reported)");
ABSL_FLAG(std::string, tmpdir, "/dev/shm",
          "where the daemon's socket and shm_dir go (TEST_TMPDIR)");
ABSL_FLAG(std::string, thp_dir, "",
          "an existing directory on a huge=always tmpfs (default: as root, "
          "a private mount)");
ABSL_FLAG(std::string, hugetlbfs_dir, "",
          "an existing directory on a hugetlbfs (default: as root, a "
          "private mount)");

namespace {

namespace sc = ::shmalloc::client;
using shmalloc::testing::DaemonOptions;
using shmalloc::testing::DaemonProcess;
using shmalloc::testing::HugePagePool;
using shmalloc::testing::TempMount;

constexpr uint64_t kMiB = uint64_t{1} << 20;

using Clock = std::chrono::steady_clock;

double MicrosSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start)
      .count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Runs the measurement for one kind; `huge_dir` empty = ordinary pages.
void Measure(const std::string& kind, const std::string& huge_dir) {
  const uint64_t mib = absl::GetFlag(FLAGS_mib);
  const int runs = absl::GetFlag(FLAGS_runs);
  DaemonOptions options;
  options.config_text = "";
  if (!huge_dir.empty()) {
    options.extra_flags.push_back(absl::StrCat("--huge_dir=", huge_dir));
  }
  DaemonProcess daemon(options);
  if (absl::Status s = daemon.Start(); !s.ok()) {
    std::printf("kind=%s NOT RUN: daemon: %s\n", kind.c_str(),
                s.ToString().c_str());
    return;
  }
  absl::StatusOr<std::unique_ptr<sc::Client>> client =
      sc::Client::Connect({.target = daemon.target()});
  if (!client.ok()) {
    std::printf("kind=%s NOT RUN: connect: %s\n", kind.c_str(),
                client.status().ToString().c_str());
    return;
  }
  std::vector<double> create_us;
  std::vector<double> touch_us;
  std::vector<double> populate_us;
  std::vector<double> total_us;
  for (int run = 0; run < runs; ++run) {
    sc::CreateRegionOptions create;
    create.name = absl::StrCat("touch", run);
    create.strategy = sc::Strategy::kArena;  // a few bytes of metadata
    create.size_bytes = mib * kMiB - 4096;   // data file: exactly `mib` MiB
    create.huge_pages = !huge_dir.empty();
    const Clock::time_point t0 = Clock::now();
    absl::StatusOr<sc::RegionInfo> info = (*client)->CreateRegion(create);
    const double created = MicrosSince(t0);
    if (!info.ok()) {
      std::printf("kind=%s NOT RUN: CreateRegion: %s\n", kind.c_str(),
                  info.status().ToString().c_str());
      return;
    }
    double touched = 0;
    {
      absl::StatusOr<std::shared_ptr<sc::Region>> region =
          (*client)->OpenRegion(create.name, {.populate = false});
      if (!region.ok()) {
        std::printf("kind=%s NOT RUN: OpenRegion: %s\n", kind.c_str(),
                    region.status().ToString().c_str());
        return;
      }
      absl::StatusOr<std::span<std::byte>> heap =
          (*region)->Span(info->heap_begin, info->heap_end - info->heap_begin);
      if (!heap.ok()) {
        return;
      }
      volatile std::byte* p = heap->data();
      const Clock::time_point t1 = Clock::now();
      for (size_t i = 0; i < heap->size(); i += 4096) {
        p[i] = std::byte{1};
      }
      touched = MicrosSince(t1);
    }
    {
      const Clock::time_point t2 = Clock::now();
      absl::StatusOr<std::shared_ptr<sc::Region>> region =
          (*client)->OpenRegion(create.name, {.populate = true});
      populate_us.push_back(MicrosSince(t2) / static_cast<double>(mib));
    }
    if (absl::Status s = (*client)->DeleteRegion(create.name, true); !s.ok()) {
      std::printf("kind=%s DeleteRegion: %s\n", kind.c_str(),
                  s.ToString().c_str());
    }
    create_us.push_back(created / static_cast<double>(mib));
    touch_us.push_back(touched / static_cast<double>(mib));
    total_us.push_back((created + touched) / static_cast<double>(mib));
    std::printf(
        "run kind=%s run=%d create_us_per_mib=%.1f touch_us_per_mib=%.1f\n",
        kind.c_str(), run, create_us.back(), touch_us.back());
  }
  std::printf(
      "kind=%s mib=%llu runs=%d median_us_per_mib: touch=%.1f create=%.1f "
      "total=%.1f populate=%.1f\n",
      kind.c_str(), static_cast<unsigned long long>(mib), runs,
      Median(touch_us), Median(create_us), Median(total_us),
      Median(populate_us));
  client->reset();
  (void)daemon.Stop();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  setenv("TEST_TMPDIR", absl::GetFlag(FLAGS_tmpdir).c_str(), 1);
  const uint64_t mib = absl::GetFlag(FLAGS_mib);
  if (mib == 0 || mib % 2 != 0) {
    std::fprintf(stderr, "--mib must be even and > 0\n");
    return 2;
  }
  std::printf(
      "first_touch_bench: %llu MiB per region, %d runs, shm_dir "
      "under %s\n",
      static_cast<unsigned long long>(mib), absl::GetFlag(FLAGS_runs),
      absl::GetFlag(FLAGS_tmpdir).c_str());
  std::fflush(stdout);
  Measure("normal", "");

  std::string thp_dir = absl::GetFlag(FLAGS_thp_dir);
  {
    std::unique_ptr<TempMount> mnt;
    if (thp_dir.empty()) {
      mnt = std::make_unique<TempMount>(
          absl::GetFlag(FLAGS_tmpdir), "tmpfs",
          absl::StrCat("huge=always,mode=0755,size=", mib + 8, "m"));
      if (mnt->mounted()) {
        thp_dir = mnt->dir() + "/shmalloc";
      }
    }
    if (thp_dir.empty()) {
      std::printf("kind=tmpfs-thp NOT RUN: %s\n", mnt->why_not().c_str());
    } else {
      Measure("tmpfs-thp", thp_dir);
    }
  }

  std::string tlb_dir = absl::GetFlag(FLAGS_hugetlbfs_dir);
  {
    std::unique_ptr<HugePagePool> pool;
    std::unique_ptr<TempMount> mnt;
    if (tlb_dir.empty() && geteuid() == 0) {
      pool = std::make_unique<HugePagePool>(mib / 2);
      if (!pool->ok()) {
        std::printf("kind=hugetlbfs NOT RUN: %s\n", pool->why_not().c_str());
      } else {
        mnt = std::make_unique<TempMount>(absl::GetFlag(FLAGS_tmpdir),
                                          "hugetlbfs", "mode=0755");
        if (mnt->mounted()) {
          tlb_dir = mnt->dir() + "/shmalloc";
        } else {
          std::printf("kind=hugetlbfs NOT RUN: %s\n", mnt->why_not().c_str());
        }
      }
    } else if (tlb_dir.empty()) {
      std::printf(
          "kind=hugetlbfs NOT RUN: not root: mounting needs "
          "CAP_SYS_ADMIN (or pass --hugetlbfs_dir)\n");
    }
    if (!tlb_dir.empty()) {
      Measure("hugetlbfs", tlb_dir);
    }
  }
  return 0;
}
