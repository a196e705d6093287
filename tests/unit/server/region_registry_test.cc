// RegionRegistry at start: the leftovers of an interrupted Create or Delete
// are removed, regions that do not validate are quarantined (DAMAGED, name
// kept, DATA_LOSS) and recovered by a forced delete or reset.
#include "server/region_registry.h"

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/region_meta.h"
#include "server/region_name.h"
#include "server/shm_file.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;

v1::CreateRegionRequest Request(const std::string& name) {
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(v1::STRATEGY_POOL);
  request.set_size_bytes(1 << 20);
  request.set_block_size(4096);
  return request;
}

class RegionRegistryTest : public ::testing::Test {
 protected:
  // Creates region `name` with a first registry, then lets `damage` edit
  // its meta file's header.
  void CreateThen(const std::string& name,
                  const std::function<void(RegionMetaHeader&)>& damage) {
    {
      RegionRegistry first(dir_.path(), ServerLimits{});
      ASSERT_THAT(first.Create(Request(name)), IsOk());
      first.SyncAndClose();
    }
    absl::StatusOr<MappedFile> meta =
        MappedFile::Open(dir_.File(MetaFileName(name)));
    ASSERT_THAT(meta, IsOk());
    damage(*reinterpret_cast<RegionMetaHeader*>(meta->data()));
  }
  bool Exists(const std::string& file) const {
    return std::filesystem::exists(dir_.File(file));
  }

  TempDir dir_;
};

TEST_F(RegionRegistryTest, AnUnfinishedCreateIsRemovedAtStart) {
  CreateThen("half", [](RegionMetaHeader& h) { h.magic = 0; });
  RegionRegistry registry(dir_.path(), ServerLimits{});
  ASSERT_THAT(registry.LoadExisting(), IsOk());
  EXPECT_THAT(registry.Get("half").status(),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(Exists(DataFileName("half")));
  EXPECT_FALSE(Exists(MetaFileName("half")));
  EXPECT_THAT(registry.Create(Request("half")), IsOk());
}

TEST_F(RegionRegistryTest, AnUnfinishedDeleteIsFinishedAtStart) {
  CreateThen("gone", [](RegionMetaHeader& h) { h.state = kMetaDeleting; });
  // The crash came after the data file's unlink.
  std::filesystem::remove(dir_.File(DataFileName("gone")));
  RegionRegistry registry(dir_.path(), ServerLimits{});
  ASSERT_THAT(registry.LoadExisting(), IsOk());
  EXPECT_FALSE(Exists(MetaFileName("gone")));
  EXPECT_THAT(registry.Create(Request("gone")), IsOk());
}

TEST_F(RegionRegistryTest, ARegionThatFailsValidationIsDamagedNotHidden) {
  CreateThen("bad", [](RegionMetaHeader& h) { h.heap_bytes = 12345; });
  RegionRegistry registry(dir_.path(), ServerLimits{});
  ASSERT_THAT(registry.LoadExisting(), IsOk());
  absl::StatusOr<v1::Region> described = registry.Describe("bad");
  ASSERT_THAT(described, IsOk());
  EXPECT_EQ(described->state(), v1::REGION_STATE_DAMAGED);
  EXPECT_THAT(described->state_detail(), ::testing::HasSubstr("bytes"));
  EXPECT_THAT(registry.Get("bad").status(),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(registry.Create(Request("bad")).status(),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(registry.Delete("bad", /*force=*/false),
              StatusIs(absl::StatusCode::kDataLoss));
  ASSERT_EQ(registry.DescribeAll().size(), 1u);
  EXPECT_THAT(registry.Delete("bad", /*force=*/true), IsOk());
  EXPECT_FALSE(Exists(DataFileName("bad")));
  EXPECT_FALSE(Exists(MetaFileName("bad")));
  EXPECT_THAT(registry.Create(Request("bad")), IsOk());
}

TEST_F(RegionRegistryTest, AnOldLayoutIsDamagedAndAForcedResetRecreatesIt) {
  CreateThen("old", [](RegionMetaHeader& h) {
    h.magic = 0x314d474552534853ULL;  // SHSREGM1, layout version 1
    h.layout_version = 1;
  });
  RegionRegistry registry(dir_.path(), ServerLimits{});
  ASSERT_THAT(registry.LoadExisting(), IsOk());
  absl::StatusOr<v1::Region> described = registry.Describe("old");
  ASSERT_THAT(described, IsOk());
  EXPECT_EQ(described->state(), v1::REGION_STATE_DAMAGED);
  EXPECT_THAT(described->state_detail(),
              ::testing::HasSubstr("layout version 1"));
  absl::StatusOr<std::shared_ptr<Region>> fresh = registry.ResetDamaged("old");
  ASSERT_THAT(fresh, IsOk());
  const v1::Region region = (*fresh)->Describe();
  EXPECT_EQ(region.state(), v1::REGION_STATE_READY);
  EXPECT_EQ(region.block_size(), 4096u);
  EXPECT_EQ(region.heap_end() - region.heap_begin(), 1u << 20);
}

TEST_F(RegionRegistryTest, ALoneDataFileIsDamagedAndNeverRemovedAtStart) {
  CreateThen("lone", [](RegionMetaHeader&) {});
  std::filesystem::remove(dir_.File(MetaFileName("lone")));
  RegionRegistry registry(dir_.path(), ServerLimits{});
  ASSERT_THAT(registry.LoadExisting(), IsOk());
  EXPECT_TRUE(Exists(DataFileName("lone")));
  EXPECT_EQ(registry.Describe("lone")->state(), v1::REGION_STATE_DAMAGED);
  // Its geometry is gone with the meta file: only a forced delete helps.
  EXPECT_THAT(registry.ResetDamaged("lone").status(),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(registry.Delete("lone", /*force=*/true), IsOk());
  EXPECT_FALSE(Exists(DataFileName("lone")));
}

}  // namespace
}  // namespace shmalloc::server
