// Region::Allocate and Region::Free: one transaction each, all or nothing.
#include <algorithm>
#include <atomic>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/region.h"

namespace shmalloc::server {
namespace {

uint64_t NowMs() {
  return static_cast<uint64_t>(absl::ToUnixMillis(absl::Now()));
}

// Per-bucket counts of a batch, so each histogram word is logged and
// stored once per transaction instead of once per extent.
class HistogramDelta {
 public:
  void Add(uint64_t size_bytes) { ++count_[SizeBucket(size_bytes)]; }
  // histogram[b] += sign * count[b] (never below 0), each store logged.
  void ApplyTo(UndoLog& log, uint64_t (&histogram)[kHistogramBuckets],
               int sign) const {
    for (uint32_t b = 0; b < kHistogramBuckets; ++b) {
      if (count_[b] == 0) continue;
      log.Touch(&histogram[b]);
      if (sign > 0) {
        histogram[b] += count_[b];
      } else {
        histogram[b] -= std::min(histogram[b], count_[b]);
      }
    }
  }

 private:
  uint64_t count_[kHistogramBuckets] = {};
};

}  // namespace

const RequestRecord* Region::FindRequest(uint64_t session_id,
                                         uint64_t request_hash) const {
  if (request_hash == 0) return nullptr;
  for (const RequestRecord& r : meta()->requests) {
    if (r.session_id == session_id && r.request_hash == request_hash) return &r;
  }
  return nullptr;
}

void Region::RememberRequest(const RequestRecord& record) {
  RegionMetaHeader* h = meta();
  const uint64_t slot = h->request_next % kRequestRecords;
  log_->TouchRange(&h->requests[slot], sizeof(RequestRecord));
  h->requests[slot] = record;
  Touch(&h->request_next);
  h->request_next = slot + 1;
}

void Region::CountRefusal() {
  log_->Begin();
  Touch(&meta()->refused_allocations);
  ++meta()->refused_allocations;
  log_->Commit();
}

absl::Status Region::CheckIncarnation(uint64_t incarnation) const {
  const uint64_t mine = meta()->incarnation;
  if (incarnation == 0 || incarnation == mine) [[likely]] {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("stale: region '", name_, "' (incarnation ", incarnation,
                   ") was deleted and re-created since the caller mapped it; "
                   "it is incarnation ",
                   mine, " now; open it again"));
}

absl::StatusOr<AllocateResult> Region::Allocate(
    const AllocateArgs& args, absl::FunctionRef<bool()> session_alive) {
  uint64_t alignment = args.alignment;
  SHMALLOC_RETURN_IF_ERROR(ValidateAllocateArgs(args.size, alignment));
  if (args.size > capacity_) {
    return absl::InvalidArgumentError(
        absl::StrCat("size_bytes ", args.size, " exceeds the heap of region ",
                     name_, " (", capacity_, " bytes)"));
  }
  const uint32_t count = std::max<uint32_t>(args.count, 1);
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  SHMALLOC_RETURN_IF_ERROR(CheckIncarnation(args.incarnation));
  if (!session_alive()) {
    return absl::NotFoundError(
        absl::StrCat("session ", args.session_id, " is not open"));
  }
  if (strategy_ == Strategy::kArena) {
    AllocateArgs arena_args = args;
    arena_args.alignment = alignment;
    arena_args.count = count;
    return AllocateArena(arena_args);
  }
  const uint64_t generation = meta()->generation;
  if (args.request_hash != 0) {
    const std::vector<uint64_t> done =
        owners_->FindRequest(args.session_id, args.request_hash);
    if (!done.empty()) {
      AllocateResult replay;
      replay.generation = generation;
      replay.replayed = true;
      for (uint64_t offset : done) {
        replay.extents.push_back(
            Extent{offset, owners_->Find(offset)->size_bytes});
      }
      return replay;
    }
  }
  // More extents than the region can ever hold (or has records left for):
  // a refusal for lack of space, like a full heap.
  if (owners_->free_records() < count) {
    CountRefusal();
    return absl::ResourceExhaustedError(absl::StrCat(
        "region ", name_, " tracks at most ", owners_->capacity(),
        " live allocations (", owners_->live(), " live; asked for ", count,
        "); create it with a larger max_live_allocations"));
  }

  // Sizes are <= capacity < 2^52 and count < 2^32: no overflow in u128.
  using u128 = unsigned __int128;
  const uint64_t quota = meta()->quota_bytes_per_session;
  const SessionShare share =
      quota > 0 ? owners_->Share(args.session_id) : SessionShare{};
  auto quota_error = [&] {
    return absl::ResourceExhaustedError(
        absl::StrCat("session ", args.session_id, " would exceed its quota of ",
                     quota, " bytes in region ", name_, " (it holds ",
                     share.used_bytes, ", detached allocations included)"));
  };
  if (quota > 0 && share.used_bytes + u128{args.size} * count > quota) {
    return quota_error();
  }

  // One transaction: the allocator's stores, the owner records and the
  // histogram commit together; a failure part-way rolls all of it back
  // (peak included), and the refusal is then counted once on its own.
  log_->Begin();
  absl::StatusOr<std::vector<Extent>> extents =
      allocator_->AllocateBatch(args.size, alignment, count);
  if (!extents.ok()) {
    log_->Abort();
    if (absl::IsResourceExhausted(extents.status())) CountRefusal();
    return extents.status();
  }
  u128 reserved = 0;
  for (const Extent& e : *extents) reserved += e.size_bytes;
  if (quota > 0 && share.used_bytes + reserved > quota) {
    log_->Abort();  // Rounding up crossed the quota.
    return quota_error();
  }
  HistogramDelta delta;
  for (const Extent& e : *extents) delta.Add(e.size_bytes);
  delta.ApplyTo(*log_, meta()->histogram, +1);
  owners_->AddBatch(*extents, OwnerInfo{args.session_id, 0, args.size, NowMs(),
                                        args.request_hash, args.detached});
  log_->Commit();
  AllocateResult result;
  result.extents = *std::move(extents);
  result.generation = generation;
  return result;
}

absl::StatusOr<AllocateResult> Region::AllocateArena(const AllocateArgs& args) {
  RegionMetaHeader* h = meta();
  if (const RequestRecord* r =
          FindRequest(args.session_id, args.request_hash)) {
    AllocateResult replay;
    replay.generation = h->generation;
    replay.replayed = true;
    for (uint64_t i = 0; i < r->c; ++i) {
      replay.extents.push_back(Extent{r->a + i * r->d, r->b});
    }
    return replay;
  }
  if (args.count > max_batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat("count ", args.count, " is over region ", name_,
                     "'s max_batch of ", max_batch_));
  }
  // One bump for the whole batch keeps it all or nothing even while clients
  // bump the same cursor: extent i starts at offset + i * stride.
  const uint64_t stride = AlignUp(args.size, args.alignment);
  const unsigned __int128 total =
      static_cast<unsigned __int128>(stride) * (args.count - 1) + args.size;
  if (total > capacity_) {
    CountRefusal();
    return absl::ResourceExhaustedError(
        absl::StrCat(args.count, " extents of ", args.size,
                     " bytes do not fit region ", name_));
  }
  SHMALLOC_ASSIGN_OR_RETURN(
      const Extent block,
      allocator_->Allocate(static_cast<uint64_t>(total), args.alignment));
  // The bump itself is one compare-and-swap in the data file (clients share
  // the cursor, so it cannot be logged); only the request record is a
  // transaction. A crash between the two leaks the bumped bytes until the
  // next reset, never hands them out twice.
  if (args.request_hash != 0) {
    log_->Begin();
    RememberRequest(RequestRecord{args.session_id, args.request_hash,
                                  block.offset, args.size, args.count, stride});
    log_->Commit();
  }
  AllocateResult result;
  result.extents.reserve(args.count);
  for (uint32_t i = 0; i < args.count; ++i) {
    result.extents.push_back(Extent{block.offset + i * stride, args.size});
  }
  result.generation = h->generation;
  return result;
}

absl::StatusOr<uint64_t> Region::Free(std::span<const uint64_t> offsets,
                                      const FreeArgs& args) {
  if (offsets.size() > max_batch_) {
    return absl::InvalidArgumentError(
        absl::StrCat(offsets.size(), " offsets are over region ", name_,
                     "'s max_batch of ", max_batch_));
  }
  absl::MutexLock lock(&mu_);
  SHMALLOC_RETURN_IF_ERROR(CheckAlive());
  SHMALLOC_RETURN_IF_ERROR(CheckIncarnation(args.incarnation));
  if (strategy_ == Strategy::kArena) {
    return absl::FailedPreconditionError(absl::StrCat(
        "region ", name_, " is an ARENA: it frees only as a whole (reset it)"));
  }
  RegionMetaHeader* h = meta();
  if (const RequestRecord* r =
          FindRequest(args.session_id, args.request_hash)) {
    return r->a;  // A retry: the first call freed these.
  }
  if (args.generation != 0 && args.generation != h->generation) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the offsets are of generation ", args.generation, "; region ", name_,
        " was reset since (generation ", h->generation, ")"));
  }
  log_->Begin();
  absl::StatusOr<uint64_t> freed = allocator_->FreeBatch(offsets);
  if (!freed.ok()) {
    log_->Abort();
    return freed.status();
  }
  HistogramDelta delta;
  owners_->RemoveBatch(offsets, [&](uint64_t size) { delta.Add(size); });
  delta.ApplyTo(*log_, h->histogram, -1);
  if (args.request_hash != 0) {
    RememberRequest(
        RequestRecord{args.session_id, args.request_hash, *freed, 0, 0, 0});
  }
  log_->Commit();
  return *freed;
}

uint64_t Region::ReleaseSession(uint64_t session_id) {
  absl::MutexLock lock(&mu_);
  if (deleted_ || !owners_.has_value()) return 0;
  const std::vector<uint64_t> owned = owners_->OwnedBy(session_id);
  for (size_t start = 0; start < owned.size(); start += max_batch_) {
    const size_t n = std::min<size_t>(max_batch_, owned.size() - start);
    const std::span<const uint64_t> chunk(owned.data() + start, n);
    log_->Begin();
    absl::StatusOr<uint64_t> freed = allocator_->FreeBatch(chunk);
    SHMALLOC_CHECK(freed.ok()) << "region " << name_ << ": releasing session "
                               << session_id << ": " << freed.status();
    HistogramDelta delta;
    owners_->RemoveBatch(chunk, [&](uint64_t size) { delta.Add(size); });
    delta.ApplyTo(*log_, meta()->histogram, -1);
    log_->Commit();
  }
  return owned.size();
}

}  // namespace shmalloc::server
