#include "shmalloc/allocation.h"

#include <utility>

#include "shmalloc/region.h"

namespace shmalloc::client {

Allocation::Allocation(std::shared_ptr<Region> region, Extent extent,
                       uint64_t generation, bool owning)
    : region_(std::move(region)),
      extent_(extent),
      generation_(generation),
      owning_(owning) {}

Allocation::~Allocation() {
  if (region_ != nullptr && owning_) {
    region_->Free(extent_.offset).IgnoreError();
  }
}

Allocation::Allocation(Allocation&& other) noexcept
    : region_(std::move(other.region_)),
      extent_(std::exchange(other.extent_, {})),
      generation_(std::exchange(other.generation_, 0)),
      owning_(std::exchange(other.owning_, false)) {}

Allocation& Allocation::operator=(Allocation&& other) noexcept {
  if (this != &other) {
    Allocation old(std::move(*this));  // frees the old extent if owning
    region_ = std::move(other.region_);
    extent_ = std::exchange(other.extent_, {});
    generation_ = std::exchange(other.generation_, 0);
    owning_ = std::exchange(other.owning_, false);
  }
  return *this;
}

void* Allocation::data() const {
  return region_ != nullptr ? region_->ToPointer(extent_.offset) : nullptr;
}

std::span<std::byte> Allocation::span() const {
  if (region_ == nullptr) return {};
  return {region_->base() + extent_.offset, extent_.size_bytes};
}

Extent Allocation::Release() {
  Extent e = std::exchange(extent_, {});
  region_.reset();
  generation_ = 0;
  owning_ = false;
  return e;
}

absl::Status Allocation::Free() {
  if (region_ == nullptr) {
    return absl::FailedPreconditionError("Free of an empty Allocation");
  }
  absl::Status s = region_->Free(extent_.offset);
  if (!s.ok()) return s;
  Release();
  return absl::OkStatus();
}

}  // namespace shmalloc::client
