#include "server/map_service.h"

#include <algorithm>
#include <bit>
#include <map>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace shmalloc::server {
namespace {

// One run before it becomes a RegionRun (client names are filled last, once
// per run that is kept).
struct Run {
  uint64_t offset = 0;
  uint64_t length = 0;
  v1::RunKind kind = v1::RUN_KIND_UNSPECIFIED;
  uint64_t session_id = 0;
  bool detached = false;
  uint64_t allocations = 0;
};

// Appends `run`, merging it into the last one when they touch and have the
// same kind and owner.
void Push(std::vector<Run>& runs, const Run& run) {
  if (run.length == 0) return;
  if (!runs.empty()) {
    Run& last = runs.back();
    if (last.offset + last.length == run.offset && last.kind == run.kind &&
        last.session_id == run.session_id && last.detached == run.detached) {
      last.length += run.length;
      last.allocations += run.allocations;
      return;
    }
  }
  runs.push_back(run);
}

// Returns the runs tiling [0, heap_end).
absl::StatusOr<std::vector<Run>> Layout(const RegionSnapshot& snapshot) {
  const uint64_t begin = snapshot.description.heap_begin();
  const uint64_t end = snapshot.description.heap_end();
  if (begin > end) {
    return absl::InternalError(
        absl::StrCat("heap [", begin, ", ", end, ") of region ",
                     snapshot.description.name(), " is inverted"));
  }
  std::vector<Run> runs;
  Push(runs, {0, begin, v1::RUN_KIND_METADATA});
  if (snapshot.description.strategy() == v1::STRATEGY_ARENA) {
    const uint64_t used = std::min(snapshot.stats.used_bytes(), end - begin);
    Push(runs, {begin, used, v1::RUN_KIND_USED, 0, false,
                snapshot.stats.live_allocations()});
    Push(runs, {begin + used, end - begin - used, v1::RUN_KIND_FREE});
    return runs;
  }
  uint64_t cursor = begin;
  for (const auto& [offset, info] : snapshot.allocations) {
    // Unreachable while the region's invariants hold (records are validated
    // at Open and change only under its lock); a map is not worth aborting
    // the daemon for, so it is an error.
    if (offset < cursor || info.size_bytes > end - offset) {
      return absl::InternalError(absl::StrCat(
          "owner record [", offset, ", +", info.size_bytes, ") of region ",
          snapshot.description.name(), " overlaps or leaves the heap"));
    }
    Push(runs, {cursor, offset - cursor, v1::RUN_KIND_FREE});
    Push(runs, {offset, info.size_bytes, v1::RUN_KIND_USED, info.session_id,
                info.detached, 1});
    cursor = offset + info.size_bytes;
  }
  Push(runs, {cursor, end - cursor, v1::RUN_KIND_FREE});
  return runs;
}

// Returns the HistogramBucket a length falls in: sizes in
// [2^(b-1)+1, 2^b] are bucket b (1 is bucket 0).
uint32_t Log2Upper(uint64_t length) {
  return length <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(length - 1));
}

// Fills the buckets of `map` from `runs` in one sweep (both are in offset
// order, so each run is split over the slices it crosses).
void FillBuckets(const std::vector<Run>& runs, uint64_t span, uint32_t count,
                 ClientNameFn client_name, v1::RegionMap& map) {
  absl::flat_hash_map<uint64_t, SessionLabel> names;
  auto name_of = [&](uint64_t id) -> const SessionLabel& {
    auto it = names.find(id);
    if (it == names.end()) it = names.emplace(id, client_name(id)).first;
    return it->second;
  };
  auto bound = [&](uint64_t i) {
    return static_cast<uint64_t>(static_cast<unsigned __int128>(span) * i /
                                 count);
  };
  size_t r = 0;
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t lo = bound(i);
    const uint64_t hi = bound(i + 1);
    v1::RegionBucket* bucket = map.add_buckets();
    bucket->set_offset(lo);
    bucket->set_length_bytes(hi - lo);
    absl::flat_hash_map<uint64_t, uint64_t> owners;  // session -> bytes
    uint64_t at = lo;
    while (at < hi && r < runs.size()) {
      const Run& run = runs[r];
      const uint64_t run_end = run.offset + run.length;
      const uint64_t take = std::min(hi, run_end) - at;
      if (run.kind == v1::RUN_KIND_USED) {
        bucket->set_used_bytes(bucket->used_bytes() + take);
        owners[run.session_id] += take;
      } else if (run.kind == v1::RUN_KIND_METADATA) {
        bucket->set_metadata_bytes(bucket->metadata_bytes() + take);
      }
      at += take;
      if (at == run_end) ++r;
    }
    bucket->set_used_fraction(hi == lo
                                  ? 0.0
                                  : static_cast<double>(bucket->used_bytes()) /
                                        static_cast<double>(hi - lo));
    uint64_t best = 0;
    uint64_t best_bytes = 0;
    for (const auto& [id, bytes] : owners) {
      if (bytes > best_bytes || (bytes == best_bytes && id < best)) {
        best = id;
        best_bytes = bytes;
      }
    }
    bucket->set_dominant_session_id(best);
    if (best != 0) {
      bucket->set_dominant_client_name(name_of(best).client_name);
    }
  }
}

constexpr char kTokenVersion[] = "1";

}  // namespace

absl::StatusOr<v1::RegionMap> BuildRegionMap(const RegionSnapshot& snapshot,
                                             uint32_t buckets,
                                             ClientNameFn client_name) {
  if (buckets > kMaxMapBuckets) {
    return absl::InvalidArgumentError(
        absl::StrCat("buckets is ", buckets, "; at most ", kMaxMapBuckets));
  }
  SHMALLOC_ASSIGN_OR_RETURN(std::vector<Run> runs, Layout(snapshot));
  if (buckets == 0 && runs.size() > kMaxMapRuns) {
    return absl::InvalidArgumentError(absl::StrCat(
        "region ", snapshot.description.name(), " has ", runs.size(),
        " runs (more than ", kMaxMapRuns, "): ask for buckets"));
  }
  const v1::Region& d = snapshot.description;
  v1::RegionMap map;
  map.set_region(d.name());
  map.set_strategy(d.strategy());
  map.set_size_bytes(d.heap_end());
  map.set_heap_begin(d.heap_begin());
  map.set_heap_end(d.heap_end());
  map.set_generation(d.generation());

  std::map<uint32_t, uint64_t> free_histogram;
  absl::flat_hash_map<uint64_t, v1::SessionUsage> owners;
  for (const Run& run : runs) {
    if (run.kind == v1::RUN_KIND_FREE) {
      map.set_free_bytes(map.free_bytes() + run.length);
      map.set_free_runs(map.free_runs() + 1);
      map.set_largest_free_run_bytes(
          std::max(map.largest_free_run_bytes(), run.length));
      ++free_histogram[Log2Upper(run.length)];
    } else if (run.kind == v1::RUN_KIND_USED) {
      map.set_used_bytes(map.used_bytes() + run.length);
      v1::SessionUsage& usage = owners[run.session_id];
      usage.set_session_id(run.session_id);
      usage.set_used_bytes(usage.used_bytes() + run.length);
      usage.set_live_allocations(usage.live_allocations() + run.allocations);
    }
  }
  for (const auto& [b, count] : free_histogram) {
    v1::HistogramBucket* bucket = map.add_free_run_histogram();
    bucket->set_log2_upper(b);
    bucket->set_count(count);
  }
  std::vector<v1::SessionUsage> legend;
  legend.reserve(owners.size());
  for (auto& [id, usage] : owners) {
    if (id != 0) {
      SessionLabel label = client_name(id);
      usage.set_client_name(std::move(label.client_name));
      usage.set_session_ended(label.ended);
    }
    legend.push_back(std::move(usage));
  }
  std::sort(legend.begin(), legend.end(),
            [](const v1::SessionUsage& a, const v1::SessionUsage& b) {
              if (a.used_bytes() != b.used_bytes()) {
                return a.used_bytes() > b.used_bytes();
              }
              return a.session_id() < b.session_id();
            });
  absl::flat_hash_map<uint64_t, SessionLabel> names;
  for (v1::SessionUsage& usage : legend) {
    names[usage.session_id()] = {usage.client_name(), usage.session_ended()};
    *map.add_sessions() = std::move(usage);
  }

  if (buckets == 0) {
    map.mutable_runs()->Reserve(static_cast<int>(runs.size()));
    for (const Run& run : runs) {
      v1::RegionRun* out = map.add_runs();
      out->set_offset(run.offset);
      out->set_length_bytes(run.length);
      out->set_kind(run.kind);
      if (run.kind != v1::RUN_KIND_USED) continue;
      out->set_session_id(run.session_id);
      const SessionLabel& label = names[run.session_id];
      out->set_client_name(label.client_name);
      out->set_session_ended(label.ended);
      out->set_detached(run.detached);
      out->set_allocations(run.allocations);
    }
    return map;
  }
  const uint64_t span = d.heap_end();
  const uint32_t count =
      static_cast<uint32_t>(std::min<uint64_t>(buckets, span));
  if (count > 0) FillBuckets(runs, span, count, client_name, map);
  return map;
}

std::string EncodePageToken(const PageToken& token) {
  // Region names are [a-z0-9][a-z0-9_.-]*: ':' cannot occur in them.
  return absl::WebSafeBase64Escape(absl::StrCat(
      kTokenVersion, ":", token.filter_region, ":", token.older_than_ms, ":",
      token.region, ":", token.generation, ":", token.incarnation, ":",
      token.offset));
}

absl::StatusOr<PageToken> DecodePageToken(std::string_view text) {
  const absl::Status bad =
      absl::InvalidArgumentError("page_token is malformed");
  std::string raw;
  // Debian's Abseil has its own string_view, not std::string_view.
  if (!absl::WebSafeBase64Unescape(absl::string_view(text.data(), text.size()),
                                   &raw)) {
    return bad;
  }
  std::vector<std::string> parts = absl::StrSplit(raw, ':');
  if (parts.size() != 7 || parts[0] != kTokenVersion) return bad;
  PageToken token;
  token.filter_region = parts[1];
  token.region = parts[3];
  if (!absl::SimpleAtoi(parts[2], &token.older_than_ms) ||
      !absl::SimpleAtoi(parts[4], &token.generation) ||
      !absl::SimpleAtoi(parts[5], &token.incarnation) ||
      !absl::SimpleAtoi(parts[6], &token.offset) || token.region.empty()) {
    return bad;
  }
  return token;
}

absl::StatusOr<v1::ListAllocationsResponse> ListAllocationsPage(
    const v1::ListAllocationsRequest& request, const RegionSource& source,
    ClientNameFn client_name, uint64_t now_ms) {
  if (request.page_size() > kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size is ", request.page_size(), "; at most ", kMaxPageSize));
  }
  const uint32_t page_size =
      request.page_size() == 0 ? kDefaultPageSize : request.page_size();
  const bool every_region = request.region().empty();

  // Where this page starts: the first region, or the token's.
  size_t first = 0;
  std::optional<PageToken> token;
  if (!request.page_token().empty()) {
    SHMALLOC_ASSIGN_OR_RETURN(token, DecodePageToken(request.page_token()));
    if (token->filter_region != request.region() ||
        token->older_than_ms != request.older_than_ms() ||
        (!every_region && token->region != request.region())) {
      return absl::InvalidArgumentError(
          "page_token belongs to another request (region or older_than_ms "
          "differ)");
    }
    first = static_cast<size_t>(std::lower_bound(source.names.begin(),
                                                 source.names.end(),
                                                 token->region) -
                                source.names.begin());
  }

  v1::ListAllocationsResponse response;
  absl::flat_hash_map<uint64_t, SessionLabel> names;
  auto name_of = [&](uint64_t id) -> const SessionLabel& {
    auto it = names.find(id);
    if (it == names.end()) it = names.emplace(id, client_name(id)).first;
    return it->second;
  };
  uint64_t total = 0;
  bool page_full = false;
  size_t i = first;
  for (; i < source.names.size(); ++i) {
    const std::string& name = source.names[i];
    absl::StatusOr<RegionSnapshot> loaded = source.load(name);
    if (!loaded.ok()) {
      if (every_region && (absl::IsNotFound(loaded.status()) ||
                           absl::IsDataLoss(loaded.status()))) {
        continue;
      }
      return loaded.status();
    }
    const RegionSnapshot& snap = *loaded;
    uint64_t from = 0;
    if (token.has_value() && name == token->region) {
      if (snap.description.generation() != token->generation ||
          snap.description.incarnation() != token->incarnation) {
        return absl::InvalidArgumentError(absl::StrCat(
            "page token is stale: region ", name,
            " was reset or re-created since (generation ", token->generation,
            " -> ", snap.description.generation(),
            "); list again from the "
            "first page"));
      }
      from = token->offset;
    }
    for (const auto& [offset, info] : snap.allocations) {
      const uint64_t age =
          now_ms > info.allocated_at_ms ? now_ms - info.allocated_at_ms : 0;
      if (age < request.older_than_ms()) continue;
      ++total;  // the estimate counts this region's earlier pages too
      if (offset < from || page_full) continue;
      if (static_cast<uint32_t>(response.allocations_size()) == page_size) {
        page_full = true;
        PageToken next;
        next.filter_region = request.region();
        next.older_than_ms = request.older_than_ms();
        next.region = name;
        next.generation = snap.description.generation();
        next.incarnation = snap.description.incarnation();
        next.offset = offset;
        response.set_next_page_token(EncodePageToken(next));
        continue;
      }
      v1::Allocation* out = response.add_allocations();
      out->set_region(name);
      out->set_offset(offset);
      out->set_size_bytes(info.size_bytes);
      out->set_requested_bytes(info.requested_bytes);
      out->set_session_id(info.session_id);
      const SessionLabel& label = name_of(info.session_id);
      out->set_client_name(label.client_name);
      out->set_session_ended(label.ended);
      out->set_age_ms(age);
      out->set_detached(info.detached);
      out->set_generation(snap.description.generation());
    }
    if (page_full) {
      ++i;
      break;
    }
  }
  // Regions before the page and after it are estimated, not copied.
  for (size_t k = 0; k < first; ++k)
    total += source.live_count(source.names[k]);
  for (; i < source.names.size(); ++i) {
    total += source.live_count(source.names[i]);
  }
  response.set_total_size(total);
  return response;
}

}  // namespace shmalloc::server
