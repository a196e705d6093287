// A client process that does to a region's files what any process that can
// map them can do (issue 9, "Why"): trust_test runs it against a real daemon.
//
//   misbehaving_client truncate PATH BYTES   ftruncate the file to BYTES
//   misbehaving_client poke PATH OFFSET VALUE
//                                            store the u64 VALUE at OFFSET
//                                            of a MAP_SHARED mapping
// Exit status 0 when done, 2 for bad arguments, 1 when a call failed.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int Fail(const char* what, const char* path) {
  std::fprintf(stderr, "misbehaving_client: %s %s: %s\n", what, path,
               std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
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
