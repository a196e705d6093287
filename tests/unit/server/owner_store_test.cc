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

TEST_F(OwnerStoreTest, AdoptMovesRecordsToTheSessionAcrossAReopen) {
  absl::StatusOr<OwnerStore> store = OwnerStore::Format(bytes(), nullptr);
  ASSERT_THAT(store, IsOk());
  store->Add(4096, Info(7, 64, /*detached=*/true, 55));
  store->Add(8192, Info(7, 128, /*detached=*/true));
  store->Add(12288, Info(9, 32));
  const std::vector<uint64_t> adopted = {4096, 8192};
  store->Adopt(adopted, 9);
  EXPECT_EQ(store->owned_allocations(), 3u);
  EXPECT_EQ(store->detached_allocations(), 0u);
  absl::StatusOr<OwnerStore> again = OwnerStore::Open(bytes(), nullptr);
  ASSERT_THAT(again, IsOk());
  for (const OwnerStore* s : {&*store, &*again}) {
    EXPECT_THAT(s->OwnedBy(9), UnorderedElementsAre(4096, 8192, 12288));
    EXPECT_EQ(s->Share(9).used_bytes, 224u);
    EXPECT_EQ(s->Share(9).owned_allocations, 3u);
    EXPECT_EQ(s->Share(7).live_allocations, 0u);  // 7 holds nothing now
    EXPECT_TRUE(s->FindRequest(7, 55).empty());   // the hash is cleared
    EXPECT_TRUE(s->FindRequest(9, 55).empty());
    EXPECT_EQ(s->detached_bytes(), 0u);
    const std::optional<OwnerInfo> info = s->Find(4096);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->session_id, 9u);
    EXPECT_FALSE(info->detached);
  }
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

// The batch paths, with the flat offset index (POOL / BUDDY) and without.
class OwnerStoreBatchTest : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr uint64_t kRecords = 64;
  static constexpr uint64_t kBlock = 64;
  OffsetIndex Index() const {
    return GetParam() ? OffsetIndex{4096, kBlock, 4096 + kRecords * kBlock}
                      : OffsetIndex{};
  }
  std::vector<uint64_t> area_ =
      std::vector<uint64_t>(OwnerStore::Bytes(kRecords) / sizeof(uint64_t), 0);
  std::span<std::byte> bytes() {
    return std::as_writable_bytes(std::span<uint64_t>(area_));
  }
  static std::vector<Extent> Blocks(uint64_t first, uint64_t n) {
    std::vector<Extent> e;
    for (uint64_t i = 0; i < n; ++i)
      e.push_back({4096 + (first + i) * kBlock, kBlock});
    return e;
  }
};

TEST_P(OwnerStoreBatchTest, BatchesKeepEveryLookupAcrossAReopen) {
  absl::StatusOr<OwnerStore> store =
      OwnerStore::Format(bytes(), nullptr, Index());
  ASSERT_THAT(store, IsOk());
  store->AddBatch(Blocks(0, 6), Info(7, 0, false, 11));
  store->AddBatch(Blocks(6, 3), Info(8, 0, /*detached=*/true, 11));
  store->AddBatch(Blocks(9, 2), Info(7, 0));
  EXPECT_EQ(store->live(), 11u);
  EXPECT_EQ(store->Find(4096 + 2 * kBlock)->size_bytes, kBlock);
  EXPECT_FALSE(store->Find(4096 + 2 * kBlock + 16).has_value());  // interior
  EXPECT_FALSE(store->Find(16).has_value());                      // below
  EXPECT_FALSE(store->Find(1 << 30).has_value());                 // above
  // Remove from the middle of the request's list, of both sessions.
  std::vector<uint64_t> sizes;
  const std::vector<uint64_t> gone = {4096 + 1 * kBlock, 4096 + 4 * kBlock,
                                      4096 + 7 * kBlock};
  store->RemoveBatch(gone, [&](uint64_t size) { sizes.push_back(size); });
  EXPECT_THAT(sizes, ElementsAre(kBlock, kBlock, kBlock));
  EXPECT_EQ(store->live(), 8u);
  for (uint64_t offset : gone) EXPECT_FALSE(store->Find(offset).has_value());

  for (int pass = 0; pass < 2; ++pass) {
    SCOPED_TRACE(pass == 0 ? "as built" : "reopened");
    OwnerStore& s = *store;
    EXPECT_THAT(s.FindRequest(7, 11),
                ElementsAre(4096, 4096 + 2 * kBlock, 4096 + 3 * kBlock,
                            4096 + 5 * kBlock));
    EXPECT_THAT(s.FindRequest(8, 11),
                ElementsAre(4096 + 6 * kBlock, 4096 + 8 * kBlock));
    EXPECT_THAT(s.OwnedBy(7),
                UnorderedElementsAre(4096, 4096 + 2 * kBlock, 4096 + 3 * kBlock,
                                     4096 + 5 * kBlock, 4096 + 9 * kBlock,
                                     4096 + 10 * kBlock));
    EXPECT_TRUE(s.OwnedBy(8).empty());
    EXPECT_EQ(s.Share(7).used_bytes, 6 * kBlock);
    EXPECT_EQ(s.Share(8).used_bytes, 2 * kBlock);
    EXPECT_EQ(s.owned_bytes(), 6 * kBlock);
    EXPECT_EQ(s.detached_bytes(), 2 * kBlock);
    EXPECT_EQ(s.All().size(), 8u);
    store = OwnerStore::Open(bytes(), nullptr, Index());
    ASSERT_THAT(store, IsOk());
  }
  // Emptying a session drops it; its request no longer matches.
  store->RemoveBatch(store->FindRequest(8, 11), [](uint64_t) {});
  EXPECT_TRUE(store->FindRequest(8, 11).empty());
  EXPECT_EQ(store->Share(8).live_allocations, 0u);
  EXPECT_EQ(store->Shares().size(), 1u);
  // Freed records are reused by the next batch.
  store->AddBatch(Blocks(20, 5), Info(9, 0));
  EXPECT_EQ(store->live(), 11u);
  EXPECT_THAT(OwnerStore::Open(bytes(), nullptr, Index()), IsOk());
}

TEST_P(OwnerStoreBatchTest, TwoRecordsOfOneOffsetAreDataLoss) {
  absl::StatusOr<OwnerStore> store =
      OwnerStore::Format(bytes(), nullptr, Index());
  ASSERT_THAT(store, IsOk());
  store->AddBatch(Blocks(0, 2), Info(7, 0));
  auto* records = reinterpret_cast<OwnerRecord*>(area_.data() +
                                                 sizeof(OwnerStoreHeader) / 8);
  records[1].offset = records[0].offset;
  EXPECT_THAT(OwnerStore::Open(bytes(), nullptr, Index()).status(),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST_P(OwnerStoreBatchTest, ABatchIsLoggedAndRollsBack) {
  std::vector<uint64_t> log_area(
      UndoLogBytes(4 * kRecords * kOwnerWordsPerOp) / 8, 0);
  std::vector<uint64_t> file(area_.size() + log_area.size(), 0);
  std::span<std::byte> base = std::as_writable_bytes(std::span<uint64_t>(file));
  std::span<std::byte> owners = base.first(area_.size() * 8);
  absl::StatusOr<UndoLog> log =
      UndoLog::Format(base, base.subspan(area_.size() * 8));
  ASSERT_THAT(log, IsOk());
  absl::StatusOr<OwnerStore> store = OwnerStore::Format(owners, &*log, Index());
  ASSERT_THAT(store, IsOk());
  store->AddBatch(Blocks(0, 10), Info(3, 0, false, 5));
  const std::vector<uint64_t> before = file;
  log->Begin();
  store->AddBatch(Blocks(10, 20), Info(3, 0, false, 6));
  store->RemoveBatch(std::vector<uint64_t>{4096, 4096 + 9 * kBlock},
                     [](uint64_t) {});
  EXPECT_LE(log->length(), 22 * kOwnerWordsPerOp);
  log->Abort();
  EXPECT_TRUE(
      std::equal(before.begin(), before.begin() + area_.size(), file.begin()));
  absl::StatusOr<OwnerStore> again = OwnerStore::Open(owners, &*log, Index());
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->live(), 10u);
  EXPECT_EQ(again->FindRequest(3, 5).size(), 10u);
}

INSTANTIATE_TEST_SUITE_P(Index, OwnerStoreBatchTest, ::testing::Bool(),
                         [](const auto& info) {
                           return info.param ? "Dense" : "Hash";
                         });

}  // namespace
}  // namespace shmalloc::server
