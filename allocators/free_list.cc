#include "allocators/free_list.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace shmalloc {
namespace {

using free_list_internal::BinIndex;
using free_list_internal::BinOf;
using free_list_internal::FreeListControl;
using free_list_internal::kControlOffset;
using free_list_internal::kFlCount;
using free_list_internal::kFree;
using free_list_internal::kGranule;
using free_list_internal::kLive;
using free_list_internal::kMaxExtentsLimit;
using free_list_internal::kMinHashBits;
using free_list_internal::kNil;
using free_list_internal::kScanLimit;
using free_list_internal::kSlCount;
using free_list_internal::kUnused;
using free_list_internal::Node;

}  // namespace

void FreeList::LoadHashGeometry() {
  hash_mask_ = (uint64_t{1} << control_->hash_bits) - 1;
  hash_shift_ = 64 - control_->hash_bits;
}

uint32_t FreeList::PopUnused() {
  const uint32_t n = control_->unused_head;
  control_->unused_head = nodes_[n].bin_next;
  nodes_[n].bin_next = kNil;
  return n;
}

void FreeList::PushUnused(uint32_t n) {
  nodes_[n] = Node{0, 0, kNil, kNil, kNil, control_->unused_head, kUnused, 0};
  control_->unused_head = n;
}

void FreeList::InsertInBin(uint32_t n) {
  Node& node = nodes_[n];
  const BinIndex b = BinOf(node.size / kGranule);
  uint32_t& head = control_->bin_head[b.fl][b.sl];
  node.state = kFree;
  node.slack = 0;
  node.bin_prev = kNil;
  node.bin_next = head;
  if (head != kNil) nodes_[head].bin_prev = n;
  head = n;
  control_->sl_bitmap[b.fl] |= 1u << b.sl;
  control_->fl_bitmap |= uint64_t{1} << b.fl;
  ++control_->free_extents;
}

void FreeList::RemoveFromBin(uint32_t n) {
  Node& node = nodes_[n];
  if (node.bin_next != kNil) nodes_[node.bin_next].bin_prev = node.bin_prev;
  if (node.bin_prev != kNil) {
    nodes_[node.bin_prev].bin_next = node.bin_next;
  } else {
    const BinIndex b = BinOf(node.size / kGranule);
    control_->bin_head[b.fl][b.sl] = node.bin_next;
    if (node.bin_next == kNil) {
      control_->sl_bitmap[b.fl] &= ~(1u << b.sl);
      if (control_->sl_bitmap[b.fl] == 0) {
        control_->fl_bitmap &= ~(uint64_t{1} << b.fl);
      }
    }
  }
  node.bin_prev = kNil;
  node.bin_next = kNil;
  --control_->free_extents;
}

uint32_t FreeList::FindFit(uint64_t size, uint64_t alignment) const {
  const Control& c = *control_;
  if (c.fl_bitmap == 0) return kNil;
  const uint32_t top_fl = 63 - std::countl_zero(c.fl_bitmap);
  const uint32_t top_sl = 31 - std::countl_zero(c.sl_bitmap[top_fl]);
  const BinIndex start = BinOf((size + kGranule - 1) / kGranule);
  auto fits = [&](const Node& n) {
    const uint64_t gap = AlignUp(n.offset, alignment) - n.offset;
    return n.size >= gap && n.size - gap >= size;
  };
  uint32_t fl = start.fl;
  uint32_t sl = start.sl;
  while (fl < kFlCount) {
    // The next non-empty bin at or after (fl, sl).
    const uint32_t sl_map = sl < kSlCount ? c.sl_bitmap[fl] & (~0u << sl) : 0;
    if (sl_map != 0) {
      sl = std::countr_zero(sl_map);
    } else {
      const uint64_t fl_map =
          fl + 1 < kFlCount ? c.fl_bitmap & (~uint64_t{0} << (fl + 1)) : 0;
      if (fl_map == 0) break;
      fl = std::countr_zero(fl_map);
      sl = std::countr_zero(c.sl_bitmap[fl]);
    }
    const uint32_t head = c.bin_head[fl][sl];
    const bool above_start = fl > start.fl || sl > start.sl;
    // Every extent in a bin above the request's fits an unaligned request.
    if (above_start && alignment <= kGranule) return head;
    const bool is_top = fl == top_fl && sl == top_sl;
    uint32_t best = kNil;
    uint32_t budget = is_top ? UINT32_MAX : kScanLimit;
    for (uint32_t n = head; n != kNil && budget > 0;
         n = nodes_[n].bin_next, --budget) {
      const Node& node = nodes_[n];
      if (!fits(node)) continue;
      if (best == kNil || node.size < nodes_[best].size) best = n;
      if (node.size - size < kGranule) break;  // cannot do better
    }
    if (best != kNil) return best;
    ++sl;
    if (sl == kSlCount) {
      sl = 0;
      ++fl;
    }
  }
  // The tail extent may be slightly smaller than its bin suggests.
  const Node& tail = nodes_[c.tail_node];
  if (tail.state == kFree && fits(tail)) return c.tail_node;
  return kNil;
}

absl::StatusOr<Extent> FreeList::Allocate(uint64_t size, uint64_t alignment) {
  if (absl::Status s = ValidateAllocateArgs(size, alignment); !s.ok()) {
    return s;
  }
  if (size > end_ - begin_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "size ", size, " exceeds the heap capacity ", end_ - begin_));
  }
  alignment = std::max(alignment, kGranule);
  const uint32_t n = FindFit(size, alignment);
  Control& c = *control_;
  if (n == kNil) {
    ++c.failed_allocations;
    return absl::ResourceExhaustedError(
        absl::StrCat("no free extent holds ", size, " bytes aligned to ",
                     alignment, " (", end_ - begin_ - c.used_bytes,
                     " bytes free in ", c.free_extents, " extents)"));
  }
  Node& node = nodes_[n];
  const uint64_t start = AlignUp(node.offset, alignment);
  const uint64_t gap = start - node.offset;
  uint64_t take = std::min(AlignUp(size, kGranule), node.size - gap);
  uint64_t rest = node.size - gap - take;
  if (rest < kGranule) {
    take += rest;
    rest = 0;
  }
  const uint64_t nodes_needed = (gap > 0) + (rest > 0);
  const uint64_t unused = max_extents_ - c.live_allocations - c.free_extents;
  if (unused < nodes_needed) {
    ++c.failed_allocations;
    return absl::ResourceExhaustedError(absl::StrCat(
        "all ", max_extents_,
        " extent descriptors are in use (max_extents); cannot split a free "
        "extent for ",
        size, " bytes"));
  }
  RemoveFromBin(n);
  if (gap > 0) {
    const uint32_t g = PopUnused();
    nodes_[g].offset = node.offset;
    nodes_[g].size = gap;
    nodes_[g].prev_addr = node.prev_addr;
    nodes_[g].next_addr = n;
    if (node.prev_addr != kNil) {
      nodes_[node.prev_addr].next_addr = g;
    } else {
      c.head_node = g;
    }
    node.prev_addr = g;
    node.offset = start;
    node.size -= gap;
    InsertInBin(g);
  }
  if (rest > 0) {
    const uint32_t r = PopUnused();
    nodes_[r].offset = start + take;
    nodes_[r].size = rest;
    nodes_[r].prev_addr = n;
    nodes_[r].next_addr = node.next_addr;
    if (node.next_addr != kNil) {
      nodes_[node.next_addr].prev_addr = r;
    } else {
      c.tail_node = r;
    }
    node.next_addr = r;
    node.size = take;
    InsertInBin(r);
  }
  node.state = kLive;
  node.slack = static_cast<uint32_t>(take - size);
  HashInsert(n);
  if (2 * (c.live_allocations + 1) > hash_mask_ + 1) Rehash(c.hash_bits + 1);
  c.used_bytes += take;
  c.requested_bytes += size;
  ++c.live_allocations;
  c.peak_used_bytes = std::max(c.peak_used_bytes, c.used_bytes);
  return Extent{start, take};
}

absl::Status FreeList::Free(uint64_t offset) {
  if (absl::Status s = ValidateOffsetInRange(offset, begin_, end_); !s.ok()) {
    return s;
  }
  const uint64_t slot = FindSlot(offset);
  if (slot == kNil) {
    return absl::FailedPreconditionError(absl::StrCat(
        "offset ", offset, " is not the start of a live allocation"));
  }
  uint32_t n = slots_[slot];
  HashErase(slot);
  Control& c = *control_;
  c.used_bytes -= nodes_[n].size;
  c.requested_bytes -= nodes_[n].size - nodes_[n].slack;
  --c.live_allocations;
  const uint32_t prev = nodes_[n].prev_addr;
  if (prev != kNil && nodes_[prev].state == kFree) {  // absorb n into prev
    RemoveFromBin(prev);
    nodes_[prev].size += nodes_[n].size;
    nodes_[prev].next_addr = nodes_[n].next_addr;
    if (nodes_[n].next_addr != kNil) {
      nodes_[nodes_[n].next_addr].prev_addr = prev;
    } else {
      c.tail_node = prev;
    }
    PushUnused(n);
    n = prev;
  }
  const uint32_t next = nodes_[n].next_addr;
  if (next != kNil && nodes_[next].state == kFree) {  // absorb next into n
    RemoveFromBin(next);
    nodes_[n].size += nodes_[next].size;
    nodes_[n].next_addr = nodes_[next].next_addr;
    if (nodes_[next].next_addr != kNil) {
      nodes_[nodes_[next].next_addr].prev_addr = n;
    } else {
      c.tail_node = n;
    }
    PushUnused(next);
  }
  InsertInBin(n);
  if (c.hash_bits > kMinHashBits && 8 * c.live_allocations < hash_mask_ + 1) {
    Rehash(c.hash_bits - 1);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FreeList::SizeOf(uint64_t offset) const {
  if (absl::Status s = ValidateOffsetInRange(offset, begin_, end_); !s.ok()) {
    return s;
  }
  const uint64_t slot = FindSlot(offset);
  if (slot == kNil) {
    return absl::FailedPreconditionError(absl::StrCat(
        "offset ", offset, " is not the start of a live allocation"));
  }
  return nodes_[slots_[slot]].size;
}

AllocatorStats FreeList::Stats() const {
  const Control& c = *control_;
  AllocatorStats stats;
  stats.capacity_bytes = end_ - begin_;
  stats.used_bytes = c.used_bytes;
  stats.free_bytes = stats.capacity_bytes - c.used_bytes;
  stats.requested_bytes = c.requested_bytes;
  stats.live_allocations = c.live_allocations;
  stats.peak_used_bytes = c.peak_used_bytes;
  stats.failed_allocations = c.failed_allocations;
  if (c.fl_bitmap != 0) {
    const uint32_t fl = 63 - std::countl_zero(c.fl_bitmap);
    const uint32_t sl = 31 - std::countl_zero(c.sl_bitmap[fl]);
    for (uint32_t n = c.bin_head[fl][sl]; n != kNil; n = nodes_[n].bin_next) {
      stats.largest_free_bytes =
          std::max(stats.largest_free_bytes, nodes_[n].size);
    }
  }
  FillFragmentation(stats);
  return stats;
}

// Hash table: linear probing on offset / kGranule (Fibonacci hashing), with
// backward-shift deletion so lookups never meet tombstones.
uint64_t FreeList::HomeSlot(uint64_t offset) const {
  return ((offset / kGranule) * 0x9E3779B97F4A7C15ull) >> hash_shift_;
}

uint64_t FreeList::FindSlot(uint64_t offset) const {
  for (uint64_t i = HomeSlot(offset);; i = (i + 1) & hash_mask_) {
    const uint32_t n = slots_[i];
    if (n == kNil) return kNil;
    if (nodes_[n].offset == offset) return i;
  }
}

void FreeList::HashInsert(uint32_t n) {
  uint64_t i = HomeSlot(nodes_[n].offset);
  while (slots_[i] != kNil) i = (i + 1) & hash_mask_;
  slots_[i] = n;
}

void FreeList::HashErase(uint64_t slot) {
  uint64_t hole = slot;
  for (uint64_t j = (hole + 1) & hash_mask_; slots_[j] != kNil;
       j = (j + 1) & hash_mask_) {
    const uint64_t home = HomeSlot(nodes_[slots_[j]].offset);
    // Move j into the hole unless its home lies cyclically in (hole, j].
    if (((j - home) & hash_mask_) >= ((j - hole) & hash_mask_)) {
      slots_[hole] = slots_[j];
      hole = j;
    }
  }
  slots_[hole] = kNil;
}

void FreeList::Rehash(uint32_t bits) {
  const uint64_t clear = std::max(hash_mask_ + 1, uint64_t{1} << bits);
  std::memset(slots_, 0xFF, clear * sizeof(uint32_t));
  control_->hash_bits = bits;
  LoadHashGeometry();
  for (uint32_t n = control_->head_node; n != kNil; n = nodes_[n].next_addr) {
    if (nodes_[n].state == kLive) HashInsert(n);
  }
}

}  // namespace shmalloc
