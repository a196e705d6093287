#include "server/region_name.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;
using ::testing::Eq;
using ::testing::Optional;

TEST(RegionNameTest, AcceptsNamesOfThePattern) {
  for (const char* name :
       {"a", "0", "frames", "demo-pool", "a.b_c-d", "9lives", "x."}) {
    EXPECT_THAT(ValidateRegionName(name), IsOk()) << name;
  }
  EXPECT_THAT(ValidateRegionName(std::string(63, 'a')), IsOk());
}

TEST(RegionNameTest, RejectsEverythingElseAsInvalidArgument) {
  for (const std::string& name :
       {std::string(), std::string(64, 'a'), std::string("Frames"),
        std::string("a/b"), std::string("/etc"), std::string(".."),
        std::string("../x"), std::string(".hidden"), std::string("-a"),
        std::string("_a"), std::string("a b"), std::string("a\nb"),
        std::string("caf\xc3\xa9"), std::string("a\0b", 3),
        std::string("a*")}) {
    EXPECT_THAT(ValidateRegionName(name),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << name;
  }
}

TEST(RegionNameTest, FileNamesFollowTheLayout) {
  EXPECT_EQ(DataFileName("frames"), "shmalloc-frames.data");
  EXPECT_EQ(MetaFileName("frames"), "shmalloc-frames.meta");
  EXPECT_EQ(JoinPath("/dev/shm", "x"), "/dev/shm/x");
  EXPECT_EQ(JoinPath("/dev/shm/", "x"), "/dev/shm/x");
}

TEST(RegionNameTest, FileNamesRoundTrip) {
  EXPECT_THAT(RegionNameFromFile(DataFileName("a.b-c")), Optional(Eq("a.b-c")));
  EXPECT_THAT(RegionNameFromFile(MetaFileName("a.b-c")), Optional(Eq("a.b-c")));
}

TEST(RegionNameTest, OtherFilesAreNotRegions) {
  for (const char* file :
       {"shmalloc.sessions", "frames.data", "shmalloc-.data",
        "shmalloc-Bad.data", "shmalloc-a.data.tmp", "other"}) {
    EXPECT_EQ(RegionNameFromFile(file), std::nullopt) << file;
  }
}

}  // namespace
}  // namespace shmalloc::server
