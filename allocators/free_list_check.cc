// FreeList::CheckInvariants: verifies every invariant listed in free_list.h.
// Written to be safe on arbitrary bytes (a corrupt or hostile meta file): every
// index is bounds-checked before it is followed and every walk is bounded.
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "allocators/free_list.h"

namespace shmalloc {
namespace {

using free_list_internal::kFlCount;
using free_list_internal::kFree;
using free_list_internal::kGranule;
using free_list_internal::kLive;
using free_list_internal::kNil;
using free_list_internal::kSlCount;
using free_list_internal::kUnused;

absl::Status Broken(std::string_view what) {
  return absl::InternalError(
      absl::StrCat("FreeList invariant broken: ", std::string(what)));
}

}  // namespace

absl::Status FreeList::CheckInvariants() const {
  if (absl::Status s = ValidateMetaHeader(meta_, Strategy::kFreeList);
      !s.ok()) {
    return s;
  }
  MetaHeader header;
  std::memcpy(&header, meta_.data(), sizeof(header));
  if (header.begin != begin_ || header.end != end_ ||
      header.param != max_extents_ || control_->max_extents != max_extents_ ||
      control_->hash_bits != 64 - hash_shift_ ||
      hash_mask_ + 1 > control_->hash_slots) {
    return absl::DataLossError("metadata header or geometry changed");
  }
  if (absl::Status s = CheckChainAndCounters(); !s.ok()) return s;
  if (absl::Status s = CheckBins(); !s.ok()) return s;
  return CheckHash();
}

absl::Status FreeList::CheckChainAndCounters() const {
  const Control& c = *control_;
  uint64_t n_free = 0, n_live = 0, n_unused = 0;
  uint64_t used = 0, requested = 0, largest = 0;
  for (uint64_t i = 0; i < max_extents_; ++i) {
    const Node& node = nodes_[i];
    if (node.state == kFree) {
      ++n_free;
      largest = std::max(largest, node.size);
    } else if (node.state == kLive) {
      ++n_live;
      if (node.slack >= 2 * kGranule || node.slack >= node.size) {
        return Broken(absl::StrCat("node ", i, " has slack ", node.slack));
      }
      used += node.size;
      requested += node.size - node.slack;
    } else if (node.state == kUnused) {
      ++n_unused;
    } else {
      return Broken(absl::StrCat("node ", i, " has state ", node.state));
    }
  }
  // The address chain covers [begin, end) exactly, in order.
  uint64_t expected = begin_;
  uint64_t length = 0;
  uint32_t prev = kNil;
  bool prev_free = false;
  for (uint32_t n = c.head_node; n != kNil;) {
    if (n >= max_extents_ || ++length > max_extents_) {
      return Broken(absl::StrCat("address chain reaches node ", n));
    }
    const Node& node = nodes_[n];
    if (node.state != kFree && node.state != kLive) {
      return Broken(absl::StrCat("unused node ", n, " is in the chain"));
    }
    if (node.offset != expected || node.prev_addr != prev) {
      return Broken(absl::StrCat("node ", n, " at ", node.offset,
                                 " does not follow the extent ending at ",
                                 expected));
    }
    if (node.size == 0 || node.size > end_ - node.offset ||
        node.offset % kGranule != 0) {
      return Broken(absl::StrCat("node ", n, " has bad extent [", node.offset,
                                 ", +", node.size, ")"));
    }
    if (node.size % kGranule != 0 && node.next_addr != kNil) {
      return Broken(absl::StrCat("non-tail node ", n, " has size ", node.size));
    }
    if (prev_free && node.state == kFree) {
      return Broken(absl::StrCat("free neighbours at ", node.offset,
                                 " were not coalesced"));
    }
    prev_free = node.state == kFree;
    expected = node.offset + node.size;
    prev = n;
    n = node.next_addr;
  }
  if (expected != end_ || prev != c.tail_node) {
    return Broken(absl::StrCat("address chain ends at ", expected, " (node ",
                               prev, "), heap ends at ", end_, " (tail_node ",
                               c.tail_node, ")"));
  }
  if (length != n_free + n_live) {
    return Broken(absl::StrCat("chain has ", length, " nodes, ",
                               n_free + n_live, " are free or live"));
  }
  uint64_t unused_length = 0;
  for (uint32_t n = c.unused_head; n != kNil; n = nodes_[n].link_next) {
    if (n >= max_extents_ || nodes_[n].state != kUnused ||
        ++unused_length > n_unused) {
      return Broken(absl::StrCat("unused-node list reaches node ", n));
    }
  }
  if (unused_length != n_unused) {
    return Broken(absl::StrCat("unused list holds ", unused_length, " of ",
                               n_unused, " unused nodes"));
  }
  if (c.used_bytes != used || c.requested_bytes != requested ||
      c.live_allocations != n_live || c.free_extents != n_free) {
    return Broken(absl::StrCat(
        "counters used/requested/live/free_extents = ", c.used_bytes, "/",
        c.requested_bytes, "/", c.live_allocations, "/", c.free_extents,
        ", nodes say ", used, "/", requested, "/", n_live, "/", n_free));
  }
  if (c.peak_used_bytes < c.used_bytes) return Broken("peak < used");
  if (c.counters_version == free_list_internal::kFreeListCountersVersion) {
    if (c.largest_free != largest) {
      return Broken(absl::StrCat("largest_free is ", c.largest_free,
                                 ", the largest free extent ", largest));
    }
  } else if (c.counters_version != 0 || c.largest_free != 0 ||
             c.reserved != 0) {
    return Broken(absl::StrCat("counters_version ", c.counters_version));
  }
  return absl::OkStatus();
}

absl::Status FreeList::CheckBins() const {
  const Control& c = *control_;
  uint64_t in_bins = 0;
  for (uint32_t f = 0; f < kFlCount; ++f) {
    if ((c.sl_bitmap[f] >> kSlCount) != 0) {
      return Broken(absl::StrCat("sl_bitmap[", f, "] has stray bits"));
    }
    if (((c.fl_bitmap >> f) & 1) != (c.sl_bitmap[f] != 0)) {
      return Broken(absl::StrCat("fl_bitmap bit ", f, " disagrees"));
    }
    for (uint32_t s = 0; s < kSlCount; ++s) {
      const uint32_t head = c.bin_head[f][s];
      if (((c.sl_bitmap[f] >> s) & 1) != (head != kNil)) {
        return Broken(absl::StrCat("sl_bitmap bit ", f, ".", s, " disagrees"));
      }
      uint32_t prev = kNil;
      for (uint32_t n = head; n != kNil; n = nodes_[n].link_next) {
        if (n >= max_extents_ || ++in_bins > c.free_extents) {
          return Broken(absl::StrCat("bin ", f, ".", s, " reaches node ", n));
        }
        const Node& node = nodes_[n];
        const free_list_internal::BinIndex b =
            free_list_internal::BinOf(node.size / kGranule);
        if (node.state != kFree || node.link_prev != prev || b.fl != f ||
            b.sl != s) {
          return Broken(absl::StrCat("node ", n, " of size ", node.size,
                                     " is misfiled in bin ", f, ".", s));
        }
        prev = n;
      }
    }
  }
  if (in_bins != c.free_extents) {
    return Broken(absl::StrCat("bins hold ", in_bins, " of ", c.free_extents,
                               " free extents"));
  }
  return absl::OkStatus();
}

absl::Status FreeList::CheckHash() const {
  const uint64_t live = control_->live_allocations;
  if (hash_mask_ + 1 != control_->hash_slots) {
    return Broken(absl::StrCat("hash table uses ", hash_mask_ + 1, " of ",
                               control_->hash_slots, " buckets"));
  }
  // Every chain: live nodes of that bucket, consistent back links, and all
  // chains together no longer than `live` (which bounds every walk).
  uint64_t chained = 0;
  for (uint64_t b = 0; b < control_->hash_slots; ++b) {
    uint32_t prev = kNil;
    for (uint32_t n = slots_[b]; n != kNil; n = nodes_[n].link_next) {
      if (n >= max_extents_ || ++chained > live) {
        return Broken(absl::StrCat("hash bucket ", b, " reaches node ", n,
                                   " (or more than ", live, " live nodes)"));
      }
      const Node& node = nodes_[n];
      if (node.state != kLive || node.link_prev != prev ||
          HomeSlot(node.offset) != b) {
        return Broken(
            absl::StrCat("node ", n, " is misfiled in hash bucket ", b));
      }
      prev = n;
    }
  }
  // A node is chained at most once (a repeat would break its back link), so
  // `live` chained live nodes are all of them.
  if (chained != live) {
    return Broken(absl::StrCat("hash holds ", chained, " entries for ", live,
                               " live extents"));
  }
  return absl::OkStatus();
}

}  // namespace shmalloc
