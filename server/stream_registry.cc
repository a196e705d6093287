#include "server/stream_registry.h"

namespace shmalloc::server {

bool StreamRegistry::Add(StoppableStream* stream) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  streams_.insert(stream);
  return true;
}

void StreamRegistry::Remove(StoppableStream* stream) {
  absl::MutexLock lock(&mu_);
  streams_.erase(stream);
}

void StreamRegistry::StopAll() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  for (StoppableStream* stream : streams_) stream->Stop();
}

bool StreamRegistry::WaitEmpty(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto empty = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return streams_.empty();
  };
  return mu_.AwaitWithDeadline(absl::Condition(&empty), deadline);
}

size_t StreamRegistry::size() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

}  // namespace shmalloc::server
