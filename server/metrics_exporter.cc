#include "server/metrics_exporter.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace shmalloc::server {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// "STRATEGY_POOL" -> "pool".
std::string StrategyLabel(v1::Strategy strategy) {
  std::string name = v1::Strategy_Name(strategy);
  constexpr char kPrefix[] = "STRATEGY_";
  if (absl::StartsWith(name, kPrefix)) name.erase(0, sizeof(kPrefix) - 1);
  return absl::AsciiStrToLower(name);
}

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddValue(MetricFamily& family, std::vector<ClientMetric::Label> labels,
              double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

// One gauge or counter per region, read from RegionStats by `value`.
struct RegionMetric {
  const char* name;
  const char* help;
  MetricType type;
  double (*value)(const v1::RegionStats&);
};

constexpr RegionMetric kRegionMetrics[] = {
    {"shmalloc_region_capacity_bytes", "Heap bytes of the region.",
     MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.capacity_bytes()); }},
    {"shmalloc_region_used_bytes", "Bytes reserved by live allocations.",
     MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.used_bytes()); }},
    {"shmalloc_region_free_bytes", "Capacity minus used bytes.",
     MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.free_bytes()); }},
    {"shmalloc_region_peak_used_bytes", "Highest used bytes seen.",
     MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.peak_used_bytes()); }},
    {"shmalloc_region_largest_free_bytes",
     "Largest single allocation possible now.", MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.largest_free_bytes()); }},
    {"shmalloc_region_requested_bytes",
     "Sum of the sizes asked for by live allocations.", MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.requested_bytes()); }},
    {"shmalloc_region_live_allocations", "Live allocations.", MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.live_allocations()); }},
    {"shmalloc_region_failed_allocations_total",
     "Allocations refused for lack of space.", MetricType::Counter,
     [](const v1::RegionStats& r) { return double(r.failed_allocations()); }},
    {"shmalloc_region_fragmentation_ratio",
     "External fragmentation: 1 - largest_free / free, in [0, 1].",
     MetricType::Gauge,
     [](const v1::RegionStats& r) { return r.fragmentation(); }},
    {"shmalloc_region_internal_fragmentation_ratio",
     "Internal fragmentation: 1 - requested / used, in [0, 1].",
     MetricType::Gauge,
     [](const v1::RegionStats& r) { return r.internal_fragmentation(); }},
    {"shmalloc_region_detached_allocations",
     "Live allocations owned by no session.", MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.detached_allocations()); }},
    {"shmalloc_region_detached_bytes",
     "Bytes of live allocations owned by no session.", MetricType::Gauge,
     [](const v1::RegionStats& r) { return double(r.detached_bytes()); }},
};

// Adds the per-session families of every region: its top `top` sessions by
// used bytes (ties: lower session id first), the rest as "other".
void AddSessions(const v1::Stats& stats, size_t top,
                 std::vector<MetricFamily>& out) {
  MetricFamily used = Family(
      "shmalloc_session_used_bytes",
      absl::StrCat("Bytes a session holds in a region (top ", top,
                   " sessions per region; the rest as session_id=\"other\")."),
      MetricType::Gauge);
  MetricFamily live = Family(
      "shmalloc_session_live_allocations",
      absl::StrCat("Live allocations a session holds in a region (top ", top,
                   " sessions per region by used bytes; the rest as "
                   "session_id=\"other\")."),
      MetricType::Gauge);
  for (const v1::RegionStats& region : stats.regions()) {
    std::vector<const v1::SessionUsage*> sessions;
    sessions.reserve(region.sessions_size());
    for (const v1::SessionUsage& s : region.sessions()) sessions.push_back(&s);
    std::sort(sessions.begin(), sessions.end(),
              [](const v1::SessionUsage* a, const v1::SessionUsage* b) {
                if (a->used_bytes() != b->used_bytes()) {
                  return a->used_bytes() > b->used_bytes();
                }
                return a->session_id() < b->session_id();
              });
    uint64_t other_bytes = 0;
    uint64_t other_live = 0;
    for (size_t i = 0; i < sessions.size(); ++i) {
      if (i >= top) {
        other_bytes += sessions[i]->used_bytes();
        other_live += sessions[i]->live_allocations();
        continue;
      }
      std::vector<ClientMetric::Label> labels = {
          {"region", region.name()},
          {"session_id", absl::StrCat(sessions[i]->session_id())},
          {"client", sessions[i]->client_name()}};
      AddValue(used, labels, double(sessions[i]->used_bytes()));
      AddValue(live, std::move(labels),
               double(sessions[i]->live_allocations()));
    }
    // Always present, so a dashboard's sum over sessions has no gaps.
    std::vector<ClientMetric::Label> labels = {
        {"region", region.name()}, {"session_id", "other"}, {"client", ""}};
    AddValue(used, labels, double(other_bytes));
    AddValue(live, std::move(labels), double(other_live));
  }
  out.push_back(std::move(used));
  out.push_back(std::move(live));
}

void AddDaemon(const v1::Stats& stats, std::vector<MetricFamily>& out) {
  struct DaemonMetric {
    const char* name;
    const char* help;
    MetricType type;
    double value;
  };
  const DaemonMetric metrics[] = {
      {"shmalloc_sessions_open", "Sessions open now.", MetricType::Gauge,
       double(stats.sessions())},
      {"shmalloc_sessions_opened_total", "Sessions opened since start.",
       MetricType::Counter, double(stats.sessions_opened())},
      {"shmalloc_sessions_orphaned",
       "Sessions waiting to be resumed (grace period).", MetricType::Gauge,
       double(stats.sessions_orphaned())},
      {"shmalloc_sessions_resumed_total", "Sessions resumed since start.",
       MetricType::Counter, double(stats.sessions_resumed())},
      {"shmalloc_sessions_reclaimed_total",
       "Orphaned sessions not resumed in time, since start.",
       MetricType::Counter, double(stats.sessions_reclaimed())},
      {"shmalloc_regions", "Regions the daemon serves.", MetricType::Gauge,
       double(stats.region_count())},
      {"shmalloc_uptime_seconds", "Seconds since the daemon started.",
       MetricType::Gauge, double(stats.uptime_ms()) / 1000.0},
  };
  for (const DaemonMetric& m : metrics) {
    MetricFamily family = Family(m.name, m.help, m.type);
    AddValue(family, {}, m.value);
    out.push_back(std::move(family));
  }
}

void AddRpcs(const v1::Stats& stats,
             const std::vector<RpcMetrics::Latency>& latencies,
             std::vector<MetricFamily>& out) {
  MetricFamily calls =
      Family("shmalloc_rpcs_total", "RPCs finished, by method and status code.",
             MetricType::Counter);
  for (const v1::RpcCount& rpc : stats.rpcs()) {
    uint64_t errors = 0;
    // The proto map has no order; sort so the output is stable.
    std::vector<std::pair<std::string, uint64_t>> codes(rpc.errors().begin(),
                                                        rpc.errors().end());
    std::sort(codes.begin(), codes.end());
    for (const auto& [code, n] : codes) errors += n;
    AddValue(calls, {{"method", rpc.method()}, {"code", "OK"}},
             double(rpc.calls() - std::min(errors, rpc.calls())));
    for (const auto& [code, n] : codes) {
      AddValue(calls, {{"method", rpc.method()}, {"code", code}}, double(n));
    }
  }
  out.push_back(std::move(calls));

  MetricFamily duration =
      Family("shmalloc_rpc_duration_seconds",
             "Time the daemon spent on a unary RPC, by method and status code.",
             MetricType::Histogram);
  const std::vector<double>& bounds = RpcMetrics::LatencyBoundsSeconds();
  for (const RpcMetrics::Latency& latency : latencies) {
    ClientMetric metric;
    metric.label = {{"method", latency.method}, {"code", latency.code}};
    metric.histogram.sample_count = latency.count;
    metric.histogram.sample_sum = latency.sum_seconds;
    uint64_t cumulative = 0;
    for (size_t i = 0; i < latency.counts.size(); ++i) {
      cumulative += latency.counts[i];
      metric.histogram.bucket.push_back(ClientMetric::Bucket{
          cumulative, i < bounds.size()
                          ? bounds[i]
                          : std::numeric_limits<double>::infinity()});
    }
    duration.metric.push_back(std::move(metric));
  }
  out.push_back(std::move(duration));
}

}  // namespace

std::vector<MetricFamily> ToMetricFamilies(
    const v1::Stats& stats, const std::vector<RpcMetrics::Latency>& latencies,
    size_t top_sessions) {
  std::vector<MetricFamily> out;
  for (const RegionMetric& m : kRegionMetrics) {
    MetricFamily family = Family(m.name, m.help, m.type);
    for (const v1::RegionStats& region : stats.regions()) {
      AddValue(family,
               {{"region", region.name()},
                {"strategy", StrategyLabel(region.strategy())}},
               m.value(region));
    }
    out.push_back(std::move(family));
  }
  AddSessions(stats, top_sessions, out);
  AddDaemon(stats, out);
  AddRpcs(stats, latencies, out);
  return out;
}

std::vector<MetricFamily> StatsCollector::Collect() const {
  absl::StatusOr<v1::Stats> stats = CollectStats(core_, "");
  // CollectStats of every region ("") has no failure mode; an empty scrape
  // is still the safe answer should one appear.
  if (!stats.ok()) return {};
  return ToMetricFamilies(*stats, core_.metrics.Latencies());
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const Core& core, const std::string& address) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->collector_ = std::make_shared<StatsCollector>(core);
  // prometheus-cpp reports a failed bind by throwing (CivetException); this
  // is the one place exceptions cross into the daemon, and they stop here.
  try {
    server->exposer_ =
        std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  server->exposer_->RegisterCollectable(server->collector_, "/metrics");
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  const std::string host = address.substr(0, address.rfind(':'));
  server->endpoint_ =
      ports.empty() ? address : absl::StrCat(host, ":", ports.front());
  return server;
}

MetricsServer::~MetricsServer() = default;

}  // namespace shmalloc::server
