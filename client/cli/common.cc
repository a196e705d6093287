// Helpers shared by the subcommands (declared in commands.h).
#include <unistd.h>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"

namespace shmalloc::cli {
namespace {
constexpr char kUsagePayload[] = "shmalloc.cli/usage";
}  // namespace

absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

absl::StatusOr<std::unique_ptr<client::Client>> Connect(
    const GlobalOptions& global) {
  client::ConnectOptions options;
  options.target = global.socket;
  options.client_name = absl::StrCat("shmalloc-cli[", getpid(), "]");
  options.connect_timeout = global.timeout;
  options.rpc_timeout = global.timeout;
  return client::Client::Connect(options);
}

}  // namespace shmalloc::cli
