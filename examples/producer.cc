// producer: allocates buffers in shared memory, writes them once, and hands
// each to the consumer as {offset, size} over a Unix socket. No byte of a
// buffer is ever copied: the consumer reads the same physical pages.
//
//   producer --handoff=/tmp/handoff.sock [--region=frames] [--buffers=100]
//            [--min_size=64] [--max_size=256K] [--region_size=16M]
//            [--socket=PATH]
//
// The region (FREE_LIST) is created when absent. Buffers are allocated
// detached, so they outlive this process: the consumer frees them.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "example_util.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"

namespace {

constexpr char kUsage[] =
    "usage: producer --handoff=PATH [--region=frames] [--buffers=100] "
    "[--min_size=64] [--max_size=256K] [--region_size=16M] [--socket=PATH] "
    "[--connect_timeout_s=30]";

[[noreturn]] void Fail(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "producer: %s: %s\n", what, status.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  auto flags = examples::ParseFlags(
      argc, argv,
      "handoff region buffers min_size max_size region_size socket "
      "connect_timeout_s",
      kUsage);
  const std::string handoff = examples::Flag(flags, "handoff", "");
  if (handoff.empty()) {
    std::fprintf(stderr, "%s\n", kUsage);
    return 2;
  }
  const std::string name = examples::Flag(flags, "region", "frames");
  const uint64_t buffers = examples::FlagBytes(flags, "buffers", 100);
  const uint64_t min_size = examples::FlagBytes(flags, "min_size", 64);
  const uint64_t max_size = examples::FlagBytes(flags, "max_size", 256 << 10);
  if (min_size == 0 || max_size < min_size) {
    std::fprintf(stderr, "producer: need 0 < --min_size <= --max_size\n");
    return 2;
  }

  // 1. Connect to shmallocd ($SHMALLOC_SOCKET or the default socket).
  shmalloc::client::ConnectOptions options;
  options.target = examples::Flag(flags, "socket", "");
  auto client = shmalloc::client::Client::Connect(options);
  if (!client.ok()) Fail("connect", client.status());

  // 2. Create the region unless it exists, then map it.
  shmalloc::client::CreateRegionOptions create;
  create.name = name;
  create.strategy = shmalloc::client::Strategy::kFreeList;
  create.size_bytes = examples::FlagBytes(flags, "region_size", 16 << 20);
  if (auto r = (*client)->CreateRegion(create);
      !r.ok() && !absl::IsAlreadyExists(r.status())) {
    Fail("create region", r.status());
  }
  auto region = (*client)->OpenRegion(name);
  if (!region.ok()) Fail("open region", region.status());

  // 3. Reach the consumer.
  const int fd = examples::ConnectUnix(
      handoff, std::stoi(examples::Flag(flags, "connect_timeout_s", "30")));

  // 4. Allocate, write in place, hand over {offset, size}.
  uint64_t bytes = 0;
  for (uint64_t seq = 0; seq < buffers; ++seq) {
    const uint64_t size = min_size + (seq * 0x9e3779b97f4a7c15ull >> 20) %
                                         (max_size - min_size + 1);
    shmalloc::client::AllocateOptions detached;
    detached.detached = true;  // survives us; the consumer frees it
    auto extents = (*region)->AllocateExtents(size, 1, detached);
    // A full region means the consumer is behind: wait for it to free.
    for (int tries = 0;
         !extents.ok() && absl::IsResourceExhausted(extents.status()) &&
         tries < 30000;
         ++tries) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      extents = (*region)->AllocateExtents(size, 1, detached);
    }
    if (!extents.ok()) Fail("allocate", extents.status());
    const uint64_t offset = (*extents)[0].offset;
    auto span = (*region)->Span(offset, size);
    if (!span.ok()) Fail("span", span.status());
    examples::HandoffRecord record{seq, offset, size,
                                   examples::FillPattern(*span, seq)};
    examples::WriteFull(fd, &record, sizeof(record));
    bytes += size;
  }
  close(fd);  // end of stream
  std::printf(
      "producer: handed off %llu buffers, %llu bytes, through region '%s' "
      "to %s; bytes copied: 0 (each buffer written once, in place)\n",
      static_cast<unsigned long long>(buffers),
      static_cast<unsigned long long>(bytes), name.c_str(), handoff.c_str());
  return 0;
}
