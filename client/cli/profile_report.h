// The pure half of `shmalloc profile`: what the sampler collected (a series
// of GetStats answers, the region configurations and the live allocations at
// the end), the figures derived from it (per-region series, rates, leak
// suspects, sizing advice for POOL and SLAB) and its two renderings: one
// self-contained HTML file (inline CSS and SVG, no script, no external
// reference) and the raw series as JSON. No I/O, no RPC: the command in
// profile_command.cc fills a ProfileData and calls these.
//
// Invariants of a ProfileData the functions rely on: samples are in time
// order (t_ms non-decreasing); a region may appear in some samples only
// (created or deleted while sampling).
//
// Thread-safety: pure functions over values; thread-compatible.
#ifndef CLIENT_CLI_PROFILE_REPORT_H_
#define CLIENT_CLI_PROFILE_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::cli {

// One GetStats answer and when it came, in ms since the first sample.
struct ProfileSample {
  int64_t t_ms = 0;
  v1::Stats stats;
};

// Everything `shmalloc profile` collected.
struct ProfileData {
  std::string target;        // the daemon's address, for the title
  std::string region;        // "" = every region
  std::string started;       // wall-clock start, RFC 3339, for the title
  int64_t interval_ms = 0;   // asked-for sampling interval
  int64_t duration_ms = 0;   // asked-for duration
  bool interrupted = false;  // ended early by SIGINT/SIGTERM
  std::vector<ProfileSample> samples;
  std::vector<v1::Region> regions;          // configurations, at the end
  std::vector<v1::Allocation> allocations;  // live allocations, at the end
};

// One region over time; index i of every vector is the same sample.
struct RegionSeries {
  std::string name;
  int strategy = 0;             // v1::Strategy
  uint64_t capacity_bytes = 0;  // at the last sample it appeared in
  std::vector<int64_t> t_ms;
  std::vector<uint64_t> used_bytes;
  std::vector<uint64_t> live_allocations;
  std::vector<uint64_t> failed_allocations;  // cumulative, as reported
  std::vector<double> fragmentation;
};

// Returns one series per region, in order of first appearance.
std::vector<RegionSeries> BuildRegionSeries(
    const std::vector<ProfileSample>& samples);

// Rates over the interval ending at sample i (i >= 1), per second.
struct RatePoint {
  int64_t t_ms = 0;
  double allocate_rpcs = 0;  // daemon-wide Allocate RPCs (Stats.rpcs)
  double free_rpcs = 0;      // daemon-wide Free RPCs
  double allocations = 0;    // growth of live allocations, all shown regions
  double frees = 0;          // shrinkage of live allocations
};

// Returns one point per pair of consecutive samples (none for < 2 samples);
// a zero-length interval gives rates of 0.
std::vector<RatePoint> BuildRates(const std::vector<ProfileSample>& samples);

// A session whose live allocation count never fell and grew while sampled.
struct LeakSuspect {
  std::string region;
  uint64_t session_id = 0;
  std::string client_name;
  uint64_t first_live = 0;  // at the first sample it appeared in
  uint64_t last_live = 0;   // at the last
  uint64_t last_used_bytes = 0;
  int samples = 0;  // how many samples it appeared in
};

// Returns the suspects, the largest growth first. A session must appear in
// at least two samples.
std::vector<LeakSuspect> FindLeakSuspects(
    const std::vector<ProfileSample>& samples);

// How many requests of a size were observed.
struct SizeCount {
  uint64_t size = 0;
  uint64_t count = 0;
};

// The waste of serving `sizes` with block sizes `classes` (ascending): each
// size takes the smallest class >= it.
struct Waste {
  uint64_t requested_bytes = 0;  // of the served sizes
  uint64_t waste_bytes = 0;      // sum(class - size) over served sizes
  uint64_t unserved = 0;         // requests larger than every class
  // waste / (requested + waste) in [0, 1]; 0 when nothing was served.
  double waste_fraction() const {
    const uint64_t reserved = requested_bytes + waste_bytes;
    return reserved == 0 ? 0.0 : static_cast<double>(waste_bytes) / reserved;
  }
};

// Returns the waste of `classes` (ascending) for `sizes`.
Waste ComputeWaste(const std::vector<SizeCount>& sizes,
                   const std::vector<uint64_t>& classes);

// Returns at most `max_classes` ascending multiples of 8 that serve every
// size in `sizes` with the least total waste (an exact dynamic programme
// over the distinct sizes rounded up to 8; when there are more than 1024 of
// them, over a coarser grid, which is then optimal only on that grid).
// Empty when `sizes` is empty. REQUIRES: max_classes >= 1.
std::vector<uint64_t> AdviseClasses(const std::vector<SizeCount>& sizes,
                                    int max_classes);

// Sizing advice for one POOL or SLAB region.
struct SizingAdvice {
  std::string region;
  int strategy = 0;               // v1::STRATEGY_POOL or v1::STRATEGY_SLAB
  std::string source;             // "requested_bytes" or "size_histogram"
  uint64_t observed = 0;          // number of requests the advice is from
  std::vector<uint64_t> current;  // block size (POOL) or size classes
  std::vector<uint64_t> advised;
  Waste current_waste;
  Waste advised_waste;
};

// Returns advice for every POOL/SLAB region of `data.regions` shown in the
// last sample with something observed: the sizes are the requested_bytes of
// its live allocations, or (none listed) its size histogram's bucket bounds.
// POOL gets one block size, SLAB up to 8 classes.
std::vector<SizingAdvice> BuildAdvice(const ProfileData& data);

// Returns `values` as a sparkline of ▁▂▃▄▅▆▇█ (UTF-8), one character per
// value, scaled to [min, max] of `values` (all equal: ▁ when 0, else ▄).
std::string Sparkline(const std::vector<uint64_t>& values);

// Returns the report: one HTML document, self-contained (inline CSS and
// SVG; no script, no URL, no src attribute). Every chart is one
// <svg class="chart">; each region's final totals are on
// <tr class="region-total" data-region=.. data-used-bytes=..
// data-live-allocations=..>, each advice on <tr class="advice" ...>.
std::string RenderProfileHtml(const ProfileData& data);

// Returns the raw data as JSON: {"target", "region", "started",
// "interval_ms", "duration_ms", "interrupted", "regions": [{"name",
// "strategy", "capacity_bytes", "t_ms": [], "used_bytes": [],
// "live_allocations": [], "failed_allocations": [], "fragmentation": []}],
// "rates": [RatePoint...], "leak_suspects": [...], "advice": [...]}.
std::string RenderProfileJson(const ProfileData& data);

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_PROFILE_REPORT_H_
