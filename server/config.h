// The daemon's configuration: a text-format shmalloc.v1.DaemonConfig file,
// overridden by command-line flags, resolved into DaemonOptions.
//
// Precedence for each setting: flag > config file > default.
//   socket   --socket, DaemonConfig.socket, else DefaultSocketPath()
//            (unix_socket.h: $SHMALLOC_SOCKET, /run/shmalloc/shmalloc.sock,
//            $XDG_RUNTIME_DIR/shmalloc.sock, /tmp/shmalloc-$UID/shmalloc.sock)
//   listen   --listen (comma-separated), DaemonConfig.listen, else none: TCP
//            only when asked. "PORT" and ":PORT" mean 127.0.0.1:PORT.
//   shm_dir  --shm_dir, DaemonConfig.shm_dir, else /dev/shm/shmalloc (the
//            daemon creates it, mode 02750, and refuses it when another
//            user owns it or it is writable by others: PrepareOwnDirectory)
//   huge_dir --huge_dir, DaemonConfig.huge_dir, else none (huge-page regions
//            are FAILED_PRECONDITION): a directory on a hugetlbfs or a
//            huge=always/within_size tmpfs, created (02750) and checked like
//            the default shm_dir (huge_pages.h)
//   metrics_listen  --metrics_listen, else none: /metrics (Prometheus) is
//            served only when asked. "PORT" and ":PORT" mean 127.0.0.1:PORT.
//   config   --config; unset: DefaultConfigPath() (the installed
//            deploy/shmallocd.textproto) when it exists, else no file (no
//            regions). An empty file is a valid config with no regions.
//
// Thread-safety: pure functions, thread-safe.
#ifndef SERVER_CONFIG_H_
#define SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::server {

// DaemonConfig.limits with every 0 replaced by its default.
struct ServerLimits {
  // Bytes per region: its heap, and at creation its data and meta files
  // together (the metadata counts: Region::Create).
  uint64_t max_region_bytes = uint64_t{64} << 30;
  uint32_t max_regions = 256;
  uint32_t max_batch = 65536;  // extents per Allocate, offsets per Free
  uint32_t max_sessions = 4096;
  // How long an orphaned session (its daemon stopped or died) waits to be
  // resumed before its allocations are reclaimed, from the daemon's start.
  uint32_t session_grace_ms = 30000;
  // Concurrent WatchStats streams (each costs a Stats per tick under the
  // region locks); one more is RESOURCE_EXHAUSTED.
  uint32_t max_watchers = 64;
  // Sessions one peer (a process, by SO_PEERCRED on the Unix socket) may
  // hold open at once; one more is RESOURCE_EXHAUSTED.
  uint32_t max_sessions_per_peer = 1024;
};

// Returns `limits` with defaults for the fields left 0.
ServerLimits ResolveLimits(const v1::Limits& limits);

// Parses text-format DaemonConfig; INVALID_ARGUMENT naming `origin`, the line
// and the column of the first error. Empty text is an empty config.
[[nodiscard]] absl::StatusOr<v1::DaemonConfig> ParseConfig(
    std::string_view text, std::string_view origin);

// Reads and parses the file at `path`. NOT_FOUND when it cannot be read;
// INVALID_ARGUMENT when it does not parse.
[[nodiscard]] absl::StatusOr<v1::DaemonConfig> LoadConfigFile(
    const std::string& path);

// Returns the config file used when --config is not given: the installed
// shmallocd.textproto (<sysconfdir>/shmalloc/, then /etc/shmalloc/) if one
// exists, else "" (no config file: no regions).
std::string DefaultConfigPath();

// Command-line values; empty = not given.
struct FlagValues {
  std::string socket;
  std::string shm_dir;
  std::vector<std::string> listen;
  std::string metrics_listen;
  std::string huge_dir;
};

// Everything the daemon needs to start.
struct DaemonOptions {
  std::string socket;               // Unix socket path
  std::vector<std::string> listen;  // TCP host:port, normalised
  std::string shm_dir;              // region files live here
  bool own_shm_dir = false;         // the default: create and check it
  std::string huge_dir;             // huge-page regions' data files; "" = none
  std::string metrics_listen;       // HTTP host:port for /metrics; "" = off
  ServerLimits limits;
  std::vector<v1::CreateRegionRequest> regions;  // created at start if absent
};

// Merges `flags` over `config` over the defaults (`default_socket` is called
// only when neither gives a socket). INVALID_ARGUMENT for a bad listen
// address, a region with a bad or duplicate name, or a region over the
// limits, or a bad metrics_listen address; the error from `default_socket`
// when it fails.
[[nodiscard]] absl::StatusOr<DaemonOptions> ResolveOptions(
    const v1::DaemonConfig& config, const FlagValues& flags,
    absl::FunctionRef<absl::StatusOr<std::string>()> default_socket);

// Returns host:port with "PORT" and ":PORT" completed to 127.0.0.1:PORT;
// INVALID_ARGUMENT when there is no valid port.
[[nodiscard]] absl::StatusOr<std::string> NormalizeListenAddress(
    std::string_view address);

}  // namespace shmalloc::server

#endif  // SERVER_CONFIG_H_
