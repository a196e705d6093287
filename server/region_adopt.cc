// Region::Adopt: detached allocations become a session's, in one
// transaction.
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/region.h"

namespace shmalloc::server {

absl::Status Region::Adopt(std::span<const uint64_t> offsets,
                           const AdoptArgs& args,
                           absl::FunctionRef<bool()> session_alive) {
  if (offsets.size() > max_batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat(offsets.size(), " offsets are over region ", name_,
                     "'s max_batch of ", max_batch_));
  }
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  // Under the region lock: a session that is closing cannot gain
  // allocations after its release (they would stay owned by nobody alive).
  if (!session_alive()) {
    return absl::NotFoundError(
        absl::StrCat("session ", args.session_id, " is not open"));
  }
  if (strategy_ == Strategy::kArena) {
    return absl::FailedPreconditionError(absl::StrCat(
        "region ", name_, " is an ARENA: its allocations have no owner"));
  }
  RegionMetaHeader* h = meta();
  if (FindRequest(args.session_id, args.request_hash) != nullptr) {
    return absl::OkStatus();  // A retry: the first call adopted these.
  }
  if (args.generation != 0 && args.generation != h->generation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the offsets are of generation ", args.generation, "; region ", name_,
        " was reset since (generation ", h->generation, ")"));
  }
  // Every offset is checked before anything changes.
  absl::flat_hash_set<uint64_t> seen;
  seen.reserve(offsets.size());
  uint64_t gained = 0;  // bytes new to the session's share
  for (uint64_t offset : offsets) {
    SHMALLOC_RETURN_IF_ERROR(
        ValidateOffsetInRange(offset, kHeapBegin, kHeapBegin + capacity_));
    const std::optional<OwnerInfo> info = owners_->Find(offset);
    if (!info.has_value()) {
      return absl::FailedPreconditionError(
          absl::StrCat("offset ", offset, " is not a live allocation start in ",
                       "region ", name_));
    }
    if (!seen.insert(offset).second) {
      return absl::FailedPreconditionError(
          absl::StrCat("offset ", offset, " is given twice"));
    }
    if (!info->detached) {
      return absl::FailedPreconditionError(absl::StrCat(
          "offset ", offset, " in region ", name_, " is owned by session ",
          info->session_id, ", not detached: only a detached allocation ",
          "can be adopted"));
    }
    if (info->session_id != args.session_id) {
      gained += info->size_bytes;
    }
  }
  const uint64_t quota = h->quota_bytes_per_session;
  if (quota > 0) {
    const SessionShare share = owners_->Share(args.session_id);
    if (share.used_bytes + static_cast<unsigned __int128>(gained) > quota) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "session ", args.session_id, " would exceed its quota of ", quota,
          " bytes in region ", name_, " (it holds ", share.used_bytes,
          ", adopting ", gained, ")"));
    }
  }
  log_->Begin();
  owners_->Adopt(offsets, args.session_id);
  if (args.request_hash != 0) {
    RememberRequest(
        RequestRecord{args.session_id, args.request_hash, 0, 0, 0, 0});
  }
  log_->Commit();
  return absl::OkStatus();
}

}  // namespace shmalloc::server
