// Admits unary RPCs while the daemon serves and lets shutdown wait for the
// ones in flight: after Close(), Enter() refuses, and WaitIdle() returns once
// every admitted call has left. This is what "drain in-flight RPCs" means
// for shmallocd; gRPC's own Server::Shutdown would additionally wait for
// every idle client connection to go away.
//
// Invariant: in_flight == Enter() calls that returned true - Exit() calls.
// Thread-safety: thread-safe.
#ifndef SERVER_CALL_GATE_H_
#define SERVER_CALL_GATE_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace shmalloc::server {

class CallGate {
 public:
  // Admits one call; false once Close() ran (the caller must then refuse the
  // call, and not call Exit). Thread-safe.
  bool Enter();

  // Ends one admitted call. Thread-safe.
  void Exit();

  // Refuses every later Enter(). Thread-safe; idempotent.
  void Close();

  // Waits until no admitted call is in flight or `deadline` passes; returns
  // true when idle. Thread-safe.
  bool WaitIdle(absl::Time deadline);

 private:
  absl::Mutex mu_;
  uint64_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace shmalloc::server

#endif  // SERVER_CALL_GATE_H_
