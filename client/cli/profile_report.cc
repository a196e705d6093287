// Series, rates, leak suspects, sizing advice and the JSON rendering of
// `shmalloc profile` (profile_report.h). The HTML is in profile_html.cc.
#include "client/cli/profile_report.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "client/cli/json_writer.h"
#include "client/cli/stats_format.h"

namespace shmalloc::cli {
namespace {

constexpr int kPoolClasses = 1;
constexpr int kSlabClasses = 8;
constexpr size_t kMaxCandidates = 1024;  // keeps the DP at ~8M steps

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

uint64_t RpcCalls(const v1::Stats& s, const std::string& method) {
  for (const v1::RpcCount& r : s.rpcs()) {
    if (r.method() == method) return r.calls();
  }
  return 0;
}

uint64_t TotalLive(const v1::Stats& s) {
  uint64_t n = 0;
  for (const v1::RegionStats& r : s.regions()) n += r.live_allocations();
  return n;
}

}  // namespace

std::vector<RegionSeries> BuildRegionSeries(
    const std::vector<ProfileSample>& samples) {
  std::vector<RegionSeries> out;
  std::map<std::string, size_t> index;
  for (const ProfileSample& sample : samples) {
    for (const v1::RegionStats& r : sample.stats.regions()) {
      auto [it, inserted] = index.emplace(r.name(), out.size());
      if (inserted) {
        out.emplace_back();
        out.back().name = r.name();
      }
      RegionSeries& s = out[it->second];
      s.strategy = r.strategy();
      s.capacity_bytes = r.capacity_bytes();
      s.t_ms.push_back(sample.t_ms);
      s.used_bytes.push_back(r.used_bytes());
      s.live_allocations.push_back(r.live_allocations());
      s.failed_allocations.push_back(r.failed_allocations());
      s.fragmentation.push_back(r.fragmentation());
    }
  }
  return out;
}

std::vector<RatePoint> BuildRates(const std::vector<ProfileSample>& samples) {
  std::vector<RatePoint> out;
  for (size_t i = 1; i < samples.size(); ++i) {
    const v1::Stats& a = samples[i - 1].stats;
    const v1::Stats& b = samples[i].stats;
    RatePoint p;
    p.t_ms = samples[i].t_ms;
    const int64_t dt = samples[i].t_ms - samples[i - 1].t_ms;
    if (dt > 0) {
      const double per_s = 1000.0 / static_cast<double>(dt);
      // Counters only grow within one daemon; a restart resets them.
      auto delta = [](uint64_t x, uint64_t y) { return y >= x ? y - x : y; };
      p.allocate_rpcs =
          delta(RpcCalls(a, "Allocate"), RpcCalls(b, "Allocate")) * per_s;
      p.free_rpcs = delta(RpcCalls(a, "Free"), RpcCalls(b, "Free")) * per_s;
      const uint64_t la = TotalLive(a), lb = TotalLive(b);
      p.allocations = (lb > la ? lb - la : 0) * per_s;
      p.frees = (la > lb ? la - lb : 0) * per_s;
    }
    out.push_back(p);
  }
  return out;
}

std::vector<LeakSuspect> FindLeakSuspects(
    const std::vector<ProfileSample>& samples) {
  struct Track {
    LeakSuspect s;
    bool fell = false;
  };
  std::map<std::pair<std::string, uint64_t>, Track> tracks;
  for (const ProfileSample& sample : samples) {
    for (const v1::RegionStats& r : sample.stats.regions()) {
      for (const v1::SessionUsage& u : r.sessions()) {
        auto [it, inserted] =
            tracks.try_emplace({r.name(), u.session_id()}, Track{});
        Track& t = it->second;
        if (inserted) {
          t.s.region = r.name();
          t.s.session_id = u.session_id();
          t.s.first_live = u.live_allocations();
        } else if (u.live_allocations() < t.s.last_live) {
          t.fell = true;
        }
        if (!u.client_name().empty()) t.s.client_name = u.client_name();
        t.s.last_live = u.live_allocations();
        t.s.last_used_bytes = u.used_bytes();
        ++t.s.samples;
      }
    }
  }
  std::vector<LeakSuspect> out;
  for (const auto& [key, t] : tracks) {
    if (!t.fell && t.s.samples >= 2 && t.s.last_live > t.s.first_live) {
      out.push_back(t.s);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.last_live - a.first_live > b.last_live - b.first_live;
  });
  return out;
}

Waste ComputeWaste(const std::vector<SizeCount>& sizes,
                   const std::vector<uint64_t>& classes) {
  Waste w;
  for (const SizeCount& s : sizes) {
    auto it = std::lower_bound(classes.begin(), classes.end(), s.size);
    if (it == classes.end()) {
      w.unserved += s.count;
      continue;
    }
    w.requested_bytes += s.size * s.count;
    w.waste_bytes += (*it - s.size) * s.count;
  }
  return w;
}

std::vector<uint64_t> AdviseClasses(const std::vector<SizeCount>& sizes,
                                    int max_classes) {
  // Candidate class values: the distinct sizes rounded up to the grid. An
  // optimal class set uses only such values (lowering a class to the
  // largest size it serves never adds waste), and always the largest.
  uint64_t grid = 8;
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> cand;  // value -> n, sum
  for (;;) {
    cand.clear();
    for (const SizeCount& s : sizes) {
      if (s.count == 0) continue;
      auto& [n, sum] = cand[RoundUp(std::max<uint64_t>(s.size, 1), grid)];
      n += s.count;
      sum += s.size * s.count;
    }
    if (cand.size() <= kMaxCandidates) break;
    grid *= 2;
  }
  const size_t m = cand.size();
  if (m == 0) return {};
  std::vector<uint64_t> value, n_prefix(m + 1, 0), sum_prefix(m + 1, 0);
  for (const auto& [v, ns] : cand) {
    value.push_back(v);
    n_prefix[value.size()] = n_prefix[value.size() - 1] + ns.first;
    sum_prefix[value.size()] = sum_prefix[value.size() - 1] + ns.second;
  }
  // cost(i, j): one class value[j] serving candidates i..j (0-based).
  auto cost = [&](size_t i, size_t j) {
    return value[j] * (n_prefix[j + 1] - n_prefix[i]) -
           (sum_prefix[j + 1] - sum_prefix[i]);
  };
  const size_t k = std::min<size_t>(static_cast<size_t>(max_classes), m);
  constexpr uint64_t kInf = std::numeric_limits<uint64_t>::max();
  // best[c][j]: least waste serving candidates 0..j with c+1 classes, the
  // largest at value[j]; from[c][j]: where that last class's group starts.
  std::vector<std::vector<uint64_t>> best(k, std::vector<uint64_t>(m, kInf));
  std::vector<std::vector<size_t>> from(k, std::vector<size_t>(m, 0));
  for (size_t j = 0; j < m; ++j) best[0][j] = cost(0, j);
  for (size_t c = 1; c < k; ++c) {
    for (size_t j = c; j < m; ++j) {
      for (size_t i = c; i <= j; ++i) {
        if (best[c - 1][i - 1] == kInf) continue;
        const uint64_t total = best[c - 1][i - 1] + cost(i, j);
        if (total < best[c][j]) {
          best[c][j] = total;
          from[c][j] = i;
        }
      }
    }
  }
  size_t c = 0;
  for (size_t x = 1; x < k; ++x) {
    if (best[x][m - 1] < best[c][m - 1]) c = x;  // fewer classes on ties
  }
  std::vector<uint64_t> out;
  size_t j = m - 1;
  for (;;) {
    out.push_back(value[j]);
    if (c == 0) break;
    j = from[c][j] - 1;
    --c;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<SizingAdvice> BuildAdvice(const ProfileData& data) {
  std::vector<SizingAdvice> out;
  if (data.samples.empty()) return out;
  const v1::Stats& last = data.samples.back().stats;
  for (const v1::Region& region : data.regions) {
    if (region.strategy() != v1::STRATEGY_POOL &&
        region.strategy() != v1::STRATEGY_SLAB) {
      continue;
    }
    const v1::RegionStats* stats = nullptr;
    for (const v1::RegionStats& r : last.regions()) {
      if (r.name() == region.name()) stats = &r;
    }
    if (stats == nullptr) continue;
    SizingAdvice a;
    a.region = region.name();
    a.strategy = region.strategy();
    std::map<uint64_t, uint64_t> counts;
    for (const v1::Allocation& alloc : data.allocations) {
      if (alloc.region() != region.name()) continue;
      const uint64_t size = alloc.requested_bytes() != 0
                                ? alloc.requested_bytes()
                                : alloc.size_bytes();
      ++counts[size];
    }
    a.source = "requested_bytes";
    if (counts.empty()) {
      // Reserved sizes, rounded up to powers of two: coarser, but all the
      // daemon keeps when the allocations were not listed.
      a.source = "size_histogram";
      for (const v1::HistogramBucket& h : stats->size_histogram()) {
        if (h.count() > 0) counts[uint64_t{1} << h.log2_upper()] += h.count();
      }
    }
    if (counts.empty()) continue;
    std::vector<SizeCount> sizes;
    for (const auto& [size, n] : counts) {
      sizes.push_back({size, n});
      a.observed += n;
    }
    if (region.strategy() == v1::STRATEGY_POOL) {
      a.current = {region.block_size()};
    } else {
      a.current.assign(region.size_classes().begin(),
                       region.size_classes().end());
      std::sort(a.current.begin(), a.current.end());
    }
    a.advised = AdviseClasses(sizes, region.strategy() == v1::STRATEGY_POOL
                                         ? kPoolClasses
                                         : kSlabClasses);
    a.current_waste = ComputeWaste(sizes, a.current);
    a.advised_waste = ComputeWaste(sizes, a.advised);
    out.push_back(std::move(a));
  }
  return out;
}

std::string Sparkline(const std::vector<uint64_t>& values) {
  static constexpr const char* kLevels[] = {"▁", "▂", "▃", "▄",
                                            "▅", "▆", "▇", "█"};
  if (values.empty()) return "";
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  std::string out;
  for (uint64_t v : values) {
    int level;
    if (*hi == *lo) {
      level = *hi == 0 ? 0 : 3;
    } else {
      level = static_cast<int>(static_cast<double>(v - *lo) * 7.0 /
                                   static_cast<double>(*hi - *lo) +
                               0.5);
    }
    out += kLevels[std::clamp(level, 0, 7)];
  }
  return out;
}

std::string RenderProfileJson(const ProfileData& data) {
  JsonWriter w;
  w.BeginObject();
  w.Field("target", data.target);
  w.Field("region", data.region);
  w.Field("started", data.started);
  w.Field("interval_ms", static_cast<uint64_t>(data.interval_ms));
  w.Field("duration_ms", static_cast<uint64_t>(data.duration_ms));
  w.Key("interrupted");
  w.Bool(data.interrupted);
  auto uints = [&w](const char* key, const std::vector<uint64_t>& v) {
    w.Key(key);
    w.BeginArray();
    for (uint64_t x : v) w.Uint(x);
    w.EndArray();
  };
  w.Key("regions");
  w.BeginArray();
  for (const RegionSeries& s : BuildRegionSeries(data.samples)) {
    w.BeginObject();
    w.Field("name", s.name);
    w.Field("strategy", StrategyText(s.strategy));
    w.Field("capacity_bytes", s.capacity_bytes);
    w.Key("t_ms");
    w.BeginArray();
    for (int64_t t : s.t_ms) w.Uint(static_cast<uint64_t>(t));
    w.EndArray();
    uints("used_bytes", s.used_bytes);
    uints("live_allocations", s.live_allocations);
    uints("failed_allocations", s.failed_allocations);
    w.Key("fragmentation");
    w.BeginArray();
    for (double f : s.fragmentation) w.Double(f);
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.Key("rates");
  w.BeginArray();
  for (const RatePoint& p : BuildRates(data.samples)) {
    w.BeginObject();
    w.Field("t_ms", static_cast<uint64_t>(p.t_ms));
    w.Field("allocate_rpcs_per_s", p.allocate_rpcs);
    w.Field("free_rpcs_per_s", p.free_rpcs);
    w.Field("allocations_per_s", p.allocations);
    w.Field("frees_per_s", p.frees);
    w.EndObject();
  }
  w.EndArray();
  w.Key("leak_suspects");
  w.BeginArray();
  for (const LeakSuspect& s : FindLeakSuspects(data.samples)) {
    w.BeginObject();
    w.Field("region", s.region);
    w.Field("session_id", s.session_id);
    w.Field("client_name", s.client_name);
    w.Field("first_live", s.first_live);
    w.Field("last_live", s.last_live);
    w.Field("last_used_bytes", s.last_used_bytes);
    w.EndObject();
  }
  w.EndArray();
  w.Key("advice");
  w.BeginArray();
  for (const SizingAdvice& a : BuildAdvice(data)) {
    w.BeginObject();
    w.Field("region", a.region);
    w.Field("strategy", StrategyText(a.strategy));
    w.Field("source", a.source);
    w.Field("observed", a.observed);
    uints("current", a.current);
    uints("advised", a.advised);
    w.Field("current_waste_bytes", a.current_waste.waste_bytes);
    w.Field("current_waste_fraction", a.current_waste.waste_fraction());
    w.Field("current_unserved", a.current_waste.unserved);
    w.Field("advised_waste_bytes", a.advised_waste.waste_bytes);
    w.Field("advised_waste_fraction", a.advised_waste.waste_fraction());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str() + "\n";
}

}  // namespace shmalloc::cli
