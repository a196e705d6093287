// GetRegionMap, ListAllocations and the `shmalloc map` / `shmalloc leaks`
// commands against a real shmallocd: a POOL region with every other block
// freed has exact runs and owners (checked against a block-by-block model);
// the CLI's SVG parses as XML (/usr/bin/python3's minidom) with one rect per
// run; the leak report groups a departed client's detached allocations and
// another client's old ones with the right counts, bytes and ages; paging
// with page_size 7 returns every allocation exactly once.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/integration/subprocess.h"
#include "tests/testing/status_matchers.h"

#ifndef SHMALLOC_CLI_PATH
#error "SHMALLOC_CLI_PATH must name the shmalloc binary"
#endif

namespace shmalloc::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kPython[] = "/usr/bin/python3";
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kBlocks = 64;

absl::StatusOr<v1::RegionMap> GetMap(v1::Allocator::Stub& stub,
                                     const std::string& region,
                                     uint32_t buckets = 0) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
  v1::GetRegionMapRequest request;
  request.set_region(region);
  request.set_buckets(buckets);
  v1::RegionMap map;
  grpc::Status s = stub.GetRegionMap(&context, request, &map);
  if (!s.ok()) return ToAbsl(s);
  return map;
}

absl::StatusOr<v1::ListAllocationsResponse> List(
    v1::Allocator::Stub& stub, const v1::ListAllocationsRequest& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
  v1::ListAllocationsResponse response;
  grpc::Status s = stub.ListAllocations(&context, request, &response);
  if (!s.ok()) return ToAbsl(s);
  return response;
}

class MapLeaksTest : public DaemonTest {
 protected:
  void CreatePool(const std::string& name) {
    v1::CreateRegionRequest request;
    request.set_name(name);
    request.set_strategy(v1::STRATEGY_POOL);
    request.set_size_bytes(kBlocks * kBlock);
    request.set_block_size(kBlock);
    ASSERT_THAT(CreateRegion(stub(), request), IsOk());
  }

  ProcessResult Cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {SHMALLOC_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessOptions options;
    options.env["SHMALLOC_SOCKET"] = daemon_->socket_path();
    absl::StatusOr<ProcessResult> r = RunProcess(argv, options);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : ProcessResult{};
  }

  // Runs a Python program with `input` on stdin; returns its stdout.
  std::string Python(const std::string& program, const std::string& input) {
    ProcessOptions options;
    options.stdin_data = input;
    absl::StatusOr<ProcessResult> r =
        RunProcess({kPython, "-c", program}, options);
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return "";
    EXPECT_EQ(r->exit_code, 0) << r->err;
    return std::string(absl::StripTrailingAsciiWhitespace(r->out));
  }
};

struct RunView {
  uint64_t offset, length;
  v1::RunKind kind;
  uint64_t session;
  bool operator==(const RunView&) const = default;
};
std::ostream& operator<<(std::ostream& os, const RunView& r) {
  return os << "{" << r.offset << ", " << r.length << ", "
            << v1::RunKind_Name(r.kind) << ", " << r.session << "}";
}

TEST_F(MapLeaksTest, EveryOtherBlockFreedGivesExactRunsAndOwners) {
  CreatePool("maps");
  auto alpha = Session::Open(stub(), "alpha");
  auto beta = Session::Open(stub(), "beta");
  ASSERT_THAT(alpha, IsOk());
  ASSERT_THAT(beta, IsOk());
  auto a = Allocate(stub(), **alpha, "maps", kBlock, 16);
  auto b = Allocate(stub(), **beta, "maps", kBlock, 8);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  // Free every other block of alpha's.
  std::map<uint64_t, uint64_t> owner;  // block offset -> session
  std::vector<uint64_t> freed;
  const std::vector<uint64_t> a_offsets = Offsets(*a);
  for (size_t i = 0; i < a_offsets.size(); ++i) {
    if (i % 2 == 1) {
      freed.push_back(a_offsets[i]);
    } else {
      owner[a_offsets[i]] = (*alpha)->id();
    }
  }
  for (uint64_t o : Offsets(*b)) owner[o] = (*beta)->id();
  ASSERT_THAT(Free(stub(), **alpha, "maps", freed), IsOk());

  absl::StatusOr<v1::Region> region = GetRegion(stub(), "maps");
  ASSERT_THAT(region, IsOk());
  // The model: block by block, merged.
  std::vector<RunView> expected = {
      {0, region->heap_begin(), v1::RUN_KIND_METADATA, 0}};
  for (uint64_t o = region->heap_begin(); o < region->heap_end(); o += kBlock) {
    auto it = owner.find(o);
    const RunView block =
        it == owner.end() ? RunView{o, kBlock, v1::RUN_KIND_FREE, 0}
                          : RunView{o, kBlock, v1::RUN_KIND_USED, it->second};
    RunView& last = expected.back();
    if (last.kind == block.kind && last.session == block.session) {
      last.length += kBlock;
    } else {
      expected.push_back(block);
    }
  }
  absl::StatusOr<v1::RegionMap> map = GetMap(stub(), "maps");
  ASSERT_THAT(map, IsOk());
  std::vector<RunView> got;
  for (const v1::RegionRun& r : map->runs()) {
    got.push_back({r.offset(), r.length_bytes(), r.kind(), r.session_id()});
    if (r.kind() == v1::RUN_KIND_USED) {
      EXPECT_EQ(r.client_name(),
                r.session_id() == (*alpha)->id() ? "alpha" : "beta");
    }
  }
  EXPECT_EQ(got, expected);
  absl::StatusOr<v1::RegionStats> stats = GetRegionStats(stub(), "maps");
  ASSERT_THAT(stats, IsOk());
  EXPECT_EQ(map->used_bytes(), stats->used_bytes());
  EXPECT_EQ(map->used_bytes(), (8 + 8) * kBlock);
  ASSERT_EQ(map->sessions_size(), 2);  // 8 blocks each: ties by id
  // Buckets: one per block plus the header (heap_end / kBlock slices).
  absl::StatusOr<v1::RegionMap> buckets = GetMap(stub(), "maps", kBlocks + 1);
  ASSERT_THAT(buckets, IsOk());
  ASSERT_EQ(buckets->buckets_size(), static_cast<int>(kBlocks + 1));
  for (const v1::RegionBucket& bucket : buckets->buckets()) {
    auto it = owner.find(bucket.offset());
    EXPECT_EQ(bucket.dominant_session_id(), it == owner.end() ? 0 : it->second)
        << bucket.offset();
    EXPECT_DOUBLE_EQ(bucket.used_fraction(), it == owner.end() ? 0.0 : 1.0);
  }

  // The CLI: a terminal map with the legend, and an SVG with one rect per run.
  const std::string svg = daemon_->dir() + "/maps.svg";
  ProcessResult cli = Cli({"map", "maps", "--svg", svg, "--buckets=65"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("alpha (session "));
  EXPECT_THAT(cli.out, HasSubstr("beta (session "));
  EXPECT_THAT(cli.out, HasSubstr("free runs by size"));
  EXPECT_THAT(cli.out, ::testing::Not(HasSubstr("\x1b[")));  // not a TTY
  const std::string runs_svg = daemon_->dir() + "/runs.svg";
  cli = Cli({"map", "maps", "--svg", runs_svg, "--color"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("\x1b[48;5;"));
  const std::string count_rects =
      "import sys, xml.dom.minidom\n"
      "d = xml.dom.minidom.parse(sys.argv[1])\n"
      "r = d.getElementsByTagName('rect')\n"
      "print(sum(1 for e in r if e.getAttribute('class') == sys.argv[2]),"
      " sum(1 for e in r if e.getAttribute('class') == 'legend'),"
      " len(d.getElementsByTagName('title')) > 0,"
      " d.documentElement.tagName)\n";
  absl::StatusOr<ProcessResult> parsed =
      RunProcess({kPython, "-c", count_rects, runs_svg, "run"});
  ASSERT_THAT(parsed, IsOk());
  ASSERT_EQ(parsed->exit_code, 0) << parsed->err;
  EXPECT_EQ(absl::StripTrailingAsciiWhitespace(parsed->out),
            absl::StrCat(map->runs_size(), " 4 True svg"));  // 2 + free + hdr
  parsed = RunProcess({kPython, "-c", count_rects, svg, "bucket"});
  ASSERT_THAT(parsed, IsOk());
  ASSERT_EQ(parsed->exit_code, 0) << parsed->err;
  EXPECT_EQ(absl::StripTrailingAsciiWhitespace(parsed->out),
            absl::StrCat(kBlocks + 1, " 4 True svg"));
  // Standalone: nothing fetched from anywhere.
  absl::StatusOr<ProcessResult> refs =
      RunProcess({kPython, "-c",
                  "import sys\ns = open(sys.argv[1]).read()\n"
                  "print('href' in s, s.count('http'))",
                  runs_svg});
  ASSERT_THAT(refs, IsOk());
  EXPECT_EQ(absl::StripTrailingAsciiWhitespace(refs->out),
            "False 1");  // the xmlns only
}

TEST_F(MapLeaksTest, LeakReportGroupsDetachedAndOldAllocations) {
  CreatePool("leaky");
  auto holder = Session::Open(stub(), "holder");
  ASSERT_THAT(holder, IsOk());
  const absl::Time holder_start = absl::Now();
  ASSERT_THAT(Allocate(stub(), **holder, "leaky", 1000, 4), IsOk());
  // Let the holder's allocations age (a poll on the daemon's own figure,
  // not a sleep standing in for an event).
  v1::ListAllocationsRequest all;
  all.set_region("leaky");
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  for (;;) {
    absl::StatusOr<v1::ListAllocationsResponse> page = List(stub(), all);
    ASSERT_THAT(page, IsOk());
    ASSERT_EQ(page->allocations_size(), 4);
    if (page->allocations(0).age_ms() >= 2000) break;
    ASSERT_LT(absl::Now(), deadline);
    absl::SleepFor(absl::Milliseconds(50));
  }
  uint64_t leaver_id = 0;
  const absl::Time leaver_start = absl::Now();
  {
    auto leaver = Session::Open(stub(), "leaver");
    ASSERT_THAT(leaver, IsOk());
    leaver_id = (*leaver)->id();
    ASSERT_THAT(Allocate(stub(), **leaver, "leaky", 3000, 5, true), IsOk());
    ASSERT_THAT(Allocate(stub(), **leaver, "leaky", 3000, 3), IsOk());
  }  // the session ends: its 3 owned blocks go, the 5 detached stay
  PollResult gone = PollStats(
      stub(),
      [](const v1::Stats& s) {
        for (const v1::RegionStats& r : s.regions()) {
          if (r.name() == "leaky") return r.live_allocations() == 9;
        }
        return false;
      },
      absl::Seconds(20));
  ASSERT_TRUE(gone.done);

  const absl::Time before_report = absl::Now();
  ProcessResult cli = Cli({"leaks", "leaky", "--json"});
  const absl::Duration report_took = absl::Now() - before_report;
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  // One line per client: name, count, bytes, requested, detached, oldest,
  // and the age histogram's counts.
  const std::string program = absl::StrCat(
      "import json, sys\nd = json.load(sys.stdin)\n"
      "print(d['allocations'], d['bytes'], len(d['detached']))\n"
      "for c in sorted(d['clients'], key=lambda c: c['client']):\n"
      "  leaver = c['client'] == 'leaver (ended)' and ",
      leaver_id,
      " in c['session_ids']\n"
      "  print('leaver' if leaver else c['client'], c['allocations'], "
      "c['bytes'], c['requested_bytes'], c['detached'], c['oldest_age_ms'], "
      "[h['count'] for h in c['age_histogram']])\n");
  const std::string out = Python(program, cli.out);
  std::vector<std::string> lines = absl::StrSplit(out, '\n');
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_EQ(lines[0], absl::StrCat(9, " ", 9 * kBlock, " ", 5));
  // holder: 4 x 1000 B in 4 KiB blocks, aged >= 2 s, at most since it began.
  std::vector<std::string> h = absl::StrSplit(lines[1], ' ');
  ASSERT_GE(h.size(), 6u) << lines[1];
  EXPECT_EQ(absl::StrCat(h[0], " ", h[1], " ", h[2], " ", h[3], " ", h[4]),
            absl::StrCat("holder 4 ", 4 * kBlock, " 4000 0"));
  uint64_t holder_oldest = 0;
  ASSERT_TRUE(absl::SimpleAtoi(h[5], &holder_oldest));
  EXPECT_GE(holder_oldest, 2000u);
  EXPECT_LE(holder_oldest, static_cast<uint64_t>(absl::ToInt64Milliseconds(
                               absl::Now() - holder_start + absl::Seconds(1))));
  EXPECT_THAT(lines[1], HasSubstr("[4, 0, 0, 0, 0]"));
  std::vector<std::string> l = absl::StrSplit(lines[2], ' ');
  ASSERT_GE(l.size(), 6u) << lines[2];
  EXPECT_EQ(absl::StrCat(l[0], " ", l[1], " ", l[2], " ", l[3], " ", l[4]),
            absl::StrCat("leaver 5 ", 5 * kBlock, " 15000 5"));
  uint64_t leaver_oldest = 0;
  ASSERT_TRUE(absl::SimpleAtoi(l[5], &leaver_oldest));
  EXPECT_LE(leaver_oldest, static_cast<uint64_t>(absl::ToInt64Milliseconds(
                               absl::Now() - leaver_start + absl::Seconds(1))));
  EXPECT_LT(leaver_oldest, holder_oldest);

  // The text report names the departed client (its session has ended) and
  // lists its detached allocations.
  cli = Cli({"leaks"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("holder"));
  EXPECT_THAT(cli.out, HasSubstr("leaver (ended)"));
  EXPECT_THAT(cli.out, HasSubstr("detached allocations nobody has freed: 5"));

  // --older-than keeps the holder's (>= 2 s) and drops the leaver's (young,
  // unless this machine stalled for over a second since the report).
  if (report_took < absl::Milliseconds(800)) {
    cli = Cli({"leaks", "leaky", "--older-than=1s", "--json"});
    ASSERT_EQ(cli.exit_code, 0) << cli.err;
    EXPECT_EQ(Python("import json, sys\nd = json.load(sys.stdin)\n"
                     "print(d['allocations'], [c['client'] for c in "
                     "d['clients']])",
                     cli.out),
              "4 ['holder']");
  }
  cli = Cli({"leaks", "--older-than=1h"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_THAT(cli.out, HasSubstr("0 live allocations"));
}

TEST_F(MapLeaksTest, PagesOfSevenReturnEveryAllocationOnce) {
  CreatePool("p1");
  CreatePool("p2");
  ASSERT_THAT(CreateRegion(stub(), "arena", v1::STRATEGY_ARENA), IsOk());
  auto s = Session::Open(stub(), "pager");
  ASSERT_THAT(s, IsOk());
  std::set<std::pair<std::string, uint64_t>> want;
  auto a = Allocate(stub(), **s, "p1", 100, 30);
  auto b = Allocate(stub(), **s, "p2", 100, 12, true);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  for (uint64_t o : Offsets(*a)) want.emplace("p1", o);
  for (uint64_t o : Offsets(*b)) want.emplace("p2", o);

  for (const std::string region : {"", "p1"}) {
    v1::ListAllocationsRequest request;
    request.set_region(region);
    request.set_page_size(7);
    std::set<std::pair<std::string, uint64_t>> seen;
    int pages = 0;
    do {
      absl::StatusOr<v1::ListAllocationsResponse> page = List(stub(), request);
      ASSERT_THAT(page, IsOk());
      ASSERT_LE(page->allocations_size(), 7);
      EXPECT_EQ(page->total_size(), region.empty() ? 42u : 30u);
      for (const v1::Allocation& x : page->allocations()) {
        EXPECT_TRUE(seen.emplace(x.region(), x.offset()).second)
            << x.region() << " " << x.offset() << " twice";
        EXPECT_EQ(x.session_id(), (*s)->id());
        EXPECT_EQ(x.client_name(), "pager");
        EXPECT_EQ(x.detached(), x.region() == "p2");
        EXPECT_EQ(x.size_bytes(), kBlock);
        EXPECT_EQ(x.requested_bytes(), 100u);
      }
      request.set_page_token(page->next_page_token());
      ++pages;
    } while (!request.page_token().empty());
    if (region.empty()) {
      EXPECT_EQ(seen, want);
      EXPECT_EQ(pages, 6);  // 42 = 6 x 7
    } else {
      EXPECT_EQ(seen.size(), 30u);
      EXPECT_EQ(pages, 5);  // 30 = 4 x 7 + 2
    }
  }
  // The CLI pages too, and counts them all.
  ProcessResult cli = Cli({"leaks", "--page_size=7", "--json"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(Python("import json, sys\nd = json.load(sys.stdin)\n"
                   "print(d['allocations'], d['pages'], len(d['detached']))",
                   cli.out),
            "42 6 12");

  // A reset between pages makes the token stale; bad requests are refused.
  v1::ListAllocationsRequest request;
  request.set_region("p1");
  request.set_page_size(7);
  absl::StatusOr<v1::ListAllocationsResponse> first = List(stub(), request);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(ResetRegion(stub(), "p1", /*force=*/true), IsOk());
  request.set_page_token(first->next_page_token());
  absl::StatusOr<v1::ListAllocationsResponse> stale = List(stub(), request);
  EXPECT_THAT(stale, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(std::string(stale.status().message()),
              HasSubstr("page token is stale"));
  request.set_page_token("garbage");
  EXPECT_THAT(List(stub(), request),
              StatusIs(absl::StatusCode::kInvalidArgument));
  request.clear_page_token();
  request.set_page_size(10001);
  EXPECT_THAT(List(stub(), request),
              StatusIs(absl::StatusCode::kInvalidArgument));
  request.set_page_size(0);
  request.set_region("nope");
  EXPECT_THAT(List(stub(), request), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(GetMap(stub(), "nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(GetMap(stub(), "p2", 4097),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // ARENA: one USED run from the cursor, nothing listed.
  absl::StatusOr<v1::RegionMap> arena = GetMap(stub(), "arena");
  ASSERT_THAT(arena, IsOk());
  ASSERT_EQ(arena->runs_size(), 2);
  EXPECT_EQ(arena->runs(1).kind(), v1::RUN_KIND_FREE);
}

}  // namespace
}  // namespace shmalloc::testing
