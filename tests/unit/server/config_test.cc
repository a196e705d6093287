#include "server/config.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/unix_socket.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::IsOkAndHolds;
using ::shmalloc::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

absl::StatusOr<std::string> NoDefaultSocket() {
  return absl::InternalError("default socket must not be consulted");
}
absl::StatusOr<std::string> DefaultSocket() { return std::string("/d.sock"); }

TEST(ConfigTest, EmptyTextIsAConfigWithNoRegions) {
  absl::StatusOr<v1::DaemonConfig> config = ParseConfig("", "empty");
  SHMALLOC_ASSERT_OK(config);
  EXPECT_EQ(config->regions_size(), 0);
}

TEST(ConfigTest, ParseErrorNamesOriginAndLine) {
  absl::StatusOr<v1::DaemonConfig> config =
      ParseConfig("shm_dir: \"/x\"\nregions { nme: \"a\" }\n", "my.textproto");
  EXPECT_THAT(config, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(config.status().message(), HasSubstr("my.textproto:2:"));
}

TEST(ConfigTest, MissingFileIsNotFound) {
  EXPECT_THAT(LoadConfigFile("/nonexistent/shmallocd.textproto"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ConfigTest, DefaultConfigHasOneDemoRegionPerStrategyWithin48MiB) {
  absl::StatusOr<v1::DaemonConfig> config =
      LoadConfigFile(SHMALLOC_SOURCE_DIR "/deploy/shmallocd.textproto");
  SHMALLOC_ASSERT_OK(config);
  uint64_t total = 0;
  std::vector<int> strategies;
  for (const v1::CreateRegionRequest& region : config->regions()) {
    total += region.size_bytes();
    strategies.push_back(region.strategy());
  }
  EXPECT_THAT(strategies, ElementsAre(v1::STRATEGY_ARENA, v1::STRATEGY_POOL,
                                      v1::STRATEGY_BUDDY, v1::STRATEGY_SLAB,
                                      v1::STRATEGY_FREE_LIST));
  EXPECT_LE(total, uint64_t{48} << 20);
  EXPECT_THAT(ResolveOptions(*config, {}, DefaultSocket), IsOk());
}

TEST(ConfigTest, FlagsOverrideConfigOverrideDefaults) {
  v1::DaemonConfig config;
  config.set_socket("/config.sock");
  config.set_shm_dir("/config-shm");
  config.add_listen("7070");
  FlagValues flags;
  flags.socket = "/flag.sock";
  flags.listen = {"0.0.0.0:9"};
  absl::StatusOr<DaemonOptions> options =
      ResolveOptions(config, flags, NoDefaultSocket);
  SHMALLOC_ASSERT_OK(options);
  EXPECT_EQ(options->socket, "/flag.sock");
  EXPECT_EQ(options->shm_dir, "/config-shm");
  EXPECT_FALSE(options->own_shm_dir);  // given: used as it is
  EXPECT_THAT(options->listen, ElementsAre("0.0.0.0:9"));

  options = ResolveOptions(config, {}, NoDefaultSocket);
  SHMALLOC_ASSERT_OK(options);
  EXPECT_EQ(options->socket, "/config.sock");
  EXPECT_THAT(options->listen, ElementsAre("127.0.0.1:7070"));

  options = ResolveOptions(v1::DaemonConfig(), {}, DefaultSocket);
  SHMALLOC_ASSERT_OK(options);
  EXPECT_EQ(options->socket, "/d.sock");
  EXPECT_EQ(options->shm_dir, "/dev/shm/shmalloc");
  EXPECT_TRUE(options->own_shm_dir);
  EXPECT_TRUE(options->listen.empty());
  EXPECT_EQ(options->limits.max_region_bytes, uint64_t{64} << 30);
  EXPECT_EQ(options->limits.max_regions, 256u);
  EXPECT_EQ(options->limits.max_batch, 65536u);
  EXPECT_EQ(options->limits.max_sessions, 4096u);
}

TEST(ConfigTest, BadRegionsAreInvalidArgument) {
  v1::DaemonConfig config;
  config.add_regions()->set_name("Bad/Name");
  EXPECT_THAT(ResolveOptions(config, {}, DefaultSocket),
              StatusIs(absl::StatusCode::kInvalidArgument));
  config.Clear();
  config.add_regions()->set_name("a");
  config.add_regions()->set_name("a");
  EXPECT_THAT(ResolveOptions(config, {}, DefaultSocket),
              StatusIs(absl::StatusCode::kInvalidArgument));
  config.Clear();
  config.mutable_limits()->set_max_region_bytes(100);
  v1::CreateRegionRequest* big = config.add_regions();
  big->set_name("big");
  big->set_size_bytes(101);
  EXPECT_THAT(ResolveOptions(config, {}, DefaultSocket),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ConfigTest, ListenAddressesDefaultToLoopback) {
  EXPECT_THAT(NormalizeListenAddress("7070"), IsOkAndHolds("127.0.0.1:7070"));
  EXPECT_THAT(NormalizeListenAddress(":7070"), IsOkAndHolds("127.0.0.1:7070"));
  EXPECT_THAT(NormalizeListenAddress("[::1]:80"), IsOkAndHolds("[::1]:80"));
  EXPECT_THAT(NormalizeListenAddress("localhost:0"),
              IsOkAndHolds("localhost:0"));
  for (const char* bad : {"", "host", "host:", "host:x", "1:65536"}) {
    EXPECT_THAT(NormalizeListenAddress(bad),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << bad;
  }
}

TEST(ConfigTest, MetricsListenIsOffByDefaultAndNormalized) {
  absl::StatusOr<DaemonOptions> options =
      ResolveOptions(v1::DaemonConfig(), {}, DefaultSocket);
  ASSERT_THAT(options, IsOk());
  EXPECT_EQ(options->metrics_listen, "");
  FlagValues flags;
  flags.metrics_listen = "9477";
  options = ResolveOptions(v1::DaemonConfig(), flags, DefaultSocket);
  ASSERT_THAT(options, IsOk());
  EXPECT_EQ(options->metrics_listen, "127.0.0.1:9477");
  for (const char* bad : {"abc", "1.2.3.4:99999", ":0x"}) {
    flags.metrics_listen = bad;
    options = ResolveOptions(v1::DaemonConfig(), flags, DefaultSocket);
    EXPECT_THAT(options, StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
    EXPECT_THAT(std::string(options.status().message()),
                HasSubstr("--metrics_listen"))
        << bad;
  }
}

TEST(SocketPathTest, EnvironmentWinsThenRunThenXdgThenTmp) {
  SocketEnvironment env;
  env.uid = 1000;
  env.xdg_runtime_dir = "/run/user/1000";
  auto all = [](const std::string&, bool) { return true; };
  auto none = [](const std::string&, bool) { return false; };
  auto xdg_only = [](const std::string& dir, bool) {
    return dir == "/run/user/1000";
  };
  EXPECT_EQ(ChooseSocketPath(env, all), "/run/shmalloc/shmalloc.sock");
  EXPECT_EQ(ChooseSocketPath(env, xdg_only), "/run/user/1000/shmalloc.sock");
  EXPECT_EQ(ChooseSocketPath(env, none), "/tmp/shmalloc-1000/shmalloc.sock");
  env.shmalloc_socket = "/x.sock";
  EXPECT_EQ(ChooseSocketPath(env, none), "/x.sock");
}

}  // namespace
}  // namespace shmalloc::server
