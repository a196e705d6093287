#include "server/owner_table.h"

#include "common/log.h"

namespace shmalloc::server {

void OwnerTable::Add(uint64_t offset, const Owner& owner) {
  SHMALLOC_CHECK(owner.session_id != 0) << "offset " << offset;
  const bool inserted = owners_.emplace(offset, owner).second;
  SHMALLOC_CHECK(inserted) << "offset " << offset << " already has an owner";
  SessionEntry& entry = sessions_[owner.session_id];
  entry.offsets.insert(offset);
  entry.share.used_bytes += owner.size_bytes;
  entry.share.requested_bytes += owner.requested_bytes;
  ++entry.share.live_allocations;
  owned_bytes_ += owner.size_bytes;
}

std::optional<Owner> OwnerTable::Remove(uint64_t offset) {
  auto it = owners_.find(offset);
  if (it == owners_.end()) return std::nullopt;
  const Owner owner = it->second;
  owners_.erase(it);
  auto session = sessions_.find(owner.session_id);
  SHMALLOC_CHECK(session != sessions_.end())
      << "owner table lost session " << owner.session_id;
  SessionEntry& entry = session->second;
  entry.offsets.erase(offset);
  entry.share.used_bytes -= owner.size_bytes;
  entry.share.requested_bytes -= owner.requested_bytes;
  --entry.share.live_allocations;
  if (entry.offsets.empty()) sessions_.erase(session);
  owned_bytes_ -= owner.size_bytes;
  return owner;
}

std::vector<std::pair<uint64_t, Owner>> OwnerTable::TakeSession(
    uint64_t session_id) {
  std::vector<std::pair<uint64_t, Owner>> taken;
  auto session = sessions_.find(session_id);
  if (session == sessions_.end()) return taken;
  taken.reserve(session->second.offsets.size());
  for (uint64_t offset : session->second.offsets) {
    auto it = owners_.find(offset);
    SHMALLOC_CHECK(it != owners_.end()) << "offset " << offset;
    taken.emplace_back(offset, it->second);
    owned_bytes_ -= it->second.size_bytes;
    owners_.erase(it);
  }
  sessions_.erase(session);
  return taken;
}

SessionShare OwnerTable::Share(uint64_t session_id) const {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? SessionShare{} : it->second.share;
}

std::vector<std::pair<uint64_t, SessionShare>> OwnerTable::Shares() const {
  std::vector<std::pair<uint64_t, SessionShare>> shares;
  shares.reserve(sessions_.size());
  for (const auto& [id, entry] : sessions_)
    shares.emplace_back(id, entry.share);
  return shares;
}

void OwnerTable::Clear() {
  owners_.clear();
  sessions_.clear();
  owned_bytes_ = 0;
}

}  // namespace shmalloc::server
