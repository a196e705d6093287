#include "server/owner_store.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace shmalloc::server {

absl::StatusOr<OwnerStore> OwnerStore::Format(std::span<std::byte> area,
                                              UndoLog* log) {
  if (area.size() < Bytes(1) ||
      reinterpret_cast<uintptr_t>(area.data()) % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("an owner store needs an 8-byte aligned area of at least ",
                     Bytes(1), " bytes (got ", area.size(), ")"));
  }
  OwnerStore store(area, log);
  OwnerStoreHeader* h = store.header();
  std::memset(static_cast<void*>(h), 0, sizeof(*h));
  h->capacity = (area.size() - sizeof(OwnerStoreHeader)) / sizeof(OwnerRecord);
  h->magic = kOwnerStoreMagic;
  return store;
}

absl::StatusOr<OwnerStore> OwnerStore::Open(std::span<std::byte> area,
                                            UndoLog* log) {
  if (area.size() < Bytes(1) ||
      reinterpret_cast<uintptr_t>(area.data()) % 8 != 0) {
    return absl::DataLossError("owner store area is too small or misaligned");
  }
  OwnerStore store(area, log);
  const OwnerStoreHeader* h = store.header();
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
  store.by_offset_.reserve(h->live);
  uint64_t in_use = 0;
  for (uint64_t i = 0; i < h->carved; ++i) {
    if ((r[i].flags & kOwnerInUse) == 0) continue;
    if (on_chain[i]) {
      return absl::DataLossError(
          absl::StrCat("owner record ", i, " is in use and free"));
    }
    if (r[i].session_id == 0 || store.by_offset_.contains(r[i].offset)) {
      return absl::DataLossError(
          absl::StrCat("owner record ", i,
                       " has no session or a duplicate offset ", r[i].offset));
    }
    store.Index(static_cast<uint32_t>(i));
    ++in_use;
  }
  if (in_use != h->live) {
    return absl::DataLossError(absl::StrCat(
        "owner store has ", in_use, " records in use, header says ", h->live));
  }
  return store;
}

void OwnerStore::Index(uint32_t index) {
  const OwnerRecord& r = records()[index];
  by_offset_.emplace(r.offset, index);
  SessionIndex& s = sessions_[r.session_id];
  s.share.used_bytes += r.size_bytes;
  ++s.share.live_allocations;
  recorded_bytes_ += r.size_bytes;
  if ((r.flags & kOwnerDetached) == 0) {
    s.owned.emplace(r.offset, index);
    s.share.owned_bytes += r.size_bytes;
    ++s.share.owned_allocations;
    owned_bytes_ += r.size_bytes;
    ++owned_allocations_;
  }
  if (r.request_hash != 0) s.requests[r.request_hash].push_back(index);
}

void OwnerStore::Unindex(uint32_t index) {
  const OwnerRecord& r = records()[index];
  by_offset_.erase(r.offset);
  auto it = sessions_.find(r.session_id);
  SHMALLOC_CHECK(it != sessions_.end()) << "owner index lost a session";
  SessionIndex& s = it->second;
  s.share.used_bytes -= r.size_bytes;
  --s.share.live_allocations;
  recorded_bytes_ -= r.size_bytes;
  if ((r.flags & kOwnerDetached) == 0) {
    s.owned.erase(r.offset);
    s.share.owned_bytes -= r.size_bytes;
    --s.share.owned_allocations;
    owned_bytes_ -= r.size_bytes;
    --owned_allocations_;
  }
  if (r.request_hash != 0) {
    auto req = s.requests.find(r.request_hash);
    if (req != s.requests.end()) {
      auto& v = req->second;
      v.erase(std::remove(v.begin(), v.end(), index), v.end());
      if (v.empty()) s.requests.erase(req);
    }
  }
  if (s.share.live_allocations == 0) sessions_.erase(it);
}

void OwnerStore::Add(uint64_t offset, const OwnerInfo& info) {
  OwnerStoreHeader* h = header();
  SHMALLOC_CHECK(h->live < h->capacity) << "owner store full";
  SHMALLOC_CHECK(info.session_id != 0) << "owner record without a session";
  uint64_t index;
  if (h->free_head != 0) {
    index = h->free_head - 1;
    Touch(&h->free_head);
    h->free_head = records()[index].next_free;
  } else {
    index = h->carved;
    Touch(&h->carved);
    h->carved = index + 1;
  }
  OwnerRecord& r = records()[index];
  if (log_ != nullptr) log_->TouchRange(&r, sizeof(r));
  r.offset = offset;
  r.size_bytes = info.size_bytes;
  r.requested_bytes = info.requested_bytes;
  r.session_id = info.session_id;
  r.allocated_at_ms = info.allocated_at_ms;
  r.request_hash = info.request_hash;
  r.next_free = 0;
  r.flags = kOwnerInUse | (info.detached ? kOwnerDetached : 0);
  Touch(&h->live);
  ++h->live;
  Index(static_cast<uint32_t>(index));
}

std::optional<OwnerInfo> OwnerStore::Remove(uint64_t offset) {
  auto it = by_offset_.find(offset);
  if (it == by_offset_.end()) return std::nullopt;
  const uint32_t index = it->second;
  std::optional<OwnerInfo> info = Find(offset);
  Unindex(index);
  OwnerStoreHeader* h = header();
  OwnerRecord& r = records()[index];
  Touch(&r.flags);
  r.flags = 0;
  Touch(&r.next_free);
  r.next_free = h->free_head;
  Touch(&h->free_head);
  h->free_head = index + 1;
  Touch(&h->live);
  --h->live;
  return info;
}

std::optional<OwnerInfo> OwnerStore::Find(uint64_t offset) const {
  auto it = by_offset_.find(offset);
  if (it == by_offset_.end()) return std::nullopt;
  const OwnerRecord& r = records()[it->second];
  OwnerInfo info;
  info.session_id = r.session_id;
  info.size_bytes = r.size_bytes;
  info.requested_bytes = r.requested_bytes;
  info.allocated_at_ms = r.allocated_at_ms;
  info.request_hash = r.request_hash;
  info.detached = (r.flags & kOwnerDetached) != 0;
  return info;
}

std::vector<uint64_t> OwnerStore::OwnedBy(uint64_t session_id) const {
  std::vector<uint64_t> offsets;
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return offsets;
  offsets.reserve(it->second.owned.size());
  for (const auto& [offset, index] : it->second.owned)
    offsets.push_back(offset);
  return offsets;
}

std::vector<uint64_t> OwnerStore::FindRequest(uint64_t session_id,
                                              uint64_t request_hash) const {
  std::vector<uint64_t> offsets;
  auto it = sessions_.find(session_id);
  if (it == sessions_.end() || request_hash == 0) return offsets;
  auto req = it->second.requests.find(request_hash);
  if (req == it->second.requests.end()) return offsets;
  for (uint32_t index : req->second) offsets.push_back(records()[index].offset);
  return offsets;
}

std::vector<std::pair<uint64_t, OwnerInfo>> OwnerStore::All() const {
  std::vector<std::pair<uint64_t, OwnerInfo>> all;
  all.reserve(by_offset_.size());
  for (const auto& [offset, index] : by_offset_) {
    all.emplace_back(offset, *Find(offset));
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
  sessions_.clear();
  owned_allocations_ = 0;
  owned_bytes_ = 0;
  recorded_bytes_ = 0;
}

}  // namespace shmalloc::server
