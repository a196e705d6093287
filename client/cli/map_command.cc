// shmalloc map REGION [--buckets=N] [--svg FILE] [--color]: the region's
// layout from GetRegionMap, drawn as one character cell per bucket (a letter
// and, on a terminal or with --color, a colour per owner session), a legend
// with client names and bytes, and a histogram of free-run sizes. --svg
// also writes a standalone SVG picture (no external references): one rect
// per run (or per bucket with --buckets), a legend and a title.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/commands.h"
#include "client/cli/markup.h"
#include "client/cli/stats_format.h"
#include "client/cli/units.h"
#include "client/connection.h"

namespace shmalloc::cli {
namespace {

constexpr uint32_t kDefaultBuckets = 512;  // 8 rows of 64 cells
constexpr int kCellsPerRow = 64;
constexpr uint32_t kSvgBuckets = 4096;  // when a region has too many runs

// Per-owner colours: ANSI 256-colour indices and the same hues for SVG.
constexpr int kAnsi[] = {33, 166, 34, 163, 178, 37, 124, 99, 130, 70, 205, 67};
constexpr const char* kHex[] = {"#0087ff", "#d75f00", "#00af00", "#d700af",
                                "#d7af00", "#00afaf", "#af0000", "#875fff",
                                "#af5f00", "#5faf00", "#ff5faf", "#5f87af"};
constexpr int kPalette = sizeof(kAnsi) / sizeof(kAnsi[0]);
constexpr const char* kFreeHex = "#eeeeee";
constexpr const char* kMetaHex = "#808080";

// The legend: owner session -> its index in map.sessions (letter, colour).
class Owners {
 public:
  explicit Owners(const v1::RegionMap& map) {
    for (int i = 0; i < map.sessions_size(); ++i) {
      index_[map.sessions(i).session_id()] = i;
    }
  }
  int Index(uint64_t session_id) const {
    auto it = index_.find(session_id);
    return it == index_.end() ? 0 : it->second;
  }
  static char Letter(int index) {
    constexpr char kLetters[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    return kLetters[index % (sizeof(kLetters) - 1)];
  }

 private:
  absl::flat_hash_map<uint64_t, int> index_;
};

std::string OwnerText(const v1::SessionUsage& s) {
  if (s.session_id() == 0) return "(arena: no owner)";
  if (s.client_name().empty()) {
    return SessionText(s.session_id(), "", s.session_ended());
  }
  return absl::StrCat(s.client_name(), " (session ", s.session_id(),
                      s.session_ended() ? ", ended)" : ")");
}

std::string Cell(char c, int colour, bool ansi) {
  if (!ansi) return std::string(1, c);
  if (colour < 0) return std::string(1, c);
  return absl::StrCat("\x1b[48;5;", colour, "m\x1b[38;5;231m",
                      std::string(1, c), "\x1b[0m");
}

std::string Header(const v1::RegionMap& map) {
  const uint64_t heap = map.heap_end() - map.heap_begin();
  return absl::StrCat("region ", map.region(), " (",
                      StrategyText(map.strategy()), ", ", FormatBytes(heap),
                      " heap, generation ", map.generation(),
                      "): ", FormatBytes(map.used_bytes()), " used, ",
                      FormatBytes(map.free_bytes()), " free (", map.free_runs(),
                      map.free_runs() == 1 ? " run" : " runs", ", largest ",
                      FormatBytes(map.largest_free_run_bytes()), ")\n");
}

// Returns the terminal picture of a bucketed map.
std::string RenderTerminal(const v1::RegionMap& map, bool ansi) {
  const Owners owners(map);
  std::string out = Header(map);
  const int n = map.buckets_size();
  const uint64_t per_cell = n == 0 ? 0 : map.size_bytes() / n;
  absl::StrAppend(&out, "one cell = ", FormatBytes(per_cell),
                  "; letter = the session holding most of it (lower case: "
                  "under half used), . free, # header\n");
  const int digits = std::max<int>(
      4, static_cast<int>(absl::StrFormat("%x", map.size_bytes()).size()));
  for (int i = 0; i < n; ++i) {
    const v1::RegionBucket& b = map.buckets(i);
    if (i % kCellsPerRow == 0) {
      absl::StrAppend(&out, absl::StrFormat("0x%0*x |", digits, b.offset()));
    }
    if (b.metadata_bytes() * 2 >= b.length_bytes()) {
      absl::StrAppend(&out, Cell('#', 240, ansi));
    } else if (b.used_bytes() == 0) {
      absl::StrAppend(&out, Cell('.', -1, ansi));
    } else {
      const int index = owners.Index(b.dominant_session_id());
      char c = Owners::Letter(index);
      if (b.used_fraction() < 0.5 && c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
      absl::StrAppend(&out, Cell(c, kAnsi[index % kPalette], ansi));
    }
    if (i % kCellsPerRow == kCellsPerRow - 1 || i == n - 1) {
      absl::StrAppend(&out, "|\n");
    }
  }
  absl::StrAppend(&out, "\nlegend:\n");
  for (int i = 0; i < map.sessions_size(); ++i) {
    const v1::SessionUsage& s = map.sessions(i);
    absl::StrAppend(
        &out, "  ", Cell(Owners::Letter(i), kAnsi[i % kPalette], ansi), "  ",
        absl::StrFormat("%-40s %10s  %d allocations\n", OwnerText(s),
                        FormatBytes(s.used_bytes()), s.live_allocations()));
  }
  absl::StrAppend(
      &out, "  .  ",
      absl::StrFormat("%-40s %10s\n", "free", FormatBytes(map.free_bytes())));
  absl::StrAppend(&out, "  ", Cell('#', 240, ansi), "  ",
                  absl::StrFormat("%-40s %10s\n", "segment header",
                                  FormatBytes(map.heap_begin())));
  absl::StrAppend(&out, "\nfree runs by size:\n");
  uint64_t most = 1;
  for (const v1::HistogramBucket& h : map.free_run_histogram()) {
    most = std::max(most, h.count());
  }
  if (map.free_run_histogram_size() == 0) absl::StrAppend(&out, "  (none)\n");
  for (const v1::HistogramBucket& h : map.free_run_histogram()) {
    const int bar = static_cast<int>((h.count() * 40 + most - 1) / most);
    absl::StrAppend(&out,
                    absl::StrFormat("  <= %10s  %-40s %d\n",
                                    FormatBytes(uint64_t{1} << h.log2_upper()),
                                    std::string(bar, '#'), h.count()));
  }
  return out;
}

// Returns a standalone SVG of `map`: the data file as one strip, one rect
// (class "run" or "bucket") per run or bucket, then a legend.
std::string RenderSvg(const v1::RegionMap& map) {
  constexpr double kLeft = 20, kTop = 60, kWidth = 1200, kHeight = 120;
  const Owners owners(map);
  const double scale = map.size_bytes() == 0
                           ? 0
                           : kWidth / static_cast<double>(map.size_bytes());
  const int legend_rows = map.sessions_size() + 2;
  const double height = kTop + kHeight + 50 + 22.0 * legend_rows;
  std::string out = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
      "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
      "font-family=\"sans-serif\" font-size=\"13\">\n",
      kWidth + 2 * kLeft, height, kWidth + 2 * kLeft, height);
  const std::string title = absl::StrCat("shmalloc region ", map.region());
  absl::StrAppend(&out, "<title>", XmlEscape(title), "</title>\n");
  absl::StrAppend(&out, "<text x=\"", kLeft, "\" y=\"24\" font-size=\"18\">",
                  XmlEscape(title), "</text>\n");
  std::string header = Header(map);
  header.pop_back();
  absl::StrAppend(&out, "<text x=\"", kLeft, "\" y=\"46\">", XmlEscape(header),
                  "</text>\n");
  auto rect = [&](const char* cls, uint64_t offset, uint64_t length,
                  const char* fill, double opacity, const std::string& tip) {
    const double x = kLeft + static_cast<double>(offset) * scale;
    // Keep tiny runs visible: at least a fifth of a pixel.
    const double w = std::max(0.2, static_cast<double>(length) * scale);
    absl::StrAppend(
        &out, absl::StrFormat(
                  "<rect class=\"%s\" x=\"%.3f\" y=\"%.0f\" "
                  "width=\"%.3f\" height=\"%.0f\" fill=\"%s\" "
                  "fill-opacity=\"%.3f\"><title>%s</title></rect>\n",
                  cls, x, kTop, w, kHeight, fill, opacity, XmlEscape(tip)));
  };
  auto owner_name = [&](uint64_t id) {
    const int i = owners.Index(id);
    return i < map.sessions_size() ? OwnerText(map.sessions(i))
                                   : std::string("?");
  };
  for (const v1::RegionRun& r : map.runs()) {
    const std::string where = absl::StrFormat("[0x%x, 0x%x) %s", r.offset(),
                                              r.offset() + r.length_bytes(),
                                              FormatBytes(r.length_bytes()));
    switch (r.kind()) {
      case v1::RUN_KIND_USED: {
        const int i = owners.Index(r.session_id());
        rect("run", r.offset(), r.length_bytes(), kHex[i % kPalette], 1.0,
             absl::StrCat(where, " used by ", owner_name(r.session_id()), ", ",
                          r.allocations(), " allocations",
                          r.detached() ? " (detached)" : ""));
        break;
      }
      case v1::RUN_KIND_METADATA:
        rect("run", r.offset(), r.length_bytes(), kMetaHex, 1.0,
             absl::StrCat(where, " segment header"));
        break;
      default:
        rect("run", r.offset(), r.length_bytes(), kFreeHex, 1.0,
             absl::StrCat(where, " free"));
    }
  }
  for (const v1::RegionBucket& b : map.buckets()) {
    const std::string where =
        absl::StrFormat("[0x%x, 0x%x) %.0f%% used", b.offset(),
                        b.offset() + b.length_bytes(), 100 * b.used_fraction());
    if (b.metadata_bytes() * 2 >= b.length_bytes()) {
      rect("bucket", b.offset(), b.length_bytes(), kMetaHex, 1.0,
           absl::StrCat(where, ", segment header"));
    } else if (b.used_bytes() == 0) {
      rect("bucket", b.offset(), b.length_bytes(), kFreeHex, 1.0,
           absl::StrCat(where, ", free"));
    } else {
      const int i = owners.Index(b.dominant_session_id());
      rect("bucket", b.offset(), b.length_bytes(), kHex[i % kPalette],
           std::max(0.15, b.used_fraction()),
           absl::StrCat(where, ", mostly ",
                        owner_name(b.dominant_session_id())));
    }
  }
  // Outline of the strip, then the legend.
  absl::StrAppend(
      &out, absl::StrFormat("<rect class=\"frame\" x=\"%.0f\" y=\"%.0f\" "
                            "width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
                            "stroke=\"#333333\"/>\n",
                            kLeft, kTop, kWidth, kHeight));
  absl::StrAppend(&out,
                  absl::StrFormat("<text x=\"%.0f\" y=\"%.0f\">0x0</text>\n"
                                  "<text x=\"%.0f\" y=\"%.0f\" "
                                  "text-anchor=\"end\">0x%x</text>\n",
                                  kLeft, kTop + kHeight + 16, kLeft + kWidth,
                                  kTop + kHeight + 16, map.size_bytes()));
  double y = kTop + kHeight + 40;
  auto legend = [&](const char* fill, const std::string& text) {
    absl::StrAppend(
        &out,
        absl::StrFormat("<rect class=\"legend\" x=\"%.0f\" y=\"%.0f\" "
                        "width=\"14\" height=\"14\" fill=\"%s\" "
                        "stroke=\"#333333\"/>\n"
                        "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n",
                        kLeft, y, fill, kLeft + 22, y + 12, XmlEscape(text)));
    y += 22;
  };
  for (int i = 0; i < map.sessions_size(); ++i) {
    const v1::SessionUsage& s = map.sessions(i);
    legend(kHex[i % kPalette],
           absl::StrCat(OwnerText(s), ": ", FormatBytes(s.used_bytes()), " in ",
                        s.live_allocations(), " allocations"));
  }
  legend(kFreeHex, absl::StrCat("free: ", FormatBytes(map.free_bytes()), " in ",
                                map.free_runs(), " runs"));
  legend(kMetaHex,
         absl::StrCat("segment header: ", FormatBytes(map.heap_begin())));
  absl::StrAppend(&out, "</svg>\n");
  return out;
}

absl::Status GetMap(client::Client& c, const std::string& region,
                    uint32_t buckets, v1::RegionMap* map) {
  v1::GetRegionMapRequest request;
  request.set_region(region);
  request.set_buckets(buckets);
  return c.connection()->Call(&v1::Allocator::Stub::GetRegionMap,
                              "GetRegionMap", request, map);
}

}  // namespace

absl::Status RunMap(const std::vector<std::string>& positional,
                    const Args& args, const GlobalOptions& global) {
  if (positional.size() != 1) {
    return UsageError(
        "usage: shmalloc map REGION [--buckets=N] [--svg FILE] [--color]");
  }
  absl::StatusOr<uint64_t> buckets = args.GetUint("buckets", kDefaultBuckets);
  absl::StatusOr<bool> color =
      args.GetBool("color", isatty(STDOUT_FILENO) == 1);
  for (const absl::Status& s : {buckets.status(), color.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*buckets == 0 || *buckets > 4096) {
    return UsageError("--buckets must be in [1, 4096]");
  }
  const std::optional<std::string> svg = args.Get("svg");
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  v1::RegionMap map;
  if (absl::Status s =
          GetMap(**c, positional[0], static_cast<uint32_t>(*buckets), &map);
      !s.ok()) {
    return s;
  }
  std::cout << RenderTerminal(map, *color);
  if (!svg.has_value()) return absl::OkStatus();
  // The picture shows every run unless --buckets was given or the region
  // has too many runs for that.
  v1::RegionMap picture;
  absl::Status s = args.Has("buckets")
                       ? absl::OkStatus()
                       : GetMap(**c, positional[0], 0, &picture);
  if (args.Has("buckets")) {
    picture = map;
  } else if (absl::IsInvalidArgument(s)) {
    s = GetMap(**c, positional[0], kSvgBuckets, &picture);
  }
  if (!s.ok()) return s;
  std::ofstream file(*svg, std::ios::binary | std::ios::trunc);
  file << RenderSvg(picture);
  file.close();
  if (!file) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot write ", *svg, ": ",
        std::error_code(errno, std::generic_category()).message()));
  }
  std::cout << "wrote " << *svg << " ("
            << (picture.runs_size() > 0 ? picture.runs_size()
                                        : picture.buckets_size())
            << (picture.runs_size() > 0 ? " runs" : " buckets") << ")\n";
  return absl::OkStatus();
}

}  // namespace shmalloc::cli
