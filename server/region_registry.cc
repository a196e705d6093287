#include "server/region_registry.h"

#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/region_name.h"
#include "server/shm_file.h"

namespace shmalloc::server {

RegionRegistry::RegionRegistry(std::string shm_dir, ServerLimits limits)
    : shm_dir_(std::move(shm_dir)), limits_(limits) {}

namespace {

// Removes both files of region `name`, ignoring ones already gone: the data
// file in the shm directory or in the huge-page directory (which the daemon
// owns and locks like the shm directory, so a file of that name there is a
// region's), then the meta file.
void RemoveFiles(const std::string& shm_dir, const HugePageDir* huge,
                 const std::string& name) {
  std::vector<std::string> paths = {JoinPath(shm_dir, DataFileName(name))};
  if (huge != nullptr) paths.push_back(JoinPath(huge->dir, DataFileName(name)));
  paths.push_back(JoinPath(shm_dir, MetaFileName(name)));
  for (const std::string& path : paths) {
    absl::Status s = UnlinkFile(path);
    if (!s.ok() && !absl::IsNotFound(s)) {
      SHMALLOC_LOG(Warning) << "removing " << path << ": " << s;
    }
  }
}

std::string DamagedMessage(absl::string_view name, absl::string_view detail) {
  return absl::StrCat("region ", name, " is DAMAGED (", detail,
                      "); DeleteRegion(force) or ResetRegion(force) "
                      "recovers it");
}

}  // namespace

absl::StatusOr<size_t> RegionRegistry::LoadExisting() {
  SHMALLOC_RETURN_IF_ERROR(CheckWritableDirectory(shm_dir_));
  SHMALLOC_ASSIGN_OR_RETURN(const std::vector<std::string> files,
                            ListDirectory(shm_dir_));
  std::set<std::string> names;
  for (const std::string& file : files) {
    if (std::optional<std::string> name = RegionNameFromFile(file)) {
      names.insert(*std::move(name));
    }
  }
  size_t attached = 0;
  for (const std::string& name : names) {
    switch (Region::Classify(shm_dir_, name)) {
      case Region::FileState::kIncomplete:
        SHMALLOC_LOG(Warning) << "region " << name
                              << ": its creation did not finish (a crash); "
                                 "removing its files";
        RemoveFiles(shm_dir_, huge_dir(), name);
        continue;
      case Region::FileState::kDeleting:
        SHMALLOC_LOG(Info) << "region " << name
                           << ": finishing an interrupted delete";
        RemoveFiles(shm_dir_, huge_dir(), name);
        continue;
      case Region::FileState::kNoMeta: {
        const std::string detail =
            absl::StrCat(DataFileName(name), " has no meta file");
        SHMALLOC_LOG(Warning) << DamagedMessage(name, detail);
        absl::MutexLock lock(&mu_);
        damaged_.emplace(name, detail);
        continue;
      }
      case Region::FileState::kUnreadable:
      case Region::FileState::kComplete:
        break;
    }
    absl::StatusOr<std::unique_ptr<Region>> region =
        Region::Open(shm_dir_, name, huge_dir());
    if (absl::IsPermissionDenied(region.status())) {
      // Not our file (another owner, a hard link, a mode anyone may write):
      // possibly planted. Logged and left alone: not adopted, not DAMAGED
      // (a forced delete or reset must not act on someone else's file).
      SHMALLOC_LOG(Warning)
          << "region " << name << " left alone: " << region.status().message();
      continue;
    }
    if (!region.ok()) {
      const std::string detail(region.status().message());
      SHMALLOC_LOG(Warning) << DamagedMessage(name, detail);
      absl::MutexLock lock(&mu_);
      damaged_.emplace(name, detail);
      continue;
    }
    const v1::RegionStats stats = (*region)->Stats();
    SHMALLOC_LOG(Info) << "re-attached region " << name << " ("
                       << StrategyName((*region)->strategy()) << ", "
                       << stats.capacity_bytes() << " bytes, "
                       << stats.used_bytes() << " used, "
                       << stats.live_allocations() << " live allocations)";
    absl::MutexLock lock(&mu_);
    regions_.emplace(name, *std::move(region));
    ++attached;
  }
  return attached;
}

absl::StatusOr<v1::Region> RegionRegistry::Describe(
    std::string_view name) const {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  std::shared_ptr<Region> region;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto it = damaged_.find(name); it != damaged_.end()) {
      v1::Region damaged;
      damaged.set_name(it->first);
      damaged.set_state(v1::REGION_STATE_DAMAGED);
      damaged.set_state_detail(it->second);
      damaged.set_data_file(DataFileName(name));
      return damaged;
    }
    auto it = regions_.find(name);
    if (it == regions_.end()) {
      return absl::NotFoundError(
          absl::StrCat("no region named ", std::string(name)));
    }
    region = it->second;
  }
  return region->Describe();
}

std::vector<v1::Region> RegionRegistry::DescribeAll() const {
  std::set<std::string> names;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const auto& [name, region] : regions_) names.insert(name);
    for (const auto& [name, detail] : damaged_) names.insert(name);
  }
  std::vector<v1::Region> all;
  for (const std::string& name : names) {
    absl::StatusOr<v1::Region> one = Describe(name);
    if (one.ok()) all.push_back(*std::move(one));  // else deleted meanwhile
  }
  return all;
}

absl::StatusOr<std::shared_ptr<Region>> RegionRegistry::ResetDamaged(
    std::string_view name) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  const std::string key(name);
  {
    absl::MutexLock lock(&mu_);
    if (!damaged_.contains(key) || creating_.contains(key)) {
      return absl::NotFoundError(
          absl::StrCat("region ", key, " is not DAMAGED"));
    }
    creating_.insert(key);
  }
  auto done = [&](absl::Status status) {
    absl::MutexLock lock(&mu_);
    creating_.erase(key);
    return status;
  };
  absl::StatusOr<v1::CreateRegionRequest> request =
      Region::RecordedRequest(shm_dir_, key);
  if (!request.ok()) {
    return done(absl::DataLossError(absl::StrCat(
        "region ", key, " is DAMAGED and its geometry cannot be read (",
        request.status().message(), "); delete it with force")));
  }
  // Checked before removing anything: the files stay for a restart with
  // the right --huge_dir.
  const v1::HugePages pages = request->huge_pages();
  const HugePageDir* huge = huge_dir();
  if (pages != v1::HUGE_PAGES_UNSPECIFIED && pages != v1::HUGE_PAGES_NONE &&
      (huge == nullptr || (pages == v1::HUGE_PAGES_HUGETLBFS) !=
                              (huge->kind == HugeKind::kHugetlbfs))) {
    return done(absl::FailedPreconditionError(absl::StrCat(
        "region ", key, " was created with ", v1::HugePages_Name(pages),
        ", but ",
        huge == nullptr
            ? NoHugeDirMessage()
            : absl::StrCat("this daemon's huge_dir ", huge->dir, " is ",
                           HugeKindName(huge->kind),
                           ": restart with the --huge_dir it was created "
                           "with, or delete it with force"))));
  }
  RemoveFiles(shm_dir_, huge_dir(), key);
  absl::StatusOr<std::unique_ptr<Region>> created =
      Region::Create(shm_dir_, *request, 0, huge_dir());
  if (!created.ok()) return done(created.status());
  std::shared_ptr<Region> region = *std::move(created);
  absl::MutexLock lock(&mu_);
  creating_.erase(key);
  damaged_.erase(key);
  regions_.emplace(key, region);
  SHMALLOC_LOG(Info) << "re-created DAMAGED region " << key
                     << " with its recorded geometry";
  return region;
}

std::vector<uint64_t> RegionRegistry::SessionsWithAllocations() const {
  std::set<uint64_t> ids;
  for (const std::shared_ptr<Region>& region : List()) {
    for (uint64_t id : region->SessionIds()) ids.insert(id);
  }
  return {ids.begin(), ids.end()};
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
        creating_.contains(request.name()) ||
        damaged_.contains(request.name())) {
      return absl::AlreadyExistsError(
          absl::StrCat("region ", request.name(), " already exists"));
    }
    if (regions_.size() + creating_.size() + damaged_.size() >=
        limits_.max_regions) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the daemon already has ", regions_.size(),
          " regions (limit max_regions = ", limits_.max_regions, ")"));
    }
    creating_.insert(request.name());
  }
  absl::StatusOr<std::unique_ptr<Region>> created =
      Region::Create(shm_dir_, request, limits_.max_region_bytes, huge_dir());
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
  std::shared_ptr<Region> region;
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto d = damaged_.find(name); d != damaged_.end()) {
      return absl::DataLossError(DamagedMessage(std::string(name), d->second));
    }
    auto it = regions_.find(name);
    if (it == regions_.end()) {
      return absl::NotFoundError(
          absl::StrCat("no region named ", std::string(name)));
    }
    if (!it->second->damaged()) return it->second;  // one atomic load
    region = it->second;
  }
  // Its data file was truncated or grown under it (data_guard.h): from now
  // on it is quarantined like a region that failed to open, so Delete(force)
  // and ResetDamaged recover it. RPCs still holding the Region get DATA_LOSS
  // from it.
  const std::string reason = region->damage_reason();
  absl::MutexLock lock(&mu_);
  if (auto it = regions_.find(name);
      it != regions_.end() && it->second == region) {
    regions_.erase(it);
    damaged_.emplace(std::string(name), reason);
    SHMALLOC_LOG(Warning) << "region " << name << " quarantined: " << reason;
  }
  if (auto d = damaged_.find(name); d != damaged_.end()) {
    return absl::DataLossError(DamagedMessage(std::string(name), d->second));
  }
  return absl::NotFoundError(
      absl::StrCat("no region named ", std::string(name)));
}

std::vector<std::shared_ptr<Region>> RegionRegistry::List() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<std::shared_ptr<Region>> regions;
  regions.reserve(regions_.size());
  for (const auto& [name, region] : regions_) {
    if (!region->damaged()) regions.push_back(region);  // see Get
  }
  return regions;
}

absl::Status RegionRegistry::Delete(std::string_view name, bool force) {
  SHMALLOC_RETURN_IF_ERROR(ValidateRegionName(name));
  std::shared_ptr<Region> region;
  {
    absl::MutexLock lock(&mu_);
    if (auto d = damaged_.find(name); d != damaged_.end()) {
      if (!force)
        return absl::DataLossError(
            DamagedMessage(std::string(name), d->second));
      const std::string key = d->first;
      damaged_.erase(d);
      RemoveFiles(shm_dir_, huge_dir(), key);
      SHMALLOC_LOG(Info) << "deleted DAMAGED region " << key;
      return absl::OkStatus();
    }
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
