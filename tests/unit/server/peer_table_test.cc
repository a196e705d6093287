// PeerTable (server/peer_table.h): credentials by gRPC peer string and the
// per-peer session count.
#include "server/peer_table.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::server {
namespace {

using ::shmalloc::testing::IsOk;
using ::shmalloc::testing::StatusIs;

TEST(PeerTableTest, KeysComeFromTheKernelsCredentials) {
  PeerTable peers;
  peers.Record(7, PeerCredentials{1234, 1000, 1000});
  peers.Record(8, PeerCredentials{0, 1001, 1001});  // another PID namespace
  ASSERT_TRUE(peers.Lookup("fd:7").has_value());
  EXPECT_EQ(peers.Lookup("fd:7")->pid, 1234);
  EXPECT_FALSE(peers.Lookup("fd:9").has_value());
  EXPECT_FALSE(peers.Lookup("fd:x").has_value());
  EXPECT_FALSE(peers.Lookup("unix:").has_value());
  // The declared pid is ignored when the kernel knows better.
  EXPECT_EQ(peers.Key("fd:7", 99), "pid 1234 (uid 1000)");
  EXPECT_EQ(peers.Key("fd:8", 99),
            "uid 1001 outside the daemon's PID namespace, declared pid 99");
  EXPECT_EQ(peers.Key("ipv4:127.0.0.1:5555", 42), "tcp pid 42");
  // A reused descriptor takes the new connection's credentials.
  peers.Record(7, PeerCredentials{4321, 0, 0});
  EXPECT_EQ(peers.Key("fd:7", 0), "pid 4321 (uid 0)");
}

TEST(PeerTableTest, SessionsAreCountedPerKeyUpToTheLimit) {
  PeerTable peers;
  EXPECT_THAT(peers.AcquireSession("a", 2), IsOk());
  EXPECT_THAT(peers.AcquireSession("a", 2), IsOk());
  EXPECT_THAT(peers.AcquireSession("a", 2),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(peers.sessions("a"), 2u);
  EXPECT_THAT(peers.AcquireSession("b", 2), IsOk());
  peers.ReleaseSession("a");
  EXPECT_THAT(peers.AcquireSession("a", 2), IsOk());
  peers.ReleaseSession("a");
  peers.ReleaseSession("a");
  peers.ReleaseSession("a");  // below zero: ignored
  EXPECT_EQ(peers.sessions("a"), 0u);
  EXPECT_THAT(peers.AcquireSession("c", 0),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(peers.sessions("c"), 0u);
}

}  // namespace
}  // namespace shmalloc::server
