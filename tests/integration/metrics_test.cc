// shmallocd --metrics_listen: /metrics scraped over real HTTP from a running
// daemon after a known workload, parsed by a real Prometheus text-format
// parser (Debian's python3-prometheus-client, run as /usr/bin/python3), and
// every value checked against GetStats; bad --metrics_listen values stop
// the daemon at startup with exit status 2, a taken port with status 1.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon_process.h"
#include "tests/integration/subprocess.h"
#include "tests/testing/status_matchers.h"

namespace shmalloc::testing {
namespace {

using ::testing::HasSubstr;

constexpr int kSessions = 12;  // more than the exporter's top 10

// Reads the text format on stdin with prometheus_client's parser and prints
// one line per sample, "name<TAB>k=v,k=v (sorted)<TAB>value", and one per
// family, "TYPE<TAB>name<TAB>type".
constexpr char kParser[] = R"py(
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print("TYPE\t%s\t%s" % (family.name, family.type))
    for s in family.samples:
        labels = ",".join("%s=%s" % kv for kv in sorted(s.labels.items()))
        print("%s\t%s\t%r" % (s.name, labels, float(s.value)))
)py";

// A TCP port on 127.0.0.1 nobody listens on now (bound, read, closed).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return ntohs(addr.sin_port);
}

// GET `path` from 127.0.0.1:`port` (HTTP/1.0: the server closes after the
// reply). Returns the body; INTERNAL unless the status is 200.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("connect: ", strerror(errno)));
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
  if (write(fd, request.data(), request.size()) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::InternalError("write");
  }
  std::string reply;
  char buffer[65536];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) {
    reply.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t end = reply.find("\r\n\r\n");
  if (end == std::string::npos || reply.find(" 200 ") > reply.find("\r\n")) {
    return absl::InternalError(
        absl::StrCat("bad reply: ", reply.substr(0, 200)));
  }
  return reply.substr(end + 4);
}

// Samples by name, then by their sorted "k=v,k=v" labels.
struct Scrape {
  std::map<std::string, std::map<std::string, double>> samples;
  std::map<std::string, std::string> types;  // family name -> type

  // The value of `name{labels}`; fails the test (and returns NaN) if absent.
  double Get(const std::string& name, const std::string& labels = "") const {
    auto family = samples.find(name);
    if (family != samples.end()) {
      auto sample = family->second.find(labels);
      if (sample != family->second.end()) return sample->second;
    }
    ADD_FAILURE() << "no sample " << name << "{" << labels << "}";
    return std::nan("");
  }
  bool Has(const std::string& name, const std::string& labels) const {
    auto family = samples.find(name);
    return family != samples.end() && family->second.count(labels) > 0;
  }
};

absl::StatusOr<Scrape> ScrapeAndParse(int port) {
  absl::StatusOr<std::string> text = HttpGet(port, "/metrics");
  if (!text.ok()) return text.status();
  ProcessOptions options;
  options.stdin_data = *text;
  absl::StatusOr<ProcessResult> parsed =
      RunProcess({"/usr/bin/python3", "-c", kParser}, options);
  if (!parsed.ok()) return parsed.status();
  if (parsed->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("parser failed: ", parsed->err, "\non:\n", *text));
  }
  Scrape scrape;
  for (absl::string_view line :
       absl::StrSplit(parsed->out, '\n', absl::SkipEmpty())) {
    std::vector<std::string> fields = absl::StrSplit(line, '\t');
    if (fields.size() != 3) {
      return absl::InternalError(absl::StrCat("bad line: ", line));
    }
    if (fields[0] == "TYPE") {
      scrape.types[fields[1]] = fields[2];
      continue;
    }
    double value = 0;
    if (fields[2] == "inf") {
      value = INFINITY;
    } else if (!absl::SimpleAtod(fields[2], &value)) {
      return absl::InternalError(absl::StrCat("bad value: ", line));
    }
    scrape.samples[fields[0]][fields[1]] = value;
  }
  return scrape;
}

std::string RegionLabels(const v1::RegionStats& r, const std::string& s) {
  return absl::StrCat("region=", r.name(), ",strategy=", s);
}

class MetricsTest : public DaemonTest {
 protected:
  DaemonOptions Options() const override {
    return {"", {absl::StrCat("--metrics_listen=127.0.0.1:", port_)}};
  }
  const int port_ = FreePort();
};

// Allocates `count` extents of `size` in `region` for `session`, with its
// token.
absl::StatusOr<v1::AllocateResponse> AllocateIn(v1::Allocator::Stub& stub,
                                                const Session& session,
                                                const std::string& region,
                                                uint64_t size, uint32_t count,
                                                bool detached = false) {
  v1::AllocateRequest request;
  request.set_session_id(session.id());
  request.set_session_token(session.first_event().session_token());
  request.set_region(region);
  request.set_size_bytes(size);
  request.set_count(count);
  request.set_detached(detached);
  return Allocate(stub, request);
}

TEST_F(MetricsTest, ScrapeEqualsGetStatsAfterAKnownWorkload) {
  ASSERT_THAT(CreateRegion(stub(), "pool", v1::STRATEGY_POOL), IsOk());
  ASSERT_THAT(CreateRegion(stub(), "buddy", v1::STRATEGY_BUDDY), IsOk());
  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < kSessions; ++i) {
    absl::StatusOr<std::unique_ptr<Session>> session =
        Session::Open(stub(), absl::StrCat("client", i));
    ASSERT_THAT(session, IsOk());
    sessions.push_back(*std::move(session));
    // Session i holds i+1 pool blocks: used bytes are all different, so the
    // top 10 are sessions 2..11 and "other" is sessions 0 and 1.
    ASSERT_THAT(AllocateIn(stub(), *sessions.back(), "pool", 64, i + 1),
                IsOk());
  }
  absl::StatusOr<v1::AllocateResponse> buddy =
      AllocateIn(stub(), *sessions[0], "buddy", 1000, 4);
  ASSERT_THAT(buddy, IsOk());
  ASSERT_THAT(AllocateIn(stub(), *sessions[1], "buddy", 300, 1, true), IsOk());
  {  // Free one buddy block.
    v1::FreeRequest request;
    request.set_session_id(sessions[0]->id());
    request.set_session_token(sessions[0]->first_event().session_token());
    request.set_region("buddy");
    request.add_offsets(buddy->extents(0).offset());
    v1::FreeResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcDeadline));
    ASSERT_TRUE(stub().Free(&context, request, &response).ok());
  }
  // Refusals: an unknown region (NOT_FOUND), more than the heap
  // (failed_allocations).
  EXPECT_FALSE(AllocateIn(stub(), *sessions[2], "nowhere", 64, 1).ok());
  EXPECT_FALSE(AllocateIn(stub(), *sessions[2], "buddy", 1 << 19, 3).ok());
  EXPECT_FALSE(GetRegion(stub(), "nowhere").ok());

  absl::StatusOr<v1::Stats> stats = GetStats(stub());
  ASSERT_THAT(stats, IsOk());
  absl::StatusOr<Scrape> scrape = ScrapeAndParse(port_);
  ASSERT_THAT(scrape, IsOk());
  const Scrape& m = *scrape;

  // Per region.
  ASSERT_EQ(stats->regions_size(), 2);
  for (const v1::RegionStats& r : stats->regions()) {
    const std::string strategy =
        r.strategy() == v1::STRATEGY_POOL ? "pool" : "buddy";
    const std::string l = RegionLabels(r, strategy);
    SCOPED_TRACE(l);
    EXPECT_EQ(m.Get("shmalloc_region_capacity_bytes", l), r.capacity_bytes());
    EXPECT_EQ(m.Get("shmalloc_region_used_bytes", l), r.used_bytes());
    EXPECT_EQ(m.Get("shmalloc_region_free_bytes", l), r.free_bytes());
    EXPECT_EQ(m.Get("shmalloc_region_peak_used_bytes", l), r.peak_used_bytes());
    EXPECT_EQ(m.Get("shmalloc_region_largest_free_bytes", l),
              r.largest_free_bytes());
    EXPECT_EQ(m.Get("shmalloc_region_requested_bytes", l), r.requested_bytes());
    EXPECT_EQ(m.Get("shmalloc_region_live_allocations", l),
              r.live_allocations());
    EXPECT_EQ(m.Get("shmalloc_region_failed_allocations_total", l),
              r.failed_allocations());
    EXPECT_NEAR(m.Get("shmalloc_region_fragmentation_ratio", l),
                r.fragmentation(), 1e-12);
    EXPECT_NEAR(m.Get("shmalloc_region_internal_fragmentation_ratio", l),
                r.internal_fragmentation(), 1e-12);
    EXPECT_EQ(m.Get("shmalloc_region_detached_allocations", l),
              r.detached_allocations());
    EXPECT_EQ(m.Get("shmalloc_region_detached_bytes", l), r.detached_bytes());
    EXPECT_GT(r.live_allocations(), 0u);
  }
  const v1::RegionStats& pool = stats->regions(0).name() == "pool"
                                    ? stats->regions(0)
                                    : stats->regions(1);
  const v1::RegionStats& buddy_stats = stats->regions(0).name() == "pool"
                                           ? stats->regions(1)
                                           : stats->regions(0);
  EXPECT_EQ(buddy_stats.detached_allocations(), 1u);
  EXPECT_GT(buddy_stats.failed_allocations(), 0u);

  // Per session: the top 10 of the pool by used bytes, the rest as "other".
  ASSERT_EQ(pool.sessions_size(), kSessions);
  uint64_t other_bytes = 0;
  uint64_t other_live = 0;
  for (const v1::SessionUsage& s : pool.sessions()) {
    const std::string l = absl::StrCat(
        "client=", s.client_name(), ",region=pool,session_id=", s.session_id());
    const bool top = s.session_id() != sessions[0]->id() &&
                     s.session_id() != sessions[1]->id();
    EXPECT_EQ(m.Has("shmalloc_session_used_bytes", l), top) << l;
    if (top) {
      EXPECT_EQ(m.Get("shmalloc_session_used_bytes", l), s.used_bytes());
      EXPECT_EQ(m.Get("shmalloc_session_live_allocations", l),
                s.live_allocations());
    } else {
      other_bytes += s.used_bytes();
      other_live += s.live_allocations();
    }
  }
  EXPECT_EQ(other_bytes, 3u * 64);  // sessions 0 and 1: 1 + 2 blocks
  const std::string other = "client=,region=pool,session_id=other";
  EXPECT_EQ(m.Get("shmalloc_session_used_bytes", other), other_bytes);
  EXPECT_EQ(m.Get("shmalloc_session_live_allocations", other), other_live);
  EXPECT_EQ(m.samples.at("shmalloc_session_used_bytes").size(),
            11u + 1u + buddy_stats.sessions_size());

  // Daemon.
  EXPECT_EQ(m.Get("shmalloc_sessions_open"), stats->sessions());
  EXPECT_EQ(m.Get("shmalloc_sessions_opened_total"), stats->sessions_opened());
  EXPECT_EQ(m.Get("shmalloc_sessions_orphaned"), stats->sessions_orphaned());
  EXPECT_EQ(m.Get("shmalloc_sessions_resumed_total"),
            stats->sessions_resumed());
  EXPECT_EQ(m.Get("shmalloc_sessions_reclaimed_total"),
            stats->sessions_reclaimed());
  EXPECT_EQ(m.Get("shmalloc_regions"), stats->region_count());
  EXPECT_GE(m.Get("shmalloc_uptime_seconds"), stats->uptime_ms() / 1000.0);
  EXPECT_EQ(stats->sessions(), static_cast<uint64_t>(kSessions));

  // RPCs: counts by method and code equal Stats.rpcs (GetStats counts itself
  // after its reply was built: one more); each unary (method, code) has a
  // histogram whose count is that call count.
  std::set<std::string> unary = {"CreateRegion", "Allocate", "Free",
                                 "GetRegion", "GetStats"};
  for (const v1::RpcCount& rpc : stats->rpcs()) {
    SCOPED_TRACE(rpc.method());
    uint64_t errors = 0;
    std::map<std::string, uint64_t> codes;
    for (const auto& [code, n] : rpc.errors()) {
      codes[code] = n;
      errors += n;
    }
    codes["OK"] = rpc.calls() - errors + (rpc.method() == "GetStats" ? 1 : 0);
    for (const auto& [code, n] : codes) {
      const std::string l =
          absl::StrCat("code=", code, ",method=", rpc.method());
      EXPECT_EQ(m.Get("shmalloc_rpcs_total", l), n) << l;
      if (unary.count(rpc.method()) == 0 || n == 0) continue;
      EXPECT_EQ(m.Get("shmalloc_rpc_duration_seconds_count", l), n) << l;
      EXPECT_EQ(
          m.Get("shmalloc_rpc_duration_seconds_bucket",
                absl::StrCat("code=", code, ",le=+Inf,method=", rpc.method())),
          n)
          << l;
      EXPECT_GT(m.Get("shmalloc_rpc_duration_seconds_sum", l), 0) << l;
    }
  }
  EXPECT_EQ(m.Get("shmalloc_rpcs_total", "code=NOT_FOUND,method=Allocate"), 1);
  EXPECT_EQ(m.Get("shmalloc_rpcs_total", "code=OK,method=Allocate"),
            kSessions + 2);

  EXPECT_EQ(m.types.at("shmalloc_region_used_bytes"), "gauge");
  EXPECT_EQ(m.types.at("shmalloc_region_failed_allocations"), "counter");
  EXPECT_EQ(m.types.at("shmalloc_rpcs"), "counter");
  EXPECT_EQ(m.types.at("shmalloc_rpc_duration_seconds"), "histogram");
}

TEST_F(MetricsTest, HistogramBucketsAreCumulativeAndEndAtTheCount) {
  ASSERT_THAT(ListRegions(stub()), IsOk());
  absl::StatusOr<Scrape> scrape = ScrapeAndParse(port_);
  ASSERT_THAT(scrape, IsOk());
  std::map<double, double> buckets;
  for (const auto& [labels, value] :
       scrape->samples.at("shmalloc_rpc_duration_seconds_bucket")) {
    if (labels.find("method=ListRegions") == std::string::npos) continue;
    // "code=OK,le=BOUND,method=ListRegions"
    const size_t start = labels.find("le=") + 3;
    const std::string le =
        labels.substr(start, labels.find(',', start) - start);
    double bound = 0;
    ASSERT_TRUE(le == "+Inf" || absl::SimpleAtod(le, &bound)) << le;
    buckets[le == "+Inf" ? INFINITY : bound] = value;
  }
  ASSERT_GT(buckets.size(), 10u);
  double previous = 0;
  for (const auto& [bound, count] : buckets) {
    EXPECT_GE(count, previous) << "le=" << bound;
    previous = count;
  }
  EXPECT_EQ(previous, 1);
}

TEST_F(MetricsTest, AnotherPathIsNotFound) {
  absl::StatusOr<std::string> body = HttpGet(port_, "/nothing");
  EXPECT_FALSE(body.ok());
}

// Runs shmallocd with `metrics_listen` in a fresh directory and returns its
// result (it is expected to exit at once).
ProcessResult RunDaemonWith(const std::string& metrics_listen) {
  DaemonProcess dirs;  // only for its temp dir; never started
  const std::string config = dirs.dir() + "/empty.textproto";
  std::ofstream(config).close();
  absl::StatusOr<ProcessResult> result =
      RunProcess({SHMALLOCD_PATH, "--socket=" + dirs.dir() + "/d.sock",
                  "--shm_dir=" + dirs.shm_dir(), "--config=" + config,
                  "--metrics_listen=" + metrics_listen},
                 ProcessOptions{{}, "", absl::Seconds(20)});
  EXPECT_THAT(result, IsOk());
  return result.ok() ? *result : ProcessResult{};
}

TEST(MetricsFlagTest, BadAddressesFailStartupWithStatusTwo) {
  for (const char* bad : {"abc", "1.2.3.4:99999", ":0x", "host:", ":"}) {
    SCOPED_TRACE(bad);
    const ProcessResult r = RunDaemonWith(bad);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_THAT(r.err, HasSubstr("--metrics_listen"));
    EXPECT_THAT(r.err, HasSubstr(bad));
  }
}

TEST(MetricsFlagTest, APortInUseFailsStartupWithStatusOne) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string address = absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
  const ProcessResult r = RunDaemonWith(address);
  close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot serve metrics on " + address));
}

}  // namespace
}  // namespace shmalloc::testing
