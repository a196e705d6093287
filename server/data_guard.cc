#include "server/data_guard.h"

#include <setjmp.h>
#include <signal.h>

#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace shmalloc::server {
namespace {

// strerror, thread-safe (the GNU strerror_r returns the text).
std::string ErrnoText(int error) {
  char buffer[128];
  return strerror_r(error, buffer, sizeof(buffer));
}

// The innermost guarded access of this thread, or null. initial-exec: read
// from the signal handler, which must not allocate TLS lazily.
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf* t_guard =
    nullptr;

struct sigaction g_previous;  // the SIGBUS disposition before ours
std::atomic<uint64_t> g_faults{0};
std::once_flag g_install_once;

void OnSigbus(int sig, siginfo_t* info, void* context) {
  if (sigjmp_buf* env = t_guard) {
    g_faults.fetch_add(1, std::memory_order_relaxed);
    siglongjmp(*env, 1);
  }
  // Not a guarded access: behave as if we had never been installed.
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 &&
      g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if ((g_previous.sa_flags & SA_SIGINFO) == 0 &&
      g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: returning re-executes the faulting instruction, which
  // faults again with the default disposition and ends the process.
  signal(SIGBUS, SIG_DFL);
}

void Install() {
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_sigaction = OnSigbus;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  if (sigaction(SIGBUS, &action, &g_previous) != 0) {
    SHMALLOC_LOG(Error) << "cannot install the SIGBUS handler: "
                        << ErrnoText(errno);
  }
}

void UnblockSigbus() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGBUS);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

}  // namespace

bool GuardSigbus(absl::FunctionRef<void()> access) {
  std::call_once(g_install_once, Install);
  sigjmp_buf env;
  sigjmp_buf* const outer = t_guard;
  // savemask 0: no system call on the common path. The handler runs with
  // SIGBUS blocked, so the fault path unblocks it again.
  if (sigsetjmp(env, 0) != 0) {
    t_guard = outer;
    UnblockSigbus();
    return false;
  }
  t_guard = &env;
  access();
  t_guard = outer;
  return true;
}

uint64_t GuardedSigbusCount() {
  return g_faults.load(std::memory_order_relaxed);
}

DataFileWatch::DataFileWatch(const MappedFile* file, uint64_t expected_size)
    : file_(file), expected_size_(expected_size) {}

absl::Status DataFileWatch::Damage(std::string reason) {
  absl::MutexLock lock(&mu_);
  if (!damaged_.load(std::memory_order_relaxed)) {
    SHMALLOC_LOG(Error) << reason;
    reason_ = std::move(reason);
    damaged_.store(true, std::memory_order_release);
  }
  return absl::DataLossError(reason_);
}

std::string DataFileWatch::reason() const {
  absl::MutexLock lock(&mu_);
  return reason_;
}

absl::Status DataFileWatch::Check() {
  if (damaged()) {
    return absl::DataLossError(reason());
  }
  absl::StatusOr<uint64_t> size = file_->CurrentSize();
  if (!size.ok()) {
    return Damage(absl::StrCat("cannot check ", file_->path(), ": ",
                               size.status().message()));
  }
  if (*size != expected_size_) {
    return Damage(absl::StrCat(
        file_->path(), " has ", *size, " bytes, the region's geometry says ",
        expected_size_, ": it was ",
        *size < expected_size_ ? "truncated" : "grown",
        " by a process that maps it; the region is DAMAGED (delete it, or "
        "reset it with force to create it again)"));
  }
  return absl::OkStatus();
}

absl::Status DataFileWatch::Guard(absl::FunctionRef<void()> access) {
  if (absl::Status s = Check(); !s.ok()) {
    return s;
  }
  if (GuardSigbus(access)) {
    return absl::OkStatus();
  }
  return Damage(absl::StrCat("SIGBUS touching ", file_->path(),
                             " (truncated under the daemon); the region is "
                             "DAMAGED (delete it, or reset it with force)"));
}

GuardedAllocator::GuardedAllocator(std::unique_ptr<OffsetAllocator> inner,
                                   DataFileWatch* watch)
    : inner_(std::move(inner)), watch_(watch) {}

// Each call below keeps the result in this frame and assigns it from inside
// the guarded lambda only after the inner call returned, so an abandoned
// call leaves nothing half-built here (see GuardSigbus).

absl::StatusOr<Extent> GuardedAllocator::Allocate(uint64_t size,
                                                  uint64_t alignment) {
  absl::StatusOr<Extent> result = absl::UnknownError("not run");
  if (absl::Status s =
          watch_->Guard([&] { result = inner_->Allocate(size, alignment); });
      !s.ok()) {
    return s;
  }
  return result;
}

absl::Status GuardedAllocator::Free(uint64_t offset) {
  absl::Status result;
  if (absl::Status s = watch_->Guard([&] { result = inner_->Free(offset); });
      !s.ok()) {
    return s;
  }
  return result;
}

absl::StatusOr<uint64_t> GuardedAllocator::SizeOf(uint64_t offset) const {
  absl::StatusOr<uint64_t> result = absl::UnknownError("not run");
  if (absl::Status s = watch_->Guard([&] { result = inner_->SizeOf(offset); });
      !s.ok()) {
    return s;
  }
  return result;
}

void GuardedAllocator::Reset() {
  (void)watch_->Guard([&] { inner_->Reset(); });
}

AllocatorStats GuardedAllocator::Stats() const {
  AllocatorStats stats;
  if (watch_->Guard([&] { stats = inner_->Stats(); }).ok()) {
    return stats;
  }
  // A damaged file reads as a full region (consistent figures, nothing to
  // hand out).
  stats = AllocatorStats{};
  stats.capacity_bytes = inner_->end() - inner_->begin();
  stats.used_bytes = stats.capacity_bytes;
  stats.requested_bytes = stats.capacity_bytes;
  stats.peak_used_bytes = stats.capacity_bytes;
  return stats;
}

absl::Status GuardedAllocator::CheckInvariants() const {
  absl::Status result;
  if (absl::Status s =
          watch_->Guard([&] { result = inner_->CheckInvariants(); });
      !s.ok()) {
    return s;
  }
  return result;
}

}  // namespace shmalloc::server
