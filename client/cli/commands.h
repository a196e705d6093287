// The subcommands of the `shmalloc` CLI. Each takes the parsed arguments
// (positional words after the command words, and its flags), writes its
// output to stdout and returns:
//   OK                    -> exit 0
//   a usage error         -> exit 2 (see UsageError)
//   any other status      -> exit 1 (the daemon's or the transport's)
//
// Thread-safety: each Run* is called once, from main.
#ifndef CLIENT_CLI_COMMANDS_H_
#define CLIENT_CLI_COMMANDS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/cli/args.h"
#include "shmalloc/client.h"

namespace shmalloc::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  // an RPC or connection failed
inline constexpr int kExitUsage = 2;  // bad command line

// Flags every command takes.
struct GlobalOptions {
  std::string socket;  // "" = $SHMALLOC_SOCKET, else the default socket
  absl::Duration timeout = absl::Seconds(5);  // connect and per-RPC deadline
};

// Returns an INVALID_ARGUMENT status marked as a usage error (exit 2).
absl::Status UsageError(absl::string_view message);
// Returns true for a status made by UsageError.
bool IsUsageError(const absl::Status& status);

// Connects with `global` as "shmalloc-cli[pid]" and opens a session.
absl::StatusOr<std::unique_ptr<client::Client>> Connect(
    const GlobalOptions& global);

// `positional` excludes the command words.
using CommandFn = absl::Status (*)(const std::vector<std::string>& positional,
                                   const Args& args,
                                   const GlobalOptions& global);

absl::Status RunRegionsList(const std::vector<std::string>& positional,
                            const Args& args, const GlobalOptions& global);
absl::Status RunRegionsCreate(const std::vector<std::string>& positional,
                              const Args& args, const GlobalOptions& global);
absl::Status RunRegionsDelete(const std::vector<std::string>& positional,
                              const Args& args, const GlobalOptions& global);
absl::Status RunRegionsReset(const std::vector<std::string>& positional,
                             const Args& args, const GlobalOptions& global);
absl::Status RunStats(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global);
// Also blocks SIGINT/SIGTERM in the calling thread: call it before any other
// thread starts (gRPC's included), so the signals reach its waiter.
absl::Status RunWatch(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global);
absl::Status RunAlloc(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global);
absl::Status RunFree(const std::vector<std::string>& positional,
                     const Args& args, const GlobalOptions& global);
absl::Status RunHealth(const std::vector<std::string>& positional,
                       const Args& args, const GlobalOptions& global);
// GetRegionMap drawn in the terminal, and as SVG with --svg.
absl::Status RunMap(const std::vector<std::string>& positional,
                    const Args& args, const GlobalOptions& global);
// ListAllocations, every page, grouped by client.
absl::Status RunLeaks(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global);
// GetStats sampled over a duration, written as an HTML report or JSON.
// Blocks SIGINT/SIGTERM like RunWatch (they end the sampling early).
absl::Status RunProfile(const std::vector<std::string>& positional,
                        const Args& args, const GlobalOptions& global);

}  // namespace shmalloc::cli

#endif  // CLIENT_CLI_COMMANDS_H_
