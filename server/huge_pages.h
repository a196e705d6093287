// The daemon's huge-page directory (--huge_dir): what kind of huge pages a
// directory offers, and what to tell a user when there is none.
//
// Two kinds are accepted (docs/architecture.md, "Huge pages"):
//  - hugetlbfs: pages come from the pool reserved in
//    /proc/sys/vm/nr_hugepages (statfs f_type HUGETLBFS_MAGIC; the page size
//    is the mount's f_bsize). Files must be a whole number of pages; a fault
//    with the pool exhausted is SIGBUS, so regions reserve their pages with
//    fallocate at creation.
//  - tmpfs mounted huge=always or huge=within_size: transparent huge pages
//    for shared memory (PMD-size, /sys/kernel/mm/transparent_hugepage/
//    hpage_pmd_size), unless shmem_enabled says "deny".
// Anything else is FAILED_PRECONDITION naming the file system and saying
// what to mount.
//
// Thread-safety: pure functions over the file system, thread-safe.
#ifndef SERVER_HUGE_PAGES_H_
#define SERVER_HUGE_PAGES_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace shmalloc::server {

// Recorded in a region's meta file (RegionMetaHeader::huge_kind); the values
// are persistent.
enum class HugeKind : uint32_t {
  kNone = 0,       // ordinary pages, data file in the shm directory
  kHugetlbfs = 1,  // data file in a hugetlbfs --huge_dir
  kTmpfsThp = 2,   // data file in a huge=always/within_size tmpfs --huge_dir
};

const char* HugeKindName(HugeKind kind);

struct HugePageDir {
  std::string dir;
  HugeKind kind = HugeKind::kNone;
  uint64_t page_bytes = 0;  // the huge page size data files are rounded to
};

// Says what `dir` offers. FAILED_PRECONDITION when it is on neither a
// hugetlbfs nor a huge tmpfs (the message names the file system and its
// mount options and says what to mount); NOT_FOUND when it does not exist.
[[nodiscard]] absl::StatusOr<HugePageDir> InspectHugePageDir(
    const std::string& dir);

// The text of the FAILED_PRECONDITION for a huge-page region when the daemon
// has no --huge_dir: what to mount and configure, naming the hugetlbfs and
// huge tmpfs mounts this machine already has, if any.
std::string NoHugeDirMessage();

}  // namespace shmalloc::server

#endif  // SERVER_HUGE_PAGES_H_
