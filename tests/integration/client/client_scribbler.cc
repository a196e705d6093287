// client_scribbler: the misbehaving process of client_trust_test. It maps a
// region like any client and writes raw 64-bit words into its segment
// header (the bytes every process that maps the region can write), as a
// buggy or hostile local process would.
//
//   client_scribbler TARGET REGION OFFSET=VALUE...
//       Writes each VALUE (decimal) at byte OFFSET (< 4096, 8-aligned) of the
//       data file, then prints "done" (or "fail WHY") and exits.
#include <atomic>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "shmalloc/client.h"
#include "shmalloc/region.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cout << "fail usage: client_scribbler TARGET REGION OFFSET=VALUE..."
              << std::endl;
    return 2;
  }
  absl::StatusOr<std::unique_ptr<shmalloc::client::Client>> client =
      shmalloc::client::Client::Connect({.target = argv[1]});
  if (!client.ok()) {
    std::cout << "fail " << client.status() << std::endl;
    return 1;
  }
  absl::StatusOr<std::shared_ptr<shmalloc::client::Region>> region =
      (*client)->OpenRegion(argv[2]);
  if (!region.ok()) {
    std::cout << "fail " << region.status() << std::endl;
    return 1;
  }
  for (int i = 3; i < argc; ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(argv[i], '=');
    uint64_t offset = 0;
    uint64_t value = 0;
    if (!absl::SimpleAtoi(kv.first, &offset) ||
        !absl::SimpleAtoi(kv.second, &value) || offset >= 4096 ||
        offset % 8 != 0) {
      std::cout << "fail bad word " << argv[i] << std::endl;
      return 2;
    }
    std::atomic_ref<uint64_t>(
        *reinterpret_cast<uint64_t*>((*region)->base() + offset))
        .store(value, std::memory_order_relaxed);
  }
  std::cout << "done" << std::endl;
  return 0;
}
