// The `shmalloc` CLI as users run it: the real binary (SHMALLOC_CLI_PATH),
// fork/exec'd against a real shmallocd, checking stdout, stderr and the exit
// status (0 ok, 1 RPC error, 2 usage error). Effects are checked with
// GetStats over gRPC, never by scraping the daemon's logs.
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

constexpr char kPython[] = "/usr/bin/python3";

ProcessOptions StdinOptions(const std::string& input) {
  ProcessOptions options;
  options.stdin_data = input;
  return options;
}

class CliTest : public DaemonTest {
 protected:
  // Runs `shmalloc ARGS...` with SHMALLOC_SOCKET pointing at the daemon.
  ProcessResult Cli(const std::vector<std::string>& args,
                    ProcessOptions options = {}) {
    std::vector<std::string> argv = {SHMALLOC_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    if (!options.env.contains("SHMALLOC_SOCKET")) {
      options.env["SHMALLOC_SOCKET"] = daemon_->socket_path();
    }
    absl::StatusOr<ProcessResult> r = RunProcess(argv, options);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : ProcessResult{};
  }

  // Runs the CLI and expects exit 0 with nothing on stderr unless allowed.
  std::string CliOk(const std::vector<std::string>& args) {
    ProcessResult r = Cli(args);
    EXPECT_EQ(r.exit_code, 0)
        << "shmalloc " << absl::StrJoin(args, " ") << "\nstderr: " << r.err;
    return r.out;
  }

  // Returns what a Python snippet prints for JSON `document` on stdin
  // (json.load, then `expression` of d), or "" after ADD_FAILURE.
  std::string PythonOnJson(const std::string& document,
                           const std::string& expression) {
    absl::StatusOr<ProcessResult> r =
        RunProcess({kPython, "-c",
                    "import json, sys\nd = json.load(sys.stdin)\nprint(" +
                        expression + ")"},
                   StdinOptions(document));
    EXPECT_THAT(r, IsOk());
    if (!r.ok()) return "";
    EXPECT_EQ(r->exit_code, 0) << "not valid JSON:\n"
                               << document << "\n"
                               << r->err;
    return std::string(absl::StripTrailingAsciiWhitespace(r->out));
  }

  void CreateFrames() {
    CliOk(
        {"regions", "create", "frames", "--strategy=free_list", "--size=4MiB"});
  }

  uint64_t LiveAllocations(const std::string& region) {
    absl::StatusOr<v1::RegionStats> s = GetRegionStats(stub(), region);
    EXPECT_THAT(s, IsOk());
    return s.ok() ? s->live_allocations() : ~0ull;
  }
};

std::vector<std::string> Lines(const std::string& text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

// The offsets of `shmalloc alloc`'s lines ("allocated N bytes at offset X").
std::vector<std::string> AllocatedOffsets(const std::string& out) {
  std::vector<std::string> offsets;
  for (const std::string& line : Lines(out)) {
    EXPECT_THAT(line, StartsWith("allocated "));
    offsets.push_back(line.substr(line.rfind(' ') + 1));
  }
  return offsets;
}

TEST_F(CliTest, HealthIsServing) {
  ProcessResult r = Cli({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("SERVING"));
}

TEST_F(CliTest, SocketFlagOverridesEnvironment) {
  ProcessOptions options;
  options.env["SHMALLOC_SOCKET"] = "/nonexistent/x.sock";
  ProcessResult r =
      Cli({"--socket=" + daemon_->socket_path(), "health"}, options);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(CliTest, AbsentDaemonFailsInBoundedTimeWithExitOne) {
  const std::string absent = daemon_->dir() + "/absent.sock";
  for (const char* command : {"health", "stats"}) {
    const absl::Time start = absl::Now();
    ProcessResult r = Cli({"--socket=" + absent, "--timeout=300ms", command});
    EXPECT_EQ(r.exit_code, 1) << command;
    EXPECT_THAT(r.err, AllOf(StartsWith("shmalloc: "), HasSubstr(absent)))
        << command;
    EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << command;
  }
}

TEST_F(CliTest, CreateListStatsDelete) {
  ProcessResult created = Cli(
      {"regions", "create", "frames", "--strategy=free_list", "--size=4MiB"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("'frames'"));
  CliOk({"regions", "create", "blocks", "--strategy=pool", "--size=1M",
         "--block_size=256"});
  absl::StatusOr<v1::Region> blocks = GetRegion(stub(), "blocks");
  ASSERT_THAT(blocks, IsOk());
  EXPECT_EQ(blocks->block_size(), 256u);
  EXPECT_EQ(blocks->heap_end() - blocks->heap_begin(), 1u << 20);

  std::vector<std::string> list = Lines(CliOk({"regions", "list"}));
  ASSERT_THAT(list, SizeIs(3));
  EXPECT_THAT(list[0], AllOf(StartsWith("NAME"), HasSubstr("STRATEGY")));
  EXPECT_THAT(list[1], AllOf(StartsWith("blocks"), HasSubstr("pool")));
  EXPECT_THAT(list[2], AllOf(StartsWith("frames"), HasSubstr("free_list")));

  const std::string list_json = CliOk({"regions", "list", "--json"});
  EXPECT_EQ(PythonOnJson(list_json, "[r['name'] for r in d['regions']]"),
            "['blocks', 'frames']");

  const std::string table = CliOk({"stats"});
  EXPECT_THAT(table, AllOf(HasSubstr("REGION"), HasSubstr("FRAG"),
                           HasSubstr("frames"), HasSubstr("4.00 MiB")));
  EXPECT_THAT(CliOk({"stats", "frames"}),
              AllOf(HasSubstr("region 'frames'"), HasSubstr("capacity_bytes"),
                    Not(HasSubstr("blocks"))));

  const std::string json = CliOk({"stats", "--json"});
  EXPECT_EQ(PythonOnJson(json,
                         "[(r['name'], r['capacity_bytes'], r['used_bytes']) "
                         "for r in d['regions']]"),
            "[('blocks', 1048576, 0), ('frames', 4194304, 0)]");
  EXPECT_EQ(PythonOnJson(json, "type(d['uptime_ms']).__name__"), "int");

  EXPECT_THAT(CliOk({"regions", "delete", "blocks"}), HasSubstr("deleted"));
  EXPECT_THAT(GetRegion(stub(), "blocks"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(CliTest, AllocDetachedPrintsOffsetsThatFreeReleases) {
  CreateFrames();
  ProcessResult r = Cli({"alloc", "frames", "1000", "--count=3", "--detached"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> offsets = AllocatedOffsets(r.out);
  ASSERT_THAT(offsets, SizeIs(3));
  EXPECT_THAT(r.err, HasSubstr("detached"));
  // The CLI's session has ended; detached allocations outlive it.
  EXPECT_EQ(LiveAllocations("frames"), 3u);

  std::vector<std::string> args = {"free", "frames"};
  args.insert(args.end(), offsets.begin(), offsets.end());
  EXPECT_THAT(CliOk(args), HasSubstr("freed 3 allocations"));
  EXPECT_EQ(LiveAllocations("frames"), 0u);
}

TEST_F(CliTest, AllocWithoutDetachedDiesWithTheCliSession) {
  CreateFrames();
  ProcessResult r = Cli({"alloc", "frames", "4K", "--alignment=4096"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> offsets = AllocatedOffsets(r.out);
  ASSERT_THAT(offsets, SizeIs(1));
  EXPECT_EQ(std::stoull(offsets[0]) % 4096, 0u);
  EXPECT_THAT(r.err, HasSubstr("freed when it exits"));
  PollResult reclaimed = PollStats(
      stub(),
      [](const v1::Stats& s) {
        return s.regions_size() == 1 && s.regions(0).live_allocations() == 0;
      },
      absl::Seconds(5));
  EXPECT_TRUE(reclaimed.done) << reclaimed.stats.DebugString();
}

TEST_F(CliTest, ResetNeedsForceWithLiveAllocationsAndBumpsGeneration) {
  CreateFrames();
  ASSERT_EQ(Cli({"alloc", "frames", "64", "--detached"}).exit_code, 0);
  ProcessResult refused = Cli({"regions", "reset", "frames"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, StartsWith("shmalloc: FAILED_PRECONDITION: "));
  EXPECT_THAT(CliOk({"regions", "reset", "frames", "--force"}),
              HasSubstr("generation 1"));
  EXPECT_EQ(LiveAllocations("frames"), 0u);
}

TEST_F(CliTest, WatchPrintsCountFramesAndExits) {
  CreateFrames();
  ProcessResult r = Cli({"watch", "--count=2", "--interval_ms=20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> headers;
  for (const std::string& line : Lines(r.out)) {
    if (absl::StartsWith(line, "shmalloc watch")) headers.push_back(line);
  }
  EXPECT_THAT(headers, SizeIs(2));
  EXPECT_THAT(r.out, AllOf(HasSubstr("frames ["), HasSubstr("frag"),
                           HasSubstr("sessions")));
  EXPECT_THAT(r.out, Not(HasSubstr("\x1b[2J")));  // not a terminal

  ProcessResult cleared =
      Cli({"watch", "frames", "--count=1", "--interval_ms=20", "--clear"});
  EXPECT_EQ(cleared.exit_code, 0);
  EXPECT_THAT(cleared.out, HasSubstr("\x1b[H\x1b[2J"));
}

TEST_F(CliTest, WatchJsonPrintsOneDocumentPerUpdate) {
  CreateFrames();
  ProcessResult r =
      Cli({"watch", "frames", "--json", "--count=2", "--interval_ms=20"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> docs = Lines(r.out);
  ASSERT_THAT(docs, SizeIs(2));
  for (const std::string& doc : docs) {
    EXPECT_EQ(PythonOnJson(doc, "d['regions'][0]['name']"), "frames");
  }
}

TEST_F(CliTest, RpcErrorsPrintTheStatusInWordsAndExitOne) {
  CreateFrames();
  ASSERT_EQ(Cli({"alloc", "frames", "64", "--detached"}).exit_code, 0);
  struct Case {
    std::vector<std::string> args;
    std::string code;
  };
  const std::vector<Case> cases = {
      {{"stats", "nope"}, "NOT_FOUND"},
      {{"regions", "delete", "nope"}, "NOT_FOUND"},
      {{"regions", "create", "frames", "--strategy=arena"}, "ALREADY_EXISTS"},
      {{"regions", "create", "Bad/Name", "--strategy=arena"},
       "INVALID_ARGUMENT"},
      {{"regions", "delete", "frames"}, "FAILED_PRECONDITION"},
      {{"alloc", "frames", "64", "--alignment=3"}, "INVALID_ARGUMENT"},
      {{"alloc", "frames", "3M", "--count=2"}, "RESOURCE_EXHAUSTED"},
      {{"free", "frames", "12345"}, ""},  // FAILED_PRECONDITION or INVALID_
      {{"watch", "nope", "--count=1"}, "NOT_FOUND"},
  };
  for (const Case& c : cases) {
    ProcessResult r = Cli(c.args);
    const std::string line = absl::StrJoin(c.args, " ");
    EXPECT_EQ(r.exit_code, 1) << line << "\n" << r.err;
    EXPECT_THAT(r.err, StartsWith("shmalloc: " + c.code)) << line;
    EXPECT_THAT(Lines(r.err), SizeIs(1)) << line << "\n" << r.err;
  }
  ProcessResult missing = Cli({"stats", "nope"});
  EXPECT_THAT(missing.err, HasSubstr("nope"));
  // A refused request changed nothing.
  EXPECT_EQ(LiveAllocations("frames"), 1u);
}

TEST_F(CliTest, UsageErrorsExitTwo) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"bogus"},
      {"regions"},
      {"regions", "create", "x"},                      // no --strategy
      {"regions", "create", "x", "--strategy=quick"},  // bad strategy
      {"regions", "create", "x", "--strategy=pool", "--size=12Q"},
      {"regions", "list", "--force"},  // not its flag
      {"stats", "--bogus"},
      {"stats", "a", "b"},
      {"alloc", "frames"},  // no size
      {"alloc", "frames", "64", "--count=0"},
      {"free", "frames"},  // no offsets
      {"free", "frames", "0xZZ"},
      {"watch", "--interval_ms=1"},
      {"--timeout=soon", "stats"},
      {"-x"},
  };
  for (const auto& args : cases) {
    ProcessResult r = Cli(args);
    const std::string line = absl::StrJoin(args, " ");
    EXPECT_EQ(r.exit_code, 2) << "shmalloc " << line << "\n" << r.err;
    EXPECT_THAT(r.err, StartsWith("shmalloc: ")) << line;
  }
}

TEST_F(CliTest, HelpExitsZero) {
  ProcessResult r = Cli({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, AllOf(HasSubstr("regions create"), HasSubstr("watch"),
                           HasSubstr("SHMALLOC_SOCKET")));
}

}  // namespace
}  // namespace shmalloc::testing
