// The daemon side of the trust boundary, in process (issue 9): ARENA reset
// honours force and re-formats the shared metadata from the daemon's
// geometry whatever a client wrote into it; allocator metadata from before
// the O(1) counters is upgraded at Open.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "allocators/arena.h"
#include "allocators/pool.h"
#include "allocators/undo_log.h"
#include "common/segment_header.h"
#include "gtest/gtest.h"
#include "server/region.h"
#include "server/region_meta.h"
#include "server/region_name.h"
#include "server/region_registry.h"
#include "server/shm_file.h"
#include "tests/testing/status_matchers.h"
#include "tests/unit/server/temp_dir.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;

bool Alive() { return true; }

v1::CreateRegionRequest Request(const std::string& name, v1::Strategy strategy,
                                uint64_t size = 1 << 20) {
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(strategy);
  request.set_size_bytes(size);
  if (strategy == v1::STRATEGY_POOL) request.set_block_size(256);
  return request;
}

AllocateArgs Args(uint64_t size, uint32_t count = 1) {
  AllocateArgs args;
  args.session_id = 7;
  args.size = size;
  args.count = count;
  return args;
}

// A writable shared mapping of a whole file, as a client would have.
class FileMap {
 public:
  explicit FileMap(const std::string& path) {
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(fd, 0) << path;
    struct stat st {};
    fstat(fd, &st);
    size_ = static_cast<size_t>(st.st_size);
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    EXPECT_NE(p, MAP_FAILED);
    base_ = static_cast<std::byte*>(p);
  }
  ~FileMap() { munmap(base_, size_); }
  FileMap(const FileMap&) = delete;
  FileMap& operator=(const FileMap&) = delete;
  std::byte* base() const { return base_; }

 private:
  std::byte* base_ = nullptr;
  size_t size_ = 0;
};

void ExpectInHeap(const AllocateResult& result, const Region& region) {
  for (const Extent& e : result.extents) {
    EXPECT_GE(e.offset, kHeapBegin);
    EXPECT_LE(e.offset + e.size_bytes, kHeapBegin + region.capacity());
  }
}

class TrustRegionTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(TrustRegionTest, ArenaResetWithoutForceIsRefusedWhileUsed) {
  auto region = Region::Create(dir_.path(), Request("a", v1::STRATEGY_ARENA));
  ASSERT_THAT(region, IsOk());
  // An empty arena resets without force.
  EXPECT_THAT((*region)->Reset(false), IsOk());
  ASSERT_THAT((*region)->Allocate(Args(100, 3), Alive), IsOk());
  const v1::RegionStats before = (*region)->Stats();
  EXPECT_THAT((*region)->Reset(false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const v1::RegionStats after = (*region)->Stats();
  EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString());
  ASSERT_THAT((*region)->Reset(true), IsOk());
  EXPECT_EQ((*region)->Stats().used_bytes(), 0u);
  EXPECT_EQ((*region)->Stats().generation(), before.generation() + 1);
}

// A client scribbles every word of the arena metadata; the daemon's forced
// reset writes it back from the meta file's geometry, the next allocations
// are in the heap, and the region re-opens.
TEST_F(TrustRegionTest, ArenaResetReformatsScribbledMetadata) {
  auto region = Region::Create(dir_.path(), Request("a", v1::STRATEGY_ARENA));
  ASSERT_THAT(region, IsOk());
  ASSERT_THAT((*region)->Allocate(Args(4096), Alive), IsOk());
  {
    FileMap data(dir_.File(DataFileName("a")));
    auto* meta = reinterpret_cast<ArenaMeta*>(data.base() + kArenaMetaOffset);
    const uint64_t epoch = meta->epoch.load();
    std::memset(static_cast<void*>(meta), 0xA5, sizeof(ArenaMeta));
    meta->epoch.store(epoch);
    // The damaged cursor reads as a full arena: refused without force.
    EXPECT_THAT((*region)->Reset(false),
                StatusIs(absl::StatusCode::kFailedPrecondition));
    EXPECT_EQ((*region)->Allocate(Args(16), Alive).status().code(),
              absl::StatusCode::kDataLoss);
    ASSERT_THAT((*region)->Reset(true), IsOk());
    EXPECT_EQ(meta->header.magic, kMetaMagic);
    EXPECT_EQ(meta->header.begin, kHeapBegin);
    EXPECT_EQ(meta->header.end, kHeapBegin + (*region)->capacity());
    EXPECT_EQ(meta->cursor.load(), kHeapBegin);
    EXPECT_EQ(meta->layout_version, kArenaLayoutVersion);
    EXPECT_LE(meta->peak_used_bytes.load(), (*region)->capacity());
    EXPECT_GT(meta->epoch.load(), epoch);  // never goes back
  }
  absl::StatusOr<AllocateResult> a = (*region)->Allocate(Args(1000, 4), Alive);
  ASSERT_THAT(a, IsOk());
  ExpectInHeap(*a, **region);
  EXPECT_EQ(a->extents[0].offset, kHeapBegin);
  region->reset();
  EXPECT_THAT(Region::Open(dir_.path(), "a"), IsOk());
}

// A POOL region whose metadata predates the counters (pool layout 1) is
// upgraded at Open, in a transaction, and then counts in O(1).
TEST_F(TrustRegionTest, PoolMetadataWithoutCountersIsUpgradedAtOpen) {
  {
    auto region = Region::Create(dir_.path(), Request("p", v1::STRATEGY_POOL));
    ASSERT_THAT(region, IsOk());
    ASSERT_THAT((*region)->Allocate(Args(100, 3), Alive), IsOk());
  }
  {
    FileMap meta(dir_.File(MetaFileName("p")));
    auto* pool =
        reinterpret_cast<PoolMeta*>(meta.base() + kRegionMetaHeaderBytes);
    ASSERT_EQ(pool->layout_version, kPoolLayoutVersion);
    pool->layout_version = kPoolLegacyLayoutVersion;
    pool->live_allocations.store(0);
    pool->requested_bytes.store(0);
  }
  auto region = Region::Open(dir_.path(), "p");
  ASSERT_THAT(region, IsOk());
  EXPECT_EQ((*region)->Stats().live_allocations(), 3u);
  EXPECT_EQ((*region)->Stats().requested_bytes(), 300u);
  FileMap meta(dir_.File(MetaFileName("p")));
  auto* pool =
      reinterpret_cast<PoolMeta*>(meta.base() + kRegionMetaHeaderBytes);
  EXPECT_EQ(pool->layout_version, kPoolLayoutVersion);
  EXPECT_EQ(pool->live_allocations.load(), 3u);
  EXPECT_EQ(pool->requested_bytes.load(), 300u);
}

// The upgrade at Open is one transaction: crashed at any of its points, the
// next Open finds the pool either still at layout 1 (and upgrades it) or
// upgraded, never with counters that disagree with the slots.
TEST_F(TrustRegionTest, CounterUpgradeRecoversAtEveryCrashPoint) {
  {
    auto region = Region::Create(dir_.path(), Request("p", v1::STRATEGY_POOL));
    ASSERT_THAT(region, IsOk());
    ASSERT_THAT((*region)->Allocate(Args(100, 3), Alive), IsOk());
  }
  auto make_legacy = [&] {
    FileMap meta(dir_.File(MetaFileName("p")));
    auto* pool =
        reinterpret_cast<PoolMeta*>(meta.base() + kRegionMetaHeaderBytes);
    pool->layout_version = kPoolLegacyLayoutVersion;
    pool->live_allocations.store(0);
    pool->requested_bytes.store(0);
  };
  constexpr int kCrashed = 42;
  uint64_t k = 1;
  for (;; ++k) {
    make_legacy();
    const pid_t pid = fork();
    if (pid == 0) {
      UndoLog::SetCrashPoint(k, kCrashed);
      _exit(Region::Open(dir_.path(), "p").ok() ? 0 : 3);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    auto region = Region::Open(dir_.path(), "p");
    ASSERT_THAT(region, IsOk()) << "crash point " << k;
    EXPECT_EQ((*region)->Stats().live_allocations(), 3u) << k;
    EXPECT_EQ((*region)->Stats().requested_bytes(), 300u) << k;
    if (code == 0) break;
    ASSERT_EQ(code, kCrashed) << "crash point " << k;
  }
  std::printf("counter upgrade: %llu crash points covered\n",
              static_cast<unsigned long long>(k - 1));
  EXPECT_GT(k, 3u);
}

// max_region_bytes counts the metadata files too (review item L3): a POOL
// of 8-byte blocks whose owner records and slots are many times its heap is
// refused, with no file left behind; the same heap with big blocks fits.
TEST_F(TrustRegionTest, MetadataCountsAgainstMaxRegionBytes) {
  ServerLimits limits;
  limits.max_region_bytes = 4 << 20;
  RegionRegistry registry(dir_.path(), limits);
  v1::CreateRegionRequest tiny = Request("tiny", v1::STRATEGY_POOL);
  tiny.set_block_size(8);
  absl::Status refused = registry.Create(tiny).status();
  EXPECT_THAT(refused, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(refused.message().find("max_region_bytes"), std::string::npos);
  EXPECT_EQ(registry.size(), 0u);
  absl::StatusOr<std::vector<std::string>> files = ListDirectory(dir_.path());
  ASSERT_THAT(files, IsOk());
  EXPECT_TRUE(files->empty());
  v1::CreateRegionRequest big = Request("big", v1::STRATEGY_POOL);
  big.set_block_size(4096);
  EXPECT_THAT(registry.Create(big), IsOk());
  // Fewer owner records make the tiny-block pool fit.
  tiny.set_max_live_allocations(1024);
  EXPECT_THAT(registry.Create(tiny), IsOk());
}

// The default region directory is the daemon's own: created with exactly
// its mode (setgid, group r-x), and refused when it is a symlink, a file, or
// writable by group or others (someone could plant or remove files in it).
TEST_F(TrustRegionTest, OwnDirectoryIsCreatedWithItsModeAndChecked) {
  const std::string dir = dir_.File("regions");
  const mode_t saved = umask(077);
  EXPECT_THAT(PrepareOwnDirectory(dir, 02750), IsOk());
  umask(saved);
  struct stat st {};
  ASSERT_EQ(lstat(dir.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 02750u);
  EXPECT_THAT(PrepareOwnDirectory(dir, 02750), IsOk());  // again: fine

  ASSERT_EQ(chmod(dir.c_str(), 0770), 0);
  EXPECT_THAT(PrepareOwnDirectory(dir, 02750),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const std::string link = dir_.File("link");
  ASSERT_EQ(symlink(dir.c_str(), link.c_str()), 0);
  EXPECT_THAT(PrepareOwnDirectory(link, 02750),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  const std::string file = dir_.File("file");
  ASSERT_THAT(MappedFile::Create(file, 4096, 0600), IsOk());
  EXPECT_THAT(PrepareOwnDirectory(file, 02750),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(PrepareOwnDirectory(dir_.File("no/such/parent"), 02750),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace shmalloc::server
