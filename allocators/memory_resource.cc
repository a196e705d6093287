#include "allocators/memory_resource.h"

#include <new>

#include "common/log.h"

namespace shmalloc {

void* OffsetMemoryResource::do_allocate(std::size_t bytes,
                                        std::size_t alignment) {
  // pmr may ask for 0 bytes; the strategies reject size 0, so reserve the
  // smallest unit instead of failing a legal request.
  auto extent = allocator_->Allocate(bytes == 0 ? 1 : bytes, alignment);
  if (!extent.ok()) throw std::bad_alloc();
  return base_ + extent->offset;
}

void OffsetMemoryResource::do_deallocate(void* p, std::size_t /*bytes*/,
                                         std::size_t /*alignment*/) {
  const auto offset = static_cast<uint64_t>(static_cast<std::byte*>(p) - base_);
  // Arena frees only as a whole; a deallocate is then a no-op by design
  // (what std::pmr::monotonic_buffer_resource does too).
  if (allocator_->strategy() == Strategy::kArena) return;
  absl::Status status = allocator_->Free(offset);
  // A container handing back memory it did not get from us is a program bug
  // that would otherwise corrupt the heap silently.
  SHMALLOC_CHECK(status.ok())
      << "pmr deallocate of offset " << offset << ": " << status;
}

bool OffsetMemoryResource::do_is_equal(
    const std::pmr::memory_resource& other) const noexcept {
  const auto* o = dynamic_cast<const OffsetMemoryResource*>(&other);
  return o != nullptr && o->allocator_ == allocator_ && o->base_ == base_;
}

}  // namespace shmalloc
