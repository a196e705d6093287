#include "server/daemon.h"

#include <sys/stat.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/huge_pages.h"
#include "server/metrics_exporter.h"
#include "server/unix_socket.h"

namespace shmalloc::server {
namespace {

constexpr mode_t kSocketMode = 0660;
constexpr mode_t kShmDirMode = 02750;
constexpr int kMaxMessageBytes = 64 << 20;

}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      core_(std::make_unique<Core>(options_.shm_dir, options_.limits)),
      service_(std::make_unique<AllocatorService>(*core_)) {}

Daemon::~Daemon() { Shutdown(absl::Seconds(5)); }

std::string Daemon::metrics_endpoint() const {
  return metrics_ == nullptr ? "" : metrics_->endpoint();
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(
    const DaemonOptions& options) {
  std::unique_ptr<Daemon> daemon(new Daemon(options));
  if (options.own_shm_dir) {
    // The default directory is the daemon's own: nobody else may plant or
    // remove files in it (review H3). The setgid bit gives every file the
    // directory's group: chgrp it to the clients' group to let them map
    // the data files (0660).
    if (absl::Status s = PrepareOwnDirectory(options.shm_dir, kShmDirMode);
        !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<DirectoryLock> lock = DirectoryLock::Acquire(options.shm_dir);
  if (!lock.ok()) {
    return absl::Status(lock.status().code(),
                        absl::StrCat("shm_dir ", options.shm_dir, ": ",
                                     lock.status().message()));
  }
  daemon->shm_dir_lock_.emplace(*std::move(lock));
  if (!options.huge_dir.empty()) {
    // The huge-page directory holds data files like the shm directory: the
    // daemon's own (nobody else plants files there) and locked (two daemons
    // never share it). A mount point is usually world-writable (tmpfs) or
    // root's: name a directory inside it, which is created here.
    auto in_huge_dir = [&](const absl::Status& s) {
      return absl::Status(s.code(), absl::StrCat("huge_dir ", options.huge_dir,
                                                 ": ", s.message()));
    };
    if (absl::Status s = PrepareOwnDirectory(options.huge_dir, kShmDirMode);
        !s.ok()) {
      return in_huge_dir(s);
    }
    absl::StatusOr<HugePageDir> huge = InspectHugePageDir(options.huge_dir);
    if (!huge.ok()) return huge.status();
    if (options.huge_dir != options.shm_dir) {
      absl::StatusOr<DirectoryLock> huge_lock =
          DirectoryLock::Acquire(options.huge_dir);
      if (!huge_lock.ok()) return in_huge_dir(huge_lock.status());
      daemon->huge_dir_lock_.emplace(*std::move(huge_lock));
    }
    SHMALLOC_LOG(Info) << "huge_dir " << huge->dir << ": "
                       << HugeKindName(huge->kind) << ", " << huge->page_bytes
                       << "-byte pages";
    daemon->core_->regions.set_huge_dir(*std::move(huge));
  }
  absl::StatusOr<size_t> attached = daemon->core_->regions.LoadExisting();
  if (!attached.ok()) {
    return absl::Status(attached.status().code(),
                        absl::StrCat("shm_dir ", options.shm_dir, ": ",
                                     attached.status().message()));
  }
  SHMALLOC_LOG(Info) << "shm_dir " << options.shm_dir << ": re-attached "
                     << *attached << " region(s)";
  SHMALLOC_RETURN_IF_ERROR(daemon->AttachSessions());
  SHMALLOC_RETURN_IF_ERROR(daemon->CreateConfiguredRegions());
  SHMALLOC_RETURN_IF_ERROR(daemon->Listen());
  if (!options.metrics_listen.empty()) {
    SHMALLOC_ASSIGN_OR_RETURN(
        daemon->metrics_,
        MetricsServer::Start(*daemon->core_, options.metrics_listen));
    SHMALLOC_LOG(Info) << "serving metrics on http://"
                       << daemon->metrics_->endpoint() << "/metrics";
  }
  return daemon;
}

absl::Status Daemon::AttachSessions() {
  Core& core = *core_;
  absl::StatusOr<std::vector<uint64_t>> closing =
      core.sessions.Attach(options_.shm_dir, core.started);
  if (!closing.ok()) {
    return absl::Status(closing.status().code(),
                        absl::StrCat("shm_dir ", options_.shm_dir, ": ",
                                     closing.status().message()));
  }
  // Closes a crash cut short: finish them before anyone can allocate.
  for (uint64_t id : *closing) {
    const std::string name = core.sessions.ClientName(id);
    const uint64_t freed = ReclaimSession(core, id);
    SHMALLOC_LOG(Info) << "session " << id << " (" << name
                       << ") was closing when the daemon stopped; " << freed
                       << " allocations reclaimed";
  }
  if (const uint64_t orphaned = core.sessions.orphaned(); orphaned > 0) {
    SHMALLOC_LOG(Info) << orphaned << " session(s) from the previous run wait "
                       << core.sessions.grace_ms() << " ms to be resumed";
  }
  reaper_ = std::make_unique<SessionReaper>(core);
  reaper_->Start();
  return absl::OkStatus();
}

absl::Status Daemon::CreateConfiguredRegions() {
  for (const v1::CreateRegionRequest& request : options_.regions) {
    if (auto existing = core_->regions.Get(request.name()); existing.ok()) {
      if (!(*existing)->Matches(request)) {
        SHMALLOC_LOG(Warning)
            << "config region " << request.name()
            << " exists with another geometry; keeping the existing one "
               "(delete it to apply the config)";
      }
      continue;
    }
    absl::StatusOr<std::shared_ptr<Region>> region =
        core_->regions.Create(request);
    if (absl::IsAlreadyExists(region.status())) {
      // Files that did not validate at start: left alone, reported.
      SHMALLOC_LOG(Error) << "config region " << request.name()
                          << " not created: " << region.status();
      continue;
    }
    if (!region.ok()) {
      return absl::Status(region.status().code(),
                          absl::StrCat("config region ", request.name(), ": ",
                                       region.status().message()));
    }
    SHMALLOC_LOG(Info) << "created region " << request.name() << " ("
                       << v1::Strategy_Name(request.strategy()) << ", "
                       << request.size_bytes() << " bytes) in "
                       << options_.shm_dir;
  }
  return absl::OkStatus();
}

absl::Status Daemon::Listen() {
  SHMALLOC_RETURN_IF_ERROR(PrepareSocketPath(options_.socket));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  // The Unix socket is bound and accepted on by the daemon itself (its
  // connections reach gRPC through AddInsecureChannelFromFd), so each
  // peer's kernel credentials are known (peer_table.h); its mode is set
  // before listen(), so no client ever connects through a wider one.
  SHMALLOC_ASSIGN_OR_RETURN(unix_listener_,
                            UnixListener::Bind(options_.socket, kSocketMode));
  std::vector<int> ports(options_.listen.size(), 0);
  for (size_t i = 0; i < options_.listen.size(); ++i) {
    builder.AddListeningPort(options_.listen[i],
                             grpc::InsecureServerCredentials(), &ports[i]);
  }
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on unix:", options_.socket,
                     options_.listen.empty() ? "" : " and ",
                     absl::StrJoin(options_.listen, ", ")));
  }
  endpoints_.push_back(absl::StrCat("unix:", options_.socket));
  for (size_t i = 0; i < ports.size(); ++i) {
    if (ports[i] == 0) {
      server_->Shutdown();
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", options_.listen[i]));
    }
    const std::string& address = options_.listen[i];
    endpoints_.push_back(
        absl::StrCat(address.substr(0, address.rfind(':')), ":", ports[i]));
  }
  unix_listener_->Start(server_.get(), &core_->peers);
  server_->GetHealthCheckService()->SetServingStatus("shmalloc.v1.Allocator",
                                                     true);
  SHMALLOC_LOG(Info) << "shmallocd listening on "
                     << absl::StrJoin(endpoints_, ", ") << " with "
                     << core_->regions.size() << " region(s) in "
                     << options_.shm_dir;
  return absl::OkStatus();
}

void Daemon::Shutdown(absl::Duration drain) {
  if (shut_down_) return;
  shut_down_ = true;
  const absl::Time deadline = absl::Now() + drain;
  metrics_.reset();  // no scrape reads the regions while they close
  // 1. Refuse new calls; end every stream (OnDone orphans each session:
  // nothing a client still running holds is freed).
  if (reaper_ != nullptr) reaper_->Stop();
  if (unix_listener_ != nullptr) unix_listener_->Stop();  // no new peers
  core_->unary_calls.Close();
  core_->streams.StopAll();
  // 2. Drain: unary calls in flight finish, every stream reaches OnDone.
  if (!core_->unary_calls.WaitIdle(deadline)) {
    SHMALLOC_LOG(Warning) << "unary calls still running at the drain deadline";
  }
  if (!core_->streams.WaitEmpty(deadline)) {
    SHMALLOC_LOG(Warning) << core_->streams.size()
                          << " stream(s) did not finish by the drain deadline";
  }
  // 3. Nothing of ours is in flight: stop gRPC now rather than wait for idle
  // client connections to go away (what Server::Shutdown's deadline means).
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
  core_->streams.WaitEmpty(absl::Now() + absl::Seconds(1));
  // Streams that never reached OnDone: their sessions wait too.
  core_->sessions.OrphanAll(absl::Now());
  core_->regions.SyncAndClose();
  if (unix_listener_ != nullptr) RemoveSocketFile(options_.socket);
  SHMALLOC_LOG(Info) << "shmallocd stopped; regions and "
                     << core_->sessions.orphaned()
                     << " orphaned session(s) persist in " << options_.shm_dir;
}

}  // namespace shmalloc::server
