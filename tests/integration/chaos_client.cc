// A client process for kill9_test: opens a session, then loops allocating
// (singles and batches, owned and detached) and freeing (singles and
// batches) in several regions, every call with a request_id. It writes
// ChaosWord pattern into every allocation's requested bytes and appends every
// acknowledged outcome to LOG, one write(2) per line (the test's ground
// truth; the client is never killed, so the page cache is enough):
//   A <tag> <region> <generation> <detached> <size> <offset>:<reserved> ...
//   F <tag> <region> <offset> ...          a Free that succeeded
//   X <tag> <region> <offset> ...          a retried Free refused with
//                                          FAILED_PRECONDITION (see below)
//   E <tag> <region> <A|F> <code>          a refused call (nothing changed)
//   S <session id>                         started: session open, regions
//                                          mapped (first line)
//   R <resumes>                            the session was resumed
//   P <ops> <retried>                      paused (no call in flight);
//                                          retried: calls sent again
// When the daemon dies (a call fails UNAVAILABLE, or the session stream
// ends) it resumes the session with its token, retrying OpenSession until
// the daemon is back, and retries the interrupted call with the SAME
// request_id. A retried Free that fails FAILED_PRECONDITION means the first
// attempt freed the offsets but its outcome fell out of the region's request
// ring; it is logged as X so the test can count it.
//
// Commands on stdin (one byte each): 'p' pause after the current call, 'g'
// go on, 'q' or EOF: close the session (cancel the stream) and exit 0.
//
// Usage: chaos_client SOCKET LOG SEED INDEX SPEC...
//   SPEC = region,arena(0|1),min_size,max_size,max_count,cap
//   (sizes multiples of 8; cap: live allocations this client keeps at most)
// Exit status: 0 after 'q', 2 bad usage, 1 on an unexpected error (stderr).
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"
#include "shmalloc/v1/shmalloc.pb.h"
#include "tests/integration/chaos_pattern.h"

namespace {

namespace v1 = ::shmalloc::v1;
using shmalloc::testing::ChaosTag;
using shmalloc::testing::ChaosWord;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "chaos_client: %s\n", what.c_str());
  std::exit(1);
}

struct Spec {
  std::string region;
  bool arena = false;
  uint64_t min_size = 0, max_size = 0;
  uint32_t max_count = 1;
  size_t cap = 0;
  std::byte* base = nullptr;  // the data file, mapped
  uint64_t generation = 0;
  bool full = false;           // an ARENA that said RESOURCE_EXHAUSTED
  std::vector<uint64_t> live;  // offsets this client holds
};

class Client {
 public:
  Client(const std::string& socket, const std::string& log, uint64_t seed,
         uint64_t index, std::vector<Spec> specs)
      : index_(index), rng_(seed), specs_(std::move(specs)) {
    target_ = "unix:" + socket;
    NewChannel();
    log_fd_ =
        open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd_ < 0) Die("cannot open " + log);
  }

  void Run() {
    OpenSession(/*resume=*/false);
    for (Spec& s : specs_) Map(s);
    Log(absl::StrCat("S ", id_));
    for (;;) {
      if (!Commands()) break;
      if (stream_dead_.load(std::memory_order_acquire)) Reconnect();
      Step();
    }
    CloseSession();
  }

 private:
  // Handles stdin; returns false to quit. Blocks while paused, resuming the
  // session if the daemon died meanwhile.
  bool Commands() {
    for (;;) {
      pollfd p = {0, POLLIN, 0};
      if (poll(&p, 1, paused_ ? 20 : 0) > 0) {
        char c;
        const ssize_t n = read(0, &c, 1);
        if (n <= 0 || c == 'q') return false;
        if (c == 'p' && !paused_) {
          paused_ = true;
          Log(absl::StrCat("P ", ops_, " ", retried_));
        }
        if (c == 'g') paused_ = false;
      }
      if (paused_ && stream_dead_.load(std::memory_order_acquire)) {
        Reconnect();
      }
      if (!paused_) return true;
    }
  }

  void Log(const std::string& line) {
    const std::string text = line + "\n";
    if (write(log_fd_, text.data(), text.size()) !=
        static_cast<ssize_t>(text.size())) {
      Die("log write failed");
    }
  }

  // Opens (or resumes) the session; retries while the daemon is down.
  // Replaces the channel. A channel whose connection failed waits out gRPC's
  // reconnect backoff (seconds, whatever the channel arguments say, on
  // Debian's gRPC), so a reconnect takes a fresh one with its own
  // subchannel.
  void NewChannel() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 10);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
    stub_ = v1::Allocator::NewStub(grpc::CreateCustomChannel(
        target_, grpc::InsecureChannelCredentials(), args));
  }

  // Returns the attempts it took.
  int OpenSession(bool resume) {
    const auto give_up =
        std::chrono::steady_clock::now() + std::chrono::seconds(60);
    int attempts = 0;
    for (;; ++attempts) {
      context_ = std::make_unique<grpc::ClientContext>();
      v1::OpenSessionRequest request;
      request.set_client_name(absl::StrCat("chaos-", index_));
      request.set_pid(static_cast<int32_t>(getpid()));
      if (resume) request.set_resume_token(token_);
      reader_ = stub_->OpenSession(context_.get(), request);
      v1::SessionEvent event;
      if (reader_->Read(&event)) {
        if (resume && (!event.resumed() || event.session_id() != id_)) {
          Die(absl::StrCat("resume gave session ", event.session_id(),
                           " resumed=", event.resumed(), ", expected ", id_));
        }
        id_ = event.session_id();
        token_ = event.session_token();
        shm_dir_ = event.shm_dir();
        break;
      }
      const grpc::Status status = reader_->Finish();
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
          std::chrono::steady_clock::now() > give_up) {
        Die(absl::StrCat("OpenSession(resume=", resume, "): ",
                         status.error_code(), " ", status.error_message()));
      }
      last_error_ = status.error_message();
      NewChannel();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // backoff
    }
    stream_dead_.store(false, std::memory_order_release);
    reader_thread_ = std::thread([this] {
      v1::SessionEvent event;
      while (reader_->Read(&event)) {
      }
      stream_dead_.store(true, std::memory_order_release);
    });
    return attempts + 1;
  }

  void EndStream() {
    context_->TryCancel();
    reader_thread_.join();
    (void)reader_->Finish();
  }

  void Reconnect() {
    const auto start = std::chrono::steady_clock::now();
    EndStream();
    const auto ended = std::chrono::steady_clock::now();
    const int attempts = OpenSession(/*resume=*/true);
    const auto ms = [](auto d) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    Log(absl::StrCat("R ", ++resumes_, " ", attempts, " attempts ",
                     ms(ended - start), "+",
                     ms(std::chrono::steady_clock::now() - ended), " ms (",
                     last_error_, ")"));
  }

  void CloseSession() {
    EndStream();
    close(log_fd_);
  }

  void Map(Spec& s) {
    v1::GetRegionRequest request;
    request.set_name(s.region);
    v1::Region region;
    for (int attempt = 0;; ++attempt) {
      // The daemon may be killed under this call too: wait for it.
      grpc::ClientContext context;
      context.set_wait_for_ready(true);
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
      const grpc::Status status = stub_->GetRegion(&context, request, &region);
      if (status.ok()) break;
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
          attempt > 100) {
        Die("GetRegion " + s.region + ": " + status.error_message());
      }
    }
    s.generation = region.generation();
    const std::string path = shm_dir_ + "/" + region.data_file();
    const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) Die("open " + path);
    void* p = mmap(nullptr, region.size_bytes(), PROT_READ | PROT_WRITE,
                   MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) Die("mmap " + path);
    s.base = static_cast<std::byte*>(p);
  }

  // Sends `request` until its outcome is known. A call that fails because
  // the daemon died (UNAVAILABLE, or the session unknown/denied once the
  // stream has ended) is retried after a resume with the same request_id.
  // Sets `retried` when any attempt's outcome was unknown.
  template <typename Request, typename Response, typename Method>
  grpc::Status Call(Method method, Request& request, Response& response,
                    bool& retried) {
    retried = false;
    for (int attempt = 0;; ++attempt) {
      if (attempt > 200) Die("call retried 200 times");
      request.set_session_id(id_);
      request.set_session_token(token_);
      grpc::ClientContext context;
      context.set_wait_for_ready(true);
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
      response.Clear();
      const grpc::Status status =
          ((*stub_).*method)(&context, request, &response);
      const grpc::StatusCode code = status.error_code();
      const bool daemon_gone = code == grpc::StatusCode::UNAVAILABLE ||
                               code == grpc::StatusCode::DEADLINE_EXCEEDED;
      const bool session_gone = code == grpc::StatusCode::NOT_FOUND ||
                                code == grpc::StatusCode::PERMISSION_DENIED;
      if (!daemon_gone && !session_gone) {
        if (retried) ++retried_;
        return status;
      }
      // The stream of a daemon that died ends at once (its socket closed);
      // wait for that before resuming.
      const auto until =
          std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!stream_dead_.load(std::memory_order_acquire) &&
             std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (!stream_dead_.load(std::memory_order_acquire)) {
        if (session_gone) return status;  // a real refusal
        retried = true;                   // outcome unknown: send it again
        continue;
      }
      retried = true;
      Reconnect();
    }
  }

  uint64_t Uniform(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_);
  }

  void Step() {
    Spec& s = specs_[Uniform(0, specs_.size() - 1)];
    if (s.arena && s.full) return;
    const uint64_t seq = ++seq_;
    const uint64_t tag = ChaosTag(index_, seq);
    const std::string id = absl::StrCat("c", index_, "-", seq);
    const bool free = !s.arena && !s.live.empty() &&
                      (s.live.size() >= s.cap || Uniform(0, 99) < 45);
    ++ops_;
    if (free) {
      const uint64_t max = std::min<uint64_t>(s.live.size(), s.max_count);
      const uint64_t roll = Uniform(0, 99);
      const uint64_t n = roll < 50   ? 1
                         : roll < 85 ? Uniform(1, std::min<uint64_t>(max, 64))
                                     : Uniform(1, max);
      v1::FreeRequest request;
      request.set_region(s.region);
      request.set_generation(s.generation);
      request.set_request_id(id);
      std::vector<uint64_t> chosen;
      for (uint64_t i = 0; i < n; ++i) {
        const size_t k = Uniform(0, s.live.size() - 1);
        chosen.push_back(s.live[k]);
        s.live[k] = s.live.back();
        s.live.pop_back();
        request.add_offsets(chosen.back());
      }
      v1::FreeResponse response;
      bool retried = false;
      const grpc::Status status =
          Call(&v1::Allocator::Stub::Free, request, response, retried);
      std::string line;
      if (status.ok()) {
        line = absl::StrCat("F ", tag, " ", s.region);
      } else if (retried &&
                 status.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
        line = absl::StrCat("X ", tag, " ", s.region);
      } else {
        Die(absl::StrCat("Free ", id, ": ", status.error_code(), " ",
                         status.error_message()));
      }
      for (uint64_t o : chosen) absl::StrAppend(&line, " ", o);
      Log(line);
      return;
    }
    const uint64_t roll = Uniform(0, 99);
    const uint32_t count =
        roll < 40 ? 1
        : roll < 85
            ? static_cast<uint32_t>(Uniform(2, std::min(64u, s.max_count)))
            : static_cast<uint32_t>(Uniform(65, s.max_count));
    const uint64_t size = Uniform(s.min_size / 8, s.max_size / 8) * 8;
    const bool detached = Uniform(0, 99) < 30;
    v1::AllocateRequest request;
    request.set_region(s.region);
    request.set_size_bytes(size);
    request.set_count(count);
    request.set_detached(detached);
    request.set_request_id(id);
    v1::AllocateResponse response;
    bool retried = false;
    const grpc::Status status =
        Call(&v1::Allocator::Stub::Allocate, request, response, retried);
    if (!status.ok()) {
      if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
        Die(absl::StrCat("Allocate ", id, ": ", status.error_code(), " ",
                         status.error_message()));
      }
      if (s.arena) s.full = true;
      Log(absl::StrCat("E ", tag, " ", s.region, " A ", status.error_code()));
      return;
    }
    if (response.extents_size() != static_cast<int>(count)) {
      Die(absl::StrCat("Allocate ", id, " gave ", response.extents_size(),
                       " extents for ", count));
    }
    std::string line =
        absl::StrCat("A ", tag, " ", s.region, " ", response.generation(), " ",
                     detached ? 1 : 0, " ", size);
    for (const v1::Extent& e : response.extents()) {
      auto* words = reinterpret_cast<uint64_t*>(s.base + e.offset());
      for (uint64_t i = 0; i < size / 8; ++i) {
        words[i] = ChaosWord(e.offset(), tag, i);
      }
      if (!s.arena) s.live.push_back(e.offset());
      absl::StrAppend(&line, " ", e.offset(), ":", e.size_bytes());
    }
    Log(line);
  }

  const uint64_t index_;
  std::mt19937_64 rng_;
  std::vector<Spec> specs_;
  std::string target_;
  std::unique_ptr<v1::Allocator::Stub> stub_;
  int log_fd_ = -1;
  std::unique_ptr<grpc::ClientContext> context_;
  std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> reader_;
  std::thread reader_thread_;
  std::atomic<bool> stream_dead_{false};
  uint64_t id_ = 0;
  std::string token_;
  std::string shm_dir_;
  std::string last_error_;  // of the last refused OpenSession attempt
  uint64_t seq_ = 0, ops_ = 0, resumes_ = 0;
  uint64_t retried_ = 0;  // calls sent again after an unknown outcome
  bool paused_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: chaos_client SOCKET LOG SEED INDEX SPEC...\n");
    return 2;
  }
  uint64_t seed = 0, index = 0;
  if (!absl::SimpleAtoi(argv[3], &seed) || !absl::SimpleAtoi(argv[4], &index)) {
    return 2;
  }
  std::vector<Spec> specs;
  for (int i = 5; i < argc; ++i) {
    std::vector<std::string> f = absl::StrSplit(argv[i], ',');
    Spec s;
    int arena = 0;
    if (f.size() != 6 || !absl::SimpleAtoi(f[1], &arena) ||
        !absl::SimpleAtoi(f[2], &s.min_size) ||
        !absl::SimpleAtoi(f[3], &s.max_size) ||
        !absl::SimpleAtoi(f[4], &s.max_count) ||
        !absl::SimpleAtoi(f[5], &s.cap) || s.min_size < 8 ||
        s.max_size < s.min_size || s.max_count < 65) {
      std::fprintf(stderr, "chaos_client: bad spec %s\n", argv[i]);
      return 2;
    }
    s.region = f[0];
    s.arena = arena != 0;
    specs.push_back(std::move(s));
  }
  Client client(argv[1], argv[2], seed, index, std::move(specs));
  client.Run();
  return 0;
}
