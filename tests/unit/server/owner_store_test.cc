#include "server/owner_store.h"

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

OwnerInfo Info(uint64_t session, uint64_t size, bool detached = false,
               uint64_t request = 0) {
  return OwnerInfo{session, size, size - 1, 1000, request, detached};
}

class OwnerStoreTest : public ::testing::Test {
 protected:
  std::vector<uint64_t> area_ =
      std::vector<uint64_t>(OwnerStore::Bytes(8) / sizeof(uint64_t), 0);
  std::span<std::byte> bytes() {
    return std::as_writable_bytes(std::span<uint64_t>(area_));
  }
};

TEST_F(OwnerStoreTest, RecordsSurviveAReopenWithTheirLookups) {
  absl::StatusOr<OwnerStore> store = OwnerStore::Format(bytes(), nullptr);
  ASSERT_THAT(store, IsOk());
  EXPECT_EQ(store->capacity(), 8u);
  store->Add(4096, Info(7, 64));
  store->Add(8192, Info(7, 128, /*detached=*/true, 55));
  store->Add(12288, Info(9, 64, false, 55));
  ASSERT_TRUE(store->Remove(4096).has_value());
  store->Add(16384, Info(9, 32));  // reuses the freed record

  absl::StatusOr<OwnerStore> again = OwnerStore::Open(bytes(), nullptr);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->live(), 3u);
  EXPECT_EQ(again->owned_allocations(), 2u);
  EXPECT_EQ(again->owned_bytes(), 96u);
  EXPECT_EQ(again->detached_bytes(), 128u);
  EXPECT_THAT(again->OwnedBy(9), UnorderedElementsAre(12288, 16384));
  EXPECT_TRUE(again->OwnedBy(7).empty());  // its one left is detached
  EXPECT_THAT(again->FindRequest(7, 55), ElementsAre(8192));
  EXPECT_THAT(again->FindRequest(9, 55), ElementsAre(12288));
  const SessionShare share = again->Share(7);
  EXPECT_EQ(share.used_bytes, 128u);  // detached bytes count for the quota
  EXPECT_EQ(share.owned_bytes, 0u);
  EXPECT_FALSE(again->Find(4096).has_value());
}

TEST_F(OwnerStoreTest, ClearDropsEverythingInThreeWords) {
  absl::StatusOr<OwnerStore> store = OwnerStore::Format(bytes(), nullptr);
  ASSERT_THAT(store, IsOk());
  for (uint64_t i = 1; i <= 8; ++i) store->Add(i * 4096, Info(3, 16));
  EXPECT_EQ(store->free_records(), 0u);
  store->Clear();
  absl::StatusOr<OwnerStore> again = OwnerStore::Open(bytes(), nullptr);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->live(), 0u);
  EXPECT_EQ(again->free_records(), 8u);
}

TEST_F(OwnerStoreTest, ABrokenFreeChainOrCounterIsDataLoss) {
  absl::StatusOr<OwnerStore> store = OwnerStore::Format(bytes(), nullptr);
  ASSERT_THAT(store, IsOk());
  store->Add(4096, Info(3, 16));
  store->Add(8192, Info(3, 16));
  ASSERT_TRUE(store->Remove(4096).has_value());
  auto* header = reinterpret_cast<OwnerStoreHeader*>(area_.data());
  header->live = 2;  // says two in use, one is free
  EXPECT_THAT(OwnerStore::Open(bytes(), nullptr).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  header->live = 1;
  header->free_head = 5;  // past carved
  EXPECT_THAT(OwnerStore::Open(bytes(), nullptr).status(),
              StatusIs(absl::StatusCode::kDataLoss));
  header->free_head = 1;
  EXPECT_THAT(OwnerStore::Open(bytes(), nullptr), IsOk());
}

TEST_F(OwnerStoreTest, EveryStoreOfAddAndRemoveIsLogged) {
  std::vector<uint64_t> log_area(UndoLogBytes(64) / 8, 0);
  // One base over both areas, as in the meta file.
  std::vector<uint64_t> file(area_.size() + log_area.size(), 0);
  std::span<std::byte> base = std::as_writable_bytes(std::span<uint64_t>(file));
  std::span<std::byte> owners = base.first(area_.size() * 8);
  absl::StatusOr<UndoLog> log =
      UndoLog::Format(base, base.subspan(area_.size() * 8));
  ASSERT_THAT(log, IsOk());
  absl::StatusOr<OwnerStore> store = OwnerStore::Format(owners, &*log);
  ASSERT_THAT(store, IsOk());
  store->Add(4096, Info(3, 16));
  const std::vector<uint64_t> before = file;
  log->Begin();
  store->Add(8192, Info(3, 16));
  ASSERT_TRUE(store->Remove(4096).has_value());
  EXPECT_LE(log->length(), 2 * kOwnerWordsPerOp);
  log->Abort();
  EXPECT_TRUE(
      std::equal(before.begin(), before.begin() + area_.size(), file.begin()));
}

}  // namespace
}  // namespace shmalloc::server
