#include "server/shm_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
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

// Files someone else could have planted in a shared shm directory.
TEST(ShmFileTest, OpenRefusesAModeWiderThanAllowed) {
  TempDir dir;
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("f"), 4096, 0666));
  const absl::StatusOr<MappedFile> meta = MappedFile::Open(dir.File("f"), 0600);
  EXPECT_THAT(meta, StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(meta.status().message(), HasSubstr(dir.File("f")));
  EXPECT_THAT(meta.status().message(), HasSubstr("mode 0666"));
  EXPECT_THAT(meta.status().message(),
              HasSubstr(absl::StrCat("uid ", geteuid())));
  EXPECT_THAT(MappedFile::Open(dir.File("f"), 0660),
              StatusIs(absl::StatusCode::kPermissionDenied));
  // Exactly the allowed bits, or fewer, are accepted.
  ASSERT_EQ(chmod(dir.File("f").c_str(), 0660), 0);
  SHMALLOC_EXPECT_OK(MappedFile::Open(dir.File("f"), 0660));
  EXPECT_THAT(MappedFile::Open(dir.File("f"), 0600),
              StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_EQ(chmod(dir.File("f").c_str(), 0400), 0);
  SHMALLOC_EXPECT_OK(MappedFile::Open(dir.File("f"), 0600));
  // A setuid bit is outside any mode the daemon allows.
  ASSERT_EQ(chmod(dir.File("f").c_str(), 04600), 0);
  EXPECT_THAT(MappedFile::Open(dir.File("f"), 0600),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(ShmFileTest, OpenRefusesAHardLinkedFileByEitherName) {
  TempDir dir;
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("f"), 4096, 0600));
  ASSERT_EQ(link(dir.File("f").c_str(), dir.File("g").c_str()), 0);
  for (const char* name : {"f", "g"}) {
    const absl::StatusOr<MappedFile> file =
        MappedFile::Open(dir.File(name), 0600);
    EXPECT_THAT(file, StatusIs(absl::StatusCode::kPermissionDenied)) << name;
    EXPECT_THAT(file.status().message(), HasSubstr("2 links")) << name;
  }
  ASSERT_EQ(unlink(dir.File("g").c_str()), 0);
  SHMALLOC_EXPECT_OK(MappedFile::Open(dir.File("f"), 0600));
}

TEST(ShmFileTest, OpenRefusesAFileOfAnotherUidAndAcceptsItsOwn) {
  TempDir dir;
  SHMALLOC_ASSERT_OK(MappedFile::Create(dir.File("f"), 4096, 0600));
  // Our own file, mode within the limit, one link: adopted.
  SHMALLOC_EXPECT_OK(MappedFile::Open(dir.File("f"), 0600));
  SHMALLOC_EXPECT_OK(MappedFile::Open(dir.File("f")));
  if (geteuid() == 0) {
    // Only root can give a file away (CI runs as root). Root could also
    // read and write it, which is exactly why ownership is checked.
    ASSERT_EQ(chown(dir.File("f").c_str(), 65534, 65534), 0);
    const absl::StatusOr<MappedFile> file =
        MappedFile::Open(dir.File("f"), 0600);
    EXPECT_THAT(file, StatusIs(absl::StatusCode::kPermissionDenied));
    EXPECT_THAT(file.status().message(), HasSubstr("uid 65534"));
    EXPECT_THAT(MappedFile::Open(dir.File("f")),
                StatusIs(absl::StatusCode::kPermissionDenied));
  } else {
    // Not root: another uid's file cannot be made here; check instead
    // that the owner check compares against the effective uid we run as.
    struct stat st;
    ASSERT_EQ(stat(dir.File("f").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, geteuid());
  }
}

TEST(ShmFileTest, OpenRefusesAFifoWithoutBlocking) {
  TempDir dir;
  ASSERT_EQ(mkfifo(dir.File("p").c_str(), 0600), 0);
  EXPECT_THAT(MappedFile::Open(dir.File("p"), 0600),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(ShmFileTest, DirectoryLockRefusesASquattedLockFile) {
  TempDir dir;
  const std::string lock = dir.File("shmalloc.lock");
  {
    SHMALLOC_ASSERT_OK(MappedFile::Create(lock, 1, 0644));
    const absl::StatusOr<DirectoryLock> acquired =
        DirectoryLock::Acquire(dir.path());
    EXPECT_THAT(acquired, StatusIs(absl::StatusCode::kPermissionDenied));
    EXPECT_THAT(acquired.status().message(), HasSubstr("remove it"));
    EXPECT_THAT(acquired.status().message(), HasSubstr("mode 0644"));
  }
  ASSERT_EQ(chmod(lock.c_str(), 0600), 0);
  SHMALLOC_EXPECT_OK(DirectoryLock::Acquire(dir.path()));
  if (geteuid() == 0) {
    ASSERT_EQ(chown(lock.c_str(), 65534, 65534), 0);
    const absl::StatusOr<DirectoryLock> acquired =
        DirectoryLock::Acquire(dir.path());
    EXPECT_THAT(acquired, StatusIs(absl::StatusCode::kPermissionDenied));
    EXPECT_THAT(acquired.status().message(), HasSubstr("uid 65534"));
    EXPECT_THAT(acquired.status().message(), HasSubstr("remove it"));
  } else {
    // The lock file a daemon creates itself is one it accepts again.
    ASSERT_EQ(unlink(lock.c_str()), 0);
    SHMALLOC_EXPECT_OK(DirectoryLock::Acquire(dir.path()));
    EXPECT_EQ(ModeOf(lock) & 077, 0u);
  }
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
