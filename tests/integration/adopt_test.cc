// AdoptAllocations against a real daemon: a producer session allocates
// detached blocks and hands their offsets to a consumer session, which
// adopts them. The producer's end leaves them alone; the consumer's end
// frees them. Adopting a block some session owns, a wrong token and every
// other refusal change nothing; a retry with the same request id is
// answered once.
#include <google/protobuf/util/message_differencer.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

using ::google::protobuf::util::MessageDifferencer;

constexpr absl::Duration kReclaimDeadline = absl::Seconds(10);

struct AdoptCall {
  uint64_t session_id = 0;
  std::string token;
  std::string region = "r";
  std::vector<uint64_t> offsets;
  uint64_t generation = 0;
  std::string request_id;
};

absl::Status Adopt(v1::Allocator::Stub& stub, const AdoptCall& call) {
  v1::AdoptRequest request;
  request.set_session_id(call.session_id);
  request.set_session_token(call.token);
  request.set_region(call.region);
  request.mutable_offsets()->Add(call.offsets.begin(), call.offsets.end());
  request.set_generation(call.generation);
  request.set_request_id(call.request_id);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
  v1::AdoptResponse response;
  return ToAbsl(stub.AdoptAllocations(&context, request, &response));
}

AdoptCall By(const Session& session, std::vector<uint64_t> offsets) {
  AdoptCall call;
  call.session_id = session.id();
  call.token = session.token();
  call.offsets = std::move(offsets);
  return call;
}

const v1::SessionUsage* UsageOf(const v1::RegionStats& stats, uint64_t id) {
  for (const v1::SessionUsage& s : stats.sessions()) {
    if (s.session_id() == id) {
      return &s;
    }
  }
  return nullptr;
}

class AdoptTest : public DaemonTest {};

TEST_F(AdoptTest, AdoptedBlocksOutliveTheProducerAndDieWithTheConsumer) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_BUDDY), IsOk());
  absl::StatusOr<std::unique_ptr<Session>> producer =
      Session::Open(stub(), "producer");
  absl::StatusOr<std::unique_ptr<Session>> consumer =
      Session::Open(stub(), "consumer");
  ASSERT_THAT(producer, IsOk());
  ASSERT_THAT(consumer, IsOk());
  absl::StatusOr<v1::AllocateResponse> handed =
      Allocate(stub(), **producer, "r", 200, 3, /*detached=*/true);
  ASSERT_THAT(handed, IsOk());
  ASSERT_THAT(Allocate(stub(), **producer, "r", 200, 2), IsOk());  // owned

  AdoptCall call = By(**consumer, Offsets(*handed));
  call.generation = handed->generation();
  ASSERT_THAT(Adopt(stub(), call), IsOk());
  absl::StatusOr<v1::RegionStats> adopted = GetRegionStats(stub(), "r");
  ASSERT_THAT(adopted, IsOk());
  EXPECT_EQ(adopted->detached_allocations(), 0u);
  const v1::SessionUsage* usage = UsageOf(*adopted, (*consumer)->id());
  ASSERT_NE(usage, nullptr) << adopted->DebugString();
  EXPECT_EQ(usage->live_allocations(), 3u);

  // The producer's end frees its two owned blocks, not the adopted three.
  (*producer)->Close();
  PollResult after_producer = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 1 && s.regions(0).live_allocations() == 3;
      },
      kReclaimDeadline);
  ASSERT_TRUE(after_producer.done) << after_producer.stats.DebugString();

  // The consumer's end frees them.
  (*consumer)->Close();
  PollResult after_consumer = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.sessions() == 0 && s.regions(0).live_allocations() == 0;
      },
      kReclaimDeadline);
  ASSERT_TRUE(after_consumer.done) << after_consumer.stats.DebugString();
  EXPECT_EQ(after_consumer.stats.regions(0).used_bytes(), 0u);
}

TEST_F(AdoptTest, EveryRefusalLeavesTheRegionUnchanged) {
  v1::CreateRegionRequest create;
  create.set_name("r");
  create.set_strategy(v1::STRATEGY_BUDDY);
  create.set_size_bytes(1 << 20);
  create.set_max_batch(4);
  ASSERT_THAT(CreateRegion(stub(), create), IsOk());
  ASSERT_THAT(CreateRegion(stub(), "arena", v1::STRATEGY_ARENA), IsOk());
  absl::StatusOr<std::unique_ptr<Session>> a = Session::Open(stub(), "a");
  absl::StatusOr<std::unique_ptr<Session>> b = Session::Open(stub(), "b");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  absl::StatusOr<v1::AllocateResponse> owned =
      Allocate(stub(), **a, "r", 200, 2);
  absl::StatusOr<v1::AllocateResponse> detached =
      Allocate(stub(), **a, "r", 200, 1, /*detached=*/true);
  ASSERT_THAT(owned, IsOk());
  ASSERT_THAT(detached, IsOk());
  const uint64_t d = Offsets(*detached)[0];
  const uint64_t o = Offsets(*owned)[0];
  absl::StatusOr<v1::RegionStats> before = GetRegionStats(stub(), "r");
  ASSERT_THAT(before, IsOk());

  auto refused = [&](const AdoptCall& call, absl::StatusCode code,
                     const std::string& what) {
    const absl::Status status = Adopt(stub(), call);
    EXPECT_EQ(status.code(), code) << what << ": " << status;
    absl::StatusOr<v1::RegionStats> now = GetRegionStats(stub(), "r");
    ASSERT_THAT(now, IsOk());
    EXPECT_TRUE(MessageDifferencer::Equals(*before, *now))
        << what << " changed the region:\n"
        << now->DebugString();
  };
  // Another session's owned block: adopting it would steal it.
  refused(By(**b, {o}), absl::StatusCode::kFailedPrecondition, "owned");
  refused(By(**b, {d, o}), absl::StatusCode::kFailedPrecondition,
          "detached and owned");
  refused(By(**b, {d, d}), absl::StatusCode::kFailedPrecondition, "twice");
  refused(By(**b, {d + 8}), absl::StatusCode::kFailedPrecondition,
          "not a start");
  refused(By(**b, {uint64_t{1} << 40}), absl::StatusCode::kInvalidArgument,
          "out of range");
  refused(By(**b, {d, d, d, d, d}), absl::StatusCode::kInvalidArgument,
          "over the region's max_batch");
  AdoptCall stale = By(**b, {d});
  stale.generation = detached->generation() + 1;
  refused(stale, absl::StatusCode::kFailedPrecondition, "stale generation");
  AdoptCall wrong_token = By(**b, {d});
  wrong_token.token = (*a)->token();
  refused(wrong_token, absl::StatusCode::kPermissionDenied, "wrong token");
  AdoptCall no_token = By(**b, {d});
  no_token.token.clear();
  refused(no_token, absl::StatusCode::kPermissionDenied, "no token");
  AdoptCall no_session = By(**b, {d});
  no_session.session_id = 987654321;
  refused(no_session, absl::StatusCode::kNotFound, "unknown session");
  AdoptCall no_region = By(**b, {d});
  no_region.region = "nope";
  refused(no_region, absl::StatusCode::kNotFound, "unknown region");
  AdoptCall arena = By(**b, {d});
  arena.region = "arena";
  refused(arena, absl::StatusCode::kFailedPrecondition, "ARENA region");

  // And the detached block is still adoptable.
  EXPECT_THAT(Adopt(stub(), By(**b, {d})), IsOk());
}

TEST_F(AdoptTest, ARetryWithTheSameRequestIdIsAnsweredOnce) {
  ASSERT_THAT(CreateRegion(stub(), "r", v1::STRATEGY_POOL), IsOk());
  absl::StatusOr<std::unique_ptr<Session>> a = Session::Open(stub(), "a");
  absl::StatusOr<std::unique_ptr<Session>> b = Session::Open(stub(), "b");
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  absl::StatusOr<v1::AllocateResponse> handed =
      Allocate(stub(), **a, "r", 64, 2, /*detached=*/true);
  ASSERT_THAT(handed, IsOk());
  AdoptCall call = By(**b, Offsets(*handed));
  call.request_id = "adopt-1";
  ASSERT_THAT(Adopt(stub(), call), IsOk());
  absl::StatusOr<v1::RegionStats> first = GetRegionStats(stub(), "r");
  ASSERT_THAT(first, IsOk());
  // The retry (its first answer lost, say) gets the first outcome.
  EXPECT_THAT(Adopt(stub(), call), IsOk());
  absl::StatusOr<v1::RegionStats> again = GetRegionStats(stub(), "r");
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(MessageDifferencer::Equals(*first, *again))
      << again->DebugString();
  // A new request for the same blocks: they are owned now.
  call.request_id = "adopt-2";
  EXPECT_EQ(Adopt(stub(), call).code(), absl::StatusCode::kFailedPrecondition);
  const v1::SessionUsage* usage = UsageOf(*again, (*b)->id());
  ASSERT_NE(usage, nullptr);
  EXPECT_EQ(usage->live_allocations(), 2u);
}

}  // namespace
}  // namespace shmalloc::testing
