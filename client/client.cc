#include "shmalloc/client.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/connection.h"
#include "client/proto_convert.h"
#include "client/shm_mapping.h"
#include "common/segment_header.h"
#include "shmalloc/region.h"

namespace shmalloc::client {

using internal::Connection;
using internal::FromProto;

std::string_view StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kArena:
      return "arena";
    case Strategy::kPool:
      return "pool";
    case Strategy::kBuddy:
      return "buddy";
    case Strategy::kSlab:
      return "slab";
    case Strategy::kFreeList:
      return "free_list";
    default:
      return "unspecified";
  }
}

std::string_view ConnectionStateName(ConnectionState state) {
  switch (state) {
    case ConnectionState::kConnected:
      return "CONNECTED";
    case ConnectionState::kReconnecting:
      return "RECONNECTING";
    case ConnectionState::kResumed:
      return "RESUMED";
    case ConnectionState::kLost:
      return "LOST";
  }
  return "UNKNOWN";
}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(
    ConnectOptions options) {
  absl::StatusOr<std::shared_ptr<Connection>> c = Connection::Open(options);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Client>(new Client(*std::move(c)));
}

Client::Client(std::shared_ptr<Connection> connection)
    : connection_(std::move(connection)) {}

Client::~Client() = default;

uint64_t Client::session_id() const { return connection_->session_id(); }
const std::string& Client::target() const { return connection_->target(); }
const std::string& Client::shm_dir() const { return connection_->shm_dir(); }
absl::Status Client::SessionStatus() const {
  return connection_->session_status();
}
ConnectionState Client::connection_state() const {
  return connection_->state();
}

absl::StatusOr<RegionInfo> Client::CreateRegion(
    const CreateRegionOptions& options) {
  v1::Region response;
  absl::Status s = connection_->Call(&v1::Allocator::Stub::CreateRegion,
                                     "CreateRegion", internal::ToProto(options),
                                     &response, internal::Resend::kNever);
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::StatusOr<RegionInfo> Client::GetRegion(std::string_view name) {
  v1::GetRegionRequest request;
  request.set_name(std::string(name));
  v1::Region response;
  absl::Status s = connection_->Call(&v1::Allocator::Stub::GetRegion,
                                     "GetRegion", request, &response);
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::StatusOr<std::vector<RegionInfo>> Client::ListRegions() {
  v1::ListRegionsResponse response;
  absl::Status s =
      connection_->Call(&v1::Allocator::Stub::ListRegions, "ListRegions",
                        v1::ListRegionsRequest(), &response);
  if (!s.ok()) return s;
  std::vector<RegionInfo> regions;
  for (const v1::Region& r : response.regions()) {
    regions.push_back(FromProto(r));
  }
  return regions;
}

absl::Status Client::DeleteRegion(std::string_view name, bool force) {
  v1::DeleteRegionRequest request;
  request.set_name(std::string(name));
  request.set_force(force);
  v1::DeleteRegionResponse response;
  return connection_->Call(&v1::Allocator::Stub::DeleteRegion, "DeleteRegion",
                           request, &response, internal::Resend::kNever);
}

absl::StatusOr<RegionInfo> Client::ResetRegion(std::string_view name,
                                               bool force) {
  v1::ResetRegionRequest request;
  request.set_name(std::string(name));
  request.set_force(force);
  v1::Region response;
  absl::Status s =
      connection_->Call(&v1::Allocator::Stub::ResetRegion, "ResetRegion",
                        request, &response, internal::Resend::kNever);
  if (!s.ok()) return s;
  return FromProto(response);
}

absl::StatusOr<std::vector<Extent>> Client::Allocate(
    std::string_view region, uint64_t size, uint32_t count,
    const AllocateOptions& options) {
  v1::AllocateRequest request;
  request.set_region(std::string(region));
  request.set_size_bytes(size);
  request.set_alignment(options.alignment);
  request.set_count(count);
  request.set_detached(options.detached);
  v1::AllocateResponse response;
  absl::Status s = connection_->Allocate(std::move(request), &response);
  if (!s.ok()) return s;
  return internal::ExtentsOf(response);
}

absl::StatusOr<uint64_t> Client::Free(std::string_view region,
                                      std::span<const uint64_t> offsets,
                                      uint64_t generation) {
  v1::FreeRequest request;
  request.set_region(std::string(region));
  request.mutable_offsets()->Add(offsets.begin(), offsets.end());
  request.set_generation(generation);
  v1::FreeResponse response;
  absl::Status s = connection_->Free(std::move(request), &response);
  if (!s.ok()) return s;
  return response.freed_bytes();
}

absl::StatusOr<DaemonStats> Client::GetStats(std::string_view region) {
  v1::GetStatsRequest request;
  request.set_region(std::string(region));
  v1::Stats response;
  absl::Status s = connection_->Call(&v1::Allocator::Stub::GetStats, "GetStats",
                                     request, &response);
  if (!s.ok()) return s;
  return FromProto(response);
}

namespace {

// Checks the segment header at `base` against what the daemon described.
absl::Status ValidateHeader(const std::byte* base, const RegionInfo& info,
                            const std::string& path) {
  const auto* h = reinterpret_cast<const SegmentHeader*>(base);
  if (h->magic != kSegmentMagic) {
    return absl::DataLossError(
        absl::StrCat(path, ": not a shmalloc data file (bad magic)"));
  }
  if (h->layout_version != kSegmentLayoutVersion) {
    return absl::DataLossError(
        absl::StrCat(path, ": segment layout version ", h->layout_version,
                     ", this client understands ", kSegmentLayoutVersion));
  }
  if (h->size_bytes != info.size_bytes || h->heap_begin != info.heap_begin ||
      h->heap_end != info.heap_end || h->heap_begin < kSegmentHeaderBytes ||
      h->heap_begin >= h->heap_end || h->heap_end > h->size_bytes) {
    return absl::DataLossError(absl::StrCat(
        path, ": segment header geometry (size ", h->size_bytes, ", heap [",
        h->heap_begin, ", ", h->heap_end,
        ")) does not match the daemon's description (size ", info.size_bytes,
        ", heap [", info.heap_begin, ", ", info.heap_end, "))"));
  }
  if (strncmp(h->name, info.name.c_str(), kRegionNameBytes) != 0) {
    return absl::DataLossError(absl::StrCat(
        path, ": segment header names another region than '", info.name, "'"));
  }
  if (h->strategy != static_cast<uint32_t>(info.strategy)) {
    return absl::DataLossError(absl::StrCat(
        path, ": segment header has strategy ", h->strategy,
        ", the daemon says ", std::string(StrategyName(info.strategy))));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<Region>> Client::OpenRegion(
    std::string_view name, const RegionOptions& options) {
  absl::StatusOr<RegionInfo> info = GetRegion(name);
  if (!info.ok()) return info.status();
  if (info->data_file.empty() ||
      info->data_file.find('/') != std::string::npos) {
    return absl::DataLossError(absl::StrCat("region '", std::string(name),
                                            "': bad data file name '",
                                            info->data_file, "'"));
  }
  const std::string path = internal::DataFilePath(
      connection_->shm_dir(), info->data_dir, info->data_file);
  absl::StatusOr<std::byte*> base =
      internal::MapFile(path, info->size_bytes, options.populate);
  if (!base.ok()) {
    if (absl::IsNotFound(base.status())) {
      return absl::NotFoundError(absl::StrCat(
          base.status().message(), " (region '", std::string(name),
          info->data_dir.empty()
              ? absl::StrCat("': is the shm directory right? set ",
                             kShmDirEnvVar, " or ConnectOptions::shm_dir)")
              : absl::StrCat("': is the huge-page directory right? set ",
                             internal::kHugeDirEnvVar, ")")));
    }
    return base.status();
  }
  absl::Status valid = ValidateHeader(*base, *info, path);
  if (!valid.ok()) {
    internal::UnmapFile(*base, info->size_bytes);
    return valid;
  }
  return std::make_shared<Region>(connection_, *std::move(info), *base);
}

}  // namespace shmalloc::client
