// Process plumbing for shmallocd's main: termination signals and the
// readiness handshake. An OS seam: errno never leaks past it.
//
// Signals: BlockTerminationSignals() must run before any thread starts, so
// every thread (gRPC's included) inherits the mask and SIGTERM/SIGINT are
// only ever received by WaitForTerminationSignal's sigwait — no handler runs
// in a signal context.
//
// Thread-safety: call from main only.
#ifndef SERVER_PROCESS_H_
#define SERVER_PROCESS_H_

#include "absl/status/status.h"

namespace shmalloc::server {

// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread
// it starts later).
void BlockTerminationSignals();

// Waits for SIGTERM or SIGINT (blocked beforehand) and returns its number.
int WaitForTerminationSignal();

// Writes one byte 'R' to file descriptor `fd` and closes it: tells whoever
// started the daemon that it is serving. Returns INVALID_ARGUMENT for a
// negative fd, or the write error.
[[nodiscard]] absl::Status NotifyReady(int fd);

}  // namespace shmalloc::server

#endif  // SERVER_PROCESS_H_
