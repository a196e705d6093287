// A client process for session_test: opens a session, allocates `owned`
// extents owned by it and `detached` extents owned by nobody, prints
//   session <id>
//   owned <offset> <offset> ...
//   detached <offset> ...
//   ready
// on stdout, then blocks reading the session stream until it ends (the
// daemon stops) or the process is killed — the test kills it with SIGKILL.
//
// Usage: alloc_client SOCKET REGION SIZE_BYTES OWNED DETACHED
// Exit status: 0 when the stream ended, 2 on bad usage, 1 on any RPC error
// (the status is printed on stderr).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "shmalloc/v1/shmalloc.grpc.pb.h"
#include "shmalloc/v1/shmalloc.pb.h"

namespace {

namespace v1 = ::shmalloc::v1;

int Fail(const char* what, const grpc::Status& status) {
  std::fprintf(stderr, "alloc_client: %s: %d %s\n", what,
               static_cast<int>(status.error_code()),
               status.error_message().c_str());
  return 1;
}

// Allocates `count` extents and prints "<label> <offset>...".
int AllocateAndPrint(v1::Allocator::Stub& stub, uint64_t session_id,
                     const std::string& token, const std::string& region,
                     uint64_t size, uint32_t count, bool detached,
                     const char* label) {
  std::printf("%s", label);
  if (count > 0) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(20));
    v1::AllocateRequest request;
    request.set_session_id(session_id);
    request.set_session_token(token);
    request.set_region(region);
    request.set_size_bytes(size);
    request.set_count(count);
    request.set_detached(detached);
    v1::AllocateResponse response;
    grpc::Status status = stub.Allocate(&context, request, &response);
    if (!status.ok()) return Fail("Allocate", status);
    for (const v1::Extent& e : response.extents()) {
      std::printf(" %llu", static_cast<unsigned long long>(e.offset()));
    }
  }
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr,
                 "usage: alloc_client SOCKET REGION SIZE_BYTES OWNED "
                 "DETACHED\n");
    return 2;
  }
  const std::string socket = argv[1];
  const std::string region = argv[2];
  const uint64_t size = std::strtoull(argv[3], nullptr, 10);
  const auto owned = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10));
  const auto detached =
      static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10));

  std::unique_ptr<v1::Allocator::Stub> stub =
      v1::Allocator::NewStub(grpc::CreateChannel(
          "unix:" + socket, grpc::InsecureChannelCredentials()));
  grpc::ClientContext session_context;
  v1::OpenSessionRequest open;
  open.set_client_name("alloc_client");
  std::unique_ptr<grpc::ClientReader<v1::SessionEvent>> session =
      stub->OpenSession(&session_context, open);
  v1::SessionEvent event;
  if (!session->Read(&event)) return Fail("OpenSession", session->Finish());
  std::printf("session %llu\n",
              static_cast<unsigned long long>(event.session_id()));

  if (int rc =
          AllocateAndPrint(*stub, event.session_id(), event.session_token(),
                           region, size, owned, false, "owned");
      rc != 0) {
    return rc;
  }
  if (int rc =
          AllocateAndPrint(*stub, event.session_id(), event.session_token(),
                           region, size, detached, true, "detached");
      rc != 0) {
    return rc;
  }
  std::printf("ready\n");
  std::fflush(stdout);

  // Hold the session until the stream ends or this process is killed.
  while (session->Read(&event)) {
  }
  (void)session->Finish();
  return 0;
}
