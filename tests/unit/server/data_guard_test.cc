// GuardSigbus, DataFileWatch and GuardedAllocator (server/data_guard.h) on
// real files truncated under a real mapping: the guarded access comes back
// with DATA_LOSS instead of killing the process, a second fault is caught
// too (SIGBUS unblocked again), and a fault outside a guard still kills.
#include "server/data_guard.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <memory>
#include <string>

#include "allocators/arena.h"
#include "gtest/gtest.h"
#include "server/shm_file.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;

constexpr uint64_t kBytes = 64 * 1024;

class DataGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<MappedFile> file =
        MappedFile::Create(dir_.File("f.data"), kBytes, 0600, true);
    ASSERT_THAT(file, IsOk());
    file_ = std::make_unique<MappedFile>(*std::move(file));
  }
  void Truncate(uint64_t bytes) {
    ASSERT_EQ(truncate(file_->path().c_str(), static_cast<off_t>(bytes)), 0);
  }
  volatile uint64_t* Word(uint64_t offset) {
    return reinterpret_cast<volatile uint64_t*>(file_->data() + offset);
  }

  TempDir dir_;
  std::unique_ptr<MappedFile> file_;
};

TEST_F(DataGuardTest, CurrentSizeFollowsTheFile) {
  EXPECT_THAT(file_->CurrentSize(), IsOkAndHolds(kBytes));
  Truncate(4096);
  EXPECT_THAT(file_->CurrentSize(), IsOkAndHolds(uint64_t{4096}));
}

TEST_F(DataGuardTest, FaultInsideTheGuardComesBack) {
  const uint64_t faults = GuardedSigbusCount();
  EXPECT_TRUE(GuardSigbus([&] { *Word(8192) = 1; }));
  Truncate(4096);
  uint64_t seen = 0;
  EXPECT_FALSE(GuardSigbus([&] { seen = *Word(8192); }));
  EXPECT_EQ(seen, 0u);
  // SIGBUS is unblocked again: a second fault is caught the same way, and
  // a nested guard returns to the inner one.
  EXPECT_FALSE(GuardSigbus([&] { *Word(4096) = 2; }));
  bool inner = true;
  EXPECT_TRUE(
      GuardSigbus([&] { inner = GuardSigbus([&] { *Word(8192) = 3; }); }));
  EXPECT_FALSE(inner);
  EXPECT_EQ(GuardedSigbusCount(), faults + 3);
  EXPECT_TRUE(GuardSigbus([&] { *Word(0) = 4; }));  // the first page is there
}

TEST_F(DataGuardTest, FaultOutsideAGuardStillKills) {
  ASSERT_TRUE(GuardSigbus([] {}));  // the handler is installed
  Truncate(4096);
  const pid_t pid = fork();
  if (pid == 0) {
    *Word(8192) = 1;  // unguarded
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  // The previous disposition decides: the default kills with SIGBUS; a
  // sanitizer's handler reports, then exits non-zero or aborts.
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  if (WIFSIGNALED(status)) {
    EXPECT_TRUE(WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT)
        << WTERMSIG(status);
  }
}

TEST_F(DataGuardTest, WatchReportsAWrongSizeOnce) {
  DataFileWatch watch(file_.get(), kBytes);
  EXPECT_THAT(watch.Check(), IsOk());
  EXPECT_FALSE(watch.damaged());
  Truncate(kBytes + 4096);
  EXPECT_THAT(watch.Check(), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_TRUE(watch.damaged());
  EXPECT_NE(watch.reason().find("grown"), std::string::npos);
  // Damage is for good, even if the size comes back.
  Truncate(kBytes);
  EXPECT_THAT(watch.Check(), StatusIs(absl::StatusCode::kDataLoss));
  bool ran = false;
  EXPECT_THAT(watch.Guard([&] { ran = true; }),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_FALSE(ran);
}

// The race the size check cannot close: the file shrinks after the check.
// Here the watch expects the shrunk size, so Check passes and the access
// itself faults; the guarded allocator answers DATA_LOSS and reads full.
TEST_F(DataGuardTest, GuardedArenaFaultIsDataLoss) {
  AllocatorOptions options;
  options.strategy = Strategy::kArena;
  options.begin = 8192;
  options.end = kBytes;
  std::span<std::byte> meta = file_->bytes().subspan(4096, 256);
  absl::StatusOr<std::unique_ptr<Arena>> arena = Arena::Create(meta, options);
  ASSERT_THAT(arena, IsOk());
  Truncate(4096);
  DataFileWatch watch(file_.get(), 4096);
  GuardedAllocator guarded(*std::move(arena), &watch);
  EXPECT_THAT(guarded.Allocate(64, 0).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_TRUE(watch.damaged());
  EXPECT_NE(watch.reason().find("SIGBUS"), std::string::npos);
  const AllocatorStats stats = guarded.Stats();
  EXPECT_EQ(stats.used_bytes, stats.capacity_bytes);
  EXPECT_EQ(stats.free_bytes, 0u);
  EXPECT_THAT(guarded.CheckInvariants(), StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace shmalloc::server
