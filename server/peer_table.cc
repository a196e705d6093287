#include "server/peer_table.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace shmalloc::server {

void PeerTable::Record(int fd, const PeerCredentials& credentials) {
  absl::MutexLock lock(&mu_);
  by_fd_[fd] = credentials;
}

std::optional<PeerCredentials> PeerTable::Lookup(
    std::string_view grpc_peer) const {
  absl::string_view rest(grpc_peer.data(), grpc_peer.size());
  if (!absl::ConsumePrefix(&rest, "fd:")) {
    return std::nullopt;
  }
  grpc_peer = std::string_view(rest.data(), rest.size());
  int fd = -1;
  if (!absl::SimpleAtoi(absl::string_view(grpc_peer.data(), grpc_peer.size()),
                        &fd)) {
    return std::nullopt;
  }
  absl::MutexLock lock(&mu_);
  auto it = by_fd_.find(fd);
  if (it == by_fd_.end()) {
    return std::nullopt;
  }
  return it->second;
}

std::string PeerTable::Key(std::string_view grpc_peer,
                           int32_t declared_pid) const {
  if (std::optional<PeerCredentials> c = Lookup(grpc_peer)) {
    if (c->pid != 0) {
      return absl::StrCat("pid ", c->pid, " (uid ", c->uid, ")");
    }
    // A peer in a PID namespace the daemon cannot see (another container):
    // the kernel reports pid 0. Its uid is still the kernel's.
    return absl::StrCat("uid ", c->uid,
                        " outside the daemon's PID namespace, "
                        "declared pid ",
                        declared_pid);
  }
  return absl::StrCat("tcp pid ", declared_pid);
}

absl::Status PeerTable::AcquireSession(const std::string& key, uint32_t limit) {
  absl::MutexLock lock(&mu_);
  uint32_t& n = sessions_[key];
  if (n >= limit) {
    if (n == 0) {
      sessions_.erase(key);
    }
    return absl::ResourceExhaustedError(
        absl::StrCat(key, " already holds ", limit,
                     " sessions (limit max_sessions_per_peer = ", limit, ")"));
  }
  ++n;
  return absl::OkStatus();
}

void PeerTable::ReleaseSession(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) {
    return;
  }
  if (--it->second == 0) {
    sessions_.erase(it);
  }
}

uint32_t PeerTable::sessions(const std::string& key) const {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(key);
  return it == sessions_.end() ? 0 : it->second;
}

}  // namespace shmalloc::server
