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

// Every helper below Touch()es each metadata word before its first store, so
// an open undo-log transaction records the old value (the log keeps a word
// once, so touching a word twice costs nothing in the log).

uint32_t FreeList::PopUnused() {
  const uint32_t n = control_->unused_head;
  Touch(&control_->unused_head);
  control_->unused_head = nodes_[n].link_next;
  Touch(&nodes_[n].link_next);
  nodes_[n].link_next = kNil;
  return n;
}

void FreeList::PushUnused(uint32_t n) {
  TouchRange(&nodes_[n], sizeof(Node));
  nodes_[n] = Node{0, 0, kNil, kNil, kNil, control_->unused_head, kUnused, 0};
  Touch(&control_->unused_head);
  control_->unused_head = n;
}

void FreeList::InsertInBin(uint32_t n) {
  Node& node = nodes_[n];
  const BinIndex b = BinOf(node.size / kGranule);
  uint32_t& head = control_->bin_head[b.fl][b.sl];
  Touch(&node.state);  // state and slack share a word
  node.state = kFree;
  node.slack = 0;
  Touch(&node.link_prev);  // link_prev and link_next share a word
  node.link_prev = kNil;
  node.link_next = head;
  if (head != kNil) {
    Touch(&nodes_[head].link_prev);
    nodes_[head].link_prev = n;
  }
  Touch(&head);
  head = n;
  // The bitmaps are touched only when the bin was empty (they change then).
  if (!(control_->sl_bitmap[b.fl] & (1u << b.sl))) {
    Touch(&control_->sl_bitmap[b.fl]);
    control_->sl_bitmap[b.fl] |= 1u << b.sl;
  }
  if (!(control_->fl_bitmap & (uint64_t{1} << b.fl))) {
    Touch(&control_->fl_bitmap);
    control_->fl_bitmap |= uint64_t{1} << b.fl;
  }
  Touch(&control_->free_extents);
  ++control_->free_extents;
  if (NeedsCounterUpgrade()) return;
  if (node.size > control_->largest_free) {
    Touch(&control_->largest_free);
    control_->largest_free = node.size;
    largest_stale_ = false;
  } else if (node.size == control_->largest_free) {
    largest_stale_ = false;  // another extent of the largest size
  }
}

uint64_t FreeList::ScanLargestFree() const {
  const Control& c = *control_;
  uint64_t largest = 0;
  if (c.fl_bitmap != 0) {
    const uint32_t fl = 63 - std::countl_zero(c.fl_bitmap);
    const uint32_t sl = 31 - std::countl_zero(c.sl_bitmap[fl]);
    for (uint32_t n = c.bin_head[fl][sl]; n != kNil; n = nodes_[n].link_next) {
      largest = std::max(largest, nodes_[n].size);
    }
  }
  return largest;
}

void FreeList::SettleLargestFree() {
  if (!largest_stale_) return;
  largest_stale_ = false;
  if (NeedsCounterUpgrade()) return;
  const uint64_t largest = ScanLargestFree();
  if (largest != control_->largest_free) {
    Touch(&control_->largest_free);
    control_->largest_free = largest;
  }
}

void FreeList::UpgradeCounters() {
  if (!NeedsCounterUpgrade()) return;
  Touch(&control_->largest_free);
  control_->largest_free = ScanLargestFree();
  Touch(&control_->counters_version);
  control_->counters_version = free_list_internal::kFreeListCountersVersion;
}

void FreeList::RemoveFromBin(uint32_t n) {
  Node& node = nodes_[n];
  if (node.link_next != kNil) {
    Touch(&nodes_[node.link_next].link_prev);
    nodes_[node.link_next].link_prev = node.link_prev;
  }
  if (node.link_prev != kNil) {
    Touch(&nodes_[node.link_prev].link_next);
    nodes_[node.link_prev].link_next = node.link_next;
  } else {
    const BinIndex b = BinOf(node.size / kGranule);
    Touch(&control_->bin_head[b.fl][b.sl]);
    control_->bin_head[b.fl][b.sl] = node.link_next;
    if (node.link_next == kNil) {
      Touch(&control_->sl_bitmap[b.fl]);
      control_->sl_bitmap[b.fl] &= ~(1u << b.sl);
      if (control_->sl_bitmap[b.fl] == 0) {
        Touch(&control_->fl_bitmap);
        control_->fl_bitmap &= ~(uint64_t{1} << b.fl);
      }
    }
  }
  Touch(&node.link_prev);
  node.link_prev = kNil;
  node.link_next = kNil;
  Touch(&control_->free_extents);
  --control_->free_extents;
  if (node.size == control_->largest_free) largest_stale_ = true;
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
         n = nodes_[n].link_next, --budget) {
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
    Touch(&c.failed_allocations);
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
    Touch(&c.failed_allocations);
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
    TouchRange(&nodes_[g], offsetof(Node, link_prev));  // offset..next_addr
    nodes_[g].offset = node.offset;
    nodes_[g].size = gap;
    nodes_[g].prev_addr = node.prev_addr;
    nodes_[g].next_addr = n;
    if (node.prev_addr != kNil) {
      Touch(&nodes_[node.prev_addr].next_addr);
      nodes_[node.prev_addr].next_addr = g;
    } else {
      Touch(&c.head_node);
      c.head_node = g;
    }
    TouchRange(&node, offsetof(Node, link_prev));
    node.prev_addr = g;
    node.offset = start;
    node.size -= gap;
    InsertInBin(g);
  }
  if (rest > 0) {
    const uint32_t r = PopUnused();
    TouchRange(&nodes_[r], offsetof(Node, link_prev));
    nodes_[r].offset = start + take;
    nodes_[r].size = rest;
    nodes_[r].prev_addr = n;
    nodes_[r].next_addr = node.next_addr;
    if (node.next_addr != kNil) {
      Touch(&nodes_[node.next_addr].prev_addr);
      nodes_[node.next_addr].prev_addr = r;
    } else {
      Touch(&c.tail_node);
      c.tail_node = r;
    }
    Touch(&node.next_addr);
    node.next_addr = r;
    Touch(&node.size);
    node.size = take;
    InsertInBin(r);
  }
  Touch(&node.state);
  node.state = kLive;
  node.slack = static_cast<uint32_t>(take - size);
  HashInsert(n);
  Touch(&c.used_bytes);
  c.used_bytes += take;
  Touch(&c.requested_bytes);
  c.requested_bytes += size;
  Touch(&c.live_allocations);
  ++c.live_allocations;
  if (c.used_bytes > c.peak_used_bytes) {
    Touch(&c.peak_used_bytes);
    c.peak_used_bytes = c.used_bytes;
  }
  SettleLargestFree();
  return Extent{start, take};
}

absl::Status FreeList::Free(uint64_t offset) {
  if (absl::Status s = ValidateOffsetInRange(offset, begin_, end_); !s.ok()) {
    return s;
  }
  uint32_t n = FindLive(offset);
  if (n == kNil) {
    return absl::FailedPreconditionError(absl::StrCat(
        "offset ", offset, " is not the start of a live allocation"));
  }
  HashErase(n);
  Control& c = *control_;
  Touch(&c.used_bytes);
  c.used_bytes -= nodes_[n].size;
  Touch(&c.requested_bytes);
  c.requested_bytes -= nodes_[n].size - nodes_[n].slack;
  Touch(&c.live_allocations);
  --c.live_allocations;
  const uint32_t prev = nodes_[n].prev_addr;
  if (prev != kNil && nodes_[prev].state == kFree) {  // absorb n into prev
    RemoveFromBin(prev);
    Touch(&nodes_[prev].size);
    nodes_[prev].size += nodes_[n].size;
    Touch(&nodes_[prev].next_addr);
    nodes_[prev].next_addr = nodes_[n].next_addr;
    if (nodes_[n].next_addr != kNil) {
      Touch(&nodes_[nodes_[n].next_addr].prev_addr);
      nodes_[nodes_[n].next_addr].prev_addr = prev;
    } else {
      Touch(&c.tail_node);
      c.tail_node = prev;
    }
    PushUnused(n);
    n = prev;
  }
  const uint32_t next = nodes_[n].next_addr;
  if (next != kNil && nodes_[next].state == kFree) {  // absorb next into n
    RemoveFromBin(next);
    Touch(&nodes_[n].size);
    nodes_[n].size += nodes_[next].size;
    Touch(&nodes_[n].next_addr);
    nodes_[n].next_addr = nodes_[next].next_addr;
    if (nodes_[next].next_addr != kNil) {
      Touch(&nodes_[nodes_[next].next_addr].prev_addr);
      nodes_[nodes_[next].next_addr].prev_addr = n;
    } else {
      Touch(&c.tail_node);
      c.tail_node = n;
    }
    PushUnused(next);
  }
  InsertInBin(n);
  SettleLargestFree();  // the merged extent came back: never a scan
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> FreeList::SizeOf(uint64_t offset) const {
  if (absl::Status s = ValidateOffsetInRange(offset, begin_, end_); !s.ok()) {
    return s;
  }
  const uint32_t n = FindLive(offset);
  if (n == kNil) {
    return absl::FailedPreconditionError(absl::StrCat(
        "offset ", offset, " is not the start of a live allocation"));
  }
  return nodes_[n].size;
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
  stats.largest_free_bytes =
      NeedsCounterUpgrade()
          ? ScanLargestFree()
          : std::min(c.largest_free, stats.free_bytes);  // O(1)
  FillFragmentation(stats);
  return stats;
}

// Hash table: separate chaining on offset / kGranule (Fibonacci hashing).
// A live node's link_prev / link_next (its bin links while it was free) chain
// it into its bucket, so insert and erase store O(1) words whatever the
// bucket holds, and the table never resizes (see free_list.h for why).
uint64_t FreeList::HomeSlot(uint64_t offset) const {
  return ((offset / kGranule) * 0x9E3779B97F4A7C15ull) >> hash_shift_;
}

uint32_t FreeList::FindLive(uint64_t offset) const {
  for (uint32_t n = slots_[HomeSlot(offset)]; n != kNil;
       n = nodes_[n].link_next) {
    if (nodes_[n].offset == offset) return n;
  }
  return kNil;
}

void FreeList::HashInsert(uint32_t n) {
  uint32_t& head = slots_[HomeSlot(nodes_[n].offset)];
  Touch(&nodes_[n].link_prev);  // link_prev and link_next share a word
  nodes_[n].link_prev = kNil;
  nodes_[n].link_next = head;
  if (head != kNil) {
    Touch(&nodes_[head].link_prev);
    nodes_[head].link_prev = n;
  }
  Touch(&head);
  head = n;
}

void FreeList::HashErase(uint32_t n) {
  Node& node = nodes_[n];
  if (node.link_next != kNil) {
    Touch(&nodes_[node.link_next].link_prev);
    nodes_[node.link_next].link_prev = node.link_prev;
  }
  if (node.link_prev != kNil) {
    Touch(&nodes_[node.link_prev].link_next);
    nodes_[node.link_prev].link_next = node.link_next;
  } else {
    uint32_t& head = slots_[HomeSlot(node.offset)];
    Touch(&head);
    head = node.link_next;
  }
  Touch(&node.link_prev);
  node.link_prev = kNil;
  node.link_next = kNil;
}

}  // namespace shmalloc
