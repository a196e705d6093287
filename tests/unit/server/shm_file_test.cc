#include "server/shm_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0);
  return st.st_mode & 07777;
}

TEST(ShmFileTest, CreateMapsZeroedFileWithExactModeDespiteUmask) {
  TempDir dir;
  const mode_t old = umask(0077);
  absl::StatusOr<MappedFile> file =
      MappedFile::Create(dir.File("f"), 10000, 0660);
  umask(old);
  SHMALLOC_ASSERT_OK(file);
  EXPECT_EQ(file->size(), 10000u);
  EXPECT_EQ(ModeOf(dir.File("f")), 0660u);
  for (std::byte b : file->bytes()) ASSERT_EQ(b, std::byte{0});
  SHMALLOC_EXPECT_OK(file->Sync());
}

TEST(ShmFileTest, WritesAreSeenByAnotherMapping) {
  TempDir dir;
  absl::StatusOr<MappedFile> a = MappedFile::Create(dir.File("f"), 4096, 0600);
  SHMALLOC_ASSERT_OK(a);
  std::memcpy(a->data() + 100, "hello", 5);
  absl::StatusOr<MappedFile> b = MappedFile::Open(dir.File("f"));
  SHMALLOC_ASSERT_OK(b);
  EXPECT_EQ(std::memcmp(b->data() + 100, "hello", 5), 0);
}

TEST(ShmFileTest, CreateOfExistingPathIsAlreadyExists) {
  TempDir dir;
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("f"), 4096, 0600));
  EXPECT_THAT(MappedFile::Create(dir.File("f"), 4096, 0600),
              StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST(ShmFileTest, CreateNeverFollowsASymlink) {
  TempDir dir;
  ASSERT_EQ(symlink(dir.File("target").c_str(), dir.File("link").c_str()), 0);
  EXPECT_THAT(MappedFile::Create(dir.File("link"), 4096, 0600),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_THAT(PathExists(dir.File("target")),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ShmFileTest, OpenOfASymlinkIsFailedPrecondition) {
  TempDir dir;
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("real"), 4096, 0600));
  ASSERT_EQ(symlink(dir.File("real").c_str(), dir.File("link").c_str()), 0);
  EXPECT_THAT(MappedFile::Open(dir.File("link")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(ShmFileTest, MissingFilesAndDirectoriesAreNotFound) {
  TempDir dir;
  EXPECT_THAT(MappedFile::Open(dir.File("nope")),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(MappedFile::Create(dir.File("nodir/f"), 4096, 0600),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(UnlinkFile(dir.File("nope")),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(ListDirectory(dir.File("nope")),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ShmFileTest, SizeZeroIsInvalidArgument) {
  TempDir dir;
  EXPECT_THAT(MappedFile::Create(dir.File("f"), 0, 0600),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(PathExists(dir.File("f")), StatusIs(absl::StatusCode::kNotFound));
}

TEST(ShmFileTest, TooLargeIsResourceExhaustedAndLeavesNothing) {
  TempDir dir;
  const absl::StatusOr<MappedFile> file =
      MappedFile::Create(dir.File("f"), uint64_t{1} << 50, 0660);  // 1 PiB
  EXPECT_THAT(file, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(file.status().message(), HasSubstr(dir.path()));
  EXPECT_THAT(PathExists(dir.File("f")), StatusIs(absl::StatusCode::kNotFound));
}

TEST(ShmFileTest, ListDirectoryIsSortedWithoutDots) {
  TempDir dir;
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("b"), 1, 0600));
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("a"), 1, 0600));
  EXPECT_THAT(ListDirectory(dir.path()),
              shmalloc::testing::IsOkAndHolds(ElementsAre("a", "b")));
  SHMALLOC_EXPECT_OK(UnlinkFile(dir.File("a")));
  EXPECT_THAT(ListDirectory(dir.path()),
              shmalloc::testing::IsOkAndHolds(ElementsAre("b")));
}

TEST(ShmFileTest, DirectoryLockIsExclusiveUntilReleased) {
  TempDir dir;
  {
    absl::StatusOr<DirectoryLock> first = DirectoryLock::Acquire(dir.path());
    SHMALLOC_ASSERT_OK(first);
    EXPECT_THAT(DirectoryLock::Acquire(dir.path()),
                StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  SHMALLOC_EXPECT_OK(DirectoryLock::Acquire(dir.path()));
  EXPECT_THAT(DirectoryLock::Acquire(dir.File("nope")),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ShmFileTest, CheckWritableDirectory) {
  TempDir dir;
  EXPECT_THAT(CheckWritableDirectory(dir.path()), IsOk());
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("f"), 1, 0600));
  EXPECT_THAT(CheckWritableDirectory(dir.File("f")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(CheckWritableDirectory(dir.File("nope")),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace shmalloc::server
