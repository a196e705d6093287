// ToMetricFamilies and RpcMetrics' latency histograms, in-process: the top-N
// + "other" bound on session series, OK counts derived from calls - errors,
// cumulative buckets ending at +Inf, and the naming conventions. The HTTP
// endpoint of a real daemon is tests/integration/metrics_test.cc.
#include "server/metrics_exporter.h"

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace shmalloc::server {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

const MetricFamily& FamilyNamed(const std::vector<MetricFamily>& families,
                                const std::string& name) {
  for (const MetricFamily& f : families) {
    if (f.name == name) return f;
  }
  ADD_FAILURE() << "no family " << name;
  static const MetricFamily kNone;
  return kNone;
}

std::string Label(const ClientMetric& m, const std::string& name) {
  for (const ClientMetric::Label& l : m.label) {
    if (l.name == name) return l.value;
  }
  return "<none>";
}

TEST(MetricsExporterTest, TopSessionsPerRegionAndTheRestAsOther) {
  v1::Stats stats;
  v1::RegionStats* region = stats.add_regions();
  region->set_name("r");
  region->set_strategy(v1::STRATEGY_POOL);
  // Sessions 1..13 with used bytes 100*id, except 12 and 13 tie with 11.
  for (uint64_t id = 1; id <= 13; ++id) {
    v1::SessionUsage* s = region->add_sessions();
    s->set_session_id(id);
    s->set_client_name(absl::StrCat("c", id));
    s->set_used_bytes(100 * std::min<uint64_t>(id, 11));
    s->set_live_allocations(id);
  }
  const std::vector<MetricFamily> families = ToMetricFamilies(stats, {}, 10);
  const MetricFamily& used =
      FamilyNamed(families, "shmalloc_session_used_bytes");
  std::map<std::string, double> by_session;
  for (const ClientMetric& m : used.metric) {
    EXPECT_EQ(Label(m, "region"), "r");
    by_session[Label(m, "session_id")] = m.gauge.value;
  }
  // Named: 11, 12, 13 (1100 each; ids ascending), then 10..4. Other: 1..3.
  ASSERT_EQ(by_session.size(), 11u);
  for (uint64_t id = 4; id <= 13; ++id) {
    EXPECT_EQ(by_session.count(absl::StrCat(id)), 1u) << id;
  }
  EXPECT_EQ(by_session["other"], 100 + 200 + 300);
  const MetricFamily& live =
      FamilyNamed(families, "shmalloc_session_live_allocations");
  for (const ClientMetric& m : live.metric) {
    if (Label(m, "session_id") == "other") {
      EXPECT_EQ(m.gauge.value, 1 + 2 + 3);
      EXPECT_EQ(Label(m, "client"), "");
    }
  }
}

TEST(MetricsExporterTest, RegionWithoutSessionsStillHasAnOtherSeries) {
  v1::Stats stats;
  stats.add_regions()->set_name("arena");
  const std::vector<MetricFamily> families = ToMetricFamilies(stats, {});
  const MetricFamily& used =
      FamilyNamed(families, "shmalloc_session_used_bytes");
  ASSERT_EQ(used.metric.size(), 1u);
  EXPECT_EQ(Label(used.metric[0], "session_id"), "other");
  EXPECT_EQ(used.metric[0].gauge.value, 0);
}

TEST(MetricsExporterTest, RpcOkCountIsCallsMinusErrors) {
  v1::Stats stats;
  v1::RpcCount* rpc = stats.add_rpcs();
  rpc->set_method("Allocate");
  rpc->set_calls(7);
  (*rpc->mutable_errors())["NOT_FOUND"] = 2;
  (*rpc->mutable_errors())["RESOURCE_EXHAUSTED"] = 1;
  const std::vector<MetricFamily> families = ToMetricFamilies(stats, {});
  const MetricFamily& calls = FamilyNamed(families, "shmalloc_rpcs_total");
  EXPECT_EQ(calls.type, MetricType::Counter);
  std::map<std::string, double> by_code;
  for (const ClientMetric& m : calls.metric) {
    EXPECT_EQ(Label(m, "method"), "Allocate");
    by_code[Label(m, "code")] = m.counter.value;
  }
  EXPECT_EQ(by_code,
            (std::map<std::string, double>{
                {"OK", 4}, {"NOT_FOUND", 2}, {"RESOURCE_EXHAUSTED", 1}}));
}

TEST(MetricsExporterTest, LatencyBucketsAreCumulativeAndEndAtInf) {
  RpcMetrics metrics;
  metrics.Record("Free", absl::StatusCode::kOk, absl::Microseconds(5));
  metrics.Record("Free", absl::StatusCode::kOk, absl::Milliseconds(1));
  metrics.Record("Free", absl::StatusCode::kOk, absl::Seconds(20));
  metrics.Record("Free", absl::StatusCode::kNotFound, absl::Microseconds(50));
  metrics.Record("Free", absl::StatusCode::kOk);  // counted, not timed
  v1::Stats stats;
  metrics.Fill(stats);
  ASSERT_EQ(stats.rpcs_size(), 1);
  EXPECT_EQ(stats.rpcs(0).calls(), 5u);
  const std::vector<MetricFamily> families =
      ToMetricFamilies(stats, metrics.Latencies());
  const MetricFamily& duration =
      FamilyNamed(families, "shmalloc_rpc_duration_seconds");
  EXPECT_EQ(duration.type, MetricType::Histogram);
  ASSERT_EQ(duration.metric.size(), 2u);  // (Free, NOT_FOUND), (Free, OK)
  const ClientMetric& ok = Label(duration.metric[0], "code") == "OK"
                               ? duration.metric[0]
                               : duration.metric[1];
  EXPECT_EQ(ok.histogram.sample_count, 3u);
  EXPECT_NEAR(ok.histogram.sample_sum, 20.001005, 1e-9);
  const std::vector<double>& bounds = RpcMetrics::LatencyBoundsSeconds();
  ASSERT_EQ(ok.histogram.bucket.size(), bounds.size() + 1);
  uint64_t previous = 0;
  for (size_t i = 0; i < ok.histogram.bucket.size(); ++i) {
    const ClientMetric::Bucket& b = ok.histogram.bucket[i];
    EXPECT_GE(b.cumulative_count, previous);
    previous = b.cumulative_count;
    const uint64_t want = b.upper_bound >= 20      ? 3
                          : b.upper_bound >= 0.001 ? 2
                          : b.upper_bound >= 5e-6  ? 1
                                                   : 0;
    EXPECT_EQ(b.cumulative_count, want) << "le=" << b.upper_bound;
  }
  EXPECT_TRUE(std::isinf(ok.histogram.bucket.back().upper_bound));
}

TEST(MetricsExporterTest, NamesFollowThePrometheusConventions) {
  v1::Stats stats;
  stats.add_regions()->set_name("r");
  stats.add_rpcs()->set_method("GetStats");
  RpcMetrics metrics;
  metrics.Record("GetStats", absl::StatusCode::kOk, absl::Microseconds(1));
  std::set<std::string> names;
  for (const MetricFamily& f : ToMetricFamilies(stats, metrics.Latencies())) {
    EXPECT_TRUE(names.insert(f.name).second) << "twice: " << f.name;
    EXPECT_TRUE(absl::StartsWith(f.name, "shmalloc_")) << f.name;
    EXPECT_FALSE(f.help.empty()) << f.name;
    EXPECT_EQ(f.type == MetricType::Counter, absl::EndsWith(f.name, "_total"))
        << f.name;
    if (f.type == MetricType::Histogram) {
      EXPECT_TRUE(absl::EndsWith(f.name, "_seconds")) << f.name;
    }
  }
  EXPECT_EQ(names.count("shmalloc_uptime_seconds"), 1u);
}

}  // namespace
}  // namespace shmalloc::server
