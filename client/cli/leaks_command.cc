// shmalloc leaks [REGION] [--older-than=10m] [--json]: pages through
// ListAllocations and answers "who holds what, since when": allocations
// grouped by client (count, bytes, the oldest, an age histogram), then the
// detached allocations nobody has freed (detached ones outlive their
// session: they go only by Free or a forced reset/delete).
#include <algorithm>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/cli/json_writer.h"
#include "client/cli/stats_format.h"
#include "client/cli/table.h"
#include "client/cli/units.h"
#include "client/connection.h"

namespace shmalloc::cli {
namespace {

using Align = Table::Align;

// Age histogram upper bounds (milliseconds); the last bucket is open.
constexpr uint64_t kAgeBounds[] = {60'000, 600'000, 3'600'000, 86'400'000};
constexpr const char* kAgeLabels[] = {"<1m", "<10m", "<1h", "<1d", ">=1d"};
constexpr int kAgeBuckets = 5;
constexpr size_t kDetachedRows = 50;  // text output; --json lists all

int AgeBucket(uint64_t age_ms) {
  int b = 0;
  while (b < kAgeBuckets - 1 && age_ms >= kAgeBounds[b]) ++b;
  return b;
}

// Returns an age for people: "42s", "3m12s", "2h05m", "4d03h".
std::string FormatAge(uint64_t ms) {
  const uint64_t s = ms / 1000;
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh%02dm", s / 3600, s / 60 % 60);
  return absl::StrFormat("%dd%02dh", s / 86400, s / 3600 % 24);
}

// Who allocated (SessionText): a dead client's allocations group under its
// name, marked ended.
std::string ClientOf(const v1::Allocation& a) {
  return SessionText(a.session_id(), a.client_name(), a.session_ended());
}

struct Group {
  std::vector<uint64_t> sessions;
  uint64_t allocations = 0;
  uint64_t bytes = 0;
  uint64_t requested_bytes = 0;
  uint64_t detached = 0;
  uint64_t oldest_ms = 0;
  uint64_t ages[kAgeBuckets] = {};
};

struct Report {
  std::map<std::string, Group> groups;  // by client
  std::vector<v1::Allocation> detached;
  uint64_t allocations = 0;
  uint64_t bytes = 0;
  uint64_t pages = 0;
};

void Add(Report& report, const v1::Allocation& a) {
  Group& g = report.groups[ClientOf(a)];
  if (std::find(g.sessions.begin(), g.sessions.end(), a.session_id()) ==
      g.sessions.end()) {
    g.sessions.push_back(a.session_id());
  }
  ++g.allocations;
  g.bytes += a.size_bytes();
  g.requested_bytes += a.requested_bytes();
  g.oldest_ms = std::max(g.oldest_ms, a.age_ms());
  ++g.ages[AgeBucket(a.age_ms())];
  if (a.detached()) {
    ++g.detached;
    report.detached.push_back(a);
  }
  ++report.allocations;
  report.bytes += a.size_bytes();
}

// Groups with the most bytes first.
std::vector<std::pair<std::string, const Group*>> Ranked(const Report& r) {
  std::vector<std::pair<std::string, const Group*>> out;
  for (const auto& [name, g] : r.groups) out.emplace_back(name, &g);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.second->bytes > b.second->bytes;
  });
  return out;
}

std::string RenderText(const Report& r, const std::string& region,
                       uint64_t older_than_ms) {
  std::string out = absl::StrCat(
      r.allocations, " live allocations, ", FormatBytes(r.bytes), " in ",
      region.empty() ? "every region" : absl::StrCat("region ", region),
      older_than_ms > 0
          ? absl::StrCat(", at least ", FormatAge(older_than_ms), " old")
          : "",
      "\n\n");
  std::vector<Table::Column> columns = {{"CLIENT"},
                                        {"SESSIONS", Align::kRight},
                                        {"ALLOCS", Align::kRight},
                                        {"BYTES", Align::kRight},
                                        {"REQUESTED", Align::kRight},
                                        {"DETACHED", Align::kRight},
                                        {"OLDEST", Align::kRight}};
  for (const char* label : kAgeLabels)
    columns.push_back({label, Align::kRight});
  Table table(std::move(columns));
  for (const auto& [name, g] : Ranked(r)) {
    std::vector<std::string> row = {name,
                                    absl::StrCat(g->sessions.size()),
                                    absl::StrCat(g->allocations),
                                    FormatBytes(g->bytes),
                                    FormatBytes(g->requested_bytes),
                                    absl::StrCat(g->detached),
                                    FormatAge(g->oldest_ms)};
    for (uint64_t n : g->ages) row.push_back(absl::StrCat(n));
    table.AddRow(std::move(row));
  }
  absl::StrAppend(&out, table.Render());
  absl::StrAppend(&out, "\ndetached allocations nobody has freed: ",
                  r.detached.size(), "\n");
  if (r.detached.empty()) return out;
  std::vector<v1::Allocation> oldest = r.detached;
  std::stable_sort(oldest.begin(), oldest.end(),
                   [](const v1::Allocation& a, const v1::Allocation& b) {
                     return a.age_ms() > b.age_ms();
                   });
  Table detached({{"REGION"},
                  {"OFFSET", Align::kRight},
                  {"SIZE", Align::kRight},
                  {"REQUESTED", Align::kRight},
                  {"AGE", Align::kRight},
                  {"ALLOCATED BY"}});
  for (size_t i = 0; i < oldest.size() && i < kDetachedRows; ++i) {
    const v1::Allocation& a = oldest[i];
    detached.AddRow({a.region(), absl::StrFormat("0x%x", a.offset()),
                     FormatBytes(a.size_bytes()),
                     FormatBytes(a.requested_bytes()), FormatAge(a.age_ms()),
                     ClientOf(a)});
  }
  absl::StrAppend(&out, detached.Render());
  if (oldest.size() > kDetachedRows) {
    absl::StrAppend(&out, "... and ", oldest.size() - kDetachedRows,
                    " more (--json lists all)\n");
  }
  return out;
}

std::string RenderJson(const Report& r, const std::string& region,
                       uint64_t older_than_ms) {
  JsonWriter w;
  w.BeginObject();
  w.Field("region", region);
  w.Field("older_than_ms", older_than_ms);
  w.Field("allocations", r.allocations);
  w.Field("bytes", r.bytes);
  w.Field("pages", r.pages);
  w.Key("clients");
  w.BeginArray();
  for (const auto& [name, g] : Ranked(r)) {
    w.BeginObject();
    w.Field("client", name);
    w.Key("session_ids");
    w.BeginArray();
    for (uint64_t id : g->sessions) w.Uint(id);
    w.EndArray();
    w.Field("allocations", g->allocations);
    w.Field("bytes", g->bytes);
    w.Field("requested_bytes", g->requested_bytes);
    w.Field("detached", g->detached);
    w.Field("oldest_age_ms", g->oldest_ms);
    w.Key("age_histogram");
    w.BeginArray();
    for (int b = 0; b < kAgeBuckets; ++b) {
      w.BeginObject();
      w.Field("label", kAgeLabels[b]);
      // Upper bound in ms, 0 = open-ended.
      w.Field("below_ms", b < kAgeBuckets - 1 ? kAgeBounds[b] : uint64_t{0});
      w.Field("count", g->ages[b]);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.Key("detached");
  w.BeginArray();
  for (const v1::Allocation& a : r.detached) {
    w.BeginObject();
    w.Field("region", a.region());
    w.Field("offset", a.offset());
    w.Field("size_bytes", a.size_bytes());
    w.Field("requested_bytes", a.requested_bytes());
    w.Field("session_id", a.session_id());
    w.Field("client_name", a.client_name());
    w.Key("session_ended");
    w.Bool(a.session_ended());
    w.Field("age_ms", a.age_ms());
    w.Field("generation", a.generation());
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return w.str() + "\n";
}

}  // namespace

absl::Status RunLeaks(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global) {
  if (positional.size() > 1) {
    return UsageError(
        "usage: shmalloc leaks [REGION] [--older-than=10m] [--json]");
  }
  const char* older_flag = args.Has("older_than") ? "older_than" : "older-than";
  absl::StatusOr<absl::Duration> older =
      args.Has(older_flag)
          ? args.GetDuration(older_flag, absl::ZeroDuration())
          : absl::StatusOr<absl::Duration>(absl::ZeroDuration());
  absl::StatusOr<bool> json = args.GetBool("json", false);
  absl::StatusOr<uint64_t> page_size = args.GetUint("page_size", 1000);
  for (const absl::Status& s :
       {older.status(), json.status(), page_size.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*page_size == 0 || *page_size > 10000) {
    return UsageError("--page_size must be in [1, 10000]");
  }
  const std::string region = positional.empty() ? "" : positional[0];
  const uint64_t older_than_ms =
      static_cast<uint64_t>(absl::ToInt64Milliseconds(*older));
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  Report report;
  v1::ListAllocationsRequest request;
  request.set_region(region);
  request.set_older_than_ms(older_than_ms);
  request.set_page_size(static_cast<uint32_t>(*page_size));
  do {
    v1::ListAllocationsResponse page;
    absl::Status s =
        (*c)->connection()->Call(&v1::Allocator::Stub::ListAllocations,
                                 "ListAllocations", request, &page);
    if (!s.ok()) return s;
    ++report.pages;
    for (const v1::Allocation& a : page.allocations()) Add(report, a);
    request.set_page_token(page.next_page_token());
  } while (!request.page_token().empty());
  std::cout << (*json ? RenderJson(report, region, older_than_ms)
                      : RenderText(report, region, older_than_ms));
  return absl::OkStatus();
}

}  // namespace shmalloc::cli
