// FreeList geometry, Create, Attach, Format and Reset: everything that lays
// out or re-opens the metadata (the hot path is in free_list.cc).
#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "allocators/free_list.h"

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

struct Geometry {
  uint64_t max_extents;
  uint64_t hash_slots;
  uint32_t hash_max_bits;
  uint64_t nodes_offset;
  uint64_t hash_offset;
  uint64_t total_bytes;
};

Geometry ComputeGeometry(uint64_t max_extents) {
  Geometry g;
  g.max_extents = max_extents;
  g.hash_max_bits = std::max<uint32_t>(1, std::bit_width(2 * max_extents - 1));
  g.hash_slots = uint64_t{1} << g.hash_max_bits;
  g.nodes_offset = AlignUp(kControlOffset + sizeof(FreeListControl), 64);
  g.hash_offset = AlignUp(g.nodes_offset + max_extents * sizeof(Node), 64);
  g.total_bytes = g.hash_offset + g.hash_slots * sizeof(uint32_t);
  return g;
}

absl::StatusOr<Geometry> GeometryFor(const AllocatorOptions& options) {
  if (options.strategy != Strategy::kFreeList &&
      options.strategy != Strategy::kUnspecified) {
    return absl::InvalidArgumentError(
        absl::StrCat("FreeList cannot be created for strategy ",
                     std::string(StrategyName(options.strategy))));
  }
  if (absl::Status s = ValidateRange(options); !s.ok()) return s;
  const uint64_t capacity = options.end - options.begin;
  if (capacity < kGranule) {
    return absl::InvalidArgumentError(
        absl::StrCat("FreeList needs at least ", kGranule,
                     " bytes, range holds ", capacity));
  }
  uint64_t max_extents = options.max_extents;
  if (max_extents == 0) {
    max_extents =
        std::min(std::max<uint64_t>(capacity / 1024, 1024), kMaxExtentsLimit);
  } else if (max_extents > kMaxExtentsLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_extents ", max_extents, " exceeds the limit ", kMaxExtentsLimit));
  }
  return ComputeGeometry(max_extents);
}

}  // namespace

absl::StatusOr<uint64_t> FreeList::MetadataBytes(
    const AllocatorOptions& options) {
  absl::StatusOr<Geometry> g = GeometryFor(options);
  if (!g.ok()) return g.status();
  return g->total_bytes;
}

FreeList::FreeList(std::span<std::byte> meta) : meta_(meta) {
  std::byte* base = meta.data();
  control_ = reinterpret_cast<Control*>(base + kControlOffset);
  const auto* header = reinterpret_cast<const MetaHeader*>(base);
  begin_ = header->begin;
  end_ = header->end;
  max_extents_ = control_->max_extents;
  nodes_ = reinterpret_cast<Node*>(base + control_->nodes_offset);
  slots_ = reinterpret_cast<uint32_t*>(base + control_->hash_offset);
  LoadHashGeometry();
}

absl::StatusOr<std::unique_ptr<FreeList>> FreeList::Create(
    std::span<std::byte> meta, const AllocatorOptions& options) {
  absl::StatusOr<Geometry> g = GeometryFor(options);
  if (!g.ok()) return g.status();
  if (meta.size() < g->total_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "FreeList metadata span has ", meta.size(), " bytes, needs ",
        g->total_bytes, " for max_extents ", g->max_extents));
  }
  if (reinterpret_cast<uintptr_t>(meta.data()) % alignof(Node) != 0) {
    return absl::InvalidArgumentError("metadata span is not 8-byte aligned");
  }
  MetaHeader header{};
  header.magic = 0;  // written last
  header.layout_version = kMetaLayoutVersion;
  header.strategy = static_cast<uint32_t>(Strategy::kFreeList);
  header.begin = options.begin;
  header.end = options.end;
  header.meta_bytes = g->total_bytes;
  header.param = g->max_extents;
  std::memcpy(meta.data(), &header, sizeof(header));
  auto* control = reinterpret_cast<Control*>(meta.data() + kControlOffset);
  std::memset(control, 0, sizeof(Control));
  control->max_extents = g->max_extents;
  control->hash_slots = g->hash_slots;
  control->nodes_offset = g->nodes_offset;
  control->hash_offset = g->hash_offset;
  std::unique_ptr<FreeList> list(new FreeList(meta));
  list->Format();
  header.magic = kMetaMagic;
  std::memcpy(meta.data(), &header.magic, sizeof(header.magic));
  return list;
}

absl::StatusOr<std::unique_ptr<FreeList>> FreeList::Attach(
    std::span<std::byte> meta) {
  if (absl::Status s = ValidateMetaHeader(meta, Strategy::kFreeList); !s.ok()) {
    return s;
  }
  if (reinterpret_cast<uintptr_t>(meta.data()) % alignof(Node) != 0) {
    return absl::InvalidArgumentError("metadata span is not 8-byte aligned");
  }
  MetaHeader header;
  std::memcpy(&header, meta.data(), sizeof(header));
  if (header.param == 0 || header.param > kMaxExtentsLimit) {
    return absl::DataLossError(
        absl::StrCat("metadata records max_extents ", header.param));
  }
  const Geometry g = ComputeGeometry(header.param);
  if (header.meta_bytes < g.total_bytes || meta.size() < g.total_bytes) {
    return absl::DataLossError(absl::StrCat(
        "metadata of ", header.meta_bytes, " bytes cannot hold max_extents ",
        header.param, " (needs ", g.total_bytes, ")"));
  }
  const auto* control =
      reinterpret_cast<const Control*>(meta.data() + kControlOffset);
  if (control->max_extents != g.max_extents ||
      control->hash_slots != g.hash_slots ||
      control->hash_bits != g.hash_max_bits ||
      control->nodes_offset != g.nodes_offset ||
      control->hash_offset != g.hash_offset) {
    return absl::DataLossError("metadata control block geometry is corrupt");
  }
  std::unique_ptr<FreeList> list(new FreeList(meta));
  if (absl::Status s = list->CheckInvariants(); !s.ok()) {
    return absl::DataLossError(
        absl::StrCat("metadata fails its invariants: ", s.message()));
  }
  return list;
}

// Restartable (Reset is not logged): every store is of a value fixed by the
// geometry, and nothing is read back but what this run stored, so a run cut
// short at any store and started again ends in the same bytes as one run.
// Hence no helper that reads prior state (PopUnused, InsertInBin). Each store
// is preceded by a Touch only so that a test can stop Reset at any store
// with UndoLog's crash-point hook; the daemon runs Reset with no transaction
// open (a Touch is then one branch; the log is not sized for O(metadata)).
// A field that already holds its value is not stored to at all (the bytes
// are the same either way): that keeps a Reset of a lightly used table to the
// words it changes, and the crash-point tests short.
void FreeList::Format() {
  Control& c = *control_;
  auto set = [this](auto& word, auto value) {
    if (word == value) return;
    Touch(&word);
    word = value;
  };
  auto set_node = [this](uint64_t i, const Node& value) {
    if (std::memcmp(&nodes_[i], &value, sizeof(Node)) == 0) return;
    TouchRange(&nodes_[i], sizeof(Node));
    nodes_[i] = value;
  };
  set(c.used_bytes, uint64_t{0});
  set(c.requested_bytes, uint64_t{0});
  set(c.live_allocations, uint64_t{0});
  for (uint32_t& w : c.sl_bitmap) set(w, uint32_t{0});
  for (auto& bins : c.bin_head) {
    for (uint32_t& head : bins) set(head, kNil);
  }
  for (uint64_t i = 0; i < control_->hash_slots; ++i) set(slots_[i], kNil);
  set(c.hash_bits, static_cast<uint32_t>(std::countr_zero(c.hash_slots)));
  LoadHashGeometry();
  // Node 0 is the one free extent [begin, end); nodes 1.. are the unused list.
  set_node(0, Node{begin_, end_ - begin_, kNil, kNil, kNil, kNil, kFree, 0});
  for (uint64_t i = 1; i < max_extents_; ++i) {
    const uint32_t next =
        i + 1 < max_extents_ ? static_cast<uint32_t>(i + 1) : kNil;
    set_node(i, Node{0, 0, kNil, kNil, kNil, next, kUnused, 0});
  }
  set(c.unused_head, max_extents_ > 1 ? uint32_t{1} : kNil);
  set(c.head_node, uint32_t{0});
  set(c.tail_node, uint32_t{0});
  const BinIndex b = BinOf((end_ - begin_) / kGranule);
  set(c.bin_head[b.fl][b.sl], uint32_t{0});
  set(c.sl_bitmap[b.fl], 1u << b.sl);
  set(c.fl_bitmap, uint64_t{1} << b.fl);
  set(c.free_extents, uint64_t{1});
  set(c.largest_free, end_ - begin_);
  set(c.counters_version, free_list_internal::kFreeListCountersVersion);
}

void FreeList::Reset() { Format(); }

}  // namespace shmalloc
