#include "tests/integration/daemon_process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tests/testing/status_matchers.h"

#ifndef SHMALLOCD_PATH
#error "SHMALLOCD_PATH must name the shmallocd binary"
#endif

namespace shmalloc::testing {
namespace {

absl::Status ErrnoStatus(const char* what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status))
    return absl::StrCat("exit status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("wait status ", status);
}

// Waits for `pid` to exit until `deadline`, polling waitpid(WNOHANG) every
// millisecond. Returns its wait status, or nullopt at the deadline.
std::optional<int> WaitForExit(pid_t pid, absl::Time deadline) {
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (absl::Now() >= deadline) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(1));
  }
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

std::chrono::system_clock::time_point RpcDeadline() {
  return absl::ToChronoTime(absl::Now() + kRpcDeadline);
}

template <typename Response, typename Request, typename Method>
absl::StatusOr<Response> Call(Method method, v1::Allocator::Stub& stub,
                              const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(RpcDeadline());
  Response response;
  grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return ToAbsl(status);
  return response;
}

}  // namespace

absl::Status ToAbsl(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

DaemonProcess::DaemonProcess(DaemonOptions options)
    : options_(std::move(options)) {
  const char* base = getenv("TEST_TMPDIR");
  std::string templ = absl::StrCat(base != nullptr && *base ? base : "/tmp",
                                   "/shmalloc-it-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << templ << "): " << std::strerror(errno);
    return;
  }
  dir_ = templ;
  socket_path_ = dir_ + "/shmallocd.sock";
  shm_dir_ = dir_ + "/shm";
  config_path_ = dir_ + "/shmallocd.textproto";
  if (mkdir(shm_dir_.c_str(), 0700) != 0) {
    ADD_FAILURE() << "mkdir(" << shm_dir_ << "): " << std::strerror(errno);
  }
  std::ofstream config(config_path_);
  config << options_.config_text;
  if (!config) ADD_FAILURE() << "cannot write " << config_path_;
}

DaemonProcess::~DaemonProcess() {
  stub_.reset();
  channel_.reset();
  if (pid_ > 0) KillAndReap(pid_);
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

absl::Status DaemonProcess::Start() {
  if (pid_ > 0) return absl::FailedPreconditionError("already running");
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoStatus("pipe2");
  std::vector<std::string> args = {
      SHMALLOCD_PATH,
      "--socket=" + socket_path_,
      "--shm_dir=" + shm_dir_,
      "--config=" + config_path_,
      absl::StrCat("--ready_fd=", fds[1]),
  };
  args.insert(args.end(), options_.extra_flags.begin(),
              options_.extra_flags.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return ErrnoStatus("fork");
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only until exec. A test that dies
    // without its destructors (an ASan report, a crash) must not leave its
    // daemon running: it would hold the test's output pipe open and ctest
    // would wait for it. (Daemons are started from the test's main thread,
    // whose exit is what the signal follows.)
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    // The write end of the pipe must survive exec; the read end must not.
    fcntl(fds[1], F_SETFD, 0);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);

  const absl::Time deadline = absl::Now() + kStartDeadline;
  absl::Status result = absl::OkStatus();
  for (;;) {
    const int wait_ms = static_cast<int>(std::max<int64_t>(
        0, absl::ToInt64Milliseconds(deadline - absl::Now())));
    pollfd p = {fds[0], POLLIN, 0};
    int r = poll(&p, 1, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      result = ErrnoStatus("poll");
      KillAndReap(pid);
      break;
    }
    if (r == 0) {
      KillAndReap(pid);
      result = absl::DeadlineExceededError(absl::StrCat(
          "shmallocd not ready after ", absl::FormatDuration(kStartDeadline)));
      break;
    }
    char byte;
    ssize_t n = read(fds[0], &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n == 1) break;  // Ready.
    // EOF (or error) before the readiness byte: the daemon failed to start.
    std::optional<int> status =
        WaitForExit(pid, absl::Now() + absl::Seconds(5));
    if (!status) KillAndReap(pid);
    result = absl::InternalError(absl::StrCat(
        "shmallocd closed --ready_fd without writing: ",
        status ? DescribeWaitStatus(*status) : "still running, killed"));
    break;
  }
  close(fds[0]);
  if (result.ok()) pid_ = pid;
  return result;
}

absl::Status DaemonProcess::Stop(absl::Duration deadline) {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  stub_.reset();
  channel_.reset();
  const pid_t pid = std::exchange(pid_, -1);
  if (kill(pid, SIGTERM) != 0) return ErrnoStatus("kill(SIGTERM)");
  std::optional<int> status = WaitForExit(pid, absl::Now() + deadline);
  if (!status) {
    KillAndReap(pid);
    return absl::DeadlineExceededError(
        absl::StrCat("shmallocd did not exit within ",
                     absl::FormatDuration(deadline), " of SIGTERM"));
  }
  if (!WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return absl::InternalError(
        absl::StrCat("shmallocd after SIGTERM: ", DescribeWaitStatus(*status)));
  }
  return absl::OkStatus();
}

absl::Status DaemonProcess::Restart() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) return stopped;
  return Start();
}

absl::Status DaemonProcess::Kill() {
  if (pid_ <= 0) return absl::FailedPreconditionError("not running");
  stub_.reset();
  channel_.reset();
  const pid_t pid = std::exchange(pid_, -1);
  if (kill(pid, SIGKILL) != 0) return ErrnoStatus("kill(SIGKILL)");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoStatus("waitpid");
  }
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
    return absl::InternalError(
        absl::StrCat("shmallocd after SIGKILL: ", DescribeWaitStatus(status)));
  }
  return absl::OkStatus();
}

std::string DaemonProcess::RegionFile(const std::string& name,
                                      const std::string& suffix) const {
  return absl::StrCat(shm_dir_, "/shmalloc-", name, suffix);
}

std::vector<std::string> DaemonProcess::ShmDirFiles() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(shm_dir_, ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::shared_ptr<grpc::Channel> DaemonProcess::NewChannel() const {
  static std::atomic<int> next_id{0};
  grpc::ChannelArguments args;
  // A distinct argument keeps channels from sharing one subchannel (and so
  // one connection).
  args.SetInt("shmalloc.test.channel_id",
              next_id.fetch_add(1, std::memory_order_relaxed));
  return grpc::CreateCustomChannel(target(), grpc::InsecureChannelCredentials(),
                                   args);
}

std::shared_ptr<grpc::Channel> DaemonProcess::channel() {
  if (channel_ == nullptr) channel_ = NewChannel();
  return channel_;
}

v1::Allocator::Stub& DaemonProcess::stub() {
  if (stub_ == nullptr) stub_ = v1::Allocator::NewStub(channel());
  return *stub_;
}

absl::StatusOr<std::unique_ptr<Session>> Session::Open(
    v1::Allocator::Stub& stub, const std::string& client_name) {
  v1::OpenSessionRequest request;
  request.set_client_name(client_name);
  request.set_pid(static_cast<int32_t>(getpid()));
  return OpenImpl(stub, request);
}

absl::StatusOr<std::unique_ptr<Session>> Session::Resume(
    v1::Allocator::Stub& stub, const std::string& token) {
  v1::OpenSessionRequest request;
  request.set_resume_token(token);
  return OpenImpl(stub, request);
}

absl::StatusOr<std::unique_ptr<Session>> Session::OpenImpl(
    v1::Allocator::Stub& stub, const v1::OpenSessionRequest& request) {
  std::unique_ptr<Session> session(new Session());
  session->reader_ = stub.OpenSession(&session->context_, request);
  if (!session->reader_->Read(&session->first_event_)) {
    session->closed_ = true;
    grpc::Status status = session->reader_->Finish();
    if (status.ok()) {
      return absl::InternalError("OpenSession ended without an event");
    }
    return ToAbsl(status);
  }
  if (session->id() == 0) {
    return absl::InternalError("OpenSession's first event has session_id 0");
  }
  return session;
}

void Session::Close() {
  if (closed_ || reader_ == nullptr) return;
  closed_ = true;
  context_.TryCancel();
  (void)reader_->Finish();
}

absl::StatusOr<v1::Region> CreateRegion(
    v1::Allocator::Stub& stub, const v1::CreateRegionRequest& request) {
  return Call<v1::Region>(&v1::Allocator::Stub::CreateRegion, stub, request);
}

absl::StatusOr<v1::Region> CreateRegion(v1::Allocator::Stub& stub,
                                        const std::string& name,
                                        v1::Strategy strategy,
                                        uint64_t size_bytes) {
  v1::CreateRegionRequest request;
  request.set_name(name);
  request.set_strategy(strategy);
  request.set_size_bytes(size_bytes);
  if (strategy == v1::STRATEGY_POOL) request.set_block_size(64);
  return CreateRegion(stub, request);
}

absl::StatusOr<v1::Region> GetRegion(v1::Allocator::Stub& stub,
                                     const std::string& name) {
  v1::GetRegionRequest request;
  request.set_name(name);
  return Call<v1::Region>(&v1::Allocator::Stub::GetRegion, stub, request);
}

absl::StatusOr<v1::ListRegionsResponse> ListRegions(v1::Allocator::Stub& stub) {
  return Call<v1::ListRegionsResponse>(&v1::Allocator::Stub::ListRegions, stub,
                                       v1::ListRegionsRequest());
}

absl::Status DeleteRegion(v1::Allocator::Stub& stub, const std::string& name,
                          bool force) {
  v1::DeleteRegionRequest request;
  request.set_name(name);
  request.set_force(force);
  return Call<v1::DeleteRegionResponse>(&v1::Allocator::Stub::DeleteRegion,
                                        stub, request)
      .status();
}

absl::StatusOr<v1::Region> ResetRegion(v1::Allocator::Stub& stub,
                                       const std::string& name, bool force) {
  v1::ResetRegionRequest request;
  request.set_name(name);
  request.set_force(force);
  return Call<v1::Region>(&v1::Allocator::Stub::ResetRegion, stub, request);
}

absl::StatusOr<v1::AllocateResponse> Allocate(
    v1::Allocator::Stub& stub, const v1::AllocateRequest& request) {
  return Call<v1::AllocateResponse>(&v1::Allocator::Stub::Allocate, stub,
                                    request);
}

absl::StatusOr<v1::AllocateResponse> Allocate(v1::Allocator::Stub& stub,
                                              const Session& session,
                                              const std::string& region,
                                              uint64_t size_bytes,
                                              uint32_t count, bool detached) {
  v1::AllocateRequest request;
  request.set_session_id(session.id());
  request.set_session_token(session.token());
  request.set_region(region);
  request.set_size_bytes(size_bytes);
  request.set_count(count);
  request.set_detached(detached);
  return Allocate(stub, request);
}

absl::StatusOr<v1::FreeResponse> Free(v1::Allocator::Stub& stub,
                                      const v1::FreeRequest& request) {
  return Call<v1::FreeResponse>(&v1::Allocator::Stub::Free, stub, request);
}

absl::StatusOr<v1::FreeResponse> Free(v1::Allocator::Stub& stub,
                                      const Session& session,
                                      const std::string& region,
                                      const std::vector<uint64_t>& offsets) {
  v1::FreeRequest request;
  request.set_session_id(session.id());
  request.set_session_token(session.token());
  request.set_region(region);
  for (uint64_t offset : offsets) request.add_offsets(offset);
  return Free(stub, request);
}

absl::StatusOr<v1::Stats> GetStats(v1::Allocator::Stub& stub,
                                   const std::string& region) {
  v1::GetStatsRequest request;
  request.set_region(region);
  return Call<v1::Stats>(&v1::Allocator::Stub::GetStats, stub, request);
}

absl::StatusOr<v1::RegionStats> GetRegionStats(v1::Allocator::Stub& stub,
                                               const std::string& region) {
  absl::StatusOr<v1::Stats> stats = GetStats(stub, region);
  if (!stats.ok()) return stats.status();
  for (const v1::RegionStats& r : stats->regions()) {
    if (r.name() == region) return r;
  }
  return absl::InternalError(
      absl::StrCat("GetStats(", region, ") has no such region"));
}

PollResult PollStats(v1::Allocator::Stub& stub,
                     const std::function<bool(const v1::Stats&)>& done,
                     absl::Duration deadline, absl::Duration poll) {
  PollResult result;
  const absl::Time start = absl::Now();
  for (;;) {
    absl::StatusOr<v1::Stats> stats = GetStats(stub);
    if (stats.ok()) {
      result.stats = *std::move(stats);
      if (done(result.stats)) {
        result.done = true;
        break;
      }
    }
    if (absl::Now() - start >= deadline) break;
    absl::SleepFor(poll);
  }
  result.waited = absl::Now() - start;
  return result;
}

std::vector<uint64_t> Offsets(const v1::AllocateResponse& response) {
  std::vector<uint64_t> offsets;
  for (const v1::Extent& e : response.extents()) offsets.push_back(e.offset());
  return offsets;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Map(
    const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return ErrnoStatus(("open " + path).c_str());
  struct stat st;
  if (fstat(fd, &st) != 0) {
    absl::Status s = ErrnoStatus("fstat");
    close(fd);
    return s;
  }
  void* p = mmap(nullptr, static_cast<size_t>(st.st_size),
                 PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  absl::Status s = p == MAP_FAILED ? ErrnoStatus("mmap") : absl::OkStatus();
  close(fd);
  if (!s.ok()) return s;
  return std::unique_ptr<MappedFile>(new MappedFile(
      static_cast<std::byte*>(p), static_cast<size_t>(st.st_size)));
}

MappedFile::~MappedFile() { munmap(data_, size_); }

void DaemonTest::SetUp() {
  daemon_ = std::make_unique<DaemonProcess>(Options());
  SHMALLOC_ASSERT_OK(daemon_->Start());
}

void DaemonTest::TearDown() {
  if (daemon_ != nullptr && daemon_->running()) {
    SHMALLOC_EXPECT_OK(daemon_->Stop());
  }
}

}  // namespace shmalloc::testing
