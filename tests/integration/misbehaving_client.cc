// A client process that does to a region's files what any process that can
// map them can do (issue 9, "Why"): trust_test runs it against a real daemon.
//
//   misbehaving_client truncate PATH BYTES   ftruncate the file to BYTES
//   misbehaving_client poke PATH OFFSET VALUE
//                                            store the u64 VALUE at OFFSET
//                                            of a MAP_SHARED mapping
//   misbehaving_client sessions SOCKET N     open N sessions on the daemon
//                                            at SOCKET, holding them all;
//                                            print "opened K" and, when one
//                                            was refused, "refused CODE"
// Exit status 0 when done, 2 for bad arguments, 1 when a call failed.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "shmalloc/v1/shmalloc.grpc.pb.h"

namespace {

int Fail(const char* what, const char* path) {
  std::fprintf(stderr, "misbehaving_client: %s %s: %s\n", what, path,
               std::strerror(errno));
  return 1;
}

// Opens up to `n` sessions, each a stream held open until exit.
int HogSessions(const std::string& socket, int n) {
  auto stub = shmalloc::v1::Allocator::NewStub(grpc::CreateChannel(
      "unix:" + socket, grpc::InsecureChannelCredentials()));
  struct Held {
    grpc::ClientContext context;
    std::unique_ptr<grpc::ClientReader<shmalloc::v1::SessionEvent>> reader;
  };
  std::vector<std::unique_ptr<Held>> held;
  int opened = 0;
  for (int i = 0; i < n; ++i) {
    auto h = std::make_unique<Held>();
    shmalloc::v1::OpenSessionRequest request;
    request.set_client_name("hog");
    request.set_pid(static_cast<int32_t>(getpid()));
    h->reader = stub->OpenSession(&h->context, request);
    shmalloc::v1::SessionEvent event;
    if (!h->reader->Read(&event)) {
      const grpc::Status status = h->reader->Finish();
      std::printf("opened %d\nrefused %d\n", opened,
                  static_cast<int>(status.error_code()));
      return 0;
    }
    ++opened;
    held.push_back(std::move(h));
  }
  std::printf("opened %d\n", opened);
  for (auto& h : held) h->context.TryCancel();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "sessions") {
    return HogSessions(argv[2], std::atoi(argv[3]));
  }
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: misbehaving_client truncate PATH BYTES | "
                 "poke PATH OFFSET VALUE\n");
    return 2;
  }
  const std::string mode = argv[1];
  const char* path = argv[2];
  const int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return Fail("open", path);
  if (mode == "truncate") {
    const off_t bytes = std::strtoll(argv[3], nullptr, 10);
    if (ftruncate(fd, bytes) != 0) return Fail("ftruncate", path);
    return 0;
  }
  if (mode == "poke" && argc == 5) {
    struct stat st {};
    if (fstat(fd, &st) != 0) return Fail("fstat", path);
    const uint64_t offset = std::strtoull(argv[3], nullptr, 10);
    const uint64_t value = std::strtoull(argv[4], nullptr, 10);
    if (offset + sizeof(value) > static_cast<uint64_t>(st.st_size)) return 2;
    void* p = mmap(nullptr, static_cast<size_t>(st.st_size),
                   PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return Fail("mmap", path);
    std::memcpy(static_cast<char*>(p) + offset, &value, sizeof(value));
    munmap(p, static_cast<size_t>(st.st_size));
    return 0;
  }
  return 2;
}
