// `shmalloc profile` against a real shmallocd: after a scripted workload (a
// POOL and a SLAB region, two sessions allocating requested sizes that do
// not fit the configured blocks, some frees), the real CLI samples for 2 s
// and writes the HTML report; the report is self-contained (no URL, no
// src=), has one <svg> per chart, its final totals equal GetStats taken
// after it, and it advises a block size / size classes for both regions.
// --json writes the raw series.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
using ::testing::Not;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

class ProfileTest : public DaemonTest {
 protected:
  ProcessResult Cli(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {SHMALLOC_CLI_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    ProcessOptions options;
    options.env["SHMALLOC_SOCKET"] = daemon_->socket_path();
    absl::StatusOr<ProcessResult> r = RunProcess(argv, options);
    EXPECT_THAT(r, IsOk());
    return r.ok() ? *r : ProcessResult{};
  }

  std::string OutPath(const std::string& name) {
    return absl::StrCat(::testing::TempDir(), "/profile_test_", getpid(), "_",
                        name);
  }
};

TEST_F(ProfileTest, ReportIsSelfContainedAndMatchesGetStats) {
  v1::CreateRegionRequest pool;
  pool.set_name("pool");
  pool.set_strategy(v1::STRATEGY_POOL);
  pool.set_size_bytes(1 << 20);
  pool.set_block_size(256);
  ASSERT_THAT(CreateRegion(stub(), pool), IsOk());
  v1::CreateRegionRequest slab;
  slab.set_name("slab");
  slab.set_strategy(v1::STRATEGY_SLAB);
  slab.set_size_bytes(4 << 20);
  ASSERT_THAT(CreateRegion(stub(), slab), IsOk());

  // The workload: 100-byte requests in a 256-byte pool; 40- and 1000-byte
  // requests in the default slab classes; every other pool block freed.
  auto alpha = Session::Open(stub(), "alpha");
  auto beta = Session::Open(stub(), "beta");
  ASSERT_THAT(alpha, IsOk());
  ASSERT_THAT(beta, IsOk());
  auto p = Allocate(stub(), **alpha, "pool", 100, 20);
  ASSERT_THAT(p, IsOk());
  ASSERT_THAT(Allocate(stub(), **beta, "slab", 40, 30), IsOk());
  ASSERT_THAT(Allocate(stub(), **beta, "slab", 1000, 5), IsOk());
  std::vector<uint64_t> freed;
  const std::vector<uint64_t> offsets = Offsets(*p);
  for (size_t i = 0; i < offsets.size(); i += 2) freed.push_back(offsets[i]);
  ASSERT_THAT(Free(stub(), **alpha, "pool", freed), IsOk());

  const std::string out = OutPath("report.html");
  ProcessResult r =
      Cli({"profile", "--duration=2s", "--interval=200ms", "--out=" + out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("wrote " + out));
  // One progress line per sample (stderr is not a terminal here).
  EXPECT_GE(Count(r.err, "profile: sample "), 2u) << r.err;

  absl::StatusOr<v1::Stats> stats = GetStats(stub());
  ASSERT_THAT(stats, IsOk());
  const std::string html = ReadFile(out);
  ASSERT_FALSE(html.empty());
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  // Used, fragmentation, rates, failures, a size histogram per region,
  // sessions.
  const size_t charts = 4 + stats->regions_size() + 1;
  EXPECT_EQ(Count(html, "<svg class=\"chart\""), charts);
  EXPECT_EQ(Count(html, "<svg"), charts);
  for (const v1::RegionStats& region : stats->regions()) {
    EXPECT_THAT(html, HasSubstr(absl::StrCat(
                          "<tr class=\"region-total\" data-region=\"",
                          region.name(), "\" data-used-bytes=\"",
                          region.used_bytes(), "\" data-live-allocations=\"",
                          region.live_allocations(), "\"")))
        << region.name();
  }
  // 10 x 100 bytes in the pool: one 104-byte block. 30 x 40 and 5 x 1000
  // in the slab: classes 40 and 1000 waste nothing.
  EXPECT_THAT(html, HasSubstr("<tr class=\"advice\" data-region=\"pool\" "
                              "data-advised=\"104\">"));
  EXPECT_THAT(html, HasSubstr("<tr class=\"advice\" data-region=\"slab\" "
                              "data-advised=\"40,1000\">"));
  EXPECT_THAT(html, HasSubstr("alpha"));
  EXPECT_THAT(html, HasSubstr("beta"));
}

TEST_F(ProfileTest, JsonWritesTheRawSeries) {
  ASSERT_THAT(CreateRegion(stub(), "pool", v1::STRATEGY_POOL), IsOk());
  const std::string out = OutPath("report.json");
  ProcessResult r = Cli({"profile", "pool", "--duration=200ms",
                         "--interval=100ms", "--json", "--out=" + out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string json = ReadFile(out);
  EXPECT_THAT(json, HasSubstr("\"name\": \"pool\""));
  EXPECT_THAT(json, HasSubstr("\"used_bytes\": ["));
  EXPECT_THAT(json, HasSubstr("\"rates\": ["));
}

TEST_F(ProfileTest, BadFlagsAreUsageErrors) {
  EXPECT_EQ(Cli({"profile", "--duration=1s"}).exit_code, 2);  // no --out
  EXPECT_EQ(Cli({"profile", "--interval=1ms", "--out=/dev/null"}).exit_code, 2);
  EXPECT_EQ(Cli({"profile", "a", "b", "--out=/dev/null"}).exit_code, 2);
}

}  // namespace
}  // namespace shmalloc::testing
