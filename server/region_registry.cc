#include "server/region_registry.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/region_name.h"
#include "server/shm_file.h"

namespace shmalloc::server {

RegionRegistry::RegionRegistry(std::string shm_dir, ServerLimits limits)
    : shm_dir_(std::move(shm_dir)), limits_(limits) {}

absl::StatusOr<size_t> RegionRegistry::LoadExisting() {
  SHMALLOC_RETURN_IF_ERROR(CheckWritableDirectory(shm_dir_));
  SHMALLOC_ASSIGN_OR_RETURN(const std::vector<std::string> files,
                            ListDirectory(shm_dir_));
  size_t attached = 0;
  for (const std::string& file : files) {
    const std::optional<std::string> name = RegionNameFromDataFile(file);
    if (!name.has_value()) continue;
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Open(shm_dir_, *name);
    if (!region.ok()) {
      SHMALLOC_LOG(Warning)
          << "region " << *name << " in " << shm_dir_
          << " not attached, files left as they are: " << region.status();
      continue;
    }
    const v1::RegionStats stats = (*region)->Stats();
    SHMALLOC_LOG(Info) << "re-attached region " << *name << " ("
                       << StrategyName((*region)->strategy()) << ", "
                       << stats.capacity_bytes() << " bytes, "
                       << stats.used_bytes() << " used, "
                       << stats.live_allocations() << " live allocations)";
    absl::MutexLock lock(&mu_);
    regions_.emplace(*name, *std::move(region));
    ++attached;
  }
  return attached;
}

absl::StatusOr<std::shared_ptr<Region>> RegionRegistry::Create(
    const v1::CreateRegionRequest& request) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(request.name()));
  if (request.size_bytes() > limits_.max_region_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_bytes ", request.size_bytes(),
                     " is over the daemon's limit max_region_bytes = ",
                     limits_.max_region_bytes));
  }
  {
    absl::MutexLock lock(&mu_);
    if (regions_.contains(request.name()) ||
        creating_.contains(request.name())) {
      return absl::AlreadyExistsError(
          absl::StrCat("region ", request.name(), " already exists"));
    }
    if (regions_.size() + creating_.size() >= limits_.max_regions) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the daemon already has ", regions_.size(),
          " regions (limit max_regions = ", limits_.max_regions, ")"));
    }
    creating_.insert(request.name());
  }
  absl::StatusOr<std::unique_ptr<Region>> created =
      Region::Create(shm_dir_, request);
  absl::MutexLock lock(&mu_);
  creating_.erase(request.name());
  if (!created.ok()) return created.status();
  std::shared_ptr<Region> region = *std::move(created);
  regions_.emplace(request.name(), region);
  return region;
}

absl::StatusOr<std::shared_ptr<Region>> RegionRegistry::Get(
    std::string_view name) const {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  absl::ReaderMutexLock lock(&mu_);
  auto it = regions_.find(name);
  if (it == regions_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no region named ", std::string(name)));
  }
  return it->second;
}

std::vector<std::shared_ptr<Region>> RegionRegistry::List() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::shared_ptr<Region>> regions;
  regions.reserve(regions_.size());
  for (const auto& [name, region] : regions_) regions.push_back(region);
  return regions;
}

absl::Status RegionRegistry::Delete(std::string_view name, bool force) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  std::shared_ptr<Region> region;
  {
    absl::MutexLock lock(&mu_);
    auto it = regions_.find(name);
    if (it == regions_.end()) {
      return absl::NotFoundError(
          absl::StrCat("no region named ", std::string(name)));
    }
    SHMALLOC_RETURN_IF_ERROR(it->second->MarkDeleted(force));
    region = std::move(it->second);
    regions_.erase(it);
  }
  if (absl::Status s = region->UnlinkFiles(); !s.ok()) {
    SHMALLOC_LOG(Warning) << "deleting region " << region->name() << ": " << s;
  }
  SHMALLOC_LOG(Info) << "deleted region " << region->name()
                     << (force ? " (forced)" : "");
  return absl::OkStatus();
}

uint64_t RegionRegistry::ReleaseSession(uint64_t session_id) {
  uint64_t released = 0;
  for (const std::shared_ptr<Region>& region : List()) {
    released += region->ReleaseSession(session_id);
  }
  return released;
}

void RegionRegistry::SyncAndClose() {
  std::map<std::string, std::shared_ptr<Region>, std::less<>> regions;
  {
    absl::MutexLock lock(&mu_);
    regions.swap(regions_);
  }
  for (const auto& [name, region] : regions) {
    if (absl::Status s = region->Sync(); !s.ok()) {
      SHMALLOC_LOG(Warning) << "syncing region " << name << ": " << s;
    }
  }
}

size_t RegionRegistry::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return regions_.size();
}

}  // namespace shmalloc::server
