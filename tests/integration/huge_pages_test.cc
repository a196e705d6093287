// Huge-page regions (CreateRegionRequest.huge_pages, shmallocd --huge_dir)
// against a real daemon, real mounts and the client library's mapping.
//
// Always: a daemon without --huge_dir answers FAILED_PRECONDITION with a
// message saying what to mount and configure, and nothing changes; a
// --huge_dir that offers no huge pages stops the daemon at start.
// As root (CI): a private tmpfs mounted huge=always, and a hugetlbfs (with
// /proc/sys/vm/nr_hugepages raised for the test and restored), each in a
// temp dir: create a huge-page region, allocate 2 MiB at 2 MiB alignment,
// write through the client mapping, check in /proc/self/smaps that the
// mapping really uses huge pages, restart the daemon and read the bytes back
// through a new client, delete the region, unmount. Each test prints which
// paths ran; without root (or where mount is refused) the mount paths print
// why they did not run.
#include "tests/testing/huge_pages.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shmalloc/allocation.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

namespace sc = ::shmalloc::client;
using ::testing::HasSubstr;

constexpr uint64_t kHuge = uint64_t{2} << 20;

void Report(const std::string& line) {
  std::cout << "[huge_pages_test] " << line << std::endl;
}

std::string MakeTempDir() {
  std::string pattern = ::testing::TempDir() + "/huge_pages_test.XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    return "";
  }
  // The daemon reports its --huge_dir resolved (Region.data_dir).
  char resolved[PATH_MAX];
  return realpath(pattern.c_str(), resolved) != nullptr ? resolved : pattern;
}

// The smaps fields (in kB) of the mapping that contains `address`.
std::vector<std::pair<std::string, uint64_t>> SmapsOf(const void* address) {
  const auto target = reinterpret_cast<uintptr_t>(address);
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  std::vector<std::pair<std::string, uint64_t>> fields;
  while (std::getline(in, line)) {
    uintptr_t begin = 0;
    uintptr_t end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &begin, &end) == 2 &&
        line.find(':') > line.find(' ')) {
      if (inside) {
        break;
      }
      inside = begin <= target && target < end;
      continue;
    }
    if (!inside) {
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    std::istringstream rest(line.substr(colon + 1));
    uint64_t value = 0;
    if (rest >> value) {
      fields.emplace_back(line.substr(0, colon), value);
    }
  }
  return fields;
}

uint64_t Field(const std::vector<std::pair<std::string, uint64_t>>& fields,
               const std::string& name) {
  for (const auto& [key, value] : fields) {
    if (key == name) {
      return value;
    }
  }
  return 0;
}

TEST(HugePagesTest, WithoutHugeDirIsFailedPreconditionAndChangesNothing) {
  Report("path: no --huge_dir (runs everywhere)");
  DaemonProcess daemon;
  ASSERT_THAT(daemon.Start(), IsOk());
  const std::vector<std::string> files_before = daemon.ShmDirFiles();
  for (v1::HugePages asked : {v1::HUGE_PAGES_REQUIRED, v1::HUGE_PAGES_HUGETLBFS,
                              v1::HUGE_PAGES_TMPFS_THP}) {
    v1::CreateRegionRequest request;
    request.set_name("huge");
    request.set_strategy(v1::STRATEGY_FREE_LIST);
    request.set_size_bytes(4 << 20);
    request.set_huge_pages(asked);
    v1::Region region;
    grpc::ClientContext context;
    const absl::Status s =
        ToAbsl(daemon.stub().CreateRegion(&context, request, &region));
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(std::string(s.message()), HasSubstr("--huge_dir"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("mount -t hugetlbfs"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("huge=always"));
  }
  {
    v1::CreateRegionRequest request;
    request.set_name("huge");
    request.set_strategy(v1::STRATEGY_FREE_LIST);
    request.set_size_bytes(4 << 20);
    request.set_huge_pages(static_cast<v1::HugePages>(99));
    v1::Region region;
    grpc::ClientContext context;
    EXPECT_THAT(ToAbsl(daemon.stub().CreateRegion(&context, request, &region)),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  v1::ListRegionsResponse list;
  grpc::ClientContext context;
  ASSERT_TRUE(daemon.stub()
                  .ListRegions(&context, v1::ListRegionsRequest(), &list)
                  .ok());
  EXPECT_EQ(list.regions_size(), 0);
  EXPECT_EQ(daemon.ShmDirFiles(), files_before);

  // An ordinary region says so.
  v1::CreateRegionRequest plain;
  plain.set_name("plain");
  plain.set_strategy(v1::STRATEGY_ARENA);
  plain.set_size_bytes(1 << 20);
  v1::Region region;
  grpc::ClientContext create;
  ASSERT_TRUE(daemon.stub().CreateRegion(&create, plain, &region).ok());
  EXPECT_EQ(region.huge_pages(), v1::HUGE_PAGES_NONE);
  EXPECT_EQ(region.data_dir(), "");
  ASSERT_THAT(daemon.Stop(), IsOk());
}

TEST(HugePagesTest, HugeDirWithoutHugePagesStopsTheDaemonAtStart) {
  Report("path: --huge_dir on a file system without huge pages");
  const std::string plain = MakeTempDir();
  ASSERT_FALSE(plain.empty());
  DaemonProcess daemon(
      {.config_text = "",
       .extra_flags = {absl::StrCat("--huge_dir=", plain, "/d")}});
  EXPECT_FALSE(daemon.Start().ok());
  rmdir(absl::StrCat(plain, "/d").c_str());
  rmdir(plain.c_str());
}

// Creates a huge-page region through the client library on a daemon whose
// --huge_dir is in `mnt`, checks the pages, restarts, reads back, deletes.
void ExerciseHugeRegion(const TempMount& mnt, v1::HugePages kind) {
  const std::string huge_dir = absl::StrCat(mnt.dir(), "/shmalloc");
  // In the config file (not a flag), so a restart can drop it below.
  const std::string config = absl::StrCat("huge_dir: \"", huge_dir, "\"\n");
  DaemonProcess daemon({.config_text = config, .extra_flags = {}});
  ASSERT_THAT(daemon.Start(), IsOk());
  constexpr uint64_t kAsked = 5 << 20;  // rounded up to 6 MiB of file
  uint64_t offset = 0;
  {
    absl::StatusOr<std::unique_ptr<sc::Client>> client =
        sc::Client::Connect({.target = daemon.target()});
    ASSERT_THAT(client, IsOk());
    sc::CreateRegionOptions options;
    options.name = "huge";
    options.strategy = sc::Strategy::kFreeList;
    options.size_bytes = kAsked;
    options.huge_pages = true;
    absl::StatusOr<sc::RegionInfo> info = (*client)->CreateRegion(options);
    ASSERT_THAT(info, IsOk());
    EXPECT_TRUE(info->huge_pages);
    EXPECT_EQ(info->data_dir, huge_dir);
    EXPECT_EQ(info->size_bytes, 3 * kHuge);  // whole huge pages
    EXPECT_EQ(info->heap_end, 3 * kHuge);
    struct stat st = {};
    ASSERT_EQ(stat(absl::StrCat(huge_dir, "/", info->data_file).c_str(), &st),
              0);
    EXPECT_EQ(static_cast<uint64_t>(st.st_size), 3 * kHuge);
    // Metadata stays in the shm dir; the data file does not.
    EXPECT_THAT(daemon.ShmDirFiles(),
                ::testing::Contains("shmalloc-huge.meta"));
    EXPECT_THAT(daemon.ShmDirFiles(),
                ::testing::Not(::testing::Contains("shmalloc-huge.data")));

    absl::StatusOr<std::shared_ptr<sc::Region>> region =
        (*client)->OpenRegion("huge");
    ASSERT_THAT(region, IsOk());
    absl::StatusOr<sc::Allocation> a =
        (*region)->Allocate(kHuge, {.alignment = kHuge, .detached = true});
    ASSERT_THAT(a, IsOk());
    std::span<std::byte> bytes = a->span();
    ASSERT_EQ(bytes.size(), kHuge);
    EXPECT_EQ(a->offset() % kHuge, 0u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(bytes.data()) % kHuge, 0u)
        << "a 2 MiB-aligned offset in a huge-page mapping is a 2 MiB-aligned "
           "pointer";
    for (size_t i = 0; i < bytes.size(); i += 4096) {
      bytes[i] = static_cast<std::byte>(i / 4096 + 1);
    }
    const auto smaps = SmapsOf(bytes.data());
    if (kind == v1::HUGE_PAGES_HUGETLBFS) {
      EXPECT_EQ(info->huge_pages, true);
      EXPECT_EQ(Field(smaps, "KernelPageSize"), 2048u);
      Report(absl::StrCat("hugetlbfs mapping: KernelPageSize ",
                          Field(smaps, "KernelPageSize"), " kB"));
    } else {
      const uint64_t pmd =
          Field(smaps, "ShmemPmdMapped") + Field(smaps, "FilePmdMapped");
      EXPECT_GE(pmd, 2048u) << "the 2 MiB touched are not PMD-mapped";
      Report(absl::StrCat("tmpfs THP mapping: ShmemPmdMapped ",
                          Field(smaps, "ShmemPmdMapped"), " kB"));
    }
    offset = a->Release().offset;
  }

  ASSERT_THAT(daemon.Restart(), IsOk());
  {
    absl::StatusOr<std::unique_ptr<sc::Client>> client =
        sc::Client::Connect({.target = daemon.target()});
    ASSERT_THAT(client, IsOk());
    absl::StatusOr<sc::RegionInfo> info = (*client)->GetRegion("huge");
    ASSERT_THAT(info, IsOk());
    EXPECT_TRUE(info->huge_pages);
    EXPECT_EQ(info->data_dir, huge_dir);
    absl::StatusOr<std::shared_ptr<sc::Region>> region =
        (*client)->OpenRegion("huge");
    ASSERT_THAT(region, IsOk());
    absl::StatusOr<std::span<std::byte>> bytes = (*region)->Span(offset, kHuge);
    ASSERT_THAT(bytes, IsOk());
    for (size_t i = 0; i < kHuge; i += 4096) {
      ASSERT_EQ((*bytes)[i], static_cast<std::byte>(i / 4096 + 1)) << i;
    }
  }

  // Restarted without the huge dir: DAMAGED with a message naming the flag,
  // a forced reset refused before touching anything; with it again: back.
  const std::string config_file = daemon.dir() + "/shmallocd.textproto";
  std::ofstream(config_file, std::ios::trunc) << "";
  ASSERT_THAT(daemon.Restart(), IsOk());
  {
    v1::GetRegionRequest get;
    get.set_name("huge");
    v1::Region region;
    grpc::ClientContext context;
    ASSERT_TRUE(daemon.stub().GetRegion(&context, get, &region).ok());
    EXPECT_EQ(region.state(), v1::REGION_STATE_DAMAGED);
    EXPECT_THAT(region.state_detail(), HasSubstr("--huge_dir"));
    v1::ResetRegionRequest reset;
    reset.set_name("huge");
    reset.set_force(true);
    grpc::ClientContext reset_context;
    EXPECT_THAT(
        ToAbsl(daemon.stub().ResetRegion(&reset_context, reset, &region)),
        StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_THAT(daemon.ShmDirFiles(),
                ::testing::Contains("shmalloc-huge.meta"));
  }
  std::ofstream(config_file, std::ios::trunc) << config;
  ASSERT_THAT(daemon.Restart(), IsOk());
  {
    absl::StatusOr<std::unique_ptr<sc::Client>> client =
        sc::Client::Connect({.target = daemon.target()});
    ASSERT_THAT(client, IsOk());
    absl::StatusOr<std::shared_ptr<sc::Region>> region =
        (*client)->OpenRegion("huge");
    ASSERT_THAT(region, IsOk());
    absl::StatusOr<std::span<std::byte>> bytes = (*region)->Span(offset, kHuge);
    ASSERT_THAT(bytes, IsOk());
    EXPECT_EQ((*bytes)[4096], static_cast<std::byte>(2));
    region->reset();
    // A forced reset re-formats in place: same file, same kind.
    v1::ResetRegionRequest reset;
    reset.set_name("huge");
    reset.set_force(true);
    v1::Region after;
    grpc::ClientContext reset_context;
    ASSERT_TRUE(daemon.stub().ResetRegion(&reset_context, reset, &after).ok());
    EXPECT_EQ(after.generation(), 1u);
    EXPECT_EQ(after.data_dir(), huge_dir);
    EXPECT_NE(after.huge_pages(), v1::HUGE_PAGES_NONE);
    EXPECT_THAT((*client)->DeleteRegion("huge", /*force=*/true), IsOk());
  }
  struct stat st = {};
  EXPECT_NE(stat(absl::StrCat(huge_dir, "/shmalloc-huge.data").c_str(), &st),
            0);
  EXPECT_THAT(daemon.ShmDirFiles(),
              ::testing::Not(::testing::Contains("shmalloc-huge.meta")));
  ASSERT_THAT(daemon.Stop(), IsOk());
  rmdir(huge_dir.c_str());  // the lock file is left: best effort
}

TEST(HugePagesTest, TmpfsWithTransparentHugePages) {
  std::string shmem_enabled;
  std::getline(
      std::ifstream("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
      shmem_enabled);
  if (shmem_enabled.find("[deny]") != std::string::npos) {
    Report("path: tmpfs huge=always NOT RUN: shmem_enabled is deny");
    return;
  }
  TempMount mnt(::testing::TempDir(), "tmpfs",
                "huge=always,size=16m,mode=0755");
  if (!mnt.mounted()) {
    Report("path: tmpfs huge=always NOT RUN: " + mnt.why_not());
    return;
  }
  Report("path: tmpfs huge=always RUN in " + mnt.dir());
  ExerciseHugeRegion(mnt, v1::HUGE_PAGES_TMPFS_THP);
}

TEST(HugePagesTest, Hugetlbfs) {
  if (geteuid() != 0) {
    Report("path: hugetlbfs NOT RUN: not root (mount needs CAP_SYS_ADMIN)");
    return;
  }
  HugePagePool pool(4);
  if (!pool.ok()) {
    Report("path: hugetlbfs NOT RUN: " + pool.why_not());
    return;
  }
  TempMount mnt(::testing::TempDir(), "hugetlbfs", "mode=0755");
  if (!mnt.mounted()) {
    Report("path: hugetlbfs NOT RUN: " + mnt.why_not());
    return;
  }
  Report("path: hugetlbfs RUN in " + mnt.dir());
  ExerciseHugeRegion(mnt, v1::HUGE_PAGES_HUGETLBFS);

  // More pages than the pool has free: RESOURCE_EXHAUSTED at creation (the
  // pages are reserved there, never a SIGBUS at a client's first touch),
  // nothing left behind.
  const std::string huge_dir = absl::StrCat(mnt.dir(), "/shmalloc");
  DaemonProcess daemon(
      {.config_text = "",
       .extra_flags = {absl::StrCat("--huge_dir=", huge_dir)}});
  ASSERT_THAT(daemon.Start(), IsOk());
  const std::vector<std::string> files_before = daemon.ShmDirFiles();
  v1::CreateRegionRequest request;
  request.set_name("toobig");
  request.set_strategy(v1::STRATEGY_ARENA);
  request.set_size_bytes((HugePagePool::FreeHugePages() + 1) * kHuge);
  request.set_huge_pages(v1::HUGE_PAGES_REQUIRED);
  v1::Region region;
  grpc::ClientContext context;
  const absl::Status s =
      ToAbsl(daemon.stub().CreateRegion(&context, request, &region));
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(std::string(s.message()), HasSubstr("nr_hugepages"));
  EXPECT_EQ(daemon.ShmDirFiles(), files_before);
  struct stat st = {};
  EXPECT_NE(stat(absl::StrCat(huge_dir, "/shmalloc-toobig.data").c_str(), &st),
            0);
  ASSERT_THAT(daemon.Stop(), IsOk());
}

}  // namespace
}  // namespace shmalloc::testing
