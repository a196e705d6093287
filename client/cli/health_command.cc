// shmalloc health [--service=NAME]: the standard grpc.health.v1.Health/Check,
// without opening a session. Exit 0 when SERVING; then also one line of
// session figures (open, orphaned by a restart and awaiting resume, resumed,
// reclaimed) when the daemon answers GetStats.
//
// The two messages are encoded by hand (Debian ships no generated health
// code): HealthCheckRequest { string service = 1; } and
// HealthCheckResponse { ServingStatus status = 1; } with UNKNOWN = 0,
// SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/cli/commands.h"
#include "client/connection.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"

namespace shmalloc::cli {
namespace {

constexpr char kCheckMethod[] = "/grpc.health.v1.Health/Check";

void AppendVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

bool ReadVarint(absl::string_view& in, uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto byte = static_cast<uint8_t>(in.front());
    in.remove_prefix(1);
    v |= uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Returns field 1 (status) of a HealthCheckResponse; skips other fields.
absl::StatusOr<uint64_t> ParseServingStatus(absl::string_view in) {
  const absl::Status malformed =
      absl::DataLossError("Health/Check: malformed response");
  uint64_t status = 0;  // proto3 default: UNKNOWN
  while (!in.empty()) {
    uint64_t tag = 0, value = 0;
    if (!ReadVarint(in, tag)) return malformed;
    switch (tag & 7) {
      case 0:  // varint
        if (!ReadVarint(in, value)) return malformed;
        if ((tag >> 3) == 1) status = value;
        break;
      case 1:  // 64-bit
      case 5:  // 32-bit
        value = (tag & 7) == 1 ? 8 : 4;
        if (value > in.size()) return malformed;
        in.remove_prefix(value);
        break;
      case 2:  // length-delimited
        if (!ReadVarint(in, value) || value > in.size()) return malformed;
        in.remove_prefix(value);
        break;
      default:
        return malformed;
    }
  }
  return status;
}

const char* ServingStatusName(uint64_t status) {
  switch (status) {
    case 1:
      return "SERVING";
    case 2:
      return "NOT_SERVING";
    case 3:
      return "SERVICE_UNKNOWN";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

absl::Status RunHealth(const std::vector<std::string>& positional,
                       const Args& args, const GlobalOptions& global) {
  if (!positional.empty()) {
    return UsageError("usage: shmalloc health [--service=NAME]");
  }
  const std::string service = args.Get("service").value_or("");
  const std::string target = client::internal::ResolveTarget(global.socket);
  auto channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());

  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);  // field 1, length-delimited
    AppendVarint(request, service.size());
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + global.timeout));
  context.set_wait_for_ready(true);  // wait for the socket up to the deadline
  grpc::GenericStub stub(channel);
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, kCheckMethod, grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(
        absl::StrCat("Health/Check: no answer from shmallocd at ", target,
                     " within ", absl::FormatDuration(global.timeout),
                     ": is the daemon running? (set --socket or ",
                     client::kSocketEnvVar, ")"));
  }
  if (!status.ok()) {
    return client::internal::FromGrpc(status, "Health/Check", target);
  }
  std::vector<grpc::Slice> slices;
  if (!response_buffer.Dump(&slices).ok()) {
    return absl::DataLossError("Health/Check: unreadable response");
  }
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  absl::StatusOr<uint64_t> serving = ParseServingStatus(bytes);
  if (!serving.ok()) return serving.status();
  const std::string what = service.empty() ? "shmallocd" : service;
  if (*serving != 1) {
    return absl::UnavailableError(absl::StrCat(what, " at ", target, " is ",
                                               ServingStatusName(*serving)));
  }
  std::cout << "SERVING (" << what << " at " << target << ")\n";
  // Sessions across restarts: orphans are sessions whose client has not
  // resumed yet (their allocations are kept for the grace period). Shown
  // when the daemon answers GetStats; health itself opens no session.
  v1::Stats stats;
  grpc::ClientContext stats_context;
  stats_context.set_deadline(absl::ToChronoTime(absl::Now() + global.timeout));
  grpc::Status stats_status = v1::Allocator::NewStub(channel)->GetStats(
      &stats_context, v1::GetStatsRequest(), &stats);
  if (stats_status.ok()) {
    std::cout << "sessions: " << stats.sessions() << " open, "
              << stats.sessions_orphaned() << " orphaned (awaiting resume), "
              << stats.sessions_resumed() << " resumed, "
              << stats.sessions_reclaimed() << " reclaimed since start\n";
  }
  return absl::OkStatus();
}

}  // namespace shmalloc::cli
