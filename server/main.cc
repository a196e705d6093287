// shmallocd: the shmalloc daemon. Flags override the config file; see
// server/config.h for every default and README.md for a walk-through.
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/log.h"
#include "server/config.h"
#include "server/daemon.h"
#include "server/process.h"
#include "server/unix_socket.h"

ABSL_FLAG(
    std::string, socket, "",
    "Unix socket path. Default: $SHMALLOC_SOCKET, else "
    "/run/shmalloc/shmalloc.sock if /run/shmalloc is usable, else "
    "$XDG_RUNTIME_DIR/shmalloc.sock, else /tmp/shmalloc-$UID/shmalloc.sock");
ABSL_FLAG(std::string, shm_dir, "",
          "Region files directory (default /dev/shm)");
ABSL_FLAG(std::string, huge_dir, "",
          "Directory for the data files of huge-page regions, on a hugetlbfs "
          "or a tmpfs mounted huge=always/within_size (created 02750 if "
          "absent; must be the daemon user's and not writable by others). "
          "Default: none (huge-page regions are refused)");
ABSL_FLAG(std::string, config, "",
          "Text-format DaemonConfig file (an empty file = no regions). "
          "Default: the installed shmallocd.textproto if present, else none");
ABSL_FLAG(std::vector<std::string>, listen, {},
          "Extra TCP addresses HOST:PORT, comma-separated; PORT alone means "
          "127.0.0.1:PORT. Default: none (Unix socket only)");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics over HTTP at HOST:PORT/metrics; PORT "
          "alone means 127.0.0.1:PORT. Default: off");
ABSL_FLAG(int, ready_fd, -1,
          "When serving, write one byte 'R' to this fd and close it");

namespace server = shmalloc::server;

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("shmallocd: shared-memory allocator daemon");
  absl::ParseCommandLine(argc, argv);
  server::BlockTerminationSignals();  // Before any thread exists.

  std::string config_path = absl::GetFlag(FLAGS_config);
  if (config_path.empty()) config_path = server::DefaultConfigPath();
  shmalloc::v1::DaemonConfig config;
  if (!config_path.empty()) {
    absl::StatusOr<shmalloc::v1::DaemonConfig> loaded =
        server::LoadConfigFile(config_path);
    if (!loaded.ok()) {
      SHMALLOC_LOG(Error) << loaded.status();
      return 2;
    }
    config = *std::move(loaded);
  }
  SHMALLOC_LOG(Info) << "config: "
                     << (config_path.empty() ? "none (no regions)"
                                             : config_path);
  server::FlagValues flags{
      absl::GetFlag(FLAGS_socket), absl::GetFlag(FLAGS_shm_dir),
      absl::GetFlag(FLAGS_listen), absl::GetFlag(FLAGS_metrics_listen),
      absl::GetFlag(FLAGS_huge_dir)};
  absl::StatusOr<server::DaemonOptions> options =
      server::ResolveOptions(config, flags, server::DefaultSocketPath);
  if (!options.ok()) {
    SHMALLOC_LOG(Error) << options.status();
    return 2;
  }

  absl::StatusOr<std::unique_ptr<server::Daemon>> daemon =
      server::Daemon::Start(*options);
  if (!daemon.ok()) {
    SHMALLOC_LOG(Error) << "cannot start: " << daemon.status();
    return 1;
  }
  if (const int fd = absl::GetFlag(FLAGS_ready_fd); fd >= 0) {
    if (absl::Status s = server::NotifyReady(fd); !s.ok()) {
      SHMALLOC_LOG(Warning) << s;
    }
  }
  const int signal = server::WaitForTerminationSignal();
  SHMALLOC_LOG(Info) << "signal " << signal << ": shutting down";
  (*daemon)->Shutdown(absl::Seconds(5));
  return 0;
}
