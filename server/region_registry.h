// The daemon's regions by name: create, look up, list, delete, re-attach at
// start, and release a finished session everywhere.
//
// Regions are shared_ptr so an RPC that looked one up keeps its mapping alive
// while a concurrent DeleteRegion removes it from the map (the Region itself
// then answers NOT_FOUND). Creating a region does its file work outside the
// registry lock; the name is reserved meanwhile so a second create of it is
// ALREADY_EXISTS at once.
//
// A region whose files fail validation at start is quarantined, not hidden:
// it keeps its name (Create is ALREADY_EXISTS), GetRegion/ListRegions show it
// DAMAGED with the reason, every other call is DATA_LOSS, and Delete(force)
// or ResetDamaged recovers it. Files left by a crash inside Create (no meta
// magic) or Delete (meta says DELETING) are removed at start.
//
// Invariants: size() + damaged + reserved names <= limits.max_regions; every
// region in the map has not been MarkDeleted; no name is both in the map and
// damaged.
// Thread-safety: thread-safe.
#ifndef SERVER_REGION_REGISTRY_H_
#define SERVER_REGION_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/config.h"
#include "server/region.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

class RegionRegistry {
 public:
  RegionRegistry(std::string shm_dir, ServerLimits limits);

  // Sets the huge-page directory (--huge_dir) data files of huge-page
  // regions live in. Call before LoadExisting, from one thread, before any
  // other call; without it huge-page regions are FAILED_PRECONDITION.
  void set_huge_dir(HugePageDir huge) { huge_ = std::move(huge); }
  const HugePageDir* huge_dir() const {
    return huge_.has_value() ? &*huge_ : nullptr;
  }

  // Re-attaches every region whose files are in shm_dir. A region that does
  // not validate is logged and quarantined (its files never truncated or
  // deleted); the leftovers of an interrupted Create or Delete are removed.
  // Returns how many were attached. NOT_FOUND / PERMISSION_DENIED /
  // FAILED_PRECONDITION when shm_dir itself is unusable.
  [[nodiscard]] absl::StatusOr<size_t> LoadExisting();

  // Creates a region. INVALID_ARGUMENT (name, geometry, heap or heap plus
  // metadata files over max_region_bytes), ALREADY_EXISTS, RESOURCE_EXHAUSTED
  // (max_regions, or the mount is too small). State unchanged on error.
  // Thread-safe.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Region>> Create(
      const v1::CreateRegionRequest& request);

  // Returns region `name`; INVALID_ARGUMENT for a malformed name, NOT_FOUND
  // for an unknown one, DATA_LOSS for a DAMAGED one (a region whose data
  // file was found truncated or grown at run time is quarantined here).
  // Thread-safe.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Region>> Get(
      std::string_view name) const;

  // Returns every region, ordered by name (DAMAGED ones are not listed:
  // see Describe). Thread-safe.
  std::vector<std::shared_ptr<Region>> List() const;

  // Returns the description of region `name`, DAMAGED ones included
  // (INVALID_ARGUMENT, NOT_FOUND as Get). Thread-safe.
  [[nodiscard]] absl::StatusOr<v1::Region> Describe(
      std::string_view name) const;
  // Returns every region's description, DAMAGED ones included, by name.
  std::vector<v1::Region> DescribeAll() const;

  // Recovers DAMAGED region `name` by creating it again with the geometry
  // its meta file records (its data is lost). DATA_LOSS when that geometry
  // cannot be read (delete it with force instead); NOT_FOUND when `name` is
  // not DAMAGED. Thread-safe.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Region>> ResetDamaged(
      std::string_view name);

  // Returns the ids of every session owning something in some region.
  std::vector<uint64_t> SessionsWithAllocations() const;

  // Deletes region `name` and its files. INVALID_ARGUMENT, NOT_FOUND,
  // FAILED_PRECONDITION (live allocations and !force), DATA_LOSS (DAMAGED
  // and !force). Thread-safe.
  [[nodiscard]] absl::Status Delete(std::string_view name, bool force);

  // Frees everything `session_id` owns in every region; returns how many
  // allocations. Thread-safe.
  uint64_t ReleaseSession(uint64_t session_id);

  // Syncs every region's files and drops the registry's references (the
  // mappings go when the last RPC holding one finishes). Thread-safe.
  void SyncAndClose();

  size_t size() const;
  const std::string& shm_dir() const { return shm_dir_; }
  const ServerLimits& limits() const { return limits_; }

 private:
  const std::string shm_dir_;
  const ServerLimits limits_;
  std::optional<HugePageDir> huge_;  // set before any concurrent use
  mutable absl::Mutex mu_;
  // mutable: Get moves a region found damaged at run time (its data file
  // truncated or grown) from regions_ to damaged_.
  mutable std::map<std::string, std::shared_ptr<Region>, std::less<>> regions_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> creating_ ABSL_GUARDED_BY(mu_);
  // DAMAGED regions: name -> why.
  mutable std::map<std::string, std::string, std::less<>> damaged_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace shmalloc::server

#endif  // SERVER_REGION_REGISTRY_H_
