// Files planted in a shared shm directory (H3 of the trust review): at start
// RegionRegistry::LoadExisting adopts only region files the daemon's uid
// owns, with one link and the modes it creates them with (meta 0600, data
// 0660). Anything else is logged and left alone: not adopted, not DAMAGED
// (so a forced delete or reset never acts on it), its files untouched, and
// its name not re-created over it.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/region_name.h"
#include "server/region_registry.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;

v1::CreateRegionRequest Request(const std::string& name) {
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(v1::STRATEGY_POOL);
  request.set_size_bytes(1 << 20);
  request.set_block_size(4096);
  return request;
}

class PlantedFilesTest : public ::testing::Test {
 protected:
  // Makes a valid region pair `name` the way the daemon would (so only the
  // property under test differs from an adoptable one), then closes it.
  void MakeRegion(const std::string& name) {
    RegionRegistry first(dir_.path(), ServerLimits{});
    ASSERT_THAT(first.Create(Request(name)), IsOk());
    first.SyncAndClose();
  }
  std::string Data(const std::string& name) const {
    return dir_.File(DataFileName(name));
  }
  std::string Meta(const std::string& name) const {
    return dir_.File(MetaFileName(name));
  }
  // Expects region `name` to be left alone by a fresh registry's start.
  void ExpectLeftAlone(const std::string& name) {
    RegionRegistry registry(dir_.path(), ServerLimits{});
    EXPECT_THAT(registry.LoadExisting(), IsOkAndHolds(0u));
    EXPECT_THAT(registry.Get(name).status(),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(registry.Describe(name).status(),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_TRUE(registry.DescribeAll().empty());
    EXPECT_THAT(registry.Delete(name, /*force=*/true),
                StatusIs(absl::StatusCode::kNotFound));
    EXPECT_THAT(registry.ResetDamaged(name).status(),
                StatusIs(absl::StatusCode::kNotFound));
    // Never created over: the planted files stay where they are.
    EXPECT_THAT(registry.Create(Request(name)).status(),
                StatusIs(absl::StatusCode::kAlreadyExists));
    EXPECT_TRUE(std::filesystem::exists(Data(name)));
    EXPECT_TRUE(std::filesystem::exists(Meta(name)));
  }

  TempDir dir_;
};

TEST_F(PlantedFilesTest, APairOfMode0666IsNotAdopted) {
  MakeRegion("demo-pool");
  ASSERT_EQ(chmod(Data("demo-pool").c_str(), 0666), 0);
  ASSERT_EQ(chmod(Meta("demo-pool").c_str(), 0666), 0);
  ExpectLeftAlone("demo-pool");
}

TEST_F(PlantedFilesTest, AWorldWritableDataFileAloneIsEnoughToRefuse) {
  MakeRegion("data");
  ASSERT_EQ(chmod(Data("data").c_str(), 0666), 0);
  ExpectLeftAlone("data");
}

TEST_F(PlantedFilesTest, AGroupReadableMetaFileIsRefused) {
  // The data file's 0660 is fine; the meta file allows nothing but 0600.
  MakeRegion("meta");
  ASSERT_EQ(chmod(Meta("meta").c_str(), 0640), 0);
  ExpectLeftAlone("meta");
}

TEST_F(PlantedFilesTest, AHardLinkedMetaFileIsRefused) {
  MakeRegion("linked");
  ASSERT_EQ(link(Meta("linked").c_str(), dir_.File("elsewhere").c_str()), 0);
  ExpectLeftAlone("linked");
}

TEST_F(PlantedFilesTest, FilesOfAnotherUidAreRefusedAndOwnOnesAdopted) {
  MakeRegion("owned");
  if (geteuid() == 0) {
    // Only root can give files away (CI runs as root).
    ASSERT_EQ(chown(Data("owned").c_str(), 65534, 65534), 0);
    ASSERT_EQ(chown(Meta("owned").c_str(), 65534, 65534), 0);
    ExpectLeftAlone("owned");
  } else {
    // The daemon's own pair, with the modes it made, is adopted.
    RegionRegistry registry(dir_.path(), ServerLimits{});
    EXPECT_THAT(registry.LoadExisting(), IsOkAndHolds(1u));
    EXPECT_THAT(registry.Get("owned"), IsOk());
  }
}

TEST_F(PlantedFilesTest, ARefusedRegionDoesNotStopTheOthers) {
  MakeRegion("planted");
  MakeRegion("ours");
  ASSERT_EQ(chmod(Meta("planted").c_str(), 0666), 0);
  RegionRegistry registry(dir_.path(), ServerLimits{});
  EXPECT_THAT(registry.LoadExisting(), IsOkAndHolds(1u));
  EXPECT_THAT(registry.Get("ours"), IsOk());
  EXPECT_THAT(registry.Get("planted").status(),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace shmalloc::server
