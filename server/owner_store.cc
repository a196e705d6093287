#include "server/owner_store.h"

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace shmalloc::server {

namespace {

// Dense slots per record beyond which the hash map is cheaper in memory:
// 4 bytes per slot against the 64-byte records it indexes.
constexpr uint64_t kMaxSlotsPerRecord = 4;
constexpr uint64_t kMinDenseSlots = 1 << 16;

OwnerInfo InfoOf(const OwnerRecord& r) {
  OwnerInfo info;
  info.session_id = r.session_id;
  info.size_bytes = r.size_bytes;
  info.requested_bytes = r.requested_bytes;
  info.allocated_at_ms = r.allocated_at_ms;
  info.request_hash = r.request_hash;
  info.detached = (r.flags & kOwnerDetached) != 0;
  return info;
}

}  // namespace

OwnerStore::OwnerStore(std::span<std::byte> area, UndoLog* log,
                       OffsetIndex index)
    : area_(area), log_(log), index_(index) {
  const uint64_t cap = header()->capacity;
  if (index_.granule != 0 && index_.end > index_.begin) {
    const uint64_t slots =
        (index_.end - index_.begin + index_.granule - 1) / index_.granule;
    if (slots <= std::max(kMinDenseSlots, kMaxSlotsPerRecord * cap)) {
      dense_.assign(slots, 0);
      return;
    }
  }
  index_.granule = 0;
}

absl::StatusOr<OwnerStore> OwnerStore::Format(std::span<std::byte> area,
                                              UndoLog* log, OffsetIndex index) {
  if (area.size() < Bytes(1) ||
      reinterpret_cast<uintptr_t>(area.data()) % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("an owner store needs an 8-byte aligned area of at least ",
                     Bytes(1), " bytes (got ", area.size(), ")"));
  }
  auto* h = reinterpret_cast<OwnerStoreHeader*>(area.data());
  std::memset(static_cast<void*>(h), 0, sizeof(*h));
  h->capacity = (area.size() - sizeof(OwnerStoreHeader)) / sizeof(OwnerRecord);
  h->magic = kOwnerStoreMagic;
  return OwnerStore(area, log, index);
}

absl::StatusOr<OwnerStore> OwnerStore::Open(std::span<std::byte> area,
                                            UndoLog* log, OffsetIndex index) {
  if (area.size() < Bytes(1) ||
      reinterpret_cast<uintptr_t>(area.data()) % 8 != 0) {
    return absl::DataLossError("owner store area is too small or misaligned");
  }
  const auto* h = reinterpret_cast<const OwnerStoreHeader*>(area.data());
  if (h->magic != kOwnerStoreMagic) {
    return absl::DataLossError("owner store has a bad magic");
  }
  const uint64_t fits =
      (area.size() - sizeof(OwnerStoreHeader)) / sizeof(OwnerRecord);
  if (h->capacity == 0 || h->capacity > fits || h->carved > h->capacity ||
      h->live > h->carved || h->free_head > h->carved) {
    return absl::DataLossError(
        absl::StrCat("owner store counters are inconsistent: capacity ",
                     h->capacity, " (fits ", fits, "), carved ", h->carved,
                     ", live ", h->live, ", free_head ", h->free_head));
  }
  OwnerStore store(area, log, index);
  const OwnerRecord* r = store.records();
  // The free chain: distinct, below carved, not in use, exactly carved - live.
  std::vector<bool> on_chain(h->carved, false);
  uint64_t chain = 0;
  for (uint64_t next = h->free_head; next != 0; next = r[next - 1].next_free) {
    if (next > h->carved || on_chain[next - 1] ||
        (r[next - 1].flags & kOwnerInUse) != 0 || chain >= h->carved) {
      return absl::DataLossError(absl::StrCat(
          "owner store free chain is broken at record ", next - 1));
    }
    on_chain[next - 1] = true;
    ++chain;
  }
  if (chain != h->carved - h->live) {
    return absl::DataLossError(absl::StrCat("owner store free chain holds ",
                                            chain, " records, expected ",
                                            h->carved - h->live));
  }
  if (store.dense_.empty()) store.by_offset_.reserve(h->live);
  store.links_.resize(h->carved);
  uint64_t in_use = 0;
  SessionIndex* s = nullptr;
  uint64_t s_id = 0;
  for (uint64_t i = 0; i < h->carved; ++i) {
    if ((r[i].flags & kOwnerInUse) == 0) continue;
    if (on_chain[i]) {
      return absl::DataLossError(
          absl::StrCat("owner record ", i, " is in use and free"));
    }
    const bool dense = !store.dense_.empty();
    if (r[i].session_id == 0 ||
        (dense ? r[i].offset < store.index_.begin ||
                     r[i].offset >= store.index_.end ||
                     store.dense_[(r[i].offset - store.index_.begin) /
                                  store.index_.granule] != 0
               : store.by_offset_.contains(r[i].offset))) {
      return absl::DataLossError(
          absl::StrCat("owner record ", i,
                       " has no session, an offset outside the heap "
                       "or a duplicate offset ",
                       r[i].offset));
    }
    if (s == nullptr || s_id != r[i].session_id) {
      s_id = r[i].session_id;
      s = &store.sessions_[s_id];
    }
    store.Index(static_cast<uint32_t>(i), *s);
    ++in_use;
  }
  if (in_use != h->live) {
    return absl::DataLossError(absl::StrCat(
        "owner store has ", in_use, " records in use, header says ", h->live));
  }
  return store;
}

int64_t OwnerStore::Lookup(uint64_t offset) const {
  uint32_t v = 0;
  if (!dense_.empty()) {
    if (offset < index_.begin || offset >= index_.end) return -1;
    v = dense_[(offset - index_.begin) / index_.granule];
  } else {
    auto it = by_offset_.find(offset);
    if (it == by_offset_.end()) return -1;
    v = it->second + 1;
  }
  // Dense slots are shared by the offsets inside one granule: the record
  // says whether it is this one.
  if (v == 0 || records()[v - 1].offset != offset) return -1;
  return v - 1;
}

void OwnerStore::Index(uint32_t index, SessionIndex& s) {
  const OwnerRecord& r = records()[index];
  if (!dense_.empty()) {
    dense_[(r.offset - index_.begin) / index_.granule] = index + 1;
  } else {
    by_offset_.emplace(r.offset, index);
  }
  s.share.used_bytes += r.size_bytes;
  ++s.share.live_allocations;
  recorded_bytes_ += r.size_bytes;
  Links& l = links_[index];
  l = Links{};
  if ((r.flags & kOwnerDetached) == 0) {
    l.next = s.owned_head;
    if (s.owned_head != 0) links_[s.owned_head - 1].prev = index + 1;
    s.owned_head = index + 1;
    s.share.owned_bytes += r.size_bytes;
    ++s.share.owned_allocations;
    owned_bytes_ += r.size_bytes;
    ++owned_allocations_;
  }
  if (r.request_hash != 0) {
    RequestList& list = s.requests[r.request_hash];
    l.req_prev = list.tail;
    if (list.tail != 0) links_[list.tail - 1].req_next = index + 1;
    list.tail = index + 1;
    if (list.head == 0) list.head = index + 1;
  }
}

void OwnerStore::Unindex(uint32_t index, SessionIndex& s) {
  const OwnerRecord& r = records()[index];
  if (!dense_.empty()) {
    dense_[(r.offset - index_.begin) / index_.granule] = 0;
  } else {
    by_offset_.erase(r.offset);
  }
  s.share.used_bytes -= r.size_bytes;
  --s.share.live_allocations;
  recorded_bytes_ -= r.size_bytes;
  const Links l = links_[index];
  if ((r.flags & kOwnerDetached) == 0) {
    if (l.prev != 0) {
      links_[l.prev - 1].next = l.next;
    } else {
      s.owned_head = l.next;
    }
    if (l.next != 0) links_[l.next - 1].prev = l.prev;
    s.share.owned_bytes -= r.size_bytes;
    --s.share.owned_allocations;
    owned_bytes_ -= r.size_bytes;
    --owned_allocations_;
  }
  if (r.request_hash != 0) {
    auto req = s.requests.find(r.request_hash);
    SHMALLOC_CHECK(req != s.requests.end()) << "owner index lost a request";
    RequestList& list = req->second;
    if (l.req_prev != 0) {
      links_[l.req_prev - 1].req_next = l.req_next;
    } else {
      list.head = l.req_next;
    }
    if (l.req_next != 0) {
      links_[l.req_next - 1].req_prev = l.req_prev;
    } else {
      list.tail = l.req_prev;
    }
    if (list.head == 0) s.requests.erase(req);
  }
  links_[index] = Links{};
}

void OwnerStore::Add(uint64_t offset, const OwnerInfo& info) {
  const Extent extent{offset, info.size_bytes};
  AddBatch(std::span<const Extent>(&extent, 1), info);
}

void OwnerStore::AddBatch(std::span<const Extent> extents,
                          const OwnerInfo& info) {
  if (extents.empty()) return;
  OwnerStoreHeader* h = header();
  SHMALLOC_CHECK(extents.size() <= h->capacity - h->live) << "owner store full";
  SHMALLOC_CHECK(info.session_id != 0) << "owner record without a session";
  SessionIndex& s = sessions_[info.session_id];
  OwnerRecord* rec = records();
  uint64_t free_head = h->free_head;
  uint64_t carved = h->carved;
  for (const Extent& e : extents) {
    uint64_t index;
    if (free_head != 0) {
      index = free_head - 1;
      free_head = rec[index].next_free;
    } else {
      index = carved++;
      Reserve(index);
    }
    OwnerRecord& r = rec[index];
    // A record is filled once per transaction: its eight words go into the
    // log in one append, then are stored.
    if (log_ != nullptr) log_->LogFresh(&r, sizeof(r) / 8);
    r.offset = e.offset;
    r.size_bytes = e.size_bytes;
    r.requested_bytes = info.requested_bytes;
    r.session_id = info.session_id;
    r.allocated_at_ms = info.allocated_at_ms;
    r.request_hash = info.request_hash;
    r.next_free = 0;
    r.flags = kOwnerInUse | (info.detached ? kOwnerDetached : 0);
    Index(static_cast<uint32_t>(index), s);
  }
  // The header words once per batch (logged before the stores; the records
  // above are logged too, so a crash anywhere rolls all of it back).
  if (free_head != h->free_head) {
    Touch(&h->free_head);
    h->free_head = free_head;
  }
  if (carved != h->carved) {
    Touch(&h->carved);
    h->carved = carved;
  }
  Touch(&h->live);
  h->live += extents.size();
}

std::optional<OwnerInfo> OwnerStore::Remove(uint64_t offset) {
  if (Lookup(offset) < 0) return std::nullopt;
  std::optional<OwnerInfo> info = Find(offset);
  RemoveBatch(std::span<const uint64_t>(&offset, 1), [](uint64_t) {});
  return info;
}

void OwnerStore::RemoveBatch(
    std::span<const uint64_t> offsets,
    absl::FunctionRef<void(uint64_t size_bytes)> on_removed) {
  if (offsets.empty()) return;
  OwnerStoreHeader* h = header();
  OwnerRecord* rec = records();
  uint64_t free_head = h->free_head;
  SessionIndex* s = nullptr;
  uint64_t s_id = 0;
  for (uint64_t offset : offsets) {
    const int64_t found = Lookup(offset);
    SHMALLOC_CHECK(found >= 0)
        << "live offset " << offset << " has no owner record";
    const auto index = static_cast<uint32_t>(found);
    OwnerRecord& r = rec[index];
    if (s == nullptr || s_id != r.session_id) {
      s_id = r.session_id;
      auto it = sessions_.find(s_id);
      SHMALLOC_CHECK(it != sessions_.end()) << "owner index lost a session";
      s = &it->second;
    }
    Unindex(index, *s);
    if (s->share.live_allocations == 0) {  // its last record
      sessions_.erase(s_id);
      s = nullptr;
    }
    on_removed(r.size_bytes);
    // flags and next_free are adjacent and stored once per transaction.
    static_assert(offsetof(OwnerRecord, next_free) ==
                  offsetof(OwnerRecord, flags) + 8);
    if (log_ != nullptr) log_->LogFresh(&r.flags, 2);
    r.flags = 0;
    r.next_free = free_head;
    free_head = index + 1;
  }
  Touch(&h->free_head);
  h->free_head = free_head;
  Touch(&h->live);
  h->live -= offsets.size();
}

void OwnerStore::Adopt(std::span<const uint64_t> offsets, uint64_t session_id) {
  SHMALLOC_CHECK(session_id != 0) << "owner record without a session";
  OwnerRecord* rec = records();
  for (uint64_t offset : offsets) {
    const int64_t found = Lookup(offset);
    SHMALLOC_CHECK(found >= 0)
        << "adopted offset " << offset << " has no owner record";
    const auto index = static_cast<uint32_t>(found);
    OwnerRecord& r = rec[index];
    const uint64_t from_id = r.session_id;
    auto from = sessions_.find(from_id);
    SHMALLOC_CHECK(from != sessions_.end()) << "owner index lost a session";
    Unindex(index, from->second);
    if (from->second.share.live_allocations == 0 && from_id != session_id) {
      sessions_.erase(from);  // its last record
    }
    Touch(&r.session_id);
    r.session_id = session_id;
    if (r.request_hash != 0) {
      Touch(&r.request_hash);
      r.request_hash = 0;
    }
    Touch(&r.flags);
    r.flags = kOwnerInUse;
    // Looked up after the erase above: an insertion may rehash the map.
    Index(index, sessions_[session_id]);
  }
}

std::optional<OwnerInfo> OwnerStore::Find(uint64_t offset) const {
  const int64_t index = Lookup(offset);
  if (index < 0) return std::nullopt;
  return InfoOf(records()[index]);
}

std::vector<uint64_t> OwnerStore::OwnedBy(uint64_t session_id) const {
  std::vector<uint64_t> offsets;
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return offsets;
  offsets.reserve(it->second.share.owned_allocations);
  for (uint32_t i = it->second.owned_head; i != 0; i = links_[i - 1].next) {
    offsets.push_back(records()[i - 1].offset);
  }
  return offsets;
}

std::vector<uint64_t> OwnerStore::FindRequest(uint64_t session_id,
                                              uint64_t request_hash) const {
  std::vector<uint64_t> offsets;
  auto it = sessions_.find(session_id);
  if (it == sessions_.end() || request_hash == 0) return offsets;
  auto req = it->second.requests.find(request_hash);
  if (req == it->second.requests.end()) return offsets;
  for (uint32_t i = req->second.head; i != 0; i = links_[i - 1].req_next) {
    offsets.push_back(records()[i - 1].offset);
  }
  return offsets;
}

std::vector<std::pair<uint64_t, OwnerInfo>> OwnerStore::All() const {
  std::vector<std::pair<uint64_t, OwnerInfo>> all;
  all.reserve(live());
  const OwnerRecord* r = records();
  for (uint64_t i = 0, n = header()->carved; i < n; ++i) {
    if ((r[i].flags & kOwnerInUse) != 0)
      all.emplace_back(r[i].offset, InfoOf(r[i]));
  }
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return all;
}

SessionShare OwnerStore::Share(uint64_t session_id) const {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? SessionShare{} : it->second.share;
}

std::vector<std::pair<uint64_t, SessionShare>> OwnerStore::Shares() const {
  std::vector<std::pair<uint64_t, SessionShare>> shares;
  shares.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) shares.emplace_back(id, s.share);
  std::sort(shares.begin(), shares.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  return shares;
}

void OwnerStore::Clear() {
  OwnerStoreHeader* h = header();
  // Order: live first, so an interrupted Clear never leaves live > carved.
  h->live = 0;
  h->free_head = 0;
  h->carved = 0;
  by_offset_.clear();
  std::fill(dense_.begin(), dense_.end(), 0);
  links_.clear();
  sessions_.clear();
  owned_allocations_ = 0;
  owned_bytes_ = 0;
  recorded_bytes_ = 0;
}

}  // namespace shmalloc::server
