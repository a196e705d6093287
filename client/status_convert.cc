#include "client/status_convert.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace shmalloc::client::internal {

absl::Status FromGrpc(const grpc::Status& status, std::string_view method,
                      std::string_view target) {
  if (status.ok()) return absl::OkStatus();
  const auto code = static_cast<absl::StatusCode>(status.error_code());
  std::string message =
      absl::StrCat(std::string(method), ": ", status.error_message());
  if (code == absl::StatusCode::kUnavailable ||
      code == absl::StatusCode::kDeadlineExceeded) {
    absl::StrAppend(&message, " (shmallocd at ", std::string(target), ")");
  }
  return absl::Status(code, message);
}

}  // namespace shmalloc::client::internal
