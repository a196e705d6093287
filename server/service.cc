#include "server/service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/stable_hash.h"
#include "common/status_macros.h"
#include "server/grpc_status.h"
#include "server/map_service.h"
#include "server/session_reactor.h"
#include "server/watch_reactor.h"

namespace shmalloc::server {
namespace {

constexpr size_t kMaxRequestIdBytes = 64;

// Returns the stored form of an AIP-155 request id (0 = none).
absl::StatusOr<uint64_t> RequestHash(const std::string& request_id) {
  if (request_id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id has ", request_id.size(), " bytes; at most ",
                     kMaxRequestIdBytes));
  }
  return request_id.empty() ? 0 : StableHash64(request_id);
}

}  // namespace

template <typename Body>
grpc::ServerUnaryReactor* AllocatorService::Serve(
    grpc::CallbackServerContext* context, std::string_view method,
    Body&& body) {
  const absl::Time start = absl::Now();
  absl::Status status;
  if (core_.unary_calls.Enter()) {
    status = body();
    core_.unary_calls.Exit();
  } else {
    status = absl::UnavailableError("shmallocd is shutting down");
  }
  core_.metrics.Record(method, status.code(), absl::Now() - start);
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status AllocatorService::CheckSession(
    uint64_t session_id, std::string_view session_token) const {
  return core_.sessions.Check(session_id, session_token);
}

absl::Status AllocatorService::DoCreateRegion(
    const v1::CreateRegionRequest& request, v1::Region& response) {
  SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region,
                            core_.regions.Create(request));
  response = region->Describe();
  SHMALLOC_LOG(Info) << "created region " << response.name() << " ("
                     << v1::Strategy_Name(response.strategy()) << ", "
                     << request.size_bytes() << " bytes) in "
                     << core_.regions.shm_dir();
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AllocatorService::CreateRegion(
    grpc::CallbackServerContext* context,
    const v1::CreateRegionRequest* request, v1::Region* response) {
  return Serve(context, "CreateRegion",
               [&] { return DoCreateRegion(*request, *response); });
}

grpc::ServerUnaryReactor* AllocatorService::GetRegion(
    grpc::CallbackServerContext* context, const v1::GetRegionRequest* request,
    v1::Region* response) {
  return Serve(context, "GetRegion", [&]() -> absl::Status {
    SHMALLOC_ASSIGN_OR_RETURN(*response,
                              core_.regions.Describe(request->name()));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AllocatorService::ListRegions(
    grpc::CallbackServerContext* context,
    const v1::ListRegionsRequest* /*request*/,
    v1::ListRegionsResponse* response) {
  return Serve(context, "ListRegions", [&] {
    for (v1::Region& region : core_.regions.DescribeAll()) {
      *response->add_regions() = std::move(region);
    }
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AllocatorService::DeleteRegion(
    grpc::CallbackServerContext* context,
    const v1::DeleteRegionRequest* request,
    v1::DeleteRegionResponse* /*response*/) {
  return Serve(context, "DeleteRegion", [&] {
    return core_.regions.Delete(request->name(), request->force());
  });
}

grpc::ServerWriteReactor<v1::SessionEvent>* AllocatorService::OpenSession(
    grpc::CallbackServerContext* context,
    const v1::OpenSessionRequest* request) {
  return new SessionReactor(core_, *request, context->peer());
}

absl::Status AllocatorService::DoAllocate(const v1::AllocateRequest& request,
                                          v1::AllocateResponse& response) {
  SHMALLOC_RETURN_IF_ERROR(
      CheckSession(request.session_id(), request.session_token()));
  const uint32_t count = request.count() == 0 ? 1 : request.count();
  const uint32_t max_batch = core_.regions.limits().max_batch;
  if (count > max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("count ", count, " is over max_batch ", max_batch));
  }
  SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region,
                            core_.regions.Get(request.region()));
  AllocateArgs args;
  args.session_id = request.session_id();
  args.size = request.size_bytes();
  args.alignment = request.alignment();
  args.count = count;
  args.detached = request.detached();
  args.incarnation = request.incarnation();
  SHMALLOC_ASSIGN_OR_RETURN(args.request_hash,
                            RequestHash(request.request_id()));
  const uint64_t session_id = request.session_id();
  SHMALLOC_ASSIGN_OR_RETURN(AllocateResult result, region->Allocate(args, [&] {
    return core_.sessions.IsOpen(session_id);
  }));
  const std::vector<Extent>& extents = result.extents;
  const bool same_size =
      !extents.empty() &&
      std::all_of(extents.begin(), extents.end(), [&](const Extent& e) {
        return e.size_bytes == extents.front().size_bytes;
      });
  if (request.packed() && same_size) {
    google::protobuf::RepeatedField<uint64_t>& offsets =
        *response.mutable_offsets();
    offsets.Resize(static_cast<int>(extents.size()), 0);
    for (size_t i = 0; i < extents.size(); ++i) {
      offsets[static_cast<int>(i)] = extents[i].offset;
    }
    response.set_extent_size_bytes(extents.front().size_bytes);
  } else {
    response.mutable_extents()->Reserve(static_cast<int>(extents.size()));
    for (const Extent& extent : extents) {
      v1::Extent* out = response.add_extents();
      out->set_offset(extent.offset);
      out->set_size_bytes(extent.size_bytes);
    }
  }
  response.set_generation(result.generation);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AllocatorService::Allocate(
    grpc::CallbackServerContext* context, const v1::AllocateRequest* request,
    v1::AllocateResponse* response) {
  return Serve(context, "Allocate", [&] {
    absl::Status status = DoAllocate(*request, *response);
    if (!status.ok()) response->Clear();
    return status;
  });
}

absl::Status AllocatorService::DoFree(const v1::FreeRequest& request,
                                      v1::FreeResponse& response) {
  SHMALLOC_RETURN_IF_ERROR(
      CheckSession(request.session_id(), request.session_token()));
  const uint32_t max_batch = core_.regions.limits().max_batch;
  if (static_cast<uint64_t>(request.offsets_size()) > max_batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        request.offsets_size(), " offsets is over max_batch ", max_batch));
  }
  SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region,
                            core_.regions.Get(request.region()));
  SHMALLOC_ASSIGN_OR_RETURN(const uint64_t request_hash,
                            RequestHash(request.request_id()));
  FreeArgs args;
  args.session_id = request.session_id();
  args.generation = request.generation();
  args.request_hash = request_hash;
  args.incarnation = request.incarnation();
  SHMALLOC_ASSIGN_OR_RETURN(
      const uint64_t freed,
      region->Free(std::span<const uint64_t>(request.offsets().data(),
                                             request.offsets().size()),
                   args));
  response.set_freed_bytes(freed);
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AllocatorService::Free(
    grpc::CallbackServerContext* context, const v1::FreeRequest* request,
    v1::FreeResponse* response) {
  return Serve(context, "Free", [&] { return DoFree(*request, *response); });
}

absl::Status AllocatorService::DoAdopt(const v1::AdoptRequest& request) {
  SHMALLOC_RETURN_IF_ERROR(
      CheckSession(request.session_id(), request.session_token()));
  const uint32_t max_batch = core_.regions.limits().max_batch;
  if (static_cast<uint64_t>(request.offsets_size()) > max_batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        request.offsets_size(), " offsets is over max_batch ", max_batch));
  }
  SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region,
                            core_.regions.Get(request.region()));
  AdoptArgs args;
  args.session_id = request.session_id();
  args.generation = request.generation();
  SHMALLOC_ASSIGN_OR_RETURN(args.request_hash,
                            RequestHash(request.request_id()));
  const uint64_t session_id = request.session_id();
  return region->Adopt(std::span<const uint64_t>(request.offsets().data(),
                                                 request.offsets().size()),
                       args, [&] { return core_.sessions.IsOpen(session_id); });
}

grpc::ServerUnaryReactor* AllocatorService::AdoptAllocations(
    grpc::CallbackServerContext* context, const v1::AdoptRequest* request,
    v1::AdoptResponse* /*response*/) {
  return Serve(context, "AdoptAllocations", [&] { return DoAdopt(*request); });
}

absl::Status AllocatorService::DoResetRegion(
    const v1::ResetRegionRequest& request, v1::Region& response) {
  absl::StatusOr<std::shared_ptr<Region>> found =
      core_.regions.Get(request.name());
  if (absl::IsDataLoss(found.status()) && request.force()) {
    // A DAMAGED region: a forced reset creates it again from its geometry.
    SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> fresh,
                              core_.regions.ResetDamaged(request.name()));
    response = fresh->Describe();
    return absl::OkStatus();
  }
  SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region, std::move(found));
  if (absl::Status s = region->Reset(request.force()); !s.ok()) {
    // Found damaged by this very call (its data file truncated or grown):
    // quarantined now, so the forced reset re-creates it as above.
    if (!request.force() || !region->damaged()) return s;
    (void)core_.regions.Get(request.name());
    SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> fresh,
                              core_.regions.ResetDamaged(request.name()));
    response = fresh->Describe();
    return absl::OkStatus();
  }
  response = region->Describe();
  SHMALLOC_LOG(Info) << "reset region " << response.name() << " to generation "
                     << response.generation()
                     << (request.force() ? " (forced)" : "");
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* AllocatorService::ResetRegion(
    grpc::CallbackServerContext* context, const v1::ResetRegionRequest* request,
    v1::Region* response) {
  return Serve(context, "ResetRegion",
               [&] { return DoResetRegion(*request, *response); });
}

grpc::ServerUnaryReactor* AllocatorService::GetStats(
    grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
    v1::Stats* response) {
  return Serve(context, "GetStats", [&]() -> absl::Status {
    SHMALLOC_ASSIGN_OR_RETURN(*response,
                              CollectStats(core_, request->region()));
    return absl::OkStatus();
  });
}

grpc::ServerWriteReactor<v1::Stats>* AllocatorService::WatchStats(
    grpc::CallbackServerContext* /*context*/,
    const v1::WatchStatsRequest* request) {
  return new WatchReactor(core_, *request);
}

namespace {

// Returns what the map and the listing need of `region`; the description
// first (see RegionSnapshot).
RegionSnapshot Snapshot(const Region& region) {
  RegionSnapshot snapshot;
  snapshot.description = region.Describe();
  snapshot.stats = region.Stats();
  snapshot.allocations = region.Allocations();
  return snapshot;
}

}  // namespace

grpc::ServerUnaryReactor* AllocatorService::ListAllocations(
    grpc::CallbackServerContext* context,
    const v1::ListAllocationsRequest* request,
    v1::ListAllocationsResponse* response) {
  return Serve(context, "ListAllocations", [&]() -> absl::Status {
    std::vector<std::string> names;
    if (request->region().empty()) {
      for (const std::shared_ptr<Region>& region : core_.regions.List()) {
        names.push_back(region->name());
      }
    } else {
      SHMALLOC_RETURN_IF_ERROR(core_.regions.Get(request->region()).status());
      names.push_back(request->region());
    }
    auto load = [&](const std::string& name) -> absl::StatusOr<RegionSnapshot> {
      SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region,
                                core_.regions.Get(name));
      return Snapshot(*region);
    };
    auto live_count = [&](const std::string& name) -> uint64_t {
      absl::StatusOr<std::shared_ptr<Region>> region = core_.regions.Get(name);
      if (!region.ok() || (*region)->strategy() == Strategy::kArena) return 0;
      return (*region)->Stats().live_allocations();
    };
    const RegionSource source{std::move(names), load, live_count};
    SHMALLOC_ASSIGN_OR_RETURN(
        *response, ListAllocationsPage(
                       *request, source,
                       [&](uint64_t id) { return core_.sessions.Label(id); },
                       static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()))));
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* AllocatorService::GetRegionMap(
    grpc::CallbackServerContext* context,
    const v1::GetRegionMapRequest* request, v1::RegionMap* response) {
  return Serve(context, "GetRegionMap", [&]() -> absl::Status {
    SHMALLOC_ASSIGN_OR_RETURN(std::shared_ptr<Region> region,
                              core_.regions.Get(request->region()));
    SHMALLOC_ASSIGN_OR_RETURN(
        *response,
        BuildRegionMap(Snapshot(*region), request->buckets(),
                       [&](uint64_t id) { return core_.sessions.Label(id); }));
    return absl::OkStatus();
  });
}

}  // namespace shmalloc::server
