// RenderProfileHtml (profile_report.h): the `shmalloc profile` report as one
// HTML file a browser opens offline. Charts are inline SVG drawn here (line
// charts for series, bar charts for histograms and sessions); the style is
// an inline <style>; nothing loads anything.
#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/markup.h"
#include "client/cli/profile_report.h"
#include "client/cli/stats_format.h"
#include "client/cli/units.h"

namespace shmalloc::cli {
namespace {

constexpr const char* kColours[] = {"#0087ff", "#d75f00", "#00af00", "#d700af",
                                    "#d7af00", "#00afaf", "#af0000", "#875fff"};
constexpr int kPalette = sizeof(kColours) / sizeof(kColours[0]);
constexpr double kW = 720, kH = 220, kLeft = 80, kRight = 16, kTop = 28,
                 kBottom = 30;
constexpr size_t kOldestRows = 20;

std::string Esc(const std::string& s) { return XmlEscape(s); }

struct Line {
  explicit Line(std::string n) : name(std::move(n)) {}
  std::string name;
  std::vector<double> x, y;  // x in seconds
};

using Format = std::string (*)(double);
std::string FmtBytes(double v) { return FormatBytes(static_cast<uint64_t>(v)); }
std::string FmtNumber(double v) { return absl::StrFormat("%.4g", v); }

// Returns an SVG line chart of `lines` against a shared time axis.
std::string LineChart(const std::string& title, const std::vector<Line>& lines,
                      Format format) {
  double x_max = 0, y_max = 0;
  for (const Line& l : lines) {
    for (double x : l.x) x_max = std::max(x_max, x);
    for (double y : l.y) y_max = std::max(y_max, y);
  }
  if (x_max <= 0) x_max = 1;
  if (y_max <= 0) y_max = 1;
  const double pw = kW - kLeft - kRight, ph = kH - kTop - kBottom;
  auto px = [&](double x) { return kLeft + x / x_max * pw; };
  auto py = [&](double y) { return kTop + ph - y / y_max * ph; };
  std::string out = absl::StrFormat(
      "<svg class=\"chart\" "
      "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n"
      "<text x=\"%.0f\" y=\"18\" class=\"title\">%s</text>\n",
      kW, kH + 18.0 * ((lines.size() + 3) / 4), kW,
      kH + 18.0 * ((lines.size() + 3) / 4), kLeft, Esc(title));
  for (int g = 0; g <= 4; ++g) {
    const double y = y_max * g / 4;
    absl::StrAppendFormat(
        &out,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
        "class=\"grid\"/><text x=\"%.1f\" y=\"%.1f\" class=\"axis\" "
        "text-anchor=\"end\">%s</text>\n",
        kLeft, py(y), kLeft + pw, py(y), kLeft - 6, py(y) + 4, Esc(format(y)));
  }
  for (int g = 0; g <= 4; ++g) {
    const double x = x_max * g / 4;
    absl::StrAppendFormat(&out,
                          "<text x=\"%.1f\" y=\"%.1f\" class=\"axis\" "
                          "text-anchor=\"middle\">%.1fs</text>\n",
                          px(x), kTop + ph + 18, x);
  }
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& l = lines[i];
    const char* colour = kColours[i % kPalette];
    std::vector<std::string> points;
    for (size_t k = 0; k < l.x.size() && k < l.y.size(); ++k) {
      points.push_back(absl::StrFormat("%.1f,%.1f", px(l.x[k]), py(l.y[k])));
    }
    absl::StrAppendFormat(&out,
                          "<polyline fill=\"none\" stroke=\"%s\" "
                          "stroke-width=\"2\" points=\"%s\"/>\n",
                          colour, absl::StrJoin(points, " "));
    if (points.size() == 1) {
      absl::StrAppendFormat(&out,
                            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" "
                            "fill=\"%s\"/>\n",
                            px(l.x[0]), py(l.y[0]), colour);
    }
    const double lx = kLeft + (i % 4) * 160.0;
    const double ly = kH + 18.0 * (i / 4) - 2;
    absl::StrAppendFormat(&out,
                          "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" "
                          "height=\"10\" fill=\"%s\"/><text x=\"%.0f\" "
                          "y=\"%.0f\" class=\"axis\">%s</text>\n",
                          lx, ly - 9, colour, lx + 14, ly, Esc(l.name));
  }
  return out + "</svg>\n";
}

struct Bar {
  std::string label;
  double value = 0;
  std::string text;  // shown after the bar
};

// Returns an SVG horizontal bar chart.
std::string BarChart(const std::string& title, const std::vector<Bar>& bars) {
  double most = 0;
  for (const Bar& b : bars) most = std::max(most, b.value);
  if (most <= 0) most = 1;
  const double row = 20, label_w = 220, bar_w = kW - label_w - 140;
  const double height = kTop + row * std::max<size_t>(bars.size(), 1) + 8;
  std::string out = absl::StrFormat(
      "<svg class=\"chart\" "
      "width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n"
      "<text x=\"8\" y=\"18\" class=\"title\">%s</text>\n",
      kW, height, kW, height, Esc(title));
  if (bars.empty()) {
    absl::StrAppendFormat(&out,
                          "<text x=\"8\" y=\"%.0f\" class=\"axis\">(nothing "
                          "observed)</text>\n",
                          kTop + 14);
  }
  for (size_t i = 0; i < bars.size(); ++i) {
    const double y = kTop + row * i;
    const double w = std::max(1.0, bars[i].value / most * bar_w);
    absl::StrAppendFormat(
        &out,
        "<text x=\"%.0f\" y=\"%.0f\" class=\"axis\" "
        "text-anchor=\"end\">%s</text><rect x=\"%.0f\" y=\"%.0f\" "
        "width=\"%.1f\" height=\"14\" fill=\"%s\"/><text x=\"%.1f\" "
        "y=\"%.0f\" class=\"axis\">%s</text>\n",
        label_w - 6, y + 12, Esc(bars[i].label), label_w, y, w,
        kColours[i % kPalette], label_w + w + 6, y + 12, Esc(bars[i].text));
  }
  return out + "</svg>\n";
}

std::string Classes(const std::vector<uint64_t>& classes) {
  std::vector<std::string> parts;
  for (uint64_t c : classes) parts.push_back(FormatBytes(c));
  return absl::StrJoin(parts, ", ");
}

std::string Pct(double f) { return absl::StrFormat("%.1f%%", 100 * f); }

constexpr char kStyle[] = R"(<style>
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1000px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
svg.chart { display: block; margin: 8px 0 16px; background: #fcfcfc; }
svg .title { font-size: 14px; font-weight: bold; }
svg .axis { font-size: 11px; fill: #444; }
svg .grid { stroke: #e4e4e4; stroke-width: 1; }
p.note { font-size: 13px; color: #555; }
</style>
)";

}  // namespace

std::string RenderProfileHtml(const ProfileData& data) {
  const std::vector<RegionSeries> series = BuildRegionSeries(data.samples);
  const std::vector<RatePoint> rates = BuildRates(data.samples);
  const double span_s =
      data.samples.empty() ? 0 : data.samples.back().t_ms / 1000.0;
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>shmalloc profile</title>\n",
      kStyle, "</head>\n<body>\n<h1>shmalloc profile</h1>\n<p>daemon ",
      Esc(data.target), ", ",
      data.region.empty() ? std::string("every region")
                          : absl::StrCat("region ", Esc(data.region)),
      "; started ", Esc(data.started), "; ", data.samples.size(),
      " samples every ", data.interval_ms, " ms over ",
      absl::StrFormat("%.1f", span_s), " s",
      data.interrupted ? " (interrupted)" : "", ".</p>\n");

  // Final totals, from the last sample.
  absl::StrAppend(&out,
                  "<h2>Regions at the end</h2>\n<table>\n<tr><th>region</th>"
                  "<th>strategy</th><th>capacity</th><th>used</th>"
                  "<th>peak</th><th>live allocations</th>"
                  "<th>fragmentation</th><th>failed allocations</th></tr>\n");
  if (!data.samples.empty()) {
    for (const v1::RegionStats& r : data.samples.back().stats.regions()) {
      absl::StrAppendFormat(
          &out,
          "<tr class=\"region-total\" data-region=\"%s\" "
          "data-used-bytes=\"%d\" data-live-allocations=\"%d\" "
          "data-failed-allocations=\"%d\"><td>%s</td><td>%s</td>"
          "<td class=\"n\">%s</td><td class=\"n\">%s</td>"
          "<td class=\"n\">%s</td><td class=\"n\">%d</td>"
          "<td class=\"n\">%.3f</td><td class=\"n\">%d</td></tr>\n",
          Esc(r.name()), r.used_bytes(), r.live_allocations(),
          r.failed_allocations(), Esc(r.name()), StrategyText(r.strategy()),
          FormatBytes(r.capacity_bytes()), FormatBytes(r.used_bytes()),
          FormatBytes(r.peak_used_bytes()), r.live_allocations(),
          r.fragmentation(), r.failed_allocations());
    }
  }
  absl::StrAppend(&out, "</table>\n");

  // Series over time.
  std::vector<Line> used, frag, failed;
  for (const RegionSeries& s : series) {
    Line u{s.name}, f{s.name}, x{s.name};
    for (size_t i = 0; i < s.t_ms.size(); ++i) {
      const double t = s.t_ms[i] / 1000.0;
      u.x.push_back(t);
      f.x.push_back(t);
      x.x.push_back(t);
      u.y.push_back(static_cast<double>(s.used_bytes[i]));
      f.y.push_back(s.fragmentation[i]);
      x.y.push_back(static_cast<double>(s.failed_allocations[i]));
    }
    used.push_back(std::move(u));
    frag.push_back(std::move(f));
    failed.push_back(std::move(x));
  }
  absl::StrAppend(&out, "<h2>Used bytes</h2>\n",
                  LineChart("used bytes per region", used, FmtBytes),
                  "<h2>Fragmentation</h2>\n<p class=\"note\">1 - largest "
                  "free / free: 0 when the free space is one run.</p>\n",
                  LineChart("fragmentation per region", frag, FmtNumber));
  Line alloc_rpcs{"Allocate RPCs/s"}, free_rpcs{"Free RPCs/s"},
      allocs{"allocations/s (live growth)"}, frees{"frees/s (live shrinkage)"};
  for (const RatePoint& p : rates) {
    const double t = p.t_ms / 1000.0;
    for (Line* l : {&alloc_rpcs, &free_rpcs, &allocs, &frees})
      l->x.push_back(t);
    alloc_rpcs.y.push_back(p.allocate_rpcs);
    free_rpcs.y.push_back(p.free_rpcs);
    allocs.y.push_back(p.allocations);
    frees.y.push_back(p.frees);
  }
  absl::StrAppend(
      &out,
      "<h2>Allocation and free rates</h2>\n<p class=\"note\">RPC rates are "
      "daemon-wide (Stats.rpcs; one RPC may carry a batch); allocation and "
      "free rates are the net change of live allocations per interval.</p>\n",
      LineChart("rates per second", {alloc_rpcs, free_rpcs, allocs, frees},
                FmtNumber),
      "<h2>Failures</h2>\n<p class=\"note\">Allocations refused for lack of "
      "space, cumulative.</p>\n",
      LineChart("failed allocations per region", failed, FmtNumber));

  // Histograms and sessions at the end.
  absl::StrAppend(&out, "<h2>Allocation sizes</h2>\n");
  if (!data.samples.empty()) {
    for (const v1::RegionStats& r : data.samples.back().stats.regions()) {
      std::vector<Bar> bars;
      for (const v1::HistogramBucket& h : r.size_histogram()) {
        bars.push_back(
            {absl::StrCat("<= ", FormatBytes(uint64_t{1} << h.log2_upper())),
             static_cast<double>(h.count()), absl::StrCat(h.count())});
      }
      absl::StrAppend(&out, BarChart(absl::StrCat(r.name(),
                                                  ": live allocations by "
                                                  "reserved size"),
                                     bars));
    }
  }
  absl::StrAppend(&out, "<h2>Sessions</h2>\n");
  if (!data.samples.empty()) {
    std::vector<Bar> bars;
    for (const v1::RegionStats& r : data.samples.back().stats.regions()) {
      for (const v1::SessionUsage& u : r.sessions()) {
        bars.push_back(
            {absl::StrCat(r.name(), ": ",
                          SessionText(u.session_id(), u.client_name(),
                                      u.session_ended())),
             static_cast<double>(u.used_bytes()),
             absl::StrCat(FormatBytes(u.used_bytes()), " in ",
                          u.live_allocations(), " allocations")});
      }
    }
    absl::StrAppend(&out, BarChart("used bytes per session", bars));
  }

  // Leak suspects.
  absl::StrAppend(&out,
                  "<h2>Leak suspects</h2>\n<p class=\"note\">Sessions whose "
                  "live allocation count only grew while sampled.</p>\n"
                  "<table>\n<tr><th>region</th><th>client</th><th>session"
                  "</th><th>live at first</th><th>live at last</th>"
                  "<th>used at last</th></tr>\n");
  for (const LeakSuspect& s : FindLeakSuspects(data.samples)) {
    absl::StrAppendFormat(
        &out,
        "<tr class=\"suspect\"><td>%s</td><td>%s</td><td class=\"n\">%d</td>"
        "<td class=\"n\">%d</td><td class=\"n\">%d</td><td class=\"n\">%s"
        "</td></tr>\n",
        Esc(s.region), Esc(s.client_name), s.session_id, s.first_live,
        s.last_live, FormatBytes(s.last_used_bytes));
  }
  absl::StrAppend(&out,
                  "</table>\n<p>Oldest live allocations:</p>\n<table>\n"
                  "<tr><th>region</th><th>offset</th><th>size</th>"
                  "<th>requested</th><th>age</th><th>client</th>"
                  "<th>detached</th></tr>\n");
  std::vector<const v1::Allocation*> oldest;
  for (const v1::Allocation& a : data.allocations) oldest.push_back(&a);
  std::stable_sort(oldest.begin(), oldest.end(),
                   [](auto* a, auto* b) { return a->age_ms() > b->age_ms(); });
  for (size_t i = 0; i < oldest.size() && i < kOldestRows; ++i) {
    const v1::Allocation& a = *oldest[i];
    absl::StrAppendFormat(
        &out,
        "<tr class=\"oldest\"><td>%s</td><td class=\"n\">0x%x</td>"
        "<td class=\"n\">%s</td><td class=\"n\">%s</td>"
        "<td class=\"n\">%.1fs</td><td>%s</td><td>%s</td></tr>\n",
        Esc(a.region()), a.offset(), FormatBytes(a.size_bytes()),
        FormatBytes(a.requested_bytes()), a.age_ms() / 1000.0,
        Esc(SessionText(a.session_id(), a.client_name(), a.session_ended())),
        a.detached() ? "yes" : "");
  }
  absl::StrAppend(&out, "</table>\n");

  // Sizing advice.
  absl::StrAppend(
      &out,
      "<h2>Sizing advice</h2>\n<p class=\"note\">For POOL and SLAB regions: "
      "the block size (POOL) or up to 8 size classes (SLAB) that would have "
      "served the observed sizes with the least waste, waste = sum(block - "
      "size) / reserved bytes.</p>\n<table>\n<tr><th>region</th>"
      "<th>strategy</th><th>observed</th><th>current</th>"
      "<th>current waste</th><th>advised</th><th>advised waste</th></tr>\n");
  for (const SizingAdvice& a : BuildAdvice(data)) {
    const std::string unserved =
        a.current_waste.unserved == 0
            ? ""
            : absl::StrCat(" (", a.current_waste.unserved, " too large)");
    absl::StrAppendFormat(
        &out,
        "<tr class=\"advice\" data-region=\"%s\" data-advised=\"%s\">"
        "<td>%s</td><td>%s</td><td class=\"n\">%d from %s</td><td>%s</td>"
        "<td class=\"n\">%s%s</td><td>%s</td><td class=\"n\">%s</td></tr>\n",
        Esc(a.region), absl::StrJoin(a.advised, ","), Esc(a.region),
        StrategyText(a.strategy), a.observed, a.source, Classes(a.current),
        Pct(a.current_waste.waste_fraction()), unserved, Classes(a.advised),
        Pct(a.advised_waste.waste_fraction()));
  }
  absl::StrAppend(&out, "</table>\n</body>\n</html>\n");
  return out;
}

}  // namespace shmalloc::cli
