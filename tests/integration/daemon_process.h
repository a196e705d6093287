// Test helpers that run the real shmallocd binary for integration tests.
//
// DaemonProcess owns one daemon: a fresh temp dir (mkdtemp) holding the Unix
// socket, the shm_dir and the config file; the daemon is fork/exec'd from
// SHMALLOCD_PATH (a compile definition: $<TARGET_FILE:shmallocd>) with
// --ready_fd pointing at a pipe, and Start() returns once the daemon wrote its
// readiness byte (never a sleep). Stop() sends SIGTERM, waits with waitpid and
// reports any exit other than status 0. Restart() stops and starts again on
// the same directories, so region files persist.
//
// Also here: a Session (one OpenSession stream held open), thin Status-
// returning wrappers for every RPC, a read-write mapping of a data file, and
// the DaemonTest fixture that starts a daemon in SetUp and checks its clean
// exit in TearDown.
//
// Thread-safety: DaemonProcess and Session are not thread-safe; the RPC
// wrappers are (they only use the thread-safe stub).
#ifndef TESTS_INTEGRATION_DAEMON_PROCESS_H_
#define TESTS_INTEGRATION_DAEMON_PROCESS_H_

#include <grpcpp/grpcpp.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace shmalloc::testing {

namespace v1 = ::shmalloc::v1;

// How long Start() waits for the readiness byte and RPC helpers wait for a
// reply before giving up.
inline constexpr absl::Duration kStartDeadline = absl::Seconds(20);
inline constexpr absl::Duration kRpcDeadline = absl::Seconds(20);

// Converts a gRPC status to an absl::Status with the same code and message
// (the numeric codes are identical by design), for the status matchers.
absl::Status ToAbsl(const grpc::Status& status);

struct DaemonOptions {
  std::string config_text;               // written to the --config file
  std::vector<std::string> extra_flags;  // e.g. "--listen=127.0.0.1:0"
};

class DaemonProcess {
 public:
  // Creates the temp dir, the shm_dir and the config file; does not start.
  explicit DaemonProcess(DaemonOptions options = {});
  // Kills a still-running daemon (SIGKILL) and removes the temp dir.
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Fork/execs shmallocd and waits for its readiness byte (kStartDeadline).
  // Returns FAILED_PRECONDITION when already running, INTERNAL when the
  // daemon exits or closes the pipe before it is ready, DEADLINE_EXCEEDED
  // (after killing it) when it never becomes ready.
  absl::Status Start();
  // Sends SIGTERM and waits for the daemon to exit. Returns INTERNAL unless
  // it exited with status 0; DEADLINE_EXCEEDED (after SIGKILL) when it did
  // not exit within `deadline`.
  absl::Status Stop(absl::Duration deadline = absl::Seconds(20));
  // Stop() then Start() on the same directories; drops the old channel.
  absl::Status Restart();
  // Kills the daemon with SIGKILL (a crash: no cleanup) and reaps it.
  // Returns INTERNAL unless SIGKILL is what ended it.
  absl::Status Kill();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  const std::string& socket_path() const { return socket_path_; }
  const std::string& shm_dir() const { return shm_dir_; }
  std::string target() const { return "unix:" + socket_path_; }
  // The path of region `name`'s data (".data") or meta (".meta") file.
  std::string RegionFile(const std::string& name,
                         const std::string& suffix = ".data") const;
  // Returns the sorted base names of the files in shm_dir.
  std::vector<std::string> ShmDirFiles() const;

  // A channel to the running daemon (created on first use after Start).
  std::shared_ptr<grpc::Channel> channel();
  v1::Allocator::Stub& stub();
  // A new channel that shares no connection with any other channel.
  std::shared_ptr<grpc::Channel> NewChannel() const;

 private:
  DaemonOptions options_;
  std::string dir_;
  std::string socket_path_;
  std::string shm_dir_;
  std::string config_path_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Allocator::Stub> stub_;
};

// One OpenSession stream held open; the session ends on Close() (cancels
// the stream) or destruction.
class Session {
 public:
  // Opens a session and reads its first event. Returns the stream's status
  // if it ends before the first event, INTERNAL when session_id is 0.
  static absl::StatusOr<std::unique_ptr<Session>> Open(
      v1::Allocator::Stub& stub, const std::string& client_name = "test");
  // Resumes the session whose token is `token` (OpenSession with
  // resume_token); the stream's status when refused (NOT_FOUND,
  // FAILED_PRECONDITION).
  static absl::StatusOr<std::unique_ptr<Session>> Resume(
      v1::Allocator::Stub& stub, const std::string& token);
  ~Session() { Close(); }

  uint64_t id() const { return first_event_.session_id(); }
  // The session's secret, from the first event (Allocate, Free, Resume).
  const std::string& token() const { return first_event_.session_token(); }
  const v1::SessionEvent& first_event() const { return first_event_; }
  // Cancels the stream and waits for it to finish. Idempotent.
  void Close();

 private:
  Session() = default;
  static absl::StatusOr<std::unique_ptr<Session>> OpenImpl(
      v1::Allocator::Stub& stub, const v1::OpenSessionRequest& request);
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> reader_;
  v1::SessionEvent first_event_;
  bool closed_ = false;
};

// Status-returning wrappers over the unary RPCs, each with kRpcDeadline.
absl::StatusOr<v1::Region> CreateRegion(v1::Allocator::Stub& stub,
                                        const v1::CreateRegionRequest& request);
// CreateRegion of `name` with the usual test geometry for `strategy`
// (POOL: block 64; others: defaults) and `size_bytes` of heap.
absl::StatusOr<v1::Region> CreateRegion(v1::Allocator::Stub& stub,
                                        const std::string& name,
                                        v1::Strategy strategy,
                                        uint64_t size_bytes = 1 << 20);
absl::StatusOr<v1::Region> GetRegion(v1::Allocator::Stub& stub,
                                     const std::string& name);
absl::StatusOr<v1::ListRegionsResponse> ListRegions(v1::Allocator::Stub& stub);
absl::Status DeleteRegion(v1::Allocator::Stub& stub, const std::string& name,
                          bool force = false);
absl::StatusOr<v1::Region> ResetRegion(v1::Allocator::Stub& stub,
                                       const std::string& name,
                                       bool force = false);
absl::StatusOr<v1::AllocateResponse> Allocate(
    v1::Allocator::Stub& stub, const v1::AllocateRequest& request);
// Allocate of `count` extents of `size_bytes` in `region` in `session`
// (its id and token).
absl::StatusOr<v1::AllocateResponse> Allocate(v1::Allocator::Stub& stub,
                                              const Session& session,
                                              const std::string& region,
                                              uint64_t size_bytes,
                                              uint32_t count = 1,
                                              bool detached = false);
absl::StatusOr<v1::FreeResponse> Free(v1::Allocator::Stub& stub,
                                      const v1::FreeRequest& request);
// Free of `offsets` in `region` in `session` (its id and token).
absl::StatusOr<v1::FreeResponse> Free(v1::Allocator::Stub& stub,
                                      const Session& session,
                                      const std::string& region,
                                      const std::vector<uint64_t>& offsets);
absl::StatusOr<v1::Stats> GetStats(v1::Allocator::Stub& stub,
                                   const std::string& region = "");
// GetStats(region) and returns that region's RegionStats.
absl::StatusOr<v1::RegionStats> GetRegionStats(v1::Allocator::Stub& stub,
                                               const std::string& region);

// Calls GetStats("") every `poll` until `done` holds or `deadline` passes;
// returns the last Stats and whether `done` held.
struct PollResult {
  bool done = false;
  v1::Stats stats;
  absl::Duration waited;
};
PollResult PollStats(v1::Allocator::Stub& stub,
                     const std::function<bool(const v1::Stats&)>& done,
                     absl::Duration deadline,
                     absl::Duration poll = absl::Milliseconds(5));

// Returns the offsets of `response`'s extents.
std::vector<uint64_t> Offsets(const v1::AllocateResponse& response);

// A MAP_SHARED read-write mapping of a whole file; unmapped on destruction.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Map(
      const std::string& path);
  ~MappedFile();
  std::byte* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  MappedFile(std::byte* data, size_t size) : data_(data), size_(size) {}
  std::byte* data_;
  size_t size_;
};

// Starts a fresh daemon for each test; TearDown stops it and checks that it
// exited with status 0.
class DaemonTest : public ::testing::Test {
 protected:
  virtual DaemonOptions Options() const { return {}; }
  void SetUp() override;
  void TearDown() override;
  v1::Allocator::Stub& stub() { return daemon_->stub(); }

  std::unique_ptr<DaemonProcess> daemon_;
};

}  // namespace shmalloc::testing

#endif  // TESTS_INTEGRATION_DAEMON_PROCESS_H_
