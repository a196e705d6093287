// ClientTest: DaemonTest (a fresh shmallocd per test, clean exit checked in
// TearDown) plus a connected shmalloc::client::Client and helpers to create
// regions and run client_worker processes.
#ifndef TESTS_INTEGRATION_CLIENT_CLIENT_FIXTURE_H_
#define TESTS_INTEGRATION_CLIENT_CLIENT_FIXTURE_H_

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "shmalloc/block_cache.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"
#include "tests/integration/client/child_process.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {

namespace sc = ::shmalloc::client;

class ClientTest : public DaemonTest {
 protected:
  void SetUp() override {
    DaemonTest::SetUp();
    if (HasFatalFailure()) return;
    absl::StatusOr<std::unique_ptr<sc::Client>> c =
        sc::Client::Connect({.target = daemon_->target()});
    ASSERT_THAT(c, IsOk());
    client_ = *std::move(c);
  }
  void TearDown() override {
    client_.reset();
    DaemonTest::TearDown();
  }

  // Creates region `name` and maps it.
  std::shared_ptr<sc::Region> MakeRegion(const std::string& name,
                                         sc::Strategy strategy,
                                         uint64_t size_bytes,
                                         uint64_t block_size = 0) {
    sc::CreateRegionOptions o;
    o.name = name;
    o.strategy = strategy;
    o.size_bytes = size_bytes;
    o.block_size = block_size;
    absl::StatusOr<sc::RegionInfo> info = client_->CreateRegion(o);
    EXPECT_THAT(info, IsOk());
    absl::StatusOr<std::shared_ptr<sc::Region>> region =
        client_->OpenRegion(name);
    EXPECT_THAT(region, IsOk());
    return region.ok() ? *region : nullptr;
  }

  // A BlockCache over `region` that refills `batch` blocks at a time and
  // keeps at most twice that per thread and centrally (small, so a test
  // sees refills and drains).
  std::unique_ptr<sc::BlockCache> MakeCache(
      const std::shared_ptr<sc::Region>& region, uint32_t batch) {
    absl::StatusOr<std::unique_ptr<sc::BlockCache>> cache =
        sc::BlockCache::Create(region, {.batch = batch,
                                        .thread_capacity = 2 * batch,
                                        .central_capacity = 2 * batch});
    EXPECT_THAT(cache, IsOk());
    return cache.ok() ? *std::move(cache) : nullptr;
  }

  sc::RegionStats StatsOf(const std::string& name) {
    absl::StatusOr<sc::DaemonStats> s = client_->GetStats(name);
    EXPECT_THAT(s, IsOk());
    if (!s.ok() || s->regions.empty()) return {};
    return s->regions.front();
  }

  std::unique_ptr<ChildProcess> Worker(const std::vector<std::string>& args) {
    absl::StatusOr<std::unique_ptr<ChildProcess>> c =
        ChildProcess::Start(CLIENT_WORKER_PATH, args);
    EXPECT_THAT(c, IsOk());
    return c.ok() ? *std::move(c) : nullptr;
  }

  std::unique_ptr<sc::Client> client_;
};

}  // namespace shmalloc::testing

#endif  // TESTS_INTEGRATION_CLIENT_CLIENT_FIXTURE_H_
