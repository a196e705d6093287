// The open server streams (OpenSession, WatchStats), so shutdown can end
// them: a stream never ends by itself, and Server::Shutdown would otherwise
// wait out its whole deadline and then cancel them.
//
// Lock order: the registry's mutex, then a stream's own mutex. Stop() is
// called with the registry's mutex held, so it must not call Add or Remove;
// a stream calls Remove from its OnDone, which gRPC never runs inline from
// Finish for a write reactor, so that is safe.
//
// Thread-safety: thread-safe.
#ifndef SERVER_STREAM_REGISTRY_H_
#define SERVER_STREAM_REGISTRY_H_

#include <cstddef>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace shmalloc::server {

// A server stream that can be asked to finish.
class StoppableStream {
 public:
  virtual ~StoppableStream() = default;
  // Asks the stream to finish with OK soon. Must not block on the registry.
  virtual void Stop() = 0;
};

class StreamRegistry {
 public:
  // Registers `stream`; returns false (not registered) once StopAll ran.
  // Thread-safe.
  bool Add(StoppableStream* stream);

  // Unregisters `stream` (no-op when absent). Thread-safe.
  void Remove(StoppableStream* stream);

  // Refuses new streams and calls Stop() on every registered one.
  // Thread-safe.
  void StopAll();

  // Waits until no stream is registered or `deadline` passes; returns
  // true when empty. Thread-safe.
  bool WaitEmpty(absl::Time deadline);

  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_set<StoppableStream*> streams_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace shmalloc::server

#endif  // SERVER_STREAM_REGISTRY_H_
