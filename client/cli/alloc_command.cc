// shmalloc alloc REGION SIZE [--count=N] [--alignment=A] [--detached] and
// shmalloc free REGION OFFSET... (debugging aids).
#include <iostream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/units.h"

namespace shmalloc::cli {

absl::Status RunAlloc(const std::vector<std::string>& positional,
                      const Args& args, const GlobalOptions& global) {
  if (positional.size() != 2) {
    return UsageError(
        "usage: shmalloc alloc REGION SIZE [--count=N] [--alignment=A] "
        "[--detached]");
  }
  absl::StatusOr<uint64_t> size = ParseBytes(positional[1]);
  absl::StatusOr<uint64_t> count = args.GetUint("count", 1);
  absl::StatusOr<uint64_t> alignment = args.GetBytes("alignment", 0);
  absl::StatusOr<bool> detached = args.GetBool("detached", false);
  for (const absl::Status& s :
       {size.status(), count.status(), alignment.status(), detached.status()}) {
    if (!s.ok()) return UsageError(s.message());
  }
  if (*count == 0 || *count > std::numeric_limits<uint32_t>::max()) {
    return UsageError("--count must be at least 1");
  }
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  client::AllocateOptions options;
  options.alignment = *alignment;
  options.detached = *detached;
  absl::StatusOr<std::vector<client::Extent>> extents = (*c)->Allocate(
      positional[0], *size, static_cast<uint32_t>(*count), options);
  if (!extents.ok()) return extents.status();
  // One line per allocation on stdout, the offset last for scripts
  // (`awk '{print $NF}'`); the notes on stderr.
  for (const client::Extent& e : *extents) {
    std::cout << "allocated " << e.size_bytes << " bytes at offset " << e.offset
              << "\n";
  }
  std::cout << std::flush;
  std::cerr << extents->size() << " x " << *size << " bytes in region '"
            << positional[0] << "'";
  if (*detached) {
    std::cerr << ", detached: free with `shmalloc free " << positional[0]
              << " OFFSET...`\n";
  } else {
    std::cerr << "\nnote: these allocations belong to this command's session "
                 "and are freed when it exits (now); use --detached to keep "
                 "them\n";
  }
  return absl::OkStatus();
}

absl::Status RunFree(const std::vector<std::string>& positional,
                     const Args& args, const GlobalOptions& global) {
  if (positional.size() < 2) {
    return UsageError("usage: shmalloc free REGION OFFSET...");
  }
  std::vector<uint64_t> offsets;
  for (size_t i = 1; i < positional.size(); ++i) {
    absl::StatusOr<uint64_t> offset = ParseOffset(positional[i]);
    if (!offset.ok()) return UsageError(offset.status().message());
    offsets.push_back(*offset);
  }
  auto c = Connect(global);
  if (!c.ok()) return c.status();
  absl::StatusOr<uint64_t> freed = (*c)->Free(positional[0], offsets);
  if (!freed.ok()) return freed.status();
  std::cout << "freed " << offsets.size() << " allocations, " << *freed
            << " bytes, in region '" << positional[0] << "'\n";
  return absl::OkStatus();
}

}  // namespace shmalloc::cli
