#include "server/session_table.h"

#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"

namespace shmalloc::server {

SessionTable::SessionTable(uint32_t max_sessions)
    : max_sessions_(max_sessions) {
  absl::BitGen gen;
  // Random high 32 bits, counter in the low ones: never 0, unique per run.
  next_id_ = (absl::Uniform<uint64_t>(gen, 1, uint64_t{1} << 31) << 32) | 1;
}

absl::StatusOr<uint64_t> SessionTable::Open(std::string client_name) {
  if (client_name.size() > kMaxClientNameBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("client_name is ", client_name.size(), " bytes; at most ",
                     kMaxClientNameBytes));
  }
  absl::MutexLock lock(&mu_);
  if (sessions_.size() >= max_sessions_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the daemon already has ", sessions_.size(),
        " open sessions (limit max_sessions = ", max_sessions_, ")"));
  }
  const uint64_t id = next_id_++;
  sessions_.emplace(id, std::move(client_name));
  ++opened_total_;
  return id;
}

bool SessionTable::Close(uint64_t id) {
  absl::MutexLock lock(&mu_);
  return sessions_.erase(id) > 0;
}

bool SessionTable::IsOpen(uint64_t id) const {
  absl::ReaderMutexLock lock(&mu_);
  return sessions_.contains(id);
}

std::string SessionTable::ClientName(uint64_t id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = sessions_.find(id);
  return it == sessions_.end() ? std::string() : it->second;
}

std::vector<uint64_t> SessionTable::OpenIds() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<uint64_t> ids;
  ids.reserve(sessions_.size());
  for (const auto& [id, name] : sessions_) ids.push_back(id);
  return ids;
}

uint64_t SessionTable::open() const {
  absl::ReaderMutexLock lock(&mu_);
  return sessions_.size();
}

uint64_t SessionTable::opened_total() const {
  absl::ReaderMutexLock lock(&mu_);
  return opened_total_;
}

}  // namespace shmalloc::server
