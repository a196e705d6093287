// The pure half of `shmalloc profile` (client/cli/profile_report.h) on
// synthetic samples: series and rates, leak suspects, the waste arithmetic,
// the advice DP against a brute force over every class set (randomized; the
// seed is printed), the sparkline, and the HTML's self-containment.
#include "client/cli/profile_report.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shmalloc::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

v1::RegionStats* AddRegion(v1::Stats& s, const std::string& name,
                           v1::Strategy strategy, uint64_t used,
                           uint64_t live) {
  v1::RegionStats* r = s.add_regions();
  r->set_name(name);
  r->set_strategy(strategy);
  r->set_capacity_bytes(1 << 20);
  r->set_used_bytes(used);
  r->set_live_allocations(live);
  return r;
}

void AddSession(v1::RegionStats* r, uint64_t id, const std::string& name,
                uint64_t live) {
  v1::SessionUsage* u = r->add_sessions();
  u->set_session_id(id);
  u->set_client_name(name);
  u->set_live_allocations(live);
  u->set_used_bytes(live * 64);
}

void SetRpc(v1::Stats& s, const std::string& method, uint64_t calls) {
  v1::RpcCount* c = s.add_rpcs();
  c->set_method(method);
  c->set_calls(calls);
}

// Three samples, 1 s apart: "p" grows 0 -> 10 -> 4 live, "s" appears late.
std::vector<ProfileSample> Samples() {
  std::vector<ProfileSample> out(3);
  const uint64_t live[] = {0, 10, 4};
  for (int i = 0; i < 3; ++i) {
    out[i].t_ms = 1000 * i;
    v1::RegionStats* p =
        AddRegion(out[i].stats, "p", v1::STRATEGY_POOL, live[i] * 64, live[i]);
    p->set_failed_allocations(i);
    // Session 7 only grows; session 8 grows then falls.
    AddSession(p, 7, "grower", 1 + i);
    AddSession(p, 8, "churner", i == 1 ? 5 : 1);
    SetRpc(out[i].stats, "Allocate", 5 * i);
    SetRpc(out[i].stats, "Free", i == 2 ? 3 : 0);
  }
  AddRegion(out[2].stats, "s", v1::STRATEGY_SLAB, 128, 2);
  return out;
}

TEST(ProfileReportTest, SeriesFollowEachRegionInOrderOfAppearance) {
  const std::vector<RegionSeries> series = BuildRegionSeries(Samples());
  ASSERT_EQ(series.size(), 2u);
  EXPECT_EQ(series[0].name, "p");
  EXPECT_THAT(series[0].t_ms, ElementsAre(0, 1000, 2000));
  EXPECT_THAT(series[0].used_bytes, ElementsAre(0, 640, 256));
  EXPECT_THAT(series[0].failed_allocations, ElementsAre(0, 1, 2));
  EXPECT_EQ(series[1].name, "s");
  EXPECT_THAT(series[1].t_ms, ElementsAre(2000));
}

TEST(ProfileReportTest, RatesComeFromRpcCountsAndLiveDeltas) {
  const std::vector<RatePoint> rates = BuildRates(Samples());
  ASSERT_EQ(rates.size(), 2u);
  EXPECT_DOUBLE_EQ(rates[0].allocate_rpcs, 5);
  EXPECT_DOUBLE_EQ(rates[0].free_rpcs, 0);
  EXPECT_DOUBLE_EQ(rates[0].allocations, 10);
  EXPECT_DOUBLE_EQ(rates[0].frees, 0);
  // Second interval: p went 10 -> 4 and s appeared with 2: net -4.
  EXPECT_DOUBLE_EQ(rates[1].free_rpcs, 3);
  EXPECT_DOUBLE_EQ(rates[1].allocations, 0);
  EXPECT_DOUBLE_EQ(rates[1].frees, 4);
}

TEST(ProfileReportTest, SuspectsAreSessionsThatOnlyGrew) {
  const std::vector<LeakSuspect> suspects = FindLeakSuspects(Samples());
  ASSERT_EQ(suspects.size(), 1u);
  EXPECT_EQ(suspects[0].session_id, 7u);
  EXPECT_EQ(suspects[0].client_name, "grower");
  EXPECT_EQ(suspects[0].first_live, 1u);
  EXPECT_EQ(suspects[0].last_live, 3u);
  EXPECT_EQ(suspects[0].samples, 3);
}

TEST(ProfileReportTest, WasteCountsTheSmallestFittingClass) {
  const std::vector<SizeCount> sizes = {{10, 2}, {64, 1}, {100, 1}};
  const Waste w = ComputeWaste(sizes, {16, 64});
  EXPECT_EQ(w.requested_bytes, 84u);
  EXPECT_EQ(w.waste_bytes, 12u);  // 2 * (16 - 10)
  EXPECT_EQ(w.unserved, 1u);      // 100 > 64
  EXPECT_DOUBLE_EQ(w.waste_fraction(), 12.0 / 96.0);
  EXPECT_DOUBLE_EQ(ComputeWaste({}, {8}).waste_fraction(), 0.0);
}

TEST(ProfileReportTest, PoolAdviceIsTheLargestSizeRoundedToEight) {
  EXPECT_THAT(AdviseClasses({{100, 3}, {20, 5}}, 1), ElementsAre(104));
  EXPECT_TRUE(AdviseClasses({}, 8).empty());
}

TEST(ProfileReportTest, SlabAdviceIsExactForFewSizes) {
  // Four distinct sizes, eight classes allowed: one class each, zero waste.
  EXPECT_THAT(AdviseClasses({{24, 1}, {48, 9}, {512, 2}, {4096, 1}}, 8),
              ElementsAre(24, 48, 512, 4096));
  // Two classes for 8 (x100), 16 (x1), 1024 (x100): 16 shares with 8.
  EXPECT_THAT(AdviseClasses({{8, 100}, {16, 1}, {1024, 100}}, 2),
              ElementsAre(16, 1024));
}

// The least waste over every set of at most k classes drawn from the
// rounded sizes (the DP's search space), by enumeration.
uint64_t BruteForceWaste(const std::vector<SizeCount>& sizes, int k) {
  std::vector<uint64_t> values;
  for (const SizeCount& s : sizes) values.push_back((s.size + 7) / 8 * 8);
  std::sort(values.begin(), values.end());
  values.erase(std::unique(values.begin(), values.end()), values.end());
  uint64_t best = UINT64_MAX;
  const size_t m = values.size();
  for (uint64_t mask = 1; mask < (uint64_t{1} << m); ++mask) {
    if (__builtin_popcountll(mask) > k || !(mask >> (m - 1) & 1)) continue;
    std::vector<uint64_t> classes;
    for (size_t i = 0; i < m; ++i) {
      if (mask >> i & 1) classes.push_back(values[i]);
    }
    best = std::min(best, ComputeWaste(sizes, classes).waste_bytes);
  }
  return best;
}

TEST(ProfileReportTest, SlabAdviceMatchesBruteForce) {
  const uint32_t seed = std::random_device{}();
  std::cout << "seed " << seed << "\n";
  std::mt19937 rng(seed);
  for (int round = 0; round < 200; ++round) {
    std::vector<SizeCount> sizes;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) {
      sizes.push_back({1 + rng() % 2000, 1 + rng() % 50});
    }
    const int k = 1 + static_cast<int>(rng() % 4);
    const std::vector<uint64_t> advised = AdviseClasses(sizes, k);
    ASSERT_LE(advised.size(), static_cast<size_t>(k)) << "seed " << seed;
    ASSERT_TRUE(std::is_sorted(advised.begin(), advised.end()));
    for (uint64_t c : advised) ASSERT_EQ(c % 8, 0u) << "seed " << seed;
    const Waste w = ComputeWaste(sizes, advised);
    EXPECT_EQ(w.unserved, 0u) << "seed " << seed;
    EXPECT_EQ(w.waste_bytes, BruteForceWaste(sizes, k))
        << "seed " << seed << " round " << round;
  }
}

TEST(ProfileReportTest, ManyDistinctSizesStillServeEverything) {
  std::vector<SizeCount> sizes;
  for (uint64_t s = 1; s <= 50000; s += 7) sizes.push_back({s, 1});
  const std::vector<uint64_t> advised = AdviseClasses(sizes, 8);
  EXPECT_EQ(advised.size(), 8u);
  EXPECT_EQ(ComputeWaste(sizes, advised).unserved, 0u);
}

ProfileData Data() {
  ProfileData d;
  d.target = "unix:/tmp/x.sock";
  d.started = "2026-12-01T00:00:00Z";
  d.interval_ms = 1000;
  d.duration_ms = 2000;
  d.samples = Samples();
  v1::HistogramBucket* h =
      d.samples.back().stats.mutable_regions(1)->add_size_histogram();
  h->set_log2_upper(6);
  h->set_count(2);
  v1::Region pool;
  pool.set_name("p");
  pool.set_strategy(v1::STRATEGY_POOL);
  pool.set_block_size(64);
  v1::Region slab;
  slab.set_name("s");
  slab.set_strategy(v1::STRATEGY_SLAB);
  for (uint64_t c : {16, 32, 64, 128}) slab.add_size_classes(c);
  d.regions = {pool, slab};
  for (int i = 0; i < 4; ++i) {
    v1::Allocation a;
    a.set_region("p");
    a.set_size_bytes(64);
    a.set_requested_bytes(40);
    a.set_age_ms(1000 * i);
    a.set_client_name("<grower>");
    d.allocations.push_back(a);
  }
  return d;
}

TEST(ProfileReportTest, AdviceFromRequestedSizesOrTheHistogram) {
  const std::vector<SizingAdvice> advice = BuildAdvice(Data());
  ASSERT_EQ(advice.size(), 2u);
  EXPECT_EQ(advice[0].region, "p");
  EXPECT_EQ(advice[0].source, "requested_bytes");
  EXPECT_EQ(advice[0].observed, 4u);
  EXPECT_THAT(advice[0].current, ElementsAre(64));
  EXPECT_THAT(advice[0].advised, ElementsAre(40));
  EXPECT_EQ(advice[0].current_waste.waste_bytes, 4u * 24);
  EXPECT_EQ(advice[0].advised_waste.waste_bytes, 0u);
  EXPECT_EQ(advice[1].region, "s");
  EXPECT_EQ(advice[1].source, "size_histogram");
  EXPECT_THAT(advice[1].advised, ElementsAre(64));
}

TEST(ProfileReportTest, SparklineScalesToTheWindow) {
  EXPECT_EQ(Sparkline({}), "");
  EXPECT_EQ(Sparkline({0, 0}), "▁▁");
  EXPECT_EQ(Sparkline({5, 5, 5}), "▄▄▄");
  EXPECT_EQ(Sparkline({0, 2, 14}), "▁▂█");
  EXPECT_EQ(Sparkline({10, 0}), "█▁");
}

TEST(ProfileReportTest, HtmlIsSelfContainedAndHasEveryPart) {
  const std::string html = RenderProfileHtml(Data());
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("src=")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("<grower>")));  // escaped
  EXPECT_THAT(html, HasSubstr("&lt;grower&gt;"));
  // used, fragmentation, rates, failures, 2 histograms, sessions.
  size_t charts = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos;
       at = html.find("<svg", at + 1)) {
    ++charts;
  }
  EXPECT_EQ(charts, 7u);
  EXPECT_THAT(html, HasSubstr("<tr class=\"region-total\" data-region=\"p\" "
                              "data-used-bytes=\"256\" "
                              "data-live-allocations=\"4\""));
  EXPECT_THAT(html, HasSubstr("<tr class=\"advice\" data-region=\"p\" "
                              "data-advised=\"40\">"));
  EXPECT_THAT(html, HasSubstr("<tr class=\"suspect\">"));
}

TEST(ProfileReportTest, JsonHasTheRawSeries) {
  const std::string json = RenderProfileJson(Data());
  EXPECT_THAT(json, HasSubstr("\"used_bytes\": ["));
  EXPECT_THAT(json, HasSubstr("\"allocate_rpcs_per_s\": 5"));
  EXPECT_THAT(json, HasSubstr("\"advised\": ["));
}

}  // namespace
}  // namespace shmalloc::cli
