// consumer: receives {offset, size} records from the producer over a Unix
// socket, maps the same region, verifies every buffer byte for byte where
// it lies (no copy), frees it, and prints a summary.
//
//   consumer --handoff=/tmp/handoff.sock [--region=frames] [--buffers=N]
//            [--quiet] [--socket=PATH]
//
// It listens on --handoff (a path: on one host, or in a volume shared by
// containers) and serves one producer until it closes the socket. With
// --buffers=N it fails unless exactly N buffers arrived.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

#include "example_util.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"

namespace {

constexpr char kUsage[] =
    "usage: consumer --handoff=PATH [--region=frames] [--buffers=N] "
    "[--quiet] [--socket=PATH]";

[[noreturn]] void Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "consumer: %s: %s\n", what, status.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = examples::ParseFlags(
      argc, argv, "handoff region buffers quiet socket", kUsage);
  const std::string handoff = examples::Flag(flags, "handoff", "");
  if (handoff.empty()) {
    std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  }
  const std::string name = examples::Flag(flags, "region", "frames");
  const uint64_t expected = examples::FlagBytes(flags, "buffers", 0);
  const bool quiet = examples::Flag(flags, "quiet", "false") == "true";

  shmalloc::client::ConnectOptions options;
  options.target = examples::Flag(flags, "socket", "");
  auto client = shmalloc::client::Client::Connect(options);
  if (!client.ok()) Fail("connect", client.status());

  const int listener = examples::ListenUnix(handoff);
  std::printf("consumer: listening on %s\n", handoff.c_str());
  std::fflush(stdout);
  const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    std::perror("consumer: accept");
    return 1;
  }

  // The producer creates the region: map it when the first record arrives.
  std::shared_ptr<shmalloc::client::Region> region;
  uint64_t buffers = 0, bytes = 0, bad = 0;
  examples::HandoffRecord record;
  while (examples::ReadFull(fd, &record, sizeof(record))) {
    if (region == nullptr) {
      auto opened = (*client)->OpenRegion(name);
      if (!opened.ok()) Fail("open region", opened.status());
      region = *std::move(opened);
    }
    // A view of the producer's bytes in our mapping: bounds-checked, no copy.
    auto span = region->Span(record.offset, record.size);
    if (!span.ok()) Fail("span", span.status());
    const int64_t wrong = examples::CheckPattern(*span, record.sequence);
    const bool ok = wrong < 0 && examples::Checksum(*span) == record.checksum;
    if (!ok) {
      ++bad;
      std::fprintf(stderr,
                   "consumer: buffer %llu at offset %llu: mismatch at byte "
                   "%lld\n",
                   static_cast<unsigned long long>(record.sequence),
                   static_cast<unsigned long long>(record.offset),
                   static_cast<long long>(wrong));
    } else if (!quiet) {
      std::printf("consumer: buffer %llu: %llu bytes at offset %llu verified\n",
                  static_cast<unsigned long long>(record.sequence),
                  static_cast<unsigned long long>(record.size),
                  static_cast<unsigned long long>(record.offset));
    }
    // The producer allocated it detached; any session may free it.
    if (absl::Status s = region->Free(record.offset); !s.ok()) Fail("free", s);
    ++buffers;
    bytes += record.size;
  }
  close(fd);
  close(listener);
  unlink(handoff.c_str());

  std::printf(
      "consumer: verified %llu buffers, %llu bytes, %llu mismatches, 0 "
      "copies (read in place in region '%s'); all freed\n",
      static_cast<unsigned long long>(buffers),
      static_cast<unsigned long long>(bytes),
      static_cast<unsigned long long>(bad), name.c_str());
  if (bad != 0) return 1;
  if (expected != 0 && buffers != expected) {
    std::fprintf(stderr, "consumer: expected %llu buffers, got %llu\n",
                 static_cast<unsigned long long>(expected),
                 static_cast<unsigned long long>(buffers));
    return 1;
  }
  return 0;
}
