// shmalloc::client::Client: a connection to shmallocd and the session it
// holds open.
//
// Connect() opens a gRPC channel (a Unix socket by default), waits for it
// within connect_timeout and opens the session stream (OpenSession) on a
// background thread. The session lives as long as the Client and every
// Region opened through it; when it ends (this process exits, is killed, or
// the last handle goes away) the daemon frees every non-detached allocation
// the session owns. Every RPC carries a deadline (rpc_timeout).
//
// Daemon restarts: when the session stream breaks while this process still
// holds the session (the daemon stopped, crashed or restarted), the session
// thread reconnects by itself with exponential backoff and jitter
// (ReconnectOptions) and resumes the session with its secret token; the
// daemon keeps an orphaned session and everything it owns for its grace
// period (Limits.session_grace_ms). The session keeps its id. States, as
// reported by connection_state() and ReconnectOptions::on_state_change:
//
//   CONNECTED --stream breaks--> RECONNECTING --resumed--> RESUMED
//                                     |  ^                    |
//                                     |  +----stream breaks---+
//                                     +--grace expired / gave up--> LOST
//
// While RECONNECTING, a call that needs the daemon waits for the session to
// come back (at most ReconnectOptions::call_wait) and then runs, or fails
// UNAVAILABLE. Allocate and Free carry a request id (random, one per
// logical call); one whose outcome was not learned (the connection broke
// after the request was sent, or its deadline passed) is sent again after
// the resume with the same id, and the daemon returns the first outcome:
// it is never applied twice. CreateRegion, DeleteRegion and ResetRegion are
// not resent (their outcome is then UNAVAILABLE: unknown). LOST is final:
// the daemon reclaimed the session (or the client gave up); every later
// call fails FAILED_PRECONDITION "session lost", and the library never
// opens a new session that would pretend to own the old allocations. Arena
// chunks and BlockCache blocks already held keep working throughout (their
// hot paths make no RPC); mapped memory stays valid.
//
// Errors: absl::Status with the daemon's code and message (see the status
// table in proto/shmalloc/v1/shmalloc.proto). A call that fails changes
// nothing. Besides the codes each method lists, every call that needs the
// daemon may return UNAVAILABLE (the daemon is unreachable and did not come
// back within ReconnectOptions::call_wait; outcome unknown for CreateRegion,
// DeleteRegion and ResetRegion) and FAILED_PRECONDITION "session lost" (the
// session is LOST: see above).
//
// Thread-safety: every method is thread-safe.
//
//   auto client = shmalloc::client::Client::Connect();
//   auto region = (*client)->OpenRegion("frames");
//   auto buf = (*region)->Allocate(1 << 20);
//   std::memset(buf->data(), 0, buf->size());
#ifndef CLIENT_INCLUDE_SHMALLOC_CLIENT_H_
#define CLIENT_INCLUDE_SHMALLOC_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "shmalloc/types.h"

namespace shmalloc::client {

namespace internal {
class Connection;  // the channel, stub and session (client/connection.h)
}  // namespace internal

class Region;

// Where the daemon listens when nothing says otherwise; the single place the
// client names it. It mirrors shmallocd's rule (server/unix_socket.h): the
// first of /run/shmalloc/shmalloc.sock, $XDG_RUNTIME_DIR/shmalloc.sock and
// /tmp/shmalloc-$UID/shmalloc.sock that is a socket, else the first.
// $SHMALLOC_SOCKET overrides it (see ConnectOptions).
inline constexpr char kDefaultSocketPath[] = "/run/shmalloc/shmalloc.sock";
inline constexpr char kSocketEnvVar[] = "SHMALLOC_SOCKET";
inline constexpr char kShmDirEnvVar[] = "SHMALLOC_SHM_DIR";

// The session's link to the daemon (see the state diagram above).
enum class ConnectionState : uint32_t {
  kConnected = 0,     // session open, first connection
  kReconnecting = 1,  // stream broke; reconnecting (calls wait)
  kResumed = 2,       // session resumed after a reconnect (same id)
  kLost = 3,          // final: the session is gone; calls fail
};

// Returns "CONNECTED", "RECONNECTING", "RESUMED" or "LOST".
std::string_view ConnectionStateName(ConnectionState state);

// How a Client rides through a daemon restart.
struct ReconnectOptions {
  // false: a broken stream is final (LOST) at once, as before resumption.
  bool enabled = true;
  // The wait before the first reconnect attempt; each failed attempt doubles
  // it up to max_backoff. Every wait is multiplied by a random factor in
  // [0.8, 1.2] (jitter), so clients of a restarted daemon do not return in
  // lock-step.
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Seconds(1);
  // How long after the stream broke the client stops trying: then LOST.
  absl::Duration give_up_after = absl::Minutes(5);
  // How long a call made while RECONNECTING (or whose RPC failed because the
  // connection broke) waits for the session to come back before it fails
  // UNAVAILABLE. Zero = rpc_timeout.
  absl::Duration call_wait = absl::ZeroDuration();
  // Called on every state change, in order, on the client's session thread
  // (never with a library lock held; connection_state() may be called from
  // it). Keep it short; it must not destroy the Client. The first call is
  // CONNECTED, before Connect returns.
  std::function<void(ConnectionState)> on_state_change{};
};

struct ConnectOptions {
  // The daemon: a socket path ("/run/x.sock"), a gRPC target ("unix:/x.sock",
  // "127.0.0.1:7070"), or "" for $SHMALLOC_SOCKET, else the default path
  // (see kDefaultSocketPath).
  std::string target{};
  // Free text shown in the daemon's stats and logs; "" = "<program>[pid]".
  std::string client_name{};
  // This process's view of the daemon's shm directory, used to find region
  // data files. "" = $SHMALLOC_SHM_DIR, else the directory the daemon
  // reports in the first SessionEvent. Set it when the daemon runs in a
  // container that mounts the directory elsewhere.
  std::string shm_dir{};
  // How long Connect waits for the channel and the session's first event.
  absl::Duration connect_timeout = absl::Seconds(5);
  // The deadline of every unary RPC.
  absl::Duration rpc_timeout = absl::Seconds(5);
  // Reconnection and session resumption after a daemon restart.
  ReconnectOptions reconnect{};
};

// Options of one daemon-side allocation (Client::Allocate, Region::Allocate).
struct AllocateOptions {
  uint64_t alignment = 0;  // power of two <= kMaxAlignment; 0 = 16
  // Owned by nobody: survives the session, freed only by Free or a forced
  // reset or delete. Use it for buffers handed to another process.
  bool detached = false;
};

// How Client::OpenRegion maps a data file.
struct RegionOptions {
  // Pre-fault every page (MAP_POPULATE): a first touch of a page costs
  // ~24 us on the reference machines. false maps lazily.
  bool populate = true;
};

class Client {
 public:
  // Connects to the daemon and opens a session. Returns UNAVAILABLE when the
  // daemon cannot be reached within options.connect_timeout,
  // DEADLINE_EXCEEDED when it does not open the session in time,
  // INVALID_ARGUMENT for a malformed target. Thread-safe.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      ConnectOptions options = {});

  // Ends the session once every Region opened through this Client is gone
  // too (they share it). Blocks until the session thread has stopped.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Returns the id the daemon gave this session (never 0).
  uint64_t session_id() const;
  // Returns the gRPC target in use ("unix:/run/shmalloc/shmalloc.sock").
  const std::string& target() const;
  // Returns this process's view of the daemon's shm directory.
  const std::string& shm_dir() const;
  // Returns OK while the session is CONNECTED or RESUMED; UNAVAILABLE while
  // RECONNECTING (with the last error); FAILED_PRECONDITION "session lost"
  // (with the reason) once LOST. Thread-safe.
  absl::Status SessionStatus() const;
  // Returns the session's link state now. Thread-safe.
  ConnectionState connection_state() const;

  // Creates a region (CreateRegion). ALREADY_EXISTS, INVALID_ARGUMENT,
  // RESOURCE_EXHAUSTED, UNAVAILABLE.
  absl::StatusOr<RegionInfo> CreateRegion(const CreateRegionOptions& options);
  // Describes one region (GetRegion). NOT_FOUND.
  absl::StatusOr<RegionInfo> GetRegion(std::string_view name);
  // Describes every region, ordered by name (ListRegions).
  absl::StatusOr<std::vector<RegionInfo>> ListRegions();
  // Removes a region and its files (DeleteRegion). FAILED_PRECONDITION when
  // it has live allocations and !force; NOT_FOUND. Processes that map it keep
  // their mapping.
  absl::Status DeleteRegion(std::string_view name, bool force = false);
  // Frees everything in a region and bumps its generation (ResetRegion);
  // returns the region as it is afterwards. FAILED_PRECONDITION when it has
  // live allocations and !force; NOT_FOUND.
  absl::StatusOr<RegionInfo> ResetRegion(std::string_view name,
                                         bool force = false);
  // Allocates `count` extents of `size` bytes in `region`, owned by this
  // session unless options.detached (Allocate). All or nothing. NOT_FOUND,
  // INVALID_ARGUMENT, RESOURCE_EXHAUSTED. On an ARENA region the daemon bumps
  // the shared cursor (the extents have no owner and are freed only by a
  // reset; an Arena does the same without an RPC). Prefer Region::Allocate,
  // which returns RAII handles; this is the raw call.
  absl::StatusOr<std::vector<Extent>> Allocate(std::string_view region,
                                               uint64_t size, uint32_t count,
                                               const AllocateOptions& options);
  // Frees live allocations of `region`, any session's (Free); returns the
  // bytes released. All or nothing. `generation`: the region generation the
  // offsets were allocated in (FAILED_PRECONDITION when the region was reset
  // since); 0 = unchecked. FAILED_PRECONDITION, INVALID_ARGUMENT, NOT_FOUND.
  // Resent with the same request id after an unknown outcome, so a Free is
  // applied at most once.
  absl::StatusOr<uint64_t> Free(std::string_view region,
                                std::span<const uint64_t> offsets,
                                uint64_t generation = 0);
  // Returns the figures of one region, or of all when `region` is ""
  // (GetStats). NOT_FOUND.
  absl::StatusOr<DaemonStats> GetStats(std::string_view region = "");

  // Maps region `name` read-write into this process. Returns NOT_FOUND when
  // the daemon does not know it or its data file is not in shm_dir(),
  // PERMISSION_DENIED when the file cannot be opened, DATA_LOSS when its
  // segment header is not valid (bad magic, layout version or size). The
  // Region shares this Client's session. Thread-safe.
  absl::StatusOr<std::shared_ptr<Region>> OpenRegion(
      std::string_view name, const RegionOptions& options = {});

  // For the CLI and the C API (client/rpc.h): the connection this Client
  // wraps. Opaque outside the library.
  const std::shared_ptr<internal::Connection>& connection() const {
    return connection_;
  }

 private:
  explicit Client(std::shared_ptr<internal::Connection> connection);

  std::shared_ptr<internal::Connection> connection_;
};

}  // namespace shmalloc::client

#endif  // CLIENT_INCLUDE_SHMALLOC_CLIENT_H_
