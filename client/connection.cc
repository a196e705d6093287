#include "client/connection.h"

#include <errno.h>
#include <unistd.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/shm_mapping.h"

namespace shmalloc::client::internal {
namespace {

std::string EnvOr(const char* name, std::string_view fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? std::string(value)
                                              : std::string(fallback);
}

std::string DefaultClientName() {
  return absl::StrCat(program_invocation_short_name, "[", getpid(), "]");
}

// The daemon's default-path rule (server/unix_socket.h), seen from outside:
// the first candidate that is a socket, else kDefaultSocketPath.
std::string DefaultSocket() {
  std::vector<std::string> candidates = {kDefaultSocketPath};
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && xdg[0]) {
    candidates.push_back(absl::StrCat(xdg, "/shmalloc.sock"));
  }
  candidates.push_back(
      absl::StrCat("/tmp/shmalloc-", getuid(), "/shmalloc.sock"));
  for (const std::string& c : candidates) {
    if (IsSocket(c)) return c;
  }
  return kDefaultSocketPath;
}

}  // namespace

std::string ResolveTarget(std::string_view target) {
  std::string t(target);
  if (t.empty()) t = EnvOr(kSocketEnvVar, "");
  if (t.empty()) t = DefaultSocket();
  // A path (absolute or relative with a slash) is a Unix socket; anything
  // else is already a gRPC target ("unix:...", "dns:...", "host:port").
  if (absl::StartsWith(t, "/") || absl::StartsWith(t, "./") ||
      absl::StartsWith(t, "../")) {
    return absl::StrCat("unix:", t);
  }
  return t;
}

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(
    const ConnectOptions& options) {
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.rpc_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ConnectOptions: connect_timeout and rpc_timeout must be positive");
  }
  std::shared_ptr<Connection> c(new Connection());
  c->target_ = ResolveTarget(options.target);
  c->client_name_ =
      options.client_name.empty() ? DefaultClientName() : options.client_name;
  c->rpc_timeout_ = options.rpc_timeout;
  c->channel_ =
      grpc::CreateChannel(c->target_, grpc::InsecureChannelCredentials());
  if (c->channel_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad shmallocd target '", c->target_, "'"));
  }
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  if (!c->channel_->WaitForConnected(absl::ToChronoTime(deadline))) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to shmallocd at ", c->target_, " within ",
                     absl::FormatDuration(options.connect_timeout),
                     ": is the daemon running? (set ", kSocketEnvVar,
                     " or ConnectOptions::target)"));
  }
  c->stub_ = v1::Allocator::NewStub(c->channel_);
  c->session_thread_ = std::thread([raw = c.get()] { raw->RunSession(); });

  v1::SessionEvent first;
  absl::Status status;
  {
    absl::MutexLock lock(&c->mu_);
    c->mu_.AwaitWithDeadline(absl::Condition(c.get(), &Connection::Settled),
                             deadline);
    if (c->first_event_) {
      first = c->first_;
    } else {
      status = c->ended_ ? c->end_status_
                         : absl::DeadlineExceededError(absl::StrCat(
                               "shmallocd at ", c->target_,
                               " did not open a session within ",
                               absl::FormatDuration(options.connect_timeout)));
    }
  }
  if (!status.ok()) return status;  // ~Connection cancels and joins
  if (first.session_id() == 0) {
    return absl::InternalError("shmallocd opened a session with id 0");
  }
  c->session_id_ = first.session_id();
  c->shm_dir_ = !options.shm_dir.empty()
                    ? options.shm_dir
                    : EnvOr(kShmDirEnvVar, first.shm_dir());
  if (c->shm_dir_.empty()) c->shm_dir_ = "/dev/shm";
  return c;
}

Connection::~Connection() {
  session_context_.TryCancel();
  if (session_thread_.joinable()) session_thread_.join();
}

absl::Status Connection::session_status() const {
  absl::MutexLock lock(&mu_);
  if (!ended_) return absl::OkStatus();
  return end_status_;
}

void Connection::RunSession() {
  v1::OpenSessionRequest request;
  request.set_client_name(client_name_);
  std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> reader =
      stub_->OpenSession(&session_context_, request);
  v1::SessionEvent event;
  bool first = true;
  while (reader->Read(&event)) {
    if (first) {
      absl::MutexLock lock(&mu_);
      first_ = event;
      first_event_ = true;
      first = false;
    }
  }
  const grpc::Status status = reader->Finish();
  absl::MutexLock lock(&mu_);
  ended_ = true;
  const std::string id =
      first_event_ ? absl::StrCat(first_.session_id()) : std::string("(none)");
  end_status_ = absl::UnavailableError(absl::StrCat(
      "session ", id, " with shmallocd at ", target_, " ended: ",
      status.ok() ? std::string("the daemon closed it")
                  : FromGrpc(status, "OpenSession", target_).ToString()));
}

}  // namespace shmalloc::client::internal
