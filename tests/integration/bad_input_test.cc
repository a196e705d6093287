// A table of bad requests against the real shmallocd: each gets the exact
// status code of the contract (proto/shmalloc/v1/shmalloc.proto;
// docs/architecture.md, docs/design/durability.md), and changes nothing —
// every region's RegionStats, the region list, the session count and the
// files in shm_dir are the same before and after. The one expected
// difference: a refusal for lack of space counts in failed_allocations.
//
// One daemon serves the whole table (a bad request changes nothing, and each
// row checks exactly that), with these regions:
//   fl     FREE_LIST 1 MiB: `live` (256 B, owned), `freed` (allocated, freed)
//   pool   POOL 1 MiB, block 64: `pool_live` (owned)
//   buddy  BUDDY 1 MiB;  slab  SLAB 1 MiB, default classes (16 .. 16384)
//   arena  ARENA 1 MiB, cursor moved by one allocation
//   tiny   FREE_LIST 64 KiB, nearly filled by one detached allocation
//   quota  FREE_LIST 1 MiB, 4096 B per session, 3072 B used by the session
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using Code = absl::StatusCode;

constexpr uint64_t kMaxRegionBytes = 256 << 20;  // limits in the config

struct Env {
  std::unique_ptr<DaemonProcess> daemon;
  std::unique_ptr<Session> session;
  v1::Allocator::Stub* stub = nullptr;
  uint64_t sid = 0;
  v1::Region fl, pool, tiny;
  uint64_t live = 0;               // live in fl
  uint64_t freed = 0;              // freed in fl
  uint64_t pool_live = 0;          // live in pool
  uint64_t ended_sid = 0;          // a session that was opened and closed
  std::string ended_token;         // its token
  std::unique_ptr<Session> other;  // a second open session
};

struct BadRequest {
  std::string name;
  Code code;
  std::function<absl::Status(Env&)> call;
  // Refusals for lack of space count once in this region's
  // failed_allocations; everything else must stay identical.
  std::string failed_allocation_in = "";
};

void PrintTo(const BadRequest& row, std::ostream* os) { *os << row.name; }

absl::Status CreateFreeList(Env& env, const std::string& name) {
  return CreateRegion(*env.stub, name, v1::STRATEGY_FREE_LIST, 64 << 10)
      .status();
}

absl::Status CreateWith(
    Env& env, const std::function<void(v1::CreateRegionRequest&)>& edit) {
  v1::CreateRegionRequest request;
  request.set_name("fresh");
  request.set_strategy(v1::STRATEGY_FREE_LIST);
  request.set_size_bytes(64 << 10);
  edit(request);
  return CreateRegion(*env.stub, request).status();
}

absl::Status AllocateWith(
    Env& env, const std::function<void(v1::AllocateRequest&)>& edit) {
  v1::AllocateRequest request;
  request.set_session_id(env.sid);
  request.set_session_token(env.session->token());
  request.set_region("fl");
  request.set_size_bytes(64);
  edit(request);
  return Allocate(*env.stub, request).status();
}

absl::Status FreeIn(Env& env, const std::string& region,
                    std::vector<uint64_t> offsets) {
  return Free(*env.stub, *env.session, region, offsets).status();
}

// A Free of the live "fl" allocation with `edit` applied to the request.
absl::Status FreeWith(Env& env,
                      const std::function<void(v1::FreeRequest&)>& edit) {
  v1::FreeRequest request;
  request.set_session_id(env.sid);
  request.set_session_token(env.session->token());
  request.set_region("fl");
  request.add_offsets(env.live);
  edit(request);
  return Free(*env.stub, request).status();
}

absl::Status Watch(Env& env, const std::string& region, uint32_t interval_ms) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::WatchStatsRequest request;
  request.set_region(region);
  request.set_interval_ms(interval_ms);
  auto reader = env.stub->WatchStats(&context, request);
  v1::Stats stats;
  if (reader->Read(&stats)) {
    context.TryCancel();
    while (reader->Read(&stats)) {
    }
    (void)reader->Finish();
    return absl::OkStatus();  // A stream that serves is not an error.
  }
  return ToAbsl(reader->Finish());
}

std::vector<BadRequest> Table() {
  const std::string long_name(64, 'a');
  return {
      // CreateRegion: names.
      {"CreateNameWithSlash", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, "a/b"); }},
      {"CreateNameDotDot", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, ".."); }},
      {"CreateNameParentPath", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, "../escape"); }},
      {"CreateNameEmpty", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, ""); }},
      {"CreateName64Chars", Code::kInvalidArgument,
       [long_name](Env& e) { return CreateFreeList(e, long_name); }},
      {"CreateNameUpperCase", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, "Upper"); }},
      {"CreateNameLeadingDot", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, ".hidden"); }},
      {"CreateNameLeadingDash", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, "-x"); }},
      {"CreateNameWithSpace", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, "a b"); }},
      {"CreateNameWithNul", Code::kInvalidArgument,
       [](Env& e) { return CreateFreeList(e, std::string("a\0b", 3)); }},
      // CreateRegion: geometry.
      {"CreateSizeZero", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(e, [](auto& r) { r.set_size_bytes(0); });
       }},
      {"CreateSizeOverLimit", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(
             e, [](auto& r) { r.set_size_bytes(4 * kMaxRegionBytes); });
       }},
      {"CreateTwice", Code::kAlreadyExists,
       [](Env& e) { return CreateFreeList(e, "fl"); }},
      {"CreateStrategyUnspecified", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(
             e, [](auto& r) { r.set_strategy(v1::STRATEGY_UNSPECIFIED); });
       }},
      {"CreateStrategyUnknown", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(
             e, [](auto& r) { r.set_strategy(static_cast<v1::Strategy>(99)); });
       }},
      {"CreatePoolWithoutBlockSize", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(e,
                           [](auto& r) { r.set_strategy(v1::STRATEGY_POOL); });
       }},
      {"CreatePoolBlockSizeNotMultipleOf8", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(e, [](auto& r) {
           r.set_strategy(v1::STRATEGY_POOL);
           r.set_block_size(12);
         });
       }},
      {"CreateSlabClassesNotAscending", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(e, [](auto& r) {
           r.set_strategy(v1::STRATEGY_SLAB);
           r.add_size_classes(64);
           r.add_size_classes(32);
         });
       }},
      {"CreateSlabClassNotMultipleOf8", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(e, [](auto& r) {
           r.set_strategy(v1::STRATEGY_SLAB);
           r.add_size_classes(12);
           r.add_size_classes(24);
         });
       }},
      {"CreateBuddyMinBlockNotPowerOfTwo", Code::kInvalidArgument,
       [](Env& e) {
         return CreateWith(e, [](auto& r) {
           r.set_strategy(v1::STRATEGY_BUDDY);
           r.set_block_size(96);
         });
       }},
      // GetRegion, DeleteRegion, ResetRegion.
      {"GetUnknownRegion", Code::kNotFound,
       [](Env& e) { return GetRegion(*e.stub, "nope").status(); }},
      {"GetRegionBadName", Code::kInvalidArgument,
       [](Env& e) { return GetRegion(*e.stub, "../fl").status(); }},
      {"DeleteUnknownRegion", Code::kNotFound,
       [](Env& e) { return DeleteRegion(*e.stub, "nope"); }},
      {"DeleteParentPath", Code::kInvalidArgument,
       [](Env& e) { return DeleteRegion(*e.stub, "../shm", true); }},
      {"DeleteWithLiveAllocations", Code::kFailedPrecondition,
       [](Env& e) { return DeleteRegion(*e.stub, "fl"); }},
      {"DeleteWithOnlyDetachedAllocations", Code::kFailedPrecondition,
       [](Env& e) { return DeleteRegion(*e.stub, "tiny"); }},
      {"DeleteArenaWithMovedCursor", Code::kFailedPrecondition,
       [](Env& e) { return DeleteRegion(*e.stub, "arena"); }},
      {"ResetWithLiveAllocations", Code::kFailedPrecondition,
       [](Env& e) { return ResetRegion(*e.stub, "fl").status(); }},
      {"ResetWithOnlyDetachedAllocations", Code::kFailedPrecondition,
       [](Env& e) { return ResetRegion(*e.stub, "tiny").status(); }},
      {"ResetUnknownRegion", Code::kNotFound,
       [](Env& e) { return ResetRegion(*e.stub, "nope", true).status(); }},
      // Allocate.
      {"AllocateSizeZero", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_size_bytes(0); });
       }},
      {"AllocateOverRegion", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_size_bytes(2 << 20); });
       }},
      {"AllocateOverAnyLimit", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_size_bytes(std::numeric_limits<uint64_t>::max());
         });
       }},
      {"AllocateOverPoolBlock", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("pool");
           r.set_size_bytes(65);
         });
       }},
      {"AllocateOverLargestSlabClass", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("slab");
           r.set_size_bytes(16385);
         });
       }},
      {"AllocateAlignment3", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_alignment(3); });
       }},
      {"AllocateAlignment48", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_alignment(48); });
       }},
      // Over kMaxAlignment (2 MiB): refused whatever the strategy.
      {"AllocateAlignment4MiB", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_alignment(4 << 20); });
       }},
      // BUDDY and SLAB blocks are aligned relative to the heap's begin
      // (4 KiB): more is refused; FREE_LIST and ARENA pad instead.
      {"AllocateBuddyAlignment8192", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("buddy");
           r.set_alignment(8192);
         });
       }},
      {"AllocateSlabAlignment8192", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("slab");
           r.set_alignment(8192);
         });
       }},
      {"AllocateCount65537", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_count(65537); });
       }},
      {"AllocateCountMaxUint32", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_count(std::numeric_limits<uint32_t>::max());
         });
       }},
      {"AllocateUnknownRegion", Code::kNotFound,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_region("nope"); });
       }},
      {"AllocateUnknownSession", Code::kNotFound,
       [](Env& e) {
         return AllocateWith(e,
                             [&e](auto& r) { r.set_session_id(e.sid + 1000); });
       }},
      {"AllocateSessionZero", Code::kNotFound,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_session_id(0); });
       }},
      {"AllocateWithEndedSession", Code::kNotFound,
       [](Env& e) {
         return AllocateWith(e,
                             [&e](auto& r) { r.set_session_id(e.ended_sid); });
       }},
      {"AllocateWrongToken", Code::kPermissionDenied,
       [](Env& e) {
         return AllocateWith(
             e, [](auto& r) { r.set_session_token(std::string(16, 'x')); });
       }},
      {"AllocateMissingToken", Code::kPermissionDenied,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.clear_session_token(); });
       }},
      {"AllocateWithAnotherSessionsToken", Code::kPermissionDenied,
       [](Env& e) {
         return AllocateWith(
             e, [&e](auto& r) { r.set_session_token(e.other->token()); });
       }},
      {"AllocateBadRegionName", Code::kInvalidArgument,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) { r.set_region("../fl"); });
       }},
      {"AllocateRegionFull", Code::kResourceExhausted,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("tiny");
           r.set_size_bytes(16 << 10);
         });
       },
       "tiny"},
      {"AllocateBatchDoesNotFitAllOrNothing", Code::kResourceExhausted,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("pool");
           r.set_count(20000);  // 20000 x 64 B > 1 MiB
         });
       },
       "pool"},
      {"AllocateBuddyBatchFailsPartwayAllOrNothing", Code::kResourceExhausted,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("buddy");
           r.set_size_bytes(33);  // 20000 x 33 B fit the free bytes, but
           r.set_count(20000);    // each takes a 64 B block: 1.28 MB > 1 MiB
         });
       },
       "buddy"},
      {"AllocateArenaBatchDoesNotFit", Code::kResourceExhausted,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("arena");
           r.set_count(20000);  // 20000 x 64 B > 1 MiB
         });
       },
       "arena"},
      {"AllocateQuotaExceeded", Code::kResourceExhausted,
       [](Env& e) {
         return AllocateWith(e, [](auto& r) {
           r.set_region("quota");
           r.set_size_bytes(2048);
         });
       }},
      // Free.
      {"FreeNeverAllocated", Code::kFailedPrecondition,
       [](Env& e) {
         return FreeIn(e, "fl", {e.fl.heap_begin() + (512 << 10)});
       }},
      {"FreeInteriorOffset", Code::kFailedPrecondition,
       [](Env& e) { return FreeIn(e, "fl", {e.live + 16}); }},
      {"FreePoolInteriorOffset", Code::kFailedPrecondition,
       [](Env& e) { return FreeIn(e, "pool", {e.pool_live + 8}); }},
      {"FreePoolNeverAllocatedBlock", Code::kFailedPrecondition,
       [](Env& e) { return FreeIn(e, "pool", {e.pool.heap_end() - 64}); }},
      {"FreeAlreadyFreed", Code::kFailedPrecondition,
       [](Env& e) { return FreeIn(e, "fl", {e.freed}); }},
      {"FreeDuplicateOffsets", Code::kFailedPrecondition,
       [](Env& e) {
         return FreeIn(e, "fl", {e.live, e.live});
       }},
      {"FreeLiveThenAlreadyFreedAllOrNothing", Code::kFailedPrecondition,
       [](Env& e) {
         return FreeIn(e, "fl", {e.live, e.freed});
       }},
      {"FreeOutOfRange", Code::kInvalidArgument,
       [](Env& e) { return FreeIn(e, "fl", {e.fl.heap_end() + 64}); }},
      {"FreeLiveThenOutOfRangeAllOrNothing", Code::kInvalidArgument,
       [](Env& e) {
         return FreeIn(e, "fl", {e.live, e.fl.heap_end() + 64});
       }},
      {"FreeOffsetZero", Code::kInvalidArgument,
       [](Env& e) { return FreeIn(e, "fl", {0}); }},
      {"FreeOffsetInSegmentHeader", Code::kInvalidArgument,
       [](Env& e) { return FreeIn(e, "fl", {64}); }},
      {"FreeOnArena", Code::kFailedPrecondition,
       [](Env& e) { return FreeIn(e, "arena", {e.fl.heap_begin()}); }},
      {"FreeUnknownRegion", Code::kNotFound,
       [](Env& e) { return FreeIn(e, "nope", {e.live}); }},
      {"FreeUnknownSession", Code::kNotFound,
       [](Env& e) {
         return FreeWith(e, [&e](auto& r) { r.set_session_id(e.sid + 1000); });
       }},
      {"FreeWithEndedSession", Code::kNotFound,
       [](Env& e) {
         return FreeWith(e, [&e](auto& r) { r.set_session_id(e.ended_sid); });
       }},
      {"FreeWrongToken", Code::kPermissionDenied,
       [](Env& e) {
         return FreeWith(
             e, [](auto& r) { r.set_session_token(std::string(16, 'x')); });
       }},
      {"FreeMissingToken", Code::kPermissionDenied,
       [](Env& e) {
         return FreeWith(e, [](auto& r) { r.clear_session_token(); });
       }},
      {"FreeOverMaxBatchOffsets", Code::kInvalidArgument,
       [](Env& e) {
         std::vector<uint64_t> offsets(65537);
         for (size_t i = 0; i < offsets.size(); ++i) {
           offsets[i] = e.fl.heap_begin() + 16 * i;
         }
         return FreeIn(e, "fl", offsets);
       }},
      // Stats and sessions.
      {"GetStatsUnknownRegion", Code::kNotFound,
       [](Env& e) { return GetStats(*e.stub, "nope").status(); }},
      {"WatchStatsUnknownRegion", Code::kNotFound,
       [](Env& e) { return Watch(e, "nope", 10); }},
      {"WatchStatsIntervalBelow10ms", Code::kInvalidArgument,
       [](Env& e) { return Watch(e, "fl", 5); }},
      {"OpenSessionClientNameOver128Bytes", Code::kInvalidArgument,
       [](Env& e) {
         return Session::Open(*e.stub, std::string(129, 'c')).status();
       }},
      {"ResumeUnknownToken", Code::kNotFound,
       [](Env& e) {
         return Session::Resume(*e.stub, std::string(16, 'u')).status();
       }},
      {"ResumeEndedSessionsToken", Code::kNotFound,
       [](Env& e) { return Session::Resume(*e.stub, e.ended_token).status(); }},
      {"ResumeAttachedSession", Code::kFailedPrecondition,
       [](Env& e) {
         return Session::Resume(*e.stub, e.session->token()).status();
       }},
  };
}

// Everything a bad request must leave alone.
struct Snapshot {
  std::vector<v1::RegionStats> regions;  // by name
  v1::ListRegionsResponse list;
  uint64_t sessions = 0;
  uint64_t region_count = 0;
  std::vector<std::string> files;
};

Snapshot Take(Env& env) {
  Snapshot s;
  absl::StatusOr<v1::Stats> stats = GetStats(*env.stub);
  EXPECT_THAT(stats, IsOk());
  if (stats.ok()) {
    s.regions.assign(stats->regions().begin(), stats->regions().end());
    std::sort(s.regions.begin(), s.regions.end(),
              [](const auto& a, const auto& b) { return a.name() < b.name(); });
    s.sessions = stats->sessions();
    s.region_count = stats->region_count();
  }
  absl::StatusOr<v1::ListRegionsResponse> list = ListRegions(*env.stub);
  EXPECT_THAT(list, IsOk());
  if (list.ok()) s.list = *list;
  s.files = env.daemon->ShmDirFiles();
  return s;
}

class BadInputTest : public ::testing::TestWithParam<BadRequest> {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  static Env* env_;
};

Env* BadInputTest::env_ = nullptr;

void BadInputTest::SetUpTestSuite() {
  env_ = new Env();
  Env& e = *env_;
  e.daemon = std::make_unique<DaemonProcess>(DaemonOptions{
      .config_text =
          absl::StrCat("limits { max_region_bytes: ", kMaxRegionBytes, " }\n"),
      .extra_flags = {}});
  SHMALLOC_ASSERT_OK(e.daemon->Start());
  e.stub = &e.daemon->stub();
  auto session = Session::Open(*e.stub, "bad-input");
  ASSERT_THAT(session, IsOk());
  e.session = *std::move(session);
  e.sid = e.session->id();

  auto fl = CreateRegion(*e.stub, "fl", v1::STRATEGY_FREE_LIST);
  auto pool = CreateRegion(*e.stub, "pool", v1::STRATEGY_POOL);
  auto tiny = CreateRegion(*e.stub, "tiny", v1::STRATEGY_FREE_LIST, 64 << 10);
  ASSERT_THAT(fl, IsOk());
  ASSERT_THAT(pool, IsOk());
  ASSERT_THAT(tiny, IsOk());
  e.fl = *fl;
  e.pool = *pool;
  e.tiny = *tiny;
  ASSERT_THAT(CreateRegion(*e.stub, "buddy", v1::STRATEGY_BUDDY), IsOk());
  ASSERT_THAT(CreateRegion(*e.stub, "slab", v1::STRATEGY_SLAB), IsOk());
  ASSERT_THAT(CreateRegion(*e.stub, "arena", v1::STRATEGY_ARENA), IsOk());
  v1::CreateRegionRequest quota;
  quota.set_name("quota");
  quota.set_strategy(v1::STRATEGY_FREE_LIST);
  quota.set_size_bytes(1 << 20);
  quota.set_quota_bytes_per_session(4096);
  ASSERT_THAT(CreateRegion(*e.stub, quota), IsOk());

  auto live = Allocate(*e.stub, *e.session, "fl", 256);
  auto freed = Allocate(*e.stub, *e.session, "fl", 256);
  auto pool_live = Allocate(*e.stub, *e.session, "pool", 64);
  ASSERT_THAT(live, IsOk());
  ASSERT_THAT(freed, IsOk());
  ASSERT_THAT(pool_live, IsOk());
  e.live = live->extents(0).offset();
  e.freed = freed->extents(0).offset();
  e.pool_live = pool_live->extents(0).offset();
  ASSERT_THAT(Free(*e.stub, *e.session, "fl", {e.freed}), IsOk());
  ASSERT_THAT(Allocate(*e.stub, *e.session, "arena", 64), IsOk());
  ASSERT_THAT(
      Allocate(*e.stub, *e.session, "tiny", 60 << 10, 1, /*detached=*/true),
      IsOk());
  ASSERT_THAT(Allocate(*e.stub, *e.session, "quota", 3072), IsOk());
  {
    auto ended = Session::Open(*e.stub, "ended");
    ASSERT_THAT(ended, IsOk());
    e.ended_sid = (*ended)->id();
    e.ended_token = (*ended)->token();
    (*ended)->Close();
    auto other = Session::Open(*e.stub, "other");
    ASSERT_THAT(other, IsOk());
    e.other = *std::move(other);
    PollResult closed = PollStats(
        *e.stub, [](const v1::Stats& s) { return s.sessions() == 2; },
        absl::Seconds(1));
    ASSERT_TRUE(closed.done) << closed.stats.DebugString();
  }
}

void BadInputTest::TearDownTestSuite() {
  if (env_ == nullptr) return;
  if (env_->session != nullptr) env_->session->Close();
  if (env_->other != nullptr) env_->other->Close();
  if (env_->daemon != nullptr && env_->daemon->running()) {
    SHMALLOC_EXPECT_OK(env_->daemon->Stop());
  }
  delete env_;
  env_ = nullptr;
}

TEST_P(BadInputTest, GetsItsStatusCodeAndChangesNothing) {
  ASSERT_NE(env_, nullptr);
  ASSERT_TRUE(env_->daemon->running());
  const BadRequest& row = GetParam();
  Snapshot before = Take(*env_);
  ASSERT_FALSE(before.regions.empty());

  EXPECT_THAT(row.call(*env_), StatusIs(row.code));

  Snapshot after = Take(*env_);
  if (!row.failed_allocation_in.empty()) {
    for (v1::RegionStats& r : before.regions) {
      if (r.name() == row.failed_allocation_in) {
        r.set_failed_allocations(r.failed_allocations() + 1);
      }
    }
  }
  EXPECT_EQ(after.sessions, before.sessions);
  EXPECT_EQ(after.region_count, before.region_count);
  EXPECT_EQ(after.files, before.files);
  EXPECT_TRUE(MessageDifferencer::Equals(after.list, before.list))
      << "regions before:\n"
      << before.list.DebugString() << "after:\n"
      << after.list.DebugString();
  ASSERT_EQ(after.regions.size(), before.regions.size());
  for (size_t i = 0; i < before.regions.size(); ++i) {
    MessageDifferencer differ;
    differ.TreatAsSet(
        v1::RegionStats::descriptor()->FindFieldByName("sessions"));
    differ.TreatAsSet(
        v1::RegionStats::descriptor()->FindFieldByName("size_histogram"));
    std::string diff;
    differ.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differ.Compare(before.regions[i], after.regions[i]))
        << "region " << before.regions[i].name() << " changed:\n"
        << diff;
  }
}

INSTANTIATE_TEST_SUITE_P(Table, BadInputTest, ::testing::ValuesIn(Table()),
                         [](const ::testing::TestParamInfo<BadRequest>& info) {
                           return info.param.name;
                         });

TEST(BadInputTableTest, HasAtLeastThirtyRows) {
  EXPECT_GE(Table().size(), 30u);
}

}  // namespace
}  // namespace shmalloc::testing
