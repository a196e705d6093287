// The huge-page pieces that need no mount and no root: --huge_dir's
// precedence, the refusal of a directory without huge pages, the message of
// a daemon without one, and Region::Create / Open with a HugePageDir (the
// layout: data file in the huge dir, rounded to whole pages, kind in the
// meta file). Real mounts: tests/integration/huge_pages_test.cc.
#include "server/huge_pages.h"

#include <sys/stat.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/config.h"
#include "server/region.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kPage = uint64_t{2} << 20;

absl::StatusOr<std::string> DefaultSocket() { return std::string("/d.sock"); }

TEST(HugePagesConfigTest, FlagOverridesConfigOverridesNone) {
  v1::DaemonConfig config;
  absl::StatusOr<DaemonOptions> options =
      ResolveOptions(config, {}, DefaultSocket);
  ASSERT_THAT(options, IsOk());
  EXPECT_EQ(options->huge_dir, "");
  config.set_huge_dir("/config-huge");
  options = ResolveOptions(config, {}, DefaultSocket);
  ASSERT_THAT(options, IsOk());
  EXPECT_EQ(options->huge_dir, "/config-huge");
  FlagValues flags;
  flags.huge_dir = "/flag-huge";
  options = ResolveOptions(config, flags, DefaultSocket);
  ASSERT_THAT(options, IsOk());
  EXPECT_EQ(options->huge_dir, "/flag-huge");
}

TEST(HugePagesDirTest, DirectoryWithoutHugePagesIsRefusedSayingWhatToMount) {
  TempDir dir;
  absl::StatusOr<HugePageDir> huge = InspectHugePageDir(dir.path());
  EXPECT_THAT(huge, StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(std::string(huge.status().message()),
              HasSubstr("offers no huge pages"));
  EXPECT_THAT(std::string(huge.status().message()),
              HasSubstr("mount -t hugetlbfs"));
  EXPECT_THAT(InspectHugePageDir(dir.path() + "/missing"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(NoHugeDirMessage(), HasSubstr("--huge_dir"));
  EXPECT_THAT(NoHugeDirMessage(), HasSubstr("nr_hugepages"));
}

v1::CreateRegionRequest HugeRequest(const std::string& name) {
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(v1::STRATEGY_FREE_LIST);
  request.set_size_bytes(5 << 20);
  request.set_huge_pages(v1::HUGE_PAGES_REQUIRED);
  return request;
}

TEST(HugePagesRegionTest, WithoutHugeDirIsFailedPreconditionAndNoFile) {
  TempDir shm;
  EXPECT_THAT(Region::Create(shm.path(), HugeRequest("r")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  struct stat st = {};
  EXPECT_NE(stat((shm.path() + "/shmalloc-r.meta").c_str(), &st), 0);
  EXPECT_NE(stat((shm.path() + "/shmalloc-r.data").c_str(), &st), 0);
}

TEST(HugePagesRegionTest, KindMustMatchWhenNamed) {
  TempDir shm;
  TempDir other;
  const HugePageDir huge{other.path(), HugeKind::kTmpfsThp, kPage};
  v1::CreateRegionRequest request = HugeRequest("r");
  request.set_huge_pages(v1::HUGE_PAGES_HUGETLBFS);
  EXPECT_THAT(Region::Create(shm.path(), request, 0, &huge),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  request.set_huge_pages(static_cast<v1::HugePages>(42));
  EXPECT_THAT(Region::Create(shm.path(), request, 0, &huge),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// The layout logic on an ordinary directory standing in for the mount.
TEST(HugePagesRegionTest, DataFileInHugeDirRoundedAndReopened) {
  TempDir shm;
  TempDir other;
  const HugePageDir huge{other.path(), HugeKind::kTmpfsThp, kPage};
  {
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Create(shm.path(), HugeRequest("r"), 0, &huge);
    ASSERT_THAT(region, IsOk());
    const v1::Region d = (*region)->Describe();
    EXPECT_EQ(d.huge_pages(), v1::HUGE_PAGES_TMPFS_THP);
    EXPECT_EQ(d.data_dir(), other.path());
    EXPECT_EQ(d.size_bytes(), 3 * kPage);  // 4096 + 5 MiB, rounded
    EXPECT_EQ(d.heap_end(), 3 * kPage);
  }
  struct stat st = {};
  ASSERT_EQ(stat((other.path() + "/shmalloc-r.data").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 3 * kPage);
  EXPECT_NE(stat((shm.path() + "/shmalloc-r.data").c_str(), &st), 0);
  EXPECT_EQ(stat((shm.path() + "/shmalloc-r.meta").c_str(), &st), 0);

  // Re-opened only with the huge dir of its kind.
  EXPECT_THAT(Region::Open(shm.path(), "r"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const HugePageDir wrong{other.path(), HugeKind::kHugetlbfs, kPage};
  EXPECT_THAT(Region::Open(shm.path(), "r", &wrong),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  absl::StatusOr<std::unique_ptr<Region>> region =
      Region::Open(shm.path(), "r", &huge);
  ASSERT_THAT(region, IsOk());
  EXPECT_EQ((*region)->Describe().huge_pages(), v1::HUGE_PAGES_TMPFS_THP);
  EXPECT_EQ((*region)->capacity(), 3 * kPage - 4096);

  // The recorded request re-creates the same geometry (forced reset).
  absl::StatusOr<v1::CreateRegionRequest> recorded =
      Region::RecordedRequest(shm.path(), "r");
  ASSERT_THAT(recorded, IsOk());
  EXPECT_EQ(recorded->huge_pages(), v1::HUGE_PAGES_TMPFS_THP);
  EXPECT_EQ(recorded->size_bytes(), 3 * kPage - 4096);
  EXPECT_THAT((*region)->UnlinkFiles(), IsOk());
  EXPECT_NE(stat((other.path() + "/shmalloc-r.data").c_str(), &st), 0);
}

}  // namespace
}  // namespace shmalloc::server
