#include "client/cli/stats_format.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cli/json_writer.h"
#include "client/cli/profile_report.h"
#include "client/cli/table.h"
#include "client/cli/units.h"
#include "shmalloc/types.h"

namespace shmalloc::cli {
namespace {

using Align = Table::Align;

std::string Percent(double fraction) {
  return absl::StrFormat("%.1f%%", 100 * fraction);
}

double UsedFraction(const v1::RegionStats& r) {
  return r.capacity_bytes() == 0
             ? 0
             : static_cast<double>(r.used_bytes()) / r.capacity_bytes();
}

std::string Uptime(uint64_t ms) {
  return absl::FormatDuration(
      absl::Trunc(absl::Milliseconds(ms), absl::Seconds(1)));
}

std::string Summary(const v1::Stats& s) {
  return absl::StrCat("shmallocd: up ", Uptime(s.uptime_ms()), ", ",
                      s.region_count(), " regions, ", s.sessions(),
                      " sessions open (", s.sessions_opened(),
                      " since start)\n");
}

void RegionJson(JsonWriter& w, const v1::Region& r) {
  w.BeginObject();
  w.Field("name", r.name());
  w.Field("strategy", StrategyText(r.strategy()));
  w.Field("size_bytes", r.size_bytes());
  w.Field("block_size", r.block_size());
  w.Field("data_file", r.data_file());
  w.Field("data_dir", r.data_dir());
  w.Field("huge_pages", std::string(v1::HugePages_Name(r.huge_pages())));
  w.Field("generation", r.generation());
  w.Field("heap_begin", r.heap_begin());
  w.Field("heap_end", r.heap_end());
  w.Key("size_classes");
  w.BeginArray();
  for (uint64_t c : r.size_classes()) w.Uint(c);
  w.EndArray();
  w.Field("quota_bytes_per_session", r.quota_bytes_per_session());
  w.EndObject();
}

void RegionStatsJson(JsonWriter& w, const v1::RegionStats& r) {
  w.BeginObject();
  w.Field("name", r.name());
  w.Field("strategy", StrategyText(r.strategy()));
  w.Field("capacity_bytes", r.capacity_bytes());
  w.Field("used_bytes", r.used_bytes());
  w.Field("free_bytes", r.free_bytes());
  w.Field("peak_used_bytes", r.peak_used_bytes());
  w.Field("live_allocations", r.live_allocations());
  w.Field("failed_allocations", r.failed_allocations());
  w.Field("largest_free_bytes", r.largest_free_bytes());
  w.Field("fragmentation", r.fragmentation());
  w.Field("internal_fragmentation", r.internal_fragmentation());
  w.Field("requested_bytes", r.requested_bytes());
  w.Field("detached_allocations", r.detached_allocations());
  w.Field("detached_bytes", r.detached_bytes());
  w.Field("generation", r.generation());
  w.Key("sessions");
  w.BeginArray();
  for (const v1::SessionUsage& u : r.sessions()) {
    w.BeginObject();
    w.Field("session_id", u.session_id());
    w.Field("client_name", u.client_name());
    w.Field("used_bytes", u.used_bytes());
    w.Field("live_allocations", u.live_allocations());
    w.EndObject();
  }
  w.EndArray();
  w.Key("size_histogram");
  w.BeginArray();
  for (const v1::HistogramBucket& b : r.size_histogram()) {
    w.BeginObject();
    w.Field("log2_upper", uint64_t{b.log2_upper()});
    w.Field("count", b.count());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
}

}  // namespace

std::string StrategyText(int strategy) {
  return std::string(
      client::StrategyName(static_cast<client::Strategy>(strategy)));
}

std::string SessionText(uint64_t session_id, const std::string& client_name,
                        bool ended) {
  if (client_name.empty()) {
    return absl::StrCat("session ", session_id, ended ? " (ended)" : "");
  }
  return ended ? absl::StrCat(client_name, " (ended)") : client_name;
}

std::string FormatRegions(const v1::ListRegionsResponse& regions) {
  if (regions.regions_size() == 0) return "no regions\n";
  Table t({{"NAME"},
           {"STRATEGY"},
           {"SIZE", Align::kRight},
           {"HEAP", Align::kRight},
           {"BLOCK", Align::kRight},
           {"GEN", Align::kRight},
           {"DATA FILE"}});
  for (const v1::Region& r : regions.regions()) {
    t.AddRow({r.name(), StrategyText(r.strategy()), FormatBytes(r.size_bytes()),
              FormatBytes(r.heap_end() - r.heap_begin()),
              r.block_size() == 0 ? "-" : FormatBytes(r.block_size()),
              absl::StrCat(r.generation()), r.data_file()});
  }
  return t.Render();
}

std::string RegionsToJson(const v1::ListRegionsResponse& regions) {
  JsonWriter w;
  w.BeginObject();
  w.Key("regions");
  w.BeginArray();
  for (const v1::Region& r : regions.regions()) RegionJson(w, r);
  w.EndArray();
  w.EndObject();
  return w.str() + "\n";
}

std::string FormatRegion(const v1::Region& r) {
  std::string out =
      absl::StrCat("region '", r.name(), "': ", StrategyText(r.strategy()),
                   ", ", FormatBytes(r.heap_end() - r.heap_begin()),
                   " heap in ", FormatBytes(r.size_bytes()), " file ",
                   r.data_file(), ", generation ", r.generation());
  if (r.block_size() != 0) {
    absl::StrAppend(&out, ", block ", FormatBytes(r.block_size()));
  }
  if (r.size_classes_size() > 0) {
    absl::StrAppend(&out, ", size classes ",
                    absl::StrJoin(r.size_classes(), ","));
  }
  if (r.quota_bytes_per_session() != 0) {
    absl::StrAppend(&out, ", quota ", FormatBytes(r.quota_bytes_per_session()),
                    " per session");
  }
  if (r.huge_pages() == v1::HUGE_PAGES_HUGETLBFS) {
    absl::StrAppend(&out, ", huge pages (hugetlbfs) in ", r.data_dir());
  } else if (r.huge_pages() == v1::HUGE_PAGES_TMPFS_THP) {
    absl::StrAppend(&out, ", huge pages (tmpfs THP) in ", r.data_dir());
  }
  return out + "\n";
}

std::string FormatStats(const v1::Stats& s) {
  std::string out = Summary(s);
  if (s.regions_size() == 0) return out + "no regions\n";
  Table t({{"REGION"},
           {"STRATEGY"},
           {"CAPACITY", Align::kRight},
           {"USED", Align::kRight},
           {"USED%", Align::kRight},
           {"FREE", Align::kRight},
           {"PEAK", Align::kRight},
           {"LIVE", Align::kRight},
           {"FAILED", Align::kRight},
           {"LARGEST FREE", Align::kRight},
           {"FRAG", Align::kRight},
           {"SESSIONS", Align::kRight}});
  for (const v1::RegionStats& r : s.regions()) {
    t.AddRow({r.name(), StrategyText(r.strategy()),
              FormatBytes(r.capacity_bytes()), FormatBytes(r.used_bytes()),
              Percent(UsedFraction(r)), FormatBytes(r.free_bytes()),
              FormatBytes(r.peak_used_bytes()),
              absl::StrCat(r.live_allocations()),
              absl::StrCat(r.failed_allocations()),
              FormatBytes(r.largest_free_bytes()),
              absl::StrFormat("%.2f", r.fragmentation()),
              absl::StrCat(r.sessions_size())});
  }
  return out + "\n" + t.Render();
}

std::string FormatRegionDetail(const v1::Stats& s) {
  std::string out = Summary(s);
  for (const v1::RegionStats& r : s.regions()) {
    Table t({{"FIGURE"}, {"VALUE", Align::kRight}, {""}});
    auto bytes = [&](const char* name, uint64_t v) {
      t.AddRow({name, absl::StrCat(v), absl::StrCat("(", FormatBytes(v), ")")});
    };
    auto count = [&](const char* name, uint64_t v) {
      t.AddRow({name, absl::StrCat(v), ""});
    };
    bytes("capacity_bytes", r.capacity_bytes());
    bytes("used_bytes", r.used_bytes());
    bytes("free_bytes", r.free_bytes());
    bytes("peak_used_bytes", r.peak_used_bytes());
    bytes("requested_bytes", r.requested_bytes());
    bytes("largest_free_bytes", r.largest_free_bytes());
    count("live_allocations", r.live_allocations());
    count("detached_allocations", r.detached_allocations());
    bytes("detached_bytes", r.detached_bytes());
    count("failed_allocations", r.failed_allocations());
    t.AddRow({"fragmentation", absl::StrFormat("%.4f", r.fragmentation()), ""});
    t.AddRow({"internal_fragmentation",
              absl::StrFormat("%.4f", r.internal_fragmentation()), ""});
    count("generation", r.generation());
    absl::StrAppend(&out, "\nregion '", r.name(), "' (",
                    StrategyText(r.strategy()), "), ", Percent(UsedFraction(r)),
                    " used\n", t.Render());
    if (r.sessions_size() > 0) {
      Table u({{"SESSION", Align::kRight},
               {"CLIENT"},
               {"USED", Align::kRight},
               {"LIVE", Align::kRight}});
      for (const v1::SessionUsage& su : r.sessions()) {
        u.AddRow({absl::StrCat(su.session_id()), su.client_name(),
                  FormatBytes(su.used_bytes()),
                  absl::StrCat(su.live_allocations())});
      }
      absl::StrAppend(&out, "\nsessions\n", u.Render());
    }
    if (r.size_histogram_size() > 0) {
      Table h({{"SIZE <=", Align::kRight}, {"LIVE", Align::kRight}});
      for (const v1::HistogramBucket& b : r.size_histogram()) {
        h.AddRow({b.log2_upper() < 64
                      ? FormatBytes(uint64_t{1} << b.log2_upper())
                      : "-",
                  absl::StrCat(b.count())});
      }
      absl::StrAppend(&out, "\nsize histogram (live allocations)\n",
                      h.Render());
    }
  }
  return out;
}

std::string StatsToJson(const v1::Stats& s, bool pretty) {
  JsonWriter w(pretty);
  w.BeginObject();
  w.Field("uptime_ms", s.uptime_ms());
  w.Field("sessions", s.sessions());
  w.Field("sessions_opened", s.sessions_opened());
  w.Field("region_count", s.region_count());
  w.Key("regions");
  w.BeginArray();
  for (const v1::RegionStats& r : s.regions()) RegionStatsJson(w, r);
  w.EndArray();
  w.Key("rpcs");
  w.BeginArray();
  for (const v1::RpcCount& rpc : s.rpcs()) {
    w.BeginObject();
    w.Field("method", rpc.method());
    w.Field("calls", rpc.calls());
    w.Key("errors");
    w.BeginObject();
    // Protobuf maps are unordered; sort for stable output.
    std::vector<std::pair<std::string, uint64_t>> errors(rpc.errors().begin(),
                                                         rpc.errors().end());
    std::sort(errors.begin(), errors.end());
    for (const auto& [code, n] : errors) w.Field(code, n);
    w.EndObject();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str() + "\n";
}

std::string FormatWatchFrame(
    const v1::Stats& s, const std::string& target, int interval_ms,
    int bar_width,
    const std::map<std::string, std::vector<uint64_t>>& used_history) {
  std::string out =
      absl::StrCat("shmalloc watch  ", target, "  every ", interval_ms,
                   " ms  (Ctrl-C to quit)\n", Summary(s), "\n");
  if (s.regions_size() == 0) return out + "no regions\n";
  size_t name_width = 6;
  for (const v1::RegionStats& r : s.regions()) {
    name_width = std::max(name_width, r.name().size());
  }
  for (const v1::RegionStats& r : s.regions()) {
    const double used = std::clamp(UsedFraction(r), 0.0, 1.0);
    int filled = static_cast<int>(used * bar_width + 0.5);
    if (filled == 0 && r.used_bytes() > 0) filled = 1;  // never hide use
    const std::string bar =
        std::string(filled, '#') + std::string(bar_width - filled, '.');
    absl::StrAppendFormat(&out, "%-*s [%s] %6s  %s used / %s\n",
                          static_cast<int>(name_width), r.name(), bar,
                          Percent(used), FormatBytes(r.used_bytes()),
                          FormatBytes(r.capacity_bytes()));
    absl::StrAppendFormat(
        &out,
        "%-*s  %-9s frag %.2f  live %d  sessions %d  peak %s  failed %d\n",
        static_cast<int>(name_width), "", StrategyText(r.strategy()),
        r.fragmentation(), r.live_allocations(), r.sessions_size(),
        FormatBytes(r.peak_used_bytes()), r.failed_allocations());
    if (auto it = used_history.find(r.name()); it != used_history.end()) {
      absl::StrAppendFormat(&out, "%-*s  used %s  (last %d samples)\n",
                            static_cast<int>(name_width), "",
                            Sparkline(it->second), it->second.size());
    }
  }
  return out;
}

}  // namespace shmalloc::cli
