#include "client/connection.h"

#include <errno.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/shm_mapping.h"

namespace shmalloc::client::internal {
namespace {

// How often the session thread looks at its stream when no call is made
// (how soon a daemon that went away is noticed while the client is idle).
constexpr absl::Duration kSessionPoll = absl::Milliseconds(20);

std::string EnvOr(const char* name, std::string_view fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' ? std::string(value)
                                              : std::string(fallback);
}

// A per-thread generator seeded from the OS (several words, so threads do
// not share a stream).
std::mt19937_64& ThreadRng() {
  // On the heap: a 2.5 KB engine in TLS would push libshmalloc_c's static
  // TLS block (it has initial-exec variables) past what dlopen can place,
  // and Python's ctypes could not load the library.
  thread_local std::unique_ptr<std::mt19937_64> rng;
  if (rng == nullptr) {
    std::random_device rd;
    std::seed_seq seq{rd(), rd(), rd(), rd(), rd(), rd(), rd(), rd()};
    rng = std::make_unique<std::mt19937_64>(seq);
  }
  return *rng;
}

// Returns `d` times a random factor in [0.8, 1.2].
absl::Duration Jitter(absl::Duration d) {
  std::uniform_real_distribution<double> factor(0.8, 1.2);
  return d * factor(ThreadRng());
}

// A stream that ended before its first event with one of these will not
// accept the resume if asked again: the session is gone.
bool ResumeRefused(grpc::StatusCode code) {
  return code == grpc::StatusCode::NOT_FOUND ||
         code == grpc::StatusCode::PERMISSION_DENIED ||
         code == grpc::StatusCode::INVALID_ARGUMENT ||
         code == grpc::StatusCode::UNIMPLEMENTED;
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

std::string NewRequestId() {
  // Unique in this process by construction (a counter under a random
  // per-process mask), unpredictable by the random half.
  static const uint64_t kMask = [] {
    std::random_device rd;
    return (uint64_t{rd()} << 32) ^ rd();
  }();
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = counter.fetch_add(1, std::memory_order_relaxed) ^ kMask;
  const uint64_t r = ThreadRng()();
  return absl::StrCat(absl::Hex(r, absl::kZeroPad16),
                      absl::Hex(n, absl::kZeroPad16));
}

absl::StatusOr<std::shared_ptr<Connection>> Connection::Open(
    const ConnectOptions& options) {
  const ReconnectOptions& r = options.reconnect;
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.rpc_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ConnectOptions: connect_timeout and rpc_timeout must be positive");
  }
  if (r.initial_backoff <= absl::ZeroDuration() ||
      r.max_backoff < r.initial_backoff ||
      r.give_up_after <= absl::ZeroDuration() ||
      r.call_wait < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ReconnectOptions: need 0 < initial_backoff <= max_backoff, "
        "give_up_after > 0 and call_wait >= 0");
  }
  std::shared_ptr<Connection> c(new Connection());
  c->target_ = ResolveTarget(options.target);
  c->client_name_ =
      options.client_name.empty() ? DefaultClientName() : options.client_name;
  c->rpc_timeout_ = options.rpc_timeout;
  c->call_wait_ =
      r.call_wait == absl::ZeroDuration() ? options.rpc_timeout : r.call_wait;
  c->initial_backoff_ = r.initial_backoff;
  c->max_backoff_ = r.max_backoff;
  c->give_up_after_ = r.give_up_after;
  c->reconnect_ = r.enabled;
  c->on_state_change_ = r.on_state_change;
  c->initial_backoff_ms_ = static_cast<int>(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(r.initial_backoff)));
  c->max_backoff_ms_ = static_cast<int>(std::max<int64_t>(
      c->initial_backoff_ms_, absl::ToInt64Milliseconds(r.max_backoff)));
  std::shared_ptr<grpc::Channel> channel = c->NewChannel();
  if (channel == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad shmallocd target '", c->target_, "'"));
  }
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  if (!channel->WaitForConnected(absl::ToChronoTime(deadline))) {
    return absl::UnavailableError(
        absl::StrCat("cannot connect to shmallocd at ", c->target_, " within ",
                     absl::FormatDuration(options.connect_timeout),
                     ": is the daemon running? (set ", kSocketEnvVar,
                     " or ConnectOptions::target)"));
  }
  {
    absl::MutexLock lock(&c->mu_);
    c->stub_ = v1::Allocator::NewStub(channel);
    c->channel_ = std::move(channel);
    c->PublishLocked();
  }
  c->session_thread_ = std::thread([raw = c.get()] { raw->RunSession(); });

  absl::Status status;
  {
    absl::MutexLock lock(&c->mu_);
    auto settled = [raw = c.get()]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return raw->opened_ || raw->open_failed_;
    };
    c->mu_.AwaitWithDeadline(absl::Condition(&settled), deadline);
    if (!c->opened_) {
      status = c->open_failed_
                   ? c->open_status_
                   : absl::DeadlineExceededError(absl::StrCat(
                         "shmallocd at ", c->target_,
                         " did not open a session within ",
                         absl::FormatDuration(options.connect_timeout)));
    }
  }
  if (!status.ok()) return status;  // ~Connection cancels and joins
  c->shm_dir_ = !options.shm_dir.empty()
                    ? options.shm_dir
                    : EnvOr(kShmDirEnvVar, c->first_shm_dir_);
  if (c->shm_dir_.empty()) c->shm_dir_ = "/dev/shm";
  return c;
}

std::shared_ptr<grpc::Channel> Connection::NewChannel() const {
  // gRPC's own reconnect backoff (default 1 s .. 120 s) would hide a
  // restarted daemon from our attempts; keep it no slower than ours.
  // (GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is really the connect timeout; left
  // at its default so a slow handshake is not cut short.)
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, initial_backoff_ms_);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, max_backoff_ms_);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target_, grpc::InsecureChannelCredentials(),
                                   args);
}

Connection::~Connection() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    if (stream_context_ != nullptr) stream_context_->TryCancel();
  }
  if (session_thread_.joinable()) session_thread_.join();
}

absl::Status Connection::StatusLocked() const {
  switch (state_) {
    case ConnectionState::kConnected:
    case ConnectionState::kResumed:
      return absl::OkStatus();
    case ConnectionState::kReconnecting:
      return absl::UnavailableError(absl::StrCat(
          "session ", session_id_, " is reconnecting to shmallocd at ", target_,
          ": ", why_.message()));
    case ConnectionState::kLost:
      break;
  }
  return why_;
}

absl::Status Connection::session_status() const {
  absl::MutexLock lock(&mu_);
  return StatusLocked();
}

ConnectionState Connection::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

SessionSnapshot Connection::snapshot() const {
  absl::MutexLock lock(&mu_);
  return {.session_id = session_id_,
          .state = state_,
          .session_grace_ms = grace_ms_,
          .daemon_incarnation = daemon_incarnation_,
          .resumes = resumes_};
}

absl::Status Connection::AwaitLive(
    std::string_view method, absl::Time deadline, uint64_t* epoch,
    std::shared_ptr<v1::Allocator::Stub>* stub) const {
  absl::MutexLock lock(&mu_);
  auto settled = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return closing_ || state_ == ConnectionState::kLost || Live();
  };
  mu_.AwaitWithDeadline(absl::Condition(&settled), deadline);
  if (Live()) {
    *epoch = epoch_;
    *stub = stub_;
    return absl::OkStatus();
  }
  const absl::Status s = StatusLocked();
  if (state_ == ConnectionState::kReconnecting) {
    return absl::UnavailableError(
        absl::StrCat(std::string(method), ": ", s.message(), " (waited ",
                     absl::FormatDuration(call_wait_), ")"));
  }
  return absl::Status(s.code(),
                      absl::StrCat(std::string(method), ": ", s.message()));
}

void Connection::AwaitChange(uint64_t epoch, absl::Time until) const {
  absl::MutexLock lock(&mu_);
  auto changed = [this, epoch]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return closing_ || epoch_ != epoch || !Live();
  };
  mu_.AwaitWithDeadline(absl::Condition(&changed), until);
}

absl::Status Connection::Allocate(v1::AllocateRequest request,
                                  v1::AllocateResponse* response) {
  request.set_session_id(session_id_);
  // Set before opened_ (Open returns after it): never null here.
  request.set_session_token(*token_fast_.load(std::memory_order_acquire));
  if (request.request_id().empty()) request.set_request_id(NewRequestId());
  request.set_packed(true);  // read with ExtentsOf (proto_convert.h)
  return Call(&v1::Allocator::Stub::Allocate, "Allocate", request, response,
              Resend::kSafe);
}

absl::Status Connection::Free(v1::FreeRequest request,
                              v1::FreeResponse* response) {
  request.set_session_id(session_id_);
  // Set before opened_ (Open returns after it): never null here.
  request.set_session_token(*token_fast_.load(std::memory_order_acquire));
  if (request.request_id().empty()) request.set_request_id(NewRequestId());
  return Call(&v1::Allocator::Stub::Free, "Free", request, response,
              Resend::kSafe);
}

absl::Status Connection::Adopt(v1::AdoptRequest request,
                               v1::AdoptResponse* response) {
  request.set_session_id(session_id_);
  // Set before opened_ (Open returns after it): never null here.
  request.set_session_token(*token_fast_.load(std::memory_order_acquire));
  if (request.request_id().empty()) request.set_request_id(NewRequestId());
  return Call(&v1::Allocator::Stub::AdoptAllocations, "AdoptAllocations",
              request, response, Resend::kSafe);
}

void Connection::PublishLocked() {
  stub_fast_.store(stub_.get(), std::memory_order_release);
  epoch_fast_.store(epoch_, std::memory_order_release);
  live_fast_.store(Live(), std::memory_order_release);
}

void Connection::SetTokenLocked(const std::string& token) {
  session_token_ = token;
  tokens_.push_back(std::make_unique<const std::string>(token));
  token_fast_.store(tokens_.back().get(), std::memory_order_release);
}

void Connection::SetState(ConnectionState state, absl::Status why) {
  {
    absl::MutexLock lock(&mu_);
    state_ = state;
    why_ = std::move(why);
    PublishLocked();
  }
  if (on_state_change_) on_state_change_(state);
}

bool Connection::Pause(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithTimeout(absl::Condition(&closing_), d);
  return !closing_;
}

std::string Connection::Attach(const v1::SessionEvent& event, bool resume,
                               std::shared_ptr<grpc::Channel> channel,
                               std::shared_ptr<v1::Allocator::Stub> stub) {
  if (!resume) {
    if (event.session_id() == 0) return "shmallocd opened a session with id 0";
    session_id_ = event.session_id();
    first_shm_dir_ = event.shm_dir();
    {
      absl::MutexLock lock(&mu_);
      SetTokenLocked(event.session_token());
      grace_ms_ = event.session_grace_ms();
      daemon_incarnation_ = event.daemon_incarnation();
    }
    // Before opened_, so Connect returns after the observer saw CONNECTED.
    if (on_state_change_) on_state_change_(ConnectionState::kConnected);
    absl::MutexLock lock(&mu_);
    state_ = ConnectionState::kConnected;
    epoch_ = 1;
    opened_ = true;
    PublishLocked();
    return "";
  }
  if (event.session_id() != session_id_ || !event.resumed()) {
    // Never adopt another session: it would not own our allocations.
    return absl::StrCat("shmallocd answered the resume with session ",
                        event.session_id(),
                        event.resumed() ? " (resumed)" : " (new)");
  }
  // A daemon may rotate the token on resume; it is the one to use now.
  if (!event.session_token().empty()) {
    absl::MutexLock lock(&mu_);
    SetTokenLocked(event.session_token());
  }
  {
    absl::MutexLock lock(&mu_);
    retired_stubs_.push_back(std::move(stub_));
    stub_ = std::move(stub);
    channel_ = std::move(channel);
    state_ = ConnectionState::kResumed;
    why_ = absl::OkStatus();
    ++epoch_;
    ++resumes_;
    grace_ms_ = event.session_grace_ms();
    daemon_incarnation_ = event.daemon_incarnation();
    PublishLocked();
  }
  if (on_state_change_) on_state_change_(ConnectionState::kResumed);
  return "";
}

grpc::Status Connection::RunStream(bool resume, bool* attached,
                                   std::string* lost_reason) {
  grpc::ClientContext context;
  {
    absl::MutexLock lock(&mu_);
    if (closing_) return grpc::Status(grpc::StatusCode::CANCELLED, "closing");
    stream_context_ = &context;
  }
  v1::OpenSessionRequest request;
  request.set_client_name(client_name_);
  request.set_pid(getpid());
  if (resume) {
    absl::MutexLock lock(&mu_);
    request.set_resume_token(session_token_);
  }
  // The stream has a connection of its own: sharing the calls' one, the
  // daemon's CPU per unary call measured 2-4x that of a connection without
  // an open stream. A resume also gives the calls a fresh channel (see
  // NewChannel), installed by Attach.
  std::shared_ptr<grpc::Channel> stream_channel = NewChannel();
  std::unique_ptr<v1::Allocator::Stub> stream_stub =
      v1::Allocator::NewStub(stream_channel);
  std::shared_ptr<grpc::Channel> channel = resume ? NewChannel() : nullptr;
  std::shared_ptr<v1::Allocator::Stub> stub =
      resume ? std::shared_ptr<v1::Allocator::Stub>(
                   v1::Allocator::NewStub(channel))
             : nullptr;

  // The stream runs on a completion queue of its own that this thread
  // polls without blocking in gRPC once the session is attached: a thread
  // blocked in a synchronous Read would be the process's gRPC poller, and
  // every unary call's answer would then be read by it and handed over to
  // the caller (two thread switches per call, which measured 4x the raw
  // stub's latency). Between polls this thread sleeps; the callers' own
  // polling reads the stream's events meanwhile, and a poll every
  // kSessionPoll notices the end of the stream when nobody calls.
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::ClientAsyncReader<v1::SessionEvent>> reader =
      stream_stub->PrepareAsyncOpenSession(&context, request, &cq);
  bool open = false;  // attached: poll without blocking
  // Waits for the one operation in flight to complete; returns its ok.
  auto await = [&]() -> bool {
    void* tag = nullptr;
    bool ok = false;
    for (;;) {
      const absl::Duration wait = open ? absl::ZeroDuration() : kSessionPoll;
      const grpc::CompletionQueue::NextStatus next =
          cq.AsyncNext(&tag, &ok, absl::ToChronoTime(absl::Now() + wait));
      if (next == grpc::CompletionQueue::GOT_EVENT) return ok;
      if (next == grpc::CompletionQueue::SHUTDOWN) return false;
      absl::MutexLock lock(&mu_);
      if (closing_) {
        open = false;  // block in gRPC until the cancel completes
        continue;
      }
      if (open) mu_.AwaitWithTimeout(absl::Condition(&closing_), kSessionPoll);
    }
  };
  reader->StartCall(reinterpret_cast<void*>(1));
  v1::SessionEvent event;
  if (await()) {
    reader->Read(&event, reinterpret_cast<void*>(2));
    if (await()) {
      *lost_reason = Attach(event, resume, channel, stub);
      if (lost_reason->empty()) {
        *attached = true;
        open = true;
      } else {
        context.TryCancel();  // closes the stray session the daemon opened
      }
      do {
        reader->Read(&event, reinterpret_cast<void*>(2));
      } while (await());
    }
  }
  open = false;
  grpc::Status status;
  reader->Finish(&status, reinterpret_cast<void*>(3));
  await();
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
  absl::MutexLock lock(&mu_);
  stream_context_ = nullptr;
  return status;
}

void Connection::RunSession() {
  bool resume = false;
  absl::Time outage_start = absl::Now();
  absl::Duration backoff = initial_backoff_;
  for (;;) {
    bool attached = false;
    std::string lost_reason;
    const grpc::Status ended = RunStream(resume, &attached, &lost_reason);
    {
      absl::MutexLock lock(&mu_);
      if (closing_) return;  // a clean client-side close
      if (!opened_) {
        open_failed_ = true;
        open_status_ =
            !lost_reason.empty()
                ? absl::InternalError(lost_reason)
                : absl::UnavailableError(absl::StrCat(
                      "shmallocd at ", target_, " ended the session stream: ",
                      ended.ok() ? std::string("no session opened")
                                 : FromGrpc(ended, "OpenSession", target_)
                                       .ToString()));
        return;
      }
    }
    const std::string why =
        ended.ok() ? std::string("the daemon closed the stream")
                   : FromGrpc(ended, "OpenSession", target_).ToString();
    const std::string session = absl::StrCat("session ", session_id_);
    if (!lost_reason.empty()) {
      SetState(ConnectionState::kLost,
               absl::FailedPreconditionError(
                   absl::StrCat("session lost: ", session, ": ", lost_reason,
                                " (shmallocd at ", target_, ")")));
      return;
    }
    if (!reconnect_) {
      SetState(ConnectionState::kLost,
               absl::FailedPreconditionError(absl::StrCat(
                   "session lost: ", session,
                   ": the stream ended and reconnect is off: ", why)));
      return;
    }
    if (attached) {
      // The stream of a live session broke: the daemon stopped or died.
      outage_start = absl::Now();
      backoff = initial_backoff_;
      SetState(ConnectionState::kReconnecting, absl::UnavailableError(why));
    } else if (resume && ResumeRefused(ended.error_code())) {
      SetState(ConnectionState::kLost,
               absl::FailedPreconditionError(
                   absl::StrCat("session lost: ", session,
                                ": shmallocd refused to resume it (grace "
                                "period over or unknown session): ",
                                why)));
      return;
    } else {
      absl::MutexLock lock(&mu_);
      why_ = absl::UnavailableError(why);
    }
    if (absl::Now() - outage_start >= give_up_after_) {
      SetState(
          ConnectionState::kLost,
          absl::FailedPreconditionError(absl::StrCat(
              "session lost: ", session,
              ": gave up reconnecting to shmallocd at ", target_, " after ",
              absl::FormatDuration(give_up_after_), "; last error: ", why)));
      return;
    }
    if (!Pause(std::min(Jitter(backoff),
                        outage_start + give_up_after_ - absl::Now()))) {
      return;
    }
    backoff = std::min(backoff * 2, max_backoff_);
    resume = true;
  }
}

}  // namespace shmalloc::client::internal
