#include "shmalloc/block_cache.h"

#include <utility>

#include "client/block_cache_core.h"
#include "shmalloc/region.h"

namespace shmalloc::client {

absl::StatusOr<std::unique_ptr<BlockCache>> BlockCache::Create(
    std::shared_ptr<Region> region, BlockCacheOptions options) {
  absl::StatusOr<std::shared_ptr<internal::BlockCacheCore>> core =
      internal::BlockCacheCore::Create(std::move(region), options);
  if (!core.ok()) return core.status();
  return std::unique_ptr<BlockCache>(new BlockCache(*std::move(core)));
}

BlockCache::BlockCache(std::shared_ptr<internal::BlockCacheCore> core)
    : id_(core->id()), core_(std::move(core)) {}

BlockCache::~BlockCache() { core_->Flush().IgnoreError(); }

absl::StatusOr<uint64_t> BlockCache::Allocate(uint64_t size) {
  return core_->Allocate(size);
}

void* BlockCache::TryAllocateSlow(uint64_t size) noexcept {
  return core_->TryAllocate(size);
}

absl::Status BlockCache::Free(uint64_t offset, uint64_t size) {
  return core_->Free(offset, size);
}

absl::Status BlockCache::FreeSlow(void* p, uint64_t size) {
  const auto* b = static_cast<const std::byte*>(p);
  const std::byte* base = core_->base();
  return core_->Free(b >= base ? static_cast<uint64_t>(b - base) : 0, size);
}

absl::Status BlockCache::Flush() { return core_->Flush(); }

BlockCacheStats BlockCache::Stats() const { return core_->Stats(); }

uint64_t BlockCache::ClassSize(uint64_t size) const {
  const int c = core_->ClassOf(size);
  return c < 0 ? 0 : core_->class_size(c);
}

const std::shared_ptr<Region>& BlockCache::region() const {
  return core_->region();
}

}  // namespace shmalloc::client
