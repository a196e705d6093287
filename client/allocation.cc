#include "shmalloc/allocation.h"

#include <utility>

#include "client/connection.h"
#include "common/status_macros.h"
#include "shmalloc/region.h"

namespace shmalloc::client {

Allocation::Allocation(std::shared_ptr<Region> region, Extent extent,
                       uint64_t generation, bool owning)
    : region_(std::move(region)),
      extent_(extent),
      generation_(generation),
      owning_(owning) {}

Allocation::~Allocation() {
  if (region_ != nullptr && owning_) FreeOnce().IgnoreError();
}

absl::Status Allocation::FreeOnce() {
  // One logical free per handle: every attempt (a retry after UNAVAILABLE,
  // then the destructor) carries the same request id, so the daemon applies
  // it at most once even if the first attempt's outcome was lost and the
  // block was handed to someone else meanwhile.
  //
  // Fenced here too: a handle from before a reset is refused without an
  // RPC (the daemon checks the generation as well, but it cannot tell
  // generation 0 from "unchecked"). A handle from another incarnation of the
  // region (deleted and re-created) is refused by the daemon, which compares
  // the request's incarnation with the region's under its lock: no stat()
  // of the data file per Free.
  SHMALLOC_RETURN_IF_ERROR(region_->CheckGeneration(generation_));
  if (free_request_id_.empty()) free_request_id_ = internal::NewRequestId();
  v1::FreeRequest request;
  request.set_region(region_->name());
  request.add_offsets(extent_.offset);
  request.set_generation(generation_);
  request.set_request_id(free_request_id_);
  request.set_incarnation(region_->incarnation());
  v1::FreeResponse response;
  return region_->connection()->Free(std::move(request), &response);
}

Allocation::Allocation(Allocation&& other) noexcept
    : region_(std::move(other.region_)),
      extent_(std::exchange(other.extent_, {})),
      generation_(std::exchange(other.generation_, 0)),
      owning_(std::exchange(other.owning_, false)),
      free_request_id_(std::exchange(other.free_request_id_, {})) {}

Allocation& Allocation::operator=(Allocation&& other) noexcept {
  if (this != &other) {
    Allocation old(std::move(*this));  // frees the old extent if owning
    region_ = std::move(other.region_);
    extent_ = std::exchange(other.extent_, {});
    generation_ = std::exchange(other.generation_, 0);
    owning_ = std::exchange(other.owning_, false);
    free_request_id_ = std::exchange(other.free_request_id_, {});
  }
  return *this;
}

void* Allocation::data() const { return span().data(); }

std::span<std::byte> Allocation::span() const {
  // Every extent was checked when the daemon answered; checked again here
  // (two compares) so no handle, however made, spans past the mapping.
  if (region_ == nullptr ||
      !region_->CheckExtent(extent_.offset, extent_.size_bytes, "").ok()) {
    return {};
  }
  return {region_->base() + extent_.offset, extent_.size_bytes};
}

Extent Allocation::Release() {
  Extent e = std::exchange(extent_, {});
  region_.reset();
  generation_ = 0;
  owning_ = false;
  free_request_id_.clear();
  return e;
}

absl::Status Allocation::Free() {
  if (region_ == nullptr) {
    return absl::FailedPreconditionError("Free of an empty Allocation");
  }
  absl::Status s = FreeOnce();
  if (!s.ok()) return s;
  Release();
  return absl::OkStatus();
}

}  // namespace shmalloc::client
