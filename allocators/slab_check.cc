// Slab::CheckInvariants: verifies every invariant listed in slab.h.
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "allocators/slab.h"

namespace shmalloc {

absl::Status Slab::CheckInvariants() const {
  if (absl::Status s = ValidateMetaHeader(meta_, Strategy::kSlab); !s.ok()) {
    return s;
  }
  const SlabState& st = state();
  if (st.layout_version != kSlabLayoutVersion ||
      st.num_classes != num_classes_ || st.num_slabs != num_slabs_ ||
      st.entries_per_slab != entries_per_slab_) {
    return absl::DataLossError("slab state disagrees with the header");
  }
  std::vector<uint64_t> sizes;
  for (uint32_t c = 0; c < num_classes_; ++c) sizes.push_back(classes_[c].size);
  if (absl::Status s = ValidateSizeClasses(sizes); !s.ok()) {
    return absl::InternalError(s.message());
  }
  auto broken = [](uint64_t slab, absl::string_view what) {
    return absl::InternalError(absl::StrCat("slab ", slab, ": ", what));
  };
  std::vector<uint64_t> slabs(num_classes_), partial(num_classes_),
      live(num_classes_);
  uint64_t free_slabs = 0, used = 0, requested = 0;
  for (uint32_t s = 0; s < num_slabs_; ++s) {
    const SlabDesc& d = slabs_[s];
    if (d.cls == kSlabNoClass) {
      ++free_slabs;
      continue;
    }
    if (d.cls >= num_classes_) return broken(s, "bad class index");
    const uint64_t size = classes_[d.cls].size, cap = kSlabBytes / size;
    if (d.live == 0 || d.live > d.carved || d.carved > cap) {
      return broken(s, "needs 1 <= live <= carved <= capacity");
    }
    const uint16_t* e = entries(s);
    uint64_t n = 0;
    for (uint32_t j = 0; j < d.carved; ++j) {
      if (!(e[j] & kSlabLive)) continue;
      if ((e[j] & kSlabLowMask) >= size)
        return broken(s, "slack >= class size");
      ++n;
      requested += size - (e[j] & kSlabLowMask);
    }
    if (n != d.live) return broken(s, "live disagrees with the entries");
    uint64_t free_objects = 0;
    for (uint32_t j = d.free_head; j != kSlabNilObject;
         j = e[j] & kSlabLowMask) {
      if (j >= d.carved || (e[j] & kSlabLive) ||
          ++free_objects > d.carved - n) {
        return broken(s, "free list is broken");
      }
    }
    if (free_objects != d.carved - n) return broken(s, "free list is short");
    ++slabs[d.cls];
    live[d.cls] += n;
    if (n < cap) ++partial[d.cls];
    used += size * n;
  }
  // Every list: right owner, consistent back links, the expected length.
  auto walk = [&](uint32_t head, uint16_t cls, uint64_t expect,
                  absl::string_view name) -> absl::Status {
    uint64_t n = 0;
    for (uint32_t s = head, prev = kSlabNilSlab; s != kSlabNilSlab;
         prev = s, s = slabs_[s].next) {
      if (s >= num_slabs_ || slabs_[s].prev != prev || ++n > expect ||
          slabs_[s].cls != cls ||
          (cls != kSlabNoClass &&
           slabs_[s].live == kSlabBytes / classes_[cls].size)) {
        return broken(s, absl::StrCat("bad member of the ", name, " list"));
      }
    }
    if (n != expect) {
      return absl::InternalError(absl::StrCat("the ", name, " list has ", n,
                                              " slabs, expected ", expect));
    }
    return absl::OkStatus();
  };
  if (free_slabs != st.free_slabs) {
    return absl::InternalError("free_slabs disagrees with the slabs");
  }
  if (absl::Status s =
          walk(st.free_slab_head, kSlabNoClass, free_slabs, "free");
      !s.ok()) {
    return s;
  }
  uint64_t total_live = 0;
  for (uint32_t c = 0; c < num_classes_; ++c) {
    if (classes_[c].slabs != slabs[c] || classes_[c].live_objects != live[c]) {
      return absl::InternalError(
          absl::StrCat("class ", classes_[c].size, " counters are wrong"));
    }
    if (absl::Status s =
            walk(classes_[c].partial_head, static_cast<uint16_t>(c), partial[c],
                 absl::StrCat("partial ", classes_[c].size));
        !s.ok()) {
      return s;
    }
    total_live += live[c];
  }
  if (total_live != st.live_allocations || used != st.used_bytes ||
      requested != st.requested_bytes) {
    return absl::InternalError(absl::StrCat(
        "slab counters (live ", st.live_allocations, ", used ", st.used_bytes,
        ", requested ", st.requested_bytes, ") disagree with the slabs (",
        total_live, ", ", used, ", ", requested, ")"));
  }
  if (used > end_ - begin_ || st.peak_used_bytes < used) {
    return absl::InternalError("slab used/peak out of bounds");
  }
  return absl::OkStatus();
}

}  // namespace shmalloc
