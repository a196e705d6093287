#include "allocators/slab.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace shmalloc {
namespace {

constexpr uint64_t kMaxSlabs = uint64_t{1} << 31;

struct Geometry {
  uint32_t num_classes;
  uint32_t num_slabs;
  uint32_t entries_per_slab;
  uint64_t slabs_offset;
  uint64_t entries_offset;
  uint64_t total_bytes;
};

std::vector<uint64_t> ClassesOf(const AllocatorOptions& options) {
  if (!options.size_classes.empty()) return options.size_classes;
  std::vector<uint64_t> sizes;
  for (uint64_t s = 16; s <= 16384; s *= 2) sizes.push_back(s);
  return sizes;
}

absl::StatusOr<Geometry> ComputeGeometry(uint64_t begin, uint64_t end,
                                         const std::vector<uint64_t>& sizes) {
  if (absl::Status s = Slab::ValidateSizeClasses(sizes); !s.ok()) return s;
  const uint64_t slabs = (end - begin) / kSlabBytes;
  if (slabs == 0 || slabs > kMaxSlabs) {
    return absl::InvalidArgumentError(
        absl::StrCat("slab range of ", end - begin, " bytes holds ", slabs,
                     " slabs of ", kSlabBytes, " bytes; need 1 to 2^31"));
  }
  Geometry g;
  g.num_classes = static_cast<uint32_t>(sizes.size());
  g.num_slabs = static_cast<uint32_t>(slabs);
  g.entries_per_slab = static_cast<uint32_t>(kSlabBytes / sizes[0]);
  g.slabs_offset = kSlabClassesOffset + sizeof(SlabClass) * g.num_classes;
  g.entries_offset = g.slabs_offset + sizeof(SlabDesc) * slabs;
  g.total_bytes = AlignUp(g.entries_offset + 2 * slabs * g.entries_per_slab, 8);
  return g;
}

bool IsAligned8(std::span<std::byte> meta) {
  return reinterpret_cast<uintptr_t>(meta.data()) % 8 == 0;
}

// The alignment every object of a class of `size` has when the heap begins
// at `begin`: objects start at begin + slab * kSlabBytes + j * size.
uint64_t NaturalAlignment(uint64_t size, uint64_t begin) {
  return std::min(
      {AlignmentOf(size), AlignmentOf(kSlabBytes), AlignmentOf(begin)});
}

}  // namespace

absl::Status Slab::ValidateSizeClasses(const std::vector<uint64_t>& sizes) {
  if (sizes.empty() || sizes.size() > kSlabMaxClasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("slab needs 1 to ", kSlabMaxClasses, " size classes, got ",
                     sizes.size()));
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] < 8 || sizes[i] % 8 != 0 || sizes[i] > kSlabMaxClassBytes ||
        (i > 0 && sizes[i] <= sizes[i - 1])) {
      return absl::InvalidArgumentError(
          absl::StrCat("slab size class ", sizes[i],
                       " is not an ascending multiple of 8 in "
                       "[8, ",
                       kSlabMaxClassBytes, "]"));
    }
  }
  return absl::OkStatus();
}

Slab::Slab(std::span<std::byte> meta, uint64_t begin, uint64_t end,
           uint32_t num_classes, uint32_t num_slabs, uint32_t entries_per_slab)
    : meta_(meta),
      begin_(begin),
      end_(end),
      num_classes_(num_classes),
      num_slabs_(num_slabs),
      entries_per_slab_(entries_per_slab) {
  const uint64_t slabs_offset =
      kSlabClassesOffset + sizeof(SlabClass) * num_classes;
  classes_ = reinterpret_cast<SlabClass*>(meta.data() + kSlabClassesOffset);
  slabs_ = reinterpret_cast<SlabDesc*>(meta.data() + slabs_offset);
  entries_ = reinterpret_cast<uint16_t*>(meta.data() + slabs_offset +
                                         sizeof(SlabDesc) * num_slabs);
}

absl::StatusOr<uint64_t> Slab::MetadataBytes(const AllocatorOptions& options) {
  if (absl::Status s = ValidateRange(options); !s.ok()) return s;
  absl::StatusOr<Geometry> g =
      ComputeGeometry(options.begin, options.end, ClassesOf(options));
  if (!g.ok()) return g.status();
  return g->total_bytes;
}

absl::StatusOr<std::unique_ptr<Slab>> Slab::Create(
    std::span<std::byte> meta, const AllocatorOptions& options) {
  if (absl::Status s = ValidateRange(options); !s.ok()) return s;
  const std::vector<uint64_t> sizes = ClassesOf(options);
  absl::StatusOr<Geometry> g =
      ComputeGeometry(options.begin, options.end, sizes);
  if (!g.ok()) return g.status();
  if (meta.size() < g->total_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "slab metadata span of ", meta.size(), " bytes is smaller than the ",
        g->total_bytes, " bytes needed"));
  }
  if (!IsAligned8(meta)) {
    return absl::InvalidArgumentError("slab metadata must be 8-byte aligned");
  }
  MetaHeader header{};
  header.layout_version = kMetaLayoutVersion;
  header.strategy = static_cast<uint32_t>(Strategy::kSlab);
  header.begin = options.begin;
  header.end = options.end;
  header.meta_bytes = g->total_bytes;
  header.param = kSlabBytes;
  std::memcpy(meta.data(), &header, sizeof(header));  // magic still 0
  SlabState state{};
  state.layout_version = kSlabLayoutVersion;
  state.num_classes = g->num_classes;
  state.num_slabs = g->num_slabs;
  state.entries_per_slab = g->entries_per_slab;
  std::memcpy(meta.data() + kSlabStateOffset, &state, sizeof(state));
  std::unique_ptr<Slab> slab(new Slab(meta, options.begin, options.end,
                                      g->num_classes, g->num_slabs,
                                      g->entries_per_slab));
  for (uint32_t c = 0; c < g->num_classes; ++c) {
    slab->classes_[c] =
        SlabClass{static_cast<uint32_t>(sizes[c]), kSlabNilSlab, 0, 0, 0};
  }
  slab->InitSlabs();
  header.magic = kMetaMagic;  // written last
  std::memcpy(meta.data(), &header.magic, sizeof(header.magic));
  return slab;
}

absl::StatusOr<std::unique_ptr<Slab>> Slab::Attach(std::span<std::byte> meta) {
  if (absl::Status s = ValidateMetaHeader(meta, Strategy::kSlab); !s.ok()) {
    return s;
  }
  if (!IsAligned8(meta)) {
    return absl::InvalidArgumentError("slab metadata must be 8-byte aligned");
  }
  MetaHeader header;
  std::memcpy(&header, meta.data(), sizeof(header));
  SlabState state;
  if (meta.size() < kSlabClassesOffset) {
    return absl::DataLossError("slab metadata is truncated");
  }
  std::memcpy(&state, meta.data() + kSlabStateOffset, sizeof(state));
  std::vector<uint64_t> sizes;
  if (state.num_classes <= kSlabMaxClasses &&
      meta.size() >=
          kSlabClassesOffset + sizeof(SlabClass) * state.num_classes) {
    for (uint32_t c = 0; c < state.num_classes; ++c) {
      SlabClass cls;
      std::memcpy(&cls,
                  meta.data() + kSlabClassesOffset + sizeof(SlabClass) * c,
                  sizeof(cls));
      sizes.push_back(cls.size);
    }
  }
  absl::StatusOr<Geometry> g = ComputeGeometry(header.begin, header.end, sizes);
  if (!g.ok() || header.begin % kHeapBeginGranule != 0 ||
      header.param != kSlabBytes || header.meta_bytes != g->total_bytes ||
      state.layout_version != kSlabLayoutVersion ||
      state.num_slabs != g->num_slabs ||
      state.entries_per_slab != g->entries_per_slab) {
    return absl::DataLossError(
        "slab metadata records an inconsistent geometry");
  }
  std::unique_ptr<Slab> slab(new Slab(meta, header.begin, header.end,
                                      g->num_classes, g->num_slabs,
                                      g->entries_per_slab));
  if (absl::Status s = slab->CheckInvariants(); !s.ok()) {
    return absl::DataLossError(
        absl::StrCat("slab metadata fails its invariants: ", s.message()));
  }
  return slab;
}

SlabState& Slab::state() const {
  return *reinterpret_cast<SlabState*>(meta_.data() + kSlabStateOffset);
}

uint16_t* Slab::entries(uint32_t slab) const {
  return entries_ + uint64_t{slab} * entries_per_slab_;
}

void Slab::PushFront(uint32_t& head, uint32_t slab) {
  SlabDesc& d = slabs_[slab];
  Touch(&d.prev);
  Touch(&d.next);
  d.prev = kSlabNilSlab;
  d.next = head;
  if (head != kSlabNilSlab) {
    Touch(&slabs_[head].prev);
    slabs_[head].prev = slab;
  }
  Touch(&head);
  head = slab;
}

void Slab::Unlink(uint32_t& head, uint32_t slab) {
  SlabDesc& d = slabs_[slab];
  if (d.prev != kSlabNilSlab) {
    Touch(&slabs_[d.prev].next);
    slabs_[d.prev].next = d.next;
  } else {
    Touch(&head);
    head = d.next;
  }
  if (d.next != kSlabNilSlab) {
    Touch(&slabs_[d.next].prev);
    slabs_[d.next].prev = d.prev;
  }
  Touch(&d.prev);
  Touch(&d.next);
  d.prev = d.next = kSlabNilSlab;
}

// Restartable, not logged (see Reset): every store writes a value that
// depends only on the geometry, and nothing it stores is read back first, so
// a run cut short at any store and then run again from the top ends in the
// same bytes as one uninterrupted run. The free-slab list is therefore laid
// out directly (0, 1, ..., M-1) instead of by PushFront, which reads the head.
// Entries are not written: they are meaningless while carved == 0.
// Each store is preceded by a Touch only so that a test can stop Reset at any
// store with UndoLog's crash-point hook; the daemon runs Reset with no
// transaction open (a Touch is then one branch; the log is not sized for
// O(M) words).
void Slab::InitSlabs() {
  SlabState& st = state();
  for (uint32_t s = 0; s < num_slabs_; ++s) {
    SlabDesc& d = slabs_[s];
    Touch(&d.cls);  // cls | live | prev
    d.cls = kSlabNoClass;
    d.live = 0;
    d.prev = s == 0 ? kSlabNilSlab : s - 1;
    Touch(&d.next);  // next | free_head | carved
    d.next = s + 1 < num_slabs_ ? s + 1 : kSlabNilSlab;
    d.free_head = kSlabNilObject;
    d.carved = 0;
  }
  Touch(&st.free_slab_head);  // free_slab_head | free_slabs
  st.free_slab_head = 0;      // num_slabs_ >= 1
  st.free_slabs = num_slabs_;
  for (uint32_t c = 0; c < num_classes_; ++c) {
    Touch(&classes_[c].partial_head);
    classes_[c].partial_head = kSlabNilSlab;
    Touch(&classes_[c].slabs);
    classes_[c].slabs = 0;
    Touch(&classes_[c].live_objects);
    classes_[c].live_objects = 0;
  }
}

absl::StatusOr<Extent> Slab::Allocate(uint64_t size, uint64_t alignment) {
  if (absl::Status s = ValidateAllocateArgs(size, alignment); !s.ok()) {
    return s;
  }
  uint32_t c = 0;
  while (c < num_classes_ &&
         (classes_[c].size < size ||
          NaturalAlignment(classes_[c].size, begin_) < alignment)) {
    ++c;
  }
  if (c == num_classes_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "no slab size class holds ", size, " bytes aligned to ", alignment,
        " (largest class ", classes_[num_classes_ - 1].size,
        "); use a BUDDY or FREE_LIST region for large sizes"));
  }
  SlabClass& cls = classes_[c];
  SlabState& st = state();
  if (cls.partial_head == kSlabNilSlab) {
    if (st.free_slab_head == kSlabNilSlab) {
      Touch(&st.failed_allocations);
      ++st.failed_allocations;
      return absl::ResourceExhaustedError(absl::StrCat(
          "slab class ", cls.size, " is full and no slab is free"));
    }
    const uint32_t s = st.free_slab_head;
    Unlink(st.free_slab_head, s);
    Touch(&st.free_slabs);
    --st.free_slabs;
    TouchRange(&slabs_[s], sizeof(SlabDesc));
    slabs_[s] =
        SlabDesc{static_cast<uint16_t>(c), 0, kSlabNilSlab, kSlabNilSlab,
                 kSlabNilObject,           0};
    PushFront(cls.partial_head, s);
    Touch(&cls.slabs);
    ++cls.slabs;
  }
  const uint32_t s = cls.partial_head;
  SlabDesc& d = slabs_[s];
  uint16_t* e = entries(s);
  uint32_t j;
  Touch(&d.free_head);  // free_head and carved share a word
  if (d.free_head != kSlabNilObject) {
    j = d.free_head;
    d.free_head = e[j] & kSlabLowMask;
  } else {
    j = d.carved++;
  }
  Touch(&e[j]);
  e[j] = kSlabLive | static_cast<uint16_t>(cls.size - size);
  Touch(&d.live);
  if (++d.live == kSlabBytes / cls.size) Unlink(cls.partial_head, s);
  Touch(&cls.live_objects);
  ++cls.live_objects;
  Touch(&st.used_bytes);
  st.used_bytes += cls.size;
  Touch(&st.requested_bytes);
  st.requested_bytes += size;
  Touch(&st.live_allocations);
  ++st.live_allocations;
  if (st.used_bytes > st.peak_used_bytes) {
    Touch(&st.peak_used_bytes);
    st.peak_used_bytes = st.used_bytes;
  }
  return Extent{begin_ + uint64_t{s} * kSlabBytes + uint64_t{j} * cls.size,
                cls.size};
}

absl::StatusOr<std::pair<uint32_t, uint32_t>> Slab::FindLive(
    uint64_t offset) const {
  if (absl::Status s = ValidateOffsetInRange(offset, begin_, end_); !s.ok()) {
    return s;
  }
  const uint64_t rel = offset - begin_;
  const uint64_t s = rel / kSlabBytes;
  if (s < num_slabs_ && slabs_[s].cls != kSlabNoClass) {
    const uint64_t size = classes_[slabs_[s].cls].size;
    const uint64_t within = rel % kSlabBytes;
    const uint64_t j = within / size;
    if (within % size == 0 && j < slabs_[s].carved &&
        (entries(static_cast<uint32_t>(s))[j] & kSlabLive)) {
      return std::make_pair(static_cast<uint32_t>(s), static_cast<uint32_t>(j));
    }
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "offset ", offset, " is not the start of a live slab object"));
}

absl::Status Slab::Free(uint64_t offset) {
  absl::StatusOr<std::pair<uint32_t, uint32_t>> found = FindLive(offset);
  if (!found.ok()) return found.status();
  const auto [s, j] = *found;
  SlabDesc& d = slabs_[s];
  SlabClass& cls = classes_[d.cls];
  uint16_t* e = entries(s);
  const uint64_t requested = cls.size - (e[j] & kSlabLowMask);
  Touch(&e[j]);
  e[j] = d.free_head;
  Touch(&d.free_head);
  d.free_head = static_cast<uint16_t>(j);
  const bool was_full = d.live == kSlabBytes / cls.size;
  Touch(&d.live);
  --d.live;
  SlabState& st = state();
  if (d.live == 0) {  // give the slab back
    if (!was_full) Unlink(cls.partial_head, s);
    Touch(&cls.slabs);
    --cls.slabs;
    TouchRange(&d, sizeof(SlabDesc));
    d = SlabDesc{kSlabNoClass,   0, kSlabNilSlab, kSlabNilSlab,
                 kSlabNilObject, 0};
    PushFront(st.free_slab_head, s);
    Touch(&st.free_slabs);
    ++st.free_slabs;
  } else if (was_full) {
    PushFront(cls.partial_head, s);
  }
  Touch(&cls.live_objects);
  --cls.live_objects;
  Touch(&st.used_bytes);
  st.used_bytes -= cls.size;
  Touch(&st.requested_bytes);
  st.requested_bytes -= requested;
  Touch(&st.live_allocations);
  --st.live_allocations;
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Slab::SizeOf(uint64_t offset) const {
  absl::StatusOr<std::pair<uint32_t, uint32_t>> found = FindLive(offset);
  if (!found.ok()) return found.status();
  return classes_[slabs_[found->first].cls].size;
}

// Not logged and restartable: InitSlabs and the three counters are stores of
// constants (peak and failure counters are not written at all).
void Slab::Reset() {
  InitSlabs();
  SlabState& st = state();
  Touch(&st.used_bytes);
  st.used_bytes = 0;
  Touch(&st.requested_bytes);
  st.requested_bytes = 0;
  Touch(&st.live_allocations);
  st.live_allocations = 0;
}

AllocatorStats Slab::Stats() const {
  const SlabState& st = state();
  AllocatorStats s;
  s.capacity_bytes = end_ - begin_;
  s.used_bytes = st.used_bytes;
  s.free_bytes = s.capacity_bytes - st.used_bytes;
  s.requested_bytes = st.requested_bytes;
  s.live_allocations = st.live_allocations;
  s.peak_used_bytes = st.peak_used_bytes;
  s.failed_allocations = st.failed_allocations;
  for (uint32_t c = num_classes_; c-- > 0;) {
    if (st.free_slabs > 0 || classes_[c].partial_head != kSlabNilSlab) {
      s.largest_free_bytes = classes_[c].size;
      break;
    }
  }
  FillFragmentation(s);
  // Free bytes in wholly free slabs serve any class; the rest (free objects
  // in partial slabs, the tail smaller than a slab) serve one class or none.
  if (s.free_bytes > 0) {
    s.fragmentation =
        1.0 - static_cast<double>(uint64_t{st.free_slabs} * kSlabBytes) /
                  static_cast<double>(s.free_bytes);
  }
  return s;
}

std::vector<SlabClassStats> Slab::ClassStats() const {
  std::vector<SlabClassStats> out;
  for (uint32_t c = 0; c < num_classes_; ++c) {
    out.push_back(SlabClassStats{classes_[c].size,
                                 kSlabBytes / classes_[c].size,
                                 classes_[c].slabs, classes_[c].live_objects});
  }
  return out;
}

}  // namespace shmalloc
