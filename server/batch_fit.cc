#include "server/batch_fit.h"

#include <algorithm>
#include <bit>

#include "allocators/free_list.h"
#include "allocators/slab.h"

namespace shmalloc::server {
namespace {

using u128 = unsigned __int128;

// FreeList rounds sizes to this granule (allocators/free_list.h).
constexpr uint64_t kFreeListGranule = 16;
static_assert(kFreeListGranule == free_list_internal::kGranule);

uint64_t BuddyBlock(const BatchShape& shape) {
  const uint64_t want =
      std::max({shape.size, shape.block_size, shape.alignment, uint64_t{1}});
  return std::bit_ceil(want);
}

// The class Slab::Allocate picks: the smallest at least `size` whose natural
// alignment (largest power of two dividing it, capped at 4096) suffices.
const SlabClassStats* SlabClassFor(const std::vector<SlabClassStats>& classes,
                                   const BatchShape& shape) {
  for (const SlabClassStats& c : classes) {
    const uint64_t natural =
        std::min<uint64_t>(c.class_bytes & (~c.class_bytes + 1), 4096);
    if (c.class_bytes >= shape.size && natural >= shape.alignment) return &c;
  }
  return nullptr;
}

BatchFit ClassifySlab(const Slab& slab, const BatchShape& shape) {
  const std::vector<SlabClassStats> classes = slab.ClassStats();
  const SlabClassStats* cls = SlabClassFor(classes, shape);
  if (cls == nullptr) return BatchFit::kFits;  // Allocate reports the error.
  uint64_t used_slabs = 0;
  for (const SlabClassStats& c : classes) used_slabs += c.slabs;
  const uint64_t total_slabs = (slab.end() - slab.begin()) / kSlabBytes;
  const uint64_t free_slabs = total_slabs - std::min(total_slabs, used_slabs);
  const u128 room = static_cast<u128>(cls->slabs) * cls->objects_per_slab -
                    cls->live_objects +
                    static_cast<u128>(free_slabs) * cls->objects_per_slab;
  return shape.count <= room ? BatchFit::kFits : BatchFit::kCannotFit;
}

}  // namespace

uint64_t ReservedUpperBound(const OffsetAllocator& allocator,
                            const BatchShape& shape) {
  switch (allocator.strategy()) {
    case Strategy::kPool:
      return std::max(shape.block_size, shape.size);
    case Strategy::kBuddy:
      return BuddyBlock(shape);
    case Strategy::kSlab:
      if (const auto* slab = dynamic_cast<const Slab*>(&allocator)) {
        const std::vector<SlabClassStats> classes = slab->ClassStats();
        if (const SlabClassStats* c = SlabClassFor(classes, shape)) {
          return c->class_bytes;
        }
      }
      return shape.size;
    case Strategy::kFreeList:
      // Rounded to the granule, plus a remainder too small to split off.
      return AlignUp(shape.size, kFreeListGranule) + 2 * kFreeListGranule;
    default:
      return shape.size;
  }
}

BatchFit ClassifyBatch(const OffsetAllocator& allocator,
                       const BatchShape& shape) {
  const u128 count = shape.count;
  switch (allocator.strategy()) {
    case Strategy::kPool: {
      if (shape.block_size == 0) return BatchFit::kUncertain;
      const uint64_t blocks =
          (allocator.end() - allocator.begin()) / shape.block_size;
      const uint64_t free_blocks = blocks - std::min(blocks, shape.pool_live);
      return count <= free_blocks ? BatchFit::kFits : BatchFit::kCannotFit;
    }
    case Strategy::kSlab:
      if (const auto* slab = dynamic_cast<const Slab*>(&allocator)) {
        return ClassifySlab(*slab, shape);
      }
      return BatchFit::kUncertain;
    case Strategy::kBuddy: {
      const AllocatorStats stats = allocator.Stats();
      const u128 need = count * BuddyBlock(shape);
      if (need <= stats.largest_free_bytes) return BatchFit::kFits;
      if (need > stats.free_bytes) return BatchFit::kCannotFit;
      return BatchFit::kUncertain;
    }
    case Strategy::kFreeList: {
      const AllocatorStats stats = allocator.Stats();
      if (count * AlignUp(shape.size, kFreeListGranule) > stats.free_bytes) {
        return BatchFit::kCannotFit;
      }
      const u128 generous =
          count * 2 * (ReservedUpperBound(allocator, shape) + shape.alignment);
      if (generous <= stats.largest_free_bytes) return BatchFit::kFits;
      return BatchFit::kUncertain;
    }
    default:
      return BatchFit::kUncertain;
  }
}

}  // namespace shmalloc::server
